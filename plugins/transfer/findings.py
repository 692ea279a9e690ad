"""The transfer analyses' findings (Charles, Rosenberg & Papailiopoulos 2019): the
max-margin directions and Theorem 5 (linear-transfer), the convex structure and the
direction x_beta - x_alpha (convex-transfer), the transfer matrix and each target's most
transferable source (model-transfer, Section 7), and their headlines."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from audit_core.analysis import AuditContext
from audit_core.data import AuditData
from audit_core.evidence import histogram
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
    floats,
    summarize,
)
from audit_core.grading import grade
from audit_core.grading import worst as worst_grade
from audit_plugins.transfer import (
    PAPER,
    ConvexTransferConfig,
    LinearTransferConfig,
    ModelTransferConfig,
)
from audit_plugins.transfer.common import box_diameter, class_name, norm_of, smallest_reaching
from audit_plugins.transfer.convex import ClassDirection, Convexity
from audit_plugins.transfer.linear import PairResult, flip_norms
from audit_plugins.transfer.models import TransferResults, most_transferable, target_view
from audit_plugins.transfer.structure import Structure


def by_check(findings: tuple[Finding, ...], check: str) -> Finding | None:
    """The finding of ``check`` (the middle part of its id), or None."""
    return next((f for f in findings if f.id.split("/")[1] == check), None)


def linear_headline(findings: tuple[Finding, ...]) -> str:
    """linear-transfer's line on the report's first screen."""
    direction = by_check(findings, "direction-transfer")
    if direction is None:
        return findings[0].summary if findings else ""
    values = {m.name: m.value for m in direction.metrics}
    t50 = {
        k: v
        for k, v in values.items()
        if k.startswith("norm_flipping_50%") and v is not None and np.isfinite(v)
    }
    text = "max-margin directions: "
    if t50:
        name = min(t50, key=t50.get)
        random = values.get("random_" + name)
        finite = random is not None and np.isfinite(random)
        shown = f"{random:.3g}" if finite else "never on the grid"
        text += f"50% of a class flipped at l2 norm {t50[name]:.3g} (random: {shown})"
    else:
        text += "no class half-flipped on the grid"
    guarantee = by_check(findings, "guarantee")
    if guarantee is not None:
        checked = guarantee.metric("points_checked").value
        text += f"; Theorem 5 verified on {checked} points"
    return text


def convex_headline(findings: tuple[Finding, ...]) -> str:
    """convex-transfer's line on the report's first screen."""
    structure, direction = by_check(findings, "structure"), by_check(findings, "direction")
    if structure is None or direction is None:
        return findings[0].summary if findings else ""
    kind = structure.metric("structure").value
    norms = {
        m.name: m.value
        for m in direction.metrics
        if m.name.startswith("universal_norm") and m.value is not None
    }
    smallest = min(norms.values()) if norms else float("nan")
    if kind == "none":
        leaving = by_check(findings, "convexity").metric("segments_leaving").value
        return (
            f"no provably convex region ({leaving:.0%} of same-class segments leave the "
            f"class); x_beta - x_alpha flips a whole class at norm {smallest:.3g} (measured)"
        )
    return (
        f"convex region ({kind}): one perturbation c v of norm {smallest:.3g} flips every "
        "point of a class (exact)"
    )


def model_headline(findings: tuple[Finding, ...]) -> str:
    """model-transfer's line on the report's first screen."""
    targets = [f for f in findings if f.id.split("/")[1].startswith("target-")]
    if not targets:
        return findings[0].summary if findings else ""
    pairs = [
        f"{f.id.split('/')[1].removeprefix('target-')} <- "
        f"{f.metric('most_transferable_source').value}"
        for f in targets
    ]
    return "most transferable source per target: " + ", ".join(pairs)


# =============================================================== linear transfer


def _pair_label(data: AuditData, pair: PairResult) -> str:
    return f"({class_name(data, pair.k)}, {class_name(data, pair.j)})"


def max_margin_finding(
    ctx: AuditContext, results: list[PairResult], affine: bool, notes: list[str]
) -> Finding:
    """Theorems 4, 8 and Corollary 6: the max-margin direction and c_S per pair."""
    data = ctx.data
    metrics, lines = [], []
    for r in results:
        svm = r.svm
        metrics += [
            Metric(f"c_S[{r.key}]", svm.c_S, "", "1 / sum(alpha) (Corollary 6)"),
            Metric(f"margin[{r.key}]", svm.geometric_margin, "l2", "gamma* of the SVM"),
            Metric(f"support_vectors[{r.key}]", svm.support_vectors, "points"),
            Metric(f"svm_set_size[{r.key}]", len(svm.subset), "points"),
            Metric(f"pair_size[{r.key}]", len(r.positions), "points"),
        ]
        lines.append(
            f"pair {_pair_label(data, r)}: SVM on {len(svm.subset)}/{len(r.positions)} points "
            f"({svm.how}); gamma* = {svm.geometric_margin:.4g}, {svm.support_vectors} support "
            f"vectors, c_S = {svm.c_S:.4g}"
        )
    all_separable = all(r.svm.how.startswith("all points") for r in results)
    worst_residual = max(r.svm.dual_residual for r in results)
    assumptions = (
        Assumption(
            "S[k, l] is linearly separable (LP feasibility of y (w.x + b) >= 1)",
            all_separable,
            "all analysed pairs separable"
            if all_separable
            else "some pairs are not: their SVM is solved on a separable subset (see notes)",
        ),
        Assumption(
            "the SVM is hard-margin (every y (w*.x + b*) >= 1 - tol)",
            all(r.hard for r in results),
            f"min margins {', '.join(f'{r.svm.min_margin:.6g}' for r in results)}",
        ),
        Assumption(
            "Lemma 3: alpha >= 0, sum alpha y = 0, w* = sum alpha y x",
            worst_residual < 1e-8,
            f"w* is built from alpha; largest |sum alpha y| / sum alpha = {worst_residual:.2g}",
        ),
        Assumption(
            "the audited model is linear (so the statement covers it)",
            affine,
            "affine: Theorem 5 is applied to it on the points it separates (guarantee finding)"
            if affine
            else "the model is not affine: the statement is about every linear separator of "
            "S[k, l]; the direction test measures how the direction transfers to this model",
        ),
    )
    summary = (
        f"Max-margin direction w* for {len(results)} class pair(s). By Theorems 4 and 8, for "
        "every linear classifier that separates S[k, l], -y w* is an adversarial direction at "
        "every point (x, y) of it; by Corollary 6, -c y w* flips the least-margin point of "
        f"every such classifier for c > c_S = 1/sum(alpha). " + "; ".join(lines) + "."
    )
    return ctx.finding(
        "max-margin",
        title="Max-margin transferable directions per class pair",
        status=Status.PASS,
        severity=Severity.INFO,
        method=Method.THEOREM,
        summary=summary,
        metrics=metrics,
        assumptions=assumptions,
        evidence=Evidence(notes=tuple(notes)),
        references=(
            Reference(PAPER, "Lemma 3"),
            Reference(PAPER, "Theorem 4"),
            Reference(PAPER, "Corollary 6"),
            Reference(PAPER, "Theorem 8"),
        ),
    )


def guarantee_finding(ctx: AuditContext, results: list[PairResult]) -> Finding:
    """Theorem 5 (through Theorem 8) checked exactly on an affine model."""
    config: LinearTransferConfig = ctx.config
    data, eps, unit = ctx.data, ctx.eps[0], ctx.norm
    metrics, lines, worst = [], [], 0.0
    checked = violations = 0
    all_norms = []
    for r in results:
        g = r.guarantee
        assert g is not None
        ok = g.forward_flipped & (g.theorem.ratio >= 1.0 - 1e-9) & (g.theorem.inner > 0)
        checked += len(g.positions)
        violations += int((~ok).sum())
        all_norms.append(g.perturbation_norm)
        for label in (r.k, r.j):
            mask = g.labels == label
            if not mask.any():
                continue
            universal = float(g.perturbation_norm[mask].max())
            fraction = float(np.mean(g.perturbation_norm[mask] <= eps))
            worst = max(worst, fraction)
            metrics += [
                Metric(
                    f"universal_norm[{r.key}:{label}]",
                    universal,
                    unit,
                    "one perturbation c w* of this norm flips every checked point of the class",
                ),
                Metric(f"guaranteed_flip_fraction@{eps:g}[{r.key}:{label}]", fraction, "fraction"),
            ]
        metrics.append(Metric(f"a4_ratio[{r.key}]", g.theorem.ratio, "", "(A.4) needs >= 1"))
        lines.append(
            f"pair {_pair_label(data, r)}: {len(g.positions)} points, largest bound "
            f"{g.bound.max() if g.bound.size else float('nan'):.4g} (norm "
            f"{g.perturbation_norm.max() if g.bound.size else float('nan'):.4g}), "
            f"<w, w*> / (gamma_h sum alpha) = {g.theorem.ratio:.4g}"
        )
    metrics += [
        Metric("points_checked", checked, "points"),
        Metric("violations", violations, "points"),
        Metric("guaranteed_flip_fraction", worst, "fraction", f"worst class, at eps {eps:g}"),
    ]
    judged = worst_grade(
        grade(worst, "guaranteed_flip_fraction", "<", warn=config.warn_flip_rate),
        grade(violations, "violations", "==", fail=0),
    )
    summary = (
        f"The model is affine, so Theorem 5 applies to it (through Theorem 8 for the pair "
        f"classifier z_k - z_l): every correctly classified point x of class y in the SVM's set "
        f"is misclassified at x - c y w* for every c > y(<w, x> + b) / (gamma_h sum alpha). "
        f"Checked exactly on {checked} points ({violations} violations): inequality (A.4) "
        f"<w, w*> >= gamma_h sum alpha in float64, and forward passes just beyond and 4x "
        f"beyond each bound. Within {unit} eps {eps:g}, the single direction provably flips "
        f"{worst:.0%} of the worst class. " + "; ".join(lines) + "."
    )
    norms = np.concatenate(all_norms) if all_norms else np.zeros(0)
    return ctx.finding(
        "guarantee",
        title="Theorem 5 on the audited (affine) model",
        status=judged.status,
        severity=judged.severity,
        method=Method.THEOREM,
        summary=summary,
        metrics=metrics,
        threshold=judged.threshold,
        assumptions=(
            Assumption("the model is affine (dense view of depth 1)", True, ""),
            Assumption(
                "the model separates the SVM's set S (h in H_S)",
                True,
                "S restricted to the points its pair classifier separates where needed",
            ),
            Assumption("Lemma 3 dual conditions hold for the computed alpha", True, ""),
        ),
        evidence=Evidence(
            summaries=(summarize("theorem5_perturbation_norm", norms, unit),),
            plots=(
                histogram(
                    "theorem5-norms",
                    "Norm of -c y w* at Theorem 5's bound, per point",
                    norms,
                    x_label=f"perturbation norm ({unit})",
                    y_label="points",
                    series="Theorem 5 bound",
                ),
            ),
        ),
        remediation="A linear model is moved by one direction on every point at once: "
        "enlarge its margin (regularisation, more data) or use a robustly trained model.",
        references=(Reference(PAPER, "Theorem 5"), Reference(PAPER, "Theorem 8")),
    )


def direction_finding(ctx: AuditContext, results: list[PairResult]) -> Finding:
    """How the one max-margin direction transfers across each class (measured)."""
    config: LinearTransferConfig = ctx.config
    data, eps = ctx.data, ctx.eps[0]
    scales = flip_norms(ctx)
    metrics, plots, lines = [], [], []
    worst = 0.0
    for r in results:
        series = []
        for curve in r.curves:
            name = class_name(data, curve.label)
            tag = f"{r.key}:{curve.label}"
            t50 = smallest_reaching(scales, curve.direction, 0.5)
            t90 = smallest_reaching(scales, curve.direction, 0.9)
            r50 = smallest_reaching(scales, curve.random, 0.5)
            worst = max(worst, np.nan_to_num(curve.flip_at_eps))
            metrics += [
                Metric(f"norm_flipping_50%[{tag}]", t50, "l2", "smallest grid norm along -y w*"),
                Metric(f"norm_flipping_90%[{tag}]", t90, "l2"),
                Metric(f"random_norm_flipping_50%[{tag}]", r50, "l2"),
                Metric(f"flip_rate@{eps:g}[{tag}]", curve.flip_at_eps, "fraction"),
                Metric(f"random_flip_rate@{eps:g}[{tag}]", curve.random_at_eps, "fraction"),
            ]
            series += [
                Series(f"class {name} along -y w*", floats(curve.direction), floats(scales)),
                Series(f"class {name} random", floats(curve.random), floats(scales)),
            ]
            lines.append(
                f"class {name} of pair {_pair_label(data, r)} ({curve.count} points): 50% "
                f"flipped at l2 norm {_shown(t50, scales)} (random: {_shown(r50, scales)}), "
                f"90% at {_shown(t90, scales)}; at "
                f"{ctx.norm} eps {eps:g} {curve.flip_at_eps:.0%} (random "
                f"{curve.random_at_eps:.0%})"
            )
        plots.append(
            Plot(
                id=f"flip-rate-{r.key}",
                title=f"Flip rate vs perturbation norm, pair {_pair_label(data, r)}",
                x_label="perturbation l2 norm",
                y_label="fraction of the class flipped",
                series=tuple(series),
            )
        )
    metrics.append(Metric("worst_flip_rate", worst, "fraction", f"at {ctx.norm} eps {eps:g}"))
    judged = grade(worst, "worst_flip_rate", "<", warn=config.warn_flip_rate)
    summary = (
        "One max-margin direction per pair, applied to every correctly classified point of "
        "the class (no clipping to the input box), against random directions of the same "
        "norm (grid of " + f"{len(scales)} norms up to {scales[-1]:.3g}): " + "; ".join(lines) + "."
    )
    return ctx.finding(
        "direction-transfer",
        title="How the max-margin direction transfers across the class (measured)",
        status=judged.status,
        severity=judged.severity,
        method=Method.EMPIRICAL,
        summary=summary,
        metrics=metrics,
        threshold=judged.threshold,
        evidence=Evidence(plots=tuple(plots)),
        references=(Reference(PAPER, "Theorem 4"), Reference(PAPER, "Section 6")),
    )


def _shown(value: float, scales: np.ndarray) -> str:
    return f"{value:.3g}" if np.isfinite(value) else f"> {scales[-1]:.3g} (never on the grid)"


# =============================================================== convex-region transfer


def structure_finding(ctx: AuditContext, structure: Structure | None, why: str) -> Finding:
    """Which class region is provably convex, and by which lemma or theorem."""
    data = ctx.data
    if structure is None:
        return ctx.finding(
            "structure",
            title="No decision region is provably convex",
            status=Status.PASS,
            severity=Severity.INFO,
            method=Method.EMPIRICAL,
            summary=f"The theorems on convex regions do not cover this model: it is {why}. "
            "The convexity and direction tests below are empirical.",
            metrics=[Metric("structure", "none", ""), Metric("convex_classes", 0, "classes")],
        )
    names = ", ".join(class_name(data, k) for k in structure.convex_classes)
    assumptions = (
        *(Assumption(n, h, d) for n, h, d in structure.checks),
        Assumption("the graph is an exact copy of the ONNX model (fidelity check)", True, ""),
    )
    return ctx.finding(
        "structure",
        title=f"Convex decision region: class {names} ({structure.kind})",
        status=Status.PASS,
        severity=Severity.INFO,
        method=Method.THEOREM,
        summary=f"The decision region of class {names} is convex: {structure.reason}.",
        metrics=[
            Metric("structure", structure.kind, ""),
            Metric("convex_classes", len(structure.convex_classes), "classes"),
            *(Metric(key, value) for key, value in structure.extra.items()),
        ],
        assumptions=assumptions,
        references=tuple(Reference(PAPER, t) for t in structure.theorems),
    )


def _class_metrics(
    ctx: AuditContext, d: ClassDirection, exact: bool
) -> tuple[list[Metric], str, float, np.ndarray]:
    data, eps, unit = ctx.data, ctx.eps[0], ctx.norm
    v_norm = float(norm_of(d.v, unit))
    norms = d.scales * v_norm
    universal = float(norms.max()) if norms.size else float("nan")
    at_eps = float(np.mean(norms <= eps)) if norms.size else float("nan")
    found = float(np.mean(np.isfinite(norms))) if norms.size else float("nan")
    k = d.label
    metrics = [
        Metric(f"universal_norm[{k}]", universal, unit, "c_max ||v||: flips the whole class"),
        Metric(f"median_norm[{k}]", float(np.median(norms)) if norms.size else None, unit),
        Metric(f"flip_fraction@{eps:g}[{k}]", at_eps, "fraction"),
        Metric(f"flipped_fraction[{k}]", found, "fraction", "points whose ray leaves the class"),
        Metric(f"v_norm[{k}]", v_norm, unit),
        Metric(f"x_alpha[{k}]", int(data.indices[d.alpha]), "sample"),
        Metric(f"x_beta[{k}]", int(data.indices[d.beta]), "sample"),
    ]
    how = "exactly" if exact else "on the ray grid"
    line = (
        f"class {class_name(data, k)} ({len(norms)} points): v = x[{data.indices[d.beta]}] - "
        f"x[{data.indices[d.alpha]}] (||v|| = {v_norm:.3g}) flips {found:.0%} of the class "
        f"({how}); median norm {np.median(norms) if norms.size else float('nan'):.3g}, whole "
        f"class at {universal:.3g}, {at_eps:.0%} within eps {eps:g}"
    )
    if d.max_margin_scales is not None:
        reach = box_diameter(data)  # along the unit vector -y w*/||w*||: scale = l2 norm
        mm = d.max_margin_scales
        flipped = float(np.mean(mm <= reach))
        metrics.append(
            Metric(
                f"max_margin_flipped_fraction[{k}]",
                flipped,
                "fraction",
                f"along -y w*, within the l2 diameter {reach:.3g} of the input box (Section 6)",
            )
        )
        line += (
            f"; the max-margin direction -y w* flips {flipped:.0%} of it within l2 norm "
            f"{reach:.3g} (Section 6: it need not transfer to such nets)"
        )
    return metrics, line, at_eps, norms


def convex_direction_finding(
    ctx: AuditContext, structure: Structure, directions: list[ClassDirection]
) -> Finding:
    """Theorems 11-16: the direction x_beta - x_alpha, exact flip scales."""
    config: ConvexTransferConfig = ctx.config
    metrics, lines, series, worst = [], [], [], 0.0
    checked = mismatches = 0
    for d in directions:
        m, line, at_eps, norms = _class_metrics(ctx, d, exact=True)
        metrics += m
        lines.append(line)
        worst = max(worst, np.nan_to_num(at_eps))
        checked, mismatches = checked + d.checked, mismatches + d.mismatches
        ordered = np.sort(norms[np.isfinite(norms)])
        series.append(
            Series(
                f"class {class_name(ctx.data, d.label)}",
                floats(np.arange(1, len(ordered) + 1) / max(len(norms), 1)),
                floats(ordered),
                "step",
            )
        )
    metrics += [
        Metric("worst_flip_fraction", worst, "fraction", f"at {ctx.norm} eps {ctx.eps[0]:g}"),
        Metric("points_verified", checked, "points"),
        Metric("verification_mismatches", mismatches, "points"),
    ]
    judged = worst_grade(
        grade(worst, "worst_flip_fraction", "<", warn=config.warn_flip_fraction),
        grade(mismatches, "verification_mismatches", "==", fail=0),
    )
    summary = (
        f"Structure {structure.kind}: for every network of this kind that classifies x_alpha "
        "as alpha and x_beta as beta (in particular every one that fits the audit data), "
        "v = x_beta - x_alpha is an adversarial direction at every point of the convex class "
        f"({', '.join(structure.theorems)}). On this model the smallest c with h(x + c v) != "
        "h(x) is computed exactly from the breakpoints along each line (forward-checked on "
        f"{checked} points, {mismatches} mismatches); once out, the ray never returns. "
        + "; ".join(lines)
        + "."
    )
    return ctx.finding(
        "direction",
        title="Convex-region direction x_beta - x_alpha (exact)",
        status=judged.status,
        severity=judged.severity,
        method=Method.THEOREM,
        summary=summary,
        metrics=metrics,
        threshold=judged.threshold,
        assumptions=(
            *(Assumption(n, h, d) for n, h, d in structure.checks),
            Assumption("x_alpha, x_beta are classified correctly by the model", True, ""),
            Assumption(
                "the region of the class is convex",
                True,
                structure.reason,
            ),
        ),
        evidence=Evidence(
            plots=(
                Plot(
                    id="convex-direction-flips",
                    title="Fraction of the class flipped by c v vs its norm (exact)",
                    x_label=f"perturbation norm ({ctx.norm})",
                    y_label="fraction flipped",
                    series=tuple(series),
                ),
            )
        ),
        remediation="A convex class region is left by one direction from every point: "
        "a model whose regions are not forced to be convex (mixed-sign output weights, "
        "more layers) or robust training limits this.",
        references=tuple(Reference(PAPER, t) for t in structure.theorems),
    )


def convexity_finding(ctx: AuditContext, convexity: Convexity) -> Finding:
    """The empirical convexity test: same-class segments that leave the class."""
    config: ConvexTransferConfig = ctx.config
    data = ctx.data
    metrics = [Metric(f"segments_leaving[{k}]", f, "fraction") for k, f, _ in convexity.per_class]
    fractions = [f for _, f, _ in convexity.per_class]
    lines = [f"{class_name(data, k)}: {f:.0%} of {n}" for k, f, n in convexity.per_class]
    overall, total = convexity.overall, convexity.total
    metrics.append(Metric("segments_leaving", overall, "fraction", "all classes"))
    convex_looking = sum(f == 0 for f in fractions)
    summary = (
        f"Empirical convexity test: {overall:.1%} of {total} segments between two points of the "
        f"same class (both classified correctly) leave the class somewhere on "
        f"{config.segment_points} interior points; {convex_looking} of {len(fractions)} classes "
        "had no leaving segment (consistent with, not a proof of, a convex region). Per class: "
        + ", ".join(lines)
        + "."
    )
    return ctx.finding(
        "convexity",
        title="Empirical convexity of the decision regions",
        status=Status.PASS,
        severity=Severity.INFO,
        method=Method.EMPIRICAL,
        summary=summary,
        metrics=metrics,
        evidence=Evidence(
            plots=(
                histogram(
                    "segments-leaving",
                    "Fraction of same-class segments leaving the class",
                    np.array(fractions),
                    x_label="fraction of segments",
                    y_label="classes",
                    series="classes",
                ),
            )
        ),
        references=(Reference(PAPER, "Theorem 11"), Reference(PAPER, "Theorem 12")),
    )


def empirical_direction_finding(ctx: AuditContext, directions: list[ClassDirection]) -> Finding:
    """The best direction x_beta - x_alpha measured on a ray grid."""
    config: ConvexTransferConfig = ctx.config
    metrics, lines, series, worst = [], [], [], 0.0
    for d in directions:
        m, line, at_eps, norms = _class_metrics(ctx, d, exact=False)
        metrics += m
        lines.append(line)
        worst = max(worst, np.nan_to_num(at_eps))
        ordered = np.sort(norms[np.isfinite(norms)])
        series.append(
            Series(
                f"class {class_name(ctx.data, d.label)}",
                floats(np.arange(1, len(ordered) + 1) / max(len(norms), 1)),
                floats(ordered),
                "step",
            )
        )
    metrics.append(
        Metric("worst_flip_fraction", worst, "fraction", f"at {ctx.norm} eps {ctx.eps[0]:g}")
    )
    judged = grade(worst, "worst_flip_fraction", "<", warn=config.warn_flip_fraction)
    summary = (
        "No theorem applies; measured: per class, the best of up to "
        f"{config.empirical_candidates} directions v = x_beta - x_alpha, rays x + c v on "
        f"{config.ray_points} points c in (0, {config.max_scale:g}] (first flip on the grid). "
        + "; ".join(lines)
        + "."
    )
    return ctx.finding(
        "direction",
        title="Direction x_beta - x_alpha across each class (measured)",
        status=judged.status,
        severity=judged.severity,
        method=Method.EMPIRICAL,
        summary=summary,
        metrics=metrics,
        threshold=judged.threshold,
        evidence=Evidence(
            plots=(
                Plot(
                    id="convex-direction-flips",
                    title="Fraction of the class flipped by c v vs its norm (grid)",
                    x_label=f"perturbation norm ({ctx.norm})",
                    y_label="fraction flipped",
                    series=tuple(series),
                ),
            )
        ),
        references=(Reference(PAPER, "Theorem 11"), Reference(PAPER, "Section 6")),
    )


# =============================================================== model-to-model transfer


def matrix_finding(ctx: AuditContext, result: TransferResults) -> Finding:
    """The transfer matrix per norm at its judged eps (Section 7)."""
    sources, targets, grids, clean = result.sources, result.targets, result.grids, result.clean
    plots, metrics = [], []
    rows = [*sources, "random"]
    for grid in grids:
        e = grid.eps[grid.judged]
        matrix = grid.accuracy[:, :, grid.judged]
        plots.append(
            Plot(
                id=f"transfer-matrix-{grid.norm}",
                title=f"Target accuracy on source-made examples ({grid.norm} eps {e:.4g})",
                kind="heatmap",
                x_label="target model",
                y_label="source of the perturbation",
                matrix=tuple(floats(row) for row in matrix),
                row_labels=tuple(rows),
                col_labels=tuple(targets),
            )
        )
        for s, source in enumerate(rows):
            for t, target in enumerate(targets):
                metrics.append(
                    Metric(
                        f"accuracy[{grid.norm}@{e:.4g}][{source}->{target}]",
                        float(matrix[s, t]),
                        "fraction",
                    )
                )
    best = most_transferable(sources, targets, result.primary(ctx.norm))
    named = "; ".join(f"{target}: {source}" for target, source in zip(targets, best, strict=True))
    config: ModelTransferConfig = ctx.config
    summary = (
        f"Transfer matrix of {len(sources)} source(s) x {len(targets)} target(s) "
        f"({config.attack}, {config.steps} steps; norms {', '.join(g.norm for g in grids)}). "
        f"Most transferable source per target: {named}. Clean accuracies: "
        + ", ".join(f"{t} {a:.1%}" for t, a in zip(targets, clean, strict=True))
        + "."
    )
    return ctx.finding(
        "matrix",
        title="Transfer matrix of adversarial examples",
        status=Status.PASS,
        severity=Severity.INFO,
        method=Method.EMPIRICAL,
        summary=summary,
        metrics=metrics,
        evidence=Evidence(
            plots=tuple(plots),
            notes=(
                "Rows: the model (or SVM surrogate) the examples were made on, and random "
                "perturbations of the same norm (random signs for linf, a random unit direction "
                "for l2), all clipped to the input bounds. The diagonal is white-box.",
            ),
        ),
    )


def target_finding(ctx: AuditContext, result: TransferResults, t: int, target: str) -> Finding:
    """Target ``t``: its most transferable source, against random perturbations."""
    config: ModelTransferConfig = ctx.config
    sources, grids, clean = result.sources, result.grids, float(result.clean[t])
    primary = result.primary(ctx.norm)
    best = most_transferable(sources, [target], target_view(primary, t))[0]
    e = primary.eps[primary.judged]
    acc = primary.accuracy[:, t, primary.judged]
    random = float(acc[-1])
    best_acc = float(acc[sources.index(best)]) if best in sources else float("nan")
    own = float(acc[sources.index(target)]) if target in sources else float("nan")
    drop = random - best_acc
    judged = grade(drop, "drop_beyond_random", "<", warn=config.warn_drop)
    if not np.isfinite(drop):  # no other model's examples to compare: nothing to judge
        judged = replace(judged, status=Status.PASS, severity=Severity.INFO)
    plots = tuple(
        Plot(
            id=f"transfer-curves-{grid.norm}-{t}",
            title=f"Accuracy of {target} vs {grid.norm} eps, by source",
            x_label=f"eps ({grid.norm})",
            y_label="accuracy",
            series=tuple(
                Series(name, floats(grid.accuracy[s, t]), floats(grid.eps))
                for s, name in enumerate([*sources, "random"])
            ),
        )
        for grid in grids
    )
    summary = (
        f"Most transferable source for {target}: {best} (lowest accuracy averaged over the "
        f"{primary.norm} eps grid). At {primary.norm} eps {e:.4g}: accuracy {best_acc:.1%} on "
        f"{best}-made examples, {random:.1%} under random perturbations, {own:.1%} white-box, "
        f"{clean:.1%} clean."
    )
    return ctx.finding(
        f"target-{target}",
        title=f"Transfer to {target}",
        status=judged.status,
        severity=judged.severity,
        method=Method.EMPIRICAL,
        summary=summary,
        metrics=[
            Metric("most_transferable_source", best, ""),
            Metric("transferred_accuracy", best_acc, "fraction", f"{primary.norm} eps {e:.4g}"),
            Metric("random_accuracy", random, "fraction"),
            Metric("white_box_accuracy", own, "fraction"),
            Metric("clean_accuracy", clean, "fraction"),
            Metric("drop_beyond_random", drop, "fraction"),
        ],
        threshold=judged.threshold,
        evidence=Evidence(plots=plots),
    )
