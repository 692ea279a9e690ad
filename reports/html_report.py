"""The HTML report: one self-contained file that opens offline.

Inline CSS, inline SVG plots, PNG data URIs for sample images, no JavaScript,
no external URL, and a Content-Security-Policy that forbids loading anything.
Every string that comes from the model, the data, the configuration or a
plugin goes through ``esc`` (or ``fmt``) before it reaches the page; functions
named ``*_html`` return markup that is already safe.

The first screen answers "can this model ship?": the verdict against
``--fail-on`` with the findings that decide it, the counts by severity and
status, then "at a glance": the models audited (name, hash, input shape,
parameters), the data, one line per analysis run with its headline, and a
comparison table when several models were audited. Skipped analyses (with their
reasons) and crashed ones (message, traceback folded away) come next, then the
full model/data/plugin/run details, then one section per analysis (what it
checks, its methods and papers) grouped by model, with every finding and its
evidence. Everything here is generic: it renders ``Finding``/``Plot`` data and
knows no analysis by name.
"""

from __future__ import annotations

import html
import json
import math
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audit_core.findings import (
    PAPERS,
    Assumption,
    Evidence,
    Example,
    Finding,
    Method,
    Metric,
    Plot,
    Reference,
    SampleSummary,
    Severity,
    Status,
    Threshold,
    model_label,
)
from audit_core.report_model import AnalysisRun, AuditReport, DataInfo, ModelInfo, PluginInfo

from .formatting import conclusive, fmt_text, key_metric
from .json_report import plain
from .plots import image_svg, plot_svg

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
"""The page's Content-Security-Policy: nothing may be fetched; inline styles and data: images."""

_HASH_CHARS = 12

CSS = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --bg-soft: #f6f8fa;
  --pass: #1a7f37; --warn: #9a6700; --fail: #cf222e; --error: #8250df; --skipped: #6e7781;
  --info: #6e7781; --low: #0969da; --medium: #9a6700; --high: #bc4c00; --critical: #a40e26; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff; line-height: 1.45;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", sans-serif; }
header.page, main { max-width: 1180px; margin: 0 auto; padding: 0 20px; }
header.page { padding-top: 16px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 28px 0 10px; border-bottom: 1px solid var(--line);
  padding-bottom: 4px; }
