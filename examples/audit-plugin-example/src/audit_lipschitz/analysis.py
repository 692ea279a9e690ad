"""The ``lipschitz-certificate`` analysis: a global Lipschitz certificate per sample.

With ``L`` an upper bound on the l2 Lipschitz constant of the logit map (see
``norms``), each logit difference ``f_y - f_j = (e_y - e_j)^T f`` is
``sqrt(2) L``-Lipschitz, so no l2 perturbation smaller than
``margin / (sqrt(2) L)`` can change the decision, where ``margin`` is the
true-class logit minus the best other logit (Tsuzuku, Sato & Sugiyama 2018,
Proposition 1). A single-logit binary model has radius ``|logit| / L``. An
l-infinity radius follows from ``||d||_2 <= sqrt(D) ||d||_inf``.

The radius is computed in float64 from the layer graph's logits, minus a guard
for the deployed runtime's rounding (``logit_tolerance``), and compared with the
local simplex certificate of Singla & Feizi (2019, Theorem 3), computed here
from ``audit_core.linearize`` (a third-party plugin does not import built-in
plugins): ``min(distance to the local decision boundary, distance to the
nearest face of the activation region)``. The global certificate is cheap and
holds for every model this bound covers; the local one is usually tighter but
only exists for piecewise-linear models. Their maximum is a valid certificate
too, and the finding reports all three.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from audit_core import labels
from audit_core.analysis import Analysis, AuditContext, Requirements
from audit_core.evidence import histogram
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
from audit_core.linearize import decision_distances, linearize

from .norms import DEFAULT_MAX_ENTRIES, LipschitzBound, lipschitz_bound

TSUZUKU = "Tsuzuku, Sato & Sugiyama, Lipschitz-Margin Training (NeurIPS 2018)"
SZEGEDY = "Szegedy et al., Intriguing properties of neural networks (ICLR 2014)"


@dataclass(frozen=True)
class LipschitzConfig:
    """Parameters of the analysis (table ``[lipschitz-certificate]``)."""

    warn_below: float = 0.5
    """Certified accuracy at the first eps below this warns (severity ``low``)."""
    fail_below: float = 0.0
    """Certified accuracy at the first eps below this fails (severity ``medium``); 0: never."""
    logit_tolerance: float = 1e-6
    """Relative logit error of the deployed runtime to guard against (subtracted from each
    margin, scaled by the sample's largest |logit|)."""
    max_matrix_entries: int = DEFAULT_MAX_ENTRIES
    """Largest affine block materialised for an exact spectral norm."""
    compare_with_simplex: bool = True
    """Also compute the local simplex certificate (piecewise-linear models only)."""
    simplex_samples: int = 200
    """Samples the simplex certificate is computed on (the first ones of the audit data)."""


@dataclass(frozen=True)
class _Radii:
    """Per-sample certified radii in the run's norm (NaN where not computed)."""

    lipschitz: np.ndarray
    simplex: np.ndarray

    @property
    def compared(self) -> np.ndarray:
        return np.isfinite(self.simplex)


class LipschitzCertificate(Analysis):
    """Certified radius margin / (sqrt(2) L) from a global Lipschitz bound L."""

    name = "lipschitz-certificate"
    title = "Global Lipschitz certificate"
    description = (
        "Upper-bounds the network's l2 Lipschitz constant L by the product of the spectral "
        "norms of its affine blocks and its activations' constants; certifies each sample "
        "within margin / (sqrt(2) L) and compares with the local simplex certificate."
    )
    tags = ("certified", "lipschitz")
    references = (
        Reference(TSUZUKU, "Proposition 1"),
        Reference(SZEGEDY, "Section 4.3"),
        Reference("singla2019", "Theorem 3 (comparison)"),
    )
    requires = Requirements(data=True)
    Config = LipschitzConfig

    def run(self, ctx: AuditContext) -> Iterable[Finding]:
        config: LipschitzConfig = ctx.config
        graph = ctx.model.graph
        bound = lipschitz_bound(graph, config.max_matrix_entries)
        ctx.progress.total(2)
        ctx.progress.advance()
        radii = _Radii(
            lipschitz=_lipschitz_radii(ctx, bound.constant, config),
            simplex=_simplex_radii(ctx, config),
        )
        ctx.progress.advance()
        ctx.export(
            self.name,
            index=ctx.data.indices,
            label=ctx.data.y,
            radius=radii.lipschitz,
            simplex_radius=radii.simplex,
        )
        yield _radius_finding(ctx, bound, radii, config)
        yield _norms_finding(ctx, bound)

    def headline(self, findings: tuple[Finding, ...]) -> str:
        """``L <= 12.3: 40.0% certified at l2 eps 0.4 (simplex certificate: 55.0%)``."""
        radius = next((f for f in findings if f.id.startswith(f"{self.name}/radius/")), None)
        if radius is None:
            return super().headline(findings)
        values = {m.name: m.value for m in radius.metrics}
        text = (
            f"L <= {values['lipschitz_constant']:.4g}: {values['certified_accuracy']:.1%} "
            f"certified at {values['norm']} eps {values['eps']:.4g}"
        )
        if "simplex_certified_accuracy" in values:
            text += f" (simplex certificate: {values['simplex_certified_accuracy']:.1%})"
        return text


# ---------------------------------------------------------------- radii


def _lipschitz_radii(ctx: AuditContext, constant: float, config: LipschitzConfig) -> np.ndarray:
    graph, data = ctx.model.graph, ctx.data
    logits = graph.forward(data.x).reshape(len(data.x), -1).numpy()
    margins = np.asarray(labels.margin(logits, data.y), dtype=np.float64)
    guard = 2.0 * config.logit_tolerance * np.maximum(1.0, np.abs(logits).max(axis=1))
    scale = math.sqrt(2.0) if logits.shape[1] > 1 else 1.0
    if constant <= 0:  # a constant network: nothing can change its decision
        return np.where(margins - guard > 0, np.inf, 0.0)
    radius_l2 = np.maximum(margins - guard, 0.0) / (scale * constant)
    return _in_norm(radius_l2, ctx)


def _simplex_radii(ctx: AuditContext, config: LipschitzConfig) -> np.ndarray:
    """Singla & Feizi Theorem 3 on the first ``simplex_samples`` samples (NaN elsewhere)."""
    data, graph = ctx.data, ctx.model.graph
    radii = np.full(len(data.x), np.nan)
    if not config.compare_with_simplex or not graph.is_piecewise_linear:
        return radii
    count = min(len(data.x), config.simplex_samples)
    x, y = data.x[:count], data.y[:count]
    lin = linearize(graph, x)
    radius = np.minimum(decision_distances(lin, y).min(axis=1), lin.face_distance)
    correct = graph.predict(x) == y
    radii[:count] = _in_norm(np.where(correct, radius, 0.0), ctx)
    return radii


def _in_norm(radius_l2: np.ndarray, ctx: AuditContext) -> np.ndarray:
    """An l2 radius as a radius in the run's norm (linf: divided by sqrt(D))."""
    if ctx.norm == "linf":
        return radius_l2 / math.sqrt(ctx.model.graph.input_size)
    return radius_l2


def _certified(radius: np.ndarray, eps: float) -> float:
    values = radius[np.isfinite(radius) | np.isposinf(radius)]
    return float(np.mean(values > eps)) if values.size else math.nan


# ---------------------------------------------------------------- findings


def _radius_finding(
    ctx: AuditContext, bound: LipschitzBound, radii: _Radii, config: LipschitzConfig
) -> Finding:
    eps = ctx.eps[0]
    accuracy = _certified(radii.lipschitz, eps)
    judged = grade(  # NaN (nothing measured) fails too
        accuracy,
        "certified_accuracy",
        ">=",
        fail=config.fail_below,
        warn=config.warn_below,
        fail_severity=Severity.MEDIUM,
        warn_severity=Severity.LOW,
    )
    compared = radii.compared
    metrics = [
        Metric("certified_accuracy", accuracy, "fraction", f"radius > eps = {eps:.4g}"),
        Metric("eps", eps, ctx.norm, "the budget the check is judged at"),
        Metric("norm", ctx.norm),
        Metric(
            "lipschitz_constant", bound.constant, "", "upper bound on the l2 Lipschitz constant"
        ),
        Metric("median_radius", float(np.median(radii.lipschitz)), ctx.norm),
        Metric("min_radius", float(np.min(radii.lipschitz)), ctx.norm),
        *_comparison_metrics(radii, eps),
    ]
    summary = (
        f"Global Lipschitz bound L = {bound.constant:.4g}: {accuracy:.1%} of "
        f"{len(radii.lipschitz)} samples certified at {ctx.norm} eps {eps:.4g} "
        f"(median radius {np.median(radii.lipschitz):.4g})" + _comparison_sentence(radii, eps) + "."
    )
    return ctx.finding(
        "radius",
        title=f"Certified {ctx.norm} radius from a global Lipschitz bound",
        status=judged.status,
        severity=judged.severity,
        method=Method.CERTIFIED,
        summary=summary,
        metrics=metrics,
        threshold=judged.threshold,
        evidence=_radius_evidence(ctx, radii, compared),
        remediation=(
            "A small certified radius with a large L: train with a Lipschitz-margin or "
            "spectral-normalisation objective, or rely on the (tighter) local certificates."
        ),
    )


def _comparison_metrics(radii: _Radii, eps: float) -> list[Metric]:
    compared = radii.compared
    if not compared.any():
        return []
    lipschitz, simplex = radii.lipschitz[compared], radii.simplex[compared]
    positive = simplex > 0
    ratio = lipschitz[positive] / simplex[positive]
    combined = np.maximum(lipschitz, simplex)
    return [
        Metric("simplex_certified_accuracy", _certified(simplex, eps), "fraction"),
        Metric("combined_certified_accuracy", _certified(combined, eps), "fraction"),
        Metric(
            "median_ratio_to_simplex",
            float(np.median(ratio)) if ratio.size else math.nan,
            "",
            "Lipschitz radius / simplex radius (samples with a positive simplex radius)",
        ),
        Metric("lipschitz_tighter_fraction", float(np.mean(lipschitz > simplex)), "fraction"),
        Metric("samples_compared", int(compared.sum()), "samples"),
    ]


def _comparison_sentence(radii: _Radii, eps: float) -> str:
    compared = radii.compared
    if not compared.any():
        return "; no simplex certificate to compare with (the model is not piecewise linear)"
    lipschitz, simplex = radii.lipschitz[compared], radii.simplex[compared]
    positive = simplex > 0
    ratio = (
        float(np.median(lipschitz[positive] / simplex[positive])) if positive.any() else math.nan
    )
    return (
        f"; the simplex certificate (Singla & Feizi, Theorem 3) certifies "
        f"{_certified(simplex, eps):.1%}, the better of the two "
        f"{_certified(np.maximum(lipschitz, simplex), eps):.1%}; median ratio "
        f"Lipschitz / simplex radius {ratio:.3g}"
    )


def _radius_evidence(ctx: AuditContext, radii: _Radii, compared: np.ndarray) -> Evidence:
    finite = radii.lipschitz[np.isfinite(radii.lipschitz)]
    top = max([*ctx.eps, float(finite.max()) if finite.size else 0.0]) * 1.2 or 1.0
    grid = np.linspace(0.0, top, 60)
    curves = [("Lipschitz (global)", radii.lipschitz)]
    if compared.any():
        simplex = radii.simplex[compared]
        curves += [
            ("simplex (local, Thm 3)", simplex),
            ("better of the two", np.maximum(radii.lipschitz[compared], simplex)),
        ]
    series = tuple(
        Series(name, floats([np.mean(r > e) for e in grid]), floats(grid), "step")
        for name, r in curves
    )
    summaries = [summarize("lipschitz_radius", radii.lipschitz, ctx.norm)]
    if compared.any():
        summaries.append(summarize("simplex_radius", radii.simplex[compared], ctx.norm))
    return Evidence(
        summaries=tuple(summaries),
        plots=(
            Plot(
                "certified-accuracy",
                "Certified accuracy vs eps",
                "xy",
                f"eps ({ctx.norm})",
                "certified fraction",
                series,
            ),
            histogram(
                "lipschitz-radius",
                "Lipschitz-certified radius per sample",
                radii.lipschitz,
                x_label=f"radius ({ctx.norm})",
                series="radius",
            ),
        ),
        notes=(
            "Radius = (margin - rounding guard) / (sqrt(2) L); a misclassified sample has "
            "radius 0. Every radius is a proven lower bound on the distance to the "
            "nearest adversarial example.",
        ),
    )


def _norms_finding(ctx: AuditContext, bound: LipschitzBound) -> Finding:
    factors = bound.factors
    largest = max(factors, key=lambda f: f.value) if factors else None
    how = "composed affine blocks" if bound.composed else "node by node (parallel branches)"
    metrics = [Metric("lipschitz_constant", bound.constant)] + [
        Metric(f"factor[{i}: {f.label}]", f.value, "", f.how) for i, f in enumerate(factors)
    ]
    summary = f"L <= {bound.constant:.4g}, {how}" + (
        f"; the largest factor is {largest.label} ({largest.value:.4g})." if largest else "."
    )
    plot = Plot(
        "factors",
        "Lipschitz factor per block",
        "xy",
        "block",
        "factor",
        (
            Series(
                "factor",
                floats(f.value for f in factors),
                floats(range(len(factors))),
                "scatter",
            ),
        ),
    )
    return ctx.finding(
        "factors",
        title="Where the Lipschitz constant comes from",
        status=Status.PASS,
        severity=Severity.INFO,
        method=Method.CERTIFIED,
        summary=summary,
        metrics=metrics,
        evidence=Evidence(plots=(plot,), notes=tuple(f"{f.label}: {f.how}" for f in factors)),
    )
