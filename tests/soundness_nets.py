"""Small ONNX nets for the bound-propagation soundness tests (importable as
``soundness_nets``): the corner cases of every piecewise-linear layer rule, written
with ``onnx.helper`` so that onnxruntime runs exactly the same file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _save(path: Path, nodes, inits, in_shape, out_dim: int) -> Path:
    graph = helper.make_graph(
        nodes,
        "net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", *in_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", out_dim])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def _init(name: str, array) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array, np.float32), name)


def strided_conv_net(tmp: Path, seed: int = 11) -> Path:
    """Conv (stride 2, dilation 2, asymmetric pads) -> Relu -> grouped Conv (stride 1,
    pads) -> LeakyRelu(0.1) -> MaxPool (2x3 kernel, strides 1x2, pads, ceil_mode) ->
    AveragePool (ceil_mode, pads, count_include_pad 0) -> Flatten -> Gemm (3 logits)."""
    rng = np.random.default_rng(seed)
    inits = [
        _init("W1", rng.normal(size=(4, 2, 3, 3)) * 0.5),
        _init("B1", rng.normal(size=4) * 0.1),
        _init("W2", rng.normal(size=(4, 2, 2, 2)) * 0.5),
        _init("B2", rng.normal(size=4) * 0.1),
    ]
    nodes = [
        helper.make_node(
            "Conv", ["x", "W1", "B1"], ["c1"], strides=[2, 2], dilations=[2, 2], pads=[0, 1, 2, 1]
        ),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "W2", "B2"], ["c2"], group=2, pads=[1, 0, 1, 1]),
        helper.make_node("LeakyRelu", ["c2"], ["r2"], alpha=0.1),
        helper.make_node(
            "MaxPool",
            ["r2"],
            ["m"],
            kernel_shape=[2, 3],
            strides=[1, 2],
            pads=[1, 1, 0, 1],
            ceil_mode=1,
        ),
        helper.make_node(
            "AveragePool",
            ["m"],
            ["a"],
            kernel_shape=[2, 2],
            strides=[2, 2],
            pads=[0, 0, 1, 1],
            ceil_mode=1,
            count_include_pad=0,
        ),
        helper.make_node("Flatten", ["a"], ["f"]),
    ]
    # shapes: 2x9x9 -> conv1 4x(ceil)... computed below by onnx shape inference
    tmp_model = helper.make_model(
        helper.make_graph(
            nodes,
            "probe",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 9, 9])],
            [helper.make_tensor_value_info("f", TensorProto.FLOAT, None)],
            initializer=inits,
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    inferred = onnx.shape_inference.infer_shapes(tmp_model)
    (flat,) = [v for v in inferred.graph.output if v.name == "f"]
    width = flat.type.tensor_type.shape.dim[1].dim_value
    inits.append(_init("G", rng.normal(size=(3, width)) / np.sqrt(width)))
    inits.append(_init("g", rng.normal(size=3) * 0.1))
    nodes.append(helper.make_node("Gemm", ["f", "G", "g"], ["logits"], transB=1))
    return _save(tmp / "strided_conv.onnx", nodes, inits, [2, 9, 9], 3)


def input_maxpool_net(tmp: Path, seed: int = 12) -> Path:
    """MaxPool (2x2, stride 2) straight on the input -> Flatten -> Gemm -> Relu -> Gemm:
    a constant image ties every window."""
    rng = np.random.default_rng(seed)
    inits = [
        _init("G1", rng.normal(size=(8, 9)) / 3),
        _init("g1", rng.normal(size=8) * 0.1),
        _init("G2", rng.normal(size=(3, 8)) / np.sqrt(8)),
        _init("g2", rng.normal(size=3) * 0.1),
    ]
    nodes = [
        helper.make_node("MaxPool", ["x"], ["m"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["m"], ["f"]),
        helper.make_node("Gemm", ["f", "G1", "g1"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "G2", "g2"], ["logits"], transB=1),
    ]
    return _save(tmp / "input_maxpool.onnx", nodes, inits, [1, 6, 6], 3)


def residual_net(tmp: Path, seed: int = 13) -> Path:
    """Gemm -> Relu -> Gemm, summed with a skip (Add), Relu, a branch difference (Sub
    of two Relu branches) -> Gemm (4 logits): residual sums of every sign."""
    rng = np.random.default_rng(seed)
    inits = [
        _init("A", rng.normal(size=(6, 5)) / np.sqrt(5)),
        _init("a", rng.normal(size=6) * 0.1),
        _init("B", rng.normal(size=(6, 6)) / np.sqrt(6)),
        _init("b", rng.normal(size=6) * 0.1),
        _init("C", rng.normal(size=(6, 6)) / np.sqrt(6)),
        _init("D", rng.normal(size=(4, 6)) / np.sqrt(6)),
        _init("d", rng.normal(size=4) * 0.1),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "A", "a"], ["h1"], transB=1),
        helper.make_node("Relu", ["h1"], ["r1"]),
        helper.make_node("Gemm", ["r1", "B", "b"], ["h2"], transB=1),
        helper.make_node("Add", ["h2", "h1"], ["s"]),
        helper.make_node("Relu", ["s"], ["r2"]),
        helper.make_node("Gemm", ["r2", "C"], ["h3"], transB=1),
        helper.make_node("Relu", ["h3"], ["r3"]),
        helper.make_node("Sub", ["r3", "r2"], ["t"]),
        helper.make_node("Gemm", ["t", "D", "d"], ["logits"], transB=1),
    ]
    return _save(tmp / "residual.onnx", nodes, inits, [5], 4)


def prelu_steep_net(tmp: Path, seed: int = 14) -> Path:
    """Gemm -> PRelu with slopes above 1 and below 0 (non-convex pieces) -> Gemm ->
    Clip(-1, 1) -> Gemm (3 logits)."""
    rng = np.random.default_rng(seed)
    inits = [
        _init("A", rng.normal(size=(6, 4)) / 2),
        _init("a", rng.normal(size=6) * 0.1),
        _init("S", [2.5, -0.5, 0.3, 1.0, -1.5, 0.0]),
        _init("B", rng.normal(size=(5, 6)) / np.sqrt(6)),
        _init("lo", -1.0),
        _init("hi", 1.0),
        _init("C", rng.normal(size=(3, 5)) / np.sqrt(5)),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "A", "a"], ["h"], transB=1),
        helper.make_node("PRelu", ["h", "S"], ["p"]),
        helper.make_node("Gemm", ["p", "B"], ["k"], transB=1),
        helper.make_node("Clip", ["k", "lo", "hi"], ["c"]),
        helper.make_node("Gemm", ["c", "C"], ["logits"], transB=1),
    ]
    return _save(tmp / "prelu_steep.onnx", nodes, inits, [4], 3)
