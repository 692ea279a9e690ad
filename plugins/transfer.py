"""Transferable adversarial directions (Charles, Rosenberg & Papailiopoulos 2019).

Three analyses:

- ``linear-transfer`` (Theorems 4, 5, 8, Corollary 6): per class pair ``(k, l)`` the
  hard-margin SVM ``w*, b*`` on ``S[k, l]`` (separability checked by LP), its dual
  coefficients ``alpha`` and ``c_S = 1 / sum alpha``. For every linear separator of
  ``S[k, l]``, ``-y w*`` is an adversarial direction at every point (Theorems 4, 8);
  when the audited model is itself affine, Theorem 5's bound is evaluated on it and
  checked exactly. For any model: how the single direction transfers (flip rate vs
  l2 norm, beside random directions of equal norm).
- ``convex-transfer`` (Theorems 11, 12, 15, 16, Lemmas 13, 14, Corollary 17): when a
  decision region is provably convex (affine models; depth-2 ReLU nets with a scalar
  decision and sign-constant output weights; AND/OR-of-halfspaces nets), the
  direction ``v = x_beta - x_alpha`` is adversarial at every point of that class for
  every such network that classifies ``x_alpha`` and ``x_beta`` correctly; the
  smallest ``c`` with ``h(x + c v) != h(x)`` is computed exactly from the breakpoints
  of the piecewise-linear model along the line. Other models get an empirical
  convexity test and the same direction test, reported as empirical.
- ``model-transfer`` (Section 7, several models in one run): adversarial examples
  made on each model (iterated FGSM, as in the paper, or PGD; linf and l2 eps grids)
  and on optional linear-SVM surrogates, evaluated on every other model beside random
  perturbations of the same norm: a transfer matrix and, per target, the most
  transferable source.

Theorem 11's printed proof assumes every halfspace describing the convex region
separates ``x_alpha`` from ``x_beta``; the statement holds for a different reason:
a closed convex set contains the ray ``x + c v`` (``c >= 0``) from one of its points
only if ``v`` is in its recession cone, and then it would contain ``x_alpha + v =
x_beta``. Along a line a convex region is an interval, so once the ray leaves it,
it never comes back: ``c > max_x c(x)`` flips every point of the class at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from audit_core.analysis import Analysis, AuditContext, Requirements, check_config
from audit_core.data import AuditData
from audit_core.errors import ConfigError, NotApplicable
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
from audit_core.graph import LayerGraph
from audit_core.hookspecs import hookimpl
from audit_core.model import AuditedModel

from ._transfer_common import (
    box_diameter,
    class_name,
    first_flip_on_grid,
    flip_curves,
    norm_of,
    smallest_reaching,
)
from ._transfer_lines import Depth2
from ._transfer_models import (
    AttackPlan,
    FlatModule,
    accuracy_grid,
    adversarial,
    predict,
    random_perturbations,
    svm_surrogates,
)
from ._transfer_structure import Structure, detect
from ._transfer_svm import MaxMargin, Theorem5, max_margin, separable_subset, theorem5_bounds

__version__ = "0.1.0"

PAPER = "charles2019"
_LINE_BUDGET = 2**21  # floats of line start points per batch of the exact line search


# =============================================================== linear transfer


@dataclass(frozen=True)
class LinearTransferConfig:
    """Parameters of the linear-transfer analysis (table ``[linear-transfer]``)."""

    all_pairs_up_to: int = 4
    """Number of classes up to which every class pair (k, l) is analysed."""
    max_pairs: int = 3
    """Above that, the most confused pairs (softmax mass the model puts on the other class)."""
    svm_c: float = 1e6
    """C of the hard-margin SVM (sklearn SVC, linear kernel); large means hard margin."""
    margin_tol: float = 1e-6
    """The SVM counts as hard-margin when every y (w*.x + b*) >= 1 - margin_tol."""
    grid_points: int = 48
    """Norms per flip-rate curve."""
    max_norm: float = 0.0
    """Largest l2 norm of the curves; 0 means the l2 diameter of the input box."""
    random_directions: int = 8
    """Random directions of the baseline (each applied to a whole class)."""
    warn_flip_rate: float = 0.5
    """One direction flipping at least this fraction of a class within eps warns."""

    def __post_init__(self) -> None:
        check_config(
            self,
            minimum={
                "all_pairs_up_to": 2,
                "max_pairs": 1,
                "margin_tol": 0,
                "grid_points": 2,
                "max_norm": 0,
                "random_directions": 1,
            },
            positive=("svm_c",),
            fractions=("warn_flip_rate",),
        )


@dataclass
class ClassCurve:
    """Flip rate of one class of a pair along ``-y w*`` and along random directions."""

    label: int
    count: int
    direction: np.ndarray
    random: np.ndarray
    flip_at_eps: float
    random_at_eps: float


@dataclass
class Guarantee:
    """Theorem 5 evaluated on an affine audited model for one pair."""

    theorem: Theorem5
    positions: np.ndarray
    """Data positions of the checked points (correctly classified, in the SVM's set)."""
    bound: np.ndarray
    perturbation_norm: np.ndarray
    labels: np.ndarray
    forward_flipped: np.ndarray


@dataclass
class PairResult:
    k: int
    j: int
    """The pair (k, l) of the paper, ``k < j``; ``+1`` labels class ``k``."""
    positions: np.ndarray
    svm: MaxMargin
    hard: bool
    curves: list[ClassCurve] = field(default_factory=list)
    guarantee: Guarantee | None = None

    @property
    def key(self) -> str:
        return f"{self.k}-{self.j}"


class LinearTransfer(Analysis):
    """Max-margin directions per class pair; Theorem 5 on affine models; measured transfer."""

    name = "linear-transfer"
    title = "Transferable max-margin directions"
    description = (
        "Hard-margin SVM direction w* and c_S = 1/sum(alpha) per class pair (Charles et al. "
        "2019, Thm 4, 5, 8, Cor 6): Theorem 5 checked exactly on affine models; flip rate of "
        "the single direction vs random directions on any model."
    )
    tags = ("theorem", "empirical", "transfer")
    references = (
        Reference(PAPER, "Theorem 4"),
        Reference(PAPER, "Theorem 5"),
        Reference(PAPER, "Corollary 6"),
        Reference(PAPER, "Theorem 8"),
    )
    requires = Requirements(data=True)
    Config = LinearTransferConfig

    def run(self, ctx: AuditContext) -> Iterable[Finding]:
        config: LinearTransferConfig = ctx.config
        graph, data = ctx.model.graph, ctx.data
        x, y = data.flat, data.y
        correct = predict(graph, x) == y
        pairs = _class_pairs(graph, x, y, config)
        if not pairs:
            raise NotApplicable("the audit data has no two classes with samples")
        view = ctx.model.dense_view
        affine = Depth2.from_dense(view.weights, view.biases) if _is_affine(ctx.model) else None
        ctx.progress.total(len(pairs))
        results, notes = [], []
        for k, j in pairs:
            try:
                results.append(_linear_pair(ctx, k, j, correct, affine))
            except ValueError as error:
                notes.append(f"pair ({k}, {j}) skipped: {error}")
            ctx.progress.advance()
        if not results:
            raise NotApplicable("; ".join(notes))
        _export_linear(ctx, results)
        yield _max_margin_finding(ctx, results, affine is not None, notes)
        if affine is not None:
            yield _guarantee_finding(ctx, results)
        yield _direction_finding(ctx, results)

    def headline(self, findings: tuple[Finding, ...]) -> str:
        direction = _by_check(findings, "direction-transfer")
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
        guarantee = _by_check(findings, "guarantee")
        if guarantee is not None:
            checked = guarantee.metric("points_checked").value
            text += f"; Theorem 5 verified on {checked} points"
        return text


def _by_check(findings: tuple[Finding, ...], check: str) -> Finding | None:
    return next((f for f in findings if f.id.split("/")[1] == check), None)


def _is_affine(model: AuditedModel) -> bool:
    view = model.dense_view
    return view is not None and view.depth == 1 and model.graph.is_piecewise_linear


def _class_pairs(
    graph: LayerGraph, x: np.ndarray, y: np.ndarray, config: LinearTransferConfig
) -> list[tuple[int, int]]:
    """All pairs of present classes for small K, else the most confused ones."""
    classes = graph.num_classes
    present = np.flatnonzero(np.bincount(y, minlength=classes) > 0)
    pairs = [(int(k), int(j)) for i, k in enumerate(present) for j in present[i + 1 :]]
    if classes <= config.all_pairs_up_to:
        return pairs
    with torch.no_grad():
        logits = graph.forward(x).reshape(len(x), -1)
    probs = torch.softmax(logits, dim=1).numpy()
    mass = np.eye(classes)[y].T @ probs  # mass[k, l] = sum over S[k] of p_l
    score = mass + mass.T
    pairs.sort(key=lambda p: (-score[p], p))
    return pairs[: config.max_pairs]


def _linear_pair(
    ctx: AuditContext, k: int, j: int, correct: np.ndarray, affine: Depth2 | None
) -> PairResult:
    config: LinearTransferConfig = ctx.config
    data = ctx.data
    positions = np.flatnonzero((data.y == k) | (data.y == j))
    xs = data.flat[positions]
    y_pm = np.where(data.y[positions] == k, 1.0, -1.0)
    subset, how = separable_subset(xs, y_pm, correct[positions])
    svm = max_margin(xs, y_pm, subset, how, config.svm_c)
    result = PairResult(k, j, positions, svm, svm.min_margin >= 1.0 - config.margin_tol)
    if affine is not None:
        result.guarantee = _theorem5_on_model(ctx, result, affine, correct[positions])
    result.curves = _direction_curves(ctx, result, correct[positions])
    return result


def _theorem5_on_model(
    ctx: AuditContext, pair: PairResult, net: Depth2, correct: np.ndarray
) -> Guarantee:
    """Theorem 5 for the model's pair classifier ``sign((z_k - z_l)(x))`` (Theorem 8)."""
    config: LinearTransferConfig = ctx.config
    xs = ctx.data.flat[pair.positions]
    y_pm = np.where(ctx.data.y[pair.positions] == pair.k, 1.0, -1.0)
    w = net.W2[pair.k] - net.W2[pair.j]
    b = float(net.b2[pair.k] - net.b2[pair.j])
    svm = pair.svm
    separated = y_pm[svm.subset] * (xs[svm.subset] @ w + b) > 0
    if not separated.all():  # Theorem 5 needs h in H_S: re-solve on the points h separates
        how = "the points of the SVM's set the model separates (Theorem 5 needs h in H_S)"
        svm = max_margin(xs, y_pm, svm.subset[separated], how, config.svm_c)
    theorem = theorem5_bounds(w, b, svm, xs, y_pm)
    keep = correct[svm.subset]
    local = svm.subset[keep]
    bound = theorem.bound[keep]
    labels = np.where(y_pm[local] > 0, pair.k, pair.j)
    direction = -y_pm[local, None] * svm.w[None, :]
    flipped = np.ones(len(local), dtype=bool)
    for factor in (1.0 + 1e-9, 4.0):  # just beyond the bound, and well beyond it
        scale = bound * factor + 1e-12
        moved = predict(ctx.model.graph, xs[local] + scale[:, None] * direction)
        flipped &= moved != labels
    w_norm = float(norm_of(svm.w, ctx.norm))
    return Guarantee(theorem, pair.positions[local], bound, bound * w_norm, labels, flipped)


def _direction_curves(ctx: AuditContext, pair: PairResult, correct: np.ndarray) -> list[ClassCurve]:
    config: LinearTransferConfig = ctx.config
    graph, data = ctx.model.graph, ctx.data
    xs = data.flat[pair.positions]
    y_pm = np.where(data.y[pair.positions] == pair.k, 1.0, -1.0)
    unit = pair.svm.w / np.linalg.norm(pair.svm.w)
    scales = _scales(ctx)
    randoms = ctx.rng.standard_normal((config.random_directions, xs.shape[1]))
    randoms /= np.linalg.norm(randoms, axis=1, keepdims=True)
    eps = ctx.eps[0]
    curves = []
    for sign, label in ((1.0, pair.k), (-1.0, pair.j)):
        points = xs[(y_pm == sign) & correct]
        direction = -sign * unit
        along = flip_curves(graph, points, direction[None], label, scales)[0]
        random = flip_curves(graph, points, randoms, label, scales).mean(axis=0)
        at_eps = _flip_at(graph, points, direction[None], label, eps, ctx.norm)
        random_at_eps = _flip_at(graph, points, randoms, label, eps, ctx.norm)
        curves.append(ClassCurve(label, len(points), along, random, at_eps, random_at_eps))
    return curves


def _flip_at(
    graph: LayerGraph, points: np.ndarray, directions: np.ndarray, label: int, eps: float, norm: str
) -> float:
    """Mean flip rate when each direction is scaled to ``norm``-length ``eps``."""
    if len(points) == 0:
        return float("nan")
    scaled = directions * (eps / norm_of(directions, norm))[:, None]
    rows = (points[None] + scaled[:, None, :]).reshape(-1, points.shape[1])
    return float(np.mean(predict(graph, rows) != label))


def _scales(ctx: AuditContext) -> np.ndarray:
    config: LinearTransferConfig = ctx.config
    top = config.max_norm or box_diameter(ctx.data)
    return np.linspace(0.0, top, config.grid_points + 1)[1:]


def _pair_label(data: AuditData, pair: PairResult) -> str:
    return f"({class_name(data, pair.k)}, {class_name(data, pair.j)})"


def _max_margin_finding(
    ctx: AuditContext, results: list[PairResult], affine: bool, notes: list[str]
) -> Finding:
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


def _guarantee_finding(ctx: AuditContext, results: list[PairResult]) -> Finding:
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


def _direction_finding(ctx: AuditContext, results: list[PairResult]) -> Finding:
    config: LinearTransferConfig = ctx.config
    data, eps = ctx.data, ctx.eps[0]
    scales = _scales(ctx)
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


def _export_linear(ctx: AuditContext, results: list[PairResult]) -> None:
    scales = _scales(ctx)
    arrays = {
        "pairs": np.array([(r.k, r.j) for r in results], dtype=np.int64),
        "w_star": np.stack([r.svm.w for r in results]),
        "b_star": np.array([r.svm.b for r in results]),
        "c_S": np.array([r.svm.c_S for r in results]),
        "sum_alpha": np.array([r.svm.sum_alpha for r in results]),
        "margin": np.array([r.svm.geometric_margin for r in results]),
        "norms": scales,
        "flip_rate": np.array([[c.direction for c in r.curves] for r in results]),
        "random_flip_rate": np.array([[c.random for c in r.curves] for r in results]),
    }
    guarantees = [(i, r.guarantee) for i, r in enumerate(results) if r.guarantee is not None]
    if guarantees:
        arrays |= {
            "bound_pair": np.concatenate([np.full(len(g.positions), i) for i, g in guarantees]),
            "bound_index": np.concatenate([ctx.data.indices[g.positions] for _, g in guarantees]),
            "bound_c": np.concatenate([g.bound for _, g in guarantees]),
            "bound_norm": np.concatenate([g.perturbation_norm for _, g in guarantees]),
        }
    ctx.export("linear-transfer", **arrays)


# =============================================================== convex-region transfer


@dataclass(frozen=True)
class ConvexTransferConfig:
    """Parameters of the convex-transfer analysis (table ``[convex-transfer]``)."""

    max_candidates: int = 400
    """(x_alpha, x_beta) pairs tried for v = x_beta - x_alpha per class (random subset)."""
    segments_per_class: int = 50
    """Empirical convexity test: segments between same-class points per class."""
    segment_points: int = 32
    """Points evaluated inside each segment."""
    empirical_candidates: int = 12
    """Empirical direction test: (x_alpha, x_beta) pairs tried per class."""
    ray_points: int = 64
    """Empirical direction test: grid points along each ray x + c v, c in (0, max_scale]
    (candidates are compared on a 4x coarser grid, the chosen one measured on this one)."""
    max_scale: float = 4.0
    """Empirical direction test: largest c."""
    warn_flip_fraction: float = 0.5
    """The direction flipping at least this fraction of a class within eps warns."""

    def __post_init__(self) -> None:
        check_config(
            self,
            minimum={
                "max_candidates": 1,
                "segments_per_class": 1,
                "segment_points": 2,
                "empirical_candidates": 1,
                "ray_points": 2,
            },
            positive=("max_scale",),
            fractions=("warn_flip_fraction",),
        )


@dataclass
class ClassDirection:
    """The chosen ``v = x_beta - x_alpha`` for one class and the per-point flip scales."""

    label: int
    alpha: int
    beta: int
    v: np.ndarray
    scales: np.ndarray
    """Per point of the class: smallest c with h(x + c v) != label (inf: none found)."""
    positions: np.ndarray
    checked: int = 0
    mismatches: int = 0
    max_margin_scales: np.ndarray | None = None
    """Binary models: the same for the unit max-margin direction -y w* / ||w*||."""


class ConvexTransfer(Analysis):
    """Convex decision regions and the direction x_beta - x_alpha (exact where proven)."""

    name = "convex-transfer"
    title = "Convex-region transferable directions"
    description = (
        "Detects convex decision regions (affine models, depth-2 ReLU nets with nonnegative "
        "output weights, AND/OR-of-halfspaces nets; Charles et al. 2019, Lemmas 13-14, "
        "Thm 11-16) and the direction x_beta - x_alpha, with exact flip scales from the "
        "line's breakpoints; empirical convexity and direction tests for other models."
    )
    tags = ("theorem", "empirical", "transfer")
    references = (
        Reference(PAPER, "Theorem 11"),
        Reference(PAPER, "Theorem 12"),
        Reference(PAPER, "Lemma 13"),
        Reference(PAPER, "Lemma 14"),
        Reference(PAPER, "Theorem 15"),
        Reference(PAPER, "Theorem 16"),
        Reference(PAPER, "Corollary 17"),
    )
    requires = Requirements(data=True)
    Config = ConvexTransferConfig

    def run(self, ctx: AuditContext) -> Iterable[Finding]:
        graph, data = ctx.model.graph, ctx.data
        x, y = data.flat, data.y
        predicted = predict(graph, x)
        structure, why = detect(graph, ctx.model.dense_view)
        candidates = structure.convex_classes if structure else range(graph.num_classes)
        classes = [k for k in candidates if _has_pair(predicted, y, k)]
        if not classes:
            raise NotApplicable(
                "no class has a correctly classified point while another class has one too"
            )
        if structure is not None:
            ctx.progress.total(len(classes))
            directions = []
            for k in classes:
                directions.append(_exact_direction(ctx, structure, predicted, k))
                ctx.progress.advance()
            yield _structure_finding(ctx, structure, why)
            _export_convex(ctx, directions, structure.kind)
            yield _convex_direction_finding(ctx, structure, directions)
            return
        ctx.progress.total(2 * len(classes))
        yield _structure_finding(ctx, None, why)
        yield _convexity_finding(ctx, predicted, classes)
        directions = []
        for k in classes:
            directions.append(_empirical_direction(ctx, predicted, k))
            ctx.progress.advance()
        _export_convex(ctx, directions, "none")
        yield _empirical_direction_finding(ctx, directions)

    def headline(self, findings: tuple[Finding, ...]) -> str:
        structure, direction = _by_check(findings, "structure"), _by_check(findings, "direction")
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
            leaving = _by_check(findings, "convexity").metric("segments_leaving").value
            return (
                f"no provably convex region ({leaving:.0%} of same-class segments leave the "
                f"class); x_beta - x_alpha flips a whole class at norm {smallest:.3g} (measured)"
            )
        return (
            f"convex region ({kind}): one perturbation c v of norm {smallest:.3g} flips every "
            "point of a class (exact)"
        )


def _has_pair(predicted: np.ndarray, y: np.ndarray, k: int) -> bool:
    correct = predicted == y
    return bool((correct & (y == k)).any() and (correct & (y != k)).any())


def _candidates(
    ctx: AuditContext, predicted: np.ndarray, k: int, limit: int
) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, beta) data positions: x_alpha correctly classified as k, x_beta correctly
    classified as another class; a random subset of at most ``limit`` pairs."""
    y = ctx.data.y
    correct = predicted == y
    alphas = np.flatnonzero(correct & (y == k))
    betas = np.flatnonzero(correct & (y != k))
    grid_a, grid_b = np.meshgrid(alphas, betas, indexing="ij")
    grid_a, grid_b = grid_a.ravel(), grid_b.ravel()
    if len(grid_a) > limit:
        pick = np.sort(ctx.rng.choice(len(grid_a), size=limit, replace=False))
        grid_a, grid_b = grid_a[pick], grid_b[pick]
    return grid_a, grid_b


def _exact_direction(
    ctx: AuditContext, structure: Structure, predicted: np.ndarray, k: int
) -> ClassDirection:
    """The candidate v minimising the norm that flips the whole class, exactly."""
    config: ConvexTransferConfig = ctx.config
    x = ctx.data.flat
    alphas, betas = _candidates(ctx, predicted, k, config.max_candidates)
    members = np.flatnonzero(predicted == k)  # the model's class-k region
    v = x[betas] - x[alphas]  # (P, D)
    step = max(1, _LINE_BUDGET // max(len(members) * x.shape[1], 1))  # candidates per batch
    labels = np.full(len(members) * min(step, len(v)), k)
    scales = np.concatenate(
        [
            structure.first_flip(
                np.tile(x[members], (len(chunk), 1)),
                np.repeat(chunk, len(members), axis=0),
                labels[: len(chunk) * len(members)],
            ).reshape(len(chunk), -1)
            for chunk in (v[s : s + step] for s in range(0, len(v), step))
        ]
    )
    universal = scales.max(axis=1) * norm_of(v, ctx.norm)
    best = int(np.argmin(universal))
    direction = ClassDirection(
        k, int(alphas[best]), int(betas[best]), v[best], scales[best], members
    )
    _verify_exact(ctx.model.graph, x, direction)
    if ctx.model.graph.num_classes == 2:
        direction.max_margin_scales = _max_margin_scales(ctx, structure, predicted, k, members)
    return direction


def _verify_exact(graph: LayerGraph, x: np.ndarray, d: ClassDirection) -> None:
    """Forward passes: inside just before each exact scale, outside just after and 4x after."""
    finite = np.isfinite(d.scales) & (d.scales > 0)
    points, scales = x[d.positions][finite], d.scales[finite]
    before = predict(graph, points + (scales * (1 - 1e-7))[:, None] * d.v)
    after = predict(graph, points + (scales * (1 + 1e-7) + 1e-12)[:, None] * d.v)
    far = predict(graph, points + (4 * scales + 1e-12)[:, None] * d.v)
    bad = (before != d.label) | (after == d.label) | (far == d.label)
    d.checked, d.mismatches = int(finite.sum()), int(bad.sum())


def _max_margin_scales(
    ctx: AuditContext, structure: Structure, predicted: np.ndarray, k: int, members: np.ndarray
) -> np.ndarray | None:
    """Binary models: exact flip scales of class k along the unit max-margin direction."""
    x, y = ctx.data.flat, ctx.data.y
    y_pm = np.where(y == k, 1.0, -1.0)
    try:
        subset, how = separable_subset(x, y_pm, predicted == y)
        svm = max_margin(x, y_pm, subset, how)
    except ValueError:
        return None
    unit = -svm.w / np.linalg.norm(svm.w)  # -y w* with y = +1 for class k
    return structure.first_flip(x[members], unit, np.full(len(members), k))


def _structure_finding(ctx: AuditContext, structure: Structure | None, why: str) -> Finding:
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


def _convex_direction_finding(
    ctx: AuditContext, structure: Structure, directions: list[ClassDirection]
) -> Finding:
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


def _convexity_finding(ctx: AuditContext, predicted: np.ndarray, classes: list[int]) -> Finding:
    """Segments between points the model puts in the same class: how many leave it."""
    config: ConvexTransferConfig = ctx.config
    graph, data = ctx.model.graph, ctx.data
    x = data.flat
    lambdas = np.linspace(0.0, 1.0, config.segment_points + 2)[1:-1]
    metrics, fractions, lines = [], [], []
    leaving_all = total = 0
    for k in classes:
        members = np.flatnonzero((predicted == k) & (data.y == k))
        if len(members) < 2:
            continue
        i, j = np.triu_indices(len(members), 1)
        if len(i) > config.segments_per_class:
            pick = ctx.rng.choice(len(i), size=config.segments_per_class, replace=False)
            i, j = i[pick], j[pick]
        a, b = x[members[i]], x[members[j]]
        rows = a[:, None] + lambdas[None, :, None] * (b - a)[:, None]
        labels = predict(graph, rows.reshape(-1, x.shape[1])).reshape(len(i), -1)
        leaving = (labels != k).any(axis=1)
        fraction = float(leaving.mean())
        fractions.append(fraction)
        leaving_all, total = leaving_all + int(leaving.sum()), total + len(leaving)
        metrics.append(Metric(f"segments_leaving[{k}]", fraction, "fraction"))
        lines.append(f"{class_name(data, k)}: {fraction:.0%} of {len(leaving)}")
        ctx.progress.advance()
    overall = leaving_all / total if total else float("nan")
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


def _empirical_direction(ctx: AuditContext, predicted: np.ndarray, k: int) -> ClassDirection:
    """The best of a few candidates v = x_beta - x_alpha, measured on a ray grid."""
    config: ConvexTransferConfig = ctx.config
    x = ctx.data.flat
    alphas, betas = _candidates(ctx, predicted, k, config.empirical_candidates)
    members = np.flatnonzero(predicted == k)
    v = x[betas] - x[alphas]
    coarse = np.linspace(0.0, config.max_scale, max(config.ray_points // 4, 2) + 1)[1:]
    scales = first_flip_on_grid(ctx.model.graph, x[members], v, k, coarse)  # (P, n)
    unflipped = np.mean(~np.isfinite(scales), axis=1)
    finite_max = np.where(np.isfinite(scales), scales, 0.0).max(axis=1) * norm_of(v, ctx.norm)
    best = int(np.lexsort((finite_max, unflipped))[0])
    fine = np.linspace(0.0, config.max_scale, config.ray_points + 1)[1:]
    chosen = first_flip_on_grid(ctx.model.graph, x[members], v[best : best + 1], k, fine)[0]
    return ClassDirection(k, int(alphas[best]), int(betas[best]), v[best], chosen, members)


def _empirical_direction_finding(ctx: AuditContext, directions: list[ClassDirection]) -> Finding:
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


def _export_convex(ctx: AuditContext, directions: list[ClassDirection], kind: str) -> None:
    index = ctx.data.indices
    ctx.export(
        "convex-transfer",
        structure=np.array(kind),
        classes=np.array([d.label for d in directions], dtype=np.int64),
        v=np.stack([d.v for d in directions]),
        x_alpha_index=np.array([index[d.alpha] for d in directions], dtype=np.int64),
        x_beta_index=np.array([index[d.beta] for d in directions], dtype=np.int64),
        point_class=np.concatenate([np.full(len(d.positions), d.label) for d in directions]),
        point_index=np.concatenate([index[d.positions] for d in directions]),
        point_scale=np.concatenate([d.scales for d in directions]),
    )


# =============================================================== model-to-model transfer


@dataclass(frozen=True)
class ModelTransferConfig:
    """Parameters of the model-transfer analysis (table ``[model-transfer]``)."""

    norms: tuple[str, ...] = ("linf", "l2")
    """Perturbation norms (each gets its own eps grid and matrix)."""
    linf_eps: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.3)
    """linf eps grid as fractions of the input range (upper - lower); --eps adds to it."""
    l2_eps: tuple[float, ...] = (0.025, 0.05, 0.1, 0.2)
    """l2 eps grid as fractions of the box diameter sqrt(d) (upper - lower)."""
    attack: str = "ifgsm"
    """``ifgsm`` (iterated FGSM, as in the paper: no random start, last iterate) or ``pgd``."""
    steps: int = 40
    """Attack iterations per eps (the paper's iterated FGSM: 40 steps)."""
    linf_step: float = 0.01
    """linf step as a fraction of the input range (the paper's gamma = 0.01); raised to
    eps / steps where the steps could not reach eps otherwise."""
    svm_surrogates: int = 0
    """Linear SVMs (LinearSVC) trained on disjoint parts of the audit data, added as sources."""
    svm_c: float = 1.0
    """Regularisation C of the surrogate LinearSVCs."""
    warn_drop: float = 0.2
    """Warn when the best source lowers a target's accuracy this much more than random."""

    def __post_init__(self) -> None:
        check_config(
            self,
            minimum={"linf_eps": 0, "l2_eps": 0, "steps": 1, "linf_step": 0, "svm_surrogates": 0},
            positive=("svm_c",),
            fractions=("warn_drop",),
            choices={"norms": ("l2", "linf"), "attack": ("ifgsm", "pgd")},
        )


@dataclass
class TransferGrid:
    """Target accuracies ``(sources + 1, targets, G)`` on one norm's eps grid (last row:
    random perturbations)."""

    norm: str
    eps: np.ndarray
    accuracy: np.ndarray
    judged: int
    """Index of the eps the checks are judged at."""


class ModelTransfer(Analysis):
    """Transfer matrix of adversarial examples between the audited models (Section 7)."""

    name = "model-transfer"
    title = "Model-to-model transfer of adversarial examples"
    description = (
        "Adversarial examples made on each model (iterated FGSM/PGD, linf and l2 eps grids) "
        "and optional linear-SVM surrogates, evaluated on every other model beside random "
        "perturbations of the same norm (Charles et al. 2019, Sec. 7)."
    )
    tags = ("empirical", "transfer", "attack")
    references = (Reference(PAPER, "Section 7"), Reference(PAPER, "Section 6"))
    requires = Requirements(data=True, min_models=2)
    Config = ModelTransferConfig
    multi_model = True

    def run(self, ctx: AuditContext) -> Iterable[Finding]:
        config: ModelTransferConfig = ctx.config
        _check_models(ctx.models)
        bad = [n for n in config.norms if n not in ("l2", "linf")]
        if bad or not config.norms or config.attack not in ("ifgsm", "pgd"):
            raise ConfigError(
                f"model-transfer: norms must be l2 or linf and attack ifgsm or pgd (got "
                f"norms {list(config.norms)}, attack {config.attack!r})"
            )
        data = ctx.data
        x, y = data.flat, data.y
        sources = [(m.name, FlatModule(m.module, m.graph.input_shape).eval()) for m in ctx.models]
        if config.svm_surrogates > 0:
            classes = ctx.models[0].graph.num_classes
            sources += svm_surrogates(x, y, classes, config.svm_surrogates, config.svm_c, ctx.rng)
        ctx.progress.total(len(config.norms) * (len(sources) + 1))
        grids = [_transfer_grid(ctx, sources, norm) for norm in config.norms]
        names = [name for name, _ in sources]
        targets = [m.name for m in ctx.models]
        clean = np.array([np.mean(predict(m.graph, x) == y) for m in ctx.models])
        _export_transfer(ctx, names, targets, grids, clean)
        yield _matrix_finding(ctx, names, targets, grids, clean)
        primary = next((g for g in grids if g.norm == ctx.norm), grids[0])
        for t, target in enumerate(targets):
            yield _target_finding(ctx, names, t, target, grids, primary, clean[t])

    def headline(self, findings: tuple[Finding, ...]) -> str:
        targets = [f for f in findings if f.id.split("/")[1].startswith("target-")]
        if not targets:
            return findings[0].summary if findings else ""
        pairs = [
            f"{f.id.split('/')[1].removeprefix('target-')} <- "
            f"{f.metric('most_transferable_source').value}"
            for f in targets
        ]
        return "most transferable source per target: " + ", ".join(pairs)


def _check_models(models: tuple[AuditedModel, ...]) -> None:
    first = models[0].graph
    for model in models[1:]:
        graph = model.graph
        if graph.input_size != first.input_size:
            raise NotApplicable(
                f"models take inputs of different sizes ({models[0].name}: {first.input_size}, "
                f"{model.name}: {graph.input_size})"
            )
        if graph.num_classes != first.num_classes:
            raise NotApplicable(
                f"models have different numbers of classes ({models[0].name}: "
                f"{first.num_classes}, {model.name}: {graph.num_classes})"
            )


def _eps_grid(ctx: AuditContext, norm: str) -> tuple[np.ndarray, int]:
    config: ModelTransferConfig = ctx.config
    span = ctx.data.upper - ctx.data.lower
    if norm == "linf":
        grid = [f * span for f in config.linf_eps]
    else:
        grid = [f * span * np.sqrt(ctx.data.flat.shape[1]) for f in config.l2_eps]
    if norm == ctx.norm:
        grid += list(ctx.eps)
    values = np.unique(np.round(np.asarray(grid, dtype=np.float64), 12))
    judged = ctx.eps[0] if norm == ctx.norm else values[len(values) // 2]
    return values, int(np.argmin(np.abs(values - judged)))


def _transfer_grid(ctx: AuditContext, sources: list, norm: str) -> TransferGrid:
    config: ModelTransferConfig = ctx.config
    data = ctx.data
    x, y = data.flat, data.y
    eps, judged = _eps_grid(ctx, norm)
    step = config.linf_step * (data.upper - data.lower)
    plan = AttackPlan(config.attack, config.steps, step, data.lower, data.upper)
    accuracy = np.zeros((len(sources) + 1, len(ctx.models), len(eps)))
    for s, (_, module) in enumerate(sources):
        x_adv = adversarial(module, x, y, eps, norm, plan, ctx.generator)
        for t, target in enumerate(ctx.models):
            accuracy[s, t] = accuracy_grid(target.graph, x_adv, y)
        ctx.progress.advance()
    noisy = random_perturbations(x, eps, norm, (data.lower, data.upper), ctx.rng)
    for t, target in enumerate(ctx.models):
        accuracy[-1, t] = accuracy_grid(target.graph, noisy, y)
    ctx.progress.advance()
    return TransferGrid(norm, eps, accuracy, judged)


def _matrix_finding(
    ctx: AuditContext,
    sources: list[str],
    targets: list[str],
    grids: list[TransferGrid],
    clean: np.ndarray,
) -> Finding:
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
    best = _most_transferable(sources, targets, _primary(ctx, grids))
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


def _primary(ctx: AuditContext, grids: list[TransferGrid]) -> TransferGrid:
    return next((g for g in grids if g.norm == ctx.norm), grids[0])


def _most_transferable(sources: list[str], targets: list[str], grid: TransferGrid) -> list[str]:
    """Per target, the other source with the lowest mean accuracy over the eps grid."""
    mean = grid.accuracy[: len(sources)].mean(axis=2)  # (S, T)
    best = []
    for t, target in enumerate(targets):
        scores = np.where(np.array(sources) == target, np.inf, mean[:, t])
        best.append(sources[int(np.argmin(scores))] if np.isfinite(scores).any() else "none")
    return best


def _target_finding(
    ctx: AuditContext,
    sources: list[str],
    t: int,
    target: str,
    grids: list[TransferGrid],
    primary: TransferGrid,
    clean: float,
) -> Finding:
    config: ModelTransferConfig = ctx.config
    best = _most_transferable(sources, [target], _target_view(primary, t))[0]
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


def _target_view(grid: TransferGrid, t: int) -> TransferGrid:
    return TransferGrid(grid.norm, grid.eps, grid.accuracy[:, t : t + 1], grid.judged)


def _export_transfer(
    ctx: AuditContext,
    sources: list[str],
    targets: list[str],
    grids: list[TransferGrid],
    clean: np.ndarray,
) -> None:
    arrays: dict[str, np.ndarray] = {
        "sources": np.array([*sources, "random"]),
        "targets": np.array(targets),
        "clean_accuracy": clean,
    }
    for grid in grids:
        arrays[f"{grid.norm}_eps"] = grid.eps
        arrays[f"{grid.norm}_accuracy"] = grid.accuracy
    ctx.export("model-transfer", **arrays)


@hookimpl
def audit_register_analyses(register) -> None:
    register(LinearTransfer())
    register(ConvexTransfer())
    register(ModelTransfer())
