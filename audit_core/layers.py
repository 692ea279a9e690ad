"""Typed, immutable layers of a ``LayerGraph``.

Every layer works on batched torch tensors ``(N, *shape)`` and keeps its weights
as read-only float64 numpy arrays. Affine layers also expose ``linear``, their
linear part without the offset: pushing a batch of tangent vectors through
``linear`` is how the local linearisation builds Jacobians (no Toeplitz
matrices are ever materialised by hand).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

Tensor = torch.Tensor


class LayerKind(enum.Enum):
    """What a layer does geometrically."""

    INPUT = "input"
    AFFINE = "affine"
    PIECEWISE_LINEAR = "piecewise_linear"
    NONLINEAR = "nonlinear"


def frozen_array(values: np.ndarray | float) -> np.ndarray:
    """A read-only float64 copy."""
    array = np.array(values, dtype=np.float64)
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class Layer:
    """Base class. Subclasses set ``kind`` and implement ``forward``."""

    kind: ClassVar[LayerKind]
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def op(self) -> str:
        return type(self).__name__

    def forward(self, *inputs: Tensor) -> Tensor:
        raise NotImplementedError

    def linear(self, *tangents: Tensor) -> Tensor:
        """The linear part (affine layers only): ``forward`` without the offset."""
        raise TypeError(f"{self.op} is not affine")

    def parameter_count(self) -> int:
        return 0

    def describe(self) -> str:
        return self.op

    def _tensor(self, name: str, like: Tensor) -> Tensor:
        """A weight as a tensor of ``like``'s dtype and device (cached)."""
        key = (name, like.dtype, like.device)
        if key not in self._cache:
            array = np.array(getattr(self, name))  # writable copy for torch
            self._cache[key] = torch.as_tensor(array, dtype=like.dtype, device=like.device)
        return self._cache[key]


@dataclass(frozen=True, eq=False)
class Input(Layer):
    """The graph input, per-sample shape ``shape``."""

    kind: ClassVar[LayerKind] = LayerKind.INPUT
    shape: tuple[int, ...] = ()

    def describe(self) -> str:
        return f"Input{list(self.shape)}"


# ---------------------------------------------------------------- affine layers


@dataclass(frozen=True, eq=False)
class Dense(Layer):
    """``y = x W^T + b`` on the last axis; ``weight`` is ``(out, in)``."""

    kind: ClassVar[LayerKind] = LayerKind.AFFINE
    weight: np.ndarray = field(default_factory=lambda: frozen_array(np.zeros((0, 0))))
    bias: np.ndarray | None = None

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self._tensor("bias", x)
        return F.linear(x, self._tensor("weight", x), bias)

    def linear(self, t: Tensor) -> Tensor:
        return F.linear(t, self._tensor("weight", t))

    def parameter_count(self) -> int:
        return int(self.weight.size + (0 if self.bias is None else self.bias.size))

    def describe(self) -> str:
        return f"Dense {self.weight.shape[1]}->{self.weight.shape[0]}"


@dataclass(frozen=True, eq=False)
class Conv(Layer):
    """N-d convolution (1-3 spatial dims). ``pads`` = (begin..., end...) as in ONNX."""

    kind: ClassVar[LayerKind] = LayerKind.AFFINE
    weight: np.ndarray = field(default_factory=lambda: frozen_array(np.zeros((0, 0, 0))))
    bias: np.ndarray | None = None
    strides: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()
    dilations: tuple[int, ...] = ()
    groups: int = 1

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self._tensor("bias", x)
        return self._conv(x, bias)

    def linear(self, t: Tensor) -> Tensor:
        return self._conv(t, None)

    def _conv(self, x: Tensor, bias: Tensor | None) -> Tensor:
        conv = (F.conv1d, F.conv2d, F.conv3d)[self.weight.ndim - 3]
        x = _pad_spatial(x, self.pads, 0.0)
        return conv(
            x, self._tensor("weight", x), bias, self.strides, 0, self.dilations, self.groups
        )

    def parameter_count(self) -> int:
        return int(self.weight.size + (0 if self.bias is None else self.bias.size))

    def describe(self) -> str:
        out_ch, in_ch = self.weight.shape[:2]
        kernel = "x".join(str(k) for k in self.weight.shape[2:])
        return f"Conv {in_ch * self.groups}->{out_ch} k{kernel} s{list(self.strides)}"


