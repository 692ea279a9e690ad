"""The kkt analysis's findings (Vardi, Yehudai & Shamir 2022): the universal perturbation
along z (Theorem 4.1, Section 6), Theorem 4.1 / Corollary 4.1 with every assumption, the
margin set, and Theorem 3.1's robust network."""

from __future__ import annotations

import numpy as np

from audit_core.analysis import AuditContext
from audit_core.evidence import adversarial_example, histogram
from audit_core.findings import (
    Assumption,
    Evidence,
    Finding,
    Method,
    Metric,
    Plot,
    Reference,
    Series,
    Severity,
    Status,
    Threshold,
    floats,
    summarize,
)
from audit_core.grading import Grade, grade
from audit_plugins.kkt import PAPER, KKTConfig
from audit_plugins.kkt.compute import KKTResults, Universal
from audit_plugins.kkt.geometry import DataConditions, Depth2Net, KKTFit, MarginSet, negative_after


def _flip_grade(ratio: float, config: KKTConfig) -> Grade:
    """``c / sqrt(d)`` against ``high_below`` (fail, high) and ``medium_below`` (warn)."""
    return grade(ratio, "c_over_sqrt_d", ">=", fail=config.high_below, warn=config.medium_below)


def _number(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def universal_finding(ctx: AuditContext, r: KKTResults) -> Finding:
    """The measured universal perturbation along z against sqrt(d) (Theorem 4.1, Sec. 6)."""
    config: KKTConfig = ctx.config
    x, y, margin, universal = r.x, r.y, r.margin, r.universal
    d = x.shape[1]
    c = universal.flip.c
    root_d = float(np.sqrt(d))
    typical = float(np.median(np.linalg.norm(x, axis=1)))
    ratio = c / root_d
    judged = _flip_grade(ratio, config)
    size = int(margin.mask.sum())
    flipped = float(universal.flipped.mean())
    if np.isfinite(c):
        summary = (
            f"One l2 perturbation of norm c = {c:.4g} along z = sum_I y_i x_i flips all "
            f"{size} points of the margin set I: c / sqrt(d) = {ratio:.3g} (sqrt(d) = "
            f"{root_d:.4g}, median ||x|| = {typical:.4g}); at that c it misclassifies "
            f"{flipped:.1%} of all {len(x)} audit points."
        )
    else:
        summary = f"No multiple of z = sum_I y_i x_i flips all {size} points of I."
    worst = np.argmax(np.where(margin.mask, universal.starts[:, 0], -np.inf))
    return ctx.finding(
        "universal-perturbation",
        title="Universal perturbation along z = sum_I y_i x_i (l2, exact along the line)",
        status=judged.status,
        severity=judged.severity,
        method=Method.EMPIRICAL,
        summary=summary,
        metrics=[
            Metric("c", _number(c), "l2", "smallest c flipping every point of I along z/||z||"),
            Metric("sqrt_d", root_d, "l2"),
            Metric("c_over_sqrt_d", _number(ratio), "ratio"),
            Metric("median_norm", typical, "l2", "median ||x_i|| of the audit data"),
            Metric("c_over_median_norm", _number(c / typical) if typical else None, "ratio"),
            Metric("margin_set_size", size, "samples"),
            Metric("flipped_fraction", flipped, "fraction", "all audit points misclassified at c"),
            Metric(
                "flipped_outside_margin_set",
                int(universal.flipped[~margin.mask].sum()),
                "samples",
            ),
        ],
        threshold=judged.threshold,
        evidence=Evidence(
            summaries=(summarize("first_flip_on_margin", universal.starts[margin.mask, 0], "l2"),),
            examples=_examples(ctx, y, universal, worst) if np.isfinite(c) else (),
            plots=(_flip_curve(universal, margin, root_d, config.plot_points),),
            notes=(
                "Exact for this network along z: N is piecewise linear on the line and c is "
                "found from its breakpoints (not a grid); a sample that flips and flips back "
                "counts only where it is flipped. The smallest universal perturbation over "
                "all directions can only be smaller.",
                "Checked by the layer graph's forward pass just above c.",
            ),
        ),
        remediation=(
            "Margin maximisation in parameter space (the implicit bias of gradient descent "
            "on exponentially-tailed losses) drives depth-2 nets to this non-robust "
            "solution; adversarial training or certified training changes the objective."
        ),
        references=(Reference(PAPER, "Theorem 4.1, Section 6 (Figure 1)"),),
    )


def _examples(ctx: AuditContext, y: np.ndarray, universal: Universal, position: int) -> tuple:
    c = universal.flip.c_inside
    x_adv = ctx.data.flat[position] - y[position] * c * universal.u
    values = {
        "first_flip": float(universal.starts[position, 0]),
        "perturbation_norm": float(c),
    }
    return (
        adversarial_example(ctx.data, int(position), x_adv.reshape(ctx.data.x.shape[1:]), values),
    )


def _flip_curve(universal: Universal, margin: MarginSet, root_d: float, points: int) -> Plot:
    c = universal.flip.c
    top = max(1.5 * c, root_d) if np.isfinite(c) else 2 * root_d
    grid = np.linspace(0.0, top, points)
    negative = negative_after(universal.starts, universal.ends, grid)
    return Plot(
        id="flipped-fraction",
        title="Fraction flipped by t z/||z|| (exact)",
        x_label="perturbation norm t (l2)",
        y_label="fraction flipped",
        series=(
            Series("margin set I", floats(negative[margin.mask].mean(0)), floats(grid), "step"),
            Series("all audit points", floats(negative.mean(0)), floats(grid), "step"),
            Series("sqrt(d)", floats([0.0, 1.0]), floats([root_d, root_d]), "line"),
        ),
    )


def theorem41_finding(ctx: AuditContext, r: KKTResults) -> Finding:
    """Theorem 4.1 / Corollary 4.1: KKT proximity and every assumption, checked or not."""
    config: KKTConfig = ctx.config
    net, x, margin, universal, kkt = r.net, r.x, r.margin, r.universal, r.kkt
    everything, on_margin = r.everything, r.on_margin
    misclassified = int(np.sum(margin.margins <= 0))
    assumptions = _theorem41_assumptions(config, net, kkt, on_margin, everything, misclassified)
    kkt_ok = kkt.residual <= config.kkt_tol
    corollary = assumptions[:-1]  # the last one is Theorem 4.1's version on all the data
    applies = all(a.holds for a in corollary if a.holds is not None)
    ratio = universal.flip.c / np.sqrt(x.shape[1])
    if applies:
        status, severity = Status.FAIL, max(_flip_grade(ratio, config).severity, Severity.MEDIUM)
        verdict = (
            "Corollary 4.1 applies: the net is a KKT point of problem (2) and the margin set "
            "meets the data conditions, so one perturbation eta z of norm "
            f"O(sqrt(d / (c^2 |I|))) = O({on_margin.predicted_scale:.3g}) flips all of I."
        )
    elif kkt_ok:
        status, severity = Status.WARN, Severity.LOW
        failing = [a.name for a in assumptions if a.holds is False]
        verdict = (
            "The net is close to a KKT point, but " + "; ".join(failing) + " fails: the "
            "theorem's conclusion is not guaranteed here (Section 6 observes it beyond them)."
        )
    else:
        status, severity = Status.PASS, Severity.INFO
        verdict = (
            f"The net is far from a KKT point of problem (2) (relative residual "
            f"{kkt.residual:.3g} > {config.kkt_tol:g}), so Theorem 4.1 says nothing about it; "
            "the measured universal perturbation is what counts."
        )
        if kkt.imbalance > config.kkt_tol:
            verdict += (
                f" The per-neuron imbalance ||w_j||^2 + b_j^2 - v_j^2 (0 at a KKT point, "
                f"conserved by gradient flow) is {kkt.imbalance:.3g} of ||theta||^2: the "
                "initialisation of a trained net still dominates its weights."
            )
    summary = (
        f"KKT proximity: relative residual {kkt.residual:.3g} with lambda >= 0 on the "
        f"{on_margin.count} margin points (per-neuron imbalance {kkt.imbalance:.3g}). " + verdict
    )
    return ctx.finding(
        "theorem-4-1",
        title="Theorem 4.1 / Corollary 4.1: KKT points of the max-margin problem are non-robust",
        status=status,
        severity=severity,
        method=Method.THEOREM,
        summary=summary,
        metrics=_theorem41_metrics(kkt, on_margin, everything),
        threshold=Threshold("kkt_relative_residual", "<=", config.kkt_tol),
        assumptions=tuple(assumptions),
        evidence=Evidence(
            summaries=(summarize("lambda", kkt.lam),),
            notes=(
                "Parameters normalised to min_i y_i N(x_i) = 1 (degree-2 homogeneity); "
                "residual ||theta - sum_I lambda_i grad y_i N(x_i)|| / ||theta|| over all "
                "parameters (first-layer weights and biases, output weights), lambda by "
                "nonnegative least squares.",
                f"ReLU subgradient: {kkt.kinks} (sample, neuron) pairs within a relative "
                f"{config.zero_tol:g} of the kink get sigma' free in [0, 1] (Clarke "
                "subdifferential), chosen to fit best; elsewhere sigma' = 1(pre > 0).",
                "Gradient flow conserves ||w_j||^2 + b_j^2 - v_j^2 per neuron, which is 0 at a "
                "KKT point: a large imbalance means the initialisation still dominates and "
                "the net is far from the KKT direction however small its loss.",
            ),
        ),
        remediation=(
            "The theorem concerns the training set: audit the exact training data. A net "
            "far from a KKT point was not trained long enough (or from too large an "
            "initialisation) for the implicit bias to have taken over."
        ),
        references=(
            Reference(PAPER, "Theorem 4.1, Corollary 4.1"),
            Reference(PAPER, "Theorem 2.1, equations (2)-(4)"),
        ),
    )


def _theorem41_assumptions(
    config: KKTConfig,
    net: Depth2Net,
    kkt: KKTFit,
    on_margin: DataConditions,
    everything: DataConditions,
    misclassified: int,
) -> list[Assumption]:
    def size(cond: DataConditions) -> str:
        return (
            f"{cond.count} points, bound (d+1)/(3(p+1)) = {cond.size_bound:.3g} with "
            f"p = max|<x_i, x_j>| = {cond.max_inner:.3g}"
        )

    def sphere(cond: DataConditions) -> bool:
        return cond.norm_deviation <= config.norm_rtol

    whole = sphere(everything) and everything.size_ok and everything.balance > 0
    return [
        Assumption(
            "homogeneous depth-2 ReLU network (no output bias)",
            net.beta == 0,
            f"output bias {net.beta:.3g}",
        ),
        Assumption(
            "zero training loss: every audit point classified correctly (Theorem 2.1)",
            misclassified == 0,
            f"{misclassified} of {everything.count} misclassified",
        ),
        Assumption(
            "the audit data is the training set",
            None,
            "not checkable: the theorems concern the training set",
        ),
        Assumption(
            "the parameters are a KKT point of problem (2)",
            kkt.residual <= config.kkt_tol,
            f"relative residual {kkt.residual:.3g} (tolerance {config.kkt_tol:g})",
        ),
        Assumption(
            "Corollary 4.1: ||x_i|| = sqrt(d) on I",
            sphere(on_margin),
            f"max | ||x_i|| / sqrt(d) - 1 | = {on_margin.norm_deviation:.3g} "
            f"(tolerance {config.norm_rtol:g})",
        ),
        Assumption(
            "Corollary 4.1: |I| <= (d+1) / (3 (max_{i != j in I} |<x_i, x_j>| + 1))",
            on_margin.size_ok,
            size(on_margin),
        ),
        Assumption(
            "Corollary 4.1: both classes on the margin (c = min(|I+|, |I-|) / |I| > 0)",
            on_margin.balance > 0,
            f"c = {on_margin.balance:.3g} ({on_margin.positives} positive, "
            f"{on_margin.negatives} negative)",
        ),
        Assumption(
            "Theorem 4.1: the same three conditions on the whole audit set",
            whole,
            f"norm deviation {everything.norm_deviation:.3g}; {size(everything)}; "
            f"c = {everything.balance:.3g} (Corollary 4.1 needs them on I only)",
        ),
    ]


def _theorem41_metrics(
    kkt: KKTFit, on_margin: DataConditions, everything: DataConditions
) -> list[Metric]:
    metrics = [
        Metric("kkt_relative_residual", kkt.residual, "ratio"),
        Metric(
            "kkt_imbalance", kkt.imbalance, "ratio", "sum_j |w_j^2 + b_j^2 - v_j^2| / |theta|^2"
        ),
        Metric("kkt_kink_pairs", kkt.kinks, "pairs"),
        Metric("kkt_active_multipliers", int(np.sum(kkt.lam > 0)), "samples"),
        Metric("margin_set_size", on_margin.count, "samples"),
        Metric("margin_set_size_bound", on_margin.size_bound, "samples"),
        Metric("max_inner_product_on_margin", on_margin.max_inner, ""),
        Metric("class_balance", on_margin.balance, "fraction"),
        Metric("norm_deviation_on_margin", on_margin.norm_deviation, "ratio"),
        Metric("dataset_size_bound", everything.size_bound, "samples"),
        Metric("predicted_scale", _number(on_margin.predicted_scale), "l2", "sqrt(d/(c^2 |I|))"),
    ]
    metrics += [
        Metric(f"kkt_residual_{name}", value, "ratio")
        for name, value in kkt.block_residuals.items()
    ]
    return metrics


def margin_finding(ctx: AuditContext, r: KKTResults) -> Finding:
    """The margin set I and the normalised margins (Section 6)."""
    config: KKTConfig = ctx.config
    margin = r.margin
    correct = margin.margins > 0
    size = int(margin.mask.sum())
    inside = margin.normalised[margin.mask]
    summary = (
        f"{size} of {len(margin.mask)} audit points ({size / len(margin.mask):.1%}) are on the "
        f"margin (within {config.slack:.0%} of the smallest margin {margin.gamma:.4g}); "
        f"normalised margins on I from 1 to {inside.max():.4g}"
        + (f"; {int((~correct).sum())} misclassified." if (~correct).any() else ".")
    )
    return ctx.finding(
        "margin-set",
        title="Margin set I (normalised margins)",
        status=Status.PASS,
        severity=Severity.INFO,
        method=Method.EMPIRICAL,
        summary=summary,
        metrics=[
            Metric("margin_set_size", size, "samples"),
            Metric("margin_set_fraction", size / len(margin.mask), "fraction"),
            Metric("min_margin", margin.gamma, "logit"),
            Metric("misclassified", int((~correct).sum()), "samples"),
            Metric("slack", config.slack, "ratio"),
        ],
        evidence=Evidence(
            summaries=(summarize("normalised_margin", margin.normalised[correct]),),
            plots=(
                histogram(
                    "normalised-margins",
                    "Normalised margins y_i N(x_i) / min_j y_j N(x_j)",
                    margin.normalised[correct],
                    x_label="normalised margin",
                    series="correctly classified",
                ),
            ),
        ),
        references=(Reference(PAPER, "Section 6 (Margin, Figure 2)"),),
    )


def theorem31_finding(ctx: AuditContext, r: KKTResults) -> Finding:
    """Theorem 3.1: whether a sqrt(d)-robust depth-2 network exists for the audit data."""
    config: KKTConfig = ctx.config
    m = r.x.shape[0]
    constant, radius, robust_c = r.theorem31.constant, r.theorem31.radius, r.theorem31.robust_c
    deviation = r.everything.norm_deviation
    holds = constant < 1 and deviation <= config.norm_rtol
    width = r.net.W.shape[0]
    c = r.universal.flip.c
    if holds:
        summary = (
            f"Theorem 3.1 holds on the audit data: a depth-2 ReLU net of width {m} labels "
            f"every point with margin 1 and no l2 perturbation of norm <= (1 - c)/4 sqrt(d) = "
            f"{radius:.4g} flips any of them (c = max|<x_i, x_j>| / d = {constant:.3g}). "
            f"Along z, that net needs c = {robust_c:.4g} to flip all of I; the audited net "
            f"{c:.4g}."
        )
    else:
        summary = (
            f"Theorem 3.1 does not apply (c = max|<x_i, x_j>| / d = {constant:.3g}, norm "
            f"deviation from sqrt(d) {deviation:.3g}): no robust network is guaranteed."
        )
    return ctx.finding(
        "theorem-3-1",
        title="Theorem 3.1: a sqrt(d)-robust depth-2 network exists",
        status=Status.PASS,
        severity=Severity.INFO,
        method=Method.THEOREM,
        summary=summary,
        metrics=[
            Metric("theorem31_c", constant, "ratio", "max_{i != j} |<x_i, x_j>| / d"),
            Metric("robust_radius", radius if holds else None, "l2", "(1 - c) / 4 sqrt(d)"),
            Metric(
                "robust_net_c_along_z",
                _number(robust_c),
                "l2",
                "smallest c flipping all of I along z for Theorem 3.1's network",
            ),
            Metric("robust_width", m, "neurons"),
            Metric("audited_width", width, "neurons"),
        ],
        assumptions=(
            Assumption(
                "||x_i|| = sqrt(d) for every audit point",
                deviation <= config.norm_rtol,
                f"max | ||x_i|| / sqrt(d) - 1 | = {deviation:.3g}",
            ),
            Assumption(
                "|<x_i, x_j>| <= c d for i != j with c < 1", constant < 1, f"c = {constant:.3g}"
            ),
            Assumption(
                "width k >= m (for a robust net of the audited width)",
                width >= m,
                f"k = {width}, m = {m}",
            ),
            Assumption("the audit data is the training set", None, "not checkable"),
        ),
        evidence=Evidence(
            notes=(
                "The construction: v_j = y_j, w_j = 2 x_j / (d (1 - c)), "
                "b_j = -(1 + c) / (1 - c), one neuron per point.",
            )
        ),
        references=(Reference(PAPER, "Theorem 3.1"),),
    )
