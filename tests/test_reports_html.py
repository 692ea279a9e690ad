"""The HTML report's first screen, comparison table, skipped/errors section, analysis sections."""

from __future__ import annotations

import dataclasses
import re

from test_reports import (
    ESCAPED_IMG,
    ESCAPED_SCRIPT,
    HASH,
    IMG,
    PAYLOAD,
    SCRIPT,
    certified_finding,
    empirical_finding,
    error_finding,
    hostile_report,
    make_report,
    model_info,
    runs,
    theorem_finding,
)

from audit_core.findings import RUN_WIDE, Finding, Method, Metric, Severity, Status, Threshold
from audit_core.report_model import AnalysisRun
from audit_reports.formatting import key_metric
from audit_reports.html_report import render_html


def section(page: str, ident: str) -> str:
    """The ``<section id=ident>`` element's markup."""
    start = page.index(f'id="{ident}"')
    return page[start : page.index("</section>", start)]


def rows(markup: str, table_class: str) -> list[str]:
    table = re.search(rf'<table class="{table_class}">(.*?)</table>', markup, re.S)
    assert table, table_class
    body = table[1][table[1].index("<tbody>") :]
    return re.findall(r"<tr>(.*?)</tr>", body, re.S)


def test_first_screen_order() -> None:
    page = render_html(make_report())
    order = [page.index(f'id="{i}"') for i in ("verdict", "glance", "problems", "overview")]
    assert order == sorted(order) and order[-1] < page.index('id="analysis-0"')
    assert "<h1>Robustness audit of mnist-mlp, cifar-cnn</h1>" in page


def test_counts_by_severity_and_status() -> None:
    verdict = section(render_html(make_report()), "verdict")
    (severity,) = rows(verdict, "count-severity")
    (status,) = rows(verdict, "count-status")
    assert re.findall(r"badge v-(\w+)\">\w+</span> (\d+)", severity) == [
        ("info", "1"),
        ("low", "0"),
        ("medium", "2"),
        ("high", "2"),
        ("critical", "0"),
    ]
    assert re.findall(r"badge s-(\w+)\">\w+</span> (\d+)", status) == [
        ("pass", "1"),
        ("warn", "1"),
        ("fail", "1"),
        ("error", "1"),
        ("skipped", "1"),
    ]


def test_glance_models_data_and_one_line_per_run() -> None:
    report = make_report()
    glance = section(render_html(report), "glance")
    models = rows(glance, "models-brief")
    assert len(models) == 2 and "mnist-mlp" in models[0] and "cifar-cnn" in models[1]
    assert f'title="{HASH}"' in models[0] and HASH[:12] in models[0]
    assert "12,345" in models[0] and "1 × 1 × 8 × 8" in models[0]
    assert "<code>samples.npz</code>: 100 samples of shape 1 × 8 × 8" in glance
    assert "input bounds [0, 1], 10 class names" in glance
    lines = rows(glance, "glance")
    assert len(lines) == len(report.analyses)
    sections = {name: i for i, name in enumerate(dict.fromkeys(r.analysis for r in runs()))}
    for line, run in zip(lines, report.analyses, strict=True):
        assert f'href="#analysis-{sections[run.analysis]}">{run.analysis}</a>' in line
    assert "s-fail" in lines[0] and "m-certified" in lines[0] and "40% certified" in lines[0]
    assert "s-error" in lines[3]  # the crashed run
    assert "s-skipped" in lines[5] and "needs a depth-2 network" in lines[5]


def test_long_headlines_show_their_first_sentence() -> None:
    headline = "Robust accuracy 12% at eps 0.5. " + "More detail follows. " * 20
    analyses = (dataclasses.replace(runs()[0], headline=headline),)
    glance = section(render_html(make_report(analyses=analyses)), "glance")
    (line,) = rows(glance, "glance")
    assert "Robust accuracy 12% at eps 0.5. …" in line
    assert f'title="{headline}"' in line  # the whole headline on hover


def test_comparison_table_for_several_models() -> None:
    report = make_report()
    page = render_html(report)
    table = section(page, "glance")[section(page, "glance").index("Model comparison") :]
    header = re.search(r"<thead>(.*?)</thead>", table, re.S)[1]
    assert re.findall(r"<th>([^<]*)</th>", header) == ["", "mnist-mlp", "cifar-cnn"]
    body = rows(table, "comparison")
    assert body[0].startswith("<th>parameters</th>") and body[1].startswith(
        "<th>clean accuracy</th>"
    )
    assert re.findall(r'class="num">([^<]*)</td>', body[1]) == ["97.0%", "97.0%"]
    certificate = next(r for r in body if "simplex-certificate" in r)
    # the metric the threshold names, not the first metric
    assert "s-fail" in certificate and "median_radius = 0.125 l2" in certificate
    assert "not run" in certificate  # nothing ran on cifar-cnn
    assert not any("model-transfer" in r for r in body)  # about the model set: not per model
    single = render_html(make_report(models=(model_info(),)))
    assert "Model comparison" not in single


