"""ONNX op converters, one module per op family. Every module in this package is
imported by ``registry.load_converters`` (no list to keep up to date): a new family
only needs a module here whose functions carry ``@converter``."""
