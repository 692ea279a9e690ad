"""The attack-bound analysis's numbers: per sample, the smallest verified adversarial
distance of the run's minimal-norm search (Singla & Feizi 2019, Section 5: an upper bound
on the true minimal distance) and the empirical robust accuracy it gives at each eps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit_core.analysis import AuditContext
from audit_core.attacks import MinimalAdversarial


@dataclass(frozen=True)
class AttackDistances:
    """The search's result and which samples the model classifies correctly."""

    attack: MinimalAdversarial
    correct: np.ndarray

    @property
    def distance(self) -> np.ndarray:
        return self.attack.distance

    def robust_accuracy(self, eps: float) -> float:
        return robust_accuracy(self.attack.distance, self.correct, eps)


def robust_accuracy(distance: np.ndarray, correct: np.ndarray, eps: float) -> float:
    """Fraction of samples classified correctly with no adversarial example within ``eps``."""
    return float(np.mean(correct & (distance > eps)))


def measure(ctx: AuditContext) -> AttackDistances:
    """The run's search in ``--norm`` (cached: shared with every other analysis)."""
    ctx.progress.total(ctx.attacks.work_units())
    attack = ctx.attacks.minimal(ctx.norm, ctx.progress_callback())
    correct = ctx.model.graph.predict(ctx.data.x) == ctx.data.y
    return AttackDistances(attack, correct)


def export(ctx: AuditContext, name: str, result: AttackDistances) -> None:
    """``--export``: index, label, attack_distance and x_adv per sample."""
    ctx.export(
        name,
        index=ctx.data.indices,
        label=ctx.data.y,
        attack_distance=result.attack.distance,
        x_adv=result.attack.x_adv,
    )