def test_key_metric_is_generic() -> None:
    judged = certified_finding()
    assert key_metric([judged]).name == "median_radius"  # named by the threshold
    unjudged = dataclasses.replace(judged, threshold=None)
    assert key_metric([unjudged]).name == "median_radius"  # first numeric metric
    labels_first = dataclasses.replace(
        unjudged, metrics=(Metric("solver", "clarabel"), Metric("exact", True), Metric("n", 3))
    )
    assert key_metric([labels_first]).name == "n"
    skipped = dataclasses.replace(theorem_finding(), status=Status.SKIPPED)
    assert key_metric([skipped, empirical_finding()]).name == "max_transfer"  # conclusive first
    assert key_metric([dataclasses.replace(judged, metrics=())]) is None
    off_threshold = dataclasses.replace(judged, threshold=Threshold("missing", "<", 1.0))
    assert key_metric([off_threshold]).name == "median_radius"


def test_skipped_and_errors_section() -> None:
    page = render_html(make_report())
    problems = section(page, "problems")
    (skipped,) = rows(problems, "skipped")
    assert "convex-region" in skipped and "needs a depth-2 network" in skipped
    assert "ZeroDivisionError: division by zero" in problems
    folded = problems[problems.index('<details class="traceback">') :]
    assert folded.index("<summary>Traceback</summary>") < folded.index("ZeroDivisionError")
    assert 'href="#finding-3"' in problems  # links to the error finding
    assert "broken-plugin" in problems and "ImportError: no module x" in problems
    clean = make_report(
        analyses=runs()[:3], findings=(certified_finding(), theorem_finding()), plugins=()
    )
    assert 'id="problems"' not in render_html(clean)


def test_analysis_section_says_what_was_checked_and_how() -> None:
    described = dataclasses.replace(runs()[0], description="Checks the certified l2 radius.")
    report = make_report(analyses=(described, *runs()[1:]))
    first = section(render_html(report), "analysis-0")
    assert '<p class="description text">Checks the certified l2 radius.</p>' in first
    assert "Method: " in first and "m-certified" in first and "a proven bound" in first
    assert "Based on: <cite>Singla &amp; Feizi" in first


def test_multi_model_run_owns_its_findings() -> None:
    run = AnalysisRun("model-transfer", "Transfer", "p", RUN_WIDE, "ran", headline="h")
    finding = dataclasses.replace(empirical_finding(), model=RUN_WIDE)
    page = render_html(make_report(analyses=(run,), findings=(finding,)))
    analysis = section(page, "analysis-0")
    assert analysis.count("<h3>Model: ") == 1 and "<h3>Model: all models</h3>" in analysis
    (line,) = rows(section(page, "glance"), "glance")
    assert "s-pass" in line and "m-empirical" in line


def test_new_sections_escape_everything() -> None:
    hostile_run = dataclasses.replace(hostile_report().analyses[0], description=PAYLOAD)
    error = dataclasses.replace(
        error_finding(), analysis=PAYLOAD, summary=PAYLOAD, traceback=PAYLOAD
    )
    report = dataclasses.replace(
        hostile_report(),
        analyses=(hostile_run,),
        findings=(*hostile_report().findings, error),
        models=(*hostile_report().models, model_info(PAYLOAD + "2")),
    )
    page = render_html(report)
    assert SCRIPT not in page and IMG not in page and "<script" not in page.lower()
    for ident in ("glance", "problems", "analysis-0"):
        markup = section(page, ident)
        assert ESCAPED_SCRIPT in markup and ESCAPED_IMG in markup, ident


def test_unknown_severity_counts_stay_compact() -> None:
    findings = tuple(
        Finding(
            id=f"a/{s.value}",
            analysis="a",
            title=s.value,
            severity=s,
            status=Status.PASS,
            method=Method.EMPIRICAL,
            summary="",
        )
        for s in Severity
    )
    verdict = section(render_html(make_report(findings=findings)), "verdict")
    assert len(rows(verdict, "count-severity")) == 1  # one row, five cells
    assert verdict.count("badge v-") == 5