@dataclass(frozen=True, eq=False)
class ElementwiseAffine(Layer):
    """``y = x * scale + shift`` with per-sample broadcastable ``scale``/``shift``.

    Sub/Div/Mul/Add by constants and unfolded BatchNormalization become this.
    """

    kind: ClassVar[LayerKind] = LayerKind.AFFINE
    scale: np.ndarray = field(default_factory=lambda: frozen_array(1.0))
    shift: np.ndarray = field(default_factory=lambda: frozen_array(0.0))

    def forward(self, x: Tensor) -> Tensor:
        return x * self._tensor("scale", x) + self._tensor("shift", x)

    def linear(self, t: Tensor) -> Tensor:
        """The linear part, broadcast to the output's shape: a ``shift`` wider than the
        input (``Add([N,1], const[1,16])``) copies each coordinate, as ``forward`` does."""
        out = t * self._tensor("scale", t)
        shape = torch.broadcast_shapes(out.shape, self._tensor("shift", t).shape)
        return out if shape == out.shape else out.expand(shape).contiguous()

    def parameter_count(self) -> int:
        return int(self.scale.size + self.shift.size)

    def describe(self) -> str:
        return "Scale+Shift"


@dataclass(frozen=True, eq=False)
class Sum(Layer):
    """``y = sum_i c_i x_i`` of several branches (residual Add, Sub of two branches)."""

    kind: ClassVar[LayerKind] = LayerKind.AFFINE
    coefficients: tuple[float, ...] = (1.0, 1.0)

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.linear(*inputs)

    def linear(self, *tangents: Tensor) -> Tensor:
        total = tangents[0] * self.coefficients[0]
        for c, t in zip(self.coefficients[1:], tangents[1:], strict=True):
            total = total + c * t
        return total

    def describe(self) -> str:
        return f"Sum of {len(self.coefficients)} branches"


@dataclass(frozen=True, eq=False)
class Pad(Layer):
    """Constant padding of the spatial axes; ``pads`` = (begin..., end...)."""

    kind: ClassVar[LayerKind] = LayerKind.AFFINE
    pads: tuple[int, ...] = ()
    value: float = 0.0

    def forward(self, x: Tensor) -> Tensor:
        return _pad_spatial(x, self.pads, self.value)

    def linear(self, t: Tensor) -> Tensor:
        return _pad_spatial(t, self.pads, 0.0)


@dataclass(frozen=True, eq=False)
class AvgPool(Layer):
    """Average pooling over 1-3 spatial axes; ``pads`` = (begin..., end...)."""

    kind: ClassVar[LayerKind] = LayerKind.AFFINE
    kernel: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()
    count_include_pad: bool = False
    ceil_mode: bool = False

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)

    def linear(self, t: Tensor) -> Tensor:
        pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[len(self.kernel) - 1]
        keep = _ceil_mode_keep(t, self.strides, self.pads) if self.ceil_mode else ...
        if not any(self.pads):
            return pool(t, self.kernel, self.strides, 0, self.ceil_mode)[keep]
        sums = pool(_pad_spatial(t, self.pads, 0.0), self.kernel, self.strides, 0, self.ceil_mode)
        if self.count_include_pad:
            return sums[keep]
        ones = torch.ones((1, 1, *t.shape[2:]), dtype=t.dtype, device=t.device)
        counts = pool(
            _pad_spatial(ones, self.pads, 0.0), self.kernel, self.strides, 0, self.ceil_mode
        )
        return (sums / counts)[keep]

    def describe(self) -> str:
        return f"AvgPool k{list(self.kernel)} s{list(self.strides)}"


@dataclass(frozen=True, eq=False)
class Reshape(Layer):
    """Per-sample reshape (Flatten, Reshape, Squeeze, Unsqueeze)."""

    kind: ClassVar[LayerKind] = LayerKind.AFFINE
    shape: tuple[int, ...] = ()

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def linear(self, t: Tensor) -> Tensor:
        return self.forward(t)

    def describe(self) -> str:
        return f"Reshape{list(self.shape)}"


