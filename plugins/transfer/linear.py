"""The linear-transfer analysis's numbers (Charles, Rosenberg & Papailiopoulos 2019,
Theorems 4, 5, 8, Corollary 6): per class pair the hard-margin SVM on S[k, l] (``svm``),
Theorem 5 checked on an affine model by forward passes, and the flip rate of the single
max-margin direction against random directions on any model."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from audit_core.analysis import AuditContext
from audit_core.errors import NotApplicable
from audit_core.graph import LayerGraph
from audit_core.model import AuditedModel
from audit_plugins.transfer import LinearTransferConfig
from audit_plugins.transfer.common import (
    Labels,
    box_diameter,
    flip_curves,
    labeller,
    norm_of,
    predict,
)
from audit_plugins.transfer.lines import Depth2
from audit_plugins.transfer.svm import (
    MaxMargin,
    Theorem5,
    max_margin,
    separable_subset,
    theorem5_bounds,
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
    """One class pair (k, l): its max-margin SVM, flip curves and, on an affine model,
    Theorem 5 checked."""

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


@dataclass
class LinearResults:
    """Every analysed pair, the pairs skipped (notes) and whether the model is affine."""

    pairs: list[PairResult]
    notes: list[str]
    affine: bool


def analyse(ctx: AuditContext) -> LinearResults:
    """Max-margin direction, curves and (affine models) Theorem 5 for every class pair."""
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
    return LinearResults(results, notes, affine is not None)


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
    """Per class of the pair: flip rate along ``-y w*`` and along random directions."""
    config: LinearTransferConfig = ctx.config
    data = ctx.data
    xs = data.flat[pair.positions]
    y_pm = np.where(data.y[pair.positions] == pair.k, 1.0, -1.0)
    unit = pair.svm.w / np.linalg.norm(pair.svm.w)
    scales = flip_norms(ctx)
    randoms = ctx.rng.standard_normal((config.random_directions, xs.shape[1]))
    randoms /= np.linalg.norm(randoms, axis=1, keepdims=True)
    eps = ctx.eps[0]
    curves = []
    classify = labeller(ctx.model)
    for sign, label in ((1.0, pair.k), (-1.0, pair.j)):
        points = xs[(y_pm == sign) & correct]
        direction = -sign * unit
        along = flip_curves(classify, points, direction[None], label, scales)[0]
        random = flip_curves(classify, points, randoms, label, scales).mean(axis=0)
        at_eps = _flip_at(classify, points, direction[None], label, eps, ctx.norm)
        random_at_eps = _flip_at(classify, points, randoms, label, eps, ctx.norm)
        curves.append(ClassCurve(label, len(points), along, random, at_eps, random_at_eps))
    return curves


def _flip_at(
    classify: Labels, points: np.ndarray, directions: np.ndarray, label: int, eps: float, norm: str
) -> float:
    """Mean flip rate when each direction is scaled to ``norm``-length ``eps``."""
    if len(points) == 0:
        return float("nan")
    scaled = directions * (eps / norm_of(directions, norm))[:, None]
    rows = (points[None] + scaled[:, None, :]).reshape(-1, points.shape[1])
    return float(np.mean(classify(rows) != label))


def flip_norms(ctx: AuditContext) -> np.ndarray:
    """The l2 norms of the flip-rate curves: ``grid_points`` up to ``max_norm`` (0: the
    input box's diameter)."""
    config: LinearTransferConfig = ctx.config
    top = config.max_norm or box_diameter(ctx.data)
    return np.linspace(0.0, top, config.grid_points + 1)[1:]


def export(ctx: AuditContext, results: list[PairResult]) -> None:
    """``--export``: per pair w*, b*, c_S, the curves; Theorem 5's bound per point."""
    norms = flip_norms(ctx)
    arrays = {
        "pairs": np.array([(r.k, r.j) for r in results], dtype=np.int64),
        "w_star": np.stack([r.svm.w for r in results]),
        "b_star": np.array([r.svm.b for r in results]),
        "c_S": np.array([r.svm.c_S for r in results]),
        "sum_alpha": np.array([r.svm.sum_alpha for r in results]),
        "margin": np.array([r.svm.geometric_margin for r in results]),
        "norms": norms,
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
