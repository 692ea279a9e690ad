"""Attack upper bound: the smallest adversarial perturbation the core's attacks find.

Per sample, the minimal-norm search (DeepFool, then PGD bisection and a line
search; Moosavi-Dezfooli et al. 2016, Madry et al. 2018) gives a verified
adversarial example; its distance is an upper bound on the true minimal
adversarial distance (Singla & Feizi 2019, Section 5 compares such bounds with
their certificates). From it: empirical robust accuracy at each ``--eps`` (an
upper bound on the true robust accuracy) and the worst samples.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from audit_core.analysis import Analysis, AuditContext, Requirements, check_config
from audit_core.attacks import MinimalAdversarial
from audit_core.evidence import adversarial_example, histogram
from audit_core.findings import (
    Evidence,
    Finding,
    Method,
    Metric,
    Plot,
    Reference,
    Series,
    Severity,
    Status,
    floats,
    summarize,
)
from audit_core.grading import grade
from audit_core.hookspecs import hookimpl

__version__ = "0.1.0"


@dataclass(frozen=True)
class AttackBoundConfig:
    """Parameters of the attack-bound analysis (table ``[attack-bound]``)."""

    fail_below: float = 0.5
    """Empirical robust accuracy below this fraction fails (severity ``high``)."""
    warn_below: float = 0.8
    """Empirical robust accuracy below this fraction warns (severity ``medium``)."""
    worst_examples: int = 5
    """Number of least-robust samples shown as evidence."""

    def __post_init__(self) -> None:
        check_config(
            self,
            minimum={"worst_examples": 0, "fail_below": 0, "warn_below": 0},
        )


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
    requires = Requirements(data=True)
    Config = AttackBoundConfig

    def run(self, ctx: AuditContext) -> Iterable[Finding]:
        ctx.progress.total(ctx.attacks.work_units())
        result = ctx.attacks.minimal(ctx.norm, ctx.progress_callback())
        correct = ctx.model.graph.predict(ctx.data.x) == ctx.data.y
        ctx.export(
            self.name,
            index=ctx.data.indices,
            label=ctx.data.y,
            attack_distance=result.distance,
            x_adv=result.x_adv,
        )
        yield _robust_accuracy_finding(ctx, result, correct)
        yield _distance_finding(ctx, result, correct)

    def headline(self, findings: tuple[Finding, ...]) -> str:
        return findings[0].summary if findings else ""


def robust_accuracy(distance: np.ndarray, correct: np.ndarray, eps: float) -> float:
    """Fraction of samples classified correctly with no adversarial example within ``eps``."""
    return float(np.mean(correct & (distance > eps)))


def _robust_accuracy_finding(
    ctx: AuditContext, result: MinimalAdversarial, correct: np.ndarray
) -> Finding:
    config: AttackBoundConfig = ctx.config
    eps_values = ctx.eps
    accuracies = [robust_accuracy(result.distance, correct, e) for e in eps_values]
    primary = accuracies[0]
    judged = grade(primary, "robust_accuracy", ">=", fail=config.fail_below, warn=config.warn_below)
    unit = ctx.norm
    metrics = [Metric("clean_accuracy", float(np.mean(correct)), "fraction")]
    metrics += [
        Metric(
            f"robust_accuracy@{e:g}", a, "fraction", f"no adversarial example within {unit} {e:g}"
        )
        for e, a in zip(eps_values, accuracies, strict=True)
    ]
    metrics.append(Metric("robust_accuracy", primary, "fraction", f"at eps {eps_values[0]:g}"))
    summary = (
        f"Empirical robust accuracy {primary:.1%} at {unit} eps {eps_values[0]:g} "
        f"({_clean_text(ctx, float(np.mean(correct)))}); an attack found adversarial "
        "examples within eps for "
        f"{np.mean(correct & (result.distance <= eps_values[0])):.1%} of the samples."
    )
    return ctx.finding(
        "robust-accuracy",
        title=f"Empirical robust accuracy at eps {eps_values[0]:g} ({unit})",
        status=judged.status,
        severity=judged.severity,
        method=Method.EMPIRICAL,
        summary=summary,
        metrics=metrics,
        threshold=judged.threshold,
        evidence=Evidence(plots=(_accuracy_curve(result.distance, correct, unit),)),
        remediation=(
            "Adversarial training (PGD) at the target eps, or a certified training method; "
            "this number is an upper bound: stronger attacks can only lower it."
        ),
    )


def _accuracy_curve(distance: np.ndarray, correct: np.ndarray, norm: str) -> Plot:
    finite = distance[np.isfinite(distance)]
    top = float(finite.max()) * 1.1 if finite.size and finite.max() > 0 else 1.0
    grid = np.linspace(0.0, top, 60)
    curve = [robust_accuracy(distance, correct, e) for e in grid]
    return Plot(
        id="robust-accuracy-curve",
        title="Empirical robust accuracy vs eps (attack upper bound)",
        x_label=f"eps ({norm})",
        y_label="robust accuracy",
        series=(Series("attack", floats(curve), floats(grid), "step"),),
    )


def _distance_finding(
    ctx: AuditContext, result: MinimalAdversarial, correct: np.ndarray
) -> Finding:
    config: AttackBoundConfig = ctx.config
    distance = result.distance
    attacked = correct & result.found
    order = np.argsort(np.where(correct, distance, np.inf))
    worst = [i for i in order[: config.worst_examples] if correct[i] and result.found[i]]
    examples = tuple(
        adversarial_example(
            ctx.data,
            int(i),
            result.x_adv[i],
            {"attack_distance": float(distance[i]), "adversarial_label": int(result.adv_label[i])},
        )
        for i in worst
    )
    not_found = int(np.sum(correct & ~result.found))
    values = distance[attacked]
    summary = (
        f"Median smallest adversarial {ctx.norm} distance {np.median(values):.4g} over "
        f"{attacked.sum()} correctly classified samples"
        if values.size
        else "No adversarial example was found"
    ) + (f"; none found for {not_found} samples." if not_found else ".")
    return ctx.finding(
        "distances",
        title=f"Smallest adversarial distance per sample ({ctx.norm})",
        status=Status.PASS,
        severity=Severity.INFO,
        method=Method.EMPIRICAL,
        summary=summary,
        metrics=[
            Metric(
                "median_attack_distance",
                float(np.median(values)) if values.size else None,
                ctx.norm,
            ),
            Metric("min_attack_distance", float(values.min()) if values.size else None, ctx.norm),
            Metric("samples_attacked", int(attacked.sum()), "samples"),
            Metric("samples_without_adversarial", not_found, "samples"),
        ],
        evidence=Evidence(
            summaries=(summarize("attack_distance", values, ctx.norm),),
            examples=examples,
            plots=(
                histogram(
                    "attack-distance-histogram",
                    "Smallest adversarial distance found",
                    values,
                    x_label=f"distance ({ctx.norm})",
                    series="attack distance",
                ),
            ),
        ),
    )


def _clean_text(ctx: AuditContext, clean: float) -> str:
    if ctx.data.labels_from != "file":
        return "labels: the model's own predictions"
    return f"clean {clean:.1%}"


@hookimpl
def audit_register_analyses(register) -> None:
    register(AttackBound())
