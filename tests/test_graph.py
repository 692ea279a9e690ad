"""``LayerGraph``: dense view, cut points and prefixes, torch module, predictions, sizes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from onnx import helper
from onnx_factory import assert_matches_ort, init, layer_ops, make_model, save, weights

from audit_core.errors import NotApplicable
from audit_core.graph import LayerGraph, Node
from audit_core.layers import Dense, Input, Relu
from audit_core.onnx_import import load_onnx

mk = helper.make_node


def _load(tmp_path, nodes, input_shape, inits, *, opset=13, name="model.onnx"):
    """Save, load and (as every graph under test must) match onnxruntime."""
    model = make_model(nodes, input_shape, inits, opset=opset)
    return assert_matches_ort(save(model, tmp_path, name))


def _gemm_relu_chain(tmp_path, widths=(4, 8, 6, 3), trans_b=1, seed=0, activation="Relu"):
    """x -> Gemm -> act -> Gemm -> act -> ... -> Gemm; also returns the (out, in) weights."""
    g = np.random.default_rng(seed)
    nodes, inits, ws, bs = [], [], [], []
    current = "x"
    for i, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
        w, b = weights(g, n_out, n_in), weights(g, n_out)
        ws.append(w)
        bs.append(b)
        inits += [init(f"W{i}", w if trans_b else w.T), init(f"b{i}", b)]
        last = i == len(widths) - 2
        out = "y" if last else f"h{i}"
        nodes.append(mk("Gemm", [current, f"W{i}", f"b{i}"], [out], transB=trans_b))
        if not last:
            nodes.append(mk(activation, [out], [f"a{i}"]))
            current = f"a{i}"
    return _load(tmp_path, nodes, [1, widths[0]], inits), ws, bs


def _residual(tmp_path, seed=1):
    """x -> Gemm -> Relu -> Gemm, added to x -> Relu -> Gemm."""
    g = np.random.default_rng(seed)
    nodes = [
        mk("Gemm", ["x", "W1", "b1"], ["h"], transB=1),
        mk("Relu", ["h"], ["r"]),
        mk("Gemm", ["r", "W2", "b2"], ["z"], transB=1),
        mk("Add", ["x", "z"], ["s"]),
        mk("Relu", ["s"], ["t"]),
        mk("Gemm", ["t", "W3", "b3"], ["y"], transB=1),
    ]
    inits = [
        init("W1", weights(g, 8, 5)),
        init("b1", weights(g, 8)),
        init("W2", weights(g, 5, 8)),
        init("b2", weights(g, 5)),
        init("W3", weights(g, 3, 5)),
        init("b3", weights(g, 3)),
    ]
    return _load(tmp_path, nodes, [1, 5], inits)


def _conv_net(tmp_path, pool: str | None, seed=2):
    """Conv -> Relu [-> pool] -> Flatten -> Gemm on a [1, 2, 6, 6] input."""
    g = np.random.default_rng(seed)
    w, b = weights(g, 3, 2, 3, 3), weights(g, 3)
    nodes = [
        mk("Conv", ["x", "Wc", "bc"], ["c"], pads=[1, 0, 0, 1], strides=[1, 2]),
        mk("Relu", ["c"], ["r"]),
    ]
    current, features = "r", 3 * 5 * 3
    if pool:
        nodes.append(mk(pool, ["r"], ["p"], kernel_shape=[2, 2], strides=[1, 1]))
        current, features = "p", 3 * 4 * 2
    nodes += [mk("Flatten", [current], ["f"]), mk("Gemm", ["f", "Wd", "bd"], ["y"], transB=1)]
    inits = [
        init("Wc", w),
        init("bc", b),
        init("Wd", weights(g, 4, features)),
        init("bd", weights(g, 4)),
    ]
    return _load(tmp_path, nodes, [1, 2, 6, 6], inits), w, b


def _x(graph: LayerGraph, n: int = 5, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, *graph.input_shape))


# ------------------------------------------------------------------------ dense_view


@pytest.mark.parametrize("trans_b", [0, 1])
def test_dense_view_of_a_gemm_relu_chain_is_the_onnx_weights(tmp_path, trans_b):
    loaded, ws, bs = _gemm_relu_chain(tmp_path, trans_b=trans_b)
    view = loaded.graph.dense_view()
    assert view.depth == 3
    for ours, w in zip(view.weights, ws, strict=True):
        np.testing.assert_array_equal(ours, w)
    for ours, b in zip(view.biases, bs, strict=True):
        np.testing.assert_array_equal(ours, b)


def test_dense_view_rejects_maxpool(tmp_path):
    loaded, _, _ = _conv_net(tmp_path, "MaxPool")
    with pytest.raises(NotApplicable, match="MaxPool"):
        loaded.graph.dense_view()


@pytest.mark.parametrize("pool", [None, "AveragePool"])
def test_dense_view_composes_the_conv_into_a_matrix(tmp_path, pool):
    loaded, w, b = _conv_net(tmp_path, pool)
    graph = loaded.graph
    view = graph.dense_view()
    assert view.depth == 2
    x = _x(graph)
    padded = F.pad(torch.as_tensor(x), (0, 1, 1, 0))  # ONNX pads [1, 0, 0, 1]
    conv = F.conv2d(
        padded,
        torch.as_tensor(w, dtype=torch.float64),
        torch.as_tensor(b, dtype=torch.float64),
        stride=(1, 2),
    )
    pre = x.reshape(len(x), -1) @ view.weights[0].T + view.biases[0]
    np.testing.assert_allclose(pre, conv.reshape(len(x), -1).numpy(), atol=1e-12)
    # the whole view reproduces the logits (pooling and flatten composed into layer 2)
    logits = np.maximum(pre, 0) @ view.weights[1].T + view.biases[1]
    np.testing.assert_allclose(logits, graph.forward(x).numpy(), atol=1e-12)


def test_dense_view_composes_normalisation_into_the_first_layer(tmp_path):
    g = np.random.default_rng(4)
    nodes = [
        mk("Sub", ["x", "mean"], ["s"]),
        mk("Div", ["s", "std"], ["d"]),
        mk("Flatten", ["d"], ["f"]),
        mk("Gemm", ["f", "W1", "b1"], ["h"], transB=1),
        mk("Relu", ["h"], ["r"]),
        mk("Gemm", ["r", "W2", "b2"], ["y"], transB=1),
    ]
    w1 = weights(g, 6, 9)
    inits = [
        init("mean", [0.25]),
        init("std", [0.5]),
        init("W1", w1),
        init("b1", weights(g, 6)),
        init("W2", weights(g, 2, 6)),
        init("b2", weights(g, 2)),
    ]
    graph = _load(tmp_path, nodes, [1, 1, 3, 3], inits, opset=9).graph
    view = graph.dense_view()
    assert view.depth == 2
    np.testing.assert_allclose(view.weights[0], w1 / 0.5, rtol=1e-12)
    x = _x(graph)
    hidden = np.maximum(x.reshape(len(x), -1) @ view.weights[0].T + view.biases[0], 0)
    np.testing.assert_allclose(
        hidden @ view.weights[1].T + view.biases[1], graph.forward(x).numpy(), atol=1e-12
    )


@pytest.mark.parametrize("after", ["Relu", "Gemm"])
def test_an_add_that_broadcasts_the_input_wider_copies_its_jacobian(tmp_path, after):
    """``Add([N,1], const[1,6])``: every output coordinate moves with the one input (a
    non-broadcasting linear part gave a 1x1 first layer and a 4x too small ||W1||)."""
    g = np.random.default_rng(5)
    shift, w, b = weights(g, 1, 6), weights(g, 3, 6), weights(g, 3)
    head = [mk("Gemm", ["h", "W", "b"], ["y"], transB=1)]
    if after == "Relu":
        head = [mk("Relu", ["h"], ["r"]), mk("Gemm", ["r", "W", "b"], ["y"], transB=1)]
    nodes = [mk("Add", ["x", "c"], ["h"]), *head]
    inits = [init("c", shift), init("W", w), init("b", b)]
    graph = _load(tmp_path, nodes, [1, 1], inits).graph
    view = graph.dense_view()
    first = view.weights[0]
    expected = np.ones((6, 1)) if after == "Relu" else w @ np.ones((6, 1))
    np.testing.assert_allclose(first, expected, rtol=1e-12)
    x = _x(graph)
    hidden = x.reshape(len(x), -1) @ first.T + view.biases[0]
    if after == "Relu":
        hidden = np.maximum(hidden, 0) @ view.weights[1].T + view.biases[1]
    np.testing.assert_allclose(hidden, graph.forward(x).numpy(), atol=1e-12)


def test_dense_view_rejects_a_residual_dag(tmp_path):
    with pytest.raises(NotApplicable, match="branches"):
        _residual(tmp_path).graph.dense_view()


@pytest.mark.parametrize("activation", ["Sigmoid", "LeakyRelu"])
def test_dense_view_rejects_other_activations(tmp_path, activation):
    loaded, _, _ = _gemm_relu_chain(tmp_path, activation=activation)
    with pytest.raises(NotApplicable, match=activation):
        loaded.graph.dense_view()


def test_dense_view_rejects_a_trailing_relu(tmp_path):
    nodes = [mk("Gemm", ["x", "W"], ["h"]), mk("Relu", ["h"], ["y"])]
    graph = _load(tmp_path, nodes, [1, 3], [init("W", np.ones((3, 2)))]).graph
    with pytest.raises(NotApplicable, match="ends with a ReLU"):
        graph.dense_view()


# ----------------------------------------------------------------- cut points, prefix


def test_cut_points_and_prefix_of_a_chain(tmp_path):
    graph = _gemm_relu_chain(tmp_path)[0].graph
    assert graph.cut_points == tuple(range(len(graph.nodes)))
    x = _x(graph)
    for k in graph.cut_points:
        prefix = graph.prefix(k)
        assert len(prefix.nodes) == k + 1 and prefix.output_activation is None
        assert prefix.output_shape == graph.nodes[k].shape
        torch.testing.assert_close(prefix.forward(x), graph.forward(x, upto=k), rtol=0, atol=0)


def test_cut_points_and_prefix_of_a_residual_dag(tmp_path):
    graph = _residual(tmp_path).graph
    ops = [n.layer.op for n in graph.nodes]
    assert ops == ["Input", "Dense", "Relu", "Dense", "Sum", "Relu", "Dense"]
    total = ops.index("Sum")
    inside = set(range(1, total))
    assert graph.cut_points == tuple(k for k in range(len(graph.nodes)) if k not in inside)
    for k in inside:
        with pytest.raises(NotApplicable):
            graph.prefix(k)
    x = _x(graph)
    for k in graph.cut_points:
        torch.testing.assert_close(
            graph.prefix(k).forward(x), graph.forward(x, upto=k), rtol=0, atol=0
        )
    # the residual block really is x + branch(x)
    branch = graph.forward(x, upto=total - 1)
    torch.testing.assert_close(graph.forward(x, upto=total), torch.as_tensor(x) + branch)


def test_consumers(tmp_path):
    graph = _residual(tmp_path).graph
    total = [n.layer.op for n in graph.nodes].index("Sum")
    assert graph.consumers(0) == (1, total)
    assert graph.consumers(len(graph.nodes) - 1) == ()


def test_forward_all_and_upto(tmp_path):
    graph = _gemm_relu_chain(tmp_path)[0].graph
    x = _x(graph)
    values = graph.forward_all(x)
    assert len(values) == len(graph.nodes)
    for k, (value, node) in enumerate(zip(values, graph.nodes, strict=True)):
        assert value.dtype == torch.float64 and value.shape == (len(x), *node.shape)
        torch.testing.assert_close(value, graph.forward(x, upto=k))
    assert (values[2] >= 0).all()  # node 2 is the first ReLU


# ---------------------------------------------------------------------- torch module


def _finite_difference_gradient(module, x: torch.Tensor, v: torch.Tensor, h: float = 1e-6):
    """Central differences of ``x -> (module(x) * v).sum(1)``, all coordinates in one batch."""
    n, d = len(x), x[0].numel()
    steps = h * torch.eye(d, dtype=x.dtype)  # (d, d)
    flat = x.reshape(n, 1, d)
    points = torch.cat([flat + steps, flat - steps], 1).reshape(2 * n * d, *x.shape[1:])
    values = (module(points).reshape(n, 2, d, -1) * v.reshape(n, 1, 1, -1)).sum(-1)
    return ((values[:, 0] - values[:, 1]) / (2 * h)).reshape(x.shape)


@pytest.mark.parametrize("model", ["tanh-mlp", "relu-mlp", "conv-avgpool"])
def test_torch_module_gradients_match_finite_differences(tmp_path, model):
    if model == "conv-avgpool":
        graph = _conv_net(tmp_path, "AveragePool")[0].graph
    else:
        activation = "Tanh" if model == "tanh-mlp" else "Relu"
        graph = _gemm_relu_chain(tmp_path, activation=activation)[0].graph
    module = graph.to_torch()
    assert isinstance(module, torch.nn.Module)
    x = torch.as_tensor(_x(graph, n=3)).requires_grad_(True)
    out = module(x)
    assert out.dtype == torch.float64 and out.shape == (3, graph.num_outputs)
    torch.testing.assert_close(out, graph.forward(x).reshape(3, -1))
    v = torch.as_tensor(np.random.default_rng(5).normal(size=out.shape))
    (grad,) = torch.autograd.grad((out * v).sum(), x)
    with torch.no_grad():
        expected = _finite_difference_gradient(module, x.detach(), v)
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-6)
    assert grad.abs().max() > 0


def test_torch_module_gives_logits_not_probabilities(tmp_path):
    g = np.random.default_rng(6)
    nodes = [mk("Gemm", ["x", "W"], ["logits"]), mk("Softmax", ["logits"], ["y"])]
    graph = _load(tmp_path, nodes, [1, 4], [init("W", weights(g, 4, 3))]).graph
    x = torch.as_tensor(_x(graph))
    logits = graph.to_torch()(x)
    torch.testing.assert_close(logits, graph.forward(x))
    torch.testing.assert_close(torch.softmax(logits, 1), graph.forward(x, activation=True))
    assert not torch.allclose(logits.sum(1), torch.ones(len(x), dtype=torch.float64))


# ------------------------------------------------------------------------- predict


@pytest.mark.parametrize("sigmoid", [False, True])
def test_predict_on_a_single_logit_model_uses_logit_above_zero(tmp_path, sigmoid):
    g = np.random.default_rng(7)
    nodes = [mk("Gemm", ["x", "W", "b"], ["logit" if sigmoid else "y"])]
    if sigmoid:
        nodes.append(mk("Sigmoid", ["logit"], ["y"]))
    graph = _load(tmp_path, nodes, [1, 4], [init("W", weights(g, 4, 1)), init("b", [0.1])]).graph
    assert graph.output_activation == ("sigmoid" if sigmoid else None)
    x = _x(graph, n=40)
    logits = graph.forward(x).numpy()[:, 0]
    labels = graph.predict(x)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, (logits > 0).astype(np.int64))
    assert 0 < labels.sum() < len(x)  # both classes occur, so the rule is exercised
    assert graph.num_outputs == 1 and graph.num_classes == 2


def test_predict_on_a_multi_class_model_is_argmax(tmp_path):
    graph = _gemm_relu_chain(tmp_path, widths=(4, 8, 5))[0].graph
    x = _x(graph, n=30)
    np.testing.assert_array_equal(graph.predict(x), graph.forward(x).numpy().argmax(1))
    np.testing.assert_array_equal(graph.predict(x.reshape(30, -1)), graph.predict(x))


# ------------------------------------------------------------------- sizes, shapes


def test_parameter_count_and_shapes_of_an_mlp(tmp_path):
    graph = _gemm_relu_chain(tmp_path, widths=(4, 8, 6, 3))[0].graph
    assert graph.parameter_count == (4 * 8 + 8) + (8 * 6 + 6) + (6 * 3 + 3)
    assert graph.input_shape == (4,) and graph.input_size == 4
    assert graph.output_shape == (3,) and graph.num_outputs == 3 and graph.num_classes == 3


def test_parameter_count_and_shapes_of_a_conv_net_with_folded_batchnorm(tmp_path):
    g = np.random.default_rng(8)
    nodes = [
        mk("Conv", ["x", "W"], ["c"]),
        mk("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["n"]),
        mk("Relu", ["n"], ["r"]),
        mk("Flatten", ["r"], ["f"]),
        mk("Gemm", ["f", "Wd", "bd"], ["y"], transB=1),
    ]
    inits = [
        init("W", weights(g, 3, 2, 3, 3)),
        init("gamma", weights(g, 3)),
        init("beta", weights(g, 3)),
        init("mean", weights(g, 3)),
        init("var", g.uniform(0.5, 1.5, 3)),
        init("Wd", weights(g, 5, 48)),
        init("bd", weights(g, 5)),
    ]
    loaded = _load(tmp_path, nodes, [1, 2, 6, 6], inits)
    graph = loaded.graph
    assert layer_ops(loaded) == ["Input", "Conv", "Relu", "Reshape", "Dense"]
    # the folded BatchNormalization becomes the conv bias (3 numbers), no extra parameters
    assert graph.parameter_count == (3 * 2 * 3 * 3 + 3) + (48 * 5 + 5)
    assert graph.input_shape == (2, 6, 6) and graph.input_size == 72
    assert graph.output_shape == (5,) and graph.num_classes == 5
    assert graph.describe()[0] == "Input[2, 6, 6]"


def test_single_output_model_has_two_classes(tmp_path):
    graph = _gemm_relu_chain(tmp_path, widths=(3, 4, 1))[0].graph
    assert graph.num_outputs == 1 and graph.num_classes == 2


def test_logits_graph_drops_the_output_activation(tmp_path):
    nodes = [mk("Gemm", ["x", "W"], ["logits"]), mk("LogSoftmax", ["logits"], ["y"])]
    w = weights(np.random.default_rng(9), 4, 3)
    graph = _load(tmp_path, nodes, [1, 4], [init("W", w)]).graph
    assert graph.output_activation == "log_softmax"
    plain = graph.logits_graph()
    assert plain.output_activation is None
    x = _x(graph)
    torch.testing.assert_close(plain.forward(x, activation=True), graph.forward(x))


# ------------------------------------------------------------------------- invariants


def test_node_zero_must_be_the_input():
    dense = Dense(weight=np.eye(2), bias=None)
    with pytest.raises(ValueError, match="Input"):
        LayerGraph((Node("d", dense, (0,), (2,)),))


def test_nodes_must_be_in_topological_order():
    nodes = (
        Node("x", Input((2,)), (), (2,)),
        Node("a", Relu(), (2,), (2,)),
        Node("b", Relu(), (0,), (2,)),
    )
    with pytest.raises(ValueError, match="topological"):
        LayerGraph(nodes)


def test_hand_built_graph_forward():
    w = np.array([[1.0, -2.0], [0.5, 0.0]])
    nodes = (
        Node("x", Input((2,)), (), (2,)),
        Node("d", Dense(weight=w, bias=np.array([0.0, -1.0])), (0,), (2,)),
        Node("r", Relu(), (1,), (2,)),
    )
    graph = LayerGraph(nodes)
    out = graph.forward(np.array([[1.0, 1.0], [4.0, 1.0]])).numpy()
    np.testing.assert_array_equal(out, [[0.0, 0.0], [2.0, 1.0]])


def test_loading_twice_gives_equal_graphs(tmp_path):
    loaded, _, _ = _gemm_relu_chain(tmp_path)
    again = load_onnx(loaded.path).graph
    x = _x(again)
    torch.testing.assert_close(again.forward(x), loaded.graph.forward(x), rtol=0, atol=0)
