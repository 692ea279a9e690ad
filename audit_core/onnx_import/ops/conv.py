"""Convolution and pooling: Conv, MaxPool, AveragePool, GlobalAveragePool, Pad."""

from __future__ import annotations

import math

import numpy as np

from audit_core.layers import AvgPool, Conv, MaxPool, Pad, frozen_array
from audit_core.onnx_import.builder import GraphBuilder
from audit_core.onnx_import.registry import OnnxNode, TensorRef, Unsupported, Value, converter


def _spatial(x: TensorRef, op: str) -> tuple[int, ...]:
    """Spatial dims of a per-sample (C, *spatial) tensor."""
    if not 2 <= len(x.shape) <= 4:
        raise Unsupported(f"{op} on a tensor of per-sample shape {list(x.shape)}")
    return x.shape[1:]


def _pads(
    node: OnnxNode,
    spatial: tuple[int, ...],
    kernel: tuple[int, ...],
    strides: tuple[int, ...],
    dilations: tuple[int, ...],
) -> tuple[int, ...]:
    """Explicit (begin..., end...) pads, resolving ``auto_pad``."""
    auto_pad = node.attr("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("NOTSET", ""):
        return tuple(node.attr("pads", [0] * (2 * len(spatial))))
    if auto_pad == "VALID":
        return (0,) * (2 * len(spatial))
    begins, ends = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations, strict=True):
        out = math.ceil(size / s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else large)
        ends.append(large if auto_pad == "SAME_UPPER" else small)
    return tuple(begins + ends)


@converter("Conv")
def conv(node: OnnxNode, builder: GraphBuilder) -> list[Value]:
    x = node.tensor(0)
    weight = node.constant(1)
    bias = node.constant(2)
    spatial = _spatial(x, "Conv")
    kernel = tuple(node.attr("kernel_shape", weight.shape[2:]))
    strides = tuple(node.attr("strides", [1] * len(spatial)))
    dilations = tuple(node.attr("dilations", [1] * len(spatial)))
    layer = Conv(
        weight=frozen_array(weight),
        bias=None if bias is None else frozen_array(bias),
        strides=strides,
        pads=_pads(node, spatial, kernel, strides, dilations),
        dilations=dilations,
        groups=int(node.attr("group", 1)),
    )
    return [builder.add(layer, (x,), node.name, node.outputs[0])]


@converter("MaxPool")
def max_pool(node: OnnxNode, builder: GraphBuilder) -> list[Value]:
    if len(node.outputs) > 1 and node.outputs[1]:
        raise Unsupported("MaxPool with an Indices output")
    x = node.tensor(0)
    spatial = _spatial(x, "MaxPool")
    kernel = tuple(node.attr("kernel_shape"))
    strides = tuple(node.attr("strides", [1] * len(spatial)))
    dilations = tuple(node.attr("dilations", [1] * len(spatial)))
    layer = MaxPool(
        kernel=kernel,
        strides=strides,
        pads=_pads(node, spatial, kernel, strides, dilations),
        dilations=dilations,
        ceil_mode=bool(node.attr("ceil_mode", 0)),
    )
    return [builder.add(layer, (x,), node.name, node.outputs[0])]


@converter("AveragePool")
def average_pool(node: OnnxNode, builder: GraphBuilder) -> list[Value]:
    x = node.tensor(0)
    spatial = _spatial(x, "AveragePool")
    kernel = tuple(node.attr("kernel_shape"))
    strides = tuple(node.attr("strides", [1] * len(spatial)))
    dilations = tuple(node.attr("dilations", [1] * len(spatial)))
    if any(d != 1 for d in dilations):
        raise Unsupported("AveragePool with dilations")
    layer = AvgPool(
        kernel=kernel,
        strides=strides,
        pads=_pads(node, spatial, kernel, strides, dilations),
        count_include_pad=bool(node.attr("count_include_pad", 0)),
        ceil_mode=bool(node.attr("ceil_mode", 0)),
    )
    return [builder.add(layer, (x,), node.name, node.outputs[0])]


@converter("GlobalAveragePool")
def global_average_pool(node: OnnxNode, builder: GraphBuilder) -> list[Value]:
    x = node.tensor(0)
    spatial = _spatial(x, "GlobalAveragePool")
    layer = AvgPool(kernel=spatial, strides=(1,) * len(spatial), pads=(0,) * (2 * len(spatial)))
    return [builder.add(layer, (x,), node.name, node.outputs[0])]


@converter("Pad", opsets=(1, 10))
def pad_attribute(node: OnnxNode, builder: GraphBuilder) -> list[Value]:
    pads = np.asarray(node.attr("pads", node.attr("paddings", [])), dtype=np.int64)
    return [_pad(node, builder, pads, float(node.attr("value", 0.0)))]


@converter("Pad", opsets=(11, 10_000))
def pad_input(node: OnnxNode, builder: GraphBuilder) -> list[Value]:
    pads = node.constant(1).astype(np.int64)
    value = node.constant(2, np.zeros(()))
    axes = node.constant(3)
    if axes is not None:
        rank = len(builder.full_shape(node.tensor(0)))
        full = np.zeros(2 * rank, dtype=np.int64)
        for i, axis in enumerate(np.asarray(axes) % rank):
            full[axis], full[axis + rank] = pads[i], pads[i + len(axes)]
        pads = full
    return [
        _pad(node, builder, pads, float(np.asarray(value).reshape(-1)[0]) if value.size else 0.0)
    ]


def _pad(node: OnnxNode, builder: GraphBuilder, pads: np.ndarray, value: float) -> Value:
    x = node.tensor(0)
    mode = node.attr("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "constant":
        raise Unsupported(f"Pad with mode={mode}")
    if np.any(pads < 0):
        raise Unsupported("Pad with negative pads (cropping)")
    rank = len(pads) // 2
    begins, ends = list(pads[:rank]), list(pads[rank:])
    if builder.has_batch:
        if begins[0] or ends[0]:
            raise Unsupported("Pad of the batch axis")
        begins, ends = begins[1:], ends[1:]
    if not any(begins) and not any(ends):
        return x
    layer = Pad(pads=tuple(int(p) for p in begins + ends), value=value)
    return builder.add(layer, (x,), node.name, node.outputs[0])
