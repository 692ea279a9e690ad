"""The Python API (robustness_audit.api): the README example, each call on zoo and corpus
models, its errors, and that it runs the same audit as the command line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import robustness_audit as ra
from audit_core.errors import ConfigError, DataError, ModelLoadError
from audit_core.report_model import AuditReport
from audit_reports.json_report import to_dict
from audit_reports.writer import FORMATS, RENDERERS
from helpers import corpus

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "model_zoo" / "models" / "digits_mlp2.onnx"
DIGITS = ROOT / "model_zoo" / "data" / "digits_test.npz"
QUICK = {"only": ["attack-bound"], "samples": 12}


def _metrics(report: AuditReport) -> dict[str, dict[str, object]]:
    """Every finding's metrics, timings left out (they differ from run to run)."""
    return {
        f.id: {m.name: m.value for m in f.metrics if "seconds" not in m.name}
        for f in report.findings
    }


@pytest.fixture(scope="module")
def report() -> ra.ReportWithArrays:
    return ra.audit(MODEL, only=["attack-bound", "certificates"], samples=12)


def test_readme_example_runs(tmp_path, monkeypatch, capsys) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Python API", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "the README's Python API section has no python code block"
    (tmp_path / "model_zoo").symlink_to(ROOT / "model_zoo")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(code.group(1), "README.md", "exec"), namespace)
    report, untrained = namespace["report"], namespace["untrained"]
    assert isinstance(report, AuditReport) and report.verdict_word in ("PASSED", "FAILED")
    assert {f.analysis for f in report.findings} == {"attack-bound", "certificates"}
    assert report.settings["eps"] == [0.5, 1.0] and report.data.count == 30
    assert report.analyses[0].config["fail_below"] == 0.5
    assert (tmp_path / "digits_mlp2.html").read_text().startswith("<!DOCTYPE html>")
    assert untrained.models[0].name == "untrained" and untrained.data.count == 20
    printed = capsys.readouterr().out
    assert f"{report.verdict_word} {int(report.exit_code)}" in printed
    assert "median adversarial distance" in printed and "untrained" in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits_mlp2.html", "model_zoo"]


