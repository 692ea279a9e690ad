"""ONNX import: one small model per op and attribute combination, checked against onnxruntime.

In the style of onnx2torch's tests: each model is built with ``onnx.helper``
(explicit opset, float32 weights from a seeded RNG as initializers), saved,
loaded with ``load_onnx`` and its float64 forward pass compared with
onnxruntime on random inputs (scaled error <= 1e-5, see ``onnx_factory``).

Ops and attributes the layer graph lacks: when onnx2torch converts the model, it loads
as the input and one ``Opaque`` node whose ``missing`` names them (``details`` says why)
and whose forward pass (the onnx2torch module) matches onnxruntime within the same
tolerance; otherwise, and for training-mode models, ``load_onnx`` refuses it with every
unsupported op listed in one error.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from onnx_factory import (
    assert_matches_ort,
    assert_opaque_matches_ort,
    check,
    init,
    layer_ops,
    load_error,
    make_model,
    model_error,
    opaque,
    opaque_model,
    save,
    weights,
)

from audit_core.layers import (
    Conv,
    Dense,
    ElementwiseAffine,
    LeakyRelu,
    Sum,
)
from audit_core.onnx_import import load_onnx, normalise, supported_ops
from helpers import CORPUS

mk = helper.make_node


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def nonzero(generator: np.random.Generator, *shape: int) -> np.ndarray:
    """float32 values with |v| in [0.5, 2] (safe divisors)."""
    magnitude = generator.uniform(0.5, 2.0, size=shape)
    return (magnitude * generator.choice([-1.0, 1.0], size=shape)).astype(np.float32)


def why(layer) -> str:
    """An ``Opaque`` layer's reasons, node by node, as one text."""
    return "; ".join(layer.details)


def only_layer(loaded, layer_type):
    layers = [n.layer for n in loaded.graph.nodes if isinstance(n.layer, layer_type)]
    assert len(layers) == 1, layer_ops(loaded)
    return layers[0]


# ------------------------------------------------------------------------------- Gemm


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize(("alpha", "beta"), [(1.0, 1.0), (0.5, 2.0), (-1.5, 0.25)])
@pytest.mark.parametrize("c_kind", ["vector", "row", "scalar", "absent"])
def test_gemm(tmp_path, trans_b, alpha, beta, c_kind):
    g = rng(1)
    k, n = 6, 4
    b = weights(g, *((n, k) if trans_b else (k, n)))
    inits, inputs = [init("B", b)], ["x", "B"]
    c = {"vector": weights(g, n), "row": weights(g, 1, n), "scalar": np.float32(0.7)}.get(c_kind)
    if c is not None:
        inits.append(init("C", c))
        inputs.append("C")
    node = mk("Gemm", inputs, ["y"], alpha=alpha, beta=beta, transA=0, transB=trans_b)
    loaded = check(tmp_path, [node], [1, k], inits)
    assert loaded.graph.input_shape == (k,) and loaded.graph.output_shape == (n,)
    dense = only_layer(loaded, Dense)
    np.testing.assert_allclose(dense.weight, alpha * (b if trans_b else b.T), rtol=1e-12)
    if c is None:
        assert dense.bias is None  # no C input: no bias parameters
    else:
        np.testing.assert_allclose(dense.bias, beta * np.broadcast_to(c, (1, n))[0], rtol=1e-12)


def test_gemm_trans_a_loads_through_onnx2torch(tmp_path):
    g = rng()
    node = mk("Gemm", ["x", "B"], ["y"], transA=1)
    layer = opaque_model(tmp_path, [node], [1, 4], [init("B", weights(g, 1, 3))])
    assert layer.missing == ("Gemm (opset 13)",) and "transA" in why(layer)


# ----------------------------------------------------------------------------- MatMul


@pytest.mark.parametrize(
    ("input_shape", "weight_shape", "constant_first"),
    [
        pytest.param([1, 6], (6, 3), False, id="x@W-batch"),
        pytest.param([1, 1, 1, 5], (5, 3), False, id="x@W-rank4-last-axis"),
        pytest.param([1, 2, 6], (6, 4), False, id="x@W-rank3"),
        pytest.param([6], (6, 3), False, id="x@W-rank1-no-batch"),
        pytest.param([6], (3, 6), True, id="W@x-rank1-no-batch"),
        pytest.param([1, 6], (6,), False, id="x@v-1d-constant"),
        pytest.param([1, 2, 6], (6,), False, id="x@v-rank3"),
    ],
)
def test_matmul(tmp_path, input_shape, weight_shape, constant_first):
    w = weights(rng(2), *weight_shape)
    inputs = ["W", "x"] if constant_first else ["x", "W"]
    loaded = check(tmp_path, [mk("MatMul", inputs, ["y"])], input_shape, [init("W", w)])
    assert loaded.has_batch == (len(input_shape) > 1)
    dense = only_layer(loaded, Dense)
    expected = w if constant_first else (w[None, :] if w.ndim == 1 else w.T)
    np.testing.assert_array_equal(dense.weight, expected)


def test_matmul_chain_like_test_small(tmp_path):
    """W @ x + b -> Relu -> W @ h + b on a rank-1 input (../shared/corpus/test style)."""
    g = rng(3)
    nodes = [
        mk("MatMul", ["W1", "x"], ["h"]),
        mk("Add", ["h", "b1"], ["a"]),
        mk("Relu", ["a"], ["r"]),
        mk("MatMul", ["W2", "r"], ["m"]),
        mk("Add", ["m", "b2"], ["y"]),
    ]
    inits = [
        init("W1", weights(g, 4, 3)),
        init("b1", weights(g, 4)),
        init("W2", weights(g, 2, 4)),
        init("b2", weights(g, 2)),
    ]
    loaded = check(tmp_path, nodes, [3], inits, opset=14)
    assert not loaded.has_batch
    assert layer_ops(loaded) == ["Input", "Dense", "Relu", "Dense"]  # bias Adds are folded


@pytest.mark.parametrize(
    ("nodes", "input_shape", "inits", "reason"),
    [
        pytest.param(
            [mk("MatMul", ["x", "x"], ["y"])],
            [1, 4, 4],
            [],
            "two runtime tensors",
            id="runtime@runtime",
        ),
        pytest.param(
            [mk("MatMul", ["W", "x"], ["y"])],
            [1, 4],
            [init("W", np.ones((3, 1)))],
            "rank > 1",
            id="W@x-batched",
        ),
        pytest.param(
            [mk("MatMul", ["x", "W"], ["y"])],
            [1, 4],
            [init("W", np.ones((2, 4, 3)))],
            "rank 3",
            id="batched-constant",
        ),
    ],
)
def test_matmul_forms_the_layer_graph_lacks_load_through_onnx2torch(
    tmp_path, nodes, input_shape, inits, reason
):
    layer = opaque_model(tmp_path, nodes, input_shape, inits)
    assert layer.missing == ("MatMul (opset 13)",) and reason in why(layer)


# ------------------------------------------------------- Add / Sub / Mul / Div by constants


