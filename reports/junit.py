"""The JUnit XML report, for CI systems that show test results.

One ``<testsuite>`` per analysis (``name`` = the analysis) and one
``<testcase>`` per finding (``classname`` = the analysis, ``name`` = the
finding's title and model): a failed finding has a ``<failure>`` (``type`` = its
severity, the text = summary, metrics, threshold and remediation), a crashed
analysis an ``<error>`` with its traceback, a skipped one ``<skipped>`` with the
reason; passing and warning findings pass, their summary in ``<system-out>``.
A run without any finding is one test case of its own (passed, skipped with its
reason, or errored).

Built with ``xml.etree``, so every string is escaped; characters that XML 1.0
cannot carry (control characters from a traceback, say) become U+FFFD.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from audit_core.findings import Finding, Status
from audit_core.report_model import AnalysisRun, AuditReport

from .formatting import fmt_text

_ILLEGAL_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(value: object) -> str:
    """``value`` as text that XML 1.0 can carry (illegal characters -> U+FFFD)."""
    return _ILLEGAL_XML.sub("\ufffd", str(value))


@dataclass
class _Suite:
    runs: list[AnalysisRun] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


def render_junit(report: AuditReport) -> str:
    """The report as a JUnit XML document (UTF-8 text with an XML declaration)."""
    root = _element("testsuites", name="robustness-audit", time=_seconds(report.seconds))
    totals = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    for name, suite in _suites(report).items():
        element = _suite_element(name, suite, report.started_at)
        root.append(element)
        for key in totals:
            totals[key] += int(element.get(key, "0"))
    for key, value in totals.items():
        root.set(key, str(value))
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n'


def _element(tag: str, text: str | None = None, **attributes: object) -> ET.Element:
    element = ET.Element(tag, {key: xml_text(value) for key, value in attributes.items()})
    if text:
        element.text = xml_text(text)
    return element


def _seconds(value: float) -> str:
    return f"{max(float(value or 0.0), 0.0):.3f}"


def _suites(report: AuditReport) -> dict[str, _Suite]:
    suites: dict[str, _Suite] = {}
    for run in report.analyses:
        suites.setdefault(run.analysis, _Suite()).runs.append(run)
    for finding in report.findings:
        suites.setdefault(finding.analysis, _Suite()).findings.append(finding)
    return suites


def _suite_element(name: str, suite: _Suite, timestamp: str) -> ET.Element:
    cases = [_case(finding) for finding in suite.findings]
    cases += [_empty_run_case(run) for run in suite.runs if _has_no_findings(run, suite)]
    counts = {
        "tests": len(cases),
        "failures": sum(case.find("failure") is not None for case in cases),
        "errors": sum(case.find("error") is not None for case in cases),
        "skipped": sum(case.find("skipped") is not None for case in cases),
    }
    element = _element(
        "testsuite",
        name=name,
        timestamp=timestamp,
        time=_seconds(sum(run.seconds for run in suite.runs)),
        **counts,
    )
    element.append(_properties(suite.runs))
    element.extend(cases)
    return element


def _has_no_findings(run: AnalysisRun, suite: _Suite) -> bool:
    """A run without a finding of its own (one on its model, ``RUN_WIDE`` for a run over
    all models)."""
    return not any(f.model == run.model for f in suite.findings)


def _properties(runs: Sequence[AnalysisRun]) -> ET.Element:
    element = ET.Element("properties")
    first = runs[0] if runs else None
    pairs = [("title", first.title), ("plugin", first.plugin)] if first else []
    if first and first.description:
        pairs.append(("description", first.description))
    for key, value in pairs:
        element.append(_element("property", name=key, value=value))
    return element


def _case_name(finding: Finding) -> str:
    title = finding.title or finding.id
    return f"{title} [{finding.model}]" if finding.model else title


def _case(finding: Finding) -> ET.Element:
    case = _element("testcase", classname=finding.analysis, name=_case_name(finding), time="0")
    if finding.status is Status.FAIL:
        case.append(
            _element(
                "failure",
                _details(finding),
                message=finding.summary,
                type=finding.severity.value,
            )
        )
    elif finding.status is Status.ERROR:
        case.append(
            _element(
                "error", finding.traceback or finding.summary, message=finding.summary, type="error"
            )
        )
    elif finding.status is Status.SKIPPED:
        case.append(_element("skipped", message=finding.summary))
    else:
        case.append(_element("system-out", _details(finding)))
    return case


def _empty_run_case(run: AnalysisRun) -> ET.Element:
    """A test case for a run that produced no finding: passed, skipped or errored."""
    name = f"{run.title or run.analysis} [{run.model}]" if run.model else run.title or run.analysis
    case = _element("testcase", classname=run.analysis, name=name, time=_seconds(run.seconds))
    if run.outcome == "skipped":
        case.append(_element("skipped", message=run.reason))
    elif run.outcome == "error":
        case.append(_element("error", run.reason, message=run.reason, type="error"))
    else:
        case.append(_element("system-out", "The analysis ran and reported no findings."))
    return case


def _details(finding: Finding) -> str:
    lines = [
        f"{finding.status.value.upper()} ({finding.severity.value}, {finding.method.value}): "
        f"{finding.summary}",
        f"finding: {finding.id}",
    ]
    lines += _metric_lines(finding)
    if finding.threshold is not None:
        t = finding.threshold
        lines.append(f"threshold: {t.metric} {t.operator} {fmt_text(t.value)}")
    if finding.remediation:
        lines.append(f"remediation: {finding.remediation}")
    return "\n".join(lines)


def _metric_lines(finding: Finding) -> Iterable[str]:
    for metric in finding.metrics:
        unit = f" {metric.unit}" if metric.unit else ""
        yield f"  {metric.name} = {fmt_text(metric.value)}{unit}"
