"""Elementwise piecewise-linear activations (ReLU, LeakyReLU, ...).

Such a function is given by its kinks ``k_1 < ... < k_m`` and the slope of each of
its ``m + 1`` pieces; every rule follows from these two:

* local linearisation at z (Singla & Feizi 2019, Algorithm 1): the slope of z's
  piece, and one face of the activation region per kink, ``s (z - k) >= 0`` with
  ``s = +1`` where ``z >= k`` (a point on a kink belongs to the piece on its right);
* interval bounds: the extremes of f over [l, u] are at l, u or a kink inside;
* linear relaxation over [l, u] (CROWN, Zhang et al. 2018; alpha-CROWN, Xu et al.
  2021): for ANY slope s, ``s x + min_p (f(p) - s p) <= f(x) <= s x + max_p (f(p) - s p)``
  on [l, u], with p over l, u and the kinks inside (f - s x is piecewise linear, so
  its extremes are there). The upper bound uses the chord slope (the tightest for a
  convex piece pair such as ReLU's); the lower slope is free in the range of the
  slopes met on [l, u] (optimised by alpha-CROWN), by default the slope at the
  midpoint (CROWN's adaptive choice for ReLU: 1 when u >= -l, else 0).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from audit_core.layers.base import (
    Bounds,
    Face,
    Layer,
    LayerKind,
    LocalStep,
    Tangents,
    Tensor,
    frozen_array,
)


@dataclass(frozen=True)
class Relaxation:
    """Linear bounds ``lower_slope x + lower_bias <= f(x) <= upper_slope x + upper_bias``."""

    lower_slope: Tensor
    lower_bias: Tensor
    upper_slope: Tensor
    upper_bias: Tensor


@dataclass(frozen=True)
class RelaxationParts:
    """What a relaxation on fixed bounds shares across lower slopes: the slope range
    (``smallest``, ``span``), the upper bound, and f at the intercept points."""

    smallest: Tensor
    span: Tensor
    upper_slope: Tensor
    upper_bias: Tensor
    points: list[Tensor]
    values: list[Tensor]


@dataclass(frozen=True, eq=False)
class ElementwisePiecewiseLinear(Layer):
    """Base of elementwise piecewise-linear activations: subclasses give ``kinks``,
    ``slopes`` and ``forward``; parameters broadcast from the right (per channel)."""

    kind: ClassVar[LayerKind] = LayerKind.PIECEWISE_LINEAR

    def kinks(self) -> tuple[float, ...]:
        """The breakpoints, ascending."""
        raise NotImplementedError

    def slopes(self, like: Tensor) -> tuple[Tensor | float, ...]:
        """The slope of each piece (``len(kinks) + 1``), broadcastable against ``like``."""
        raise NotImplementedError

    # ----------------------------------------------------------- linearisation
    def local_slope(self, z: Tensor) -> Tensor:
        """The slope of the piece each element of ``z`` lies on."""
        slopes = self.slopes(z)
        slope = torch.zeros_like(z) + slopes[0]
        for kink, right in zip(self.kinks(), slopes[1:], strict=True):
            slope = torch.where(z >= kink, right, slope)
        return slope

    def faces(self, z: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Per kink, ``(s, s (z - k))`` with ``s = +1`` where ``z >= k`` else ``-1``: the
        activation region keeps ``s (z(y) - k) >= 0`` for every kink."""
        result = []
        for kink in self.kinks():
            sign = torch.where(z >= kink, 1.0, -1.0).to(z.dtype)
            result.append((sign, sign * (z - kink)))
        return result

    def linearize(self, z: Tensor, tangents: Tangents) -> LocalStep:
        """Algorithm 1's step: one face per kink; the Jacobian scaled by the local slope."""
        n = z.shape[0]
        grads = tangents.grads
        faces = [
            Face(grads, offset.reshape(n, -1), sign.reshape(n, -1), tangents.shared)
            for sign, offset in self.faces(z)
        ]
        slope = self.local_slope(z).reshape(n, 1, -1)
        writable = tangents.writable

        def tangent() -> Tensor:
            scaled = grads.mul_(slope) if writable else grads * slope
            return scaled.reshape(n, grads.shape[1], *z.shape[1:])

        return LocalStep(self.forward(z), faces, self.pattern(z), tangent)

    def pattern(self, z: Tensor) -> np.ndarray:
        """The activation pattern: True where active (one kink), else the piece index."""
        kinks = self.kinks()
        if len(kinks) == 1:
            return (z >= kinks[0]).numpy().copy()
        return sum((z >= k).to(torch.int8) for k in kinks).numpy().copy()

    # ----------------------------------------------------------- bounds
    def interval(self, bounds: Bounds) -> Bounds:
        low, high = bounds
        values = torch.stack([self.forward(p) for p in self._points(low, high)])
        return values.amin(dim=0), values.amax(dim=0)

    def slope_range(self, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
        """Smallest and largest slope of the pieces that meet ``[low, high]``."""
        slopes = self.slopes(low)
        edges = (-np.inf, *self.kinks(), np.inf)
        smallest = torch.full_like(low, np.inf)
        largest = torch.full_like(low, -np.inf)
        for (left, right), slope in zip(itertools.pairwise(edges), slopes, strict=True):
            meets = (high >= left) & (low < right)  # the piece is [left, right)
            slope = torch.zeros_like(low) + slope
            smallest = torch.where(meets, torch.minimum(smallest, slope), smallest)
            largest = torch.where(meets, torch.maximum(largest, slope), largest)
        return smallest, largest

    def default_lower_slope(self, low: Tensor, high: Tensor) -> Tensor:
        """The slope at the midpoint of ``[low, high]``."""
        return self.local_slope((low + high) / 2)

    def relaxation(
        self,
        low: Tensor,
        high: Tensor,
        lower_slope: Tensor | None = None,
        parts: RelaxationParts | None = None,
    ) -> Relaxation:
        """Sound linear bounds on ``[low, high]`` (any ``lower_slope``; default the midpoint
        slope). ``low``/``high`` may carry extra leading axes to broadcast with the slope.
        ``parts``: what does not depend on the lower slope, computed once per bounds."""
        parts = parts if parts is not None else self.relaxation_parts(low, high)
        if lower_slope is None:
            lower_slope = self.default_lower_slope(low, high)
        lower_bias = _extreme(parts.points, parts.values, lower_slope, torch.amin)
        return Relaxation(lower_slope, lower_bias, parts.upper_slope, parts.upper_bias)

    def relaxation_parts(self, low: Tensor, high: Tensor) -> RelaxationParts:
        """The slope range, the upper bound (chord slope) and the points where the lower
        bound's intercept is taken, on ``[low, high]``."""
        smallest, largest = self.slope_range(low, high)
        width = high - low
        chord = (self.forward(high) - self.forward(low)) / torch.where(width > 0, width, 1.0)
        upper_slope = torch.where(width > 0, chord, self.local_slope(low))
        upper_slope = torch.minimum(torch.maximum(upper_slope, smallest), largest)
        points = self._points(low, high)
        values = [self.forward(p) for p in points]
        upper_bias = _extreme(points, values, upper_slope, torch.amax)
        return RelaxationParts(
            smallest, largest - smallest, upper_slope, upper_bias, points, values
        )

    def backward_bound(
        self,
        coefficients: Tensor,
        bounds: Bounds,
        lower_slope: Tensor | None = None,
        parts: RelaxationParts | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Backward bound propagation (CROWN) through this layer.

        ``coefficients`` ``(B, S, *shape)``: S linear functions of the output. Returns
        ``(A, b)`` with ``A`` ``(B, S, *shape)`` and ``b`` ``(B, S)`` such that, for every
        input z within ``bounds`` (``(B, *shape)`` each), ``coefficients . f(z) >= A . z + b``:
        positive coefficients take the lower relaxation, negative ones the upper.
        ``lower_slope`` (broadcastable to ``(B, S, *shape)``) sets the lower slopes;
        ``parts``: ``relaxation_parts`` of the unsqueezed bounds, when cached.
        """
        low, high = (bound.unsqueeze(1) for bound in bounds)
        relax = self.relaxation(low, high, lower_slope, parts)
        positive, negative = coefficients.clamp(min=0), coefficients.clamp(max=0)
        weights = positive * relax.lower_slope + negative * relax.upper_slope
        bias = positive * relax.lower_bias + negative * relax.upper_bias
        return weights, bias.flatten(2).sum(dim=2)

    def _points(self, low: Tensor, high: Tensor) -> list[Tensor]:
        """``low``, ``high`` and every kink clipped into ``[low, high]``."""
        return [low, high, *(torch.minimum(torch.clamp(low, min=k), high) for k in self.kinks())]


def _extreme(points: list[Tensor], values: list[Tensor], slope: Tensor, reduce) -> Tensor:
    """``reduce`` over the points p of ``f(p) - slope * p`` (the intercept of a bound)."""
    gaps = [v - slope * p for p, v in zip(points, values, strict=True)]
    return reduce(torch.stack(torch.broadcast_tensors(*gaps)), dim=0)


@dataclass(frozen=True, eq=False)
class Relu(ElementwisePiecewiseLinear):
    """``max(x, 0)``."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x)

    def kinks(self) -> tuple[float, ...]:
        return (0.0,)

    def slopes(self, like: Tensor) -> tuple[float, ...]:
        return (0.0, 1.0)


@dataclass(frozen=True, eq=False)
class LeakyRelu(ElementwisePiecewiseLinear):
    """``x if x >= 0 else alpha * x``."""

    alpha: float = 0.01

    def forward(self, x: Tensor) -> Tensor:
        return torch.where(x >= 0, x, self.alpha * x)

    def kinks(self) -> tuple[float, ...]:
        return (0.0,)

    def slopes(self, like: Tensor) -> tuple[float, ...]:
        return (self.alpha, 1.0)

    def describe(self) -> str:
        return f"LeakyRelu({self.alpha:g})"


@dataclass(frozen=True, eq=False)
class PRelu(ElementwisePiecewiseLinear):
    """``x if x >= 0 else slope * x`` with a per-sample broadcastable ``slope`` (per channel)."""

    slope: np.ndarray = field(default_factory=lambda: frozen_array(0.25))

    def forward(self, x: Tensor) -> Tensor:
        return torch.where(x >= 0, x, self.tensor("slope", x) * x)

    def kinks(self) -> tuple[float, ...]:
        return (0.0,)

    def slopes(self, like: Tensor) -> tuple[Tensor | float, ...]:
        return (self.tensor("slope", like), 1.0)

    def parameter_count(self) -> int:
        return int(self.slope.size)


@dataclass(frozen=True, eq=False)
class Clip(ElementwisePiecewiseLinear):
    """``min(max(x, low), high)`` (ReLU6 is ``Clip(0, 6)``); either end may be infinite."""

    low: float = 0.0
    high: float = 6.0

    def forward(self, x: Tensor) -> Tensor:
        return torch.clamp(x, min=self.low, max=self.high)

    def kinks(self) -> tuple[float, ...]:
        return tuple(k for k in (self.low, self.high) if np.isfinite(k))

    def slopes(self, like: Tensor) -> tuple[float, ...]:
        return (
            *((0.0,) if np.isfinite(self.low) else ()),
            1.0,
            *((0.0,) if np.isfinite(self.high) else ()),
        )

    def describe(self) -> str:
        return f"Clip({self.low:g}, {self.high:g})"


@dataclass(frozen=True, eq=False)
class HardSigmoid(ElementwisePiecewiseLinear):
    """``max(0, min(1, alpha * x + beta))`` (ONNX HardSigmoid; ``alpha != 0``)."""

    alpha: float = 0.2
    beta: float = 0.5

    def forward(self, x: Tensor) -> Tensor:
        return torch.clamp(self.alpha * x + self.beta, min=0.0, max=1.0)

    def kinks(self) -> tuple[float, ...]:
        ends = (-self.beta / self.alpha, (1.0 - self.beta) / self.alpha)
        return tuple(sorted(ends))

    def slopes(self, like: Tensor) -> tuple[float, ...]:
        return (0.0, self.alpha, 0.0)

    def describe(self) -> str:
        return f"HardSigmoid({self.alpha:g}, {self.beta:g})"