ELEMENTWISE = [
    # (op, constant first, constant shape, input shape)
    ("Add", False, (5,), [1, 5]),
    ("Add", True, (5,), [1, 5]),
    ("Add", False, (1, 3, 1, 1), [1, 3, 4, 4]),
    ("Sub", False, (5,), [1, 5]),
    ("Sub", True, (5,), [1, 5]),
    ("Sub", False, (1, 1, 1, 5), [1, 1, 1, 5]),
    ("Sub", True, (1, 1, 1, 5), [1, 1, 1, 5]),
    ("Sub", False, (4, 5), [1, 1, 5]),
    ("Mul", False, (3, 1, 1), [1, 3, 4, 4]),
    ("Mul", True, (3, 1, 1), [1, 3, 4, 4]),
    ("Mul", True, (), [1, 3, 4, 4]),
    ("Div", False, (5,), [1, 5]),
    ("Div", False, (3, 1, 1), [1, 3, 4, 4]),
    ("Div", False, (), [1, 3, 4, 4]),
    ("Sub", True, (5,), [5]),
    ("Div", False, (5,), [5]),
]


@pytest.mark.parametrize(
    ("op", "constant_first", "constant_shape", "input_shape"),
    ELEMENTWISE,
    ids=[f"{o}-{'c.x' if f else 'x.c'}-{list(c)}-on-{s}" for o, f, c, s in ELEMENTWISE],
)
def test_elementwise_with_constant(tmp_path, op, constant_first, constant_shape, input_shape):
    c = nonzero(rng(4), *constant_shape)
    inputs = ["c", "x"] if constant_first else ["x", "c"]
    loaded = check(tmp_path, [mk(op, inputs, ["y"])], input_shape, [init("c", c)])
    assert layer_ops(loaded) == ["Input", "ElementwiseAffine"]


def test_normalisation_then_gemm_is_folded_like_eran(tmp_path):
    """(x - mean) / std -> Flatten -> Gemm: still matches after the affine folds."""
    g = rng(5)
    nodes = [
        mk("Sub", ["x", "mean"], ["s"]),
        mk("Div", ["s", "std"], ["d"]),
        mk("Flatten", ["d"], ["f"], axis=1),
        mk("Gemm", ["f", "W", "b"], ["y"], transB=1),
    ]
    inits = [
        init("mean", [0.1307]),
        init("std", [0.3081]),
        init("W", weights(g, 3, 16)),
        init("b", weights(g, 3)),
    ]
    loaded = check(tmp_path, nodes, [1, 1, 4, 4], inits, opset=9, low=0.0, high=1.0)
    assert layer_ops(loaded) == ["Input", "ElementwiseAffine", "Reshape", "Dense"]
    affine = only_layer(loaded, ElementwiseAffine)
    np.testing.assert_allclose(affine.scale * 0.3081, 1.0, rtol=1e-6)


@pytest.mark.parametrize(
    ("op", "skip_first"), [("Add", True), ("Add", False), ("Sub", True), ("Sub", False)]
)
def test_two_branches_residual(tmp_path, op, skip_first):
    """x -> Gemm -> Relu -> Gemm, added to (subtracted from) x."""
    g = rng(6)
    nodes = [
        mk("Gemm", ["x", "W1", "b1"], ["h"], transB=1),
        mk("Relu", ["h"], ["r"]),
        mk("Gemm", ["r", "W2", "b2"], ["z"], transB=1),
        mk(op, ["x", "z"] if skip_first else ["z", "x"], ["y"]),
    ]
    inits = [
        init("W1", weights(g, 8, 5)),
        init("b1", weights(g, 8)),
        init("W2", weights(g, 5, 8)),
        init("b2", weights(g, 5)),
    ]
    loaded = check(tmp_path, nodes, [1, 5], inits)
    total = only_layer(loaded, Sum)
    assert total.coefficients == (1.0, -1.0 if op == "Sub" else 1.0)
    sum_node = loaded.graph.nodes[-1]
    assert 0 in sum_node.inputs  # the skip connection reads the input directly


@pytest.mark.parametrize(
    ("node", "inits", "reason"),
    [
        pytest.param(mk("Mul", ["x", "x"], ["y"]), [], "two runtime tensors", id="Mul-x-x"),
        pytest.param(
            mk("Div", ["c", "x"], ["y"]), [init("c", [2.0] * 5)], "Div of a constant", id="Div-c-x"
        ),
        pytest.param(mk("Div", ["x", "x"], ["y"]), [], "two runtime tensors", id="Div-x-x"),
        pytest.param(
            mk("Add", ["x", "c"], ["y"]),
            [init("c", np.ones((2, 5)))],
            "varies over",
            id="Add-batch-varying-constant",
        ),
        pytest.param(
            mk("Sub", ["x", "c"], ["y"]),
            [init("c", np.ones((1, 1, 5)))],
            "adds axes",
            id="Sub-constant-of-higher-rank",
        ),
    ],
)
def test_elementwise_forms_the_layer_graph_lacks_load_through_onnx2torch(
    tmp_path, node, inits, reason
):
    layer = opaque_model(tmp_path, [node], [1, 5], inits)
    assert layer.missing == (f"{node.op_type} (opset 13)",) and reason in why(layer)


def test_add_of_branches_with_different_shapes_loads_through_onnx2torch(tmp_path):
    nodes = [mk("Gemm", ["x", "W"], ["h"]), mk("Add", ["x", "h"], ["y"])]
    layer = opaque_model(tmp_path, nodes, [1, 1], [init("W", np.ones((1, 3)))])
    assert layer.missing == ("Add (opset 13)",)  # the Gemm converts


# ------------------------------------------------------------------------------- Conv


