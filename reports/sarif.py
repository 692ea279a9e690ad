"""The SARIF 2.1.0 report: failing findings as code-scanning results.

One run whose tool is ``robustness-audit`` with one rule per analysis (id = the
analysis name, short description = its title, full description = what it
checks) and one result per failing or erroring finding (passing, warning and
skipped findings are not results: code scanning shows problems). A result's
level follows the finding's severity (critical/high -> ``error``, medium ->
``warning``, low/info -> ``note``); its location is the audited model file, as a
URI relative to the working directory when the file is under it (an absolute
``file://`` URI otherwise); its properties carry the finding id, severity,
status, method and metrics (numbers stay numbers, NaN/inf become null). Crashed
analyses are also listed as tool execution notifications.

Message texts are SARIF plain text (section 3.11): ``{`` and ``}`` are doubled (no
string from a model or plugin becomes a ``{0}`` placeholder) and a backslash goes
between ``]`` and ``(`` (with the backslashes already there doubled), so no text forms a
``[text](target)`` embedded link. Other strings (properties, ids) are written as they
are; a lone surrogate, which UTF-8 cannot carry, becomes U+FFFD everywhere.

The document validates against the OASIS SARIF 2.1.0 schema (vendored in
``tests/data/sarif-2.1.0.schema.json`` and checked by the tests).
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from audit_core.findings import RUN_WIDE, Finding, Severity, Status
from audit_core.report_model import AnalysisRun, AuditReport, ModelInfo

from .formatting import encodable
from .json_report import plain

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA_URI = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)
TOOL_NAME = "robustness-audit"

LEVELS: dict[Severity, str] = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "note",
    Severity.INFO: "note",
}
"""SARIF result level of a failing finding, by severity."""


def render_sarif(report: AuditReport, base: str | os.PathLike[str] | None = None) -> str:
    """The report as a SARIF 2.1.0 log (JSON text). ``base`` (default: the working
    directory) is the directory model paths are made relative to."""
    text = json.dumps(to_sarif(report, base), indent=2, ensure_ascii=False, allow_nan=False)
    return encodable(text) + "\n"


def to_sarif(report: AuditReport, base: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The SARIF log as a JSON-ready dict."""
    root = Path(base) if base is not None else Path.cwd()
    rules = _rules(report)
    index = {rule["id"]: i for i, rule in enumerate(rules)}
    artifacts = [_artifact(model, root) for model in report.models]
    results = [
        _result(finding, index, report.models, root)
        for finding in report.findings
        if finding.is_failing
    ]
    run: dict[str, Any] = {
        "tool": {"driver": _driver(report, rules)},
        "invocations": [_invocation(report)],
        "artifacts": artifacts,
        "results": results,
        "columnKind": "unicodeCodePoints",
        "properties": {
            "failOn": report.fail_on,
            "passed": report.passed,
            "gateFailures": [f.id for f in report.gate_failures()],
            "counts": report.counts(),
            "seed": plain(report.seed),
        },
    }
    return {"$schema": SARIF_SCHEMA_URI, "version": SARIF_VERSION, "runs": [run]}


def _driver(report: AuditReport, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": TOOL_NAME,
        "version": report.tool_version,
        "semanticVersion": report.tool_version,
        "rules": rules,
    }


def _rules(report: AuditReport) -> list[dict[str, Any]]:
    """One rule per analysis, in order of first appearance (runs, then findings)."""
    runs: dict[str, AnalysisRun] = {}
    for run in report.analyses:
        runs.setdefault(run.analysis, run)
    names = list(dict.fromkeys([*runs, *(f.analysis for f in report.findings)]))
    return [_rule(name, runs.get(name)) for name in names]


def _rule(name: str, run: AnalysisRun | None) -> dict[str, Any]:
    title = (run.title if run else "") or name
    rule: dict[str, Any] = {"id": name, "name": _rule_name(name), "shortDescription": _text(title)}
    if run is not None and run.description:
        rule["fullDescription"] = _text(run.description)
    if run is not None and run.plugin:
        rule["properties"] = {"plugin": run.plugin}
    return rule


