"""KKT non-robustness of depth-2 ReLU networks (Vardi, Yehudai & Shamir 2022).

"Gradient methods provably converge to non-robust networks": gradient flow on the
exponential or logistic loss converges in direction to a KKT point of the max-margin
problem (2) (Theorem 2.1), and on data on the sphere of radius sqrt(d) with small inner
products every such KKT point is non-robust: one perturbation along
``z = sum_{i in I} y_i x_i`` flips every point of the margin set ``I`` (Theorem 4.1,
Corollary 4.1), although a network robust to perturbations of size ~sqrt(d) exists
(Theorem 3.1). For a depth-2 ReLU net with one logit (or the difference of two), this
analysis reports, on the audit data:

- the normalised margins and the margin set ``I`` (within a slack, 10 % as in Section 6);
- the exact smallest ``c`` with ``y_i N(x_i - y_i c z/||z||) < 0`` for all ``i`` in ``I``
  (Section 6, Figure 1), from the breakpoints of the piecewise-linear net along the line,
  and the fraction of all audit points flipped there, beside sqrt(d) and the data norm;
- how close the parameters are to a KKT point: the nonnegative multipliers ``lambda`` on
  ``I`` that best satisfy the stationarity equations (3)-(4) (and the output layer's),
  by nonnegative least squares, with the relative residual;
- which assumptions of Theorem 4.1 / Corollary 4.1 and of Theorem 3.1 hold, each with
  its number, and the radius ``(1 - c)/4 sqrt(d)`` of Theorem 3.1's robust network.

ReLU subgradient at 0: a (sample, neuron) pair with ``|w_j . x_i + b_j|`` within a relative
``zero-tol`` of 0 is at the kink, where the Clarke subgradient ``sigma'`` is any value in
[0, 1] (Section 5.2); the fit chooses it (convex QP), elsewhere ``sigma' = 1(pre > 0)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from audit_core.analysis import Analysis, AuditContext, Requirements, check_config
from audit_core.errors import NotApplicable
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
from audit_core.hookspecs import hookimpl
from audit_core.model import AuditedModel

from ._kkt_geometry import (
    DataConditions,
    Depth2Net,
    KKTFit,
    MarginSet,
    UniversalFlip,
    data_conditions,
    kkt_fit,
    line_pieces,
    margin_direction,
    margin_set,
    negative_after,
    negative_intervals,
    robust_construction,
    signed_labels,
    smallest_universal_flip,
)

__version__ = "0.1.0"

PAPER = "vardi2022"


@dataclass(frozen=True)
class KKTConfig:
    """Parameters of the kkt analysis (table ``[kkt]``)."""

    slack: float = 0.1
    """A point is on the margin when ``y_i N(x_i) <= (1 + slack) * min_j y_j N(x_j)``."""
    high_below: float = 0.25
    """``c / sqrt(d)`` below this fails with severity high."""
    medium_below: float = 0.5
    """``c / sqrt(d)`` below this warns with severity medium."""
    kkt_tol: float = 0.1
    """Relative KKT residual at or below which the parameters count as a KKT point."""
    norm_rtol: float = 0.05
    """Relative tolerance of ``||x_i|| = sqrt(d)`` (Theorems 3.1 and 4.1)."""
    zero_tol: float = 1e-5
    """Relative ``|w_j . x_i + b_j|`` at or below which the ReLU is at its kink."""
    max_kinks: int = 2000
    """At most this many (sample, neuron) kink pairs get a free subgradient (the closest)."""
    plot_points: int = 200
    """Grid size of the flipped-fraction curve."""

    def __post_init__(self) -> None:
        check_config(
            self,
            minimum={"slack": 0, "kkt_tol": 0, "norm_rtol": 0, "zero_tol": 0, "max_kinks": 0},
            positive=("high_below", "medium_below"),
        )
        check_config(self, minimum={"plot_points": 2})


@dataclass(frozen=True)
class _Universal:
    """The universal perturbation along ``u = z / ||z||`` and its effect."""

    z: np.ndarray
    u: np.ndarray
    flip: UniversalFlip
    starts: np.ndarray
    ends: np.ndarray
    flipped: np.ndarray
    """Per audit point: ``y_i N(x_i - y_i c' u) < 0`` at ``c'`` just above ``c`` (layer graph)."""


class KKTNonRobustness(Analysis):
    """Margin set, universal perturbation along z, KKT proximity, Theorems 3.1 and 4.1."""

    name = "kkt"
    title = "KKT non-robustness (depth-2 ReLU)"
    description = (
        "Depth-2 ReLU nets: margin set I, the exact smallest perturbation along "
        "z = sum_I y_i x_i flipping all of I, distance of the weights to a KKT point of "
        "the max-margin problem, and the assumptions of Theorems 3.1 and 4.1."
    )
    tags = ("theorem", "kkt")
    references = (
        Reference(PAPER, "Theorem 4.1, Corollary 4.1"),
        Reference(PAPER, "Theorem 2.1, equations (2)-(4)"),
        Reference(PAPER, "Theorem 3.1"),
        Reference(PAPER, "Section 6"),
    )
    requires = Requirements(data=True, dense_depth=2)
    Config = KKTConfig

    def check(self, model: AuditedModel, data) -> str | None:
        classes = model.graph.num_classes
        if classes == 2:
            return None
        return f"needs a binary classifier (the model has {classes} classes)"

    def run(self, ctx: AuditContext) -> Iterable[Finding]:
        config: KKTConfig = ctx.config
        ctx.progress.total(4)
        view = ctx.model.dense_view
        net = Depth2Net.from_matrices(view.weights, view.biases)
        x = ctx.data.flat.astype(np.float64)
        y = signed_labels(ctx.data.y)
        margins = y * _decision_logit(ctx, x)
        try:
            margin = margin_set(margins, config.slack)
        except ValueError as error:
            raise NotApplicable(str(error)) from error
        ctx.progress.advance()
        universal = _universal(ctx, net, x, y, margin)
        ctx.progress.advance()
        kkt = kkt_fit(net, x[margin.mask], y[margin.mask], config.zero_tol, config.max_kinks)
        ctx.progress.advance()
        lam = np.zeros(len(x))
        lam[margin.mask] = kkt.lam
        _export(ctx, margin, universal, kkt, lam)
        everything = data_conditions(x, y)  # one m x m Gram matrix for both theorems
        yield _universal_finding(ctx, x, y, margin, universal)
        yield _theorem41_finding(ctx, net, x, y, margin, universal, kkt, everything)
        yield _margin_finding(ctx, margin)
        yield _theorem31_finding(ctx, net, x, y, margin, universal, everything)
        ctx.progress.advance()


def _decision_logit(ctx: AuditContext, x: np.ndarray) -> np.ndarray:
    """``N(x)``: the logit, or logit 1 minus logit 0, from the layer graph (float64)."""
    logits = ctx.model.graph.forward(x.reshape(len(x), *ctx.model.graph.input_shape))
    logits = logits.detach().numpy().reshape(len(x), -1)
    return logits[:, 0] if logits.shape[1] == 1 else logits[:, 1] - logits[:, 0]


# ----------------------------------------------------------------------------- computations


def _universal(
    ctx: AuditContext, net: Depth2Net, x: np.ndarray, y: np.ndarray, margin: MarginSet
) -> _Universal:
    """Exact smallest ``c`` along ``u`` for ``I``; then every audit point checked at ``c``
    by the layer graph (an implementation independent of the line search)."""
    z = margin_direction(x, y, margin.mask)
    length = float(np.linalg.norm(z))
    u = z / length if length > 0 else z
    starts, ends = negative_intervals(line_pieces(net, x, y, u))
    flip = smallest_universal_flip(starts[margin.mask], ends[margin.mask])
    flipped = np.zeros(len(x), dtype=bool)
    if np.isfinite(flip.c_inside):
        moved = x - y[:, None] * flip.c_inside * u[None, :]
        flipped = y * _decision_logit(ctx, moved) < 0
        if not flipped[margin.mask].all():
            raise RuntimeError("the exact line search disagrees with the layer graph at c")
    return _Universal(z, u, flip, starts, ends, flipped)


def _export(
    ctx: AuditContext, margin: MarginSet, universal: _Universal, kkt: KKTFit, lam: np.ndarray
) -> None:
    ctx.export(
        "kkt",
        index=ctx.data.indices,
        label=ctx.data.y,
        margin=margin.margins,
        normalised_margin=margin.normalised,
        margin_mask=margin.mask,
        z=universal.z,
        c=np.float64(universal.flip.c),
        c_inside=np.float64(universal.flip.c_inside),
        first_flip=universal.starts[:, 0],
        flipped_at_c=universal.flipped,
        sqrt_d=np.float64(np.sqrt(len(universal.z))),
        **{"lambda": lam},
        residual=np.float64(kkt.residual),
    )


def _flip_grade(ratio: float, config: KKTConfig) -> Grade:
    """``c / sqrt(d)`` against ``high_below`` (fail, high) and ``medium_below`` (warn)."""
    return grade(ratio, "c_over_sqrt_d", ">=", fail=config.high_below, warn=config.medium_below)


def _number(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


# ----------------------------------------------------------------------------- findings


def _universal_finding(
    ctx: AuditContext, x: np.ndarray, y: np.ndarray, margin: MarginSet, universal: _Universal
) -> Finding:
    config: KKTConfig = ctx.config
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


def _examples(ctx: AuditContext, y: np.ndarray, universal: _Universal, position: int) -> tuple:
    c = universal.flip.c_inside
    x_adv = ctx.data.flat[position] - y[position] * c * universal.u
    values = {
        "first_flip": float(universal.starts[position, 0]),
        "perturbation_norm": float(c),
    }
    return (
        adversarial_example(ctx.data, int(position), x_adv.reshape(ctx.data.x.shape[1:]), values),
    )


def _flip_curve(universal: _Universal, margin: MarginSet, root_d: float, points: int) -> Plot:
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


def _theorem41_finding(
    ctx: AuditContext,
    net: Depth2Net,
    x: np.ndarray,
    y: np.ndarray,
    margin: MarginSet,
    universal: _Universal,
    kkt: KKTFit,
    everything: DataConditions,
) -> Finding:
    config: KKTConfig = ctx.config
    on_margin = data_conditions(x[margin.mask], y[margin.mask])
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


def _margin_finding(ctx: AuditContext, margin: MarginSet) -> Finding:
    config: KKTConfig = ctx.config
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


def _theorem31_finding(
    ctx: AuditContext,
    net: Depth2Net,
    x: np.ndarray,
    y: np.ndarray,
    margin: MarginSet,
    universal: _Universal,
    everything: DataConditions,
) -> Finding:
    config: KKTConfig = ctx.config
    m, d = x.shape
    constant = everything.max_inner / d  # Theorem 3.1's c = max_{i != j} |<x_i, x_j>| / d
    deviation = everything.norm_deviation
    radius = (1 - constant) / 4 * np.sqrt(d)
    holds = constant < 1 and deviation <= config.norm_rtol
    width = net.W.shape[0]
    c = universal.flip.c
    robust_c = _robust_c_along_z(x, y, margin, universal, constant) if constant < 1 else np.inf
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


def _robust_c_along_z(
    x: np.ndarray, y: np.ndarray, margin: MarginSet, universal: _Universal, constant: float
) -> float:
    """The exact universal ``c`` along the same ``z`` for Theorem 3.1's robust network."""
    robust = robust_construction(x, y, c=constant)
    robust_net = Depth2Net(robust.W, robust.b, robust.v[None, :], np.zeros(1), np.ones(1))
    inside = margin.mask
    starts, ends = negative_intervals(line_pieces(robust_net, x[inside], y[inside], universal.u))
    return smallest_universal_flip(starts, ends).c


@hookimpl
def audit_register_analyses(register) -> None:
    register(KKTNonRobustness())
