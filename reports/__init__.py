"""Report renderers of robustness-audit (installed as ``audit_reports``).

Renderers take an ``audit_core.report_model.AuditReport`` and return text:

- ``render_json`` / ``to_dict`` / ``validate``: the versioned JSON report
  (schema in ``schema/report-1.0.schema.json``);
- ``render_html``: one self-contained offline HTML page with inline SVG plots;
- ``render_sarif`` (SARIF 2.1.0), ``render_junit`` (JUnit XML), ``render_markdown``
  (a pull-request comment): the CI formats;
- ``write_reports``: render the requested formats and write them atomically.

Imports go one way: this package imports ``audit_core``, never plugins.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "render_html": "html_report",
    "SCHEMA_PATH": "json_report",
    "load_schema": "json_report",
    "render_json": "json_report",
    "to_dict": "json_report",
    "validate": "json_report",
    "render_junit": "junit",
    "render_markdown": "markdown",
    "image_svg": "plots",
    "plot_svg": "plots",
    "render_sarif": "sarif",
    "to_sarif": "sarif",
    "FORMATS": "writer",
    "RENDERERS": "writer",
    "OutputFormat": "writer",
    "write_reports": "writer",
}
"""Public name -> the module that defines it. Names load on first use, so importing one
renderer (or the format list the CLI's ``--help`` shows) does not import all of them
(matplotlib, jsonschema)."""

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
