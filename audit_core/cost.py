"""What one forward pass of a model costs, estimated from the ONNX file alone."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import onnx
from onnx import shape_inference

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class ForwardCost:
    """One sample's forward pass: multiply-adds of the weighted ops and the values of
    every intermediate tensor (what a backward pass keeps alive, at most)."""

    macs: int
    activation_values: int


def forward_cost(
    proto: onnx.ModelProto, input_name: str, sample_shape: tuple[int, ...]
) -> ForwardCost:
    """Multiply-adds of the weighted ops (Conv, Gemm, MatMul with a constant weight:
    weight size times the output positions that reuse it) and the total size of the
    intermediate tensors, per sample.

    Deterministic and cheap (ONNX shape inference at batch 1, no forward pass); ops without
    weights (activations, pooling, additions) cost no multiply-adds here: they cost far less.
    Tensors whose shape inference cannot fix are left out of ``activation_values``.
    """
    model = _inferred(proto, input_name, sample_shape)
    shapes = _shapes(model)
    sizes = {i.name: math.prod(i.dims) for i in model.graph.initializer}
    total = 0
    for node in model.graph.node:
        if node.op_type not in WEIGHTED_OPS or len(node.input) < 2:
            continue
        weight = sizes.get(node.input[1])
        out = shapes.get(node.output[0])
        if weight is None or out is None:
            continue
        total += weight * _reuse(node.op_type, out)
    activations = sum(math.prod(shape) for shape in shapes.values())
    return ForwardCost(int(total), int(activations))


def _inferred(
    proto: onnx.ModelProto, input_name: str, sample_shape: tuple[int, ...]
) -> onnx.ModelProto:
    """A copy of ``proto`` with the input fixed at batch 1 and inferred shapes."""
    model = onnx.ModelProto.FromString(proto.SerializeToString())
    for value in model.graph.input:
        if value.name == input_name:
            dims = value.type.tensor_type.shape.dim
            full = (1, *sample_shape) if len(dims) == len(sample_shape) + 1 else sample_shape
            for dim, size in zip(dims, full, strict=False):
                dim.Clear()
                dim.dim_value = int(size)
    with contextlib.suppress(Exception):  # shape inference raises many types: estimate without
        model = shape_inference.infer_shapes(model)
    return model


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    found = {}
    for value in (*model.graph.value_info, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            found[value.name] = tuple(int(d.dim_value) for d in dims)
    return found


def _reuse(op_type: str, out: tuple[int, ...]) -> int:
    """How many output positions apply each weight once (spatial size; rows of a MatMul)."""
    if op_type.startswith("Conv"):
        return math.prod(out[2:]) if len(out) > 2 else 1
    return math.prod(out[:-1]) if len(out) > 1 else 1
