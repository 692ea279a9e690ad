"""The kkt analysis (Vardi, Yehudai & Shamir 2022) on hand-built, random and zoo networks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import audit_model_zoo as zoo
from audit_core.attacks import MinimalAttackConfig, minimal_adversarial, pgd
from audit_core.console import QuietUI
from audit_core.findings import Severity, Status
from audit_core.onnx_import import load_onnx
from audit_core.plugins import PluginHost
from audit_core.runner import run_audit as run_audit_api
from audit_core.settings import Settings
from audit_core.testing import mlp_onnx, random_mlp, save_dataset
from audit_model_zoo.training import sphere_data
from audit_plugins._kkt_geometry import (
    Depth2Net,
    kkt_fit,
    line_pieces,
    line_values,
    margin_direction,
    margin_set,
    negative_intervals,
    robust_construction,
    signed_labels,
    smallest_universal_flip,
)


@pytest.fixture(autouse=True)
def _only_kkt(monkeypatch) -> None:
    monkeypatch.setenv("AUDIT_PLUGINS", "kkt")


def _net(W, b, v, out_bias: float = 0.0) -> Depth2Net:
    return Depth2Net(
        np.asarray(W, float), np.asarray(b, float), np.asarray(v, float)[None, :],
        np.array([out_bias]), np.ones(1),
    )  # fmt: skip


def _universal_c(net: Depth2Net, x: np.ndarray, y: np.ndarray) -> float:
    """The analysis's exact c for z = sum y_i x_i over all the given points."""
    z = margin_direction(x, y, np.ones(len(x), bool))
    starts, ends = negative_intervals(line_pieces(net, x, y, z / np.linalg.norm(z)))
    return smallest_universal_flip(starts, ends).c


def _audit(model: Path, data: Path):
    """In-process run of the kkt analysis; returns (findings by check, kkt export arrays)."""
    host = PluginHost()
    host.load_entry_points()
    settings = Settings(models=(str(model),), data=str(data), only=("kkt",))
    outcome = run_audit_api(settings, host, QuietUI())
    findings = {f.id.split("/")[1]: f for f in outcome.report.findings}
    return findings, outcome.exports.get((model.stem, "kkt"))


