"""The geometry under the transfer analyses (Charles et al. 2019): max-margin SVM and
Theorems 4/5 on random separable data, exact line searches against dense grids,
structure detection from layer graphs, the Appendix A.9 example."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import helper
from onnx_factory import init

import audit_model_zoo as zoo
from audit_core.onnx_import import load_onnx
from audit_core.testing import mlp_onnx, random_mlp, save_model
from audit_plugins._transfer_lines import Depth2, first_exit_halfspaces, first_flip_depth2
from audit_plugins._transfer_structure import detect
from audit_plugins._transfer_svm import (
    HOW_ALL,
    HOW_CORRECT,
    HOW_GREEDY,
    max_margin,
    separable,
    separable_subset,
    theorem5_bounds,
)

A9_X = np.array([[-1.0, 1.0], [1.0, 1.0], [0.0, -1.0]])
A9_LABEL = np.array([1, 1, 0])  # label +1 -> class 1, label -1 -> class 0


# ---------------------------------------------------------------- Appendix A.9


def test_a9_network_as_printed_does_not_fit_its_points() -> None:
    W, b, v = np.array([[1, 0.25], [-1, -0.25]]), np.array([0.5, -0.5]), np.ones(2)
    f = np.maximum(A9_X @ W.T + b, 0.0) @ v
    printed_labels = np.where(f > 0, -1, 1)  # "g(z) = -1 if z > 0 and 1 otherwise"
    np.testing.assert_allclose(f, [0.25, 1.75, 0.25])
    assert list(printed_labels) == [-1, -1, -1]  # but y = (+1, +1, -1): x1, x2 are wrong


def test_a9_corrected_network_max_margin_direction_is_not_adversarial_at_x3() -> None:
    graph = load_onnx(zoo.model_path("transfer_a9")).graph
    assert list(graph.predict(A9_X)) == list(A9_LABEL)
    y_pm = np.where(A9_LABEL == 1, 1.0, -1.0)
    svm = max_margin(A9_X, y_pm, np.arange(3), HOW_ALL)
    np.testing.assert_allclose(svm.w, [0.0, 1.0], atol=1e-6)  # w* = (0, 1), b* = 0
    assert abs(svm.b) < 1e-6 and svm.c_S == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(svm.alpha, [0.25, 0.25, 0.5], atol=1e-6)
    w_star = np.array([0.0, 1.0])  # the exact solution the solver approximates
    c = np.array([0.0, 0.5, 1.0, 10.0, 1e3, 1e6])
    ray = A9_X[2] + c[:, None] * w_star  # -y w* with y = -1
    assert (graph.forward(ray).numpy()[:, 0] == 0.0).all()  # f stays exactly 0: no flip
    net = Depth2.from_dense(*_dense(graph))
    assert np.isinf(first_flip_depth2(net, A9_X[2:], w_star, np.array([0])))[0]
    # the solver's w* (first entry ~1e-9 off) only flips at an astronomically large c
    assert first_flip_depth2(net, A9_X[2:], svm.w, np.array([0]))[0] > 1e4
    structure, _ = detect(graph, graph.dense_view())
    assert structure.kind == "lemma-13" and structure.convex_classes == (0,)
    v = A9_X[0] - A9_X[2]  # the convex-region direction x1 - x3 = (-1, 2)
    assert structure.first_flip(A9_X[2:], v, np.array([0]))[0] == pytest.approx(0.5)
    assert list(graph.predict(A9_X[2] + np.array([[0.49], [0.51]]) * v)) == [0, 1]


def _dense(graph):
    view = graph.dense_view()
    return view.weights, view.biases


# ---------------------------------------------------------- Theorems 4 and 5


def _separable_data(rng: np.random.Generator, n: int, d: int) -> tuple[np.ndarray, ...]:
    normal = rng.standard_normal(d)
    normal /= np.linalg.norm(normal)
    x = rng.standard_normal((n, d))
    y = np.where(x @ normal + 0.3 > 0, 1.0, -1.0)
    x += 0.4 * y[:, None] * normal  # push the classes apart: margin >= 0.4
    return x, y, normal


def _random_separator(rng, x, y, normal) -> tuple[np.ndarray, float]:
    """A random (w, b) that separates (x, y): a random tilt of the true normal and an
    offset drawn inside the feasible interval."""
    while True:
        w = normal + 0.4 * rng.standard_normal(len(normal)) / np.sqrt(len(normal))
        projected = x @ w
        low, high = projected[y < 0].max(), projected[y > 0].min()
        if low < high:
            return w, -rng.uniform(low, high)


@pytest.mark.parametrize("seed", range(4))
def test_theorems_4_and_5_on_random_separable_data_and_separators(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x, y, normal = _separable_data(rng, n=40, d=5)
    assert separable(x, y)
    svm = max_margin(x, y, np.arange(len(y)), HOW_ALL)
    assert svm.min_margin >= 1 - 1e-6 and svm.dual_residual < 1e-8
    assert (svm.alpha >= 0).all() and abs(svm.sum_alpha - svm.w @ svm.w) < 1e-5 * svm.sum_alpha
    for _ in range(25):
        w, b = _random_separator(rng, x, y, normal)
        theorem = theorem5_bounds(w, b, svm, x, y)
        assert theorem.separates and theorem.inner > 0  # Theorem 4: <w, w*> > 0
        assert theorem.ratio >= 1 - 1e-9  # inequality (A.4)
        for factor, flips in ((1 + 1e-9, True), (2.0, True), (50.0, True)):
            c = theorem.bound * factor
            moved = x - (c * y)[:, None] * svm.w
            assert ((np.sign(moved @ w + b) != y) == flips).all()
        least = np.argmin(theorem.margins)
        assert theorem.bound[least] == pytest.approx(svm.c_S)  # Corollary 6


def test_theorem5_bound_is_tight_for_the_max_margin_classifier_itself() -> None:
    rng = np.random.default_rng(7)
    x, y, _ = _separable_data(rng, n=30, d=4)
    svm = max_margin(x, y, np.arange(len(y)), HOW_ALL)
    theorem = theorem5_bounds(svm.w, svm.b, svm, x, y)
    assert theorem.ratio == pytest.approx(1.0, abs=1e-5)  # <w*, w*> = sum alpha (gamma = 1)
    just_before = x - (theorem.bound * (1 - 1e-3) * y)[:, None] * svm.w
    assert (np.sign(just_before @ svm.w + svm.b) == y).all()


def test_separable_subset_falls_back_to_correct_points_then_greedy() -> None:
    rng = np.random.default_rng(3)
    x, y, _ = _separable_data(rng, n=30, d=3)
    assert separable_subset(x, y, np.ones(30, bool))[1] == HOW_ALL
    flipped = y.copy()
    flipped[:2] *= -1  # two label errors the "model" gets wrong
    correct = np.ones(30, bool)
    correct[:2] = False
    subset, how = separable_subset(x, flipped, correct)
    assert how == HOW_CORRECT and set(subset) == set(range(2, 30))
    xor = np.array([[0, 0], [1, 1], [0, 1], [1, 0], [0.1, 0.05]], float)
    labels = np.array([1, 1, -1, -1, 1.0])
    assert not separable(xor, labels)
    subset, how = separable_subset(xor, labels, np.ones(5, bool))
    assert how == HOW_GREEDY and separable(xor[subset], labels[subset])
    assert len(np.unique(labels[subset])) == 2


# ------------------------------------------------------------- exact line search


def _grid_first_flip(logits_fn, x, v, y, grid):
    flips = np.stack([logits_fn(x + t * v).argmax(1) != y for t in grid])  # (G, L)
    return np.where(flips.any(0), grid[flips.argmax(0)], np.inf)


@pytest.mark.parametrize("sizes", [[6, 12, 3], [4, 9, 1], [5, 7, 2], [3, 4]])
def test_exact_line_search_agrees_with_a_dense_grid(sizes: list[int]) -> None:
    rng = np.random.default_rng(sum(sizes))
    weights, biases = random_mlp(sizes, seed=len(sizes) + sizes[1])
    net = Depth2.from_dense(tuple(weights), tuple(biases))
    x = rng.standard_normal((60, sizes[0]))
    v = rng.standard_normal((60, sizes[0]))
    y = net.logits(x).argmax(1)
    exact = first_flip_depth2(net, x, v, y)
    step = 1e-3
    grid = np.arange(1, 4001) * step
    coarse = _grid_first_flip(net.logits, x, v, y, grid)
    seen = np.isfinite(coarse)
    assert seen.sum() >= 20
    assert (exact[seen] <= coarse[seen] + 1e-12).all()  # nothing flips before the exact t
    assert (coarse[seen] - exact[seen] <= step + 1e-12).all()  # the grid finds it next
    after = x + (exact * (1 + 1e-9) + 1e-12)[:, None] * v
    finite = np.isfinite(exact)
    assert (net.logits(after[finite]).argmax(1) != y[finite]).all()
    assert (exact[~seen] > grid[-1] - step).all()  # flips beyond the grid only


def test_single_logit_ties_go_to_class_zero() -> None:
    net = Depth2.from_dense((np.array([[1.0, 0.0]]),), (np.array([-1.0]),))  # g = x_1 - 1
    t = first_flip_depth2(net, np.zeros((1, 2)), np.array([1.0, 0.0]), np.array([0]))
    assert t[0] == pytest.approx(1.0)  # class 1 needs g > 0: the infimum is g = 0
    t = first_flip_depth2(net, np.array([[2.0, 0.0]]), np.array([-1.0, 0.0]), np.array([1]))
    assert t[0] == pytest.approx(1.0)  # g = 0 is already class 0


def test_halfspace_exit_agrees_with_a_dense_grid() -> None:
    rng = np.random.default_rng(11)
    H, h = rng.standard_normal((7, 3)), -np.abs(rng.standard_normal(7)) - 0.5
    x = 0.1 * rng.standard_normal((40, 3))
    x = x[(x @ H.T + h <= 0).all(1)]
    v = rng.standard_normal((len(x), 3))
    exact = first_exit_halfspaces(H, h, x, v)
    grid = np.arange(1, 20001) * 1e-3
    inside = np.stack([((x + t * v) @ H.T + h <= 0).all(1) for t in grid])
    first_out = np.where((~inside).any(0), grid[(~inside).argmax(0)], np.inf)
    assert np.isfinite(first_out).all()
    np.testing.assert_array_less(exact - 1e-12, first_out)
    assert (first_out - exact <= 1e-3 + 1e-12).all()


# ---------------------------------------------------------------- structure detection


def _convex_along_segments(graph, label: int, rng, lo=-2.0, hi=2.0) -> bool:
    """No segment between two points of the class leaves it (dense check)."""
    d = graph.input_size
    points = rng.uniform(lo, hi, size=(4000, d))
    members = points[graph.predict(points) == label][:60]
    if len(members) < 10:
        return False
    i, j = np.triu_indices(len(members), 1)
    lambdas = np.linspace(0, 1, 41)
    segs = members[i][:, None] + lambdas[None, :, None] * (members[j] - members[i])[:, None]
    return bool((graph.predict(segs.reshape(-1, d)) == label).all())


def _depth2_model(tmp: Path, name: str, out_weights, out_bias, seed: int = 0):
    rng = np.random.default_rng(seed)
    W, b = rng.standard_normal((8, 3)), -np.abs(rng.standard_normal(8)) - 0.3
    path = mlp_onnx(tmp / f"{name}.onnx", [W, np.atleast_2d(out_weights)], [b, out_bias])
    return load_onnx(path).graph


@pytest.mark.parametrize(
    ("name", "out_weights", "out_bias", "kind", "convex"),
    [
        ("lemma14", np.linspace(0.1, 1.0, 8), [-1.0], "lemma-14", (0,)),
        ("lemma13", np.ones(8), [0.0], "lemma-13", (0,)),
        ("nonpos", -np.linspace(0.1, 1.0, 8), [1.0], "nonpos-relu", (1,)),
        ("two-logit", np.stack([np.zeros(8), np.linspace(0, 1, 8)]), [0.5, -0.5], "lemma-14", (0,)),
    ],
)
def test_detects_convex_region_of_depth2_nets_and_the_region_is_convex(
    tmp_path, name, out_weights, out_bias, kind, convex
) -> None:
    graph = _depth2_model(tmp_path, name, out_weights, out_bias)
    structure, why = detect(graph, graph.dense_view())
    assert structure is not None, why
    assert structure.kind == kind and structure.convex_classes == convex
    assert _convex_along_segments(graph, convex[0], np.random.default_rng(1))


def test_mixed_sign_output_weights_are_not_covered_and_not_convex(tmp_path) -> None:
    u = np.array([1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    graph = _depth2_model(tmp_path, "mixed", u, [-0.2], seed=2)
    structure, why = detect(graph, graph.dense_view())
    assert structure is None and "mixed signs" in why
    rng = np.random.default_rng(0)
    assert not (_convex_along_segments(graph, 0, rng) and _convex_along_segments(graph, 1, rng))


def test_multiclass_and_deep_nets_are_not_covered_but_linear_models_are(tmp_path) -> None:
    weights, biases = random_mlp([3, 8, 3], seed=1)
    graph = load_onnx(mlp_onnx(tmp_path / "k3.onnx", weights, biases)).graph
    assert detect(graph, graph.dense_view())[0] is None
    weights, biases = random_mlp([3, 8, 8, 1], seed=1)
    graph = load_onnx(mlp_onnx(tmp_path / "deep.onnx", weights, biases)).graph
    assert "depth 3" in detect(graph, graph.dense_view())[1]
    weights, biases = random_mlp([3, 4], seed=1)
    graph = load_onnx(mlp_onnx(tmp_path / "lin.onnx", weights, biases)).graph
    structure, _ = detect(graph, graph.dense_view())
    assert structure.kind == "linear" and structure.convex_classes == (0, 1, 2, 3)


def and_of_halfspaces_onnx(path: Path, W: np.ndarray, b: np.ndarray, sign: float) -> Path:
    """logit = sign * max_j(-(W x + b)_j): sign = -1 gives min_j (W x + b)_j, class 1 iff
    every unit is positive (Theorem 16's R''); sign = +1 an OR of halfspaces."""
    units, d = W.shape
    nodes = [
        helper.make_node("Gemm", ["x", "W", "b"], ["z"], transB=1),
        helper.make_node("Mul", ["z", "neg"], ["nz"]),
        helper.make_node("Reshape", ["nz", "shape3"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["m"], kernel_shape=[units]),
        helper.make_node("Reshape", ["m", "shape2"], ["m2"]),
        helper.make_node("Mul", ["m2", "sign"], ["out"]),
        helper.make_node("Identity", ["out"], ["logits"]),
    ]
    inits = [
        init("W", W),
        init("b", b),
        init("neg", [-1.0]),
        init("sign", [sign]),
        init("shape3", [0, 1, units], np.int64),
        init("shape2", [0, 1], np.int64),
    ]
    return save_model(path, nodes, inits, [None, d], [None, 1])


@pytest.mark.parametrize(
    ("sign", "kind", "label"), [(-1.0, "and-of-halfspaces", 1), (1.0, "or-of-halfspaces", 0)]
)
def test_detects_and_or_of_halfspaces_nets(tmp_path, sign, kind, label) -> None:
    rng = np.random.default_rng(5)
    W, b = rng.standard_normal((6, 3)), rng.uniform(0.5, 1.5, 6)
    graph = load_onnx(and_of_halfspaces_onnx(tmp_path / "and.onnx", W, b, sign)).graph
    structure, why = detect(graph, None)
    assert structure is not None, why
    assert structure.kind == kind and structure.convex_classes == (label,)
    x = rng.uniform(-2, 2, (500, 3))
    all_positive = (x @ W.T + b > 0).all(1)
    assert (graph.predict(x) == (all_positive if sign < 0 else ~all_positive)).all()
    x_in = x[graph.predict(x) == label][:30]
    v = rng.standard_normal((len(x_in), 3))
    exact = structure.first_flip(x_in, v, np.full(len(x_in), label))
    finite = np.isfinite(exact)
    assert finite.any()
    before = x_in + (exact * (1 - 1e-7))[:, None] * v
    after = x_in + (exact * (1 + 1e-7) + 1e-12)[:, None] * v
    assert (graph.predict(before[finite]) == label).all()
    assert (graph.predict(after[finite]) != label).all()
