"""Report renderers: JSON (schema), HTML (offline, escaped), plots, atomic writing."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from audit_core.findings import (
    Assumption,
    Evidence,
    Example,
    Finding,
    Method,
    Metric,
    Plot,
    Reference,
    SampleSummary,
    Series,
    Severity,
    Status,
    Threshold,
)
from audit_core.report_model import AnalysisRun, AuditReport, DataInfo, ModelInfo, PluginInfo
from audit_reports import html_report, json_report, plots, writer
from audit_reports.html_report import render_html
from audit_reports.json_report import render_json, to_dict, validate
from audit_reports.plots import image_svg, plot_svg
from audit_reports.writer import OutputFormat, write_reports

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
PAYLOAD = f"{SCRIPT}{IMG}"
ESCAPED_SCRIPT = "&lt;script&gt;alert(1)&lt;/script&gt;"
ESCAPED_IMG = "&lt;img src=x onerror=alert(1)&gt;"
HASH = "0123456789abcdef" * 4


# ---------------------------------------------------------------- builders


def model_info(name: str = "mnist-mlp", metadata: dict[str, str] | None = None) -> ModelInfo:
    return ModelInfo(
        name=name,
        path=f"models/{name}.onnx",
        sha256=HASH,
        input_shape=(1, 1, 8, 8),
        num_outputs=10,
        num_classes=10,
        parameter_count=12_345,
        opset=17,
        producer="pytorch 2.3",
        piecewise_linear=True,
        layers=("Gemm 64->32", "Relu", "Gemm 32->10"),
        fidelity={"max_abs_logit_diff": 1.2e-7, "argmax_agreement": 1.0},
        accuracy=0.97,
        metadata=metadata if metadata is not None else {"trained_by": "zoo"},
    )


def image(offset: float = 0.0) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple((r * 8 + c) / 64 + offset for c in range(8)) for r in range(8))


def certified_finding() -> Finding:
    radii = Series("certified", (0.9, 0.7, None, 0.2), (0.0, 0.1, 0.2, 0.3), "step")
    attack = Series("attack", (1.0, 0.9, 0.6, 0.4), (0.0, 0.1, 0.2, 0.3), "line")
    points = Series("samples", (0.3, 0.5), (0.05, 0.25), "scatter")
    return Finding(
        id="simplex-certificate/mnist-mlp/radius",
        analysis="simplex-certificate",
        title="Certified l2 radius",
        severity=Severity.HIGH,
        status=Status.FAIL,
        method=Method.CERTIFIED,
        summary="Median certified radius 0.12 is below the required 0.25.",
        model="mnist-mlp",
        metrics=(
            Metric("median_radius", np.float32(0.125), "l2"),
            Metric("certified_fraction", np.float64(0.4)),
            Metric("undecided", np.int64(3), "samples"),
            Metric("worst_gap", math.nan, "l2"),
            Metric("largest_ratio", math.inf),
            Metric("exact", True),
            Metric("solver", "clarabel"),
        ),
        threshold=Threshold("median_radius", ">=", 0.25),
        evidence=Evidence(
            summaries=(
                SampleSummary("radius", 100, 0.0, 0.12, 0.15, 0.9, "l2"),
                SampleSummary("empty", 0, None, None, None, None),
            ),
            examples=(
                Example(
                    3,
                    7,
                    {"radius": 0.01, "attack": 0.02},
                    {"input": image(), "adversarial": image(0.05), "perturbation": image(-0.5)},
                ),
                Example(8, None, {"radius": math.nan, "note": "undecided"}),
            ),
            plots=(
                Plot(
                    "radius-vs-eps",
                    "Certified fraction vs eps",
                    "xy",
                    "eps",
                    "fraction",
                    (radii, attack, points),
                ),
                Plot(
                    "radius-log",
                    "Log scale",
                    "xy",
                    "eps",
                    "fraction",
                    (Series("c", (0.1, 0.2, 0.3), (0.01, 0.1, 1.0)),),
                    log_x=True,
                ),
                Plot(
                    "radius-hist",
                    "Radius histogram",
                    "histogram",
                    "radius",
                    "count",
                    (Series("radius", (0.1, 0.2, 0.2, None, 0.5, math.inf)),),
                ),
            ),
            artifacts=("radii.npy",),
            notes=("Margin 1e-9 subtracted.",),
        ),
        remediation="Train with a certified-robust objective.",
        references=(Reference("singla2019", "Thm 3, Alg 1"), Reference("unknown-paper")),
    )


def empirical_finding() -> Finding:
    matrix = ((1.0, 0.4, None), (0.3, 1.0, math.nan), (0.2, 0.1, 1.0))
    return Finding(
        id="model-transfer/matrix",
        analysis="model-transfer",
        title="Transfer between models",
        severity=Severity.MEDIUM,
        status=Status.PASS,
        method=Method.EMPIRICAL,
        summary="Adversarial examples transfer rarely.",
        metrics=(Metric("max_transfer", 0.4),),
        evidence=Evidence(
            plots=(
                Plot(
                    "transfer",
                    "Transfer matrix",
                    "heatmap",
                    matrix=matrix,
                    row_labels=("a", "b", "c"),
                    col_labels=("a", "b", "c"),
                ),
            )
        ),
        references=(Reference("charles2019", "Sec 7"),),
    )


def theorem_finding() -> Finding:
    return Finding(
        id="kkt/mnist-mlp/flip",
        analysis="kkt-non-robustness",
        title="Margin points flipped by a small perturbation",
        severity=Severity.MEDIUM,
        status=Status.WARN,
        method=Method.THEOREM,
        summary="c = 0.3 flips every margin point; sqrt(d) = 8.",
        model="mnist-mlp",
        metrics=(Metric("c", 0.3), Metric("sqrt_d", 8.0)),
        assumptions=(
            Assumption("depth 2", True),
            Assumption("near KKT point", False, "stationarity residual 0.4"),
            Assumption("data nearly orthogonal", None, "not checked"),
        ),
        references=(Reference("vardi2022", "Thm 4.1"),),
    )


def error_finding() -> Finding:
    return Finding(
        id="lower-bound/mnist-mlp/error",
        analysis="feature-extractor-lower-bound",
        title="Analysis crashed",
        severity=Severity.HIGH,
        status=Status.ERROR,
        method=Method.EMPIRICAL,
        summary="ZeroDivisionError: division by zero",
        model="mnist-mlp",
        traceback='Traceback (most recent call last):\n  File "x.py", line 1\nZeroDivisionError',
    )


def skipped_finding() -> Finding:
    return Finding(
        id="linear-transfer/mnist-mlp/skipped",
        analysis="linear-transfer",
        title="Not a linear model",
        severity=Severity.INFO,
        status=Status.SKIPPED,
        method=Method.THEOREM,
        summary="skipped",
        model="mnist-mlp",
    )


def runs() -> tuple[AnalysisRun, ...]:
    return (
        AnalysisRun(
            "simplex-certificate",
            "Simplex certificate",
            "robustness-audit",
            "mnist-mlp",
            "ran",
            seconds=1.5,
            config={"margin": 1e-9, "eps": [0.1]},
            headline="40% certified",
        ),
        AnalysisRun("model-transfer", "Model-to-model transfer", "robustness-audit", "", "ran"),
        AnalysisRun(
            "kkt-non-robustness",
            "KKT non-robustness",
            "robustness-audit",
            "mnist-mlp",
            "ran",
            seconds=0.2,
        ),
        AnalysisRun(
            "feature-extractor-lower-bound",
            "Lower bounds",
            "robustness-audit",
            "mnist-mlp",
            "error",
            reason="crashed",
        ),
        AnalysisRun("linear-transfer", "Linear transfer", "robustness-audit", "mnist-mlp", "ran"),
        AnalysisRun(
            "convex-region",
            "Convex-region transfer",
            "robustness-audit",
            "mnist-mlp",
            "skipped",
            reason="needs a depth-2 network",
        ),
    )


def make_report(fail_on: str = "high", **changes: Any) -> AuditReport:
    report = AuditReport(
        tool_version="0.1.0",
        started_at="2024-05-01T10:00:00+00:00",
        finished_at="2024-05-01T10:00:03+00:00",
        seconds=3.25,
        seed=0,
        command=("audit", "model.onnx", "--fail-on", fail_on),
        settings={
            "workers": 2,
            "tolerance": np.float64(1e-6),
            "nan": math.nan,
            "path": Path("out"),
        },
        fail_on=fail_on,
        models=(model_info(), model_info("cifar-cnn")),
        data=DataInfo("samples.npz", 100, (1, 8, 8), 0.0, 1.0, tuple(f"c{i}" for i in range(10))),
        plugins=(
            PluginInfo(
                "robustness-audit",
                "0.1.0",
                ("audit_register_analyses",),
                ("simplex-certificate",),
                builtin=True,
            ),
            PluginInfo("broken-plugin", "1.0", (), (), error="ImportError: no module x"),
        ),
        analyses=runs(),
        findings=(
            certified_finding(),
            empirical_finding(),
            theorem_finding(),
            error_finding(),
            skipped_finding(),
        ),
    )
    return dataclasses.replace(report, **changes)


def hostile_report() -> AuditReport:
    finding = dataclasses.replace(
        certified_finding(),
        title=PAYLOAD,
        summary=PAYLOAD,
        metrics=(Metric(PAYLOAD, 1.0, PAYLOAD, PAYLOAD), Metric("label", PAYLOAD)),
        remediation=PAYLOAD,
        assumptions=(Assumption(PAYLOAD, None, PAYLOAD),),
        references=(Reference(PAYLOAD, PAYLOAD),),
        traceback=PAYLOAD,
        evidence=Evidence(
            summaries=(SampleSummary(PAYLOAD, 1, 0.0, 0.0, 0.0, 0.0, PAYLOAD),),
            examples=(Example(0, 1, {PAYLOAD: PAYLOAD}, {PAYLOAD: image()}),),
            plots=(
                Plot(PAYLOAD, PAYLOAD, "xy", PAYLOAD, PAYLOAD, (Series(PAYLOAD, (1.0, 2.0)),)),
                Plot(
                    "h",
                    PAYLOAD,
                    "heatmap",
                    matrix=((1.0,),),
                    row_labels=(PAYLOAD,),
                    col_labels=(PAYLOAD,),
                ),
            ),
            artifacts=(PAYLOAD,),
            notes=(PAYLOAD,),
        ),
    )
    model = model_info(PAYLOAD, metadata={PAYLOAD: PAYLOAD})
    return make_report(
        models=(
            dataclasses.replace(
                model, path=PAYLOAD, producer=PAYLOAD, layers=(PAYLOAD,), fidelity={PAYLOAD: 0.0}
            ),
        ),
        data=DataInfo(PAYLOAD, 1, (1,), 0.0, 1.0, (PAYLOAD, PAYLOAD), PAYLOAD),
        plugins=(PluginInfo(PAYLOAD, PAYLOAD, (PAYLOAD,), (PAYLOAD,), error=PAYLOAD),),
        analyses=(
            AnalysisRun(
                PAYLOAD,
                PAYLOAD,
                PAYLOAD,
                PAYLOAD,
                "skipped",
                reason=PAYLOAD,
                config={PAYLOAD: PAYLOAD},
                headline=PAYLOAD,
            ),
        ),
        findings=(dataclasses.replace(finding, analysis=PAYLOAD, model=PAYLOAD, id=PAYLOAD),),
        settings={PAYLOAD: PAYLOAD},
        command=("audit", PAYLOAD),
        tool_version=PAYLOAD,
        started_at=PAYLOAD,
    )


@pytest.fixture(scope="module")
def report() -> AuditReport:
    return make_report()


@pytest.fixture(scope="module")
def page(report: AuditReport) -> str:
    return render_html(report)


@pytest.fixture(scope="module")
def document(report: AuditReport) -> dict[str, Any]:
    return json.loads(render_json(report))


# ---------------------------------------------------------------- JSON


def test_json_validates_against_schema(document: dict[str, Any]) -> None:
    validate(document)
    assert json_report.validation_errors(document) == []


def test_schema_is_draft_2020_12_without_id() -> None:
    schema = json_report.load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert "$id" not in schema
    assert schema["properties"]["schema_version"] == {"const": "1.0"}
    assert json_report.SCHEMA_PATH.is_file()


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("models", 0, "parameter_count"), "12345"),
        (("findings", 0, "evidence", "summaries", 0, "minimum"), "0.0"),
        (("seconds",), "3.25"),
        (("findings", 0, "severity"), "urgent"),
        (("findings", 0, "status"), "passed"),
        (("findings", 0, "method"), "guessed"),
        (("schema_version",), "2.0"),
        (("verdict", "passed"), "yes"),
        (("findings", 0, "evidence", "plots", 0, "kind"), "pie"),
        (("findings", 0, "evidence", "plots", 0, "series", 0, "y", 0), "1"),
    ],
)
def test_invalid_documents_do_not_validate(
    document: dict[str, Any], path: tuple[str | int, ...], value: Any
) -> None:
    broken = copy.deepcopy(document)
    target = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)


def test_unknown_keys_do_not_validate(document: dict[str, Any]) -> None:
    for where in (
        lambda d: d,
        lambda d: d["findings"][0],
        lambda d: d["models"][0],
        lambda d: d["findings"][0]["metrics"][0],
        lambda d: d["verdict"],
    ):
        broken = copy.deepcopy(document)
        where(broken)["surprise"] = 1
        with pytest.raises(jsonschema.ValidationError):
            validate(broken)


def test_non_finite_numbers_become_null(document: dict[str, Any]) -> None:
    metrics = {m["name"]: m["value"] for m in document["findings"][0]["metrics"]}
    assert metrics["worst_gap"] is None
    assert metrics["largest_ratio"] is None
    assert document["settings"]["nan"] is None
    radii = document["findings"][0]["evidence"]["plots"][2]["series"][0]["y"]
    assert radii == [0.1, 0.2, 0.2, None, 0.5, None]
    matrix = document["findings"][1]["evidence"]["plots"][0]["matrix"]
    assert matrix[0][2] is None and matrix[1][2] is None
    assert "NaN" not in render_json(make_report())
    assert "Infinity" not in render_json(make_report())


def test_numpy_scalars_become_python_numbers(report: AuditReport) -> None:
    metrics = {m["name"]: m["value"] for m in to_dict(report)["findings"][0]["metrics"]}
    assert type(metrics["median_radius"]) is float and metrics["median_radius"] == 0.125
    assert type(metrics["undecided"]) is int
    assert metrics["exact"] is True and metrics["solver"] == "clarabel"
    settings = to_dict(report)["settings"]
    assert type(settings["tolerance"]) is float and settings["path"] == "out"


def test_round_trip_keys(report: AuditReport, document: dict[str, Any]) -> None:
    assert json.loads(render_json(report)) == to_dict(report)
    report_fields = [f.name for f in dataclasses.fields(AuditReport)]
    assert set(document) == {*report_fields, "verdict"}
    assert list(document)[:2] == ["schema_version", "tool_version"]
    finding_fields = [f.name for f in dataclasses.fields(Finding)]
    assert list(document["findings"][0]) == finding_fields
    assert [f["id"] for f in document["findings"]] == [f.id for f in report.findings]
    assert document["findings"][0]["severity"] == "high"
    assert document["findings"][0]["references"][0]["title"].startswith("Singla")
    assert document["findings"][0]["references"][1]["title"] is None


def test_schema_definitions_match_dataclasses() -> None:
    """A field added in audit_core must be added to the schema (and vice versa)."""
    defs = json_report.load_schema()["$defs"]
    pairs = {
        "model": ModelInfo,
        "data": DataInfo,
        "plugin": PluginInfo,
        "analysis_run": AnalysisRun,
        "finding": Finding,
        "metric": Metric,
        "threshold": Threshold,
        "assumption": Assumption,
        "evidence": Evidence,
        "sample_summary": SampleSummary,
        "example": Example,
        "series": Series,
        "plot": Plot,
    }
    for name, cls in pairs.items():
        names = {f.name for f in dataclasses.fields(cls)}
        assert set(defs[name]["properties"]) == names, name
        assert set(defs[name]["required"]) == names, name
    assert set(defs["reference"]["properties"]) == {"paper", "where", "title"}


def test_verdict_section(report: AuditReport, document: dict[str, Any]) -> None:
    verdict = document["verdict"]
    assert verdict["fail_on"] == "high" and verdict["passed"] is False
    assert verdict["gate_failures"] == [
        "simplex-certificate/mnist-mlp/radius",
        "lower-bound/mnist-mlp/error",
    ]
    assert verdict["counts"] == report.counts()
    # a crashed analysis fails every gate (the audit is incomplete)...
    relaxed = to_dict(make_report("critical"))["verdict"]
    assert relaxed["passed"] is False and relaxed["gate_failures"] == [
        "lower-bound/mnist-mlp/error"
    ]
    # ... while failures below the level do not
    clean = to_dict(make_report("critical", findings=(theorem_finding(),)))["verdict"]
    assert clean["passed"] is True and clean["gate_failures"] == []
    assert to_dict(make_report("never"))["verdict"]["passed"] is True


def test_report_without_data_or_findings_validates() -> None:
    empty = make_report(data=None, findings=(), analyses=(), models=(), plugins=())
    document = json.loads(render_json(empty))
    validate(document)
    assert document["verdict"]["passed"] is False  # nothing was analysed: no verdict
    page = render_html(empty)
    assert "NOT ANALYSED" in page and 'class="verdict unanalysed"' in page and "PASSED" not in page


# ---------------------------------------------------------------- plots


def _all_plots() -> list[Plot]:
    return [
        *certified_finding().evidence.plots,
        *empirical_finding().evidence.plots,
        Plot("empty-xy", "empty"),
        Plot("empty-h", "empty", "histogram"),
        Plot("empty-m", "empty", "heatmap"),
        Plot(
            "neg-log",
            "no positive x",
            "xy",
            series=(Series("a", (1.0, 2.0), (-1.0, 0.0)),),
            log_x=True,
        ),
        Plot(
            "log-hist",
            "log histogram",
            "histogram",
            series=(Series("a", (1, 10, 1000)),),
            log_x=True,
        ),
    ]


@pytest.mark.parametrize("plot", _all_plots(), ids=lambda p: p.id)
def test_plot_svg_is_inline_ready_and_deterministic(plot: Plot) -> None:
    svg = plot_svg(plot)
    assert svg.startswith("<svg ") and svg.rstrip().endswith("</svg>")
    for forbidden in (
        "<?xml",
        "<!DOCTYPE",
        "<script",
        "http:",
        "https:",
        "<metadata",
        "<!--",
        "xmlns",
    ):
        assert forbidden not in svg
    assert re.search(r"\b(19|20)\d\d-\d\d-\d\d", svg) is None  # no date


def test_plot_svg_is_deterministic() -> None:
    for plot in (certified_finding().evidence.plots[0], empirical_finding().evidence.plots[0]):
        assert plot_svg(plot) == plot_svg(plot)


def test_plot_svg_prefixes_ids() -> None:
    svg = plot_svg(certified_finding().evidence.plots[0], id_prefix="f0-p0-")
    ids = re.findall(r'\bid="([^"]+)"', svg)
    assert ids and all(i.startswith("f0-p0-") for i in ids)
    refs = re.findall(r'(?:href="#|url\(#)([^")]+)', svg)
    assert refs and all(r in ids for r in refs)


def test_heatmap_annotates_values() -> None:
    svg = plot_svg(empirical_finding().evidence.plots[0])
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    assert "0.4" in texts and "0.3" in texts


def test_plot_text_is_escaped_and_dollar_is_literal() -> None:
    plot = Plot("p", f"{PAYLOAD} costs $5", "xy", "a & b", "$x$", (Series(SCRIPT, (1.0, 2.0)),))
    svg = plot_svg(plot)
    assert SCRIPT not in svg and IMG not in svg
    assert ESCAPED_SCRIPT in svg and ESCAPED_IMG in svg
    assert "costs $5" in svg and "a &amp; b" in svg


def test_bad_series_raises() -> None:
    with pytest.raises(ValueError):
        plot_svg(Plot("bad", "bad", series=(Series("s", (1.0, 2.0), (1.0,)),)))


def test_image_svg_is_a_png_data_uri() -> None:
    tag = image_svg(image(-0.5), alt=SCRIPT)
    match = re.fullmatch(
        r'<img class="sample" src="data:image/png;base64,([A-Za-z0-9+/=]+)" '
        r'width="(\d+)" height="(\d+)" alt="([^"]*)">',
        tag,
    )
    assert match is not None
    import base64

    png = base64.b64decode(match[1])
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png[12:16] == b"IHDR"
    assert int.from_bytes(png[16:20], "big") == 8
    assert match[4] == ESCAPED_SCRIPT
    assert image_svg(((0.0, None), (1.0, math.nan))) == image_svg(((0.0, None), (1.0, math.nan)))


def test_image_gray_scaling() -> None:
    gray = plots._gray(np.array([[0.0, 0.5, 1.0, math.nan]]))
    assert gray[0, :, 0].tolist()[:3] == [0, 128, 255] and gray[0, 3, 1] == 0
    signed = plots._gray(np.array([[-1.0, 0.0, 1.0]]))
    assert signed[0, :, 0].tolist() == [0, 128, 255]


# ---------------------------------------------------------------- HTML


def test_html_is_offline_and_script_free(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page.lower()
    assert "http://" not in page and "https://" not in page
    links = re.findall(r"""\b(?:src|href)\s*=\s*["']?([^"' >]*)""", page)
    assert links and all(link.startswith(("#", "data:")) for link in links)
    assert " on" + "error=" not in page and "javascript:" not in page
    csp = (
        '<meta http-equiv="Content-Security-Policy" content="default-src &#x27;none&#x27;; '
        'style-src &#x27;unsafe-inline&#x27;; img-src data:">'
    )
    assert csp in page


def test_html_first_screen(page: str, report: AuditReport) -> None:
    verdict = page[page.index('id="verdict"') : page.index('id="overview"')]
    assert "FAILED" in verdict and "--fail-on high" in verdict
    for index in (0, 3):
        assert f'href="#finding-{index}"' in verdict
    assert "broken-plugin" in verdict
    overview = page[page.index('id="overview"') : page.index('id="analysis-0"')]
    assert f'title="{HASH}"' in overview and HASH[:12] in overview
    assert "12,345" in overview and "1 × 1 × 8 × 8" in overview
    assert "max_abs_logit_diff" in overview and "samples.npz" in overview
    assert "0.1.0" in overview and "broken-plugin" in overview
    for model in report.models:
        assert model.name in overview


def test_html_passed_verdict() -> None:
    page = render_html(make_report("critical", findings=(theorem_finding(),)))
    assert 'class="verdict passed"' in page and "PASSED" in page
    crashed = render_html(make_report("critical", findings=(theorem_finding(), error_finding())))
    assert 'class="verdict failed"' in crashed and "a crash fails every gate" in crashed


def test_html_has_every_analysis_and_finding(page: str, report: AuditReport) -> None:
    names = dict.fromkeys(
        [r.analysis for r in report.analyses] + [f.analysis for f in report.findings]
    )
    for index, name in enumerate(names):
        assert f'id="analysis-{index}"' in page and name in page
    for index, finding in enumerate(report.findings):
        assert f'id="finding-{index}"' in page and finding.title in page
    assert "needs a depth-2 network" in page
    assert "<details" in page and "ZeroDivisionError" in page
    traceback = page[page.index('<details class="traceback">') :]
    assert traceback.index("ZeroDivisionError") < traceback.index("</details>")


def test_html_finding_details(page: str) -> None:
    assert page.count("<svg ") == 4
    assert page.count('<img class="sample" src="data:image/png;base64,') == 3
    assert "n/a" in page and "∞" in page
    assert "0.125" in page and "clarabel" in page
    assert "violated" in page
    for text in (
        "holds",
        "fails",
        "not checked",
        "Singla &amp; Feizi",
        "Thm 3, Alg 1",
        "unknown-paper",
        "radii.npy",
        "Margin 1e-9 subtracted.",
        "Train with a certified-robust objective.",
        "7 · c7",
        "all models",
    ):
        assert text in page, text
    for badge in (
        "s-fail",
        "s-pass",
        "s-warn",
        "s-error",
        "s-skipped",
        "m-certified",
        "m-empirical",
        "m-theorem",
        "v-high",
    ):
        assert badge in page, badge


def test_html_ids_are_unique(page: str) -> None:
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))


