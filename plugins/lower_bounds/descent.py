"""Collision descent for ReLU prefixes: Algorithm 2 and Appendices C-D of the paper.

For a pair (u, v) and a chain ``f = [W_m .] relu(W_{m-1} ... relu(W_1 x + b_1) ...)``
the collision distance eps_f(u, v) = min max(||delta||, ||delta'||) subject to
f(u + delta) = f(v + delta') is non-convex, but on a fixed pair of activation
patterns it is a linear cone program (Appendix D): the pre-activations are
affine in (delta, delta'), the pattern must hold (one linear inequality per
neuron and side), the features must be equal (linear equalities), and the
objective is the epigraph t >= ||delta||, t >= ||delta'|| (two second-order
cones). Algorithm 2 starts from the pattern of the midpoint (u + v) / 2, which is
feasible, solves the cone program, and flips the neurons whose pattern
inequality has a positive dual variable:

- hidden ReLU layers (and every ReLU layer when the prefix ends with affine
  layers, Appendix C): each side's neuron flips on its own dual;
- the last ReLU layer of a prefix that ends with a ReLU shares one pattern for
  both sides (a collision needs relu(a) = relu(b): both inactive, or equal and
  active). An inactive neuron flips when both duals are positive (the paper's
  rule); an active one flips when the sum of the two duals is positive, because
  the equality a = b makes the two inequalities one constraint whose multiplier
  the solver may split arbitrarily between them (only the sum is identified).

Every flipped neuron sits at zero on the side it flips, so the previous optimum
stays feasible in the new polytope and eps never increases; the descent stops
when no neuron flips, eps stops decreasing, or after ``max_steps``.

Appendix D.1: when the first affine map W_1 has a non-trivial kernel, f depends
on x only through W_1 x, so delta is searched in the row space of W_1 (basis
``V^T``, r x D): any null-space component leaves f unchanged and only adds to
||delta||, hence nothing is lost.

Each cone program is first solved exactly by an active-set method on the
pattern rows (``active_set``: closed-form minimax solve with the held rows as
equalities, stopped at the KKT conditions; ``_central_duals`` recovers the
interior-point duals when they are not unique). When it does not settle, Clarabel
solves it directly (sparse problem, no modelling-layer canonicalisation) with
constraint generation, or a fresh cvxpy problem per step does (``solver="cvxpy"``;
with ``fast=False`` this is the naive reference of the speed benchmark). This
module is imported by worker processes: it holds plain numpy data only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from audit_plugins.lower_bounds.chain import Block, chain_preactivations, one_blas_thread


@dataclass(frozen=True)
class Chain:
    """A ReLU prefix as composed blocks, with the search basis of Appendix D.1."""

    blocks: tuple[Block, ...]
    basis: np.ndarray | None
    """``V^T`` (r x D) with orthonormal rows, or None to search all of R^D."""
    first_tangent: np.ndarray
    """``W_1 V`` (n_1 x r): how the first pre-activation moves with the reduced variable."""
    bounds: tuple[float, float] | None = None
    """Input box the perturbed points must stay in (None: R^D, the paper's setting)."""

    @property
    def merged(self) -> bool:
        """True when the prefix ends with a ReLU (last pattern shared by both sides)."""
        return self.blocks[-1].relu

    @property
    def dim(self) -> int:
        return self.first_tangent.shape[1]

    def lift(self, y: np.ndarray) -> np.ndarray:
        """Reduced perturbation(s) ``y`` (..., r) -> input perturbation(s) (..., D)."""
        return y if self.basis is None else y @ self.basis


def make_chain(
    blocks: tuple[Block, ...],
    basis: np.ndarray | None,
    bounds: tuple[float, float] | None = None,
) -> Chain:
    weight = blocks[0].weight
    tangent = weight if basis is None else weight @ basis.T
    return Chain(blocks, basis, np.ascontiguousarray(tangent), bounds)


@dataclass(frozen=True)
class DescentSettings:
    max_steps: int = 20
    dual_tol: float = 1e-6
    solver: str = "clarabel"
    """``clarabel`` (direct) or ``cvxpy`` (a fresh cvxpy problem per step)."""
    fast: bool = True
    """Try the exact equality-only solution before the cone solver (``solve_cone``)."""
    drop_far_rows: bool = True
    """Leave out pattern rows that cannot bind within the current radius (``build_cone``)."""


@dataclass
class DescentResult:
    """Candidate collisions of one pair, one per cone program solved (best last)."""

    u_tilde: np.ndarray
    v_tilde: np.ndarray
    steps: int
    status: str = "converged"
    eps_trace: list[float] = field(default_factory=list)


# ----------------------------------------------------------------- linear pieces


def side_pieces(
    chain: Chain, x: np.ndarray, masks: list[np.ndarray]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pre-activation ``value + tangent @ y`` of every block along ``x + V y``, patterns fixed.

    ``masks[i]`` is the pattern of ReLU block i (1.0 active, 0.0 inactive).
    """
    first = chain.blocks[0]
    value = first.weight @ x + first.bias
    tangent = chain.first_tangent
    pieces = [(value, tangent)]
    for mask, block in zip(masks, chain.blocks[1:], strict=False):
        value = block.weight @ (mask * value) + block.bias
        tangent = block.weight @ (mask[:, None] * tangent)
        pieces.append((value, tangent))
    return pieces


@dataclass
class ConeData:
    """``min t`` s.t. eq_A w = eq_b, in_A w <= in_b, ||y|| <= t, ||y'|| <= t, w = (y, y')."""

    r: int
    eq_A: np.ndarray
    eq_b: np.ndarray
    in_A: np.ndarray
    in_b: np.ndarray
    in_side: np.ndarray
    in_block: np.ndarray
    in_neuron: np.ndarray


def build_cone(
    chain: Chain,
    u: np.ndarray,
    v: np.ndarray,
    masks_u: list,
    masks_v: list,
    radius: float = np.inf,
) -> ConeData:
    """The cone program of Appendix D (generalised to chains, Appendix C) for fixed patterns.

    Pattern rows are scaled to unit normals, so their right-hand side is the distance
    (in the search variable) from the unperturbed point to the face. A row whose face
    is farther than ``radius`` holds for every ``||y|| <= radius``; since a feasible
    point of value ``radius`` is known (the previous step's optimum, or the midpoint),
    the optimum satisfies it and the row is left out: same optimum, smaller program.
    """
    r = chain.dim
    pieces = (side_pieces(chain, u, masks_u), side_pieces(chain, v, masks_v))
    rows, rhs, sides, blocks, neurons = [], [], [], [], []
    for side, (piece, masks) in enumerate(zip(pieces, (masks_u, masks_v), strict=True)):
        for block, mask in enumerate(masks):
            value, tangent = piece[block]
            sign = np.where(mask > 0, 1.0, -1.0)
            norms = np.linalg.norm(tangent, axis=1)
            keep = (norms > 0) & (sign * value <= radius * (1 + 1e-9) * norms)
            scale = sign[keep] / norms[keep]
            a = np.zeros((int(keep.sum()), 2 * r))
            a[:, side * r : (side + 1) * r] = -scale[:, None] * tangent[keep]
            rows.append(a)
            rhs.append(scale * value[keep])
            sides.append(np.full(len(a), side))
            blocks.append(np.full(len(a), block))
            neurons.append(np.flatnonzero(keep))
    if chain.bounds is not None:
        _box_rows(chain, (u, v), radius, (rows, rhs, sides, blocks, neurons))
    eq_A, eq_b = _equalities(chain, pieces, masks_u)
    return ConeData(
        r,
        eq_A,
        eq_b,
        np.vstack(rows) if rows else np.zeros((0, 2 * r)),
        np.concatenate(rhs) if rhs else np.zeros(0),
        np.concatenate(sides) if sides else np.zeros(0, dtype=np.int64),
        np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.int64),
        np.concatenate(neurons) if neurons else np.zeros(0, dtype=np.int64),
    )


def _box_rows(chain: Chain, points, radius: float, out) -> None:
    """lower <= x + V y <= upper on each side, as unit rows (block -1: never flipped)."""
    lower, upper = chain.bounds
    basis = np.eye(chain.dim) if chain.basis is None else chain.basis.T  # D x r
    norms = np.linalg.norm(basis, axis=1)
    r = chain.dim
    for side, x in enumerate(points):
        for sign, rhs in ((1.0, upper - x), (-1.0, x - lower)):
            keep = (norms > 0) & (rhs <= radius * (1 + 1e-9) * norms)
            a = np.zeros((int(keep.sum()), 2 * r))
            a[:, side * r : (side + 1) * r] = sign * basis[keep] / norms[keep, None]
            out[0].append(a)
            out[1].append(rhs[keep] / norms[keep])
            out[2].append(np.full(len(a), side))
            out[3].append(np.full(len(a), -1))
            out[4].append(np.flatnonzero(keep))


def _equalities(chain: Chain, pieces, masks_u) -> tuple[np.ndarray, np.ndarray]:
    """f(u + V y) = f(v + V y'): active rows of the last ReLU, or every output row."""
    (value_u, tangent_u), (value_v, tangent_v) = pieces[0][-1], pieces[1][-1]
    if chain.merged:
        active = masks_u[-1] > 0
        value_u, tangent_u = value_u[active], tangent_u[active]
        value_v, tangent_v = value_v[active], tangent_v[active]
    a = np.hstack([tangent_u, -tangent_v])
    b = value_v - value_u
    if len(a) == 0:
        return a, b
    # an orthonormal basis of the same equations: well conditioned for the solvers
    left, sigma, right = np.linalg.svd(a, full_matrices=False)
    rank = sigma > sigma[0] * 1e-10
    return right[rank], (left[:, rank].T @ b) / sigma[rank]


# ------------------------------------------------------------------- solvers


@dataclass
class ConeSolution:
    t: float
    w: np.ndarray
    in_dual: np.ndarray


def solve_cone(data: ConeData, solver: str, fast: bool = True) -> ConeSolution | None:
    """Solve one cone program; None when the solver did not reach an optimum.

    With ``fast``, an exact active-set method runs first (``active_set``): it solves
    the program with a guessed set of pattern rows held as equalities in closed
    form (``equality_solve``) and stops when the result satisfies every other row
    and every held row has a non-negative multiplier, the KKT conditions of the
    full program (``_central_duals`` then settles non-unique duals). When it does
    not settle within a few rounds,
    the cone solver takes over with constraint generation: only the rows found
    violated are handed to it, which gives the same optimum as one full solve (the
    rows left out are not binding, their duals are zero).
    """
    if not fast:
        return _solve_rows(data, np.ones(len(data.in_A), dtype=bool), solver)
    solution, rows = active_set(data)
    if solution is not None:
        return _central_duals(data, solution, solver)
    relaxed = equality_only(data)
    rows |= np.ones(len(rows), dtype=bool) if relaxed is None else _violated(data, relaxed.w)
    while True:  # constraint generation, from the rows the active set tried
        solution = _solve_rows(data, rows, solver)
        if solution is None:
            return None
        missing = _violated(data, solution.w) & ~rows
        if not missing.any():
            return solution
        rows |= missing


def _central_duals(data: ConeData, solution: ConeSolution, solver: str) -> ConeSolution:
    """The interior-point duals when the active set's are not the only optimal ones.

    A tight pattern row with a zero multiplier means the dual optimum may not be
    unique (degenerate rows, e.g. the same neuron on both sides of a symmetric
    pair). An interior-point solver returns the centre of the dual optimal face,
    positive on every row that can carry a multiplier, as the paper's CVXOPT does;
    flips are decided from those. Rows that are not tight have zero duals in every
    optimum, so the cone solver only needs the tight ones.
    """
    slack = data.in_b - data.in_A @ solution.w
    tight = slack <= 1e-9 * (1.0 + np.abs(data.in_b))
    pattern = data.in_block >= 0  # box rows (block -1) never flip: their duals do not matter
    if not (tight & pattern & (solution.in_dual <= 0)).any():
        return solution
    central = _solve_rows(data, tight | (solution.in_dual > 0), solver)
    if central is None or _violated(data, central.w).any():
        return solution
    return central


def active_set(data: ConeData, rounds: int = 40) -> tuple[ConeSolution | None, np.ndarray]:
    """Exact solution through an active set of pattern rows, or (None, rows tried).

    The cone program's dual of a held row is ``-alpha / t`` with ``alpha`` the row's
    multiplier in ``equality_solve`` (compare the stationarity conditions of the
    cone program, whose second-order-cone multipliers are (lam*, 1 - lam*), with
    those of the weighted least-norm problem at lam*).
    """
    held = np.zeros(len(data.in_A), dtype=bool)
    tried = held.copy()
    for _ in range(rounds):
        a = np.vstack([data.eq_A, data.in_A[held]])
        b = np.concatenate([data.eq_b, data.in_b[held]])
        solved = equality_solve(a, b, data.r)
        if solved is None:
            return None, tried
        t, w, alpha = solved
        dual = np.zeros(len(data.in_A))
        if t > 1e-12:
            dual[held] = -alpha[len(data.eq_A) :] / t
        violated = _violated(data, w) & ~held
        wrong = held & (dual < -1e-9)
        if not violated.any() and not wrong.any():
            return ConeSolution(t, w, np.maximum(dual, 0.0)), tried
        if wrong.any():  # release the row with the most negative multiplier
            held[np.argmin(np.where(wrong, dual, np.inf))] = False
        else:  # hold the most violated row (rows are scaled to unit normals), and every
            # violated box row at once (coordinate bounds, there can be many)
            excess = np.where(violated, data.in_A @ w - data.in_b, -np.inf)
            held[np.argmax(excess)] = True
            held |= violated & (data.in_block < 0)
        tried |= held
    return None, tried


def _solve_rows(data: ConeData, rows: np.ndarray, solver: str) -> ConeSolution | None:
    """The cone program with only the pattern ``rows`` (duals of the others: 0)."""
    sub = ConeData(
        data.r,
        data.eq_A,
        data.eq_b,
        data.in_A[rows],
        data.in_b[rows],
        data.in_side[rows],
        data.in_block[rows],
        data.in_neuron[rows],
    )
    solution = _solve_cvxpy(sub) if solver == "cvxpy" else _solve_clarabel(sub)
    if solution is None:
        return None
    dual = np.zeros(len(data.in_A))
    dual[rows] = solution.in_dual
    return ConeSolution(solution.t, solution.w, dual)


def _violated(data: ConeData, w: np.ndarray) -> np.ndarray:
    return data.in_A @ w > data.in_b + 1e-9 * (1.0 + np.abs(data.in_b))


def equality_only(data: ConeData) -> ConeSolution | None:
    """The cone program without its pattern rows (``equality_solve`` of the equalities)."""
    solved = equality_solve(data.eq_A, data.eq_b, data.r)
    if solved is None:
        return None
    return ConeSolution(solved[0], solved[1], np.zeros(len(data.in_A)))


def equality_solve(
    a: np.ndarray, b: np.ndarray, r: int
) -> tuple[float, np.ndarray, np.ndarray] | None:
    """``min max(||y||, ||y'||)`` s.t. ``[M_u M_v] (y, y') = b``, exactly: (t, w, alpha).

    Minimax duality: the value squared is ``max_{lam in (0,1)} min lam ||y||^2 +
    (1 - lam) ||y'||^2 = max_lam b^T K(lam)^+ b`` with ``K(lam) = M_u M_u^T / lam +
    M_v M_v^T / (1 - lam)``, a concave function of lam. Whitening by ``M M^T`` and
    diagonalising ``M_u M_u^T`` in that metric turns it into a sum of m scalar terms,
    maximised by bisection on its derivative; the minimiser for lam* is then explicit,
    ``y = M_u^T alpha / lam``, ``y' = M_v^T alpha / (1 - lam)``. Returns None when the
    equations look inconsistent or the result does not solve them to 1e-9 (the cone
    solver decides then).
    """
    if len(a) == 0:
        return 0.0, np.zeros(2 * r), np.zeros(0)
    m_u, m_v = a[:, :r], a[:, r:]
    values, vectors = np.linalg.eigh(a @ a.T)
    keep = values > values[-1] * 1e-12
    whiten = vectors[:, keep].T / np.sqrt(values[keep])[:, None]  # k x m
    if np.linalg.norm(b - vectors[:, keep] @ (vectors[:, keep].T @ b)) > 1e-9 * (
        1.0 + np.linalg.norm(b)
    ):
        return None
    wu = whiten @ m_u
    mu, q = np.linalg.eigh(wu @ wu.T)
    mu = np.clip(mu, 0.0, 1.0)
    c2 = (q.T @ (whiten @ b)) ** 2
    lam = _maximise_lambda(mu, c2)
    if min(lam, 1.0 - lam) < 1e-7:  # one norm is not binding: the formula degenerates
        return _one_sided(a, b, r, big=0 if lam > 0.5 else 1)
    scale = 1.0 / (mu / lam + (1.0 - mu) / (1.0 - lam))
    alpha = whiten.T @ (q @ (scale * (q.T @ (whiten @ b))))
    w = np.concatenate([m_u.T @ alpha / lam, m_v.T @ alpha / (1.0 - lam)])
    if np.abs(a @ w - b).max() > 1e-9 * (1.0 + np.abs(b).max()):
        return None  # ill-conditioned (nearly dependent rows, lam at an end): not exact
    t = max(float(np.linalg.norm(w[:r])), float(np.linalg.norm(w[r:])))
    return t, w, alpha


def _one_sided(
    a: np.ndarray, b: np.ndarray, r: int, big: int
) -> tuple[float, np.ndarray, np.ndarray] | None:
    """The optimum when only one side's norm binds (lam* at 1 for big = 0, at 0 for 1).

    The binding side's perturbation is the least-norm one for which the other side
    can complete the equations, and the other side takes its least-norm completion;
    this is optimal when the completion is not longer. Multipliers: the binding side's
    perturbation is ``M_big^T alpha`` with ``M_other^T alpha = 0``.
    """
    blocks = (a[:, :r], a[:, r:])
    m_big, m_other = blocks[big], blocks[1 - big]
    left, sigma, _ = np.linalg.svd(m_other, full_matrices=False)
    span = left[:, sigma > (sigma[0] if sigma.size else 0.0) * 1e-10] if sigma.size else left
    project = np.eye(len(b)) - span @ span.T  # onto the complement of range(M_other)
    y_big = np.linalg.pinv(project @ m_big, rcond=1e-10) @ (project @ b)
    y_other = np.linalg.pinv(m_other, rcond=1e-10) @ (b - m_big @ y_big)
    w = np.concatenate([y_big, y_other] if big == 0 else [y_other, y_big])
    t = float(np.linalg.norm(y_big))
    if np.linalg.norm(y_other) > t * (1 + 1e-9) or np.abs(a @ w - b).max() > 1e-9 * (
        1.0 + np.abs(b).max()
    ):
        return None
    stacked = np.vstack([m_big.T, m_other.T])
    target = np.concatenate([y_big, np.zeros(r)])
    alpha = np.linalg.lstsq(stacked, target, rcond=None)[0]
    if np.abs(stacked @ alpha - target).max() > 1e-8 * (1.0 + t):
        return None
    return t, w, alpha


def _maximise_lambda(mu: np.ndarray, c2: np.ndarray) -> float:
    """Maximiser over (0, 1) of ``sum c2 / (mu / lam + (1 - mu) / (1 - lam))`` (concave)."""
    low, high = 1e-12, 1.0 - 1e-12
    while high - low > 1e-13:
        lam = 0.5 * (low + high)
        denom = mu / lam + (1.0 - mu) / (1.0 - lam)
        slope = np.sum(c2 * (mu / lam**2 - (1.0 - mu) / (1.0 - lam) ** 2) / denom**2)
        if slope > 0:
            low = lam
        else:
            high = lam
    return 0.5 * (low + high)


def _solve_clarabel(data: ConeData) -> ConeSolution | None:
    """Appendix D's cone program ``min c^T x, G x + s = h, s in cones`` with Clarabel."""
    import clarabel

    r, n_eq, n_in = data.r, len(data.eq_A), len(data.in_A)
    n = 2 * r + 1
    a = np.zeros((n_eq + n_in + 2 * r + 2, n))
    a[:n_eq, 1:] = data.eq_A
    a[n_eq : n_eq + n_in, 1:] = data.in_A
    soc = n_eq + n_in  # s = (t, y) and (t, y'): rows -t, -y and -t, -y'
    a[soc, 0] = a[soc + r + 1, 0] = -1.0
    a[soc + 1 + np.arange(r), 1 + np.arange(r)] = -1.0
    a[soc + r + 2 + np.arange(r), r + 1 + np.arange(r)] = -1.0
    b = np.concatenate([data.eq_b, data.in_b, np.zeros(2 * r + 2)])
    cones = [clarabel.ZeroConeT(n_eq)] if n_eq else []
    if n_in:
        cones.append(clarabel.NonnegativeConeT(n_in))
    cones += [clarabel.SecondOrderConeT(r + 1), clarabel.SecondOrderConeT(r + 1)]
    q = np.zeros(n)
    q[0] = 1.0
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    p = sp.csc_matrix((n, n))
    solution = clarabel.DefaultSolver(p, q, sp.csc_matrix(a), b, cones, settings).solve()
    if str(solution.status) not in ("Solved", "AlmostSolved"):
        return None
    x, z = np.asarray(solution.x), np.asarray(solution.z)
    return ConeSolution(float(x[0]), x[1:], z[n_eq : n_eq + n_in])


def _solve_cvxpy(data: ConeData) -> ConeSolution | None:
    """The same cone program as a fresh cvxpy problem (canonicalised at every call)."""
    import cvxpy as cp

    r = data.r
    t, w = cp.Variable(), cp.Variable(2 * r)
    pattern = data.in_b - data.in_A @ w >= 0
    constraints = [pattern, cp.SOC(t, w[:r]), cp.SOC(t, w[r:])]
    if len(data.eq_A):
        constraints.append(data.eq_A @ w == data.eq_b)
    problem = cp.Problem(cp.Minimize(t), constraints)
    try:
        problem.solve(solver=cp.CLARABEL)
    except cp.SolverError:
        return None
    if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
        return None
    return ConeSolution(float(t.value), np.asarray(w.value), np.asarray(pattern.dual_value))


# ------------------------------------------------------------------- descent


def initial_masks(chain: Chain, u: np.ndarray, v: np.ndarray) -> list[np.ndarray]:
    """Algorithm 2, lines 1-4: the activation pattern of the midpoint (u + v) / 2."""
    values = chain_preactivations(chain.blocks, ((u + v) / 2)[None, :])
    relu_blocks = [z[0] for z, block in zip(values, chain.blocks, strict=True) if block.relu]
    return [(z > 0).astype(np.float64) for z in relu_blocks]


def flip_patterns(
    chain: Chain, data: ConeData, dual: np.ndarray, masks: tuple[list, list], tol: float
) -> tuple[list, list, int]:
    """Algorithm 2 lines 9-23 (Appendix C): new patterns from the pattern duals."""
    new = ([m.copy() for m in masks[0]], [m.copy() for m in masks[1]])
    per_side = [[np.zeros_like(m) for m in masks[0]], [np.zeros_like(m) for m in masks[1]]]
    for side in (0, 1):
        rows = data.in_side == side
        for block in range(len(masks[side])):
            sel = rows & (data.in_block == block)
            per_side[side][block][data.in_neuron[sel]] = dual[sel]
    flips = 0
    last = len(masks[0]) - 1
    for side in (0, 1):
        for block in range(len(masks[side])):
            if chain.merged and block == last:
                continue
            flip = per_side[side][block] > tol
            new[side][block][flip] = 1.0 - new[side][block][flip]
            flips += int(flip.sum())
    if chain.merged:
        du, dv, active = per_side[0][last], per_side[1][last], masks[0][last] > 0
        flip = np.where(active, du + dv > tol, (du > tol) & (dv > tol))
        for side in (0, 1):
            new[side][last][flip] = 1.0 - new[side][last][flip]
        flips += int(flip.sum())
    return new[0], new[1], flips


def descend(
    chain: Chain,
    u: np.ndarray,
    v: np.ndarray,
    settings: DescentSettings,
    deadline: float = float("inf"),
) -> DescentResult:
    """Algorithm 2 with midpoint initialisation for one pair; every step's optimum is kept.

    Past ``deadline`` (``time.time()``) no further cone program starts: the steps
    solved so far are returned (status ``"deadline"``); each is a candidate that is
    verified like any other, so stopping early only loses edges, never soundness.
    """
    masks = initial_masks(chain, u, v)
    masks_u, masks_v = masks, [m.copy() for m in masks]
    eps_old = float(np.linalg.norm(u - v)) / 2
    ys, status, trace = [], "converged", []
    for _ in range(settings.max_steps):
        if ys and time.time() >= deadline:
            status = "deadline"
            break
        radius = eps_old if settings.drop_far_rows else np.inf
        data = build_cone(chain, u, v, masks_u, masks_v, radius)
        solution = solve_cone(data, settings.solver, settings.fast)
        if solution is None:
            status = "solver"
            break
        ys.append(solution.w)
        trace.append(solution.t)
        masks_u, masks_v, flips = flip_patterns(
            chain, data, solution.in_dual, (masks_u, masks_v), settings.dual_tol
        )
        if flips == 0 or solution.t >= eps_old - 1e-9 * max(1.0, eps_old):
            break
        eps_old = solution.t
    else:
        status = "max_steps"
    r = chain.dim
    w = np.array(ys) if ys else np.zeros((0, 2 * r))
    return DescentResult(u + chain.lift(w[:, :r]), v + chain.lift(w[:, r:]), len(ys), status, trace)


def descend_many(
    chain: Chain,
    us: np.ndarray,
    vs: np.ndarray,
    settings: DescentSettings,
    deadline: float = float("inf"),
) -> list[DescentResult | None]:
    """``descend`` over rows of ``us``/``vs`` (a worker's chunk); None once past ``deadline``."""
    results: list[DescentResult | None] = []
    for u, v in zip(us, vs, strict=True):
        started = time.time() < deadline
        results.append(descend(chain, u, v, settings, deadline) if started else None)
    return results


def descend_chunk(
    chain: Chain, us: np.ndarray, vs: np.ndarray, settings: DescentSettings, deadline: float
) -> list[DescentResult | None]:
    """``descend_many`` with one BLAS thread (these problems are too small for more)."""

    with one_blas_thread():
        return descend_many(chain, us, vs, settings, deadline)
