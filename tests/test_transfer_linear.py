"""The linear-transfer analysis end to end (``audit``) on zoo models (Charles et al. 2019,
Theorems 4, 5, 8), results re-checked with an independently loaded graph."""

from __future__ import annotations

import numpy as np
import pytest

import audit_model_zoo as zoo
from audit_core.onnx_import import load_onnx

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
