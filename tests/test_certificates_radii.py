"""The certificates' maths (``audit_plugins.certificates.radii``): Theorems 3 and 4, the
safety margin, the verdicts.

The analysis end to end is in test_certificates.py; soundness against attacks and exact
distances in test_certificates_soundness.py.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper

import audit_model_zoo as zoo
from audit_core.linearize import linearize
from audit_core.onnx_import import load_onnx
from audit_core.testing import mlp_onnx, random_mlp
from audit_plugins.certificates.radii import (
    INPUT_ROUNDING,
    decision_boundary_certificate,
    simplex_certificate,
    theorem4_numerator,
    theorem4_rows,
    verdicts,
)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The attacks are many small products: one thread per test worker avoids OpenMP
    contention on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _digits(name: str, count: int) -> np.ndarray:
    return np.load(zoo.dataset_path(name))["x"][:count].astype(np.float64)


# --------------------------------------------------------------------------- Theorem 3


def test_linear_model_radius_is_the_exact_boundary_distance_minus_the_margin() -> None:
    """A linear model has one region (P_min = inf): the true distance is the closed-form
    distance to the nearest decision hyperplane, and the certificate is just below it."""
    graph = load_onnx(zoo.model_path("digits_linear")).graph
    x = _digits("digits_linear", 40)
    cert = simplex_certificate(graph, x, tolerance=1e-4)
    w, b = graph.dense_view().weights[0], graph.dense_view().biases[0]
    logits = x @ w.T + b
    k = logits.argmax(1)
    exact = np.array(
        [
            min(
                (logits[n, k[n]] - logits[n, j]) / np.linalg.norm(w[k[n]] - w[j])
                for j in range(10)
                if j != k[n]
            )
            for n in range(len(x))
        ]
    )
    assert np.isinf(cert.face_distance).all()
    np.testing.assert_allclose(cert.raw_radius, exact, rtol=1e-9)
    assert (cert.radius < exact).all()
    # the margin: the logit slack over the gradient norm, plus the rounding terms
    gnorm = np.array(
        [min(np.linalg.norm(w[k[n]] - w[j]) for j in range(10) if j != k[n]) for n in range(40)]
    )
    rounding = INPUT_ROUNDING * (np.linalg.norm(x, axis=1) + exact) + 1e-9 * exact + 1e-10
    assert (exact - cert.radius <= (cert.slack / gnorm + rounding) * (1 + 1e-6)).all()
    assert (cert.slack >= 2e-4 * np.maximum(1.0, np.abs(logits).max(1))).all()
    assert ((exact - cert.radius) / exact < 1e-2).all()  # and it costs little


def test_radius_is_min_of_face_and_decision_distance_on_a_cnn() -> None:
    graph = load_onnx(zoo.model_path("digits_resnet")).graph
    x = _digits("digits_resnet", 6)
    cert = simplex_certificate(graph, x)
    lin = linearize(graph, x)
    np.testing.assert_array_equal(cert.face_distance, lin.face_distance)
    np.testing.assert_allclose(
        cert.raw_radius, np.minimum(cert.raw_decision_distance, lin.face_distance)
    )
    assert (cert.radius <= cert.raw_radius).all()
    assert (cert.decision_distance <= cert.raw_decision_distance).all()


def test_radius_on_the_boundary_of_a_region_is_zero(tmp_path) -> None:
    """A ReLU exactly at 0 puts x on a face: Theorem 3 claims nothing (radius 0)."""
    weights = [np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 1.0], [-1.0, -1.0]])]
    biases = [np.array([0.0, 0.5]), np.array([0.0, 0.0])]
    graph = load_onnx(mlp_onnx(tmp_path / "kink.onnx", weights, biases)).graph
    cert = simplex_certificate(graph, np.array([[0.0, 1.0], [0.3, 1.0]]))
    assert cert.radius[0] == 0.0
    assert cert.radius[1] > 0.29  # the face x1 = 0 is 0.3 away, the decision boundary further


def _skip_from_input(tmp_path):
    """logits = W2 relu(W1 x + b1) + S x: a residual Sum of a per-sample and a shared
    (sample-independent) Jacobian."""
    rng = np.random.default_rng(7)
    inits = [
        numpy_helper.from_array(rng.normal(size=(6, 4)).astype(np.float32), "W1"),
        numpy_helper.from_array(rng.normal(size=6).astype(np.float32), "B1"),
        numpy_helper.from_array(rng.normal(size=(3, 6)).astype(np.float32), "W2"),
        numpy_helper.from_array(rng.normal(size=(3, 4)).astype(np.float32), "S"),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "W1", "B1"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["a"]),
        helper.make_node("Gemm", ["a", "W2"], ["o"], transB=1),
        helper.make_node("Gemm", ["x", "S"], ["s"], transB=1),
        helper.make_node("Add", ["o", "s"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "skip",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 3])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "skip.onnx")
    return tmp_path / "skip.onnx"


def _reshaped_skip(tmp_path):
    """g = W2 relu(W1 x + b1); logits = W3 flatten(relu(reshape(g))) + g. The Reshape's
    tangent is a view of g's, and g is still read by the Add: the ReLU after the Reshape
    must not mask that memory in place."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(5, 3)).astype(np.float32), "W1"),
        numpy_helper.from_array(rng.normal(size=5).astype(np.float32), "B1"),
        numpy_helper.from_array(rng.normal(size=(5, 5)).astype(np.float32), "W2"),
        numpy_helper.from_array(rng.normal(size=(5, 5)).astype(np.float32), "W3"),
        numpy_helper.from_array(np.array([-1, 5, 1], dtype=np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "W1", "B1"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["a"]),
        helper.make_node("Gemm", ["a", "W2"], ["g"], transB=1),
        helper.make_node("Reshape", ["g", "shape"], ["v"]),
        helper.make_node("Relu", ["v"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Gemm", ["f", "W3"], ["o"], transB=1),
        helper.make_node("Add", ["o", "g"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "alias",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 5])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "alias.onnx")
    return tmp_path / "alias.onnx"


@pytest.mark.parametrize("builder", [_skip_from_input, _reshaped_skip])
def test_linearisation_shortcuts_match_autograd(builder, tmp_path) -> None:
    """The shared affine prefix (mixed with a per-sample branch in a Sum) and the in-place
    ReLU masking (refused when the memory is a view another branch still reads)."""
    graph = load_onnx(builder(tmp_path)).graph
    x = np.random.default_rng(8).normal(size=(5, graph.input_size))
    lin = linearize(graph, x)
    for n in range(len(x)):
        point = torch.tensor(x[n : n + 1])
        jac = torch.autograd.functional.jacobian(lambda z: graph.forward(z).reshape(-1), point)
        np.testing.assert_allclose(lin.C[n], jac.reshape(lin.C[n].shape), atol=1e-12)


# --------------------------------------------------------------------------- Theorem 4


def test_theorem4_numerator_equals_the_minimum_over_all_box_vertices(tmp_path) -> None:
    """``min over [0,1]^N1 |a . theta + c|``: the vertices give the range of the affine
    function (0 if they change sign); brute force over all 2^10 vertices."""
    weights, biases = random_mlp([3, 10, 4], seed=3, scale=2.0)
    x = np.random.default_rng(4).normal(size=(20, 3))
    z = x @ weights[0].T + biases[0]
    predicted = (np.maximum(z, 0) @ weights[1].T + biases[1]).argmax(1)
    rows, consts = theorem4_rows(weights[1], biases[1], predicted)
    closed = theorem4_numerator(z, rows, consts)
    vertices = np.array(list(itertools.product([0.0, 1.0], repeat=10)))  # (1024, 10)
    values = np.einsum("vi,nji->nvj", vertices, rows * z[:, None, :]) + consts[:, None, :]
    crosses = (values.min(axis=1) <= 0) & (values.max(axis=1) >= 0)
    brute = np.where(crosses, 0.0, np.abs(values).min(axis=1))
    np.testing.assert_allclose(closed, brute, atol=1e-12)
    assert (brute > 0).any() and (brute == 0).any()


def test_decision_boundary_certificate_on_a_nonnegative_output_net_is_the_closed_form() -> None:
    """nonneg_2layer: f = v . relu(W1 x + b1) - a with v >= 0. For class 0 (f < 0) the
    numerator is maximised by switching every unit on where it helps, i.e. at the actual
    pattern: Theorem 4 gives |f(u)| / (||v|| ||W1||_2); for class 1 it gives 0."""
    graph = load_onnx(zoo.model_path("nonneg_2layer")).graph
    view = graph.dense_view()
    x = _digits("nonneg_2layer", 60)
    f = graph.forward(x).numpy()[:, 0]
    predicted = (f > 0).astype(np.int64)
    db = decision_boundary_certificate(view, x, predicted)
    expected = np.abs(f) / (np.linalg.norm(view.weights[1]) * np.linalg.norm(view.weights[0], 2))
    zero = predicted == 0
    assert zero.any() and (~zero).any()
    np.testing.assert_allclose(db[zero], expected[zero], rtol=2e-3)
    assert (db[zero] < expected[zero]).all()
    np.testing.assert_array_equal(db[~zero], 0.0)


def test_decision_boundary_certificate_refuses_deeper_nets() -> None:
    view = load_onnx(zoo.model_path("digits_mlp3")).graph.dense_view()
    with pytest.raises(ValueError, match="depth 2"):
        decision_boundary_certificate(view, _digits("digits_mlp3", 2), np.zeros(2, dtype=int))


# --------------------------------------------------------------------------- safety margin


def test_worst_point_of_the_certified_ball_keeps_the_class_in_float32_onnxruntime() -> None:
    """On a linear model the worst point of the ball is explicit: x + r n, n the unit normal
    towards the nearest boundary. The deployed float32 model must keep the class there,
    while a step a little past the raw (marginless) distance must flip it."""
    path = zoo.model_path("digits_linear")
    graph = load_onnx(path).graph
    x = _digits("digits_linear", 30)
    cert = simplex_certificate(graph, x)
    lin = linearize(graph, x)
    k = cert.predicted
    gaps = lin.d - lin.d[np.arange(len(x)), k][:, None]
    normals = lin.C - lin.C[np.arange(len(x)), k][:, :, None].transpose(0, 2, 1)
    gaps = gaps + np.einsum("nkd,nd->nk", normals, x)
    norms = np.linalg.norm(normals, axis=2)
    ratio = np.where(norms > 0, -gaps / np.where(norms > 0, norms, 1), np.inf)
    j = ratio.argmin(1)
    unit = normals[np.arange(len(x)), j] / norms[np.arange(len(x)), j][:, None]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def deployed(points):
        return session.run(None, {name: points.astype(np.float32)})[0].argmax(1)

    assert (deployed(x + cert.radius[:, None] * unit) == k).all()
    past = x + (cert.raw_radius * 1.001)[:, None] * unit
    assert (graph.predict(past) != k).all()


# --------------------------------------------------------------------------- verdicts


def test_verdicts_partition_the_samples_and_misclassified_are_never_certified() -> None:
    correct = np.array([True, True, True, False, False])
    radius = np.array([0.5, 0.1, 0.1, 0.9, 0.0])
    attack = np.array([0.9, 0.15, 0.3, 0.0, 0.0])
    v = verdicts(correct, radius, attack, eps=0.2)
    np.testing.assert_array_equal(v.certified, [True, False, False, False, False])
    np.testing.assert_array_equal(v.non_robust, [False, True, False, True, True])
    np.testing.assert_array_equal(v.undecided, [False, False, True, False, False])
