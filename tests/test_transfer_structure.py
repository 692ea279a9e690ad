"""Which decision regions are provably convex (``audit_plugins.transfer.structure``, Charles
et al. 2019, Sections 5-6): the Appendix A.9 example, depth-2 nets, AND/OR-of-halfspaces
nets, and what is not covered."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import helper
from onnx_factory import init

import audit_model_zoo as zoo
from audit_core.onnx_import import load_onnx
from audit_core.testing import mlp_onnx, random_mlp, save_model
from audit_plugins.transfer.lines import Depth2, first_flip_depth2
from audit_plugins.transfer.structure import detect
from audit_plugins.transfer.svm import (
    HOW_ALL,
    max_margin,
)

A9_X = np.array([[-1.0, 1.0], [1.0, 1.0], [0.0, -1.0]])


A9_LABEL = np.array([1, 1, 0])  # label +1 -> class 1, label -1 -> class 0


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
