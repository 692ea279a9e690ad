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
    """``points`` moved into the (uninflated) set as float32 values, the precision the
    deployed runtime is fed: clipped to its box (linf) or pulled towards the centre onto
    the ball (l2), then rounded to float32 values that lie inside the set when measured
    in float64. Rows with no such point near them (an eps below float32's spacing) are
    dropped, so every row returned is a point of the set exactly."""
    center = exact.center[:1]
    lower, upper = _float32_within(exact.lower, exact.upper)
    if exact.norm == "linf":
        low, high = _float32_within(*exact.box())
        if bool((low[:1] > high[:1]).any()):  # thinner than float32's spacing somewhere
            return points[:0]
        return torch.minimum(torch.maximum(points.float().double(), low[:1]), high[:1])
    step = points - center
    length = step.norm(dim=1, keepdim=True)
    scale = torch.clamp(exact.eps[:1, None] / length.clamp_min(1e-300), max=1.0)
    for shrink in (0.0, 2.0**-22, 2.0**-18, 2.0**-14, 2.0**-10):
        inside = (center + step * scale * (1 - shrink)).float().double()
        inside = torch.minimum(torch.maximum(inside, lower), upper)
        # a margin of 1e-12 so that any other summation order agrees the point is inside
        within = (inside - center).norm(dim=1) * (1 + 1e-12) <= exact.eps[0]
        if bool(within.all()):
            break
    return inside[within]


def _float32_within(low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
    """The float32 values closest to ``[low, high]`` from inside it, as float64."""
    low32, high32 = low.float(), high.float()
    up, down = torch.full_like(low32, torch.inf), torch.full_like(high32, -torch.inf)
    low32 = torch.where(low32.double() < low, torch.nextafter(low32, up), low32)
    high32 = torch.where(high32.double() > high, torch.nextafter(high32, down), high32)
    return low32.double(), high32.double()


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
    """The live subdomains, one preallocated tensor per field (rows are slots). Taken
    slots are reused by later subdomains, so a step costs the batch it moves, not the
    size of the pool; the storage doubles when full."""

    def __init__(self) -> None:
        self.fields: dict[str, Tensor] = {}
        self.alive = torch.zeros(0, dtype=torch.bool)
        self.free: list[int] = []

    def __len__(self) -> int:
        return int(self.alive.sum())

    @property
    def lower(self) -> Tensor:
        """The bounds of the live subdomains."""
        return self.fields["lower"][self.alive]

    def nbytes(self) -> int:
        """Bytes held by the storage."""
        return sum(v.element_size() * v.numel() for v in self.fields.values())

    def add(self, domains: dict[str, Tensor]) -> None:
        count = len(domains["lower"])
        if not count:
            return
        slots = self._slots(count, domains)
        for key, value in domains.items():
            self.fields[key][slots] = value
        self.alive[slots] = True

    def _slots(self, count: int, like: dict[str, Tensor]) -> Tensor:
        while len(self.free) < count:
            self._grow(like)
        slots, self.free = self.free[-count:], self.free[:-count]
        return torch.tensor(slots, dtype=torch.long)

    def _grow(self, like: dict[str, Tensor]) -> None:
        size = len(self.alive)
        extra = max(size, 64)
        for key, value in like.items():
            block = torch.zeros((extra, *value.shape[1:]), dtype=value.dtype)
            self.fields[key] = torch.cat([self.fields[key], block]) if key in self.fields else block
        self.alive = torch.cat([self.alive, torch.zeros(extra, dtype=torch.bool)])
        self.free = list(range(size + extra - 1, size - 1, -1)) + self.free

    def lowest(self, count: int) -> Tensor:
        """Slots of the ``count`` live subdomains with the lowest bounds."""
        lower = torch.where(self.alive, self.fields["lower"], torch.inf)
        return torch.topk(lower, min(count, len(self)), largest=False).indices

    def take(self, rows: Tensor) -> dict[str, Tensor]:
        """The subdomains in slots ``rows``, removed from the pool."""
        chosen = {k: v[rows] for k, v in self.fields.items()}
        self.alive[rows] = False
        self.free.extend(rows.tolist())
        return chosen
