"""Small ONNX graphs with the less common piecewise-linear layers, built by the tests
that exercise every layer rule (linearisation, bound propagation)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from audit_core.testing import mlp_onnx, random_mlp


def leaky_mlp(tmp_path: Path) -> Path:
    weights, biases = random_mlp([6, 12, 9, 4], seed=3)
    return mlp_onnx(tmp_path / "leaky.onnx", weights, biases, activation="LeakyRelu")


def padded_maxpool_cnn(tmp_path: Path) -> Path:
    """Conv -> Relu -> MaxPool (pads, stride 1, dilation 2) -> Flatten -> Gemm."""
    rng = np.random.default_rng(5)
    inits = [
        numpy_helper.from_array(rng.normal(size=(3, 1, 3, 3)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.normal(size=3).astype(np.float32), "B"),
        numpy_helper.from_array(rng.normal(size=(4, 3 * 6 * 6)).astype(np.float32) * 0.2, "G"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node(
            "MaxPool", ["r"], ["p"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], dilations=[2, 2]
        ),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "G"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 4])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "maxpool.onnx")
    return tmp_path / "maxpool.onnx"


def hardsigmoid_mlp(tmp_path: Path) -> Path:
    weights, biases = random_mlp([6, 12, 9, 4], seed=4)
    return mlp_onnx(tmp_path / "hs.onnx", weights, biases, activation="HardSigmoid")


def prelu_clip_cnn(tmp_path: Path) -> Path:
    """Conv -> PRelu (per channel, one negative slope) -> Clip (ReLU6-like) -> Gemm."""
    rng = np.random.default_rng(6)
    inits = [
        numpy_helper.from_array(rng.normal(size=(3, 1, 3, 3)).astype(np.float32), "W"),
        numpy_helper.from_array(np.array([[[0.2]], [[-0.4]], [[0.0]]], np.float32), "S"),
        numpy_helper.from_array(np.float32(-0.5), "lo"),
        numpy_helper.from_array(np.float32(1.5), "hi"),
        numpy_helper.from_array(rng.normal(size=(4, 3 * 6 * 6)).astype(np.float32) * 0.2, "G"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"]),
        helper.make_node("PRelu", ["c", "S"], ["p"]),
        helper.make_node("Clip", ["p", "lo", "hi"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Gemm", ["f", "G"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 4])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "prelu_clip.onnx")
    return tmp_path / "prelu_clip.onnx"
