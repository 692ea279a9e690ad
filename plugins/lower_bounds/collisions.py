"""Collision finding for every prefix, with float64 verification and carry-over.

A collision for a prefix f and a pair (u, v) of points from different classes is
a pair of perturbed inputs (u~, v~) with f(u~) = f(v~); its budget is
max(||u~ - u||, ||v~ - v||). Any collision found is an upper bound on eps_f(u, v)
and an edge of the conflict graph at every budget above it (Definition 2).

Carry-over (why collisions found for a shorter prefix stay valid): a longer
prefix is f_k = h o f_j with h the remaining layers, so f_j(u~) = f_j(v~)
implies f_k(u~) = h(f_j(u~)) = h(f_j(v~)) = f_k(v~): every collision of f_j is a
collision of f_k with the same budget. Hence eps_{f_k} <= eps_{f_j} pairwise,
the conflict graph of f_k contains that of f_j, and with the collisions carried
over the lower bounds never decrease with depth. Carried collisions are
re-verified on the longer prefix like any other.

Verification: a candidate becomes an edge only after f(u~) and f(v~) are
evaluated by the layer graph in float64 and agree within ``rtol`` (relative to
the feature magnitude); its budget is measured from the candidate itself.

Pruning: a pair whose collision distance provably exceeds the largest budget
cannot add an edge at any budget and is not searched. The bound used (proved in
``collision_lower_bound``) comes from the last layer's pre-activations and
Lipschitz constants; note that the collision distance of a *shorter* prefix is
an upper bound, not a lower bound, for a longer one (carry-over goes the other
way), so it cannot be used to prune.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from audit_core.executor import Executor, batches, not_run
from audit_core.graph import LayerGraph
from audit_plugins.lower_bounds.chain import Block, chain_preactivations, one_blas_thread
from audit_plugins.lower_bounds.descent import (
    Chain,
    DescentResult,
    DescentSettings,
    descend_chunk,
    make_chain,
)
from audit_plugins.lower_bounds.prefix import AFFINE, INPUT, RELU, Prefix, row_space

VERIFY_CHUNK = 4096


@dataclass
class Pairs:
    """Pairs (a[i], b[i]) of positions into ``x`` (flat float64 samples), a from class 0."""

    x: np.ndarray
    a: np.ndarray
    b: np.ndarray

    def __len__(self) -> int:
        return len(self.a)

    @property
    def u(self) -> np.ndarray:
        return self.x[self.a]

    @property
    def v(self) -> np.ndarray:
        return self.x[self.b]


@dataclass
class Collisions:
    """The best verified collision of every pair for one prefix (``eps`` inf: none)."""

    eps: np.ndarray
    u_tilde: np.ndarray
    v_tilde: np.ndarray
    found_at: np.ndarray
    """Index (in the prefix list) of the prefix whose own search found the collision."""
    stats: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchSettings:
    """How hard to look for collisions of ReLU prefixes."""

    max_budget: float
    descent: DescentSettings = field(default_factory=DescentSettings)
    rtol: float = 1e-6
    prune: bool = True
    project: bool = True
    max_pairs: int = 0
    """At most this many pairs searched per prefix (closest first); 0: no limit."""
    bounds: tuple[float, float] | None = None
    """Input box for the perturbed points (None: unconstrained, the paper's setting)."""


# ------------------------------------------------------------------ verification


def measured_budget(pairs: Pairs, u_tilde: np.ndarray, v_tilde: np.ndarray) -> np.ndarray:
    """``max(||u~ - u||, ||v~ - v||)`` per pair."""
    return np.maximum(
        np.linalg.norm(u_tilde - pairs.u, axis=1), np.linalg.norm(v_tilde - pairs.v, axis=1)
    )


def feature_mismatch(graph: LayerGraph, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """``||f(x1) - f(x2)||_inf / max(1, ||f(x1)||_inf, ||f(x2)||_inf)`` per row (float64)."""
    out = np.empty(len(x1))
    with torch.no_grad():
        for start in range(0, len(x1), VERIFY_CHUNK):
            stop = start + VERIFY_CHUNK
            f1 = graph.forward(x1[start:stop]).reshape(len(x1[start:stop]), -1).numpy()
            f2 = graph.forward(x2[start:stop]).reshape(len(x2[start:stop]), -1).numpy()
            scale = np.maximum(1.0, np.maximum(np.abs(f1).max(1), np.abs(f2).max(1)))
            out[start:stop] = np.abs(f1 - f2).max(1) / scale
    return out


def verified_budget(
    graph: LayerGraph,
    pairs: Pairs,
    u_tilde: np.ndarray,
    v_tilde: np.ndarray,
    rtol: float,
    bounds: tuple[float, float] | None = None,
) -> np.ndarray:
    """Measured budget of each candidate collision, inf where f(u~) != f(v~) (or, with
    ``bounds``, where a perturbed point leaves the box by more than 1e-9)."""
    if len(pairs) == 0:
        return np.zeros(0)
    ok = feature_mismatch(graph, u_tilde, v_tilde) <= rtol
    if bounds is not None:
        for z in (u_tilde, v_tilde):
            ok &= np.all((z >= bounds[0] - 1e-9) & (z <= bounds[1] + 1e-9), axis=1)
    return np.where(ok, measured_budget(pairs, u_tilde, v_tilde), np.inf)


# ------------------------------------------------------------- closed forms


def half_distances(pa: np.ndarray, pb: np.ndarray) -> np.ndarray:
    """``||pa_i - pb_j|| / 2`` for all (i, j), from one matrix product (float64).

    ``||a/2 - b/2||^2 = -2 (a/2) . (b/2) + ||a/2||^2 + ||b/2||^2`` is one product of
    the inputs augmented with their squared norms and a column of ones, so the
    (n x n) result takes that product and two passes (clip at 0, square root).
    """
    ha, hb = pa / 2, pb / 2
    ones_a, ones_b = np.ones((len(ha), 1)), np.ones((len(hb), 1))
    left = np.hstack([-2.0 * ha, np.einsum("ij,ij->i", ha, ha)[:, None], ones_a])
    right = np.hstack([hb, ones_b, np.einsum("ij,ij->i", hb, hb)[:, None]])
    squared = left @ right.T
    np.maximum(squared, 0.0, out=squared)
    return np.sqrt(squared, out=squared)


def affine_distances(weight: np.ndarray, xa: np.ndarray, xb: np.ndarray) -> np.ndarray:
    """Section 3.1: eps_f(u, v) = ||V^T (v - u)|| / 2 for f(x) = L x + k, all pairs.

    ``V`` spans the row space of ``L`` (zero singular values excluded), so a
    rank-deficient or dimension-reducing ``L`` gives smaller distances than the
    input space and an injective one gives exactly ``||u - v|| / 2`` (then the
    projection, a rotation, is skipped). The data are projected once; all
    pairwise distances are one matrix product.
    """
    vt = row_space(weight)
    if vt.shape[0] == weight.shape[1]:
        return half_distances(xa, xb)
    return half_distances(xa @ vt.T, xb @ vt.T)


def input_collisions(pairs: Pairs) -> tuple[np.ndarray, np.ndarray]:
    """Both points moved to their midpoint: eps = ||u - v|| / 2 (Section 2.1)."""
    middle = (pairs.u + pairs.v) / 2
    return middle, middle.copy()


def affine_collisions(weight: np.ndarray, pairs: Pairs) -> tuple[np.ndarray, np.ndarray]:
    """Optimal collisions of Section 3.1: delta = -delta' = V V^T (v - u) / 2."""
    vt = row_space(weight)
    delta = ((pairs.v - pairs.u) @ vt.T) @ vt / 2
    return pairs.u + delta, pairs.v - delta


# ------------------------------------------------------------------ pruning


def collision_lower_bound(
    prefix: Prefix, pairs: Pairs, budget: float = np.inf, executor: Executor | None = None
) -> np.ndarray:
    """Per pair a number lb such that eps_f(u, v) <= budget implies eps_f(u, v) >= lb.

    With ``budget`` inf it is an unconditional lower bound on eps_f. Proof, for a
    chain prefix f whose last block is z = W h + b, h = h(x) the output of the
    earlier blocks (h = x for the first layer), followed by a ReLU or not. Take any
    collision (u~, v~) of budget eps <= budget.

    1. Local Lipschitz constants (``local_lipschitz``): ||h(u~) - h(u)|| <= L_u eps
       and |z_j(u~) - z_j(u)| <= l_j(u) eps, with constants computed on the
       budget-ball around u (neurons that stay inactive on the whole ball do not
       move).
    2. One coordinate, p = z_j(u), p' = z_j(v). Ending with an affine block: z_j
       must agree at u~ and v~, so eps >= |p - p'| / (l_j(u) + l_j(v)). Ending with
       a ReLU: relu(z_j(u~)) = relu(z_j(v~)) means both <= 0, needing eps >=
       max(p / l_j(u), p' / l_j(v), 0), or equal, needing the bound above; so eps >=
       the smaller one.
    3. All coordinates J that must be equal (all of them for an affine end; for a
       ReLU end those whose "both <= 0" option costs more than the budget):
       W_J (h(u~) - h(v~)) = 0, hence P_J (h(u~) - h(v~)) = 0 for the projection P_J
       on the row space of W_J, and ||P_J (h(u) - h(v))|| <= (L_u + L_v) eps. For
       the first layer (h = x, L = 1) this is Section 3.1's bound restricted to J.
    The result is the largest of these numbers (minus a relative 1e-6 margin).

    Step 1 runs per point, steps 2-3 per pair: batches of each are units of ``executor``.
    """
    if prefix.kind != RELU:
        return np.zeros(len(pairs))
    executor = executor or Executor(1)
    with one_blas_thread():
        pre = chain_preactivations(prefix.blocks, pairs.x)
    h = pairs.x if len(pre) == 1 else np.maximum(pre[-2], 0.0)
    inline = len(pairs) * prefix.blocks[-1].weight.shape[0] ** 2 < INLINE_WORK
    points = batches(len(pairs.x), BOUND_BATCH)
    constants = executor.map(
        _point_constants,
        [(r.start, r.stop) for r in points],
        shared=executor.share(_PointInputs(prefix.blocks, pre, budget)),
        inline=inline,
    )
    lip_h = np.concatenate([c[0] for c in constants])
    lip_z = np.concatenate([c[1] for c in constants])
    state = _PairInputs(prefix, pre[-1], h, lip_h, lip_z, pairs.a, pairs.b, budget)
    bounds = executor.map(
        _pair_bounds,
        [(r.start, r.stop) for r in batches(len(pairs), BOUND_BATCH)],
        shared=executor.share(state),
        inline=inline,
    )
    bound = np.concatenate(bounds) if bounds else np.zeros(0)
    return bound * (1 - 1e-6)


BOUND_BATCH = 256
"""Most points (pairs) per unit of ``collision_lower_bound``; cut from the count only, so
the same slices (and float64 results) under every executor."""


@dataclass(frozen=True)
class _PointInputs:
    """What ``_point_constants`` reads: the prefix's blocks, the points' pre-activations."""

    blocks: tuple[Block, ...]
    pre: list[np.ndarray]
    budget: float


def _point_constants(state: _PointInputs, rows: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """``local_lipschitz`` of the points ``rows[0]:rows[1]`` (a unit: every point alone)."""
    part = slice(*rows)
    with one_blas_thread():
        return local_lipschitz(state.blocks, [p[part] for p in state.pre], state.budget)


@dataclass(frozen=True)
class _PairInputs:
    """What ``_pair_bounds`` reads: per point, the last pre-activations, the last block's
    input and the Lipschitz constants; the pairs' positions."""

    prefix: Prefix
    last: np.ndarray
    h: np.ndarray
    lip_h: np.ndarray
    lip_z: np.ndarray
    a: np.ndarray
    b: np.ndarray
    budget: float


def _pair_bounds(state: _PairInputs, rows: tuple[int, int]) -> np.ndarray:
    """Steps 2-3 of ``collision_lower_bound`` for the pairs ``rows[0]:rows[1]`` (a unit)."""
    a, b = state.a[slice(*rows)], state.b[slice(*rows)]
    p, q = state.last[a], state.last[b]
    la, lb = state.lip_z[a], state.lip_z[b]
    with np.errstate(divide="ignore", invalid="ignore"):
        equal = np.where(la + lb > 0, np.abs(p - q) / (la + lb), np.inf)
        must_equal = np.ones_like(p, dtype=bool)
        if state.prefix.ends_with_relu:
            off = np.maximum(_ratio(p, la), _ratio(q, lb))
            equal = np.minimum(equal, off)
            must_equal = off > state.budget
    equal[~np.isfinite(equal)] = 0.0  # a coordinate that cannot move: no information
    with one_blas_thread():
        weight = state.prefix.blocks[-1].weight
        projected = _projected(weight, state.h[a] - state.h[b], must_equal)
    speed = state.lip_h[a] + state.lip_h[b]  # 0: h is constant on both balls
    with np.errstate(divide="ignore", invalid="ignore"):
        moved = np.where(speed > 0, projected / speed, np.where(projected > 0, np.inf, 0))
    return np.maximum(equal.max(axis=1), moved)


def _ratio(value: np.ndarray, lip: np.ndarray) -> np.ndarray:
    """Budget needed to push ``value`` down to 0 at speed ``lip`` (0 when already <= 0)."""
    return np.where(value > 0, value / np.where(lip > 0, lip, 1.0), 0.0) + np.where(
        (value > 0) & (lip == 0), np.inf, 0.0
    )


def local_lipschitz(blocks, pre: list[np.ndarray], budget: float) -> tuple[np.ndarray, np.ndarray]:
    """Per point: L with ||h(x~) - h(x)|| <= L ||x~ - x|| on the budget-ball, and l (N, n_m).

    h is the input of the last block. Layer by layer, a neuron whose pre-activation
    stays negative on the whole ball (value + l_j * budget < 0) keeps h_j = 0; the
    others move by at most |z_j(x~) - z_j(x)|, so L_i = ||W_i[U_i, U_{i-1}]||_2
    L_{i-1} with U the possibly-moving neurons, and l_j = ||w_j[U]|| L.
    """
    n = len(pre[0])
    lip = np.ones(n)
    moving = [np.ones((n, blocks[0].weight.shape[1]), dtype=bool)]
    lip_z = np.zeros((n, blocks[0].weight.shape[0]))
    for index, block in enumerate(blocks):
        weight = block.weight
        lip_z = np.sqrt((weight**2) @ moving[-1].T).T * lip[:, None]
        if index == len(blocks) - 1:
            break
        margin = 1e-9 * (1.0 + np.abs(pre[index]))
        live = (
            pre[index] + lip_z * budget >= -margin
            if np.isfinite(budget)
            else np.ones_like(lip_z, dtype=bool)
        )
        lip = lip * np.array([_spectral(weight[live[i]][:, moving[-1][i]]) for i in range(n)])
        moving.append(live)
    return lip, lip_z


def _spectral(matrix: np.ndarray) -> float:
    return float(np.linalg.norm(matrix, 2)) if matrix.size else 0.0


def _projected(weight: np.ndarray, diff: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """||P_J d|| per row, P_J the projection on the row space of weight[J] (J = mask row).

    With M = diag(mask) W, ||P_J d||^2 = sum over eigenpairs (lam, e) of M M^T of
    (e . M d)^2 / lam (when W has at most as many rows as columns), else sum of
    (e . d)^2 over the eigenvectors of M^T M. Eigenvalues below 1e-8 of the largest
    are dropped: that only lowers the result, and keeps the relative error of the
    kept ones negligible.
    """
    rows, cols = weight.shape
    m = mask.astype(np.float64)
    if rows <= cols:
        gram = (weight @ weight.T)[None] * m[:, :, None] * m[:, None, :]
        image = m * (diff @ weight.T)
    else:
        gram = np.einsum("ki,pk,kj->pij", weight, m, weight)
        image = diff
    lam, vec = np.linalg.eigh(gram)
    keep = lam > 1e-8 * np.maximum(lam[:, -1:], 1e-300)
    coef = np.einsum("pij,pi->pj", vec, image) ** 2
    scale = np.where(keep, 1.0 / np.where(keep, lam, 1.0), 0.0) if rows <= cols else keep
    return np.sqrt(np.sum(coef * scale, axis=1))


# ------------------------------------------------------------ ReLU prefixes


ProgressCallback = Callable[[int], None]


def relu_collisions(
    prefix: Prefix,
    pairs: Pairs,
    best_known: np.ndarray,
    settings: SearchSettings,
    deadline: float,
    progress: ProgressCallback | None = None,
    executor: Executor | None = None,
) -> tuple[list[tuple[int, DescentResult]], dict[str, float]]:
    """Descents (Algorithm 2 / Appendix C) for the pairs that may collide within budget.

    Pairs are searched in increasing order of ``best_known`` (the best verified
    collision so far, e.g. carried over), so that a time limit leaves out the pairs
    least likely to give an edge. Returns (pair index, candidates) per finished pair
    and counts.
    """
    if not settings.prune:
        lower = np.zeros(len(pairs))
    elif prefix.kind == AFFINE:  # with a box: the unconstrained closed form is a lower bound
        u_t, v_t = affine_collisions(prefix.blocks[0].weight, pairs)
        lower = measured_budget(pairs, u_t, v_t) * (1 - 1e-9)
    else:
        lower = collision_lower_bound(prefix, pairs, settings.max_budget, executor)
    pruned = lower > settings.max_budget
    # the known collision already meets the bound (which holds since it is within budget)
    optimal = (best_known <= settings.max_budget) & (best_known <= lower * (1 + 1e-12))
    todo = np.flatnonzero(~pruned & ~optimal)
    todo = todo[np.argsort(best_known[todo], kind="stable")]
    if settings.max_pairs:
        todo = todo[: settings.max_pairs]
    # with a box the null space of the first layer can help to stay inside: no projection
    project = settings.project and settings.bounds is None
    chain = make_chain(prefix.blocks, _search_basis(prefix, project), settings.bounds)
    us, vs = pairs.u[todo], pairs.v[todo]
    results = run_descents(chain, us, vs, settings, deadline, progress, executor)
    finished = [(int(i), r) for i, r in zip(todo, results, strict=True) if r is not None]
    stats = {
        "pairs": len(pairs),
        "pruned": int(pruned.sum()),
        "already_optimal": int((optimal & ~pruned).sum()),
        "searched": len(finished),
        "unfinished": len(todo) - len(finished),
        "cut_short": sum(r.status == "deadline" for _, r in finished),
        "cone_steps": sum(r.steps for _, r in finished),
        "solver_failures": sum(r.status == "solver" for _, r in finished),
        "search_dim": chain.dim,
    }
    return finished, stats


def _search_basis(prefix: Prefix, project: bool) -> np.ndarray | None:
    """Appendix D.1: search delta in the row space of the first affine map when smaller."""
    if not project:
        return None
    weight = prefix.blocks[0].weight
    basis = row_space(weight)
    return basis if basis.shape[0] < weight.shape[1] else None


INLINE_WORK = 500_000
"""Below this many pairs x (search dimension)^2 the descents (pairs x (last layer's
width)^2: the lower bounds) run in the analysis's own process: shipping them to workers
would cost more (a cone program's cost, and the projection's, grows about with the
square of that dimension)."""


@dataclass(frozen=True)
class _Descents:
    """What every descent of one prefix reads (shipped once per worker)."""

    chain: Chain
    us: np.ndarray
    vs: np.ndarray
    settings: DescentSettings
    deadline: float


def _descend_one(state: _Descents, row: int) -> DescentResult:
    """One pair's descent (a unit of the executor), on one BLAS thread."""
    rows = slice(row, row + 1)
    u, v = state.us[rows], state.vs[rows]
    return descend_chunk(state.chain, u, v, state.settings, state.deadline)[0]


def run_descents(
    chain: Chain,
    us: np.ndarray,
    vs: np.ndarray,
    settings: SearchSettings,
    deadline: float,
    progress: ProgressCallback | None = None,
    executor: Executor | None = None,
) -> list[DescentResult | None]:
    """``descend`` on every row (one unit per pair) through the run's executor; rows not
    started by ``deadline`` give None."""
    executor = executor or Executor(1)
    state = _Descents(chain, us, vs, settings.descent, deadline)
    inline = len(us) * chain.dim**2 < INLINE_WORK
    results = executor.map(
        _descend_one,
        range(len(us)),
        shared=executor.share(state),
        progress=progress,
        deadline=deadline,
        inline=inline,
    )
    return [None if not_run(r) else r for r in results]


def best_candidates(
    graph: LayerGraph,
    pairs: Pairs,
    finished: list[tuple[int, DescentResult]],
    settings: SearchSettings,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Verify every candidate of every searched pair; keep each pair's smallest verified one.

    Returns (eps, u~, v~) arrays over all pairs (inf where nothing verified) and the
    number of candidates that failed verification.
    """
    eps = np.full(len(pairs), np.inf)
    u_tilde, v_tilde = pairs.u.copy(), pairs.v.copy()
    if not finished:
        return eps, u_tilde, v_tilde, 0
    owner = np.concatenate([np.full(len(r.u_tilde), i) for i, r in finished])
    cand_u = np.concatenate([r.u_tilde for _, r in finished])
    cand_v = np.concatenate([r.v_tilde for _, r in finished])
    sub = Pairs(pairs.x, pairs.a[owner], pairs.b[owner])
    budget = verified_budget(graph, sub, cand_u, cand_v, settings.rtol, settings.bounds)
    order = np.lexsort((budget, owner))
    first = order[np.r_[True, owner[order][1:] != owner[order][:-1]]]
    eps[owner[first]] = budget[first]
    u_tilde[owner[first]], v_tilde[owner[first]] = cand_u[first], cand_v[first]
    return eps, u_tilde, v_tilde, int(np.sum(~np.isfinite(budget)))


# -------------------------------------------------------------- all prefixes


def prefix_collisions(
    graph: LayerGraph,
    prefix: Prefix,
    position: int,
    pairs: Pairs,
    previous: Collisions | None,
    settings: SearchSettings,
    deadline: float,
    progress: ProgressCallback | None = None,
    executor: Executor | None = None,
) -> Collisions:
    """This prefix's own collisions, merged with the re-verified ones of the previous prefix;
    the descents of a ReLU prefix run through ``executor`` (default: in this process)."""
    sub = graph.prefix(prefix.node)
    stats: dict[str, float] = {"pairs": len(pairs)}
    started = time.perf_counter()
    boxed_affine = prefix.kind == AFFINE and settings.bounds is not None
    own, u_t, v_t = np.full(len(pairs), np.inf), pairs.u.copy(), pairs.v.copy()
    if prefix.kind == INPUT:  # the midpoint is inside any box holding u and v
        u_t, v_t = input_collisions(pairs)
    elif prefix.kind == AFFINE and not boxed_affine:
        u_t, v_t = affine_collisions(prefix.blocks[0].weight, pairs)
    if prefix.kind == INPUT or (prefix.kind == AFFINE and not boxed_affine):
        own = verified_budget(sub, pairs, u_t, v_t, settings.rtol, settings.bounds)
        stats["rejected"] = int(np.sum(~np.isfinite(own)))
    carried = np.full(len(pairs), np.inf)
    if previous is not None:
        carried = verified_budget(
            sub, pairs, previous.u_tilde, previous.v_tilde, settings.rtol, settings.bounds
        )
        stats["carried_rejected"] = int(np.sum(np.isfinite(previous.eps) & ~np.isfinite(carried)))
    if prefix.kind == RELU or boxed_affine:  # the cone program (one step for an affine map)
        finished, search = relu_collisions(
            prefix, pairs, carried, settings, deadline, progress, executor
        )
        own, u_t, v_t, rejected = best_candidates(sub, pairs, finished, settings)
        stats.update(search)
        stats["rejected"] = rejected
    # strictly better only (the closed form of an injective map equals the input distance)
    use_own = own < carried - 1e-12 * np.minimum(carried, 1e300)
    found_at = np.where(use_own, position, -1 if previous is None else previous.found_at)
    stats["improved"] = int(np.sum(use_own & np.isfinite(carried)))
    stats["seconds"] = time.perf_counter() - started
    return Collisions(
        eps=np.where(use_own, own, carried),
        u_tilde=np.where(use_own[:, None], u_t, previous.u_tilde if previous else u_t),
        v_tilde=np.where(use_own[:, None], v_t, previous.v_tilde if previous else v_t),
        found_at=found_at,
        stats=stats,
    )
