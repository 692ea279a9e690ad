"""Activations: Relu, LeakyRelu, PRelu, Clip, HardSigmoid (piecewise linear); Sigmoid,
Tanh, Softmax, LogSoftmax."""

from __future__ import annotations

import math

import numpy as np

from audit_core.layers import (
    Clip,
    HardSigmoid,
    LeakyRelu,
    PRelu,
    Relu,
    Sigmoid,
    Softmax,
    Tanh,
    frozen_array,
)
from audit_core.onnx_import.builder import GraphBuilder
from audit_core.onnx_import.registry import OnnxNode, Unsupported, Value, converter


@converter("Relu")
def relu(node: OnnxNode, builder: GraphBuilder) -> list[Value]:
    return [builder.add(Relu(), (node.tensor(0),), node.name, node.outputs[0])]


@converter("LeakyRelu")
def leaky_relu(node: OnnxNode, builder: GraphBuilder) -> list[Value]:
    layer = LeakyRelu(alpha=float(node.attr("alpha", 0.01)))
    return [builder.add(layer, (node.tensor(0),), node.name, node.outputs[0])]


@converter("PRelu")
def prelu(node: OnnxNode, builder: GraphBuilder) -> list[Value]:
    """``x if x >= 0 else slope * x``; ``slope`` a constant broadcastable to x."""
    x = node.tensor(0)
    slope = builder.per_sample_constant(node.constant(1), x)
    try:
        np.broadcast_shapes(slope.shape, x.shape)
    except ValueError:
        raise Unsupported(f"PRelu slope of shape {list(slope.shape)} for {list(x.shape)}") from None
    if np.broadcast_shapes(slope.shape, x.shape) != x.shape:
        raise Unsupported(f"PRelu slope of shape {list(slope.shape)} widens the input")
    layer = PRelu(slope=frozen_array(slope))
    return [builder.add(layer, (x,), node.name, node.outputs[0])]


@converter("Clip", opsets=(1, 10))
def clip_attributes(node: OnnxNode, builder: GraphBuilder) -> list[Value]:
    """Clip with ``min``/``max`` attributes (opset < 11)."""
    low = float(node.attr("min", -math.inf))
    high = float(node.attr("max", math.inf))
    return _clip(node, builder, low, high)


@converter("Clip", opsets=(11, 10_000))
def clip_inputs(node: OnnxNode, builder: GraphBuilder) -> list[Value]:
    """Clip with optional constant ``min`` and ``max`` inputs (opset >= 11)."""
    low, high = node.constant(1), node.constant(2)
    for bound in (low, high):
        if bound is not None and bound.size != 1:
            raise Unsupported(f"Clip with a bound of shape {list(bound.shape)} (not a scalar)")
    low_value = -math.inf if low is None else float(low.reshape(()))
    high_value = math.inf if high is None else float(high.reshape(()))
    return _clip(node, builder, low_value, high_value)


def _clip(node: OnnxNode, builder: GraphBuilder, low: float, high: float) -> list[Value]:
    x = node.tensor(0)
    if low > high:
        raise Unsupported(f"Clip with min {low:g} above max {high:g}")
    if not (math.isfinite(low) or math.isfinite(high)):
        return [x]  # no bound: the identity
    return [builder.add(Clip(low=low, high=high), (x,), node.name, node.outputs[0])]


@converter("HardSigmoid")
def hard_sigmoid(node: OnnxNode, builder: GraphBuilder) -> list[Value]:
    alpha, beta = float(node.attr("alpha", 0.2)), float(node.attr("beta", 0.5))
    if alpha == 0:
        raise Unsupported("HardSigmoid with alpha 0 (a constant)")
    layer = HardSigmoid(alpha=alpha, beta=beta)
    return [builder.add(layer, (node.tensor(0),), node.name, node.outputs[0])]


@converter("Sigmoid")
def sigmoid(node: OnnxNode, builder: GraphBuilder) -> list[Value]:
    return [builder.add(Sigmoid(), (node.tensor(0),), node.name, node.outputs[0])]


@converter("Tanh")
def tanh(node: OnnxNode, builder: GraphBuilder) -> list[Value]:
    return [builder.add(Tanh(), (node.tensor(0),), node.name, node.outputs[0])]


@converter("Softmax", "LogSoftmax")
def softmax(node: OnnxNode, builder: GraphBuilder) -> list[Value]:
    """Softmax over the class axis; accepted only as the model's last op (see ``loader``)."""
    x = node.tensor(0)
    default_axis = 1 if node.opset < 13 else -1
    axis = builder.per_sample_axis(int(node.attr("axis", default_axis)), x, node.op_type)
    if node.opset < 13 and axis != len(x.shape) - 1:
        raise Unsupported(f"{node.op_type} (opset < 13) that does not act on the last axis")
    layer = Softmax(axis=axis, log=node.op_type == "LogSoftmax")
    return [builder.add(layer, (x,), node.name, node.outputs[0])]
