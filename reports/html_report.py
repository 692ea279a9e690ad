"""The HTML report: one self-contained file that opens offline.

Inline CSS, inline SVG plots, PNG data URIs for sample images, no JavaScript,
no external URL, and a Content-Security-Policy that forbids loading anything.
Every string that comes from the model, the data, the configuration or a
plugin goes through ``esc`` (or ``fmt``) before it reaches the page; functions
named ``*_html`` return markup that is already safe.

The first screen answers "can this model ship?": the verdict against
``--fail-on``, the counts, the models, the data and the plugins. Then one section
per analysis, grouped by model, with every finding and its evidence.
"""

from __future__ import annotations

import html
import json
import math
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
)
from audit_core.report_model import AnalysisRun, AuditReport, DataInfo, ModelInfo, PluginInfo

from .json_report import plain
from .plots import image_svg, plot_svg

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
"""The page's Content-Security-Policy: nothing may be fetched; inline styles and data: images."""

ALL_MODELS = "all models"
"""How a finding or run with an empty ``model`` (one about the model set) is labelled."""

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
"""


# ---------------------------------------------------------------- primitives


def esc(value: object) -> str:
    """``value`` as HTML text (quotes escaped too, so it is safe in attributes)."""
    return html.escape(str(value), quote=True)


def fmt(value: object) -> str:
    """A number (4 significant digits), flag or label as escaped HTML text; None -> n/a."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _fmt_float(value)
    return esc(value)


def _fmt_float(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:.4g}"


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
    return esc(model) if model else ALL_MODELS


# ---------------------------------------------------------------- document


def render_html(report: AuditReport) -> str:
    """The report as one self-contained, offline HTML page."""
    body = "".join(
        (
            _page_header(report),
            _tag("main", _verdict_html(report) + _overview_html(report) + _analyses_html(report)),
        )
    )
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
    outcome = "passed" if not report.gate_failures() else "FAILED"
    return f"Robustness audit of {names}: {outcome}"


def _page_header(report: AuditReport) -> str:
    line = (
        f"robustness-audit {esc(report.tool_version)} · started {esc(report.started_at)}"
        f" · {fmt(report.seconds)} s · seed {fmt(report.seed)}"
    )
    return _tag("header", _tag("h1", "Robustness audit") + _tag("p", line, "muted"), "page")


# ---------------------------------------------------------------- verdict


def _verdict_html(report: AuditReport) -> str:
    failures = _gate_failure_indices(report)
    passed = not failures
    heading = _tag("h2", "PASSED" if passed else "FAILED")
    parts = [heading, _tag("p", _gate_sentence(report, len(failures)))]
    if failures:
        parts.append(_list(_finding_link(i, report.findings[i]) for i in failures))
    parts.append(_list(_caveats(report), "caveats"))
    parts.append(_counts_html(report))
    return _tag(
        "section", "".join(parts), "verdict passed" if passed else "verdict failed", id="verdict"
    )


def _gate_failure_indices(report: AuditReport) -> list[int]:
    failing = {id(f) for f in report.gate_failures()}
    return [i for i, f in enumerate(report.findings) if id(f) in failing]


def _gate_sentence(report: AuditReport, failures: int) -> str:
    gate = _tag("code", f"--fail-on {esc(report.fail_on)}")
    if report.fail_on == "never":
        return f"The gate is disabled ({gate}): the run passes whatever the findings say."
    if not failures:
        return (
            f"Gate {gate}: no finding of severity {esc(report.fail_on)} or above failed or errored."
        )
    return (
        f"Gate {gate}: {failures} finding(s) of severity {esc(report.fail_on)} or above "
        "failed or errored:"
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
    counts = report.counts()
    by_severity = [[_badge(Severity(k)), _num(v)] for k, v in counts["severity"].items()]
    by_status = [[_badge(Status(k)), _num(v)] for k, v in counts["status"].items()]
    tables = [
        _table(("severity", "findings"), by_severity),
        _table(("status", "findings"), by_status),
    ]
    return _tag("div", "".join(tables), "counts")


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
        "accuracy",
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
        _num(model.accuracy),
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
                f"[{fmt(data.lower)}, {fmt(data.upper)}] (from {esc(data.bounds_source)})",
            ),
            ("class names", classes),
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
            ("schema version", esc(report.schema_version)),
        )
    )
    return table + _details("settings", _json_pre(report.settings))


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
    """analysis -> model -> runs and findings, in order of first appearance."""
    groups: dict[str, dict[str, _ModelGroup]] = {}
    for run in report.analyses:
        groups.setdefault(run.analysis, {}).setdefault(run.model, _ModelGroup()).runs.append(run)
    for index, finding in enumerate(report.findings):
        slot = groups.setdefault(finding.analysis, {}).setdefault(finding.model, _ModelGroup())
        slot.findings.append((index, finding))
    return groups


def _analyses_html(report: AuditReport) -> str:
    context = _Context(report.data.class_names if report.data else ())
    sections = [
        _analysis_html(i, name, group, context)
        for i, (name, group) in enumerate(_group(report).items())
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
    heading = _tag("h2", esc(name) + (f" · {esc(title)}" if title else ""))
    meta = _tag("p", f"plugin {esc(plugin)}", "muted") if plugin else ""
    body = "".join(_model_group_html(model, g, ctx) for model, g in group.items())
    return _tag("section", heading + meta + body, "analysis", id=f"analysis-{index}")


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
