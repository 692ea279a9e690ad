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

from .html_report import render_html
from .json_report import SCHEMA_PATH, load_schema, render_json, to_dict, validate
from .junit import render_junit
from .markdown import render_markdown
from .plots import image_svg, plot_svg
from .sarif import render_sarif, to_sarif
from .writer import FORMATS, RENDERERS, OutputFormat, write_reports

__all__ = [
    "FORMATS",
    "RENDERERS",
    "SCHEMA_PATH",
    "OutputFormat",
    "image_svg",
    "load_schema",
    "plot_svg",
    "render_html",
    "render_json",
    "render_junit",
    "render_markdown",
    "render_sarif",
    "to_dict",
    "to_sarif",
    "validate",
    "write_reports",
]
