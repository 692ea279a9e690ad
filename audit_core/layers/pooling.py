"""Max pooling: piecewise linear (the winner of each window is passed on)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from audit_core.layers.base import (
    Bounds,
    Face,
    Layer,
    LayerKind,
    LocalStep,
    Tangents,
    Tensor,
    ceil_mode_keep,
    crop_spatial,
    pad_spatial,
)


def _gather_spatial(x: Tensor, indices: Tensor) -> Tensor:
    """``x`` ``(B, C, *spatial)`` at flat spatial ``indices`` ``(B, C, *out)``."""
    flat = x.reshape(*x.shape[:2], -1)
    return flat.gather(2, indices.reshape(*indices.shape[:2], -1)).reshape(indices.shape)


@dataclass(frozen=True, eq=False)
class MaxPool(Layer):
    """Max pooling over 1-3 spatial axes; ``pads`` = (begin..., end...), padded with -inf.

    Linearisation: the output is the winner's value, so its tangent is the winner's
    tangent and the region keeps ``z_winner - z_e >= 0`` for every other element e of
    the window (``windows`` lists them).
    """

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
        padded = pad_spatial(x, self.pads, float("-inf"))
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
            keep = ceil_mode_keep(x, self.strides, self.pads)
            return values[keep], indices[keep]
        return values, indices

    def linearize(self, z: Tensor, tangents: Tangents) -> LocalStep:
        """The winner's tangent; faces ``z_winner - z_e >= 0`` for the window's others."""
        tangent = tangents.per_sample
        n = z.shape[0]
        dim = tangent.shape[0] // n
        out, winners = self.forward_with_indices(z)
        channels = z.shape[1]
        padded_t = pad_spatial(tangent, self.pads, 0.0).reshape(n, dim, channels, -1)
        flat_winners = winners.reshape(n, 1, channels, -1)
        expanded = flat_winners.expand(n, dim, channels, flat_winners.shape[-1])
        gathered = padded_t.gather(3, expanded)
        window_values = self.windows(z, out.shape, float("-inf"))
        window_grads = self.windows(tangent, out.shape, 0.0)
        k = window_values.shape[-1]
        margin = (out.reshape(n, -1, 1) - window_values.reshape(n, -1, k)).reshape(n, -1)
        grads = gathered.reshape(n, dim, -1, 1) - window_grads.reshape(n, dim, -1, k)
        grads = grads.reshape(n, dim, -1)
        padded = ~torch.isfinite(margin)
        margin = torch.where(padded, 0.0, margin)
        grads = grads.masked_fill(padded[:, None, :], 0.0)
        out_tangent = gathered.reshape(n, dim, *out.shape[1:])
        face = Face(grads, margin, None)
        return LocalStep(out, [face], winners.numpy().copy(), lambda: out_tangent)

    def windows(self, x: Tensor, out_shape: tuple[int, ...], fill: float) -> Tensor:
        """``(B, C, *out_spatial, K)``: the K elements of every pooling window of ``x``
        (padding and the ceil_mode overhang filled with ``fill``)."""
        padded = pad_spatial(x, self.pads, fill)
        spatial = len(self.kernel)
        extra = []
        for axis in range(spatial):
            size = padded.shape[2 + axis]
            span = (out_shape[2 + axis] - 1) * self.strides[axis]
            span += (self.kernel[axis] - 1) * self.dilations[axis] + 1
            extra.append(max(0, span - size))
        if any(extra):
            padded = pad_spatial(padded, (0,) * spatial + tuple(extra), fill)
        for axis in range(spatial):
            dil, ker = self.dilations[axis], self.kernel[axis]
            padded = padded.unfold(2 + axis, (ker - 1) * dil + 1, self.strides[axis])
            padded = padded[..., ::dil]
        head = padded.shape[: 2 + spatial]
        return padded.reshape(*head, -1)

    def interval(self, bounds: Bounds) -> Bounds:
        low, high = bounds
        return self.forward(low), self.forward(high)  # max is monotone in every input

    def backward_bound(
        self, coefficients: Tensor, bounds: Bounds, lower_slope: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Backward bound propagation (CROWN) through max pooling (no slopes to optimise).

        Per window with input bounds [l, u]: ``max >= x_a`` with a the element of the
        largest lower bound; ``max <= max(x_b, c) <= c + s (x_b - l_b)`` with b the element
        of the largest upper bound, c the second largest upper bound and s the ReLU chord
        slope ``(u_b - c) / (u_b - l_b)`` (exact, ``x_b``, when ``l_b >= c``; constant c when
        ``u_b <= c``). Returns ``(A, b)`` with ``coefficients . maxpool(z) >= A . z + b``.
        """
        low, high = bounds
        _, by_lower = self.forward_with_indices(low)
        top_upper, by_upper = self.forward_with_indices(high)
        out_shape = tuple(top_upper.shape)
        windows = self.windows(high, out_shape, float("-inf"))
        second = windows.topk(min(2, windows.shape[-1]), dim=-1).values[..., -1]
        if windows.shape[-1] == 1:
            second = torch.full_like(second, float("-inf"))
        low_b = _gather_spatial(pad_spatial(low, self.pads, float("-inf")), by_upper)
        width = top_upper - low_b
        slope = torch.where(width > 0, (top_upper - second) / width.clamp_min(1e-300), 1.0)
        slope = torch.where(low_b >= second, 1.0, slope.clamp(0.0, 1.0))
        intercept = torch.where(low_b >= second, 0.0, second - slope * low_b)
        positive, negative = coefficients.clamp(min=0), coefficients.clamp(max=0)
        weights = self._scatter(positive, by_lower, low.shape)
        weights = weights + self._scatter(negative * slope.unsqueeze(1), by_upper, low.shape)
        bias = (negative * intercept.unsqueeze(1)).flatten(2).sum(dim=2)
        return weights, bias

    def _scatter(self, values: Tensor, indices: Tensor, in_shape: torch.Size) -> Tensor:
        """``(B, S, C, *out)`` values added at the flat padded-input ``indices`` ``(B, C, *out)``
        of every window: ``(B, S, *in)`` on the unpadded input."""
        batch, specs, channels = values.shape[:3]
        padded_spatial = pad_spatial(torch.zeros((1, 1, *in_shape[2:])), self.pads, 0.0).shape[2:]
        size = int(torch.tensor(padded_spatial).prod())
        flat = values.reshape(batch, specs, channels, -1)
        index = indices.reshape(batch, 1, channels, -1).expand_as(flat)
        out = torch.zeros((batch, specs, channels, size), dtype=values.dtype)
        out = out.scatter_add(3, index, flat)
        out = out.reshape(batch * specs, channels, *padded_spatial)
        return crop_spatial(out, self.pads).reshape(batch, specs, *in_shape[1:])

    def describe(self) -> str:
        return f"MaxPool k{list(self.kernel)} s{list(self.strides)}"
