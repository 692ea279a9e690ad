"""The kkt analysis's numbers on the audit data (Vardi, Yehudai & Shamir 2022).

The depth-2 net's decision logit, the margin set ``I`` (Section 6), the exact smallest
universal perturbation along ``z = sum_I y_i x_i`` (Theorem 4.1, Section 6) checked by
the layer graph, the KKT multipliers of problem (2) (equations (3)-(4)), the data
conditions of Theorem 4.1 / Corollary 4.1 on the whole set and on ``I``, and Theorem
3.1's robust network along the same ``z``: one ``KKTResults`` the findings read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit_core.analysis import AuditContext
from audit_core.errors import NotApplicable
from audit_plugins.kkt.geometry import (
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
    negative_intervals,
    robust_construction,
    signed_labels,
    smallest_universal_flip,
)


@dataclass(frozen=True)
class Universal:
    """The universal perturbation along ``u = z / ||z||`` and its effect."""

    z: np.ndarray
    u: np.ndarray
    flip: UniversalFlip
    starts: np.ndarray
    ends: np.ndarray
    flipped: np.ndarray
    """Per audit point: ``y_i N(x_i - y_i c' u) < 0`` at ``c'`` just above ``c`` (layer graph)."""


@dataclass(frozen=True)
class Theorem31:
    """Theorem 3.1 on the audit data: its constant, radius and robust network along ``z``."""

    constant: float
    """``c = max_{i != j} |<x_i, x_j>| / d``."""
    radius: float
    """``(1 - c) / 4 sqrt(d)``: no perturbation this small flips the robust network."""
    robust_c: float
    """The exact universal ``c`` along ``z`` for the robust network (inf when ``c >= 1``)."""


@dataclass(frozen=True)
class KKTResults:
    """Everything the findings are built from (float64)."""

    net: Depth2Net
    x: np.ndarray
    y: np.ndarray
    """Labels in {-1, +1}."""
    margin: MarginSet
    universal: Universal
    kkt: KKTFit
    lam: np.ndarray
    """The KKT multipliers per audit point (0 outside the margin set)."""
    everything: DataConditions
    """The data conditions on the whole audit set (one m x m Gram matrix)."""
    on_margin: DataConditions
    """The same on the margin set ``I`` (Corollary 4.1)."""
    theorem31: Theorem31


def analyse(ctx: AuditContext) -> KKTResults:
    """Margin set, universal perturbation, KKT fit and data conditions on the audit data."""
    config = ctx.config
    ctx.progress.total(4)
    view = ctx.model.dense_view
    net = Depth2Net.from_matrices(view.weights, view.biases)
    x = ctx.data.flat.astype(np.float64)
    y = signed_labels(ctx.data.y)
    margins = y * decision_logit(ctx, x)
    try:
        margin = margin_set(margins, config.slack)
    except ValueError as error:
        raise NotApplicable(str(error)) from error
    ctx.progress.advance()
    universal = universal_flip(ctx, net, x, y, margin)
    ctx.progress.advance()
    kkt = kkt_fit(net, x[margin.mask], y[margin.mask], config.zero_tol, config.max_kinks)
    ctx.progress.advance()
    lam = np.zeros(len(x))
    lam[margin.mask] = kkt.lam
    everything = data_conditions(x, y)  # one m x m Gram matrix for both theorems
    on_margin = data_conditions(x[margin.mask], y[margin.mask])
    theorem31 = theorem31_on_data(x, y, margin, universal, everything)
    return KKTResults(net, x, y, margin, universal, kkt, lam, everything, on_margin, theorem31)


def decision_logit(ctx: AuditContext, x: np.ndarray) -> np.ndarray:
    """``N(x)``: the logit, or logit 1 minus logit 0, from the layer graph (float64)."""
    logits = ctx.model.graph.forward(x.reshape(len(x), *ctx.model.graph.input_shape))
    logits = logits.detach().numpy().reshape(len(x), -1)
    return logits[:, 0] if logits.shape[1] == 1 else logits[:, 1] - logits[:, 0]


def universal_flip(
    ctx: AuditContext, net: Depth2Net, x: np.ndarray, y: np.ndarray, margin: MarginSet
) -> Universal:
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
        exact = y * decision_logit(ctx, moved) < 0
        if not exact[margin.mask].all():
            raise RuntimeError("the exact line search disagrees with the layer graph at c")
        # a point counts as flipped only where the deployed model (onnxruntime, float32)
        # misclassifies it too: just past c a float64 flip can be below float32 rounding
        # (found by the soundness campaign: logit +5.3e-9 in float64, -1.5e-8 deployed)
        flipped = exact & (y * runtime_decision(ctx, moved) < 0)
    return Universal(z, u, flip, starts, ends, flipped)


def runtime_decision(ctx: AuditContext, x: np.ndarray) -> np.ndarray:
    """``N(x)`` as the deployed model computes it (onnxruntime, float32)."""
    logits = ctx.model.runtime.logits(x.reshape(len(x), *ctx.model.graph.input_shape))
    logits = np.asarray(logits, dtype=np.float64).reshape(len(x), -1)
    return logits[:, 0] if logits.shape[1] == 1 else logits[:, 1] - logits[:, 0]


def theorem31_on_data(
    x: np.ndarray,
    y: np.ndarray,
    margin: MarginSet,
    universal: Universal,
    everything: DataConditions,
) -> Theorem31:
    """Theorem 3.1's constant and radius, and its robust network's ``c`` along ``z``."""
    d = x.shape[1]
    constant = everything.max_inner / d  # Theorem 3.1's c = max_{i != j} |<x_i, x_j>| / d
    radius = (1 - constant) / 4 * np.sqrt(d)
    robust_c = robust_c_along_z(x, y, margin, universal, constant) if constant < 1 else np.inf
    return Theorem31(constant, radius, robust_c)


def robust_c_along_z(
    x: np.ndarray, y: np.ndarray, margin: MarginSet, universal: Universal, constant: float
) -> float:
    """The exact universal ``c`` along the same ``z`` for Theorem 3.1's robust network."""
    robust = robust_construction(x, y, c=constant)
    robust_net = Depth2Net(robust.W, robust.b, robust.v[None, :], np.zeros(1), np.ones(1))
    inside = margin.mask
    starts, ends = negative_intervals(line_pieces(robust_net, x[inside], y[inside], universal.u))
    return smallest_universal_flip(starts, ends).c


def export(ctx: AuditContext, r: KKTResults) -> None:
    """``--export``: margins, the margin set, z, c, first flips, lambda, the residual."""
    margin, universal = r.margin, r.universal
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
        **{"lambda": r.lam},
        residual=np.float64(r.kkt.residual),
    )
