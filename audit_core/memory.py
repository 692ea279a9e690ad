"""The run's memory budget, and what an analysis or a model would need of it, estimated
from shapes before anything is allocated.

One budget (``--memory-budget``; default the smaller of 4 GiB and a quarter of the
machine's memory) is the memory one process of the audit may use:

* a model whose weights, as the audit holds them, exceed it is refused when it loads;
* an analysis whose estimated peak exceeds it is skipped up front with the number it
  would need (``Analysis.memory_need``), and the others run;
* batches of independent units (samples, pairs) are sized to a quarter of it
  (``batch_bytes``), so one batch per worker process fits beside the model.

The estimates count the dominant arrays (tangents, Jacobians, activations kept for a
backward pass), not every temporary: they decide between "fits" and "would need
terabytes", where a factor of two does not change the answer.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from audit_core.attack_budget import MinimalAttackConfig
    from audit_core.graph import LayerGraph
    from audit_core.model import AuditedModel

MIB = 2**20
GIB = 2**30
DEFAULT_CAP_MB = 4096
"""The default budget is at most 4 GiB..."""
MACHINE_SHARE = 4
"""...and at most a quarter of the machine's memory."""
BATCH_SHARE = 4
"""A batch of units may use this fraction (1/4) of the budget."""
WEIGHT_COPIES = 4
"""Copies of the weights an audit holds: the ONNX file's bytes, the layer graph (float64:
twice), the torch module and the onnxruntime session (float32: once each) -- counted
as four float32 copies."""
FLOAT64 = 8
FLOAT32 = 4


def machine_memory() -> int:
    """Physical memory of this machine in bytes (16 GiB when the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 16 * GIB


def default_budget_mb() -> int:
    """The default memory budget in MiB: min(4 GiB, a quarter of the machine's memory)."""
    return int(min(DEFAULT_CAP_MB, machine_memory() // MACHINE_SHARE // MIB))


def batch_bytes(budget_mb: int) -> int:
    """The working memory of one batch of units under a budget of ``budget_mb`` MiB."""
    return budget_mb * MIB // BATCH_SHARE


def format_bytes(count: float) -> str:
    """``1.5 GiB``, ``3.9 TiB``: binary units, two significant digits."""
    for unit, size in (("PiB", 2**50), ("TiB", 2**40), ("GiB", GIB), ("MiB", MIB)):
        if count >= size:
            return (
                f"{count / size:.2g} {unit}" if count < 10 * size else f"{count / size:.0f} {unit}"
            )
    return f"{count / 2**10:.0f} KiB"


@dataclass(frozen=True)
class MemoryNeed:
    """The peak memory an analysis would need, and what dominates it."""

    bytes: int
    what: str
    """What needs it, e.g. "the local linearisation of one sample (784 inputs x ...)"."""

    def reason(self, budget_mb: int) -> str:
        """The skip reason under a budget of ``budget_mb`` MiB."""
        return (
            f"would need about {format_bytes(self.bytes)} of memory for {self.what}, over "
            f"the memory budget of {format_bytes(budget_mb * MIB)} (--memory-budget)"
        )


def largest(needs: Iterable[MemoryNeed | None]) -> MemoryNeed | None:
    """The largest of ``needs`` (None when there is none)."""
    present = [need for need in needs if need is not None]
    return max(present, key=lambda need: need.bytes) if present else None


def widest_tangent(graph: LayerGraph) -> int:
    """Values of the widest node whose per-sample tangent the linearisation keeps: from
    the first piecewise-linear node on, and the nodes such nodes read (the affine prefix
    before it is shared by all samples)."""
    from audit_core.layers import LayerKind  # torch: not at import (``audit plugins``)

    first = next(
        (i for i, n in enumerate(graph.nodes) if n.layer.kind is LayerKind.PIECEWISE_LINEAR),
        len(graph.nodes) - 1,
    )
    later = set(range(first, len(graph.nodes)))
    later |= {i for node in graph.nodes[first:] for i in node.inputs}
    return max(math.prod(graph.nodes[i].shape) for i in later)


def linearization_need(graph: LayerGraph) -> MemoryNeed:
    """One sample's local linearisation (``audit_core.linearize``): a float64 tangent of
    the input size per value of the widest node, four of them alive at once."""
    widest = widest_tangent(graph)
    return MemoryNeed(
        4 * FLOAT64 * graph.input_size * widest,
        f"the local linearisation of one sample ({graph.input_size:,} inputs x "
        f"{widest:,} values, float64)",
    )


def attack_need(model: AuditedModel, attacks: MinimalAttackConfig) -> MemoryNeed:
    """One sample's minimal-norm attack search (``audit_core.attacks``) with the budget
    ``attacks`` (resolved for the model): the activations a backward pass keeps for every
    restart (values, gradients and a temporary: three), and DeepFool's candidate
    gradients plus PGD's iterates, of the input size."""
    budget = attacks.effective(model.forward_macs)
    itemsize = FLOAT32 if budget.float32 else FLOAT64
    rows = max(1, budget.restarts)
    activations = 3 * rows * model.forward_cost.activation_values
    inputs = model.graph.input_size * (budget.deepfool_classes + 4 * rows + 16)
    return MemoryNeed(
        itemsize * (activations + inputs),
        f"one sample's attack search ({rows} restart(s) of a backward pass through "
        f"{model.forward_cost.activation_values:,} activations)",
    )


def weights_need(weight_bytes: int) -> int:
    """Memory the audit holds for a model whose weights take ``weight_bytes`` (float32)."""
    return WEIGHT_COPIES * weight_bytes
