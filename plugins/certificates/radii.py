"""The math of the certificates plugin: Singla & Feizi (2019), Theorems 3 and 4.

Pure functions on arrays, no findings. Everything certified is computed in float64.

Theorem 3 (simplex certificate). At an input u with predicted class k, the
network equals the affine map ``C y + d`` on the activation region
``S = {y : P y + q >= 0}`` (Algorithm 1, ``audit_core.linearize``). With
``P_min`` the distance from u to the nearest face of S and ``d_min`` the distance
to the nearest local decision hyperplane ``(C_j - C_k) y + d_j - d_k = 0``, every
point closer than ``min(d_min, P_min)`` keeps the class k. Proof used here (it is
the paper's, read as one statement): the ball of radius ``P_min`` lies inside the
convex region S, where the margins ``m_j(y) = f_k(y) - f_j(y)`` are affine, so on
the ball ``m_j(y) >= m_j(u) - ||C_k - C_j|| ||y - u||``.

Theorem 4 (decision-boundary certificate, one hidden layer). With
``z = W1 u + b1``, the logit difference ``f_j - f_k`` of the linear piece with
pattern theta is ``g_j(theta) = sum_i theta_i (W2_j - W2_k)_i z_i + b2_j - b2_k``,
affine in theta, so over the box ``[0, 1]^N1`` it ranges over
``[c + sum_i min(a_i, 0), c + sum_i max(a_i, 0)]`` with ``a_i = (W2_j - W2_k)_i z_i``.
The theorem bounds the distance to the nearest adversarial point by
``min_theta |g_j(theta)| / (||W2_j - W2_k|| ||W1||_2)``, minimised over ``j != k``.
At the actual pattern ``g_j <= 0`` (k is predicted), so the interval's lower end
is <= 0 and the minimum of ``|g_j|`` over the box is ``max(0, -upper end)``.

Numerical safety margin (what makes the radius valid for the *deployed* model)
------------------------------------------------------------------------------
The radii are exact statements about the real-valued network whose weights are
the ONNX file's values (float32 read exactly into float64). Three effects are
removed before a radius is reported:

1. *Deployed-runtime deviation.* onnxruntime evaluates in float32; the fidelity
   check bounds ``|ort - graph| <= tau * max(1, |logits|)`` (``tau`` = the fidelity
   tolerance, 1e-4 by default, or the observed error if larger). A point where
   the float64 margin exceeds ``delta = 2 tau S`` is classified the same by the
   deployed model (each of two logits moves by at most ``tau S``). So each margin
   is lowered by ``delta`` before it is divided by its gradient norm:
   ``d_j = (m_j(u) - delta) / ||C_k - C_j||``. ``S`` bounds ``max(1, |logit|)`` over
   the whole certified ball: ``|f_j(u)| + ||C_j|| R0`` with ``R0`` the radius without
   margin (Theorem 3: the ball lies in one affine piece) or
   ``|f_j(u)| + ||W2_j|| ||W1||_2 R0`` (Theorem 4: a Lipschitz bound).
2. *Input rounding.* The deployed model sees ``fl32(y)``; ``||fl32(y) - y|| <=
   2^-24 ||y||``, so ``2^-23 (||u|| + r)`` is subtracted from the radius.
3. *Float64 rounding* of the certificate itself. In the margins (and Theorem 4's
   numerator) it is ~1e-16 of the logit scale, far below ``delta``. In the face
   distances ``|z_i| / ||grad z_i||`` a pre-activation near 0 carries an absolute error
   ~1e-16 sum|w||a|; ``1e-9 r + 1e-10`` is subtracted (with the input-rounding term,
   which is larger whenever ``||u|| > 1e-3``).

The result is clamped at 0. The margin costs little: ``delta / ||C_k - C_j||`` is
~1e-4 of a typical margin-over-gradient ratio, and the rounding terms are ~1e-6
absolute on MNIST-sized inputs. What is *not* proven: that the float32 runtime
stays within ``tau S`` of the float64 graph at every point of the ball. The
fidelity check measures it on the audit samples and random inputs, and the
certificates analysis spot-checks points of every ball with onnxruntime, raising
``tau`` when it sees more (cancellation of large pre-activations can make float32
err far from the samples); with a different runtime (e.g. float16) pass a larger
tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from audit_core.graph import DenseView, LayerGraph
from audit_core.labels import predict
from audit_core.linearize import LocalLinearization, decision_rows, linearize

INPUT_ROUNDING = 2.0**-23
"""Twice the float32 unit roundoff: the deployed model sees ``fl32(y)``."""
RELATIVE_MARGIN = 1e-9
"""Relative safety margin for float64 rounding in the certificate computation."""
ABSOLUTE_MARGIN = 1e-10
"""Absolute safety margin (input units)."""
SPECTRAL_SAFETY = 1.0 + 1e-10
"""``||W1||_2`` from an SVD is inflated by this factor (an upper bound is needed)."""
DEFAULT_TOLERANCE = 1e-4
"""Relative logit deviation of the deployed runtime assumed when none is given."""


@dataclass(frozen=True)
class SimplexCertificate:
    """Theorem 3 per sample (float64, ``(N,)`` arrays unless stated).

    ``radius``: certified l2 radius after the safety margin (clamped at 0).
    ``face_distance``: P_min. ``decision_distance``: d_min with the logit slack
    (``raw_decision_distance`` without it). ``raw_radius``: ``min(d_min, P_min)`` as
    the paper states it (no margin). ``predicted``: the class the radius protects.
    ``slack``: the logit slack delta per sample. ``logits``: ``(N, K)``.
    """

    radius: np.ndarray
    face_distance: np.ndarray
    decision_distance: np.ndarray
    raw_decision_distance: np.ndarray
    raw_radius: np.ndarray
    predicted: np.ndarray
    slack: np.ndarray
    logits: np.ndarray

    @property
    def face_binds(self) -> np.ndarray:
        """True where the activation region (P_min), not a decision hyperplane, binds."""
        return self.face_distance < self.decision_distance


def simplex_certificate(
    graph: LayerGraph, x: np.ndarray, *, tolerance: float = DEFAULT_TOLERANCE
) -> SimplexCertificate:
    """Theorem 3 at every row of ``x`` (any piecewise-linear graph), batched, float64."""
    lin = linearize(graph, x)
    return simplex_from_linearization(lin, tolerance=tolerance)


def simplex_from_linearization(
    lin: LocalLinearization, *, tolerance: float = DEFAULT_TOLERANCE
) -> SimplexCertificate:
    """Theorem 3 from a local linearisation (see the module docstring for the margin)."""
    logits = lin.logits()
    predicted = np.asarray(predict(logits), dtype=np.int64)
    normals, offsets = decision_rows(lin, predicted)
    margins = -(np.einsum("njd,nd->nj", normals, lin.x) + offsets)  # m_j(u) >= 0
    norms = np.linalg.norm(normals, axis=2)
    raw_decision = _distance(margins, norms, 0.0).min(axis=1)
    raw = np.minimum(raw_decision, lin.face_distance)
    slack = 2.0 * tolerance * _logit_scale(logits, np.linalg.norm(lin.C, axis=2), raw)
    decision = _distance(margins, norms, slack[:, None]).min(axis=1)
    radius = np.minimum(decision, lin.face_distance)
    return SimplexCertificate(
        radius=safe_radius(radius, _row_norms(lin.x)),
        face_distance=lin.face_distance,
        decision_distance=decision,
        raw_decision_distance=raw_decision,
        raw_radius=raw,
        predicted=predicted,
        slack=slack,
        logits=logits,
    )


def _distance(margins: np.ndarray, norms: np.ndarray, slack: np.ndarray | float) -> np.ndarray:
    """``max(0, m - slack) / ||g||``. A constant difference (``||g|| = 0``) is never crossed
    inside the region (inf) unless its margin is within the slack (0); without slack a
    margin of exactly 0 is kept (a tie the decision rule resolves in favour of k)."""
    room = margins - slack
    never = (room > 0) | ((room == 0) & np.all(np.asarray(slack) == 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(norms > 0, np.maximum(room, 0.0) / norms, np.where(never, np.inf, 0.0))


def _logit_scale(logits: np.ndarray, lipschitz: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """``max(1, max_j |f_j(u)| + L_j R)``: a bound on ``max(1, |logit|)`` over the ball."""
    reach = np.where(np.isfinite(radius), radius, 0.0)[:, None] * lipschitz
    bound = np.abs(logits) + np.where(np.isfinite(reach), reach, 0.0)
    return np.maximum(1.0, bound.max(axis=1))


def _row_norms(x: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.asarray(x, dtype=np.float64).reshape(len(x), -1), axis=1)


def safe_radius(radius: np.ndarray, x_norm: np.ndarray) -> np.ndarray:
    """Subtract the rounding margins (input rounding to float32, float64 rounding), clamp at 0.

    ``inf`` stays ``inf`` (no decision boundary and no face: a constant classifier).
    """
    radius = np.asarray(radius, dtype=np.float64)
    finite = np.where(np.isfinite(radius), radius, 0.0)
    safe = finite * (1.0 - RELATIVE_MARGIN) - INPUT_ROUNDING * (x_norm + finite) - ABSOLUTE_MARGIN
    return np.where(np.isfinite(radius), np.maximum(safe, 0.0), radius)


def decision_boundary_certificate(
    view: DenseView,
    x: np.ndarray,
    predicted: np.ndarray,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    memory_budget: int = 256 * 2**20,
) -> np.ndarray:
    """Theorem 4 for a one-hidden-layer ReLU net (``view.depth == 2``): ``(N,)`` radii.

    Numerator: ``min over theta in [0,1]^N1 of |g_j(theta)|`` in closed form; denominator
    ``||W2_j - W2_k|| ||W1||_2``; minimum over ``j != k``; then the safety margin of the
    module docstring. Vectorised over samples (in batches) and classes.
    """
    if view.depth != 2:
        raise ValueError(f"Theorem 4 needs one hidden layer (depth 2), got depth {view.depth}")
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    predicted = np.asarray(predicted, dtype=np.int64)
    spectral = spectral_norm(view.weights[0]) * SPECTRAL_SAFETY
    hidden, outputs = view.weights[0].shape[0], view.weights[1].shape[0]
    batch = max(1, memory_budget // (8 * 4 * hidden * max(1, outputs - 1)))
    parts = [
        _theorem4_batch(view, flat[s : s + batch], predicted[s : s + batch], spectral, tolerance)
        for s in range(0, len(flat), batch)
    ]
    radius = np.concatenate(parts) if parts else np.zeros(0)
    return safe_radius(radius, _row_norms(flat))


def spectral_norm(weight: np.ndarray) -> float:
    """``||W||_2`` (float64) from the Gram matrix of the smaller side: ``sqrt(lambda_max)``.

    Cheaper than an SVD of a tall matrix (a convolution unrolled to 23328 x 784); the
    eigenvalue is accurate to ~1e-16 relative, which ``SPECTRAL_SAFETY`` covers."""
    w = np.asarray(weight, dtype=np.float64)
    gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
    return float(np.sqrt(max(np.linalg.eigvalsh(gram)[-1], 0.0)))


def _theorem4_batch(
    view: DenseView, x: np.ndarray, predicted: np.ndarray, spectral: float, tolerance: float
) -> np.ndarray:
    (w1, w2), (b1, b2) = view.weights, view.biases
    z = x @ w1.T + b1  # (n, N1) pre-activations
    rows, consts = theorem4_rows(w2, b2, predicted)  # (n, J, N1), (n, J): g_j = rows . theta z
    logits = np.maximum(z, 0.0) @ w2.T + b2
    denominators = np.linalg.norm(rows, axis=2) * spectral
    raw = _theorem4_radius(z, rows, consts, denominators, 0.0)
    lipschitz = np.linalg.norm(w2, axis=1)[None, :] * spectral
    slack = 2.0 * tolerance * _logit_scale(logits, lipschitz, raw)
    return _theorem4_radius(z, rows, consts, denominators, slack[:, None])


def theorem4_rows(
    w2: np.ndarray, b2: np.ndarray, predicted: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per sample, the output rows ``W2_j - W2_k`` ``(n, J, N1)`` and ``b2_j - b2_k`` ``(n, J)``.

    For a single logit (binary, class 1 iff logit > 0) the one row is ``-s w2`` with
    ``s = 2k - 1``: ``g <= 0`` exactly where the class k is kept.
    """
    if w2.shape[0] == 1:
        sign = (1.0 - 2.0 * predicted.astype(np.float64))[:, None]
        return sign[..., None] * w2[None], sign * b2[None]
    k = w2.shape[0]
    others = np.array([[j for j in range(k) if j != c] for c in range(k)])[predicted]
    rows = w2[others] - w2[predicted][:, None, :]
    consts = b2[others] - b2[predicted][:, None]
    return rows, consts