def _rule_name(name: str) -> str:
    """``attack-bound`` -> ``AttackBound`` (SARIF rule names are identifier-like)."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("-") if part) or "Analysis"


_LINK_OPENING = re.compile(r"(?<=\])(\\*)\(")


def _text(text: str) -> dict[str, str]:
    return {"text": message_text(text) if text.strip() else "(empty)"}


def message_text(text: str) -> str:
    """``text`` as a SARIF plain text message that shows it: braces doubled (section 3.11.5)
    and ``](`` broken by a backslash (section 3.11.6), so it has no placeholder or link."""
    braces = text.replace("{", "{{").replace("}", "}}")
    return _LINK_OPENING.sub(lambda m: m[1] * 2 + "\\(", braces)


def _artifact(model: ModelInfo, root: Path) -> dict[str, Any]:
    return {
        "location": {"uri": artifact_uri(model.path, root)},
        "hashes": {"sha-256": model.sha256},
        "roles": ["analysisTarget"],
        "description": _text(f"ONNX model {model.name}"),
    }


def artifact_uri(path: str, root: Path) -> str:
    """``path`` as a URI reference: relative to ``root`` (percent-encoded, ``/``-separated)
    when the file is under it, else an absolute ``file://`` URI."""
    absolute = Path(os.path.abspath(path))
    try:
        relative = absolute.relative_to(os.path.abspath(root))
    except ValueError:
        try:
            return absolute.as_uri()
        except UnicodeEncodeError:  # a lone surrogate that is no file name byte
            return Path(encodable(str(absolute))).as_uri()
    return urllib.parse.quote(_path_bytes(relative.as_posix()))


def _path_bytes(path: str) -> bytes:
    """The bytes of a file name (those of a name that is not UTF-8 come back from their
    surrogate escapes); a lone surrogate that is no such escape becomes U+FFFD."""
    try:
        return os.fsencode(path)
    except UnicodeEncodeError:
        return os.fsencode(encodable(path))


def _result(
    finding: Finding, index: dict[str, int], models: Sequence[ModelInfo], root: Path
) -> dict[str, Any]:
    return {
        "ruleId": finding.analysis,
        "ruleIndex": index[finding.analysis],
        "level": LEVELS[finding.severity],
        "kind": "fail",
        "message": _text(_message(finding)),
        "locations": _locations(finding, models, root),
        "fingerprints": {"robustnessAuditFindingId/v1": finding.id},
        "properties": {
            "findingId": finding.id,
            "title": finding.title,
            "model": finding.model,
            "severity": finding.severity.value,
            "status": finding.status.value,
            "method": finding.method.value,
            "metrics": {m.name: plain(m.value) for m in finding.metrics},
            "remediation": finding.remediation,
        },
    }


def _message(finding: Finding) -> str:
    prefix = "crashed: " if finding.status is Status.ERROR else ""
    where = f" [{finding.model}]" if finding.model else ""
    return f"{prefix}{finding.title or finding.id}{where}: {finding.summary}"


def _locations(finding: Finding, models: Sequence[ModelInfo], root: Path) -> list[dict[str, Any]]:
    """The model file the finding is about (every model for a run-wide finding)."""
    if finding.model == RUN_WIDE:
        chosen = list(models)
    else:
        chosen = [m for m in models if m.name == finding.model]
    return [
        {
            "physicalLocation": {
                "artifactLocation": {
                    "uri": artifact_uri(model.path, root),
                    "index": list(models).index(model),
                }
            },
            "message": _text(f"model {model.name}"),
        }
        for model in chosen
    ]


def _utc(stamp: str) -> str | None:
    """An ISO 8601 timestamp as SARIF wants it (UTC, ``Z``), or None if it is not one."""
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _invocation(report: AuditReport) -> dict[str, Any]:
    errors = [f for f in report.findings if f.status is Status.ERROR]
    invocation: dict[str, Any] = {
        "executionSuccessful": True,
        "commandLine": " ".join(report.command),
        "arguments": list(report.command[1:]),
    }
    for key, stamp in (("startTimeUtc", report.started_at), ("endTimeUtc", report.finished_at)):
        utc = _utc(stamp)
        if utc:
            invocation[key] = utc
    if errors:
        invocation["toolExecutionNotifications"] = [
            {
                "level": "error",
                "message": _text(f"{f.analysis} crashed: {f.summary}"),
                "associatedRule": {"id": f.analysis},
            }
            for f in errors
        ]
    return invocation
