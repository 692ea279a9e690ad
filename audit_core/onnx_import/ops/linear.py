"""Affine ops: Gemm, MatMul, Add, Sub, Mul, Div, BatchNormalization."""

from __future__ import annotations

import numpy as np

from audit_core.layers import Dense, ElementwiseAffine, Reshape, Sum, frozen_array
from audit_core.onnx_import.builder import GraphBuilder
from audit_core.onnx_import.registry import (
    OnnxNode,
    TensorRef,
    TrainingMode,
    Unsupported,
    Value,
    converter,
)


@converter("Gemm")
def gemm(node: OnnxNode, builder: GraphBuilder) -> list[Value]:
    """``Y = alpha * A' B' + beta * C`` with A the runtime tensor."""
    a = node.tensor(0)
    b = node.constant(1)
    if node.attr("transA", 0):
        raise Unsupported("Gemm with transA=1 on a runtime tensor")
    if len(a.shape) != (1 if builder.has_batch else 2):
        raise Unsupported(f"Gemm input of per-sample shape {list(a.shape)}")
    b_matrix = b.T if node.attr("transB", 0) else b
    weight = node.attr("alpha", 1.0) * b_matrix.T
    c = node.constant(2)
    bias = None
    if c is not None:
        bias = frozen_array(node.attr("beta", 1.0) * np.broadcast_to(c, (1, weight.shape[0]))[0])
    layer = Dense(weight=frozen_array(weight), bias=bias)
    return [builder.add(layer, (a,), node.name, node.outputs[0])]


@converter("MatMul")
def matmul(node: OnnxNode, builder: GraphBuilder) -> list[Value]:
    """``x @ W`` (on the last axis) or ``W @ x`` for a per-sample vector ``x``."""
    left, right = node.inputs[0], node.inputs[1]
    if isinstance(left, TensorRef) and not isinstance(right, TensorRef):
        return [_matmul_right(node, builder, left, right)]
    if isinstance(right, TensorRef) and not isinstance(left, TensorRef):
        if len(builder.full_shape(right)) != 1 or left.ndim != 2:
            raise Unsupported("MatMul of a constant matrix with a runtime tensor of rank > 1")
        layer = Dense(weight=frozen_array(left), bias=None)
        return [builder.add(layer, (right,), node.name, node.outputs[0])]
    raise Unsupported("MatMul of two runtime tensors (not affine)")


def _matmul_right(
    node: OnnxNode, builder: GraphBuilder, x: TensorRef, weight: np.ndarray
) -> TensorRef:
    if weight.ndim == 1:
        dense = builder.add(Dense(weight=frozen_array(weight[None, :])), (x,), node.name)
        layer = Reshape(shape=dense.shape[:-1])
        return builder.add(layer, (dense,), node.name + "/squeeze", node.outputs[0])
    if weight.ndim != 2:
        raise Unsupported(f"batched MatMul with a constant of rank {weight.ndim}")
    layer = Dense(weight=frozen_array(weight.T), bias=None)
    return builder.add(layer, (x,), node.name, node.outputs[0])


@converter("Add", "Sub")
def add_sub(node: OnnxNode, builder: GraphBuilder) -> list[Value]:
    """Add/Sub of a constant (a shift) or of two branches (a ``Sum``)."""
    left, right = node.inputs[0], node.inputs[1]
    sign = -1.0 if node.op_type == "Sub" else 1.0
    if isinstance(left, TensorRef) and isinstance(right, TensorRef):
        if left.shape != right.shape:
            raise Unsupported(f"{node.op_type} of branches with shapes {left.shape}, {right.shape}")
        layer = Sum(coefficients=(1.0, sign))
        return [builder.add(layer, (left, right), node.name, node.outputs[0])]
    if isinstance(left, TensorRef):
        shift = sign * builder.per_sample_constant(right, left)
        return [_elementwise(node, builder, left, 1.0, shift)]
    shift = builder.per_sample_constant(left, right)
    return [_elementwise(node, builder, right, sign, shift)]


@converter("Mul", "Div")
def mul_div(node: OnnxNode, builder: GraphBuilder) -> list[Value]:
    """Multiplication by a constant, or division of a tensor by a constant."""
    left, right = node.inputs[0], node.inputs[1]
    if isinstance(left, TensorRef) and isinstance(right, TensorRef):
        raise Unsupported(f"{node.op_type} of two runtime tensors (not affine)")
    if node.op_type == "Div":
        if not isinstance(left, TensorRef):
            raise Unsupported("Div of a constant by a runtime tensor (not affine)")
        scale = 1.0 / builder.per_sample_constant(right, left)
        return [_elementwise(node, builder, left, scale, 0.0)]
    tensor, constant = (left, right) if isinstance(left, TensorRef) else (right, left)
    scale = builder.per_sample_constant(constant, tensor)
    return [_elementwise(node, builder, tensor, scale, 0.0)]


@converter("BatchNormalization")
def batch_norm(node: OnnxNode, builder: GraphBuilder) -> list[Value]:
    """Inference-mode BatchNormalization as a per-channel scale and shift.

    It is folded into the preceding Conv/Gemm by ``fuse_affine`` when possible.
    """
    x = node.tensor(0)
    if node.attr("training_mode", 0) or (len(node.outputs) > 1 and any(node.outputs[1:])):
        raise TrainingMode("BatchNormalization in training mode")
    if node.attr("spatial", 1) != 1:
        raise Unsupported("BatchNormalization with spatial=0")
    gamma, beta, mean, var = (node.constant(i) for i in range(1, 5))
    scale = gamma / np.sqrt(var + node.attr("epsilon", 1e-5))
    shift = beta - mean * scale
    channel_shape = (-1,) + (1,) * (len(x.shape) - 1)
    return [
        _elementwise(node, builder, x, scale.reshape(channel_shape), shift.reshape(channel_shape))
    ]


def _elementwise(
    node: OnnxNode,
    builder: GraphBuilder,
    x: TensorRef,
    scale: np.ndarray | float,
    shift: np.ndarray | float,
) -> TensorRef:
    layer = ElementwiseAffine(scale=frozen_array(scale), shift=frozen_array(shift))
    return builder.add(layer, (x,), node.name, node.outputs[0])
