"""The transfer analyses end to end (``audit``): linear-transfer, convex-transfer and
model-transfer on zoo models, results re-checked with an independently loaded graph."""

from __future__ import annotations

import numpy as np
import pytest

import audit_model_zoo as zoo
from audit_core.onnx_import import load_onnx
from audit_core.testing import save_dataset

PLUGIN = "transfer"


@pytest.fixture(autouse=True)
def _only_this_plugin(monkeypatch):
    monkeypatch.setenv("AUDIT_PLUGINS", PLUGIN)


def _findings(report: dict, analysis: str) -> dict[str, dict]:
    return {f["id"].split("/")[1]: f for f in report["findings"] if f["analysis"] == analysis}


def _metrics(finding: dict) -> dict:
    return {m["name"]: m["value"] for m in finding["metrics"]}


def test_linear_transfer_verifies_theorem5_on_the_linear_zoo_model(run_audit) -> None:
    model = zoo.model_path("digits_linear")
    run = run_audit(model, "--only", "linear-transfer", "--samples", "60", "--export", "exp")
    assert run.exit_code == 0, run.stderr
    found = _findings(run.report, "linear-transfer")
    assert set(found) == {"max-margin", "guarantee", "direction-transfer"}
    guarantee = found["guarantee"]
    assert guarantee["method"] == "theorem"
    metrics = _metrics(guarantee)
    assert metrics["violations"] == 0 and metrics["points_checked"] >= 10
    assert all(v >= 1 - 1e-9 for k, v in metrics.items() if k.startswith("a4_ratio"))
    assumptions = {a["name"]: a["holds"] for a in found["max-margin"]["assumptions"]}
    assert any(holds is True for name, holds in assumptions.items() if "separable" in name)
    # re-check every exported bound with an independently loaded graph: beyond it, flipped
    arrays = np.load(run.out_dir.parent / "exp" / "linear-transfer.npz")
    data = np.load(zoo.dataset_path("digits_linear"))
    graph = load_onnx(model).graph
    pairs, w_star = arrays["pairs"], arrays["w_star"]
    pair, index = arrays["bound_pair"], arrays["bound_index"]
    x, label = data["x"][index].astype(np.float64), data["y"][index]
    y_pm = np.where(label == pairs[pair, 0], 1.0, -1.0)
    scale = arrays["bound_c"] * (1 + 1e-8) + 1e-12
    moved = x - (scale * y_pm)[:, None] * w_star[pair]
    assert (graph.predict(moved) != label).all()
    assert (graph.predict(x) == label).all()
    # the single direction beats random directions of the same norm
    direction = _metrics(found["direction-transfer"])
    along = [v for k, v in direction.items() if k.startswith("norm_flipping_50%")]
    random = [v for k, v in direction.items() if k.startswith("random_norm_flipping_50%")]
    assert all(a is not None for a in along)
    assert all(r is None or a < r for a, r in zip(along, random, strict=True))


def test_a9_max_margin_direction_fails_where_the_convex_direction_works(run_audit) -> None:
    run = run_audit(zoo.model_path("transfer_a9"), "--only", "linear-transfer,convex-transfer")
    assert run.exit_code == 0, run.stderr
    linear = _findings(run.report, "linear-transfer")
    assert "guarantee" not in linear  # the ReLU net is not affine: no Theorem 5 claim
    flips = _metrics(linear["direction-transfer"])
    assert flips["norm_flipping_50%[0-1:0]"] is None  # x3 (label -1) never flips along w*
    assert flips["flip_rate@0.282843[0-1:0]"] == 0.0
    convex = _findings(run.report, "convex-transfer")
    assert convex["structure"]["method"] == "theorem"
    assert _metrics(convex["structure"])["structure"] == "lemma-13"
    metrics = _metrics(convex["direction"])
    assert metrics["flipped_fraction[0]"] == 1.0  # x1 - x3 (or x2 - x3) flips x3 ...
    assert metrics["universal_norm[0]"] == pytest.approx(0.5 * np.sqrt(5))  # ... at c = 1/2
    assert metrics["max_margin_flipped_fraction[0]"] == 0.0  # ... where w* never does
    assert metrics["verification_mismatches"] == 0


def test_convex_transfer_is_exact_on_the_nonnegative_zoo_net(run_audit) -> None:
    model = zoo.model_path("nonneg_2layer")
    run = run_audit(model, "--only", "convex-transfer", "--samples", "50", "--export", "exp")
    assert run.exit_code == 0, run.stderr
    found = _findings(run.report, "convex-transfer")
    assert _metrics(found["structure"])["structure"] == "lemma-14"
    direction = found["direction"]
    metrics = _metrics(direction)
    assert direction["method"] == "theorem" and metrics["verification_mismatches"] == 0
    assert metrics["flipped_fraction[0]"] == 1.0  # every point of the convex class
    assert {a["holds"] for a in direction["assumptions"]} == {True}
    arrays = np.load(run.out_dir.parent / "exp" / "convex-transfer.npz")
    graph = load_onnx(model).graph
    data = np.load(zoo.dataset_path("nonneg_2layer"))
    x = data["x"][arrays["point_index"]].astype(np.float64)
    v, scale = arrays["v"][0], arrays["point_scale"]
    assert (graph.predict(x + (scale * (1 - 1e-7))[:, None] * v) == 0).all()
    for factor in (1 + 1e-7, 2.0, 100.0):  # out, and never back (convex region)
        assert (graph.predict(x + (scale * factor + 1e-12)[:, None] * v) == 1).all()


def test_convex_transfer_is_empirical_for_deeper_nets(run_audit) -> None:
    run = run_audit(
        zoo.model_path("binary_fc3_benign"), "--only", "convex-transfer", "--samples", "40"
    )
    assert run.exit_code == 0, run.stderr
    found = _findings(run.report, "convex-transfer")
    assert set(found) == {"structure", "convexity", "direction"}
    assert "depth 3" in found["structure"]["summary"]
    assert {f["method"] for f in found.values()} == {"empirical"}
    leaving = _metrics(found["convexity"])["segments_leaving"]
    assert 0.0 <= leaving <= 1.0
    assert _metrics(found["direction"])["flipped_fraction[0]"] > 0.5


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