def theorem4_numerator(z: np.ndarray, rows: np.ndarray, consts: np.ndarray) -> np.ndarray:
    """``min over theta in [0,1]^N1 of |sum_i theta_i rows_i z_i + c|`` given that the value at
    the actual pattern is <= 0: ``max(0, -(c + sum_i max(rows_i z_i, 0)))``.

    ``sum_i max(a_i, 0)`` with ``a_i = r_i z_i`` is ``z+ . r+ + z- . r-`` (products of the
    positive and negative parts), so it is two batched matrix products, not a loop.
    """
    zp, zn = np.maximum(z, 0.0), np.maximum(-z, 0.0)
    rp, rn = np.maximum(rows, 0.0), np.maximum(-rows, 0.0)
    upper = consts + np.einsum("ni,nji->nj", zp, rp) + np.einsum("ni,nji->nj", zn, rn)
    return np.maximum(-upper, 0.0)


def _theorem4_radius(
    z: np.ndarray,
    rows: np.ndarray,
    consts: np.ndarray,
    denominators: np.ndarray,
    slack: np.ndarray | float,
) -> np.ndarray:
    numerator = theorem4_numerator(z, rows, consts + slack)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(
            denominators > 0, numerator / denominators, np.where(numerator > 0, np.inf, 0.0)
        )
    return ratio.min(axis=1)


