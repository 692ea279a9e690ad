"""Affine layers: dense, convolution, elementwise scale and shift, branch sums, padding,
average pooling and the shape-only ops. Each holds its forward pass, linear part,
absolute linear part (interval bounds), adjoint (backward bound propagation) and, where
it can absorb a following elementwise scale and shift, its fold rule."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from audit_core.layers.base import (
    AffineLayer,
    Layer,
    Tensor,
    ceil_mode_keep,
    crop_spatial,
    frozen_array,
    pad_spatial,
)


@dataclass(frozen=True, eq=False)
class Dense(AffineLayer):
    """``y = x W^T + b`` on the last axis; ``weight`` is ``(out, in)``."""

    weight: np.ndarray = field(default_factory=lambda: frozen_array(np.zeros((0, 0))))
    bias: np.ndarray | None = None

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.tensor("bias", x)
        return F.linear(x, self.tensor("weight", x), bias)

    def linear(self, t: Tensor) -> Tensor:
        return F.linear(t, self.tensor("weight", t))

    def abs_linear(self, t: Tensor) -> Tensor:
        return F.linear(t, self.tensor("weight", t).abs())

    def adjoint(self, cotangent: Tensor, input_shapes: Sequence[tuple[int, ...]]) -> list[Tensor]:
        return [cotangent @ self.tensor("weight", cotangent)]

    def fold(self, affine: ElementwiseAffine, shape: tuple[int, ...]) -> Layer | None:
        """This layer followed by ``affine`` as one layer (per-output-feature scale only)."""
        return _fold_into(self, affine, shape, channel_axis=len(shape) - 1)

    def parameter_count(self) -> int:
        return int(self.weight.size + (0 if self.bias is None else self.bias.size))

    def describe(self) -> str:
        return f"Dense {self.weight.shape[1]}->{self.weight.shape[0]}"


@dataclass(frozen=True, eq=False)
class Conv(AffineLayer):
    """N-d convolution (1-3 spatial dims). ``pads`` = (begin..., end...) as in ONNX."""

    weight: np.ndarray = field(default_factory=lambda: frozen_array(np.zeros((0, 0, 0))))
    bias: np.ndarray | None = None
    strides: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()
    dilations: tuple[int, ...] = ()
    groups: int = 1

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.tensor("bias", x)
        return self._conv(x, self.tensor("weight", x), bias)

    def linear(self, t: Tensor) -> Tensor:
        return self._conv(t, self.tensor("weight", t), None)

    def abs_linear(self, t: Tensor) -> Tensor:
        return self._conv(t, self.tensor("weight", t).abs(), None)

    def adjoint(self, cotangent: Tensor, input_shapes: Sequence[tuple[int, ...]]) -> list[Tensor]:
        (shape,) = input_shapes
        spatial = len(shape) - 1
        half = len(self.pads) // 2
        grown = [
            n + (self.pads[i] + self.pads[half + i] if self.pads else 0)
            for i, n in enumerate(shape[1:])
        ]
        padded = (cotangent.shape[0], shape[0], *grown)
        grad_input = (
            torch.nn.grad.conv1d_input,
            torch.nn.grad.conv2d_input,
            torch.nn.grad.conv3d_input,
        )[spatial - 1]
        weight = self.tensor("weight", cotangent)
        full = grad_input(padded, weight, cotangent, self.strides, 0, self.dilations, self.groups)
        return [crop_spatial(full, self.pads)]

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        conv = (F.conv1d, F.conv2d, F.conv3d)[self.weight.ndim - 3]
        x = pad_spatial(x, self.pads, 0.0)
        return conv(x, weight, bias, self.strides, 0, self.dilations, self.groups)

    def fold(self, affine: ElementwiseAffine, shape: tuple[int, ...]) -> Layer | None:
        """This layer followed by ``affine`` as one layer (per-channel scale only)."""
        return _fold_into(self, affine, shape, channel_axis=0)

    def parameter_count(self) -> int:
        return int(self.weight.size + (0 if self.bias is None else self.bias.size))

    def describe(self) -> str:
        out_ch, in_ch = self.weight.shape[:2]
        kernel = "x".join(str(k) for k in self.weight.shape[2:])
        return f"Conv {in_ch * self.groups}->{out_ch} k{kernel} s{list(self.strides)}"


@dataclass(frozen=True, eq=False)
class ElementwiseAffine(AffineLayer):
    """``y = x * scale + shift`` with per-sample broadcastable ``scale``/``shift``.

    Sub/Div/Mul/Add by constants and unfolded BatchNormalization become this.
    """

    scale: np.ndarray = field(default_factory=lambda: frozen_array(1.0))
    shift: np.ndarray = field(default_factory=lambda: frozen_array(0.0))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.tensor("scale", x) + self.tensor("shift", x)

    def linear(self, t: Tensor) -> Tensor:
        """The linear part, broadcast to the output's shape: a ``shift`` wider than the
        input (``Add([N,1], const[1,16])``) copies each coordinate, as ``forward`` does."""
        return self._broadcast(t * self.tensor("scale", t))

    def abs_linear(self, t: Tensor) -> Tensor:
        return self._broadcast(t * self.tensor("scale", t).abs())

    def _broadcast(self, out: Tensor) -> Tensor:
        shape = torch.broadcast_shapes(out.shape, self.tensor("shift", out).shape)
        return out if shape == out.shape else out.expand(shape).contiguous()

    def fold(self, affine: ElementwiseAffine, shape: tuple[int, ...]) -> Layer | None:
        """Two scale-and-shift layers in a row as one."""
        return ElementwiseAffine(
            scale=frozen_array(self.scale * affine.scale),
            shift=frozen_array(self.shift * affine.scale + affine.shift),
        )

    def parameter_count(self) -> int:
        return int(self.scale.size + self.shift.size)

    def describe(self) -> str:
        return "Scale+Shift"


@dataclass(frozen=True, eq=False)
class Sum(AffineLayer):
    """``y = sum_i c_i x_i`` of several branches (residual Add, Sub of two branches)."""

    coefficients: tuple[float, ...] = (1.0, 1.0)

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.linear(*inputs)

    def linear(self, *tangents: Tensor) -> Tensor:
        total = tangents[0] * self.coefficients[0]
        for c, t in zip(self.coefficients[1:], tangents[1:], strict=True):
            total = total + c * t
        return total

    def abs_linear(self, *tangents: Tensor) -> Tensor:
        total = tangents[0] * abs(self.coefficients[0])
        for c, t in zip(self.coefficients[1:], tangents[1:], strict=True):
            total = total + abs(c) * t
        return total

    def adjoint(self, cotangent: Tensor, input_shapes: Sequence[tuple[int, ...]]) -> list[Tensor]:
        return [
            _sum_to(c * cotangent, shape)
            for c, shape in zip(self.coefficients, input_shapes, strict=True)
        ]

    def describe(self) -> str:
        return f"Sum of {len(self.coefficients)} branches"


def _sum_to(t: Tensor, shape: tuple[int, ...]) -> Tensor:
    """``t`` (``(M, *out)``) summed over the axes a branch of ``shape`` was broadcast on."""
    if tuple(t.shape[1:]) == tuple(shape):
        return t
    padded = (1,) * (t.dim() - 1 - len(shape)) + tuple(shape)
    axes = [i + 1 for i, n in enumerate(padded) if n == 1 and t.shape[i + 1] != 1]
    out = t.sum(dim=axes, keepdim=True) if axes else t
    return out.reshape(t.shape[0], *shape)


@dataclass(frozen=True, eq=False)
class Pad(AffineLayer):
    """Constant padding of the spatial axes; ``pads`` = (begin..., end...)."""

    pads: tuple[int, ...] = ()
    value: float = 0.0

    def forward(self, x: Tensor) -> Tensor:
        return pad_spatial(x, self.pads, self.value)

    def linear(self, t: Tensor) -> Tensor:
        return pad_spatial(t, self.pads, 0.0)

    def abs_linear(self, t: Tensor) -> Tensor:
        return self.linear(t)

    def adjoint(self, cotangent: Tensor, input_shapes: Sequence[tuple[int, ...]]) -> list[Tensor]:
        return [crop_spatial(cotangent, self.pads)]


@dataclass(frozen=True, eq=False)
class AvgPool(AffineLayer):
    """Average pooling over 1-3 spatial axes; ``pads`` = (begin..., end...)."""

    kernel: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()
    count_include_pad: bool = False
    ceil_mode: bool = False

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)

    def linear(self, t: Tensor) -> Tensor:
        pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[len(self.kernel) - 1]
        keep = ceil_mode_keep(t, self.strides, self.pads) if self.ceil_mode else ...
        if not any(self.pads):
            return pool(t, self.kernel, self.strides, 0, self.ceil_mode)[keep]
        sums = pool(pad_spatial(t, self.pads, 0.0), self.kernel, self.strides, 0, self.ceil_mode)
        if self.count_include_pad:
            return sums[keep]
        ones = torch.ones((1, 1, *t.shape[2:]), dtype=t.dtype, device=t.device)
        counts = pool(
            pad_spatial(ones, self.pads, 0.0), self.kernel, self.strides, 0, self.ceil_mode
        )
        return (sums / counts)[keep]

    def abs_linear(self, t: Tensor) -> Tensor:
        return self.linear(t)  # averaging weights are nonnegative

    def describe(self) -> str:
        return f"AvgPool k{list(self.kernel)} s{list(self.strides)}"


@dataclass(frozen=True, eq=False)
class Reshape(AffineLayer):
    """Per-sample reshape (Flatten, Reshape, Squeeze, Unsqueeze)."""

    shape: tuple[int, ...] = ()

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def linear(self, t: Tensor) -> Tensor:
        return self.forward(t)

    def abs_linear(self, t: Tensor) -> Tensor:
        return self.forward(t)

    def adjoint(self, cotangent: Tensor, input_shapes: Sequence[tuple[int, ...]]) -> list[Tensor]:
        return [cotangent.reshape(cotangent.shape[0], *input_shapes[0])]

    def describe(self) -> str:
        return f"Reshape{list(self.shape)}"


@dataclass(frozen=True, eq=False)
class Transpose(AffineLayer):
    """Per-sample axis permutation ``perm`` (batch axis excluded)."""

    perm: tuple[int, ...] = ()

    def forward(self, x: Tensor) -> Tensor:
        return x.permute(0, *(p + 1 for p in self.perm))

    def linear(self, t: Tensor) -> Tensor:
        return self.forward(t)

    def abs_linear(self, t: Tensor) -> Tensor:
        return self.forward(t)

    def adjoint(self, cotangent: Tensor, input_shapes: Sequence[tuple[int, ...]]) -> list[Tensor]:
        inverse = np.argsort(self.perm)
        return [cotangent.permute(0, *(int(p) + 1 for p in inverse))]


def _fold_into(
    layer: Dense | Conv, affine: ElementwiseAffine, shape: tuple[int, ...], channel_axis: int
) -> Dense | Conv | None:
    scale = _per_channel(affine.scale, shape, channel_axis)
    shift = _per_channel(affine.shift, shape, channel_axis)
    if scale is None or shift is None:
        return None
    weight_shape = (-1,) + (1,) * (layer.weight.ndim - 1)
    bias = np.zeros(len(scale)) if layer.bias is None else layer.bias
    return replace(
        layer,
        weight=frozen_array(layer.weight * scale.reshape(weight_shape)),
        bias=frozen_array(bias * scale + shift),
    )


def _per_channel(
    values: np.ndarray, shape: tuple[int, ...], channel_axis: int
) -> np.ndarray | None:
    """``values`` broadcast to ``shape`` as one number per channel, or None if it varies."""
    full = np.broadcast_to(values, shape)
    moved = np.moveaxis(full, channel_axis, 0).reshape(shape[channel_axis], -1)
    if not np.all(moved == moved[:, :1]):
        return None
    return moved[:, 0].copy()