def test_audit_returns_the_report_and_writes_nothing(report, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    again = ra.audit(MODEL, **QUICK)
    assert list(tmp_path.iterdir()) == []
    assert isinstance(again, AuditReport) and again.models[0].name == "digits_mlp2"
    assert again.data.source.endswith("digits_test.npz") and again.data.count == 12
    metrics = again.metrics("attack-bound/robust-accuracy/digits_mlp2")
    assert type(metrics["clean_accuracy"]) is float and 0.0 <= metrics["robust_accuracy"] <= 1.0
    arrays = again.arrays_for("attack-bound")
    assert arrays["attack_distance"].shape == (12,) and arrays["x_adv"].shape == (12, 64)
    assert arrays is again.arrays[("digits_mlp2", "attack-bound")]
    assert again.exit_code == 0 and again.passed


def test_the_api_runs_the_same_audit_as_the_command_line(audit_runner) -> None:
    cli = audit_runner(MODEL, "--only", "attack-bound", "--samples", "12", "--eps", "0.4,0.8")
    api = ra.audit(MODEL, eps=(0.4, 0.8), **QUICK)
    assert cli.exit_code == api.exit_code
    from_cli = {f["id"]: {m["name"]: m["value"] for m in f["metrics"]} for f in cli.findings}
    assert from_cli == _metrics(api) and len(from_cli) == 2


def test_data_as_arrays_a_mapping_or_a_file_is_the_same_audit() -> None:
    arrays = dict(np.load(DIGITS))
    by_file = ra.audit(MODEL, DIGITS, **QUICK)
    by_mapping = ra.audit(MODEL, arrays, **QUICK)
    by_tuple = ra.audit(MODEL, (arrays["x"], arrays["y"]), bounds=(0.0, 1.0), **QUICK)
    assert _metrics(by_file) == _metrics(by_mapping) == _metrics(by_tuple)
    assert by_mapping.data.source == "in-memory arrays" and by_tuple.data.bounds_source == "option"
    unlabelled = ra.audit(MODEL, arrays["x"], **QUICK)
    assert unlabelled.data.labels_from == "model predictions"
    labelled = ra.audit(MODEL, arrays["x"], labels=arrays["y"], **QUICK)
    assert labelled.data.labels_from == "file"
    assert _metrics(labelled) == _metrics(by_file)


def test_a_model_in_memory_is_audited_like_its_file() -> None:
    proto = onnx.load(MODEL)
    in_memory = ra.audit(proto, DIGITS, **QUICK)
    assert in_memory.models[0].sha256 == ra.audit(MODEL, DIGITS, **QUICK).models[0].sha256
    by_file = ra.audit(MODEL, DIGITS, **QUICK)
    name = in_memory.models[0].name
    assert _metrics(in_memory) == {
        key.replace("digits_mlp2", name): value for key, value in _metrics(by_file).items()
    }
    assert not Path(in_memory.models[0].path).exists()  # the temporary copy is gone


def test_several_models_share_the_data_and_name_their_arrays() -> None:
    other = ROOT / "model_zoo" / "models" / "digits_mlp3.onnx"
    report = ra.audit([MODEL, other], DIGITS, **QUICK)
    assert [m.name for m in report.models] == ["digits_mlp2", "digits_mlp3"]
    with pytest.raises(KeyError, match="no single export 'attack-bound'"):
        report.arrays_for("attack-bound")
    assert report.arrays_for("attack-bound", "digits_mlp3")["attack_distance"].shape == (12,)


def test_settings_and_options_reach_the_analyses() -> None:
    report = ra.audit(
        MODEL,
        eps=0.7,
        norm="linf",
        seed=3,
        fail_on="never",
        options={"attack-bound": {"fail-below": 0.25}},
        **QUICK,
    )
    assert report.settings["norm"] == "linf" and report.settings["eps"] == [0.7]
    assert report.seed == 3 and report.fail_on == "never"
    assert report.analyses[0].config["fail_below"] == 0.25
    skipped = ra.audit(MODEL, samples=12, skip=["attack-bound", "certificates", "transfer"])
    assert "attack-bound" not in {f.analysis for f in skipped.findings}


def test_a_config_file_is_read_only_when_named(tmp_path, monkeypatch) -> None:
    (tmp_path / "audit.toml").write_text('norm = "linf"\n[attack-bound]\nfail-below = 0.3\n')
    monkeypatch.chdir(tmp_path)
    assert ra.audit(MODEL, **QUICK).settings["norm"] == "l2"
    report = ra.audit(MODEL, config="audit.toml", options={"attack-bound": {}}, **QUICK)
    assert report.settings["norm"] == "linf" and report.analyses[0].config["fail_below"] == 0.3
    wins = ra.audit(MODEL, config="audit.toml", norm="l2", **QUICK)
    assert wins.settings["norm"] == "l2"


def test_out_formats_and_export_write_files(tmp_path) -> None:
    report = ra.audit(MODEL, out=tmp_path / "r", export=tmp_path / "e", **QUICK)
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["report.html", "report.json"]
    written = json.loads((tmp_path / "r" / "report.json").read_text())
    assert written["findings"] == to_dict(report)["findings"]
    with np.load(tmp_path / "e" / "attack-bound.npz") as exported:
        assert np.array_equal(
            exported["attack_distance"], report.arrays_for("attack-bound")["attack_distance"]
        )
    ra.audit(MODEL, out=tmp_path / "r", formats=["sarif", "junit"], **QUICK)
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [
        "report.junit.xml",
        "report.sarif",
    ]


def test_render_gives_every_format(report, tmp_path) -> None:
    for fmt in FORMATS:
        text = ra.render(report, fmt)
        assert text == RENDERERS[fmt].render(report) and text
    assert ra.render(report, "sarif", tmp_path / "x.sarif") == (tmp_path / "x.sarif").read_text()
    assert ra.render(report) == RENDERERS["html"].render(report)


def test_render_converts_a_saved_json_report(report, tmp_path) -> None:
    saved = tmp_path / "report.json"
    ra.render(report, "json", saved)
    for source in (saved, json.loads(saved.read_text())):
        assert ra.render(source, "markdown") == ra.render(report, "markdown")
    (tmp_path / "bad.json").write_text('{"schema_version": "1.0"}')
    with pytest.raises(DataError, match="not a valid JSON report"):
        ra.render(tmp_path / "bad.json", "html")
    with pytest.raises(DataError, match="not a readable JSON report"):
        ra.render(tmp_path / "missing.json", "html")


def _net(inputs: int = 64) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(inputs, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10)
    ).train()