def linf_radius(l2_radius: np.ndarray, input_size: int) -> np.ndarray:
    """A certified l2 radius r certifies the linf ball of radius ``r / sqrt(d)``."""
    return np.asarray(l2_radius, dtype=np.float64) / math.sqrt(input_size)


@dataclass(frozen=True)
class Verdicts:
    """Per-sample verdicts at one eps: exactly one of the three is True per sample."""

    certified: np.ndarray
    non_robust: np.ndarray
    undecided: np.ndarray


def verdicts(
    correct: np.ndarray, certified_radius: np.ndarray, attack_distance: np.ndarray, eps: float
) -> Verdicts:
    """Certified robust (correct and radius >= eps: the closed ball is certified), proven
    non-robust (misclassified, or an attack point within eps), or undecided. Radius and
    distance in the same norm as eps."""
    certified = correct & (certified_radius >= eps)
    non_robust = ~correct | (attack_distance <= eps)
    non_robust &= ~certified  # cannot both hold unless a certificate is unsound
    return Verdicts(certified, non_robust, ~certified & ~non_robust)


def violations(
    correct: np.ndarray, certified_radius: np.ndarray, attack_distance: np.ndarray
) -> np.ndarray:
    """Samples where an attack point lies strictly inside the certified ball (a bug)."""
    finite = np.isfinite(attack_distance)
    return correct & finite & (attack_distance < certified_radius)