h3 { font-size: 16px; margin: 20px 0 8px; }
h4 { font-size: 15px; margin: 0; display: inline; }
h5 { font-size: 13px; margin: 12px 0 4px; color: var(--muted); text-transform: uppercase; }
.muted { color: var(--muted); }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  font-size: 12.5px; }
pre { background: var(--bg-soft); padding: 8px; overflow-x: auto; white-space: pre-wrap; }
table { border-collapse: collapse; margin: 6px 0 10px; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: var(--bg-soft); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.verdict { border: 2px solid; border-radius: 8px; padding: 12px 16px; margin: 14px 0; }
.verdict h2 { border: 0; margin: 0 0 6px; font-size: 24px; }
.verdict.passed { border-color: var(--pass); background: #dafbe1; }
.verdict.failed { border-color: var(--fail); background: #ffebe9; }
.verdict.passed h2 { color: var(--pass); }
.verdict.failed h2 { color: var(--fail); }
.verdict.unanalysed { border-color: #6e7781; background: #f6f8fa; }
.counts { display: flex; gap: 24px; flex-wrap: wrap; }
.badge { display: inline-block; border-radius: 10px; padding: 0 8px; margin-right: 4px;
  font-size: 12px; font-weight: 600; color: #fff; background: var(--skipped); white-space: nowrap; }
.badge.method { background: #fff; color: var(--fg); border: 1px solid var(--line); }
.s-pass { background: var(--pass); } .s-warn { background: var(--warn); }
.s-fail { background: var(--fail); } .s-error { background: var(--error); }
.s-skipped { background: var(--skipped); }
.v-info { background: var(--info); } .v-low { background: var(--low); }
.v-medium { background: var(--medium); } .v-high { background: var(--high); }
.v-critical { background: var(--critical); }
.finding { border: 1px solid var(--line); border-left: 6px solid var(--skipped);
  border-radius: 6px; padding: 10px 14px; margin: 10px 0; }
.finding.st-pass { border-left-color: var(--pass); }
.finding.st-warn { border-left-color: var(--warn); }
.finding.st-fail { border-left-color: var(--fail); }
.finding.st-error { border-left-color: var(--error); }
.finding .id { color: var(--muted); font-size: 12px; margin-left: 6px; }
.text { white-space: pre-line; margin: 6px 0; }
.holds-yes { color: var(--pass); font-weight: 600; }
.holds-no { color: var(--fail); font-weight: 600; }
.holds-unknown { color: var(--warn); font-weight: 600; }
.images { display: flex; gap: 8px; flex-wrap: wrap; }
.images figure { margin: 0; text-align: center; font-size: 12px; }
img.sample { image-rendering: pixelated; border: 1px solid var(--line); display: block; }
figure.plot { margin: 8px 0; }
figure.plot svg { max-width: 100%; height: auto; }
figure.plot figcaption { font-size: 12px; color: var(--muted); }
.remediation { background: #fff8c5; border-radius: 6px; padding: 6px 10px; margin: 8px 0; }
.run { margin: 4px 0; }
.error-text { color: var(--fail); }
details > summary { cursor: pointer; color: var(--muted); }
nav ul { columns: 2; }
main table { display: block; max-width: 100%; overflow-x: auto; }
.counts table { margin: 8px 0 0; }
.counts th, .counts td { text-align: center; }
table.glance td.headline { max-width: 620px; }
td code, td { overflow-wrap: anywhere; }
.description { margin: 4px 0 8px; }
section.glance h3, section.problems h3 { margin-top: 14px; }
.cmp .badge { margin-right: 6px; }
"""


# ---------------------------------------------------------------- primitives


def esc(value: object) -> str:
    """``value`` as HTML text (quotes escaped too, so it is safe in attributes)."""
    return html.escape(str(value), quote=True)


def fmt(value: object) -> str:
    """A number (4 significant digits), flag or label as escaped HTML text; None -> n/a."""
    return esc(fmt_text(value))


def _tag(name: str, body: str, cls: str = "", **attrs: object) -> str:
    """``<name class=cls attrs...>body</name>``; ``body`` must be safe HTML, attrs are escaped."""
    pairs = ([("class", cls)] if cls else []) + [(k, v) for k, v in attrs.items() if v is not None]
    rendered = "".join(f' {key}="{esc(value)}"' for key, value in pairs)
    return f"<{name}{rendered}>{body}</{name}>"


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    """A table; ``headers`` are plain text (none: no header row), cells are safe HTML
    (``<td>`` elements or bare content)."""
    cells = "".join(_tag("th", esc(h)) for h in headers)
    head = _tag("thead", _tag("tr", cells)) if headers else ""
    body = "".join(_tag("tr", "".join(_cell(c) for c in row)) for row in rows)
    return _tag("table", head + _tag("tbody", body), cls)


def _cell(content: str) -> str:
    return content if content.startswith(("<td", "<th")) else _tag("td", content)


def _num(value: object) -> str:
    return _tag("td", fmt(value), "num")


def _percent(value: float | None) -> str:
    """A fraction as a percentage cell (clean accuracy: 1 reads as "100.0%")."""
    return _tag("td", "n/a" if value is None else f"{100 * value:.1f}%", "num")


def _list(items: Iterable[str], cls: str = "") -> str:
    """``<ul>`` of safe HTML items ("" if there are none)."""
    body = "".join(_tag("li", item) for item in items)
    return _tag("ul", body, cls) if body else ""


def _keyvalues(pairs: Iterable[tuple[str, str]]) -> str:
    """A two-column table: plain-text keys, safe-HTML values."""
    return _table((), ([_tag("th", esc(k)), v] for k, v in pairs), "kv")


_BADGE_CLASS = {Status: "s-", Severity: "v-", Method: "method m-"}


def _badge(kind: Status | Severity | Method) -> str:
    return _tag("span", esc(kind.value), f"badge {_BADGE_CLASS[type(kind)]}{kind.value}")


def _json_pre(value: Any) -> str:
    text = json.dumps(plain(value), indent=2, ensure_ascii=False, allow_nan=False)
    return _tag("pre", esc(text))


def _details(summary: str, body: str, cls: str = "") -> str:
    """A collapsed ``<details>``; ``summary`` is plain text, ``body`` safe HTML."""
    return _tag("details", _tag("summary", esc(summary)) + body, cls)


def _model_label(model: str) -> str:
    return esc(model_label(model))


# ---------------------------------------------------------------- document


def render_html(report: AuditReport) -> str:
    """The report as one self-contained, offline HTML page."""
    groups = _group(report)
    sections = (
        _verdict_html(report),
        _glance_html(report, groups),
        _problems_html(report),
        _overview_html(report),
        _analyses_html(report, groups),
    )
    body = _page_header(report) + _tag("main", "".join(sections))
    return _document(_page_title(report), body)


def _document(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">\n'
        '<meta name="referrer" content="no-referrer">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def _page_title(report: AuditReport) -> str:
    names = ", ".join(m.name for m in report.models) or "no model"
    return f"Robustness audit of {names}: {report.verdict_word}"


def _page_header(report: AuditReport) -> str:
    line = (
        f"robustness-audit {esc(report.tool_version)} · started {esc(report.started_at)}"
        f" · {fmt(report.seconds)} s · seed {fmt(report.seed)}"
    )
    names = ", ".join(m.name for m in report.models)
    title = "Robustness audit" + (f" of {esc(names)}" if names else "")
    return _tag("header", _tag("h1", title) + _tag("p", line, "muted"), "page")


# ---------------------------------------------------------------- verdict


def _verdict_html(report: AuditReport) -> str:
    failures = _gate_failure_indices(report)
    heading = _tag("h2", report.verdict_word)
    parts = [heading, _tag("p", _gate_sentence(report, len(failures)))]
    if failures:
        parts.append(_list(_finding_link(i, report.findings[i]) for i in failures))
    parts.append(_list(_caveats(report), "caveats"))
    parts.append(_counts_html(report))
    return _tag("section", "".join(parts), f"verdict {_verdict_class(report)}", id="verdict")


def _verdict_class(report: AuditReport) -> str:
    if not report.analysed:
        return "unanalysed"
    return "passed" if report.passed else "failed"


def _gate_failure_indices(report: AuditReport) -> list[int]:
    failing = {id(f) for f in report.gate_failures()}
    return [i for i, f in enumerate(report.findings) if id(f) in failing]


def _gate_sentence(report: AuditReport, failures: int) -> str:
    gate = _tag("code", f"--fail-on {esc(report.fail_on)}")
    if not report.analysed:
        return (
            "Nothing was analysed: every analysis was skipped (reasons below), so there is "
            "no verdict on this model (exit code 5)."
        )
    if report.fail_on == "never":
        return f"The gate is disabled ({gate}): the run passes whatever the findings say."
    if not failures:
        return f"Gate {gate}: no finding of severity {esc(report.fail_on)} or above failed."
    return (
        f"Gate {gate}: {failures} finding(s) failed at severity {esc(report.fail_on)} or above, "
        "or crashed (a crash fails every gate):"
    )


def _finding_link(index: int, finding: Finding) -> str:
    link = _tag("a", esc(finding.title or finding.id), href=f"#finding-{index}")
    where = _tag("span", f"({esc(finding.analysis)} · {_model_label(finding.model)})", "muted")
    return f"{_badge(finding.status)}{_badge(finding.severity)}{link} {where}"


def _caveats(report: AuditReport) -> list[str]:
    gate = {id(f) for f in report.gate_failures()}
    below = sum(1 for f in report.findings if f.is_failing and id(f) not in gate)
    skipped = [run for run in report.analyses if run.outcome == "skipped"]
    broken = [p for p in report.plugins if p.error]
    caveats = []
    if below:
        caveats.append(f"{below} failing or erroring finding(s) below the gate.")
    if skipped:
        names = ", ".join(f"{esc(r.analysis)} ({_model_label(r.model)})" for r in skipped)
        caveats.append(f"{len(skipped)} analysis run(s) skipped: {names}.")
    if broken:
        names = ", ".join(esc(p.name) for p in broken)
        caveats.append(f"{len(broken)} plugin(s) failed to load: {names}.")
    return caveats


def _counts_html(report: AuditReport) -> str:
    """Two one-row tables: findings by severity, findings by status."""
    counts = report.counts()
    tables = [
        _table(
            (),
            [[_tag("th", f"by {kind}")] + [_badge(cls(k)) + " " + fmt(v) for k, v in row.items()]],
            f"count-{kind}",
        )
        for kind, cls in (("severity", Severity), ("status", Status))
        for row in (counts[kind],)
    ]
    return _tag("div", "".join(tables), "counts")


# ---------------------------------------------------------------- at a glance

_STATUS_ORDER = (Status.ERROR, Status.FAIL, Status.WARN, Status.PASS, Status.SKIPPED)
"""Worst first: the status that stands for a group of findings."""


def _glance_html(report: AuditReport, groups: Mapping[str, Mapping[str, _ModelGroup]]) -> str:
    """The rest of the first screen: models, data, one line per analysis run, comparison."""
    parts = [
        _tag("h3", "Models audited"),
        _models_brief_html(report.models),
        _tag("h3", "Data"),
        _tag("p", _data_line(report.data)),
        _tag("h3", "Analyses"),
        _runs_table_html(report, groups),
    ]
    if len(report.models) > 1:
        parts += [_tag("h3", "Model comparison"), _comparison_html(report, groups)]
    return _tag("section", "".join(parts), "glance", id="glance")


def _models_brief_html(models: Sequence[ModelInfo]) -> str:
    if not models:
        return _tag("p", "No model.", "muted")
    headers = ("model", "sha256", "input shape", "parameters", "classes", "clean accuracy")
    rows = (
        [
            _tag("strong", esc(m.name)),
            _tag("code", esc(m.sha256[:_HASH_CHARS]), title=m.sha256),
            esc(_shape(m.input_shape)),
            _tag("td", f"{m.parameter_count:,}", "num"),
            _num(m.num_classes),
            _percent(m.accuracy),
        ]
        for m in models
    )
    return _table(headers, rows, "models-brief")


def _data_line(data: DataInfo | None) -> str:
    if data is None:
        return "No audit data (only analyses that need none ran)."
    classes = len(data.class_names)
    return (
        f"{_tag('code', esc(data.source))}: {fmt(data.count)} samples of shape "
        f"{esc(_shape(data.sample_shape))}, input bounds [{fmt(data.lower)}, {fmt(data.upper)}]"
        + (f", {classes} class names" if classes else "")
        + (f"; <strong>{esc(data.labels_note)}</strong>" if data.labels_note else "")
        + "."
    )


def _runs_table_html(report: AuditReport, groups: Mapping[str, Mapping[str, _ModelGroup]]) -> str:
    """One line per analysis run: outcome, methods, headline (or the skip/crash reason)."""
    if not report.analyses:
        return _tag("p", "No analysis ran.", "muted")
    anchors = {name: i for i, name in enumerate(groups)}
    rows = []
    for run in report.analyses:
        findings = _run_findings(groups, run)
        methods = " ".join(
            _badge(m)
            for m in dict.fromkeys(f.method for f in findings if f.status is not Status.SKIPPED)
        )
        link = _tag("a", esc(run.analysis), href=f"#analysis-{anchors[run.analysis]}")
        rows.append(
            [
                link,
                _model_label(run.model),
                _outcome_html(run, findings),
                methods,
                _headline_cell(run.headline or run.reason),
            ]
        )
    return _table(("analysis", "model", "outcome", "method", "headline"), rows, "glance")


_HEADLINE_CHARS = 220


def _headline_cell(text: str) -> str:
    """The first sentence of a headline (at most ``_HEADLINE_CHARS``); all of it on hover."""
    first = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
    if len(first) > _HEADLINE_CHARS:
        first = first[: _HEADLINE_CHARS - 1].rstrip() + "…"
    title = text if first != text else None
    return _tag(
        "td",
        esc(first) + (" …" if title and not first.endswith("…") else ""),
        "headline",
        title=title,
    )


def _run_findings(
    groups: Mapping[str, Mapping[str, _ModelGroup]], run: AnalysisRun
) -> list[Finding]:
    slot = groups.get(run.analysis, {}).get(run.model)
    return [f for _, f in slot.findings] if slot is not None else []


def _outcome_html(run: AnalysisRun, findings: Sequence[Finding]) -> str:
    if run.outcome == "skipped":
        return _badge(Status.SKIPPED)
    if run.outcome == "error":
        return _badge(Status.ERROR)
    worst = _worst_status(findings)
    return _badge(worst) if worst else _tag("span", "no findings", "muted")


def _worst_status(findings: Iterable[Finding]) -> Status | None:
    statuses = {f.status for f in findings}
    return next((s for s in _STATUS_ORDER if s in statuses), None)


def _comparison_html(report: AuditReport, groups: Mapping[str, Mapping[str, _ModelGroup]]) -> str:
    """Per analysis (rows) and model (columns): worst status and the key metric."""
    models = [m.name for m in report.models]
    rows: list[list[str]] = [
        [_tag("th", "parameters")]
        + [_tag("td", f"{m.parameter_count:,}", "num") for m in report.models],
        [_tag("th", "clean accuracy")] + [_percent(m.accuracy) for m in report.models],
    ]
    for name, group in groups.items():
        if not any(model in group for model in models):
            continue  # a multi-model analysis: nothing to compare per model
        cells = [_comparison_cell(group.get(model)) for model in models]
        rows.append([_tag("th", esc(name)), *cells])
    return _table(("", *models), rows, "comparison")


def _comparison_cell(group: _ModelGroup | None) -> str:
    if group is None:
        return _tag("td", "not run", "muted")
    findings = [f for _, f in group.findings]
    if any(r.outcome == "skipped" for r in group.runs) and not conclusive(findings):
        return _tag("td", _badge(Status.SKIPPED), "cmp")
    status = _worst_status(findings)
    metric = key_metric(findings)
    shown = f"{esc(metric.name)} = {fmt(metric.value)} {esc(metric.unit)}".strip() if metric else ""
    return _tag("td", (_badge(status) if status else "") + shown, "cmp")


# ---------------------------------------------------------------- skipped and errors


def _problems_html(report: AuditReport) -> str:
    """Skipped analyses with their reasons; crashes with their message and folded traceback."""
    skipped = [r for r in report.analyses if r.outcome == "skipped"]
    errors = [(i, f) for i, f in enumerate(report.findings) if f.status is Status.ERROR]
    broken = [p for p in report.plugins if p.error]
    parts = []
    if skipped:
        rows = ([esc(r.analysis), _model_label(r.model), esc(r.reason)] for r in skipped)
        parts += [
            _tag("h3", "Skipped analyses"),
            _table(("analysis", "model", "reason"), rows, "skipped"),
        ]
    if errors:
        parts += [_tag("h3", "Errors"), "".join(_error_html(i, f) for i, f in errors)]
    if broken:
        rows = ([esc(p.name), _tag("span", esc(p.error), "error-text")] for p in broken)
        parts += [
            _tag("h3", "Plugins that failed to load"),
            _table(("plugin", "error"), rows, "plugin-errors"),
        ]
    if not parts:
        return ""
    return _tag(
        "section", _tag("h2", "Skipped and errors") + "".join(parts), "problems", id="problems"
    )


def _error_html(index: int, finding: Finding) -> str:
    where = f"{esc(finding.analysis)} · {_model_label(finding.model)}"
    head = _tag("p", f"{_badge(finding.status)}{_tag('a', where, href=f'#finding-{index}')}")
    message = _tag("p", esc(finding.summary), "text error-text")
    return _tag("div", head + message + _traceback_html(finding.traceback), "error")


# ---------------------------------------------------------------- overview


def _overview_html(report: AuditReport) -> str:
    parts = [
        _tag("h2", "Models"),
        _models_html(report.models),
        _tag("h2", "Data"),
        _data_html(report.data),
        _tag("h2", "Plugins"),
        _plugins_html(report.plugins),
        _tag("h2", "Run"),
        _run_html(report),
        _contents_html(report),
    ]
    return _tag("section", "".join(parts), id="overview")


def _models_html(models: Sequence[ModelInfo]) -> str:
    if not models:
        return _tag("p", "No model.", "muted")
    headers = (
        "model",
        "sha256",
        "input shape",
        "classes",
        "parameters",
        "piecewise linear",
        "clean accuracy",
        "fidelity",
        "opset / producer",
    )
    table = _table(headers, (_model_row(m) for m in models))
    return table + "".join(_model_details(m) for m in models)


def _model_row(model: ModelInfo) -> list[str]:
    digest = _tag("code", esc(model.sha256[:_HASH_CHARS]), title=model.sha256)
    name = f'<strong>{esc(model.name)}</strong><br><code class="muted">{esc(model.path)}</code>'
    fidelity = "<br>".join(f"{esc(k)}: {fmt(v)}" for k, v in model.fidelity.items()) or "n/a"
    return [
        name,
        digest,
        esc(_shape(model.input_shape)),
        _num(model.num_classes),
        _tag("td", f"{model.parameter_count:,}", "num"),
        fmt(model.piecewise_linear),
        _percent(model.accuracy),
        fidelity,
        f"{fmt(model.opset)} / {esc(model.producer)}",
    ]


def _model_details(model: ModelInfo) -> str:
    layers = _tag("ol", "".join(_tag("li", esc(layer)) for layer in model.layers))
    metadata = _keyvalues((k, esc(v)) for k, v in model.metadata.items()) if model.metadata else ""
    body = f"{metadata}{layers}"
    return _details(
        f"{model.name}: {len(model.layers)} layers, {len(model.metadata)} metadata entries", body
    )


def _shape(shape: Sequence[int]) -> str:
    return " × ".join(str(d) for d in shape) or "scalar"


def _data_html(data: DataInfo | None) -> str:
    if data is None:
        return _tag("p", "No audit data.", "muted")
    classes = ", ".join(esc(c) for c in data.class_names) or "n/a"
    return _keyvalues(
        (
            ("source", esc(data.source)),
            ("samples", fmt(data.count)),
            ("sample shape", esc(_shape(data.sample_shape))),
            (
                "input bounds",
                f"[{fmt(data.lower)}, {fmt(data.upper)}] (from {esc(data.bounds_source)})"
                + (
                    f"; {fmt(data.clipped_values)} sample values lay outside them by float "
                    "noise and were clipped"
                    if data.clipped_values
                    else ""
                ),
            ),
            ("class names", classes),
            ("labels", esc(data.labels_note or "from the data file")),
        )
    )


def _plugins_html(plugins: Sequence[PluginInfo]) -> str:
    if not plugins:
        return _tag("p", "No plugin.", "muted")
    headers = ("plugin", "version", "built in", "analyses", "hooks", "load error")
    return _table(headers, (_plugin_row(p) for p in plugins))


def _plugin_row(plugin: PluginInfo) -> list[str]:
    error = _tag("span", esc(plugin.error), "error-text") if plugin.error else ""
    return [
        _tag("strong", esc(plugin.name)),
        esc(plugin.version),
        fmt(plugin.builtin),
        esc(", ".join(plugin.analyses)),
        esc(", ".join(plugin.hooks)),
        error,
    ]


def _run_html(report: AuditReport) -> str:
    table = _keyvalues(
        (
            ("tool version", esc(report.tool_version)),
            ("started", esc(report.started_at)),
            ("finished", esc(report.finished_at)),
            ("duration", f"{fmt(report.seconds)} s"),
            ("seed", fmt(report.seed)),
            ("command", _tag("code", esc(shlex.join(report.command)))),
            ("executor", esc(_executor_text(report.execution))),
            ("schema version", esc(report.schema_version)),
        )
    )
    return table + _details("settings", _json_pre(report.settings))


def _executor_text(execution: dict) -> str:
    """``processes, 2 workers`` / ``dask at tcp://..., 8 worker threads``."""
    if not execution:
        return "not recorded"
    kind, workers = execution.get("kind", "?"), execution.get("workers", 1)
    if kind == "dask":
        return f"dask at {execution.get('scheduler')}, {workers} worker threads"
    return "serial (this process)" if kind == "serial" else f"{kind}, {workers} workers"


def _contents_html(report: AuditReport) -> str:
    items = [
        _tag("a", esc(name), href=f"#analysis-{i}") + " " + _status_badges(group)
        for i, (name, group) in enumerate(_group(report).items())
    ]
    return _tag("nav", _tag("h2", "Analyses") + (_list(items) or _tag("p", "None.", "muted")))


def _status_badges(group: Mapping[str, _ModelGroup]) -> str:
    statuses = [f.status for g in group.values() for _, f in g.findings]
    counts = {s: statuses.count(s) for s in Status if s in statuses}
    skipped = sum(1 for g in group.values() for r in g.runs if r.outcome == "skipped")
    badges = "".join(f'{_badge(s)}<span class="muted">×{n}</span> ' for s, n in counts.items())
    return badges + (_tag("span", f"{skipped} run(s) skipped", "muted") if skipped else "")


# ---------------------------------------------------------------- analyses


@dataclass
class _ModelGroup:
    """The runs and (indexed) findings of one analysis on one model."""

    runs: list[AnalysisRun] = field(default_factory=list)
    findings: list[tuple[int, Finding]] = field(default_factory=list)


def _group(report: AuditReport) -> dict[str, dict[str, _ModelGroup]]:
    """analysis -> model -> runs and findings, in order of first appearance.

    A finding goes with the run of its analysis on its model (``RUN_WIDE`` for a
    multi-model analysis: its run and its findings share that key).
    """
    groups: dict[str, dict[str, _ModelGroup]] = {}
    for run in report.analyses:
        groups.setdefault(run.analysis, {}).setdefault(run.model, _ModelGroup()).runs.append(run)
    for index, finding in enumerate(report.findings):
        group = groups.setdefault(finding.analysis, {})
        group.setdefault(finding.model, _ModelGroup()).findings.append((index, finding))
    return groups


def _analyses_html(report: AuditReport, groups: Mapping[str, Mapping[str, _ModelGroup]]) -> str:
    context = _Context(report.data.class_names if report.data else ())
    sections = [
        _analysis_html(i, name, group, context) for i, (name, group) in enumerate(groups.items())
    ]
    return "".join(sections)


@dataclass(frozen=True)
class _Context:
    """What finding renderers need from the rest of the report."""

    class_names: tuple[str, ...] = ()


def _analysis_html(index: int, name: str, group: Mapping[str, _ModelGroup], ctx: _Context) -> str:
    runs = [r for g in group.values() for r in g.runs]
    title = next((r.title for r in runs if r.title), "")
    plugin = next((r.plugin for r in runs if r.plugin), "")
    description = next((r.description for r in runs if r.description), "")
    findings = [f for g in group.values() for _, f in g.findings]
    heading = _tag("h2", esc(name) + (f" · {esc(title)}" if title else ""))
    meta = _tag("p", f"plugin {esc(plugin)}", "muted") if plugin else ""
    checked = _tag("p", esc(description), "description text") if description else ""
    body = "".join(_model_group_html(model, g, ctx) for model, g in group.items())
    parts = (heading, meta, checked, _methods_html(findings), body)
    return _tag("section", "".join(parts), "analysis", id=f"analysis-{index}")


def _methods_html(findings: Sequence[Finding]) -> str:
    """The methods used and the papers cited by an analysis's findings, in one line each."""
    methods = list(dict.fromkeys(f.method for f in findings if f.status is not Status.SKIPPED))
    papers = list(dict.fromkeys(r.paper for f in findings for r in f.references))
    lines = []
    if methods:
        badges = " ".join(_badge(m) + " " + esc(_METHOD_MEANING[m]) for m in methods)
        lines.append(_tag("p", f"Method: {badges}", "methods"))
    if papers:
        cited = "; ".join(_tag("cite", esc(PAPERS.get(p, p))) for p in papers)
        lines.append(_tag("p", f"Based on: {cited}", "muted"))
    return "".join(lines)


_METHOD_MEANING = {
    Method.CERTIFIED: "a proven bound, computed soundly",
    Method.EMPIRICAL: "measured (attacks, sampling): an upper bound or an estimate",
    Method.THEOREM: "a theorem's conclusion, with the assumptions checked listed",
}


def _model_group_html(model: str, group: _ModelGroup, ctx: _Context) -> str:
    runs = "".join(_run_line(run) for run in group.runs)
    findings = "".join(_finding_html(i, f, ctx) for i, f in group.findings)
    if not group.findings and all(r.outcome == "ran" for r in group.runs):
        findings = _tag("p", "No findings.", "muted")
    return _tag("div", _tag("h3", f"Model: {_model_label(model)}") + runs + findings, "model-group")


def _run_line(run: AnalysisRun) -> str:
    outcome = {"ran": "ran", "skipped": "skipped", "error": "crashed"}.get(run.outcome, run.outcome)
    text = f"<strong>{esc(outcome)}</strong>"
    if run.outcome != "skipped" and run.seconds:
        text += f" in {fmt(run.seconds)} s"
    if run.units:
        places = ", ".join(f"{count} in {esc(where)}" for where, count in sorted(run.units.items()))
        text += f" (units: {places})"
    if run.reason:
        text += f": {esc(run.reason)}"
    if run.headline:
        text += f" — {esc(run.headline)}"
    config = _details("configuration", _json_pre(run.config)) if run.config else ""
    return _tag("div", _tag("p", text) + config, f"run run-{run.outcome}")


# ---------------------------------------------------------------- findings


def _finding_html(index: int, finding: Finding, ctx: _Context) -> str:
    parts = [
        _finding_header(finding),
        _tag("p", esc(finding.summary), "text"),
        _metrics_html(finding.metrics),
        _threshold_html(finding.threshold, finding.metrics),
        _assumptions_html(finding),
        _evidence_html(index, finding.evidence, ctx),
        _remediation_html(finding.remediation),
        _references_html(finding.references),
        _traceback_html(finding.traceback),
    ]
    return _tag(
        "article", "".join(parts), f"finding st-{finding.status.value}", id=f"finding-{index}"
    )


def _finding_header(finding: Finding) -> str:
    badges = _badge(finding.status) + _badge(finding.severity) + _badge(finding.method)
    title = _tag("h4", esc(finding.title or finding.id))
    return _tag("header", f"{badges} {title}" + _tag("code", esc(finding.id), "id"))


def _metrics_html(metrics: Sequence[Metric]) -> str:
    if not metrics:
        return ""
    described = any(m.description for m in metrics)
    headers = ("metric", "value", "unit") + (("description",) if described else ())
    rows = (
        [esc(m.name), _num(m.value), esc(m.unit)] + ([esc(m.description)] if described else [])
        for m in metrics
    )
    return _table(headers, rows, "metrics")


def _threshold_html(threshold: Threshold | None, metrics: Sequence[Metric]) -> str:
    if threshold is None:
        return ""
    rule = _tag("code", f"{esc(threshold.metric)} {esc(threshold.operator)} {fmt(threshold.value)}")
    return _tag("p", f"Threshold: {rule}{_threshold_outcome(threshold, metrics)}", "threshold")


def _threshold_outcome(threshold: Threshold, metrics: Sequence[Metric]) -> str:
    value = next((m.value for m in metrics if m.name == threshold.metric), None)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return ""
    holds = threshold.holds(value)
    verdict = _tag("span", "holds" if holds else "violated", "holds-yes" if holds else "holds-no")
    return f" — {verdict} (value {fmt(value)})"


def _assumptions_html(finding: Finding) -> str:
    if not finding.assumptions:
        if finding.method is Method.THEOREM and finding.status in _CONCLUSIVE:
            return _tag("p", "This theorem finding lists no checked assumptions.", "holds-unknown")
        return ""
    rows = ([esc(a.name), _holds(a), esc(a.detail)] for a in finding.assumptions)
    return _tag("h5", "Assumptions") + _table(("assumption", "status", "detail"), rows)


_CONCLUSIVE = (Status.PASS, Status.WARN, Status.FAIL)


def _holds(assumption: Assumption) -> str:
    if assumption.holds is None:
        return _tag("span", "not checked", "holds-unknown")
    return (
        _tag("span", "holds", "holds-yes")
        if assumption.holds
        else _tag("span", "fails", "holds-no")
    )


def _remediation_html(remediation: str) -> str:
    if not remediation:
        return ""
    return _tag(
        "div", _tag("h5", "Remediation") + _tag("p", esc(remediation), "text"), "remediation"
    )


def _references_html(references: Sequence[Reference]) -> str:
    items = [_reference(r) for r in references]
    return _titled("References", _list(items, "references"))


def _reference(reference: Reference) -> str:
    title = _tag("cite", esc(PAPERS.get(reference.paper, reference.paper)))
    return f"{title}, {esc(reference.where)}" if reference.where else title


def _traceback_html(traceback: str) -> str:
    if not traceback:
        return ""
    return _details("Traceback", _tag("pre", esc(traceback)), "traceback")


# ---------------------------------------------------------------- evidence


def _evidence_html(index: int, evidence: Evidence, ctx: _Context) -> str:
    parts = [
        _summaries_html(evidence.summaries),
        _examples_html(evidence.examples, ctx),
        "".join(_plot_html(f"f{index}-p{i}-", plot) for i, plot in enumerate(evidence.plots)),
        _titled("Artifacts", _list(_tag("code", esc(a)) for a in evidence.artifacts)),
        _titled("Notes", _list(_tag("span", esc(n), "text") for n in evidence.notes)),
    ]
    body = "".join(parts)
    return _tag("div", _tag("h5", "Evidence") + body, "evidence") if body else ""


def _titled(title: str, body: str) -> str:
    return _tag("h5", esc(title)) + body if body else ""


def _summaries_html(summaries: Sequence[SampleSummary]) -> str:
    if not summaries:
        return ""
    headers = ("per-sample", "count", "min", "median", "mean", "max", "unit")
    rows = (
        [
            esc(s.name),
            _num(s.count),
            _num(s.minimum),
            _num(s.median),
            _num(s.mean),
            _num(s.maximum),
            esc(s.unit),
        ]
        for s in summaries
    )
    return _table(headers, rows, "summaries")


def _examples_html(examples: Sequence[Example], ctx: _Context) -> str:
    if not examples:
        return ""
    keys = list(dict.fromkeys(k for e in examples for k in e.values))
    with_images = any(e.images for e in examples)
    headers = ["sample", "label", *keys] + (["images"] if with_images else [])
    rows = (
        [fmt(e.index), _label(e.label, ctx)]
        + [_num(e.values.get(k)) for k in keys]
        + ([_images_html(e)] if with_images else [])
        for e in examples
    )
    return _titled("Examples", _table(headers, rows, "examples"))


def _label(label: int | None, ctx: _Context) -> str:
    if label is not None and 0 <= label < len(ctx.class_names):
        return f"{fmt(label)} · {esc(ctx.class_names[label])}"
    return fmt(label)


def _images_html(example: Example) -> str:
    if not example.images:
        return _tag("td", "")
    figures = [
        _tag("figure", _image(rows, caption) + _tag("figcaption", esc(caption)))
        for caption, rows in example.images.items()
    ]
    return _tag("div", "".join(figures), "images")


def _image(rows: Sequence[Sequence[float | None]], caption: str) -> str:
    try:
        return image_svg(rows, alt=caption)
    except (ValueError, TypeError) as exc:
        return _tag("span", f"image could not be drawn: {esc(exc)}", "error-text")


def _plot_html(prefix: str, plot: Plot) -> str:
    try:
        svg = plot_svg(plot, id_prefix=prefix)
    except Exception as exc:  # a bad plot must not cost the whole report
        message = f"plot {esc(plot.title or plot.id)} could not be drawn: {esc(type(exc).__name__)}"
        return _tag("p", f"{message}: {esc(exc)}", "error-text")
    return _tag("figure", svg + _tag("figcaption", esc(plot.title or plot.id)), "plot")
