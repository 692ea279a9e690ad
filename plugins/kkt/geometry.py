"""Geometry of depth-2 ReLU networks behind the ``kkt`` analysis (private helper).

Vardi, Yehudai & Shamir 2022, "Gradient methods provably converge to non-robust
networks": the network ``N(x) = sum_j v_j relu(w_j . x + b_j)`` (Section 2), the
margin set and direction ``z = sum_{i in I} y_i x_i`` (Theorem 4.1, Section 6), the
exact smallest ``c`` flipping every point of ``I`` along ``z`` (Section 6, Figure 1),
the KKT multipliers of the max-margin problem (2) from the stationarity equations
(3)-(4), the data conditions of Theorem 4.1 / Corollary 4.1 and the robust network of
Theorem 3.1. Pure numpy/scipy, float64, vectorised over samples and neurons.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

# ----------------------------------------------------------------------------- the network


@dataclass(frozen=True)
class Depth2Net:
    """The decision logit of a depth-2 ReLU net: ``N(x) = sum_r coef_r (out_r . relu(W x + b)
    + out_bias_r)``.

    One logit: ``coef = (1,)``; two logits: ``coef = (-1, 1)`` (logit 1 minus logit 0), so
    ``v = coef @ out`` are the paper's output weights and ``beta = coef @ out_bias`` the
    output bias (0 for the paper's homogeneous networks).
    """

    W: np.ndarray
    b: np.ndarray
    out: np.ndarray
    out_bias: np.ndarray
    coef: np.ndarray

    @classmethod
    def from_matrices(
        cls, weights: tuple[np.ndarray, ...], biases: tuple[np.ndarray, ...]
    ) -> Depth2Net:
        """From a dense view ``(W1 (k,d), W2 (R,k))``, ``(b1, b2)`` with R = 1 or 2 logits."""
        w1, w2 = (np.asarray(w, dtype=np.float64) for w in weights)
        b1, b2 = (np.asarray(b, dtype=np.float64).reshape(-1) for b in biases)
        if w2.shape[0] not in (1, 2):
            raise ValueError(f"needs one or two logits, got {w2.shape[0]}")
        coef = np.array([1.0]) if w2.shape[0] == 1 else np.array([-1.0, 1.0])
        return cls(w1, b1, w2, b2, coef)

    @property
    def v(self) -> np.ndarray:
        """Output weights of the decision logit, ``(k,)``."""
        return self.coef @ self.out

    @property
    def beta(self) -> float:
        """Output bias of the decision logit."""
        return float(self.coef @ self.out_bias)

    @property
    def has_bias(self) -> bool:
        """Whether the first layer has biases (a bias-free net has ``b = 0`` exactly)."""
        return bool(np.any(self.b != 0))

    def pre(self, x: np.ndarray) -> np.ndarray:
        """Hidden pre-activations ``(N, k)``."""
        return x @ self.W.T + self.b

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Decision logit ``(N,)``."""
        return np.maximum(self.pre(x), 0.0) @ self.v + self.beta

    def scaled(self, alpha: float) -> Depth2Net:
        """Parameters scaled by ``alpha`` (output bias by ``alpha**2``): ``N -> alpha**2 N``."""
        a = float(alpha)
        return Depth2Net(self.W * a, self.b * a, self.out * a, self.out_bias * a * a, self.coef)


def signed_labels(y: np.ndarray) -> np.ndarray:
    """Labels {0, 1} as {-1, +1} (float64)."""
    return np.where(np.asarray(y) == 1, 1.0, -1.0)


# ----------------------------------------------------------------------------- margins


@dataclass(frozen=True)
class MarginSet:
    """Normalised margins ``y_i N(x_i) / min_j y_j N(x_j)`` (minimum over correctly classified
    points) and the margin set ``I`` = correctly classified points within ``1 + slack``."""

    margins: np.ndarray
    normalised: np.ndarray
    mask: np.ndarray
    gamma: float


def margin_set(margins: np.ndarray, slack: float) -> MarginSet:
    """Section 6 ("Margin"): a point is on the margin if ``y_i N(x_i) <= (1 + slack) * min``."""
    correct = margins > 0
    if not correct.any():
        raise ValueError("no audit point is classified correctly: the margin is undefined")
    gamma = float(margins[correct].min())
    normalised = margins / gamma
    return MarginSet(margins, normalised, correct & (normalised <= 1.0 + slack), gamma)


def margin_direction(x: np.ndarray, y_pm1: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``z = sum_{i in I} y_i x_i`` (Theorem 4.1 up to its scale eta, Section 6)."""
    return y_pm1[mask] @ x[mask]


# ----------------------------------------------------------------------------- line search


@dataclass(frozen=True)
class LinePieces:
    """``f_i(t) = y_i N(x_i - y_i t u)``, ``t >= 0``, as piecewise-linear functions.

    Row ``i``: ``knots[i, l]`` (``knots[:, 0] = 0``, ascending, ``inf`` padding) where
    ``f_i`` has value ``values[i, l]`` and slope ``slopes[i, l]`` until the next knot.
    """

    knots: np.ndarray
    values: np.ndarray
    slopes: np.ndarray


def line_pieces(net: Depth2Net, x: np.ndarray, y_pm1: np.ndarray, u: np.ndarray) -> LinePieces:
    """Exact piecewise-linear form of ``t -> y_i N(x_i - y_i t u)``.

    Along the line the pre-activation of neuron ``j`` is ``a_ij + t r_ij`` with
    ``r_ij = -y_i w_j . u``; it has a kink at ``t = -a_ij / r_ij`` when that is > 0. A
    neuron at its kink at ``t = 0`` (``a_ij = 0``) counts as active iff ``r_ij > 0``.
    Breakpoints are sorted per sample; slopes and knot values follow by cumulative sums.
    """
    a = net.pre(x)
    rate = -y_pm1[:, None] * (net.W @ u)[None, :]
    contrib = y_pm1[:, None] * net.v[None, :] * rate
    active0 = (a > 0) | ((a == 0) & (rate > 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        kink = np.where(rate != 0, -a / rate, np.inf)
    kink = np.where(kink > 0, kink, np.inf)
    order = np.argsort(kink, axis=1, kind="stable")
    kink = np.take_along_axis(kink, order, axis=1)
    toggle = np.take_along_axis(np.where(rate > 0, contrib, -contrib), order, axis=1)
    toggle[~np.isfinite(kink)] = 0.0
    zero = np.zeros((len(x), 1))
    slopes = np.sum(contrib * active0, axis=1)[:, None] + np.hstack([zero, np.cumsum(toggle, 1)])
    knots = np.hstack([zero, kink])
    with np.errstate(invalid="ignore"):
        gaps = np.diff(knots, axis=1)
    gaps[~np.isfinite(gaps)] = 0.0
    steps = np.hstack([zero, np.cumsum(slopes[:, :-1] * gaps, axis=1)])
    values = _snap_zeros((y_pm1 * net(x))[:, None] + steps, net, a, rate, knots)
    return LinePieces(knots, values, slopes)


def _snap_zeros(
    values: np.ndarray, net: Depth2Net, a: np.ndarray, rate: np.ndarray, knots: np.ndarray
) -> np.ndarray:
    """Knot values within the rounding of the cumulative sums set to 0: a net with every
    neuron off on a stretch of the line is exactly 0 there, not slightly negative."""
    size = np.abs(a) @ np.abs(net.v) + abs(net.beta)
    growth = np.abs(rate) @ np.abs(net.v)
    with np.errstate(invalid="ignore"):
        noise = 64 * np.finfo(np.float64).eps * (size[:, None] + growth[:, None] * knots)
    return np.where(np.abs(values) <= noise, 0.0, values)


def line_values(
    net: Depth2Net, x: np.ndarray, y_pm1: np.ndarray, u: np.ndarray, t: np.ndarray
) -> np.ndarray:
    """``y_i N(x_i - y_i t_g u)`` evaluated directly, ``(N, G)`` (for grids and plots)."""
    a = net.pre(x)
    rate = -y_pm1[:, None] * (net.W @ u)[None, :]
    hidden = np.maximum(a[:, None, :] + t[None, :, None] * rate[:, None, :], 0.0)
    return y_pm1[:, None] * (hidden @ net.v + net.beta)


def negative_intervals(p: LinePieces) -> tuple[np.ndarray, np.ndarray]:
    """Starts and ends of the intervals where ``f_i < 0``, each ``(N, k+1)``, ``inf`` = none.

    Piece ``l`` holds a down-crossing when ``f >= 0`` at its start and ``f < 0`` at its
    end (for the last, unbounded piece: slope < 0), an up-crossing in the mirror case; the
    zero is solved linearly inside the piece. A sample negative at ``t = 0`` starts an
    interval at 0. ``f_i < 0`` on ``[start, end)`` up to the zeros themselves.
    """
    start = p.knots
    end = np.concatenate([p.knots[:, 1:], np.full((len(start), 1), np.inf)], axis=1)
    f_start = p.values
    f_end = np.concatenate([p.values[:, 1:], p.values[:, -1:]], axis=1)
    valid = np.isfinite(start)
    bounded = np.isfinite(end)
    ends_negative = np.where(bounded, f_end < 0, p.slopes < 0)
    ends_nonnegative = np.where(bounded, f_end >= 0, p.slopes > 0)
    down = valid & (f_start >= 0) & ends_negative
    up = valid & (f_start < 0) & ends_nonnegative
    with np.errstate(divide="ignore", invalid="ignore"):
        root = np.clip(start - f_start / p.slopes, start, end)
    starts = np.where(down, root, np.inf)
    ends = np.where(up, root, np.inf)
    starts[:, 0] = np.where(f_start[:, 0] < 0, 0.0, starts[:, 0])
    return _compact(starts), _compact(ends)


def _compact(times: np.ndarray) -> np.ndarray:
    """Rows sorted, trailing all-``inf`` columns dropped (at least one column kept)."""
    times = np.sort(times, axis=1)
    width = max(1, int(np.isfinite(times).sum(axis=1).max(initial=0)))
    return times[:, :width]


def negative_after(starts: np.ndarray, ends: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``(N, G)``: whether ``f_i < 0`` just after ``t_g`` (``#starts <= t > #ends <= t``)."""
    opened = np.sum(starts[:, :, None] <= t[None, None, :], axis=1)
    closed = np.sum(ends[:, :, None] <= t[None, None, :], axis=1)
    return opened > closed


@dataclass(frozen=True)
class UniversalFlip:
    """The smallest ``c`` with ``y_i N(x_i - y_i c u) < 0`` for every ``i`` of the set, exact.

    ``c`` is the infimum (the crossing itself, where the last sample is at 0);
    ``c_inside`` a point just after it where every sample is strictly flipped (``inf``
    when no ``c`` flips them all). ``first_flip`` is each sample's first crossing.
    """

    c: float
    c_inside: float
    first_flip: np.ndarray


def smallest_universal_flip(starts: np.ndarray, ends: np.ndarray) -> UniversalFlip:
    """Smallest ``t`` at which every sample is negative just after ``t``.

    The set of ``t`` where all ``f_i < 0`` is an intersection of unions of intervals; its
    infimum is the start of some sample's interval, so only those starts are candidates
    (a sample that flips and flips back is handled: it must be negative at the candidate).
    """
    first = starts[:, 0].copy()
    candidates = np.unique(starts[np.isfinite(starts)])
    chunk = max(1, 4_000_000 // max(1, starts.size + ends.size))
    for lo in range(0, candidates.size, chunk):
        batch = candidates[lo : lo + chunk]
        flipped = negative_after(starts, ends, batch).all(axis=0)
        if flipped.any():
            c = float(batch[int(np.argmax(flipped))])
            return UniversalFlip(c, _inside(c, ends), first)
    return UniversalFlip(np.inf, np.inf, first)


def _inside(c: float, ends: np.ndarray) -> float:
    """A point in ``(c, next end)``: ``c`` plus at most a relative ``1e-6``."""
    later = ends[ends > c]
    room = (float(later.min()) - c) / 2 if later.size else np.inf
    return c + min(room, 1e-6 * max(c, 1e-12))


# ----------------------------------------------------------------------------- KKT


@dataclass(frozen=True)
class KKTFit:
    """Multipliers ``lambda >= 0`` on ``I`` that best satisfy the stationarity conditions of
    problem (2) for the parameters normalised to ``min_i y_i N(x_i) = 1``.

    ``residual`` = ``||theta - sum_i lambda_i g_i|| / ||theta||`` with ``g_i`` a Clarke
    subgradient of ``theta -> y_i N_theta(x_i)``; ``block_residuals`` splits the numerator
    into first-layer weights (eq. 3), biases (eq. 4), output weights and output bias,
    each relative to ``||theta||``. ``kinks`` counts (sample, neuron) pairs treated as
    at the ReLU kink (``|w_j . x_i + b_j| <= zero_tol * (||w_j|| ||x_i|| + |b_j|)``), where
    the subgradient ``sigma'_ij`` is free in [0, 1] and chosen to fit best.
    ``imbalance`` = ``sum_j | ||w_j||^2 + b_j^2 - v_j^2 | / ||theta||^2`` (``v_j^2`` summed
    over the output rows): 0 at a KKT point (multiply (3) by ``w_j`` and (4) by ``b_j``),
    and each neuron's term is conserved by gradient flow, so it measures how much of the
    initialisation is left.
    """

    lam: np.ndarray
    residual: float
    block_residuals: dict[str, float]
    kinks: int
    imbalance: float
    with_bias: bool
    with_output_bias: bool


def kkt_fit(
    net: Depth2Net,
    x: np.ndarray,
    y_pm1: np.ndarray,
    zero_tol: float = 0.0,
    max_kinks: int = 2000,
) -> KKTFit:
    """Best KKT multipliers for the points ``x`` of ``I`` (equations (3)-(4) and the output
    layer's ``v_j = sum_i lambda_i y_i relu(w_j . x_i + b_j)``).

    The net is first scaled (degree-2 homogeneity) so that its smallest margin on ``x``
    is 1, as in problem (2). First-layer biases are parameters iff some ``b_j != 0``; an
    output bias only when ``beta != 0`` (then scaled by ``alpha**2``; such a net is not
    homogeneous and Theorem 2.1 does not apply). Without kinks this is a nonnegative
    least-squares problem (scipy ``nnls`` on the Gram factor); with kinks, the products
    ``mu_ij = lambda_i sigma'_ij`` join as variables with ``0 <= mu_ij <= lambda_i``, a
    convex QP (cvxpy/Clarabel; at most ``max_kinks`` pairs, the closest to the kink);
    ``lambda`` is then re-solved by NNLS at ``sigma'`` = 0, the QP's ``sigma'`` and its
    rounding to {0, 1}, and the best of the three is kept (the residual is exact for it).
    """
    gamma = float(np.min(y_pm1 * net(x)))
    if gamma <= 0:
        raise ValueError("the margin points must be classified correctly")
    theta = net.scaled(1.0 / np.sqrt(gamma))
    pre = theta.pre(x)
    kink = _kinks(theta, x, pre, zero_tol, max_kinks)
    active = ((pre > 0) & ~kink).astype(np.float64)
    candidates = [active]
    if kink.any():
        free = active.copy()
        free[kink] = _kink_slopes(theta, x, y_pm1, active > 0, kink)
        rounded = active.copy()
        rounded[kink] = np.round(free[kink])
        candidates += [free, rounded]
    lam, blocks = min(
        (_fit(theta, x, y_pm1, slope) for slope in candidates), key=lambda f: _total(f[1])
    )
    norm2 = sum(t for t, _ in blocks.values())
    return KKTFit(
        lam=lam,
        residual=_total(blocks),
        block_residuals={k: float(np.sqrt(r / norm2)) for k, (_, r) in blocks.items()},
        kinks=int(kink.sum()),
        imbalance=imbalance(theta),
        with_bias=net.has_bias,
        with_output_bias=net.beta != 0,
    )


def _fit(
    net: Depth2Net, x: np.ndarray, y: np.ndarray, slope: np.ndarray
) -> tuple[np.ndarray, dict[str, tuple[float, float]]]:
    """NNLS multipliers for fixed subgradients ``slope`` and the residual per block."""
    lam = _nnls(*_kkt_gram(net, x, y, slope))
    return lam, _kkt_blocks(net, x, y, lam[:, None] * slope, lam)


def _total(blocks: dict[str, tuple[float, float]]) -> float:
    """Relative residual ``||theta - fit|| / ||theta||`` from the per-block squares."""
    norm2 = sum(t for t, _ in blocks.values())
    return float(np.sqrt(sum(r for _, r in blocks.values()) / norm2)) if norm2 else 0.0


def imbalance(net: Depth2Net) -> float:
    """``sum_j | ||w_j||^2 + b_j^2 - ||out_j||^2 | / ||theta||^2`` (see :class:`KKTFit`)."""
    first = np.sum(net.W**2, axis=1) + net.b**2
    second = np.sum(net.out**2, axis=0)
    return float(np.sum(np.abs(first - second)) / max(float(first.sum() + second.sum()), 1e-300))


def _kinks(
    net: Depth2Net, x: np.ndarray, pre: np.ndarray, zero_tol: float, max_kinks: int
) -> np.ndarray:
    """(sample, neuron) pairs at the kink: relative |pre-activation| <= zero_tol, at most
    ``max_kinks`` of them (the closest)."""
    scale = np.linalg.norm(x, axis=1)[:, None] * np.linalg.norm(net.W, axis=1)[None, :]
    scale = scale + (np.abs(net.b)[None, :] if net.has_bias else 0.0)
    relative = np.abs(pre) / np.maximum(scale, 1e-300)
    kink = relative <= zero_tol
    if kink.sum() > max_kinks:
        cut = np.partition(relative.ravel(), max_kinks - 1)[max_kinks - 1]
        kink &= relative <= cut
    return kink


def _nnls(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """``argmin_{lambda >= 0} lambda^T G lambda - 2 rhs^T lambda`` via a factor of ``G``."""
    evals, evecs = np.linalg.eigh(gram)
    keep = evals > 1e-13 * max(float(evals.max(initial=0.0)), 1e-300)
    root = np.sqrt(evals[keep])
    lam, _ = nnls(root[:, None] * evecs[:, keep].T, (evecs[:, keep].T @ rhs) / root)
    return lam


def _kkt_gram(
    net: Depth2Net, x: np.ndarray, y: np.ndarray, slope: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``G = [g_i . g_k]`` and ``rhs = [g_i . theta]`` in closed form (matrix products)."""
    v = net.v
    hidden = np.maximum(net.pre(x), 0.0)
    inner = x @ x.T + (1.0 if net.has_bias else 0.0)
    coef2 = float(net.coef @ net.coef)
    gram = ((slope * v**2) @ slope.T) * inner + coef2 * (hidden @ hidden.T)
    linear = x @ net.W.T + (net.b if net.has_bias else 0.0)
    rhs = (slope * linear) @ v + hidden @ v
    if net.beta != 0:
        gram += coef2
        rhs += net.beta
    return gram * np.outer(y, y), rhs * y


def _kink_slopes(
    net: Depth2Net, x: np.ndarray, y: np.ndarray, active: np.ndarray, kink: np.ndarray
) -> np.ndarray:
    """Best ``sigma'`` in [0, 1] at the kinks: the convex QP in ``(lambda, mu)``."""
    import cvxpy as cp

    rows, cols = np.nonzero(kink)
    n = len(x)
    gram_l, rhs_l = _kkt_gram(net, x, y, active.astype(np.float64))
    v2 = net.v**2
    inner = (x @ x.T + (1.0 if net.has_bias else 0.0)) * np.outer(y, y)
    cross = active[:, cols] * v2[cols][None, :] * inner[:, rows]
    same = (cols[:, None] == cols[None, :]) * v2[cols][:, None] * inner[np.ix_(rows, rows)]
    linear = x @ net.W.T + (net.b if net.has_bias else 0.0)
    rhs_k = y[rows] * net.v[cols] * linear[rows, cols]
    gram = np.block([[gram_l, cross], [cross.T, same]])
    rhs = np.concatenate([rhs_l, rhs_k])
    unknown = cp.Variable(n + len(rows))
    objective = 0.5 * cp.quad_form(unknown, cp.psd_wrap(gram)) - rhs @ unknown
    constraints = [unknown >= 0, unknown[n:] <= unknown[:n][rows]]
    cp.Problem(cp.Minimize(objective), constraints).solve(solver=cp.CLARABEL)
    lam, mu = unknown.value[:n], unknown.value[n:]
    return np.clip(np.where(lam[rows] > 0, mu / np.maximum(lam[rows], 1e-300), 0.0), 0.0, 1.0)


def _kkt_blocks(
    net: Depth2Net, x: np.ndarray, y: np.ndarray, weight: np.ndarray, lam: np.ndarray
) -> dict[str, tuple[float, float]]:
    """Per parameter block: (squared norm of theta's block, squared residual); ``weight``
    is ``lambda_i sigma'_ij``."""
    signed = weight * y[:, None]
    v = net.v
    hidden = np.maximum(net.pre(x), 0.0)
    fits = {
        "weights": (net.W, v[:, None] * (signed.T @ x)),
        "output": (net.out, np.outer(net.coef, hidden.T @ (lam * y))),
    }
    if net.has_bias:
        fits["biases"] = (net.b, v * signed.sum(axis=0))
    if net.beta != 0:
        fits["output_bias"] = (net.out_bias, net.coef * float(lam @ y))
    return {
        name: (float(np.sum(theta**2)), float(np.sum((theta - fit) ** 2)))
        for name, (theta, fit) in fits.items()
    }


# ----------------------------------------------------------------------------- data conditions


@dataclass(frozen=True)
class DataConditions:
    """The data assumptions of Theorem 4.1 (on a set of points) and their numbers."""

    count: int
    dim: int
    norm_deviation: float
    """``max_i | ||x_i|| / sqrt(d) - 1 |``."""
    max_inner: float
    """``p = max_{i != j} |<x_i, x_j>|`` (0 for a single point)."""
    size_bound: float
    """``(d + 1) / (3 (p + 1))``: Theorem 4.1 needs ``count <= size_bound``."""
    positives: int
    negatives: int

    @property
    def balance(self) -> float:
        """``c = min(|I+|, |I-|) / |I|``."""
        return min(self.positives, self.negatives) / self.count if self.count else 0.0

    @property
    def size_ok(self) -> bool:
        return self.count <= self.size_bound

    @property
    def predicted_scale(self) -> float:
        """``sqrt(d / (c^2 m))``: Theorem 4.1's ``||z|| = O(.)`` without its constant."""
        c = self.balance
        return float(np.sqrt(self.dim / (c * c * self.count))) if c > 0 else np.inf


def data_conditions(x: np.ndarray, y_pm1: np.ndarray) -> DataConditions:
    """Norms, largest off-diagonal inner product, size bound and class balance of ``x``."""
    m, d = x.shape
    norms = np.linalg.norm(x, axis=1)
    gram = np.abs(x @ x.T)
    np.fill_diagonal(gram, -np.inf)
    p = float(gram.max()) if m > 1 else 0.0
    return DataConditions(
        count=m,
        dim=d,
        norm_deviation=float(np.max(np.abs(norms / np.sqrt(d) - 1.0))) if m else 0.0,
        max_inner=p,
        size_bound=(d + 1) / (3 * (p + 1)),
        positives=int(np.sum(y_pm1 > 0)),
        negatives=int(np.sum(y_pm1 < 0)),
    )


# ----------------------------------------------------------------------------- Theorem 3.1


@dataclass(frozen=True)
class RobustNetwork:
    """Theorem 3.1's network: ``v_j = y_j``, ``w_j = 2 x_j / (d (1 - c))``,
    ``b_j = -(1 + c) / (1 - c)``; ``y_i N(x_i) = 1`` and no perturbation of norm at most
    ``radius = (1 - c) / 4 * sqrt(d)`` flips any ``x_i`` (for data on the sphere of radius
    sqrt(d) with ``|<x_i, x_j>| <= c d``)."""

    W: np.ndarray
    b: np.ndarray
    v: np.ndarray
    c: float
    radius: float


def theorem31_constant(x: np.ndarray) -> float:
    """Smallest ``c`` with ``|<x_i, x_j>| <= c d`` for all ``i != j``."""
    m, d = x.shape
    if m < 2:
        return 0.0
    gram = np.abs(x @ x.T)
    np.fill_diagonal(gram, -np.inf)
    return float(gram.max()) / d


def robust_construction(x: np.ndarray, y_pm1: np.ndarray, c: float | None = None) -> RobustNetwork:
    """The robust width-m network of Theorem 3.1's proof (needs ``c < 1``)."""
    d = x.shape[1]
    c = theorem31_constant(x) if c is None else float(c)
    if not c < 1:
        raise ValueError(f"Theorem 3.1 needs c < 1 (got {c:.4g})")
    W = 2.0 * x / (d * (1.0 - c))
    b = np.full(len(x), -(1.0 + c) / (1.0 - c))
    return RobustNetwork(W, b, np.asarray(y_pm1, dtype=np.float64), c, (1 - c) / 4 * np.sqrt(d))
