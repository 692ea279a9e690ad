"""The base of every layer type and the helpers layer rules share.

A layer type holds every rule about its op in one class: the forward pass, and by
kind

* affine (``AffineLayer``): the linear part (``linear``), its absolute value
  (``abs_linear``, for interval bounds) and its adjoint (``adjoint``, the
  transpose that backward bound propagation pulls linear bounds through);
* piecewise linear: the local linearisation at a point (slopes, the faces of the
  activation region) and the linear relaxation over an interval (bound
  propagation), see ``audit_core.layers.activation`` and ``pooling``;
* every kind: ``interval``, interval bounds of the output from bounds of the inputs.

Layers work on batched torch tensors ``(N, *shape)`` and keep their weights as
read-only float64 numpy arrays.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import numpy as np
import torch
import torch.nn.functional as F

Tensor = torch.Tensor
Bounds = tuple[Tensor, Tensor]
"""Elementwise (lower, upper) bounds of a batch of tensors, ``(N, *shape)`` each."""


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


class Tangents(Protocol):
    """The Jacobian of a layer's input with respect to the graph input, for n samples
    and an input dimension ``dim`` (what local linearisation pushes forward)."""

    @property
    def grads(self) -> Tensor:
        """``(n, dim, m)``, or ``(1, dim, m)`` when the same for every sample."""
        ...

    @property
    def per_sample(self) -> Tensor:
        """``(n * dim, *shape)``: one Jacobian per sample."""
        ...

    @property
    def writable(self) -> bool:
        """True when ``grads`` may be overwritten (no other reader)."""
        ...

    @property
    def shared(self) -> bool:
        """True when ``grads`` is the same for every sample (``(1, dim, m)``)."""
        ...


@dataclass(frozen=True)
class Face:
    """Faces of an activation region: ``sign * (grads . y) + ... >= 0`` per row.

    ``grads`` ``(n or 1, dim, r)``: gradients of the constraint functions before the sign
    flip; ``offsets`` ``(n, r)``: their values at the point after it (>= 0);
    ``sign`` ``(n, r)`` or None (no flip); ``shared``: ``grads`` is the same for every
    sample (and for every chunk of samples: its norms may be cached)."""

    grads: Tensor
    offsets: Tensor
    sign: Tensor | None
    shared: bool = False


@dataclass(frozen=True)
class LocalStep:
    """A piecewise-linear layer at a point: its output, the faces of its current piece,
    the activation pattern, and ``tangent()``, the output's Jacobian ``(n, dim, *out)``
    (called after the faces are used: it may overwrite the input's Jacobian)."""

    value: Tensor
    faces: list[Face]
    pattern: np.ndarray
    tangent: Callable[[], Tensor]


@dataclass(frozen=True, eq=False)
class Layer:
    """Base class. Subclasses set ``kind`` and implement ``forward`` and ``interval``."""

    kind: ClassVar[LayerKind]
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def op(self) -> str:
        return type(self).__name__

    def forward(self, *inputs: Tensor) -> Tensor:
        raise NotImplementedError

    def interval(self, *bounds: Bounds) -> Bounds:
        """Elementwise bounds of the output over every input within ``bounds``."""
        raise NotImplementedError(f"{self.op} has no interval rule")

    def parameter_count(self) -> int:
        return 0

    def describe(self) -> str:
        return self.op

    def tensor(self, name: str, like: Tensor) -> Tensor:
        """Weight ``name`` as a tensor of ``like``'s dtype and device (cached)."""
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

    def forward(self, x: Tensor) -> Tensor:
        return x

    def interval(self, bounds: Bounds) -> Bounds:
        return bounds

    def describe(self) -> str:
        return f"Input{list(self.shape)}"


@dataclass(frozen=True, eq=False)
class AffineLayer(Layer):
    """An affine map of its inputs: ``forward(x) = linear(x) + forward(0)``."""

    kind: ClassVar[LayerKind] = LayerKind.AFFINE

    def linear(self, *tangents: Tensor) -> Tensor:
        """The linear part: ``forward`` without the offset."""
        raise NotImplementedError

    def abs_linear(self, *tangents: Tensor) -> Tensor:
        """The linear part with every coefficient replaced by its absolute value."""
        raise NotImplementedError

    def adjoint(self, cotangent: Tensor, input_shapes: Sequence[tuple[int, ...]]) -> list[Tensor]:
        """The transpose of ``linear``: ``(M, *out_shape)`` -> ``(M, *in_shape)`` per input.

        Default: one vector-Jacobian product of ``linear`` (differentiable in
        ``cotangent``); layers with a cheaper closed form override it.
        """
        with torch.enable_grad():
            points = [
                torch.zeros((cotangent.shape[0], *shape), dtype=cotangent.dtype, requires_grad=True)
                for shape in input_shapes
            ]
            out = self.linear(*points)
            grads = torch.autograd.grad(
                out, points, cotangent, create_graph=cotangent.requires_grad, allow_unused=True
            )
        return [torch.zeros_like(p) if g is None else g for p, g in zip(points, grads, strict=True)]

    def offset(self, input_shapes: Sequence[tuple[int, ...]], like: Tensor) -> Tensor:
        """``forward(0)``: the constant part, ``(1, *out_shape)``."""
        zeros = [torch.zeros((1, *shape), dtype=like.dtype) for shape in input_shapes]
        return self.forward(*zeros)

    def interval(self, *bounds: Bounds) -> Bounds:
        centers = [(low + high) / 2 for low, high in bounds]
        radii = [(high - low) / 2 for low, high in bounds]
        center = self.forward(*centers)
        radius = self.abs_linear(*radii)
        return center - radius, center + radius


def ceil_mode_keep(x: Tensor, strides: tuple[int, ...], pads: tuple[int, ...]) -> tuple:
    """Index dropping ceil_mode windows that start in the end padding.

    Pooling runs on the explicitly padded input, where torch keeps a last window
    that starts in the end padding; ONNX (onnxruntime) ignores such windows.
    """
    spatial = x.shape[2:]
    begins = tuple(pads[: len(pads) // 2]) or (0,) * len(spatial)
    stops = [-(-(n + begin) // s) for n, begin, s in zip(spatial, begins, strides, strict=True)]
    return (slice(None), slice(None), *(slice(0, stop) for stop in stops))


def pad_spatial(x: Tensor, pads: tuple[int, ...], value: float) -> Tensor:
    """Pad the trailing spatial axes of ``x`` with ONNX-ordered ``pads`` (begin..., end...)."""
    if not pads or not any(pads):
        return x
    half = len(pads) // 2
    begins, ends = pads[:half], pads[half:]
    torch_pads: list[int] = []
    for begin, end in zip(reversed(begins), reversed(ends), strict=True):
        torch_pads += [begin, end]
    return F.pad(x, torch_pads, mode="constant", value=value)


def crop_spatial(x: Tensor, pads: tuple[int, ...]) -> Tensor:
    """The inverse of ``pad_spatial``: drop ONNX-ordered ``pads`` from the spatial axes."""
    if not pads or not any(pads):
        return x
    half = len(pads) // 2
    index = [slice(None), slice(None)]
    for axis, (begin, end) in enumerate(zip(pads[:half], pads[half:], strict=True)):
        index.append(slice(begin, x.shape[2 + axis] - end))
    return x[tuple(index)]
