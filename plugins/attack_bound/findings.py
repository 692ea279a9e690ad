"""The attack-bound analysis's findings: empirical robust accuracy and the per-sample
smallest adversarial distance (Madry et al. 2018, Moosavi-Dezfooli et al. 2016; the upper
bounds Singla & Feizi 2019, Section 5, compare certificates with)."""

from __future__ import annotations

import numpy as np

from audit_core.analysis import AuditContext
from audit_core.evidence import adversarial_example, histogram
from audit_core.findings import (
    Evidence,
    Finding,
    Method,
    Metric,
    Plot,
    Series,
    Severity,
    Status,
    floats,
    summarize,
)
from audit_core.grading import grade
from audit_plugins.attack_bound import AttackBoundConfig
from audit_plugins.attack_bound.distances import AttackDistances, robust_accuracy


def robust_accuracy_finding(ctx: AuditContext, r: AttackDistances) -> Finding:
    """Empirical robust accuracy at each eps, judged at the first (an upper bound)."""
    config: AttackBoundConfig = ctx.config
    result, correct = r.attack, r.correct
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


def distance_finding(ctx: AuditContext, r: AttackDistances) -> Finding:
    """The smallest adversarial distance per sample, with the least robust samples."""
    config: AttackBoundConfig = ctx.config
    result, correct = r.attack, r.correct
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
            notes=(_budget_note(ctx),),
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


def _budget_note(ctx: AuditContext) -> str:
    """Which budget the search ran with (``[attacks] preset``, resolved for this model)."""
    budget = ctx.attacks.budget
    text = (
        f"Search budget: {budget.preset} preset ({budget.restarts} restarts x {budget.steps} "
        f"PGD steps, {budget.bisection_steps} bisection steps, DeepFool over the top "
        f"{budget.deepfool_classes} classes"
    )
    if budget.float32:
        text += f"; float32 search on a model of {ctx.model.forward_macs:.2g} multiply-adds"
    return text + "); every example verified in float64 and onnxruntime."


def _clean_text(ctx: AuditContext, clean: float) -> str:
    if ctx.data.labels_from != "file":
        return "labels: the model's own predictions"
    return f"clean {clean:.1%}"
