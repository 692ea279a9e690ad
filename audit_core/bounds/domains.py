"""Subdomains of the complete search as batches of tensors: the pool of live subdomains,
a batch prepared for bound propagation, a bounded batch, and moving candidate points
into the exact input set."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from audit_core.bounds.input_set import InputSet
from audit_core.bounds.propagation import Splits
from audit_core.layers import Bounds

Tensor = torch.Tensor


def into_set(points: Tensor, exact: InputSet) -> Tensor:
    """``points`` moved into the (uninflated) set: clipped to its box (linf) or pulled
    towards the centre onto the ball (l2; the bounds contain the centre, so they hold)."""
    center = exact.center[:1]
    if exact.norm == "linf":
        low, high = exact.box()
        return torch.minimum(torch.maximum(points, low[:1]), high[:1])
    step = points - center
    length = step.norm(dim=1, keepdim=True)
    scale = torch.clamp(exact.eps[:1, None] / length.clamp_min(1e-300), max=1.0)
    inside = center + step * scale
    return torch.minimum(torch.maximum(inside, exact.lower), exact.upper)


@dataclass
class Problem:
    """A batch of subdomains ready for bound propagation."""

    inputs: InputSet
    bounds: dict[int, Bounds]
    splits: Splits
    specs: Tensor
    masks: dict[int, Tensor]
    cache: dict[int, object] = field(default_factory=dict)
    """Relaxation parts on these bounds, shared by every pass (see ``Relaxations``)."""

    def take(self, rows: Tensor) -> Problem:
        splits = Splits(
            {i: k[rows] for i, k in self.splits.kink.items()},
            {i: v[rows] for i, v in self.splits.side.items()},
        )
        return Problem(
            self.inputs.repeat(torch.zeros(len(rows), dtype=torch.long)),
            {i: (low[rows], high[rows]) for i, (low, high) in self.bounds.items()},
            splits,
            self.specs[rows],
            {i: m[rows] for i, m in self.masks.items()},
        )

    def to(self, dtype: torch.dtype) -> Problem:
        inputs = self.inputs
        cast = InputSet(
            inputs.center.to(dtype),
            inputs.eps.to(dtype),
            inputs.norm,
            inputs.lower.to(dtype),
            inputs.upper.to(dtype),
        )
        splits = Splits(
            {i: k.to(dtype) for i, k in self.splits.kink.items()},
            {i: v.to(dtype) for i, v in self.splits.side.items()},
        )
        return Problem(
            cast,
            {i: (low.to(dtype), high.to(dtype)) for i, (low, high) in self.bounds.items()},
            splits,
            self.specs.to(dtype),
            {i: m.to(dtype) for i, m in self.masks.items()},
        )


@dataclass
class Bounded:
    domains: dict[str, Tensor]
    counterexample: np.ndarray | None

    @property
    def lower(self) -> Tensor:
        return self.domains["lower"]

    def keep(self, mask: Tensor) -> dict[str, Tensor]:
        return {k: v[mask] for k, v in self.domains.items()}


class Pool:
    """The live subdomains as one tensor per field (rows are subdomains)."""

    def __init__(self) -> None:
        self.fields: dict[str, Tensor] = {}

    def __len__(self) -> int:
        return 0 if not self.fields else len(self.fields["lower"])

    @property
    def lower(self) -> Tensor:
        return self.fields["lower"]

    def add(self, domains: dict[str, Tensor]) -> None:
        if not len(domains["lower"]):
            return
        if not self.fields:
            self.fields = dict(domains)
            return
        self.fields = {k: torch.cat([self.fields[k], domains[k]]) for k in self.fields}

    def lowest(self, count: int) -> Tensor:
        count = min(count, len(self))
        return torch.topk(self.lower, count, largest=False).indices

    def take(self, rows: Tensor) -> dict[str, Tensor]:
        chosen = {k: v[rows] for k, v in self.fields.items()}
        keep = torch.ones(len(self), dtype=torch.bool)
        keep[rows] = False
        self.fields = {k: v[keep] for k, v in self.fields.items()}
        return chosen
