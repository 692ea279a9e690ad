"""Shape ops: Flatten, Reshape, Transpose, Squeeze, Unsqueeze, Identity, Dropout, Constant, Shape.

Shapes are computed on the ONNX shape with a batch size of 1 and then the
batch axis is dropped, so every opset's conventions (negative axes, 0 and -1 in
Reshape) are handled in one place.
"""

from __future__ import annotations

import numpy as np
from onnx import numpy_helper

from audit_core.layers import Reshape, Transpose
from audit_core.onnx_import.builder import GraphBuilder
from audit_core.onnx_import.registry import (
    OnnxNode,
    TensorRef,
    TrainingMode,
    Unsupported,
    Value,
    converter,
)


def _reshape(node: OnnxNode, builder: GraphBuilder, x: TensorRef, full: tuple[int, ...]) -> Value:
    shape = builder.per_sample_shape(full, node.op_type)
    if int(np.prod(shape)) != int(np.prod(x.shape)):
        raise Unsupported(f"{node.op_type} to {list(full)} changes the number of elements")
    if shape == x.shape:
        return x
    return builder.add(Reshape(shape=shape), (x,), node.name, node.outputs[0])


@converter("Flatten")
def flatten(node: OnnxNode, builder: GraphBuilder) -> list[Value]:
    x = node.tensor(0)
    full = builder.full_shape(x)
    axis = int(node.attr("axis", 1))
    axis = axis + len(full) if axis < 0 else axis
    out = (int(np.prod(full[:axis])), int(np.prod(full[axis:])))
    return [_reshape(node, builder, x, out)]


@converter("Reshape", opsets=(1, 4))
def reshape_attribute(node: OnnxNode, builder: GraphBuilder) -> list[Value]:
    return [_reshape_to(node, builder, np.asarray(node.attr("shape"), dtype=np.int64))]


@converter("Reshape", opsets=(5, 10_000))
def reshape_input(node: OnnxNode, builder: GraphBuilder) -> list[Value]:
    return [_reshape_to(node, builder, node.constant(1).astype(np.int64))]


def _reshape_to(node: OnnxNode, builder: GraphBuilder, target: np.ndarray) -> Value:
    x = node.tensor(0)
    full = builder.full_shape(x)
    dims = list(int(d) for d in target.reshape(-1))
    if not node.attr("allowzero", 0):
        dims = [full[i] if d == 0 else d for i, d in enumerate(dims)]
    if dims.count(-1) > 1:
        raise Unsupported("Reshape with more than one -1")
    if -1 in dims:
        known = int(np.prod([d for d in dims if d != -1]))
        dims[dims.index(-1)] = int(np.prod(full)) // max(known, 1)
    return _reshape(node, builder, x, tuple(dims))


@converter("Transpose")
def transpose(node: OnnxNode, builder: GraphBuilder) -> list[Value]:
    x = node.tensor(0)
    rank = len(builder.full_shape(x))
    perm = [int(p) for p in node.attr("perm", list(range(rank))[::-1])]
    if builder.has_batch:
        if perm[0] != 0:
            raise Unsupported("Transpose that moves the batch axis")
        perm = [p - 1 for p in perm[1:]]
    if perm == sorted(perm):
        return [x]
    return [builder.add(Transpose(perm=tuple(perm)), (x,), node.name, node.outputs[0])]


@converter("Squeeze", "Unsqueeze", opsets=(1, 12))
def squeeze_attribute(node: OnnxNode, builder: GraphBuilder) -> list[Value]:
    return [_squeeze(node, builder, node.attr("axes"))]


@converter("Squeeze", "Unsqueeze", opsets=(13, 10_000))
def squeeze_input(node: OnnxNode, builder: GraphBuilder) -> list[Value]:
    axes = node.constant(1)
    return [_squeeze(node, builder, None if axes is None else list(axes.reshape(-1)))]


def _squeeze(node: OnnxNode, builder: GraphBuilder, axes: list[int] | None) -> Value:
    x = node.tensor(0)
    full = list(builder.full_shape(x))
    if node.op_type == "Squeeze":
        rank = len(full)
        drop = {a % rank for a in axes} if axes else {i for i, d in enumerate(full) if d == 1}
        out = [d for i, d in enumerate(full) if i not in drop]
    else:
        rank = len(full) + len(axes)
        out = list(full)
        for axis in sorted(a % rank for a in axes):
            out.insert(axis, 1)
    return _reshape(node, builder, x, tuple(out))


@converter("Identity", "Dropout")
def identity(node: OnnxNode, builder: GraphBuilder) -> list[Value]:
    """Inference-mode Dropout is the identity; its mask output is not supported."""
    if node.op_type == "Dropout" and len(node.outputs) > 1 and node.outputs[1]:
        raise Unsupported("Dropout with a mask output")
    if node.op_type == "Dropout" and np.any(node.constant(2, np.zeros(()))):
        raise TrainingMode("Dropout in training mode")
    value = node.inputs[0]
    if value is None:
        raise Unsupported(f"{node.op_type} without input")
    return [value]


@converter("Constant")
def constant(node: OnnxNode, builder: GraphBuilder) -> list[Value]:
    for name in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if name in node.attrs:
            value = node.attrs[name]
            array = numpy_helper.to_array(value) if hasattr(value, "data_type") else value
            return [np.asarray(array)]
    raise Unsupported("Constant with a sparse or string value")


@converter("Shape")
def shape(node: OnnxNode, builder: GraphBuilder) -> list[Value]:
    """The (static) ONNX shape of a runtime tensor, as a constant."""
    full = np.asarray(builder.full_shape(node.tensor(0)), dtype=np.int64)
    start, end = node.attr("start", 0), node.attr("end", None)
    return [full[start:end]]
