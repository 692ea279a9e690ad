"""ONNX import: converter registry, one module per op family, and the loader."""

from audit_core.onnx_import.loader import LoadedModel, load_onnx, normalise
from audit_core.onnx_import.registry import supported_ops

__all__ = ["LoadedModel", "load_onnx", "normalise", "supported_ops"]
