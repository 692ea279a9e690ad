"""robustness-audit core: model loading, layer graph, geometry, data, plugin host, runner.

The core never imports a plugin; plugins import the core; only ``audit_reports``
renders; the CLI ties everything together.
"""

__version__ = "0.1.0"
