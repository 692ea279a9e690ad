"""Bound propagation is sound: on zoo, corpus and hand-built graphs with every
piecewise-linear layer type, every node's value at dense samples of the input set (and
at the corners the linear bounds point to) lies within its bounds, and every margin
is at least its lower bound, for CROWN and optimised slopes, l2 and linf."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import audit_model_zoo as zoo
from audit_core.bounds.input_set import InputSet
from audit_core.bounds.propagation import BoundPropagation
from audit_core.bounds.verify import Verifier, margin_specs
from audit_core.errors import NotApplicable
from audit_core.onnx_import import load_onnx
from graphs import hardsigmoid_mlp, leaky_mlp, padded_maxpool_cnn, prelu_clip_cnn
from helpers import corpus

MODELS = {
    "zoo-mlp2": lambda tmp: zoo.model_path("digits_mlp2"),
    "zoo-cnn-maxpool": lambda tmp: zoo.model_path("digits_cnn"),
    "zoo-resnet-bn-avgpool": lambda tmp: zoo.model_path("digits_resnet"),
    "zoo-single-logit": lambda tmp: zoo.model_path("sphere_depth2"),
    "corpus-mnist-256x2": lambda tmp: corpus("mnistfc/mnist-net_256x2.onnx"),
    "corpus-convnet-maxpool": lambda tmp: corpus("verivital/Convnet_maxpool.onnx"),
    "corpus-acasxu": lambda tmp: corpus("acasxu/ACASXU_run2a_1_1_batch_2000.onnx"),
    "leaky-relu": leaky_mlp,
    "maxpool-pads-dilation": padded_maxpool_cnn,
    "hardsigmoid-two-kinks": hardsigmoid_mlp,
    "prelu-clip-cnn": prelu_clip_cnn,
}

RADIUS = {"l2": 0.6, "linf": 0.04}


ROWS = {"corpus-convnet-maxpool": 1}
"""Samples per model (default 3): one for the corpus CNN, whose 23,328 first-layer
neurons each need a backward pass."""


@pytest.fixture(params=sorted(MODELS))
def model(request, tmp_path):
    return request.param, load_onnx(MODELS[request.param](tmp_path)).graph


def _centers(graph, count: int = 3, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.as_tensor(rng.uniform(0.0, 1.0, size=(count, graph.input_size)))


def _points(inputs: InputSet, row: int, count: int, seed: int) -> torch.Tensor:
    """Random points of the set: uniform directions at random radii (l2) or uniform in
    the box, plus the box's extreme corners; clipped into the input bounds."""
    rng = np.random.default_rng(seed)
    center = inputs.center[row].numpy()
    eps = float(inputs.eps[row])
    if inputs.norm == "linf":
        steps = rng.uniform(-eps, eps, size=(count, center.size))
        steps[: count // 4] = eps * rng.choice([-1.0, 1.0], size=(count // 4, center.size))
    else:
        directions = rng.normal(size=(count, center.size))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        steps = directions * eps * rng.uniform(0.5, 1.0, size=(count, 1)) ** (1 / center.size)
    lower, upper = float(inputs.lower), float(inputs.upper)
    return torch.as_tensor(np.clip(center + steps, lower, upper))


def _check_node_bounds(graph, bounds, inputs: InputSet, points_per_row: int = 300) -> None:
    for row in range(len(inputs)):
        points = _points(inputs, row, points_per_row, seed=row)
        with torch.no_grad():
            values = graph.forward_all(points)
        for node, (low, high) in bounds.items():
            value = values[node].reshape(len(points), -1)
            assert (value >= low[row].reshape(1, -1) - 1e-9).all(), f"node {node} below"
            assert (value <= high[row].reshape(1, -1) + 1e-9).all(), f"node {node} above"


def _margins_at(graph, points: torch.Tensor, label: int) -> np.ndarray:
    with torch.no_grad():
        logits = graph.forward(points).reshape(len(points), -1)
    specs = margin_specs(logits.shape[1], torch.tensor([label]))[0]
    return (logits @ specs.T).numpy()


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_intermediate_and_margin_bounds_hold_on_dense_samples(model, norm) -> None:
    name, graph = model
    propagation = BoundPropagation(graph)
    verifier = Verifier(propagation, tolerance=1e-4)
    centers = _centers(graph, ROWS.get(name, 3))
    inputs = InputSet.around(centers, RADIUS[norm], norm, 0.0, 1.0)
    bounds = propagation.intermediate(inputs)
    _check_node_bounds(graph, bounds, inputs)
    labels = torch.as_tensor(graph.predict(centers))
    crown = verifier.margins(inputs, labels, bounds)
    alpha = verifier.optimized_margins(inputs, labels, bounds, iterations=10)
    assert (alpha.lower >= crown.lower - 1e-9).all()  # never worse: CROWN is iterate 0
    specs = verifier.specs(labels)
    for row in range(len(inputs)):
        points = _points(inputs, row, 500, seed=10 + row)
        # the corners CROWN's linear bounds are tightest at, too
        mine = {k: (low[row : row + 1], high[row : row + 1]) for k, (low, high) in bounds.items()}
        weights, _ = propagation.backward(len(graph.nodes) - 1, specs[row : row + 1], mine)
        corners = inputs.repeat(torch.tensor([row])).argmin(weights)[0]
        margins = _margins_at(graph, torch.cat([points, corners]), int(labels[row]))
        assert (margins >= alpha.lower[row].numpy() - 1e-9).all()


def test_optimised_slopes_tighten_crown_on_a_corpus_mlp() -> None:
    graph = load_onnx(corpus("mnistfc/mnist-net_256x2.onnx")).graph
    data = np.load(corpus("mnistfc/mnist_samples.npz"))
    x = torch.as_tensor(np.clip(data["x"][:4], 0, 1), dtype=torch.float64)
    labels = torch.as_tensor(data["y"][:4])
    propagation = BoundPropagation(graph)
    verifier = Verifier(propagation, tolerance=1e-4)
    inputs = InputSet.around(x, 0.03, "linf", 0.0, 1.0)
    bounds = propagation.intermediate(inputs)
    crown = verifier.margins(inputs, labels, bounds)
    alpha = verifier.optimized_margins(inputs, labels, bounds, iterations=20)
    assert (alpha.lower >= crown.lower - 1e-12).all()
    assert float((alpha.lower - crown.lower).mean()) > 1e-3


def test_crown_is_exact_on_an_affine_model() -> None:
    graph = load_onnx(zoo.model_path("digits_linear")).graph
    x = _centers(graph, 4)
    inputs = InputSet.around(x, 0.5, "l2", float("-inf"), float("inf"))
    labels = torch.as_tensor(graph.predict(x))
    lower = Verifier(BoundPropagation(graph), 1e-4).margins(inputs, labels).lower
    weight = torch.as_tensor(np.array(graph.nodes[-1].layer.weight))
    logits = graph.forward(x).reshape(4, -1)
    specs = margin_specs(10, labels)
    exact = torch.einsum("bsk,bk->bs", specs, logits) - 0.5 * (specs @ weight).norm(dim=-1)
    torch.testing.assert_close(lower, exact, rtol=1e-10, atol=1e-10)


def test_bounds_get_no_looser_when_the_set_shrinks() -> None:
    graph = load_onnx(zoo.model_path("digits_mlp3")).graph
    x = _centers(graph, 5, seed=3)
    labels = torch.as_tensor(graph.predict(x))
    verifier = Verifier(BoundPropagation(graph), 1e-4)
    worst = [
        verifier.margins(InputSet.around(x, eps, "l2", 0.0, 1.0), labels).worst
        for eps in (0.8, 0.4, 0.1)
    ]
    assert (worst[1] >= worst[0] - 1e-9).all() and (worst[2] >= worst[1] - 1e-9).all()


def test_smooth_models_are_refused() -> None:
    graph = load_onnx(corpus("eran/ffnnSIGMOID__Point_6x200.onnx")).graph
    with pytest.raises(NotApplicable, match="Sigmoid"):
        BoundPropagation(graph)