def test_audit_torch_exports_and_audits_a_module() -> None:
    net = _net()
    x = np.load(DIGITS)["x"][:20]
    report = ra.audit_torch(net, torch.zeros(1, 64), x, name="my net", **QUICK)
    assert net.training  # the module's mode is restored
    assert report.models[0].name == "my_net" and report.data.labels_from == "model predictions"
    assert report.models[0].fidelity["torch_vs_onnxruntime"] < 1e-5
    assert {f.analysis for f in report.findings} == {"attack-bound"}
    arrays = report.arrays_for("attack-bound")
    with torch.no_grad():
        predicted = net(torch.as_tensor(x)).argmax(1).numpy()
    assert len(arrays["index"]) == 12
    assert arrays["label"].tolist() == predicted[arrays["index"]].tolist()


def test_export_onnx_writes_a_batched_model(tmp_path) -> None:
    path = ra.export_onnx(_net(), torch.zeros(1, 64), tmp_path / "net.onnx")
    model = onnx.load(path)
    assert [i.name for i in model.graph.input] == ["input"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_the_corpus_model_through_the_api() -> None:
    model, samples = corpus("mnistfc/mnist-net_256x2.onnx"), corpus("mnistfc/mnist_samples.npz")
    settings = {"only": ["attack-bound", "certificates"], "samples": 5}
    by_file = ra.audit(model, samples, **settings)
    with np.load(samples) as arrays:
        by_arrays = ra.audit(model, (arrays["x"], arrays["y"]), **settings)
    assert by_file.models[0].name == "mnist-net_256x2" and by_file.data.count == 5
    assert _metrics(by_file) == _metrics(by_arrays)
    assert by_file.finding("certificates/consistency/mnist-net_256x2").status.value == "pass"
    assert by_file.arrays_for("certificates")


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: ra.audit(ROOT / "missing.onnx"), ModelLoadError, "no such file"),
        (lambda: ra.audit([]), ConfigError, "no model given"),
        (lambda: ra.audit(42), ConfigError, "expected ONNX files or models, got int"),
        (lambda: ra.audit([MODEL, 42]), ConfigError, "expected ONNX files or onnx.ModelProto"),
        (lambda: ra.audit(MODEL, eps=-1), ConfigError, "eps=: eps must be positive"),
        (lambda: ra.audit(MODEL, norm="l3"), ConfigError, "norm=: norm must be one of"),
        (lambda: ra.audit(MODEL, samples=0), ConfigError, "samples=: must be at least 1"),
        (lambda: ra.audit(MODEL, formats=["pdf"], out="x"), ConfigError, "formats=: unknown"),
        (lambda: ra.audit(MODEL, formats=["json"]), ConfigError, "formats= needs out="),
        (lambda: ra.audit(MODEL, only=["nope"]), ConfigError, "unknown analysis or tag 'nope'"),
        (lambda: ra.audit(MODEL, options={"nope": {}}), ConfigError, "unknown analysis 'nope'"),
        (lambda: ra.audit(MODEL, options=[1]), ConfigError, "options= must map"),
        (lambda: ra.audit(MODEL, config="none.toml"), ConfigError, "config file not found"),
        (lambda: ra.audit(MODEL, blocked_plugins=["nope"]), ConfigError, "no installed plugin"),
        (lambda: ra.audit(MODEL, {"x": [[0.0] * 64], "z": 1}), DataError, "unknown array 'z'"),
        (lambda: ra.audit(MODEL, ([[0.0] * 64],)), DataError, "expected (x, y)"),
        (lambda: ra.audit(MODEL, [[0.0] * 3]), DataError, "the model expects [64]"),
        (lambda: ra.audit(MODEL, DIGITS, labels=[1]), ConfigError, "labels as an array"),
        (lambda: ra.audit(MODEL, ([[0.0] * 64], [1]), labels=[1]), DataError, "holds labels"),
        (lambda: ra.render(AuditReport.__new__(AuditReport), "pdf"), ConfigError, "unknown format"),
        (lambda: ra.audit_torch(_net(), torch.zeros(1, 5)), ModelLoadError, "torch.onnx.export"),
        (lambda: ra.export_onnx("net", torch.zeros(1), "x.onnx"), ConfigError, "torch.nn.Module"),
    ],
)
def test_mistakes_raise_the_project_errors_and_print_nothing(
    call, error, message, capsys, tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=re.escape(message)):
        call()
    assert capsys.readouterr() == ("", "")
    assert list(tmp_path.iterdir()) == []


def test_importing_the_package_loads_the_api_on_first_use() -> None:
    assert ra.audit.__module__ == "robustness_audit.api"
    assert set(ra.__all__) <= set(dir(ra))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = ra.nope