def test_html_escapes_everything() -> None:
    page = render_html(hostile_report())
    assert SCRIPT not in page and IMG not in page
    assert "<script" not in page.lower() and "<img src=x" not in page
    assert ESCAPED_SCRIPT in page and ESCAPED_IMG in page
    body = page[page.index("<body>") :]
    assert body.count(ESCAPED_SCRIPT) >= 30


def test_html_survives_a_broken_plot() -> None:
    bad = Plot("bad", "bad plot", series=(Series("s", (1.0, 2.0), (1.0,)),))
    finding = dataclasses.replace(empirical_finding(), evidence=Evidence(plots=(bad,)))
    page = render_html(make_report(findings=(finding,)))
    assert "bad plot could not be drawn: ValueError" in page


def test_number_formatting() -> None:
    fmt = html_report.fmt
    assert fmt(None) == "n/a" and fmt(math.nan) == "n/a"
    assert fmt(math.inf) == "∞" and fmt(-math.inf) == "−∞"
    assert fmt(0.123456) == "0.1235" and fmt(123456.0) == "1.235e+05"
    assert fmt(np.float32(0.5)) == "0.5" and fmt(7) == "7" and fmt(True) == "yes"
    assert fmt("<b>") == "&lt;b&gt;"


# ---------------------------------------------------------------- writer


