"""Attack upper bound: the smallest adversarial perturbation the core's attacks find.

Per sample, the minimal-norm search (DeepFool, then PGD bisection and a line
search; Moosavi-Dezfooli et al. 2016, Madry et al. 2018) gives a verified
adversarial example; its distance is an upper bound on the true minimal
adversarial distance (Singla & Feizi 2019, Section 5 compares such bounds with
their certificates). From it: empirical robust accuracy at each ``--eps`` (an
upper bound on the true robust accuracy) and the worst samples.

The search is the run's one search in ``--norm`` (``ctx.attacks``, budget: the
``[attacks]`` table), the same one the certificates' gap compares with.

Modules: ``distances`` (the search's result per sample), ``findings`` (the prose).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from audit_core.analysis import Analysis, AuditContext, Requirements, check_config
from audit_core.findings import Finding, Reference
from audit_core.hookspecs import hookimpl
from audit_core.memory import MemoryNeed, attack_need

__version__ = "0.1.0"


@dataclass(frozen=True)
class AttackBoundConfig:
    """Parameters of the attack-bound analysis (table ``[attack-bound]``; the search's
    budget is the run's ``[attacks]`` table)."""

    fail_below: float = 0.5
    """Empirical robust accuracy below this fraction fails (severity ``high``)."""
    warn_below: float = 0.8
    """Empirical robust accuracy below this fraction warns (severity ``medium``)."""
    worst_examples: int = 5
    """Number of least-robust samples shown as evidence."""

    def __post_init__(self) -> None:
        check_config(self, minimum={"worst_examples": 0, "fail_below": 0, "warn_below": 0})


class AttackBound(Analysis):
    """Per-sample minimal adversarial distance and empirical robust accuracy."""

    name = "attack-bound"
    title = "Attack upper bound"
    description = (
        "Smallest adversarial perturbation found per sample by DeepFool + PGD "
        "(minimal-norm search); empirical robust accuracy at each eps."
    )
    tags = ("empirical", "attack")
    references = (
        Reference("madry2018", "PGD"),
        Reference("moosavi2016", "DeepFool"),
        Reference("singla2019", "Section 5 (attack upper bounds)"),
    )
    requires = Requirements(data=True, layer_graph=False)
    Config = AttackBoundConfig

    def memory_need(self, model, data, config, attacks) -> MemoryNeed:
        return attack_need(model, attacks)

    def run(self, ctx: AuditContext) -> Iterable[Finding]:
        from audit_plugins.attack_bound import distances, findings

        result = distances.measure(ctx)
        distances.export(ctx, self.name, result)
        yield findings.robust_accuracy_finding(ctx, result)
        yield findings.distance_finding(ctx, result)

    def headline(self, findings: tuple[Finding, ...]) -> str:
        return findings[0].summary if findings else ""


@hookimpl
def audit_register_analyses(register) -> None:
    register(AttackBound())
