"""The convex-transfer analysis's numbers (Charles, Rosenberg & Papailiopoulos 2019,
Theorems 11, 12, 15, 16, Lemmas 13, 14, Corollary 17): where ``structure`` proves a class
region convex, the direction ``v = x_beta - x_alpha`` with every point's exact flip scale
(the line's breakpoints, forward-checked); otherwise the empirical convexity test and the
best measured direction on a ray grid."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit_core.analysis import AuditContext
from audit_core.errors import NotApplicable
from audit_core.graph import LayerGraph
from audit_plugins.transfer import ConvexTransferConfig
from audit_plugins.transfer.common import first_flip_on_grid, labeller, norm_of, predict
from audit_plugins.transfer.structure import Structure, detect
from audit_plugins.transfer.svm import max_margin, separable_subset

_LINE_BUDGET = 2**21  # floats of line start points per batch of the exact line search


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


@dataclass
class ConvexResults:
    """The structure found (None: no theorem applies), why, the chosen direction per class,
    and for models without a structure the empirical convexity test."""

    structure: Structure | None
    why: str
    directions: list[ClassDirection]
    convexity: Convexity | None = None


def analyse(ctx: AuditContext) -> ConvexResults:
    """Exact directions where a region is provably convex; else the empirical tests."""
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
        return ConvexResults(structure, why, directions)
    ctx.progress.total(2 * len(classes))
    convexity = segment_test(ctx, predicted, classes)
    directions = []
    for k in classes:
        directions.append(_empirical_direction(ctx, predicted, k))
        ctx.progress.advance()
    return ConvexResults(None, why, directions, convexity)


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


@dataclass(frozen=True)
class Convexity:
    """The empirical convexity test: per class, the fraction of same-class segments that
    leave the class, and the totals."""

    per_class: list[tuple[int, float, int]]
    """(class, fraction of its segments leaving it, segments tested)."""
    leaving: int
    total: int

    @property
    def overall(self) -> float:
        return self.leaving / self.total if self.total else float("nan")


def segment_test(ctx: AuditContext, predicted: np.ndarray, classes: list[int]) -> Convexity:
    """Segments between points the model puts in the same class: how many leave it."""
    config: ConvexTransferConfig = ctx.config
    classify, data = labeller(ctx.model), ctx.data
    x = data.flat
    lambdas = np.linspace(0.0, 1.0, config.segment_points + 2)[1:-1]
    per_class = []
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
        labels = classify(rows.reshape(-1, x.shape[1])).reshape(len(i), -1)
        leaving = (labels != k).any(axis=1)
        per_class.append((k, float(leaving.mean()), len(leaving)))
        leaving_all, total = leaving_all + int(leaving.sum()), total + len(leaving)
        ctx.progress.advance()
    return Convexity(per_class, leaving_all, total)


def _empirical_direction(ctx: AuditContext, predicted: np.ndarray, k: int) -> ClassDirection:
    """The best of a few candidates v = x_beta - x_alpha, measured on a ray grid."""
    config: ConvexTransferConfig = ctx.config
    x = ctx.data.flat
    alphas, betas = _candidates(ctx, predicted, k, config.empirical_candidates)
    members = np.flatnonzero(predicted == k)
    v = x[betas] - x[alphas]
    coarse = np.linspace(0.0, config.max_scale, max(config.ray_points // 4, 2) + 1)[1:]
    classify = labeller(ctx.model)
    scales = first_flip_on_grid(classify, x[members], v, k, coarse)  # (P, n)
    unflipped = np.mean(~np.isfinite(scales), axis=1)
    finite_max = np.where(np.isfinite(scales), scales, 0.0).max(axis=1) * norm_of(v, ctx.norm)
    best = int(np.lexsort((finite_max, unflipped))[0])
    fine = np.linspace(0.0, config.max_scale, config.ray_points + 1)[1:]
    chosen = first_flip_on_grid(classify, x[members], v[best : best + 1], k, fine)[0]
    return ClassDirection(k, int(alphas[best]), int(betas[best]), v[best], chosen, members)


def export(ctx: AuditContext, result: ConvexResults) -> None:
    """``--export``: per class v, x_alpha, x_beta; per point its flip scale."""
    directions = result.directions
    kind = result.structure.kind if result.structure is not None else "none"
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