# ----------------------------------------------------------------------------- Section 5.1

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
    # N stays robust below sqrt(d)/2: PGD finds nothing within it (every point)
    attack = pgd(
        n_robust.to_torch(), torch.from_numpy(x), torch.from_numpy((y > 0).astype(np.int64)),
        math.sqrt(D) / 2, norm="l2", steps=60, restarts=3,
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


# ----------------------------------------------------------------------------- line search


def _flip_back_net() -> tuple[Depth2Net, np.ndarray, np.ndarray]:
    """d = 1, g(s) = (s - 5) - 2 relu(s - 6.5) + 2 relu(s - 8.5): positive on (5, 8) and
    (9, inf). From s = 10 the point flips on (1, 2), flips back, flips for good after 5;
    from s = 7.9 it flips after 2.9. All of I is flipped first at c = 5 (not max(1, 2.9))."""
    net = _net([[1.0], [-1.0], [1.0], [1.0]], [-5, 5, -6.5, -8.5], [1, -1, -2, 2])
    return net, np.array([[10.0], [7.9]]), np.array([1.0, 1.0])


def test_flip_back_is_handled_exactly() -> None:
    net, x, y = _flip_back_net()
    starts, ends = negative_intervals(line_pieces(net, x, y, np.array([1.0])))
    np.testing.assert_allclose(starts[0, :2], [1.0, 5.0])
    np.testing.assert_allclose(ends[0, :1], [2.0])
    flip = smallest_universal_flip(starts, ends)
    assert flip.c == pytest.approx(5.0) and flip.first_flip[1] == pytest.approx(2.9)
    assert (y * net(x - y[:, None] * flip.c_inside) < 0).all()


@pytest.mark.parametrize("case", ["flip-back", "random-2", "random-6", "random-7", "random-3"])
def test_exact_line_search_matches_a_dense_grid(case) -> None:
    if case == "flip-back":
        net, x, y = _flip_back_net()  # the non-monotone case
    else:
        seed = int(case[-1])
        weights, biases = random_mlp([6, 40, 1], seed=seed)
        net = _net(weights[0], biases[0], weights[1][0], biases[1][0])
        x = np.random.default_rng(seed).normal(size=(12, 6))
        y = np.sign(net(x))  # every point classified correctly
    c = _universal_c(net, x, y)
    z = margin_direction(x, y, np.ones(len(x), bool))
    grid = np.linspace(0.0, 3 * c if np.isfinite(c) else 100.0, 60_001)
    flipped = (line_values(net, x, y, z / np.linalg.norm(z), grid) < 0).all(axis=0)
    step = grid[1]
    assert not flipped[grid < c - 1e-9].any()
    if np.isfinite(c):
        assert flipped[(grid > c + 1e-9) & (grid < c + 3 * step)].any()
    else:
        assert case == "random-3"  # one point never flips along z
    # the piecewise-linear form agrees with the direct evaluation everywhere on the grid
    pieces = line_pieces(net, x, y, z / np.linalg.norm(z))
    row = np.searchsorted(pieces.knots[0], grid[::97], side="right") - 1
    at = pieces.values[0, row] + pieces.slopes[0, row] * (grid[::97] - pieces.knots[0, row])
    np.testing.assert_allclose(at, line_values(net, x[:1], y[:1], z / np.linalg.norm(z),
                                               grid[::97])[0], atol=1e-9)  # fmt: skip


# ----------------------------------------------------------------------------- KKT proximity


def _balanced_margin_net(d: int, m: int) -> tuple[Depth2Net, np.ndarray, np.ndarray]:
    """N' of Section 5.1 on x_i = sqrt(d) e_i (i < m), balanced (||w_j|| = |v_j|): w_j =
    d^{-3/4} x_j, v_j = d^{-1/4} y_j. A KKT point of (2) with lambda_i = d^{-1/2} (each x_i
    lies on the kink of every other neuron, where the subgradient 0 is chosen)."""
    x = math.sqrt(d) * np.eye(d)[:m]
    y = np.where(np.arange(m) < m // 2, 1.0, -1.0)
    return _net(d**-0.75 * x, np.zeros(m), d**-0.25 * y), x, y


def _simplex_kkt_net(d: int, m: int) -> tuple[Depth2Net, np.ndarray, np.ndarray]:
    """A KKT point with biases: x_i a regular simplex on the sphere of radius sqrt(d)
    (<x_i, x_j> = -d/(m-1) < -1), w_j = beta lambda x_j, b_j = beta lambda, v_j = beta y_j,
    lambda = (d+1)^{-1/2}, beta^2 = lambda: neuron j is active on x_j only."""
    simplex = np.eye(m) - 1.0 / m
    x = np.zeros((m, d))
    x[:, :m] = simplex / np.linalg.norm(simplex, axis=1, keepdims=True) * math.sqrt(d)
    y = np.where(np.arange(m) % 2 == 0, 1.0, -1.0)
    lam = (d + 1) ** -0.5
    beta = math.sqrt(lam)
    return _net(beta * lam * x, np.full(m, beta * lam), beta * y), x, y


def test_kkt_residual_is_zero_at_constructed_kkt_points_and_large_at_random() -> None:
    net, x, y = _balanced_margin_net(10, 10)
    fit = kkt_fit(net, x, y, zero_tol=1e-9)
    assert fit.residual < 1e-10 and not fit.with_bias
    np.testing.assert_allclose(fit.lam, 10**-0.5, rtol=1e-9)
    net, x, y = _simplex_kkt_net(12, 5)
    np.testing.assert_allclose(y * net(x), 1.0, rtol=1e-12)
    fit = kkt_fit(net, x, y, zero_tol=1e-9)
    assert fit.residual < 1e-10 and fit.with_bias and fit.kinks == 0
    assert fit.imbalance < 1e-12
    np.testing.assert_allclose(fit.lam, 13**-0.5, rtol=1e-9)
    # the same nets scaled (homogeneity) and random nets
    assert kkt_fit(net.scaled(7.0), x, y).residual < 1e-10
    weights, biases = random_mlp([12, 30, 1], seed=3)
    random_net = _net(weights[0], biases[0], weights[1][0])
    labels = np.sign(random_net(x))
    assert kkt_fit(random_net, x, labels, zero_tol=1e-5).residual > 0.3


def test_theorem_41_applies_to_a_kkt_point_on_its_data(tmp_path) -> None:
    """d = 12, m = 4 orthogonal points: |I| = 4 <= (d+1)/3; the balanced N' is a KKT
    point, so Corollary 4.1 applies; by hand c = sqrt(d m) / (1 + m/2)."""
    net, x, y = _balanced_margin_net(12, 4)
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


# ----------------------------------------------------------------------------- Theorem 3.1


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


# ----------------------------------------------------------------------------- end to end


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


def test_margin_set_follows_the_slack() -> None:
    margins = np.array([2.0, 2.1, 2.3, 4.0, -1.0])
    result = margin_set(margins, 0.1)
    assert result.gamma == 2.0 and result.mask.tolist() == [True, True, False, False, False]
    assert margin_set(margins, 1.0).mask.tolist() == [True, True, True, True, False]
