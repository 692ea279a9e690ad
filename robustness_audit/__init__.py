"""robustness-audit's entry points: the ``audit`` command and the Python API.

The Python API (``robustness_audit.api``, documented in the README's "Python API"):

- ``audit(models, data=None, *, eps=..., norm=..., only=..., options=..., out=...)``:
  the ``audit`` command as a function; returns the report (``ReportWithArrays``, an
  ``AuditReport`` plus the per-sample arrays) and writes nothing unless asked;
- ``render(report, fmt="html", path=None)``: any report format as text;
- ``audit_torch(module, example_input, data=None, **settings)`` and ``export_onnx``: a
  torch ``nn.Module`` exported with ``torch.onnx.export`` and audited.

This package sits above ``audit_reports``: imports go one way, ``audit_core`` <-
``audit_plugins`` <- ``audit_reports`` <- ``robustness_audit``. The API loads on first use,
so that ``audit --version`` imports neither it nor numpy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from robustness_audit.api import ReportWithArrays, audit, audit_torch, export_onnx, render

__all__ = ["ReportWithArrays", "audit", "audit_torch", "export_onnx", "render"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module("robustness_audit.api"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
