"""The model-transfer analysis end to end (``audit``) on a family of zoo models (Charles et
al. 2019, Section 7): the transfer matrix, run-wide findings, incompatible models."""

from __future__ import annotations

import numpy as np
import pytest

import audit_model_zoo as zoo
from audit_core.testing import save_dataset

PLUGIN = "transfer"


@pytest.fixture(autouse=True)
def _only_this_plugin(monkeypatch):
    monkeypatch.setenv("AUDIT_PLUGINS", PLUGIN)


def _findings(report: dict, analysis: str) -> dict[str, dict]:
    return {f["id"].split("/")[1]: f for f in report["findings"] if f["analysis"] == analysis}


def _metrics(finding: dict) -> dict:
    return {m["name"]: m["value"] for m in finding["metrics"]}


def test_model_transfer_matrix_on_a_family(run_audit) -> None:
    models = [
        zoo.model_path(n) for n in ("digits_svm_part0", "digits_svm_part1", "digits_mlp2_part0")
    ]
    run = run_audit(
        *models,
        "--only", "model-transfer",
        "--samples", "60",
        "--norm", "linf",
        "-o", "model-transfer.svm_surrogates=1",
        "-o", "model-transfer.steps=12",
        "-o", "model-transfer.linf_eps=0.05,0.2",
        "-o", "model-transfer.l2_eps=0.1",
        "--export", "exp",
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr
    found = _findings(run.report, "model-transfer")
    names = [m.stem for m in models]
    assert set(found) == {"matrix"} | {f"target-{n}" for n in names}
    assert found["matrix"]["id"] == "model-transfer/matrix"
    assert {f["model"] for f in found.values()} == {""}  # run-wide, not the first model's
    (analysis_run,) = run.report["analyses"]
    assert analysis_run["model"] == ""
    (heatmap, _) = found["matrix"]["evidence"]["plots"]
    assert heatmap["kind"] == "heatmap"
    assert heatmap["row_labels"] == [*names, "svm-0", "random"]
    assert heatmap["col_labels"] == names
    arrays = np.load(run.out_dir.parent / "exp" / "model-transfer.npz")
    accuracy = arrays["linf_accuracy"]  # (sources + random, targets, eps)
    np.testing.assert_allclose(arrays["linf_eps"], [0.03, 0.05, 0.2])  # --eps default added
    for t, name in enumerate(names):
        white_box = accuracy[t, t, -1]
        assert white_box < accuracy[-1, t, -1]  # the model's own attack beats random noise
        assert white_box <= arrays["clean_accuracy"][t]
        metrics = _metrics(found[f"target-{name}"])
        assert metrics["most_transferable_source"] in {*names, "svm-0"} - {name}
    assert (accuracy[:3, :, -1] < accuracy[-1, :, -1]).all()  # all sources transfer at 0.2
    assert "report.html" in {p.name for p in run.out_dir.iterdir()}


def test_model_transfer_needs_compatible_models(run_audit, tmp_path) -> None:
    single = run_audit(zoo.model_path("digits_svm_part0"), "--only", "model-transfer")
    assert single.exit_code == 5  # nothing analysed
    assert "at least 2 models" in single.report["findings"][0]["summary"]
    binary = np.load(zoo.dataset_path("binary_fc3_benign"))  # labels 0/1, no class names
    data = save_dataset(tmp_path / "3v7.npz", binary["x"][:20], binary["y"][:20])
    mixed = run_audit(
        zoo.model_path("binary_fc3_benign"),
        zoo.model_path("digits_mlp2"),
        "--data", data,
        "--only", "model-transfer",
        out="mixed",
    )  # fmt: skip
    assert mixed.exit_code == 5, mixed.stderr
    (finding,) = mixed.report["findings"]
    assert finding["status"] == "skipped" and "different numbers of classes" in finding["summary"]
