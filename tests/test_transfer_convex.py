"""The convex-transfer analysis end to end (``audit``) on zoo models (Charles et al. 2019,
Theorems 11-16), results re-checked with an independently loaded graph."""

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