@dataclass(frozen=True, eq=False)
class Transpose(Layer):
    """Per-sample axis permutation ``perm`` (batch axis excluded)."""

    kind: ClassVar[LayerKind] = LayerKind.AFFINE
    perm: tuple[int, ...] = ()

    def forward(self, x: Tensor) -> Tensor:
        return x.permute(0, *(p + 1 for p in self.perm))

    def linear(self, t: Tensor) -> Tensor:
        return self.forward(t)


# ------------------------------------------------------ piecewise-linear layers


@dataclass(frozen=True, eq=False)
class Relu(Layer):
    """``max(x, 0)``."""

    kind: ClassVar[LayerKind] = LayerKind.PIECEWISE_LINEAR

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x)


@dataclass(frozen=True, eq=False)
class LeakyRelu(Layer):
    """``x if x >= 0 else alpha * x``."""

    kind: ClassVar[LayerKind] = LayerKind.PIECEWISE_LINEAR
    alpha: float = 0.01

    def forward(self, x: Tensor) -> Tensor:
        return torch.where(x >= 0, x, self.alpha * x)

    def describe(self) -> str:
        return f"LeakyRelu({self.alpha:g})"


@dataclass(frozen=True, eq=False)
class MaxPool(Layer):
    """Max pooling over 1-3 spatial axes; ``pads`` = (begin..., end...), padded with -inf."""

    kind: ClassVar[LayerKind] = LayerKind.PIECEWISE_LINEAR
    kernel: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()
    dilations: tuple[int, ...] = ()
    ceil_mode: bool = False

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_indices(x)[0]

    def forward_with_indices(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Pooled values and the flat spatial index (into the padded input) of each max."""
        pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[len(self.kernel) - 1]
        padded = _pad_spatial(x, self.pads, float("-inf"))
        values, indices = pool(
            padded,
            self.kernel,
            self.strides,
            0,
            self.dilations,
            self.ceil_mode,
            return_indices=True,
        )
        if self.ceil_mode:
            keep = _ceil_mode_keep(x, self.strides, self.pads)
            return values[keep], indices[keep]
        return values, indices

    def describe(self) -> str:
        return f"MaxPool k{list(self.kernel)} s{list(self.strides)}"


# ------------------------------------------------------------ nonlinear layers


@dataclass(frozen=True, eq=False)
class Sigmoid(Layer):
    kind: ClassVar[LayerKind] = LayerKind.NONLINEAR

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x)


@dataclass(frozen=True, eq=False)
class Tanh(Layer):
    kind: ClassVar[LayerKind] = LayerKind.NONLINEAR

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x)


@dataclass(frozen=True, eq=False)
class Softmax(Layer):
    """(Log-)softmax over per-sample axis ``axis``; only allowed as the model's last op."""

    kind: ClassVar[LayerKind] = LayerKind.NONLINEAR
    axis: int = 0
    log: bool = False

    def forward(self, x: Tensor) -> Tensor:
        if self.log:
            return torch.log_softmax(x, dim=self.axis + 1)
        return torch.softmax(x, dim=self.axis + 1)


def _ceil_mode_keep(x: Tensor, strides: tuple[int, ...], pads: tuple[int, ...]) -> tuple:
    """Index dropping ceil_mode windows that start in the end padding.

    Pooling runs on the explicitly padded input, where torch keeps a last window
    that starts in the end padding; ONNX (onnxruntime) ignores such windows.
    """
    spatial = x.shape[2:]
    begins = tuple(pads[: len(pads) // 2]) or (0,) * len(spatial)
    stops = [-(-(n + begin) // s) for n, begin, s in zip(spatial, begins, strides, strict=True)]
    return (slice(None), slice(None), *(slice(0, stop) for stop in stops))


def _pad_spatial(x: Tensor, pads: tuple[int, ...], value: float) -> Tensor:
    """Pad the trailing spatial axes of ``x`` with ONNX-ordered ``pads``."""
    if not pads or not any(pads):
        return x
    half = len(pads) // 2
    begins, ends = pads[:half], pads[half:]
    torch_pads: list[int] = []
    for begin, end in zip(reversed(begins), reversed(ends), strict=True):
        torch_pads += [begin, end]
    return F.pad(x, torch_pads, mode="constant", value=value)