def test_write_reports(tmp_path: Path, report: AuditReport, page: str) -> None:
    out = tmp_path / "a" / "b"
    paths = write_reports(report, out, ["json", "html"])
    assert paths == [out / "report.json", out / "report.html"]
    assert paths[0].read_text(encoding="utf-8") == render_json(report)
    assert paths[1].read_text(encoding="utf-8") == page
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json"]


def test_write_reports_rejects_unknown_format(tmp_path: Path, report: AuditReport) -> None:
    with pytest.raises(ValueError, match="unknown report format 'pdf'"):
        write_reports(report, tmp_path, ["json", "pdf"])
    assert list(tmp_path.iterdir()) == []


def test_write_reports_is_atomic_when_rendering_fails(
    tmp_path: Path, report: AuditReport, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "report.json").write_text("previous", encoding="utf-8")

    def boom(_: AuditReport) -> str:
        raise RuntimeError("renderer crashed")

    monkeypatch.setitem(writer.RENDERERS, "html", OutputFormat("report.html", boom))
    with pytest.raises(RuntimeError, match="renderer crashed"):
        write_reports(report, tmp_path, ["json", "html"])
    assert (tmp_path / "report.json").read_text(encoding="utf-8") == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_write_reports_is_atomic_when_writing_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = make_report(findings=(theorem_finding(),))
    (tmp_path / "report.json").write_text("previous", encoding="utf-8")
    real = writer._write_temp

    def flaky(directory: Path, filename: str, text: str) -> Path:
        if filename == "report.html":
            raise OSError("disk full")
        return real(directory, filename, text)

    monkeypatch.setattr(writer, "_write_temp", flaky)
    with pytest.raises(OSError, match="disk full"):
        write_reports(report, tmp_path, ["json", "html"])
    assert (tmp_path / "report.json").read_text(encoding="utf-8") == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
