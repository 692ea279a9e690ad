"""CI formats: SARIF 2.1.0 (validated against the vendored OASIS schema), JUnit XML, Markdown."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from test_reports import (
    IMG,
    PAYLOAD,
    SCRIPT,
    certified_finding,
    hostile_report,
    make_report,
    model_info,
    theorem_finding,
)

from audit_core.findings import RUN_WIDE, Finding, Metric, Severity, Status
from audit_core.report_model import AnalysisRun
from audit_reports import junit, markdown, sarif
from audit_reports.json_report import from_dict, render_json, to_dict
from audit_reports.junit import render_junit
from audit_reports.markdown import render_markdown
from audit_reports.sarif import render_sarif, to_sarif
from audit_reports.writer import FORMATS, RENDERERS, write_reports

SARIF_SCHEMA = Path(__file__).parent / "data" / "sarif-2.1.0.schema.json"


@pytest.fixture(scope="module")
def sarif_validator() -> jsonschema.Draft4Validator:
    schema = json.loads(SARIF_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft4Validator.check_schema(schema)
    assert schema["id"].endswith("/sarif-schema-2.1.0.json")
    return jsonschema.Draft4Validator(schema)


def assert_valid_sarif(validator: jsonschema.Draft4Validator, document: dict[str, Any]) -> None:
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(document)]
    assert errors == []


def failing(report) -> list[Finding]:
    return [f for f in report.findings if f.status in (Status.FAIL, Status.ERROR)]


# ---------------------------------------------------------------- registry


def test_every_format_is_registered_and_written(tmp_path: Path) -> None:
    assert FORMATS == ("json", "html", "sarif", "junit", "markdown")
    report = make_report()
    paths = write_reports(report, tmp_path, FORMATS)
    assert [p.name for p in paths] == [RENDERERS[f].filename for f in FORMATS]
    assert [p.name for p in paths][2:] == ["report.sarif", "report.junit.xml", "report.md"]
    for name, path in zip(FORMATS, paths, strict=True):
        assert path.read_text(encoding="utf-8") == RENDERERS[name].render(report)
    # a later run with fewer formats leaves no stale report of the earlier one
    (tmp_path / "notes.txt").write_text("not ours")
    write_reports(report, tmp_path, ("json", "html"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "report.html", "report.json"]


def test_json_report_round_trips_through_from_dict() -> None:
    document = to_dict(make_report())
    rebuilt = from_dict(document)
    assert to_dict(rebuilt) == document
    assert rebuilt.findings[0].severity is Severity.HIGH
    assert rebuilt.findings[0].evidence.plots[0].series[0].style == "step"
    assert render_sarif(rebuilt, "/") == render_sarif(
        from_dict(json.loads(render_json(rebuilt))), "/"
    )


# ---------------------------------------------------------------- SARIF


def test_sarif_validates_against_the_oasis_schema(sarif_validator) -> None:
    for report in (make_report(), make_report("never"), hostile_report(), make_report(findings=())):
        document = json.loads(render_sarif(report))
        assert_valid_sarif(sarif_validator, document)
        assert document["version"] == "2.1.0"


def test_invalid_sarif_does_not_validate(sarif_validator) -> None:
    document = to_sarif(make_report())
    document["runs"][0]["results"][0]["level"] = "fatal"
    assert list(sarif_validator.iter_errors(document))
    document = to_sarif(make_report())
    del document["runs"][0]["tool"]["driver"]["name"]
    assert list(sarif_validator.iter_errors(document))


def test_sarif_rules_and_results(tmp_path: Path) -> None:
    report = make_report()
    run = to_sarif(report, base=".")["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "robustness-audit" and driver["version"] == "0.1.0"
    analyses = list(dict.fromkeys(a.analysis for a in report.analyses))
    assert [rule["id"] for rule in driver["rules"]] == analyses
    titles = {a.analysis: a.title for a in report.analyses}
    for rule in driver["rules"]:
        assert rule["shortDescription"]["text"] == titles[rule["id"]]
    expected = failing(report)
    assert len(run["results"]) == len(expected) == 2
    for result, finding in zip(run["results"], expected, strict=True):
        assert result["ruleId"] == finding.analysis
        assert driver["rules"][result["ruleIndex"]]["id"] == finding.analysis
        assert result["level"] == "error"  # both are high
        assert result["properties"]["findingId"] == finding.id
        assert finding.title in result["message"]["text"]
        assert finding.summary in result["message"]["text"]
        uris = [loc["physicalLocation"]["artifactLocation"]["uri"] for loc in result["locations"]]
        assert uris == ["models/mnist-mlp.onnx"]  # relative to the working directory
    metrics = run["results"][0]["properties"]["metrics"]
    assert metrics["median_radius"] == 0.125 and metrics["undecided"] == 3
    assert metrics["worst_gap"] is None and metrics["exact"] is True
    assert run["properties"]["passed"] is False
    assert run["properties"]["gateFailures"] == [f.id for f in expected]
    notes = run["invocations"][0]["toolExecutionNotifications"]
    assert [n["associatedRule"]["id"] for n in notes] == ["feature-extractor-lower-bound"]


@pytest.mark.parametrize(
    ("severity", "level"),
    [
        (Severity.CRITICAL, "error"),
        (Severity.HIGH, "error"),
        (Severity.MEDIUM, "warning"),
        (Severity.LOW, "note"),
        (Severity.INFO, "note"),
    ],
)
def test_sarif_level_follows_severity(severity: Severity, level: str) -> None:
    finding = dataclasses.replace(certified_finding(), severity=severity)
    results = to_sarif(make_report(findings=(finding, theorem_finding())))["runs"][0]["results"]
    assert [r["level"] for r in results] == [level]  # the warn finding is no result


def test_sarif_locations(tmp_path: Path) -> None:
    inside = tmp_path / "models dir" / "m.onnx"
    outside = Path("/opt/elsewhere/model.onnx")
    models = (
        dataclasses.replace(model_info("a"), path=str(inside)),
        dataclasses.replace(model_info("b"), path=str(outside)),
    )
    about_a = dataclasses.replace(certified_finding(), model="a")
    about_set = dataclasses.replace(certified_finding(), id="set", model="")
    report = make_report(models=models, findings=(about_a, about_set))
    run = to_sarif(report, base=tmp_path)["runs"][0]
    assert [a["location"]["uri"] for a in run["artifacts"]] == [
        "models%20dir/m.onnx",
        "file:///opt/elsewhere/model.onnx",
    ]
    assert run["artifacts"][0]["hashes"]["sha-256"] == models[0].sha256
    first, second = run["results"]
    assert [loc["physicalLocation"]["artifactLocation"]["index"] for loc in first["locations"]] == [
        0
    ]
    assert len(second["locations"]) == 2  # a finding about the model set points at every model


def test_sarif_timestamps_are_utc() -> None:
    invocation = to_sarif(make_report())["runs"][0]["invocations"][0]
    assert invocation["startTimeUtc"] == "2024-05-01T10:00:00.000000Z"
    assert datetime.fromisoformat(invocation["endTimeUtc"].replace("Z", "+00:00"))
    hostile = to_sarif(hostile_report())["runs"][0]["invocations"][0]
    assert "startTimeUtc" not in hostile  # not a timestamp: left out rather than invalid


def test_sarif_passing_report_has_no_results(sarif_validator) -> None:
    document = to_sarif(make_report(findings=(theorem_finding(),)))
    assert document["runs"][0]["results"] == []
    assert document["runs"][0]["properties"]["passed"] is True
    assert_valid_sarif(sarif_validator, document)


def test_sarif_rule_names_are_identifiers() -> None:
    assert sarif._rule_name("attack-bound") == "AttackBound"
    assert sarif.artifact_uri("a/b c.onnx", Path.cwd()) == "a/b%20c.onnx"


# ---------------------------------------------------------------- JUnit


def parse_junit(text: str) -> ET.Element:
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n')
    return ET.fromstring(text.encode("utf-8"))


def test_junit_structure() -> None:
    report = make_report()
    root = parse_junit(render_junit(report))
    assert root.tag == "testsuites" and root.get("name") == "robustness-audit"
    suites = root.findall("testsuite")
    analyses = list(
        dict.fromkeys([r.analysis for r in report.analyses] + [f.analysis for f in report.findings])
    )
    assert [s.get("name") for s in suites] == analyses
    cases = {(c.get("classname"), c.get("name")): c for s in suites for c in s.findall("testcase")}
    for finding in report.findings:
        name = f"{finding.title} [{finding.model}]" if finding.model else finding.title
        case = cases[(finding.analysis, name)]
        children = {child.tag for child in case}
        expected = {
            Status.FAIL: "failure",
            Status.ERROR: "error",
            Status.SKIPPED: "skipped",
            Status.PASS: "system-out",
            Status.WARN: "system-out",
        }[finding.status]
        assert expected in children, (finding.id, children)
        assert not ({"failure", "error", "skipped"} - {expected}) & children
    failure = cases[("simplex-certificate", "Certified l2 radius [mnist-mlp]")].find("failure")
    assert failure.get("type") == "high"
    assert failure.get("message") == certified_finding().summary
    assert "median_radius = 0.125 l2" in failure.text
    assert "threshold: median_radius >= 0.25" in failure.text
    assert "remediation: Train with" in failure.text
    error = cases[("feature-extractor-lower-bound", "Analysis crashed [mnist-mlp]")].find("error")
    assert "ZeroDivisionError" in error.text and error.text.startswith("Traceback")
    totals = {key: int(root.get(key)) for key in ("tests", "failures", "errors", "skipped")}
    assert totals == {"tests": 6, "failures": 1, "errors": 1, "skipped": 2}
    for suite in suites:
        assert int(suite.get("tests")) == len(suite.findall("testcase"))
        assert int(suite.get("failures")) == len(suite.findall("testcase/failure"))


def test_junit_run_without_findings_is_one_case() -> None:
    root = parse_junit(render_junit(make_report()))
    suite = next(s for s in root.findall("testsuite") if s.get("name") == "convex-region")
    # the skipped convex-region run has no finding of its own: one skipped case with the reason
    (case,) = suite.findall("testcase")
    assert case.find("skipped").get("message") == "needs a depth-2 network"
    linear = next(s for s in root.findall("testsuite") if s.get("name") == "linear-transfer")
    assert [c.find("skipped") is not None for c in linear.findall("testcase")] == [True]
    report = make_report(findings=())
    root = parse_junit(render_junit(report))
    cases = root.findall("testsuite/testcase")
    assert len(cases) == len(report.analyses)  # one case per run
    outcomes = [next(iter(c)).tag for c in cases]
    expected = {"ran": "system-out", "skipped": "skipped", "error": "error"}
    assert outcomes == [expected[r.outcome] for r in report.analyses]


def test_junit_escapes_everything() -> None:
    text = render_junit(hostile_report())
    root = parse_junit(text)
    assert "<script" not in text and "<img" not in text
    assert not root.findall(".//script") and not root.findall(".//img")
    case = root.find("testsuite/testcase")
    assert case.get("classname") == PAYLOAD and case.get("name").startswith(PAYLOAD)
    assert case.find("failure").get("message") == PAYLOAD


def test_junit_survives_control_characters() -> None:
    nasty = "bell\x07 nul\x00 esc\x1b[31m red\ud800"
    finding = dataclasses.replace(certified_finding(), summary=nasty, title=nasty)
    root = parse_junit(render_junit(make_report(findings=(finding,))))
    message = root.find("testsuite/testcase/failure").get("message")
    assert message == "bell\ufffd nul\ufffd esc\ufffd[31m red\ufffd"
    assert junit.xml_text("ok\ttab\nline") == "ok\ttab\nline"


def test_run_wide_findings_are_about_every_model_in_every_format() -> None:
    """A multi-model analysis's run and findings share the key ``RUN_WIDE``: no format
    files them under one model or needs to guess which run they belong to."""
    run = AnalysisRun("model-transfer", "Transfer", "p", RUN_WIDE, "ran", headline="h")
    finding = dataclasses.replace(
        certified_finding(), id="model-transfer/matrix", analysis="model-transfer", model=RUN_WIDE
    )
    report = make_report(analyses=(run,), findings=(finding,))
    (result,) = to_sarif(report, base=Path("/"))["runs"][0]["results"]
    assert len(result["locations"]) == len(report.models) == 2
    assert result["properties"]["model"] == RUN_WIDE
    (case,) = parse_junit(render_junit(report)).findall("testsuite/testcase")  # no empty run
    assert case.get("name") == finding.title and case.find("failure") is not None
    text = render_markdown(report)
    assert "| model-transfer | all models | " in table_rows(text)[1]
    assert "- **model-transfer** (all models): ran: h" in text


# ---------------------------------------------------------------- Markdown


def table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]


def test_markdown_summary() -> None:
    report = make_report()
    text = render_markdown(report)
    first = text.splitlines()[0]
    assert first.startswith("## Robustness audit: ❌ FAILED (`--fail-on high`)")
    assert "2 finding(s) failed at or above high, or crashed" in first
    assert "1 pass, 1 warn, 1 fail, 1 error, 1 skipped" in text
    assert "`0123456789ab`" in text and "12,345 parameters" in text
    rows = table_rows(text)
    assert len(rows) == 1 + len(failing(report))  # header + one row per failing finding
    assert rows[1].startswith("| **high** | error | feature-extractor-lower-bound")  # worst first
    assert "**high**" in rows[2] and "median\\_radius = 0.125 l2" in rows[2]
    analysis_lines = [line for line in text.splitlines() if line.startswith("- **")]
    assert len(analysis_lines) == len(report.analyses)
    assert any("needs a depth-2 network" in line for line in analysis_lines)
    assert any("40% certified" in line for line in analysis_lines)
    passed = render_markdown(make_report("critical", findings=())).splitlines()[0]
    assert passed == "## Robustness audit: ✅ PASSED (`--fail-on critical`)"
    assert "No finding failed or errored." in render_markdown(make_report(findings=()))


def test_markdown_stays_short() -> None:
    many = tuple(
        dataclasses.replace(certified_finding(), id=f"f{i}", summary="x" * 5000) for i in range(500)
    )
    text = render_markdown(make_report(findings=many))
    assert len(table_rows(text)) == 1 + markdown.MAX_ROWS
    assert f"…and {500 - markdown.MAX_ROWS} more failing finding(s)" in text
    assert len(text) < 16_000  # far below a pull-request comment's 65,536 characters


def test_markdown_cuts_long_text_at_a_word() -> None:
    words = "undecided fraction " * 30
    cut = markdown.md(words)
    assert len(cut) <= markdown.MAX_CELL and cut.endswith("…")
    assert cut[:-1].split()[-1] in ("undecided", "fraction")  # whole words only
    headline = (
        "At l2 eps 1.4: 0.0% of the samples are certified robust, 80.0% are proven non-robust "
        "(misclassified or an adversarial example found within eps) and 20.0% are undecided; "
        "median certified/attack ratio 0.0222."
    )
    assert markdown.md(headline) == headline  # a built-in headline fits whole


def test_markdown_escapes_everything() -> None:
    text = render_markdown(hostile_report())
    assert "<script" not in text and "<img" not in text and SCRIPT not in text and IMG not in text
    assert "&lt;script&gt;" in text
    row = table_rows(text)[1]
    assert len(re.findall(r"(?<!\\)\|", row)) == 7  # six cells: no payload breaks a cell
    assert markdown.md("a|b *c* [l](u) `x` @team\nnext") == (
        "a\\|b \\*c\\* \\[l\\](u) \\`x\\` \\@team next"
    )


def test_markdown_prefers_metrics_with_numbers() -> None:
    finding = dataclasses.replace(
        certified_finding(), metrics=(Metric("solver", "clarabel"), Metric("radius", 0.5, "l2"))
    )
    assert markdown._metric(finding) == "radius = 0.5 l2"


# ---------------------------------------------------------------- CLI


def test_cli_writes_the_ci_formats(run_audit, tiny_model, tiny_data, monkeypatch, sarif_validator):
    monkeypatch.setenv("AUDIT_PLUGINS", "attack-bound")
    run = run_audit(
        tiny_model,
        "--data",
        tiny_data,
        "--samples",
        "6",
        "--format",
        "sarif,junit,markdown",
        "--fail-on",
        "info",
        "-o",
        "attack-bound.fail_below=1.01",  # robust accuracy can never reach it: a failing check
    )
    assert run.exit_code == 1, run.stderr
    names = sorted(p.name for p in run.out_dir.iterdir())
    assert names == ["report.junit.xml", "report.md", "report.sarif"]
    document = json.loads((run.out_dir / "report.sarif").read_text(encoding="utf-8"))
    assert_valid_sarif(sarif_validator, document)
    results = document["runs"][0]["results"]
    assert results and {r["ruleId"] for r in results} == {"attack-bound"}
    uri = results[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri == Path(tiny_model).resolve().as_uri()  # the model is outside the working dir
    root = parse_junit((run.out_dir / "report.junit.xml").read_text(encoding="utf-8"))
    assert int(root.get("failures")) == len(results)
    summary = (run.out_dir / "report.md").read_text(encoding="utf-8")
    assert summary.startswith("## Robustness audit: ❌ FAILED (`--fail-on info`)")


def test_readme_ci_example_is_a_valid_command() -> None:
    """The README's "Use in CI" workflow runs a command the CLI accepts, with every format."""
    from robustness_audit import cli

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Use in CI") : readme.index("## Writing a plugin")]
    (command,) = re.findall(r"run: (audit .*)", section)
    args = cli._audit_parser().parse_args(shlex.split(command)[1:])
    assert args.fail_on == "high"
    assert args.format.split(",") == list(FORMATS)
    for name in ("report.sarif", "report.md"):
        assert f"{args.out}/{name}" in section
        assert name in {output.filename for output in RENDERERS.values()}
