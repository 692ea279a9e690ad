"""How much one forward pass of a model costs, estimated from the ONNX file alone."""

from __future__ import annotations

import contextlib
import math

import onnx
from onnx import shape_inference

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def forward_macs(proto: onnx.ModelProto, input_name: str, sample_shape: tuple[int, ...]) -> int:
    """Multiply-adds of one sample's forward pass through the weighted ops (Conv, Gemm,
    MatMul with a constant weight): weight size times the output positions that reuse it.

    Deterministic and cheap (ONNX shape inference at batch 1, no forward pass); ops without
    weights (activations, pooling, additions) are left out: they cost far less.
    """
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
    return int(total)


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
