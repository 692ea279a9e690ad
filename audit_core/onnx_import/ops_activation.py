"""Activations: Relu, LeakyRelu (piecewise linear); Sigmoid, Tanh, Softmax, LogSoftmax."""

from __future__ import annotations

from audit_core.layers import LeakyRelu, Relu, Sigmoid, Softmax, Tanh
from audit_core.onnx_import.builder import GraphBuilder
from audit_core.onnx_import.registry import OnnxNode, Unsupported, Value, converter


@converter("Relu")
def relu(node: OnnxNode, builder: GraphBuilder) -> list[Value]:
    return [builder.add(Relu(), (node.tensor(0),), node.name, node.outputs[0])]


@converter("LeakyRelu")
def leaky_relu(node: OnnxNode, builder: GraphBuilder) -> list[Value]:
    layer = LeakyRelu(alpha=float(node.attr("alpha", 0.01)))
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
