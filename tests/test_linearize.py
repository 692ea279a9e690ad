"""Local linearisation against autograd Jacobians and the forward pass inside the region."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import audit_model_zoo as zoo
from audit_core.errors import NotApplicable
from audit_core.linearize import decision_distances, linearize
from audit_core.onnx_import import load_onnx
from graphs import hardsigmoid_mlp, leaky_mlp, padded_maxpool_cnn, prelu_clip_cnn
from helpers import corpus

MODELS = {
    "zoo-mlp3": lambda tmp: zoo.model_path("digits_mlp3"),
    "zoo-cnn-maxpool": lambda tmp: zoo.model_path("digits_cnn"),
    "zoo-resnet-bn-avgpool": lambda tmp: zoo.model_path("digits_resnet"),
    "zoo-single-logit": lambda tmp: zoo.model_path("sphere_depth2"),
    "corpus-mnist-256x2": lambda tmp: corpus("mnistfc/mnist-net_256x2.onnx"),
    "corpus-convnet-avgpool": lambda tmp: corpus("verivital/Convnet_avgpool.onnx"),
    "corpus-convnet-maxpool": lambda tmp: corpus("verivital/Convnet_maxpool.onnx"),
    "corpus-acasxu": lambda tmp: corpus("acasxu/ACASXU_run2a_1_1_batch_2000.onnx"),
    "leaky-relu": leaky_mlp,
    "maxpool-pads-dilation": padded_maxpool_cnn,
    "hardsigmoid-two-kinks": hardsigmoid_mlp,
    "prelu-clip-cnn": prelu_clip_cnn,
}


@pytest.fixture(params=sorted(MODELS))
def graph(request, tmp_path):
    return load_onnx(MODELS[request.param](tmp_path)).graph


def _inputs(graph, count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((count, graph.input_size))


def test_affine_model_matches_forward_and_autograd(graph) -> None:
    x = _inputs(graph, 3)
    lin = linearize(graph, x)
    logits = graph.forward(x).reshape(len(x), -1).numpy()
    np.testing.assert_allclose(lin.logits(), logits, rtol=1e-9, atol=1e-9)
    for n in range(len(x)):
        point = torch.tensor(x[n : n + 1])
        jac = torch.autograd.functional.jacobian(lambda z: graph.forward(z).reshape(-1), point)
        np.testing.assert_allclose(lin.C[n], jac.reshape(-1, graph.input_size), atol=1e-9)


def test_region_contains_x_and_streaming_distance_agrees(graph) -> None:
    x = _inputs(graph, 2, seed=1)
    lin = linearize(graph, x, keep_region=True)
    slack = np.einsum("nmd,nd->nm", lin.P, lin.x) + lin.q
    assert (slack >= -1e-9).all()
    norms = np.linalg.norm(lin.P, axis=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        faces = np.where(norms > 0, np.abs(slack) / norms, np.inf)
    np.testing.assert_allclose(faces.min(axis=1), lin.face_distance, rtol=1e-9)
    assert len(lin.row_nodes) == lin.P.shape[1]


def test_the_model_is_affine_inside_the_region(graph) -> None:
    """Random points strictly inside the face-distance ball share x's pattern and affine map."""
    x = _inputs(graph, 2, seed=2)
    lin = linearize(graph, x)
    rng = np.random.default_rng(3)
    count = 16 if graph.input_size < 500 else 4
    for n in range(len(x)):
        radius = lin.face_distance[n]
        if not np.isfinite(radius):
            radius = 1.0
        directions = rng.normal(size=(count, graph.input_size))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        points = x[n] + directions * radius * 0.999 * rng.random((count, 1))
        outputs = graph.forward(points).reshape(count, -1).numpy()
        np.testing.assert_allclose(outputs, points @ lin.C[n].T + lin.d[n], rtol=1e-8, atol=1e-8)
        inside = linearize(graph, points)
        for node, pattern in lin.patterns.items():
            assert (inside.patterns[node] == pattern[n]).all()


def test_nearest_face_is_tight(tmp_path) -> None:
    """Crossing the nearest face (slightly beyond the face distance) changes the pattern."""
    graph = load_onnx(leaky_mlp(tmp_path)).graph
    x = _inputs(graph, 4, seed=4)
    lin = linearize(graph, x, keep_region=True)
    for n in range(len(x)):
        slack = lin.P[n] @ x[n] + lin.q[n]
        norms = np.linalg.norm(lin.P[n], axis=1)
        row = int(np.argmin(np.where(norms > 0, slack / np.maximum(norms, 1e-300), np.inf)))
        step = -lin.P[n, row] / norms[row]
        beyond = linearize(graph, (x[n] + step * lin.face_distance[n] * 1.001)[None])
        node = int(lin.row_nodes[row])
        assert (beyond.patterns[node][0] != lin.patterns[node][n]).any()


def test_chunking_does_not_change_the_result() -> None:
    graph = load_onnx(zoo.model_path("digits_cnn")).graph
    x = _inputs(graph, 5, seed=6)
    whole = linearize(graph, x, keep_region=True)
    chunked = linearize(graph, x, keep_region=True, memory_budget=1)
    # Batched BLAS/conv kernels may sum in another order for another batch size: the
    # last digits can differ between chunkings on some CPUs, the values not.
    np.testing.assert_allclose(whole.C, chunked.C, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(whole.P, chunked.P, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(whole.face_distance, chunked.face_distance, rtol=1e-10)


def test_linear_model_decision_distances_are_exact() -> None:
    graph = load_onnx(zoo.model_path("digits_linear")).graph
    x = _inputs(graph, 6, seed=7)
    lin = linearize(graph, x, keep_region=True)
    assert lin.P.shape[1] == 0 and np.isinf(lin.face_distance).all()
    labels = graph.predict(x)
    weight, bias = graph.dense_view().weights[0], graph.dense_view().biases[0]
    logits = x @ weight.T + bias
    for n, k in enumerate(labels):
        others = [j for j in range(10) if j != k]
        expected = (logits[n, k] - logits[n, others]) / np.linalg.norm(
            weight[k] - weight[others], axis=1
        )
        np.testing.assert_allclose(decision_distances(lin, labels)[n], expected, rtol=1e-9)


def test_single_logit_decision_row_points_towards_the_boundary() -> None:
    graph = load_onnx(zoo.model_path("nonneg_2layer")).graph
    x = np.load(zoo.dataset_path("nonneg_2layer"))["x"][:10].astype(np.float64)
    labels = graph.predict(x)
    lin = linearize(graph, x)
    distance = decision_distances(lin, labels)[:, 0]
    logit = lin.logits()[:, 0]
    norms = np.linalg.norm(lin.C[:, 0], axis=1)
    with np.errstate(divide="ignore"):  # a sample whose hidden units are all off: constant logit
        expected = np.where(norms > 0, np.abs(logit) / norms, np.inf)
    np.testing.assert_allclose(distance, expected, rtol=1e-9)


def test_non_piecewise_linear_models_are_refused() -> None:
    graph = load_onnx(corpus("eran/ffnnSIGMOID__Point_6x200.onnx")).graph
    with pytest.raises(NotApplicable, match="Sigmoid"):
        linearize(graph, _inputs(graph, 1))