CONV_CASES = {
    "2d": ([1, 2, 7, 7], (3, 2, 3, 3), {}, False),
    "2d-bias-kernel-shape": ([1, 2, 7, 7], (3, 2, 3, 3), {"kernel_shape": [3, 3]}, True),
    "2d-strides-pads": (
        [1, 2, 8, 8],
        (4, 2, 3, 3),
        {"strides": [2, 2], "pads": [1, 1, 1, 1]},
        True,
    ),
    "2d-asymmetric-pads": ([1, 2, 6, 7], (3, 2, 3, 2), {"pads": [0, 1, 2, 0]}, True),
    "2d-dilations": ([1, 2, 9, 9], (2, 2, 3, 3), {"dilations": [2, 1], "strides": [1, 2]}, False),
    "2d-depthwise": ([1, 3, 6, 6], (3, 1, 3, 3), {"group": 3, "pads": [1, 1, 1, 1]}, True),
    "2d-depthwise-multiplier": ([1, 3, 6, 6], (6, 1, 3, 3), {"group": 3}, False),
    "2d-groups": ([1, 4, 5, 5], (6, 2, 3, 3), {"group": 2}, True),
    "2d-same-upper": (
        [1, 2, 7, 8],
        (3, 2, 4, 3),
        {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
        True,
    ),
    "2d-same-lower": (
        [1, 2, 7, 8],
        (3, 2, 4, 3),
        {"auto_pad": "SAME_LOWER", "strides": [2, 2]},
        True,
    ),
    "2d-valid": ([1, 2, 7, 8], (3, 2, 3, 3), {"auto_pad": "VALID", "strides": [2, 1]}, False),
    "1d": ([1, 2, 10], (3, 2, 3), {}, False),
    "1d-strides-asymmetric-pads": ([1, 2, 11], (4, 2, 4), {"strides": [2], "pads": [2, 1]}, True),
    "1d-dilations": ([1, 2, 12], (2, 2, 3), {"dilations": [3]}, True),
    "1d-depthwise": ([1, 3, 10], (3, 1, 3), {"group": 3}, False),
    "1d-same-upper": ([1, 2, 9], (2, 2, 4), {"auto_pad": "SAME_UPPER", "strides": [2]}, True),
    "1d-same-lower": ([1, 2, 9], (2, 2, 4), {"auto_pad": "SAME_LOWER", "strides": [2]}, True),
    "1d-valid": ([1, 2, 9], (2, 2, 4), {"auto_pad": "VALID", "strides": [3]}, False),
}


@pytest.mark.parametrize(
    ("input_shape", "weight_shape", "attrs", "bias"), CONV_CASES.values(), ids=CONV_CASES.keys()
)
def test_conv(tmp_path, input_shape, weight_shape, attrs, bias):
    g = rng(7)
    w = weights(g, *weight_shape)
    inits, inputs = [init("W", w)], ["x", "W"]
    if bias:
        inits.append(init("B", weights(g, weight_shape[0])))
        inputs.append("B")
    loaded = check(tmp_path, [mk("Conv", inputs, ["y"], **attrs)], input_shape, inits, opset=11)
    conv = only_layer(loaded, Conv)
    assert (conv.bias is None) == (not bias)
    assert conv.groups == attrs.get("group", 1)
    np.testing.assert_array_equal(conv.weight, w)


def test_same_upper_and_lower_pad_differently(tmp_path):
    """The two auto_pad modes put the odd pixel on opposite sides (the ORT check above is
    only meaningful if they do)."""
    pads = {}
    for mode in ("SAME_UPPER", "SAME_LOWER"):
        node = mk("Conv", ["x", "W"], ["y"], auto_pad=mode, strides=[2, 2])
        model = make_model([node], [1, 2, 7, 8], [init("W", np.ones((3, 2, 4, 3)))], opset=11)
        loaded = load_onnx(save(model, tmp_path, f"{mode}.onnx"))
        pads[mode] = only_layer(loaded, Conv).pads
    assert pads["SAME_UPPER"] == (1, 0, 2, 1)
    assert pads["SAME_LOWER"] == (2, 1, 1, 0)


def test_conv_transpose_loads_through_onnx2torch(tmp_path):
    node = mk("ConvTranspose", ["x", "W"], ["y"])
    layer = opaque_model(tmp_path, [node], [1, 2, 5, 5], [init("W", weights(rng(), 2, 3, 3, 3))])
    assert layer.missing == ("ConvTranspose (opset 13)",)
    assert "no converter" in why(layer)


# --------------------------------------------------------------------- BatchNormalization


def _bn_inits(g: np.random.Generator, channels: int) -> list[onnx.TensorProto]:
    return [
        init("gamma", nonzero(g, channels)),
        init("beta", weights(g, channels)),
        init("mean", weights(g, channels)),
        init("var", g.uniform(0.2, 2.0, channels).astype(np.float32)),
    ]


BN_INPUTS = ["gamma", "beta", "mean", "var"]


@pytest.mark.parametrize("opset", [9, 15])
@pytest.mark.parametrize("conv_bias", [True, False])
def test_batchnorm_after_conv_is_folded(tmp_path, opset, conv_bias):
    g = rng(8)
    conv_inputs = ["x", "W", "B"] if conv_bias else ["x", "W"]
    nodes = [
        mk("Conv", conv_inputs, ["c"], pads=[1, 1, 1, 1]),
        mk("BatchNormalization", ["c", *BN_INPUTS], ["y"], epsilon=1e-3),
    ]
    inits = [init("W", weights(g, 3, 2, 3, 3)), init("B", weights(g, 3)), *_bn_inits(g, 3)]
    loaded = check(tmp_path, nodes, [1, 2, 5, 5], inits, opset=opset)
    assert layer_ops(loaded) == ["Input", "Conv"]
    assert only_layer(loaded, Conv).bias is not None


@pytest.mark.parametrize("opset", [9, 15])
def test_batchnorm_after_gemm_is_folded(tmp_path, opset):
    g = rng(9)
    nodes = [
        mk("Gemm", ["x", "W", "b"], ["h"], transB=1),
        mk("BatchNormalization", ["h", *BN_INPUTS], ["y"]),
    ]
    inits = [init("W", weights(g, 4, 6)), init("b", weights(g, 4)), *_bn_inits(g, 4)]
    loaded = check(tmp_path, nodes, [1, 6], inits, opset=opset)
    assert layer_ops(loaded) == ["Input", "Dense"]
    assert not any(isinstance(n.layer, ElementwiseAffine) for n in loaded.graph.nodes)


@pytest.mark.parametrize("opset", [9, 15])
@pytest.mark.parametrize("input_shape", [[1, 3, 4, 4], [1, 3, 6], [1, 3]])
def test_batchnorm_on_the_input_is_kept(tmp_path, opset, input_shape):
    node = mk("BatchNormalization", ["x", *BN_INPUTS], ["y"], epsilon=1e-2)
    loaded = check(tmp_path, [node], input_shape, _bn_inits(rng(10), 3), opset=opset)
    assert layer_ops(loaded) == ["Input", "ElementwiseAffine"]


def test_batchnorm_is_not_folded_into_a_shared_conv(tmp_path):
    """The Conv output is also used unnormalised: folding would change that branch."""
    g = rng(11)
    nodes = [
        mk("Conv", ["x", "W"], ["c"]),
        mk("BatchNormalization", ["c", *BN_INPUTS], ["n"]),
        mk("Add", ["n", "c"], ["y"]),
    ]
    inits = [init("W", weights(g, 3, 2, 3, 3)), *_bn_inits(g, 3)]
    loaded = check(tmp_path, nodes, [1, 2, 5, 5], inits)
    assert layer_ops(loaded) == ["Input", "Conv", "ElementwiseAffine", "Sum"]


def test_batchnorm_in_training_mode_is_rejected(tmp_path):
    """Batch statistics: the output is not a function of one sample. onnx2torch converts the
    model but ignores the flag (inference mode), so it is refused, not loaded opaque."""
    node = mk("BatchNormalization", ["x", *BN_INPUTS], ["y"], training_mode=1)
    message = model_error(
        tmp_path, [node], [1, 3, 4, 4], _bn_inits(rng(), 3), opset=15, output_shape=[1, 3, 4, 4]
    )
    assert "BatchNormalization (opset 15)" in message and "training" in message
    assert "export it in inference mode" in message


# ------------------------------------------------------------------------- activations


def _mlp(activation: onnx.NodeProto, g: np.random.Generator, outputs: int = 3):
    nodes = [
        mk("Gemm", ["x", "W1", "b1"], ["h"], transB=1),
        activation,
        mk("Gemm", ["a", "W2", "b2"], ["y"], transB=1),
    ]
    inits = [
        init("W1", weights(g, 8, 5)),
        init("b1", weights(g, 8)),
        init("W2", weights(g, outputs, 8)),
        init("b2", weights(g, outputs)),
    ]
    return nodes, inits


@pytest.mark.parametrize(
    ("op", "attrs", "piecewise_linear"),
    [
        ("Relu", {}, True),
        ("LeakyRelu", {"alpha": 0.2}, True),
        ("LeakyRelu", {}, True),
        ("HardSigmoid", {}, True),
        ("HardSigmoid", {"alpha": -0.3, "beta": 0.6}, True),
        ("Clip", {}, True),
        ("Sigmoid", {}, False),
        ("Tanh", {}, False),
    ],
)
def test_activation_inside_the_graph(tmp_path, op, attrs, piecewise_linear):
    node = mk(op, ["h", "lo", "hi"] if op == "Clip" else ["h"], ["a"], **attrs)
    nodes, inits = _mlp(node, rng(12))
    if op == "Clip":  # ReLU6 as torch exports it (opset >= 11: bounds are inputs)
        inits += [init("lo", np.float32(0.0)), init("hi", np.float32(0.6))]
    loaded = check(tmp_path, nodes, [1, 5], inits, low=-3.0, high=3.0)
    assert layer_ops(loaded) == ["Input", "Dense", op, "Dense"]
    assert loaded.graph.output_activation is None
    assert loaded.graph.is_piecewise_linear is piecewise_linear
    if op == "LeakyRelu":
        assert only_layer(loaded, LeakyRelu).alpha == pytest.approx(attrs.get("alpha", 0.01))


@pytest.mark.parametrize(
    ("slope_shape", "input_shape"),
    [((1,), [1, 8]), ((8,), [1, 8]), ((3, 1, 1), [1, 3, 4, 4]), ((1, 3, 4, 4), [1, 3, 4, 4])],
)
def test_prelu(tmp_path, slope_shape, input_shape):
    slope = weights(rng(3), *slope_shape, low=-0.5, high=0.9)
    node = mk("PRelu", ["x", "s"], ["y"])
    loaded = check(tmp_path, [node], input_shape, [init("s", slope)])
    assert layer_ops(loaded) == ["Input", "PRelu"]
    assert loaded.graph.is_piecewise_linear


@pytest.mark.parametrize(
    ("opset", "bounds"),
    [(9, {"min": -0.5, "max": 0.5}), (9, {"max": 0.25}), (13, (-0.5, 0.5)), (13, (None, 0.3))],
)
def test_clip_forms(tmp_path, opset, bounds):
    inits = []
    if isinstance(bounds, dict):
        node = mk("Clip", ["x"], ["y"], **bounds)
    else:
        names = ["x", "" if bounds[0] is None else "lo", "" if bounds[1] is None else "hi"]
        inits = [init(n, np.float32(v)) for n, v in zip(names[1:], bounds, strict=True) if n]
        node = mk("Clip", names, ["y"])
    loaded = check(tmp_path, [node], [1, 6], inits, opset=opset)
    assert layer_ops(loaded) == ["Input", "Clip"]


def test_clip_without_bounds_is_the_identity(tmp_path):
    loaded = check(tmp_path, [mk("Clip", ["x"], ["y"])], [1, 6], opset=13)
    assert layer_ops(loaded) == ["Input"]


@pytest.mark.parametrize(
    ("op", "opset", "attrs"),
    [
        ("Softmax", 11, {}),
        ("Softmax", 11, {"axis": 1}),
        ("Softmax", 11, {"axis": -1}),
        ("Softmax", 13, {}),
        ("Softmax", 13, {"axis": 1}),
        ("Softmax", 13, {"axis": -1}),
        ("LogSoftmax", 11, {}),
        ("LogSoftmax", 13, {"axis": -1}),
    ],
)
def test_softmax_as_last_op_is_the_output_activation(tmp_path, op, opset, attrs):
    g = rng(13)
    w, b = weights(g, 5, 4), weights(g, 4)
    nodes = [mk("Gemm", ["x", "W", "b"], ["logits"]), mk(op, ["logits"], ["y"], **attrs)]
    loaded = check(
        tmp_path, nodes, [1, 5], [init("W", w), init("b", b)], opset=opset, low=-3.0, high=3.0
    )
    assert loaded.graph.output_activation == ("softmax" if op == "Softmax" else "log_softmax")
    assert layer_ops(loaded) == ["Input", "Dense"]
    x = np.random.default_rng(0).uniform(-1, 1, (3, 5))
    np.testing.assert_allclose(loaded.graph.forward(x).numpy(), x @ w + b, rtol=1e-6, atol=1e-6)


def test_softmax_in_the_middle_is_rejected(tmp_path):
    nodes, inits = _mlp(mk("Softmax", ["h"], ["a"], axis=-1), rng(14))
    message = model_error(tmp_path, nodes, [1, 5], inits)
    assert "Softmax" in message and "last op" in message


def test_softmax_over_part_of_the_output_is_rejected(tmp_path):
    """A per-row softmax on a [2, 3] output is not a softmax over the logits."""
    nodes = [
        mk("Gemm", ["x", "W"], ["h"]),
        mk("Reshape", ["h", "shape"], ["r"]),
        mk("Softmax", ["r"], ["y"], axis=-1),
    ]
    inits = [init("W", weights(rng(), 4, 6)), init("shape", [1, 2, 3], np.int64)]
    message = model_error(tmp_path, nodes, [1, 4], inits)
    assert "Softmax" in message


def test_sigmoid_as_last_op_of_a_single_output_model(tmp_path):
    g = rng(15)
    nodes, inits = _mlp(mk("Relu", ["h"], ["a"]), g, outputs=1)
    nodes[-1].output[0] = "logit"
    nodes.append(mk("Sigmoid", ["logit"], ["y"]))
    loaded = check(tmp_path, nodes, [1, 5], inits, low=-3.0, high=3.0)
    graph = loaded.graph
    assert graph.output_activation == "sigmoid"
    assert layer_ops(loaded) == ["Input", "Dense", "Relu", "Dense"]
    assert graph.is_piecewise_linear and graph.num_classes == 2


# ------------------------------------------------------------------------------ pooling


MAXPOOL_CASES = {
    "k2-s2": ([1, 2, 7, 8], {"kernel_shape": [2, 2], "strides": [2, 2]}),
    "k3-pads": ([1, 2, 7, 8], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    "k3-s2-asymmetric-pads": (
        [1, 2, 7, 8],
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [0, 1, 2, 0]},
    ),
    "dilations": ([1, 2, 7, 8], {"kernel_shape": [2, 2], "dilations": [2, 3]}),
    "ceil": ([1, 2, 8, 8], {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    "ceil-pads": (
        [1, 2, 7, 8],
        {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1},
    ),
    "ceil-pads-dilations": (
        [1, 2, 9, 8],
        {
            "kernel_shape": [2, 3],
            "strides": [3, 2],
            "dilations": [2, 1],
            "pads": [1, 0, 1, 1],
            "ceil_mode": 1,
        },
    ),
    "same-upper": (
        [1, 2, 7, 8],
        {"kernel_shape": [3, 2], "strides": [2, 2], "auto_pad": "SAME_UPPER"},
    ),
    "same-lower": (
        [1, 2, 7, 8],
        {"kernel_shape": [3, 2], "strides": [2, 2], "auto_pad": "SAME_LOWER"},
    ),
    "1d-pads": ([1, 2, 9], {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}),
    "1d-ceil": ([1, 2, 10], {"kernel_shape": [3], "strides": [2], "ceil_mode": 1}),
}


@pytest.mark.parametrize(("input_shape", "attrs"), MAXPOOL_CASES.values(), ids=MAXPOOL_CASES.keys())
def test_maxpool(tmp_path, input_shape, attrs):
    loaded = check(tmp_path, [mk("MaxPool", ["x"], ["y"], **attrs)], input_shape, opset=12)
    assert layer_ops(loaded) == ["Input", "MaxPool"]
    assert loaded.graph.is_piecewise_linear


def test_maxpool_with_indices_output_loads_through_onnx2torch(tmp_path):
    node = mk("MaxPool", ["x"], ["y", "indices"], kernel_shape=[2, 2])
    layer = opaque_model(tmp_path, [node], [1, 1, 4, 4], opset=12)
    assert layer.missing == ("MaxPool (opset 12)",) and "Indices" in why(layer)


AVGPOOL_CASES = {
    "k2-s2": ([1, 2, 6, 8], {"kernel_shape": [2, 2], "strides": [2, 2]}),
    "k3-pads-exclude": (
        [1, 2, 6, 7],
        {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 0},
    ),
    "k3-pads-include": (
        [1, 2, 6, 7],
        {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1},
    ),
    "asymmetric-pads-exclude": (
        [1, 2, 6, 7],
        {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [0, 1, 2, 0], "count_include_pad": 0},
    ),
    "asymmetric-pads-include": (
        [1, 2, 6, 7],
        {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [0, 1, 2, 0], "count_include_pad": 1},
    ),
    "ceil": ([1, 2, 8, 7], {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    "ceil-pads-exclude": (
        [1, 2, 7, 8],
        {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1},
    ),
    "ceil-pads-include": (
        [1, 2, 7, 8],
        {
            "kernel_shape": [3, 3],
            "strides": [2, 2],
            "pads": [1, 0, 1, 1],
            "ceil_mode": 1,
            "count_include_pad": 1,
        },
    ),
    "same-upper": (
        [1, 2, 7, 8],
        {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"},
    ),
    "1d-pads-include": (
        [1, 3, 9],
        {"kernel_shape": [4], "strides": [2], "pads": [2, 1], "count_include_pad": 1},
    ),
}


@pytest.mark.parametrize(("input_shape", "attrs"), AVGPOOL_CASES.values(), ids=AVGPOOL_CASES.keys())
@pytest.mark.parametrize("opset", [11, 19])
def test_average_pool(tmp_path, input_shape, attrs, opset):
    loaded = check(tmp_path, [mk("AveragePool", ["x"], ["y"], **attrs)], input_shape, opset=opset)
    assert layer_ops(loaded) == ["Input", "AvgPool"]


def test_average_pool_with_dilations_is_rejected(tmp_path):
    node = mk("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 2])
    message = model_error(tmp_path, [node], [1, 1, 6, 6], opset=19)
    assert "AveragePool" in message and "dilations" in message


@pytest.mark.parametrize("input_shape", [[1, 3, 5, 6], [1, 4, 7]])
def test_global_average_pool(tmp_path, input_shape):
    loaded = check(tmp_path, [mk("GlobalAveragePool", ["x"], ["y"])], input_shape)
    assert loaded.graph.output_shape == (input_shape[1],) + (1,) * (len(input_shape) - 2)


def test_pad_attribute_form_opset_2(tmp_path):
    node = mk("Pad", ["x"], ["y"], mode="constant", pads=[0, 0, 1, 2, 0, 0, 2, 0], value=1.5)
    loaded = check(tmp_path, [node], [1, 2, 4, 5], opset=2)
    assert loaded.graph.output_shape == (2, 7, 7)


@pytest.mark.parametrize(
    ("opset", "pads", "value", "axes", "input_shape"),
    [
        pytest.param(11, [0, 0, 1, 0, 0, 0, 0, 2], None, None, [1, 2, 4, 5], id="11-no-value"),
        pytest.param(13, [0, 0, 1, 2, 0, 0, 2, 1], 0.5, None, [1, 2, 4, 5], id="13-value"),
        pytest.param(13, [0, 0, 3, 0, 0, 1], -2.0, None, [1, 2, 5], id="13-1d"),
        pytest.param(18, [1, 0, 2, 3], 0.25, [2, 3], [1, 2, 4, 5], id="18-axes"),
        pytest.param(18, [2, 1], 0.75, [-1], [1, 2, 4, 5], id="18-negative-axis"),
    ],
)
def test_pad_input_form(tmp_path, opset, pads, value, axes, input_shape):
    inits = [init("pads", pads, np.int64)]
    inputs = ["x", "pads"]
    if value is not None:
        inits.append(init("value", value))
        inputs.append("value")
    if axes is not None:
        inputs += [""] * (3 - len(inputs)) + ["axes"]
        inits.append(init("axes", axes, np.int64))
    check(tmp_path, [mk("Pad", inputs, ["y"], mode="constant")], input_shape, inits, opset=opset)


def test_pad_then_conv_like_verivital(tmp_path):
    g = rng(16)
    nodes = [
        mk("Pad", ["x"], ["p"], pads=[0, 0, 1, 1, 0, 0, 1, 1], value=0.0),
        mk("Conv", ["p", "W", "B"], ["y"], kernel_shape=[3, 3]),
    ]
    inits = [init("W", weights(g, 4, 1, 3, 3)), init("B", weights(g, 4))]
    loaded = check(tmp_path, nodes, [1, 1, 6, 6], inits, opset=9)
    assert layer_ops(loaded) == ["Input", "Pad", "Conv"]


@pytest.mark.parametrize(
    ("attrs", "pads", "reason"),
    [
        ({"mode": "reflect"}, [0, 0, 1, 1, 0, 0, 1, 1], "mode=reflect"),
        ({}, [1, 0, 0, 0, 0, 0, 0, 0], "batch axis"),
        ({}, [0, 0, -1, 0, 0, 0, 0, 0], "negative"),
    ],
)
def test_pad_forms_the_layer_graph_lacks_load_through_onnx2torch(tmp_path, attrs, pads, reason):
    node = mk("Pad", ["x", "pads"], ["y"], **attrs)
    layer = opaque_model(tmp_path, [node], [1, 2, 4, 4], [init("pads", pads, np.int64)])
    assert layer.missing == ("Pad (opset 13)",) and reason in why(layer)


# --------------------------------------------------------------------------- shape ops


@pytest.mark.parametrize(
    ("opset", "axis"),
    [(1, 1), (1, 0), (9, 1), (9, 0), (11, 1), (11, -3), (11, 0), (13, 1), (13, -3), (13, 0)],
)
def test_flatten(tmp_path, opset, axis):
    loaded = check(tmp_path, [mk("Flatten", ["x"], ["y"], axis=axis)], [1, 3, 4, 2], opset=opset)
    assert loaded.graph.output_shape == (24,)


def test_flatten_then_gemm(tmp_path):
    g = rng(17)
    nodes = [mk("Flatten", ["x"], ["f"], axis=-3), mk("Gemm", ["f", "W"], ["y"], transB=1)]
    loaded = check(tmp_path, nodes, [1, 3, 4, 2], [init("W", weights(g, 5, 24))])
    assert layer_ops(loaded) == ["Input", "Reshape", "Dense"]


def test_flatten_that_merges_the_batch_axis_loads_through_onnx2torch(tmp_path):
    """onnxruntime's output (3, 8) for one sample is the model's 24 flat logits."""
    layer = opaque_model(tmp_path, [mk("Flatten", ["x"], ["y"], axis=2)], [1, 3, 4, 2])
    assert layer.missing == ("Flatten (opset 13)",) and "batch axis" in why(layer)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ([0, -1], (24,)),
        ([0, 3, -1], (3, 8)),
        ([1, 4, 6], (4, 6)),
        ([-1, 12, 2], (12, 2)),
        ([0, 0, 8], (3, 8)),
    ],
)
@pytest.mark.parametrize("opset", [1, 5, 13])
def test_reshape(tmp_path, opset, target, expected):
    if opset < 5:
        node, inits = mk("Reshape", ["x"], ["y"], shape=target), []
    else:
        node, inits = mk("Reshape", ["x", "shape"], ["y"]), [init("shape", target, np.int64)]
    loaded = check(tmp_path, [node], [1, 3, 4, 2], inits, opset=opset, output_shape=[1, *expected])
    assert loaded.graph.output_shape == expected


@pytest.mark.parametrize("perm", [[0, 2, 3, 1], [0, 1, 3, 2], [0, 3, 1, 2]])
def test_transpose_with_perm(tmp_path, perm):
    g = rng(18)
    nodes = [
        mk("Transpose", ["x"], ["t"], perm=perm),
        mk("Flatten", ["t"], ["f"]),
        mk("Gemm", ["f", "W"], ["y"], transB=1),
    ]
    loaded = check(tmp_path, nodes, [1, 2, 3, 4], [init("W", weights(g, 3, 24))])
    assert layer_ops(loaded) == ["Input", "Transpose", "Reshape", "Dense"]


def test_transpose_with_identity_perm_is_dropped(tmp_path):
    nodes = [mk("Transpose", ["x"], ["t"], perm=[0, 1, 2]), mk("Relu", ["t"], ["y"])]
    loaded = check(tmp_path, nodes, [1, 2, 3])
    assert layer_ops(loaded) == ["Input", "Relu"]


def test_transpose_without_perm_on_a_model_without_batch_axis(tmp_path):
    nodes = [
        mk("Reshape", ["x", "s1"], ["r"]),
        mk("Transpose", ["r"], ["t"]),
        mk("Reshape", ["t", "s2"], ["y"]),
    ]
    inits = [init("s1", [2, 3], np.int64), init("s2", [6], np.int64)]
    loaded = check(tmp_path, nodes, [6], inits)
    assert not loaded.has_batch
    x = np.arange(6.0)[None]
    np.testing.assert_array_equal(loaded.graph.forward(x).numpy(), [[0, 3, 1, 4, 2, 5]])


def test_transpose_without_perm_on_a_batched_model_loads_through_onnx2torch(tmp_path):
    """The batch axis moves last: the module runs sample by sample (not on batches)."""
    layer = opaque_model(tmp_path, [mk("Transpose", ["x"], ["y"])], [1, 2, 3])
    assert layer.missing == ("Transpose (opset 13)",) and "batch axis" in why(layer)
    assert not layer.module.batched


SQUEEZE_CASES = [
    ("Squeeze", [2], [1, 3, 1, 4], (3, 4)),
    ("Squeeze", [-2], [1, 3, 1, 4], (3, 4)),
    ("Squeeze", [2, 3], [1, 3, 1, 1], (3,)),
    ("Unsqueeze", [1], [1, 3, 4], (1, 3, 4)),
    ("Unsqueeze", [-1], [1, 3, 4], (3, 4, 1)),
    ("Unsqueeze", [1, 3], [1, 3, 4], (1, 3, 1, 4)),
]


@pytest.mark.parametrize(("op", "axes", "input_shape", "expected"), SQUEEZE_CASES)
@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze_unsqueeze(tmp_path, opset, op, axes, input_shape, expected):
    if opset < 13:
        node, inits = mk(op, ["x"], ["y"], axes=axes), []
    else:
        node, inits = mk(op, ["x", "axes"], ["y"]), [init("axes", axes, np.int64)]
    loaded = check(tmp_path, [node], input_shape, inits, opset=opset)
    assert loaded.graph.output_shape == expected


@pytest.mark.parametrize(
    ("node", "opset", "inits"),
    [
        pytest.param(mk("Identity", ["x"], ["i"]), 13, [], id="Identity"),
        pytest.param(mk("Dropout", ["x"], ["i"], ratio=0.5), 7, [], id="Dropout-7"),
        pytest.param(
            mk("Dropout", ["x", "ratio"], ["i"]), 13, [init("ratio", 0.5)], id="Dropout-13-ratio"
        ),
        pytest.param(
            mk("Dropout", ["x", "ratio", "training"], ["i"]),
            13,
            [init("ratio", 0.5), init("training", False, np.bool_)],
            id="Dropout-13-inference",
        ),
    ],
)
def test_identity_and_dropout(tmp_path, node, opset, inits):
    g = rng(19)
    nodes = [node, mk("Gemm", ["i", "W", "b"], ["y"], transB=1)]
    loaded = check(
        tmp_path,
        nodes,
        [1, 5],
        [*inits, init("W", weights(g, 3, 5)), init("b", weights(g, 3))],
        opset=opset,
    )
    assert layer_ops(loaded) == ["Input", "Dense"]


def test_dropout_in_training_mode_is_rejected(tmp_path):
    """Random outputs in onnxruntime; onnx2torch would convert it as the identity: refused."""
    node = mk("Dropout", ["x", "ratio", "training"], ["y"])
    inits = [init("ratio", 0.5), init("training", True, np.bool_)]
    message = model_error(tmp_path, [node], [1, 20], inits)
    assert "Dropout (opset 13)" in message and "training" in message
    assert "export it in inference mode" in message


@pytest.mark.parametrize(
    ("constant", "op"),
    [
        pytest.param(
            mk(
                "Constant",
                [],
                ["c"],
                value=helper.make_tensor("v", TensorProto.FLOAT, [3], [0.5, -1.0, 2.0]),
            ),
            "Add",
            id="value-tensor",
        ),
        pytest.param(mk("Constant", [], ["c"], value_float=-1.75), "Mul", id="value_float"),
        pytest.param(
            mk("Constant", [], ["c"], value_floats=[0.5, -1.0, 2.0]), "Sub", id="value_floats"
        ),
    ],
)
def test_constant_node(tmp_path, constant, op):
    loaded = check(tmp_path, [constant, mk(op, ["x", "c"], ["y"])], [1, 3])
    assert layer_ops(loaded) == ["Input", "ElementwiseAffine"]


def test_constant_node_as_reshape_target(tmp_path):
    target = helper.make_tensor("v", TensorProto.INT64, [2], [1, -1])
    nodes = [mk("Constant", [], ["s"], value=target), mk("Reshape", ["x", "s"], ["y"])]
    loaded = check(tmp_path, nodes, [1, 2, 3])
    assert loaded.graph.output_shape == (6,)


@pytest.mark.parametrize("opset", [11, 13])
def test_dynamic_flatten_pattern_from_pytorch(tmp_path, opset):
    """``x.view(x.size(0), -1)``: Shape -> Gather -> Unsqueeze -> Concat -> Reshape."""
    g = rng(20)
    if opset < 13:
        unsqueeze, axes = mk("Unsqueeze", ["n"], ["n1"], axes=[0]), []
    else:
        unsqueeze, axes = mk("Unsqueeze", ["n", "axes"], ["n1"]), [init("axes", [0], np.int64)]
    nodes = [
        mk("Relu", ["x"], ["r"]),
        mk("Shape", ["r"], ["shape"]),
        mk("Constant", [], ["zero"], value=helper.make_tensor("z", TensorProto.INT64, [], [0])),
        mk("Gather", ["shape", "zero"], ["n"], axis=0),
        unsqueeze,
        mk("Constant", [], ["minus1"], value=helper.make_tensor("m", TensorProto.INT64, [1], [-1])),
        mk("Concat", ["n1", "minus1"], ["target"], axis=0),
        mk("Reshape", ["r", "target"], ["f"]),
        mk("Gemm", ["f", "W", "b"], ["y"], transB=1),
    ]
    inits = [*axes, init("W", weights(g, 4, 24)), init("b", weights(g, 4))]
    loaded = check(tmp_path, nodes, [1, 2, 3, 4], inits, opset=opset, output_shape=[1, 4])
    assert layer_ops(loaded) == ["Input", "Relu", "Reshape", "Dense"]


# ------------------------------------------------------------------ inputs and outputs


def _old_style_model() -> onnx.ModelProto:
    """IR 3 / opset 8: every weight is also listed as a graph input."""
    g = rng(21)
    inits = [
        init("W1", weights(g, 5, 7)),
        init("b1", weights(g, 7)),
        init("W2", weights(g, 7, 3)),
        init("b2", weights(g, 3)),
    ]
    nodes = [
        mk("MatMul", ["x", "W1"], ["m"]),
        mk("Add", ["m", "b1"], ["h"]),
        mk("Relu", ["h"], ["r"]),
        mk("Gemm", ["r", "W2", "b2"], ["y"]),
    ]
    weight_inputs = [
        helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.dims)) for t in inits
    ]
    return make_model(nodes, [1, 5], inits, opset=8, ir_version=3, extra_inputs=weight_inputs)


def test_old_export_with_weights_as_graph_inputs(tmp_path):
    model = _old_style_model()
    assert len(model.graph.input) == 5 and model.ir_version == 3
    loaded = assert_matches_ort(save(model, tmp_path))
    assert loaded.input_name == "x" and loaded.opset == 8
    assert loaded.graph.input_shape == (5,)
    assert [i.name for i in loaded.proto.graph.input] == ["x"]
    assert layer_ops(loaded) == ["Input", "Dense", "Relu", "Dense"]


def test_normalise_returns_a_copy():
    model = _old_style_model()
    normalised = normalise(model)
    assert [i.name for i in normalised.graph.input] == ["x"]
    assert len(model.graph.input) == 5  # the original is untouched
    onnx.checker.check_model(normalised)


def test_two_real_inputs_are_rejected(tmp_path):
    other = helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 5])
    model = make_model([mk("Add", ["x", "z"], ["y"])], [1, 5], extra_inputs=[other])
    message = load_error(save(model, tmp_path))
    assert "2 inputs" in message and "x" in message and "z" in message


def test_two_outputs_are_rejected(tmp_path):
    model = make_model([mk("Relu", ["x"], ["y"]), mk("Sigmoid", ["x"], ["y2"])], [1, 5])
    model.graph.output.append(helper.make_tensor_value_info("y2", TensorProto.FLOAT, [1, 5]))
    message = load_error(save(model, tmp_path))
    assert "2 outputs" in message


def test_model_that_ignores_its_input_is_rejected(tmp_path):
    nodes = [mk("Relu", ["x"], ["unused"]), mk("Identity", ["c"], ["y"])]
    message = model_error(tmp_path, nodes, [1, 3], [init("c", [1.0, 2.0])])
    assert "constant" in message


# -------------------------------------------------------------------- unsupported ops


def _parallel(first: str, second: str) -> list[onnx.NodeProto]:
    """``first(x) + second(x) + ConvTranspose(x)``."""
    return [
        mk(first, ["x"], ["c"]),
        mk(second, ["x"], ["s"]),
        mk("ConvTranspose", ["x", "W"], ["t"]),
        mk("Add", ["c", "s"], ["a"]),
        mk("Add", ["a", "t"], ["y"]),
    ]


def _chain(first: str, second: str) -> list[onnx.NodeProto]:
    """``ConvTranspose(second(Relu(first(x))))``."""
    return [
        mk(first, ["x"], ["c"]),
        mk("Relu", ["c"], ["r"]),
        mk(second, ["r"], ["s"]),
        mk("ConvTranspose", ["s", "W"], ["y"]),
    ]


CONV_T_WEIGHT = [init("W", weights(rng(), 2, 2, 1, 1))]


@pytest.mark.parametrize("build", [_parallel, _chain], ids=["parallel", "chain"])
def test_all_unsupported_ops_are_listed_in_missing(tmp_path, build):
    layer = opaque_model(tmp_path, build("Cos", "Sin"), [1, 2, 4, 4], CONV_T_WEIGHT)
    assert layer.missing == ("Cos (opset 13)", "Sin (opset 13)", "ConvTranspose (opset 13)")
    assert "Relu" not in why(layer)  # supported ops are not listed


@pytest.mark.parametrize("build", [_parallel, _chain], ids=["parallel", "chain"])
def test_all_unsupported_ops_are_listed_in_one_error(tmp_path, build):
    """Cosh and Sinh: onnx2torch lacks them too, so the model is refused; the error lists
    every op the layer graph lacks, ConvTranspose included, and why onnx2torch failed."""
    message = model_error(tmp_path, build("Cosh", "Sinh"), [1, 2, 4, 4], CONV_T_WEIGHT)
    assert "unsupported ops: Cosh (opset 13), Sinh (opset 13), ConvTranspose (opset 13) [" in (
        message
    )
    assert "onnx2torch cannot convert the model either" in message
    assert "Relu" not in message  # supported ops are not listed


def test_repeated_unsupported_op_is_counted(tmp_path):
    nodes = [mk("Cos", ["x"], ["a"]), mk("Cos", ["x"], ["b"]), mk("Add", ["a", "b"], ["y"])]
    assert opaque_model(tmp_path, nodes, [1, 3]).missing == ("Cos (opset 13) x2",)
    nodes = [mk("Cosh", ["x"], ["a"]), mk("Cosh", ["x"], ["b"]), mk("Add", ["a", "b"], ["y"])]
    assert "unsupported ops: Cosh (opset 13) x2 [" in model_error(tmp_path, nodes, [1, 3])


# ----------------------------------------------------------- batch axis, opaque models


@pytest.mark.parametrize(
    ("input_shape", "target", "has_batch", "batched"),
    [
        pytest.param(["N", 3, 2, 2], [-1, 12], True, True, id="dim_param-batch"),
        pytest.param([-1, 3, 2, 2], [-1, 12], True, True, id="minus-one-batch"),
        pytest.param([1, 3, 2, 2], [-1, 12], True, True, id="batch-1"),
        pytest.param([1, 3, 2, 2], [1, 12], True, False, id="batch-1-fixed-reshape"),
        pytest.param([12], [1, 12], False, False, id="no-batch-axis"),
        pytest.param([12], None, False, True, id="no-batch-axis-matmul"),
    ],
)
def test_opaque_model_with_and_without_a_batch_axis(
    tmp_path, input_shape, target, has_batch, batched
):
    """HardSwish (the layer graph lacks it) -> Reshape to ``target`` -> Gemm (``target``
    None: -> MatMul -> Add): the per-sample shape leaves out the batch axis when there is
    one; the onnx2torch module runs on whole batches when that gives the samples' own
    outputs (else sample by sample), and the audit's fidelity check (onnxruntime, batched
    when it can) passes."""
    from audit_core.model import open_model
    from audit_core.torch_module import Float32Logits

    g = rng(24)
    w, b = weights(g, 5, 12), weights(g, 5)
    if target is None:
        nodes = [
            mk("HardSwish", ["x"], ["h"]),
            mk("MatMul", ["h", "Wt"], ["m"]),
            mk("Add", ["m", "b"], ["y"]),
        ]
        inits = [init("Wt", w.T.copy()), init("b", b)]
    else:
        nodes = [
            mk("HardSwish", ["x"], ["h"]),
            mk("Reshape", ["h", "shape"], ["r"]),
            mk("Gemm", ["r", "W", "b"], ["y"], transB=1),
        ]
        inits = [init("shape", target, np.int64), init("W", w), init("b", b)]
    path = save(make_model(nodes, input_shape, inits, opset=14), tmp_path)
    loaded = assert_opaque_matches_ort(path, n=5)
    assert loaded.has_batch is has_batch
    assert loaded.graph.input_shape == ((3, 2, 2) if has_batch else (12,))
    assert loaded.graph.output_shape == (5,)
    layer = opaque(loaded)
    assert layer.missing == ("HardSwish (opset 14)",) and layer.module.batched is batched
    model = open_model(path, "m", None, np.random.default_rng(0))
    assert model.torch_model.module is opaque(model.loaded).module  # no second conversion
    assert model.torch_model.source == "onnx2torch"
    assert model.fidelity.torch_error <= 1e-5 and model.fidelity.graph_error <= 1e-5
    x = torch.rand((7, *loaded.graph.input_shape), dtype=torch.float64)
    logits = model.module(x)
    assert logits.shape == (7, 5)
    torch.testing.assert_close(Float32Logits(model.module)(x), logits, rtol=1e-5, atol=1e-5)


def test_negative_input_dims_are_dynamic(tmp_path):
    """``-1`` as a per-sample dim is dynamic (like a dim_param): --data fixes it."""
    model = make_model([mk("Relu", ["x"], ["y"])], [-1, -1, 3])
    path = save(model, tmp_path)
    message = load_error(path)
    assert "dynamic" in message and "['?', '?', 3]" in message
    loaded = assert_matches_ort(path, sample_shape=(4, 3))
    assert loaded.has_batch and loaded.graph.input_shape == (4, 3)


def test_supported_ops_cover_the_required_list():
    required = {
        "Gemm",
        "MatMul",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Conv",
        "BatchNormalization",
        "Relu",
        "LeakyRelu",
        "Sigmoid",
        "Tanh",
        "Softmax",
        "LogSoftmax",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "Pad",
        "Flatten",
        "Reshape",
        "Transpose",
        "Squeeze",
        "Unsqueeze",
        "Identity",
        "Dropout",
        "Constant",
        "Shape",
    }
    assert required <= set(supported_ops())
    assert "ConvTranspose" not in supported_ops()


# ------------------------------------------------------------------------- bad files


def _bad_file(kind: str, tmp_path: Path) -> Path:
    path = tmp_path / f"{kind}.onnx"
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        raw = (CORPUS / "verivital" / "Convnet_maxpool.onnx").read_bytes()
        path.write_bytes(raw[: len(raw) // 2])
    elif kind == "text":
        path.write_text("this is not an ONNX model\nbut a text file\n")
    elif kind == "checker":
        nodes = [mk("Relu", ["x"], ["h"]), mk("Add", ["h", "ghost"], ["y"])]
        model = make_model(nodes, [1, 3], output_shape=[1, 3])
        path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("missing", "no such file"),
        ("directory", "directory"),
        ("empty", "empty"),
        ("truncated", "not an ONNX model"),
        ("text", "not an ONNX model"),
        ("checker", "ONNX checker"),
    ],
)
def test_bad_files(tmp_path, kind, reason):
    message = load_error(_bad_file(kind, tmp_path))
    assert reason in message
    if kind == "checker":
        assert "ghost" in message  # the checker's first line names the undefined input


def test_dynamic_input_dims(tmp_path):
    g = rng(22)
    node = mk("Conv", ["x", "W"], ["y"], pads=[1, 1, 1, 1])
    model = make_model([node], ["N", 3, "H", "W"], [init("W", weights(g, 2, 3, 3, 3))])
    path = save(model, tmp_path)
    message = load_error(path)
    assert "dynamic" in message and "--data" in message
    loaded = assert_matches_ort(path, sample_shape=(3, 6, 5))
    assert loaded.graph.input_shape == (3, 6, 5) and loaded.graph.output_shape == (2, 6, 5)


def test_dynamic_batch_only_needs_no_sample_shape(tmp_path):
    g = rng(23)
    model = make_model([mk("Gemm", ["x", "W"], ["y"])], ["batch", 4], [init("W", weights(g, 4, 2))])
    loaded = assert_matches_ort(save(model, tmp_path))
    assert loaded.has_batch and loaded.graph.input_shape == (4,)


def test_loaded_model_metadata(tmp_path):
    model = make_model([mk("Relu", ["x"], ["y"])], [1, 3], opset=11)
    helper.set_model_props(model, {"author": "tests"})
    path = save(model, tmp_path, "meta.onnx")
    loaded = load_onnx(path)
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.opset == 11 and loaded.name == "meta" and loaded.graph.name == "meta"
    assert loaded.producer == "onnx_factory" and loaded.metadata == {"author": "tests"}


# ----------------------------------------------------------------------------- corpus


CORPUS_MODELS = sorted(CORPUS.glob("*/*.onnx"))
CORPUS_IDS = [f"{p.parent.name}/{p.name}" for p in CORPUS_MODELS]


def test_corpus_is_present():
    assert len(CORPUS_MODELS) >= 12, f"corpus missing under {CORPUS}"


@pytest.mark.parametrize("path", CORPUS_MODELS, ids=CORPUS_IDS)
def test_corpus_model_matches_onnxruntime(path):
    loaded = assert_matches_ort(path, n=4, low=0.0, high=1.0)
    assert loaded.graph.is_piecewise_linear is ("SIGMOID" not in path.name)


def test_sigmoid_corpus_model_is_not_piecewise_linear():
    loaded = load_onnx(CORPUS / "eran" / "ffnnSIGMOID__Point_6x200.onnx")
    assert not loaded.graph.is_piecewise_linear
    assert "Sigmoid" in layer_ops(loaded)
