"""The Markdown summary, short enough for a pull-request comment.

A verdict line against ``--fail-on``, the models, the counts by status and
severity, a table of the failing findings (at most ``MAX_ROWS``, worst first)
and one line per analysis run with its headline or skip reason. Every string
from the model, the data or a plugin is escaped: it cannot open an HTML tag, a
link, a table cell or emphasis, and stays on its line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from audit_core.findings import Finding, Status, model_label
from audit_core.report_model import AnalysisRun, AuditReport

from .formatting import encodable, fmt_text, key_metric

MAX_ROWS = 20
"""Failing findings listed in the table; the rest are counted."""
MAX_CELL = 280
"""Characters of a summary or headline kept in one cell or line (the built-in headlines
fit; longer text is cut at a word boundary)."""

_SPECIAL = re.compile(r"([\\`*_\[\]|~@])")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_STATUS_ORDER = (Status.ERROR, Status.FAIL, Status.WARN, Status.PASS, Status.SKIPPED)


def md(text: object, limit: int = MAX_CELL) -> str:
    """``text`` as inert Markdown on one line, inside a line or a table cell: ``& < >``
    become entities (no HTML tag), and ``\\ ` * _ [ ] | ~ @`` are backslash-escaped (no
    code span, emphasis, link, cell break, strike-through or mention); control characters
    and lone surrogates become U+FFFD."""
    flat = _CONTROL.sub("\ufffd", " ".join(encodable(str(text)).split()))
    if len(flat) > limit:
        cut = flat[: limit - 1]
        flat = (cut.rsplit(" ", 1)[0] if " " in cut else cut).rstrip(" ,;:") + "…"
    flat = flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _SPECIAL.sub(r"\\\1", flat)


def render_markdown(report: AuditReport) -> str:
    """The report as a short Markdown summary."""
    lines = [_verdict_line(report), "", *_context_lines(report), ""]
    lines += _failing_table(report)
    lines += ["### Analyses", "", *_analysis_lines(report.analyses), ""]
    lines.append("_Full details: `report.html` (offline, self-contained) and `report.json`._")
    return "\n".join(lines) + "\n"


def _verdict_line(report: AuditReport) -> str:
    failures = len(report.gate_failures())
    if not report.analysed:
        return "## Robustness audit: ⚠️ NOT ANALYSED (every analysis was skipped)"
    if report.fail_on == "never":
        return "## Robustness audit: gate disabled (`--fail-on never`)"
    if failures:
        return (
            f"## Robustness audit: ❌ FAILED (`--fail-on {report.fail_on}`): "
            f"{failures} finding(s) failed at or above {report.fail_on}, or crashed"
        )
    return f"## Robustness audit: ✅ PASSED (`--fail-on {report.fail_on}`)"


def _context_lines(report: AuditReport) -> list[str]:
    models = ", ".join(
        f"**{md(m.name)}** (sha256 `{m.sha256[:12]}`, {m.parameter_count:,} parameters)"
        for m in report.models
    )
    counts = report.counts()
    by_status = ", ".join(f"{n} {s}" for s, n in counts["status"].items() if n)
    by_severity = ", ".join(f"{n} {s}" for s, n in counts["severity"].items() if n)
    data = (
        f"{report.data.count} samples from {md(report.data.source)}"
        + (f" ({md(report.data.labels_note)})" if report.data.labels_note else "")
        if report.data
        else "no audit data"
    )
    return [
        f"Models: {models or 'none'}; data: {data}; robustness-audit {md(report.tool_version)}.",
        "",
        f"Findings: {by_status or 'none'} (by severity: {by_severity or 'none'}).",
    ]


def _failing_table(report: AuditReport) -> list[str]:
    failing = sorted(
        (f for f in report.findings if f.is_failing),
        key=lambda f: (-f.severity.rank, _STATUS_ORDER.index(f.status)),
    )
    if not failing:
        return ["No finding failed or errored.", ""]
    gate = {id(f) for f in report.gate_failures()}
    lines = [
        "### Failing findings",
        "",
        "| severity | status | analysis | model | finding | key metric |",
        "|---|---|---|---|---|---|",
    ]
    lines += [_failing_row(f, id(f) in gate) for f in failing[:MAX_ROWS]]
    if len(failing) > MAX_ROWS:
        lines.append(f"\n…and {len(failing) - MAX_ROWS} more failing finding(s) in the report.")
    return [*lines, ""]


def _failing_row(finding: Finding, gating: bool) -> str:
    severity = f"**{finding.severity.value}**" if gating else finding.severity.value
    metric = _metric(finding)
    title = md(finding.title or finding.id, 80)
    return (
        f"| {severity} | {finding.status.value} | {md(finding.analysis, 60)} | "
        f"{md(model_label(finding.model), 60)} | {title}: {md(finding.summary)} | {metric} |"
    )


def _metric(finding: Finding) -> str:
    metric = key_metric([finding])
    if metric is None:
        return ""
    unit = f" {md(metric.unit, 20)}" if metric.unit else ""
    return f"{md(metric.name, 60)} = {md(fmt_text(metric.value))}{unit}"


def _analysis_lines(runs: Iterable[AnalysisRun]) -> list[str]:
    lines = []
    for run in runs:
        outcome = {"ran": "ran", "skipped": "skipped", "error": "crashed"}.get(run.outcome, "?")
        text = run.headline if run.outcome == "ran" else run.reason
        model = md(model_label(run.model), 60)
        lines.append(
            f"- **{md(run.analysis, 60)}** ({model}): {outcome}" + (f": {md(text)}" if text else "")
        )
    return lines or ["- no analysis ran"]
