"""Smooth (not piecewise-linear) activations: analyses that need a piecewise-linear
graph refuse models with them; attacks and interval bounds still apply."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from audit_core.layers.base import Bounds, Layer, LayerKind, Tensor


@dataclass(frozen=True, eq=False)
class Sigmoid(Layer):
    kind: ClassVar[LayerKind] = LayerKind.NONLINEAR

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x)

    def interval(self, bounds: Bounds) -> Bounds:
        return self.forward(bounds[0]), self.forward(bounds[1])  # increasing


@dataclass(frozen=True, eq=False)
class Tanh(Layer):
    kind: ClassVar[LayerKind] = LayerKind.NONLINEAR

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x)

    def interval(self, bounds: Bounds) -> Bounds:
        return self.forward(bounds[0]), self.forward(bounds[1])  # increasing


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

    def interval(self, bounds: Bounds) -> Bounds:
        """Output i is smallest with x_i at its lower and every other x_j at its upper
        bound, and largest the other way round (log-sum-exp form, no overflow)."""
        low, high = bounds
        dim = self.axis + 1
        return self._mixed(low, high, dim), self._mixed(high, low, dim)

    def _mixed(self, own: Tensor, others: Tensor, dim: int) -> Tensor:
        # log softmax_i with x_i = own_i and x_j = others_j (j != i):
        # own_i - log(exp(own_i) + sum_j exp(others_j) - exp(others_i))
        total = torch.logsumexp(others, dim=dim, keepdim=True)
        rest = total + torch.log1p(-torch.exp(others - total).clamp(max=1 - 1e-16))
        log_value = own - torch.logaddexp(own, rest)
        return log_value if self.log else torch.exp(log_value)
