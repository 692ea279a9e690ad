"""The kkt analysis (Vardi, Yehudai & Shamir 2022) end to end on hand-built, random and zoo
networks; its geometry alone is in test_kkt_geometry.py."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_kkt_geometry import balanced_margin_net

import audit_model_zoo as zoo
from audit_core.attacks import MinimalAttackConfig, minimal_adversarial, pgd
from audit_core.console import QuietUI
from audit_core.findings import Severity, Status
from audit_core.onnx_import import load_onnx
from audit_core.plugins import PluginHost
from audit_core.runner import run_audit as run_audit_api
from audit_core.settings import Settings
from audit_core.testing import mlp_onnx, save_dataset
from audit_model_zoo.training import sphere_data
from audit_plugins.kkt.geometry import (
    robust_construction,
    signed_labels,
)


@pytest.fixture(autouse=True)
def _only_kkt(monkeypatch) -> None:
    monkeypatch.setenv("AUDIT_PLUGINS", "kkt")


def _audit(model: Path, data: Path):
    """In-process run of the kkt analysis; returns (findings by check, kkt export arrays)."""
    host = PluginHost()
    host.load_entry_points()
    settings = Settings(models=(str(model),), data=str(data), only=("kkt",))
    outcome = run_audit_api(settings, host, QuietUI())
    findings = {f.id.split("/")[1]: f for f in outcome.report.findings}
    return findings, outcome.exports.get((model.stem, "kkt"))


D = 10  # even; x_i = sqrt(D) e_i, y_i = +1 for i <= D/2


def _orthogonal_data() -> tuple[np.ndarray, np.ndarray]:
    return math.sqrt(D) * np.eye(D), np.where(np.arange(D) < D // 2, 1.0, -1.0)


def _section51_networks(tmp_path: Path) -> tuple[Path, Path, Path]:
    """N (Theorem 3.1 with c = 0: w_j = 2 x_j / d, b_j = -1, v_j = y_j), N' (w'_j = x_j / d,
    b' = 0, v'_j = y_j) as ONNX files, and the data (labels 1 for y = +1)."""
    x, y = _orthogonal_data()
    robust = mlp_onnx(tmp_path / "N.onnx", [2 * x / D, y[None, :]], [-np.ones(D), None])
    margin = mlp_onnx(tmp_path / "N_prime.onnx", [x / D, y[None, :]], [None, None])
    data = save_dataset(tmp_path / "orthogonal.npz", x, (y > 0).astype(int))
    return robust, margin, data


def test_section_51_example(tmp_path) -> None:
    robust, margin, data = _section51_networks(tmp_path)
    x, y = _orthogonal_data()
    n_robust, n_margin = (load_onnx(p).graph for p in (robust, margin))
    # the paper's perturbation z = 4/d sum_{j > d/2} x_j has norm 2 sqrt(2) ...
    z = 4 / D * x[D // 2 :].sum(0)
    assert np.linalg.norm(z) == pytest.approx(2 * math.sqrt(2))
    positives = x[: D // 2]
    # ... sends N' to -1 on every positive point, while N keeps its sign there
    np.testing.assert_allclose(n_margin.forward(positives + z).numpy()[:, 0], -1.0, atol=1e-6)
    assert (n_robust.forward(positives + z).numpy() > 0).all()
    np.testing.assert_allclose(y * n_margin.forward(x).numpy()[:, 0], 1.0, atol=1e-6)
    # N stays robust below sqrt(d)/2: PGD finds nothing within it (every point); at
    # sqrt(d)/2 itself x_i / 2 has N = 0, a tie, which PGD's clean-point start reaches
    attack = pgd(
        n_robust.to_torch(), torch.from_numpy(x), torch.from_numpy((y > 0).astype(np.int64)),
        0.99 * math.sqrt(D) / 2, norm="l2", steps=60, restarts=3,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert not attack.success.any()
    # the analysis's exact c for its own z = sum_i y_i x_i, by hand: along
    # u = sum_i y_i e_i / sqrt(d), N'(x_i - t u) y_i = (1 - t/d) - t/2 vanishes at 2d/(d+2),
    # and N(x_i - t u) y_i = relu(1 - 2t/d) - d/2 relu(2t/d - 1) is negative only after d/2
    for model, by_hand in ((margin, 2 * D / (D + 2)), (robust, D / 2)):
        findings, arrays = _audit(model, data)
        universal = findings["universal-perturbation"]
        assert universal.metric("c").value == pytest.approx(by_hand, rel=1e-6)
        assert float(arrays["c"]) == pytest.approx(by_hand, rel=1e-6)
        assert arrays["margin_mask"].all() and arrays["flipped_at_c"].all()
    assert universal.metric("c_over_sqrt_d").value == pytest.approx(D / 2 / math.sqrt(D))


def test_theorem_41_applies_to_a_kkt_point_on_its_data(tmp_path) -> None:
    """d = 12, m = 4 orthogonal points: |I| = 4 <= (d+1)/3; the balanced N' is a KKT
    point, so Corollary 4.1 applies; by hand c = sqrt(d m) / (1 + m/2)."""
    net, x, y = balanced_margin_net(12, 4)
    x = np.vstack([x, 2 * x[0]])  # a fifth point, margin 2: not on the margin
    y = np.append(y, 1.0)
    model = mlp_onnx(tmp_path / "kkt.onnx", [net.W, net.v[None, :]])
    data = save_dataset(tmp_path / "kkt.npz", x, (y > 0).astype(int))
    findings, arrays = _audit(model, data)
    theorem = findings["theorem-4-1"]
    assert arrays["margin_mask"].tolist() == [True] * 4 + [False]
    assert theorem.metric("kkt_relative_residual").value < 1e-5
    assert all(a.holds is not False for a in theorem.assumptions[:-1])
    assert theorem.status is Status.FAIL and theorem.severity >= Severity.MEDIUM
    c = findings["universal-perturbation"].metric("c").value
    assert c == pytest.approx(math.sqrt(48) / 3, rel=1e-6)
    assert (arrays["lambda"][:4] > 0).all() and arrays["lambda"][4] == 0
    # the point off the margin is not flipped at c
    assert arrays["flipped_at_c"].tolist() == [True] * 4 + [False]


def test_two_logits_use_the_difference_and_an_output_bias_breaks_homogeneity(tmp_path) -> None:
    x, y = _orthogonal_data()
    data = save_dataset(tmp_path / "orthogonal.npz", x, (y > 0).astype(int))
    two = mlp_onnx(
        tmp_path / "two.onnx", [x / D, np.stack([-y / 2, y / 2])], [None, np.array([0.3, 0.3])]
    )
    findings, _ = _audit(two, data)
    c = findings["universal-perturbation"].metric("c").value
    assert c == pytest.approx(2 * D / (D + 2), rel=1e-6)
    assert findings["theorem-4-1"].assumptions[0].holds is True  # b2 - b1 = 0
    biased = mlp_onnx(tmp_path / "biased.onnx", [x / D, y[None, :]], [None, np.array([0.2])])
    findings, arrays = _audit(biased, data)
    assert findings["theorem-4-1"].assumptions[0].holds is False
    assert np.isfinite(arrays["c"]) and np.isfinite(arrays["residual"])


def test_theorem_31_construction_is_robust_at_its_radius(tmp_path) -> None:
    x, y = sphere_data(20, 6, seed=1)
    robust = robust_construction(x, y)
    assert 0 < robust.c < 1
    path = mlp_onnx(tmp_path / "robust.onnx", [robust.W, robust.v[None, :]], [robust.b, None])
    graph = load_onnx(path).graph
    np.testing.assert_allclose(y * graph.forward(x).numpy()[:, 0], 1.0, atol=1e-5)
    model, labels = graph.to_torch(), torch.from_numpy((y > 0).astype(np.int64))
    found = minimal_adversarial(
        model, torch.from_numpy(x), labels, config=MinimalAttackConfig(restarts=4),
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert (found.distance[found.found] > robust.radius * (1 - 1e-6)).all()
    attack = pgd(
        model, torch.from_numpy(x), labels, robust.radius, norm="l2", steps=100, restarts=5,
        generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    assert not attack.success.any()
    # the analysis reports the same radius for this data (on any depth-2 net)
    data = save_dataset(tmp_path / "sphere.npz", x, (y > 0).astype(int))
    findings, _ = _audit(path, data)
    theorem = findings["theorem-3-1"]
    assert theorem.metric("robust_radius").value == pytest.approx(robust.radius, rel=1e-5)
    assert all(a.holds is not False for a in theorem.assumptions)


def test_zoo_sphere_net_end_to_end(run_audit, tmp_path) -> None:
    run = run_audit(zoo.model_path("sphere_depth2"), "--only", "kkt", "--export", "exp")
    assert run.exit_code == 0
    findings = {f["id"].split("/")[1]: f for f in run.report["findings"]}
    assert set(findings) == {"universal-perturbation", "theorem-4-1", "margin-set", "theorem-3-1"}
    universal = {m["name"]: m["value"] for m in findings["universal-perturbation"]["metrics"]}
    assert universal["c"] == pytest.approx(3.947, abs=5e-3)  # model card: 3.95 on a grid
    assert universal["margin_set_size"] == 20 and universal["flipped_fraction"] == 1.0
    assert findings["universal-perturbation"]["severity"] == "medium"
    theorem = findings["theorem-4-1"]
    assert theorem["method"] == "theorem" and len(theorem["assumptions"]) == 8
    size = next(a for a in theorem["assumptions"] if "|I| <=" in a["name"])
    assert size["holds"] is False and "1.07" in size["detail"]  # the card's bound
    arrays = np.load(run.out_dir.parent / "exp" / "kkt.npz")
    assert {"margin", "margin_mask", "z", "c", "lambda", "residual"} <= set(arrays.files)
    assert arrays["z"].shape == (100,) and (arrays["lambda"] >= 0).all()
    # c is the crossing: just below it some point of I keeps its label, just above none does
    data = np.load(zoo.dataset_path("sphere_depth2"))
    graph = load_onnx(zoo.model_path("sphere_depth2")).graph
    x, y = data["x"].astype(np.float64), signed_labels(data["y"])
    u = arrays["z"] / np.linalg.norm(arrays["z"])
    c = float(arrays["c"])
    below = y * graph.forward(x - y[:, None] * (c * (1 - 1e-6)) * u).numpy()[:, 0]
    above = y * graph.forward(x - y[:, None] * float(arrays["c_inside"]) * u).numpy()[:, 0]
    assert (below >= 0).any() and (above < 0).all()
    strict = run_audit(
        zoo.model_path("sphere_depth2"), "--only", "kkt", "--fail-on", "high",
        "-o", "kkt.high-below=0.5", out="strict",
    )  # fmt: skip
    assert strict.exit_code == 1  # c / sqrt(d) = 0.39 < 0.5: fails with severity high


def test_skipped_with_the_reason_on_deeper_and_multiclass_nets(run_audit) -> None:
    for name, reason in (
        ("digits_mlp3", "needs a depth-2 affine/ReLU network (the model has depth 3)"),
        ("binary_fc3_benign", "needs a depth-2 affine/ReLU network (the model has depth 3)"),
        ("digits_mlp2", "needs a binary classifier"),
    ):
        run = run_audit(zoo.model_path(name), "--only", "kkt", "--samples", "5", out=name)
        assert run.exit_code == 5
        (analysis,) = run.report["analyses"]
        assert analysis["outcome"] == "skipped" and reason in analysis["reason"]
