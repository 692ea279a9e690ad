"""The certificates analysis's numbers on the audit samples (Singla & Feizi 2019).

Both certified radii (``radii``: Theorem 3 for any piecewise-linear graph, Theorem 4
for one-hidden-layer nets) with the logit slack for the deployed runtime, spot-checked
by onnxruntime inside every certified ball (the slack is raised and the radii recomputed
when the runtime deviates more), beside the run's minimal-norm search (Section 5): the
l2 search, and under ``--norm linf`` the linf search too, both exactly the ones
``attack-bound`` reports.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch

from audit_core.analysis import AuditContext
from audit_core.attacks import MinimalAdversarial, numpy_distance
from audit_core.fidelity import sample_errors
from audit_core.labels import predict
from audit_core.linearize import LocalLinearization, linearize
from audit_plugins.certificates.complete import (
    Deadlines,
    PropagationResult,
    SearchResult,
    budgets,
    complete_search,
    propagation_radius,
    verifier,
)
from audit_plugins.certificates.radii import (
    SimplexCertificate,
    decision_boundary_certificate,
    linf_radius,
    simplex_from_linearization,
    verdicts,
)


@dataclass(frozen=True)
class RuntimeCheck:
    """onnxruntime vs the float64 graph at points of the certified balls.

    ``deviation``: largest scaled logit deviation seen (per sample, as the slack);
    ``tolerance``: the tolerance the final radii use; ``raised``: True when the
    deviation forced it above the configured one; ``flipped``: samples where the
    deployed model changed class inside their ball (their radius is set to 0).
    """

    points: int
    deviation: float
    tolerance: float
    raised: bool
    flipped: np.ndarray


@dataclass(frozen=True)
class CertificateResults:
    """Everything the findings are built from (float64 per-sample arrays).

    ``certified``: the larger of the two theorems' l2 radii; ``best``: the best certified
    radius of every method that ran, in the run's norm (``norm``); ``verdict`` ``(E, N)``:
    1 certified robust, -1 proven non-robust, 0 undecided at each eps."""

    simplex: SimplexCertificate
    decision_boundary: np.ndarray | None
    db_reason: str
    certified: np.ndarray
    attack: MinimalAdversarial
    attack_linf: np.ndarray
    correct: np.ndarray
    tolerance: float
    seconds_per_sample: float
    dimension: int
    runtime: RuntimeCheck
    norm: str = "l2"
    propagation: PropagationResult | None = None
    search: SearchResult | None = None
    best: np.ndarray | None = None
    verdict: np.ndarray | None = None
    propagation_reason: str = ""
    attack_points: tuple[MinimalAdversarial, ...] = ()
    """The run's searches whose points back the attack distances (l2; linf under --norm
    linf)."""

    def witnesses(self, data, eps: tuple[float, ...]) -> np.ndarray:
        """``(E, N, *input)``: for every proven non-robust verdict a point within eps that
        the deployed model misclassifies (the sample itself when it is misclassified, a
        search counterexample, or an attack point); NaN elsewhere."""
        out = np.full((len(eps), *data.x.shape), np.nan)
        for e, at in enumerate(eps):
            for n in np.flatnonzero(self.verdict[e] == -1):
                out[e, n] = self._witness(data, e, int(n), at)
        return out

    def _witness(self, data, e: int, n: int, eps: float) -> np.ndarray:
        if not self.correct[n]:
            return data.x[n]
        if self.search is not None and (e, n) in self.search.counterexamples:
            return self.search.counterexamples[e, n].reshape(data.x.shape[1:])
        search = self.search
        if search is not None and n in search.closest_points and search.closest[n] <= eps:
            return search.closest_points[n].reshape(data.x.shape[1:])
        for found in self.attack_points:
            if (
                found.found[n]
                and numpy_distance(found.x_adv[n : n + 1], data.x[n : n + 1], self.norm)[0] <= eps
            ):
                return found.x_adv[n]
        return np.full(data.x.shape[1:], np.nan)

    @property
    def certified_linf(self) -> np.ndarray:
        return linf_radius(self.certified, self.dimension)

    @property
    def theorem_radius(self) -> np.ndarray:
        """The theorems' radius in the run's norm (a certified l2 ball holds the linf box
        of radius ``r / sqrt(d)``)."""
        return self.certified_linf if self.norm == "linf" else self.certified

    @property
    def attack_distance(self) -> np.ndarray:
        """The verified attack distance in the run's norm."""
        return self.attack_linf if self.norm == "linf" else self.attack.distance

    @property
    def adversarial_distance(self) -> np.ndarray:
        """The closest verified adversarial example per sample (run's norm): the attack's,
        or a counterexample of the complete search when it is closer."""
        if self.search is None or self.search.closest is None:
            return self.attack_distance
        return np.minimum(self.attack_distance, self.search.closest)

    def ratio_of(self, radius: np.ndarray) -> np.ndarray:
        """radius / closest adversarial distance (run's norm), correctly classified samples
        with an adversarial example; NaN elsewhere."""
        attack = self.adversarial_distance
        usable = self.correct & np.isfinite(attack) & (attack > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(usable, radius / attack, np.nan)

    @property
    def ratio(self) -> np.ndarray:
        """best certified radius / attack distance, in the run's norm."""
        return self.ratio_of(self.best if self.best is not None else self.theorem_radius)


def logit_tolerance(ctx: AuditContext) -> float:
    """The logit tolerance the slack starts from: the configured one, the fidelity
    tolerance or the observed fidelity error, whichever is largest."""
    fidelity = ctx.model.fidelity
    return max(ctx.config.logit_tolerance, fidelity.tolerance, fidelity.graph_error)


def compute(ctx: AuditContext) -> CertificateResults:
    """Certified radii of every method (runtime-checked), the run's attack distances, and
    the verdicts at every eps."""
    data = ctx.data
    searches = 2 if ctx.norm == "linf" else 1
    ctx.progress.total(3 * len(data) + searches * ctx.attacks.work_units())
    ctx.progress.note("simplex certificate")
    clock = time.perf_counter()
    lin = linearize(ctx.model.graph, data.x)  # the slack changes between rounds, not this
    simplex, db, reason, certified, runtime = _certify_checked(ctx, lin, logit_tolerance(ctx))
    seconds = (time.perf_counter() - clock) / max(1, len(data))
    ctx.progress.advance(len(data))
    ctx.progress.note("l2 minimal-norm attack")
    attack = ctx.attacks.minimal("l2", ctx.progress_callback())  # the run's one l2 search
    attack_linf = np.where(attack.found, numpy_distance(attack.x_adv, data.x, "linf"), np.inf)
    points = [attack]
    if ctx.norm == "linf":  # judged in linf: the run's linf search (attack-bound's) too
        ctx.progress.note("linf minimal-norm attack")
        linf = ctx.attacks.minimal("linf", ctx.progress_callback())
        attack_linf = np.minimum(attack_linf, linf.distance)
        points.append(linf)
    base = CertificateResults(
        simplex=simplex,
        decision_boundary=db,
        db_reason=reason,
        certified=certified,
        attack=attack,
        attack_linf=attack_linf,
        correct=simplex.predicted == data.y,
        tolerance=runtime.tolerance,
        seconds_per_sample=seconds,
        dimension=ctx.model.graph.input_size,
        runtime=runtime,
        norm=ctx.norm,
        attack_points=tuple(points),
    )
    return _beyond_theorems(ctx, lin, base)


def _beyond_theorems(
    ctx: AuditContext, lin: LocalLinearization, base: CertificateResults
) -> CertificateResults:
    """Bound propagation and the complete search on top of the theorems, with a runtime
    spot check at the final radii (one more round with a raised tolerance if it fails)."""
    deadlines = Deadlines(budgets(ctx.config))  # one budget for both rounds
    results = _with_bounds(ctx, base, base.tolerance, deadlines)
    seen, flips = _runtime_deviation(
        ctx, results.best, base.simplex.predicted, ctx.config.runtime_points, ctx.norm
    )
    if seen > results.tolerance and ctx.config.runtime_points > 0:
        tolerance = 2.0 * seen
        simplex, db, reason, certified = _certify(ctx, lin, tolerance)
        base = dataclasses.replace(
            base,
            simplex=simplex,
            decision_boundary=db,
            db_reason=reason,
            certified=np.where(base.runtime.flipped, 0.0, certified),
            tolerance=tolerance,
        )
        results = _with_bounds(ctx, base, tolerance, deadlines)
    runtime = base.runtime
    check = RuntimeCheck(
        runtime.points,
        max(runtime.deviation, seen),
        results.tolerance,
        results.tolerance > logit_tolerance(ctx),
        runtime.flipped | flips,
    )
    best = np.where(check.flipped, 0.0, results.best)
    verdict = np.where(check.flipped[None, :] & (results.verdict == 1), 0, results.verdict)
    return dataclasses.replace(results, runtime=check, best=best, verdict=verdict)


def _with_bounds(
    ctx: AuditContext, base: CertificateResults, tolerance: float, deadlines: Deadlines
) -> CertificateResults:
    """``base`` with the bound-propagation radius, the search and the verdicts."""
    config = ctx.config
    theorem = base.theorem_radius
    predicted = base.simplex.predicted
    attack = base.attack_distance
    propagation = search = None
    reason = ""
    checker = verifier(ctx, tolerance) if config.bound_propagation else "disabled"
    if isinstance(checker, str):
        reason = checker
    else:
        budget = budgets(config)
        ctx.progress.note("bound propagation radius")
        propagation = propagation_radius(
            ctx, checker, predicted, theorem, attack, budget, deadlines
        )
        if config.search:
            ctx.progress.note("complete search")
            search = complete_search(
                ctx, checker, predicted, base.correct, propagation.radius, attack, budget, deadlines
            )
        ctx.progress.advance(len(ctx.data))
    best = theorem
    for extra in (propagation, search):
        if extra is not None:
            best = np.maximum(best, extra.radius)
    verdict = search.verdict if search is not None else _verdicts(ctx, base, best)
    return dataclasses.replace(
        base,
        propagation=propagation,
        search=search,
        best=best,
        verdict=verdict,
        propagation_reason=reason,
        tolerance=tolerance,
    )


def _verdicts(ctx: AuditContext, base: CertificateResults, best: np.ndarray) -> np.ndarray:
    """``(E, N)`` verdicts from radii and attack distances alone."""
    rows = []
    for eps in ctx.eps:
        v = verdicts(base.correct, best, base.attack_distance, eps)
        rows.append(np.where(v.certified, 1, np.where(v.non_robust, -1, 0)))
    return np.asarray(rows, dtype=np.int8)


def _certify(ctx: AuditContext, lin: LocalLinearization, tolerance: float):
    simplex = simplex_from_linearization(lin, tolerance=tolerance)
    db, reason = _decision_boundary(ctx, simplex.predicted, tolerance)
    certified = simplex.radius if db is None else np.maximum(simplex.radius, db)
    return simplex, db, reason, certified


def _certify_checked(ctx: AuditContext, lin: LocalLinearization, tolerance: float, rounds: int = 3):
    """Theorem radii whose logit slack covers the runtime deviation seen inside their
    balls.

    The slack assumes onnxruntime stays within ``tolerance * max(1, |logit|)`` of the
    float64 graph everywhere in each ball; cancellation in float32 can break that far
    from the checked samples. Each round samples every ball, and when the deviation
    exceeds the tolerance, recomputes with twice the deviation (a spot check, not a
    proof: see the assumption in the findings).
    """
    initial, deviation = tolerance, 0.0
    points = ctx.config.runtime_points
    flipped = np.zeros(len(ctx.data), dtype=bool)
    for _ in range(rounds):
        simplex, db, reason, certified = _certify(ctx, lin, tolerance)
        if points <= 0:
            break
        seen, flips = _runtime_deviation(ctx, certified, simplex.predicted, points, "l2")
        deviation, flipped = max(deviation, seen), flipped | flips
        if seen <= tolerance:
            break
        tolerance = 2.0 * seen
    runtime = RuntimeCheck(points, deviation, tolerance, tolerance > initial, flipped)
    return simplex, db, reason, np.where(flipped, 0.0, certified), runtime


def _runtime_deviation(
    ctx: AuditContext, radius: np.ndarray, predicted: np.ndarray, points: int, norm: str
) -> tuple[float, np.ndarray]:
    """Largest scaled logit deviation over ``points`` points of each positive-radius ball
    (``norm``), and the samples whose deployed prediction changes at one of them."""
    flipped = np.zeros(len(radius), dtype=bool)
    worst = 0.0
    if points <= 0:
        return worst, flipped
    positive = np.flatnonzero(radius > 0)
    chunk = max(1, 4_000_000 // (points * ctx.model.graph.input_size))
    for start in range(0, positive.size, chunk):
        rows = positive[start : start + chunk]
        seen, moved = _ball_points(ctx, rows, radius, predicted, points, norm)
        worst, flipped[rows] = max(worst, seen), moved
    return worst, flipped


def _ball_points(
    ctx: AuditContext,
    rows: np.ndarray,
    radius: np.ndarray,
    predicted: np.ndarray,
    points: int,
    norm: str,
) -> tuple[float, np.ndarray]:
    """onnxruntime against the float64 graph at points of each ball: half on its surface
    (l2 sphere, linf box corners), half inside, clipped into the input bounds."""
    x = ctx.data.x[rows].reshape(rows.size, -1)
    shape = (rows.size, points, x.shape[1])
    if norm == "linf":
        direction = ctx.rng.choice([-1.0, 1.0], size=shape)
    else:
        direction = ctx.rng.standard_normal(shape)
        direction /= np.linalg.norm(direction, axis=2, keepdims=True)
    scale = np.ones((rows.size, points, 1))
    scale[:, points // 2 :, 0] = ctx.rng.uniform(0.0, 1.0, (rows.size, points - points // 2))
    inside = x[:, None, :] + direction * scale * radius[rows, None, None]
    inside = np.clip(inside, ctx.data.lower, ctx.data.upper)
    inside = inside.reshape(-1, *ctx.model.graph.input_shape)
    deployed = ctx.model.runtime.logits(inside)
    with torch.no_grad():
        ours = ctx.model.graph.forward(inside).reshape(len(inside), -1).numpy()
    errors = sample_errors(ours, deployed)
    moved = predict(deployed).reshape(rows.size, points) != predicted[rows, None]
    return float(errors.max(initial=0.0)), moved.any(axis=1)


def _decision_boundary(
    ctx: AuditContext, predicted: np.ndarray, tolerance: float
) -> tuple[np.ndarray | None, str]:
    view = ctx.model.dense_view
    if view is None:
        return None, "Theorem 4 needs a plain affine -> ReLU -> affine chain; the model is not one"
    if view.depth != 2:
        return None, (
            f"Theorem 4 needs exactly one hidden ReLU layer (depth 2); the model has depth "
            f"{view.depth} (its numerator would be a polynomial in theta)"
        )
    radius = decision_boundary_certificate(view, ctx.data.x, predicted, tolerance=tolerance)
    return radius, ""


def export(ctx: AuditContext, name: str, r: CertificateResults) -> None:
    """``--export``: every per-sample radius, distance and ratio, and the verdicts.

    Radii of the theorems are l2 (``certified_radius`` their maximum); ``bp_radius``,
    ``search_radius`` and ``best_radius`` are in the run's norm (NaN when the method did not
    run); ``verdict`` ``(eps, samples)``: 1 certified, -1 proven non-robust, 0 undecided;
    ``witness`` ``(eps, samples, *input)``: the misclassified point behind each -1 (NaN
    elsewhere)."""
    n = len(ctx.data)
    missing = np.full(n, np.nan)
    db = r.decision_boundary if r.decision_boundary is not None else missing
    ctx.export(
        name,
        index=ctx.data.indices,
        label=ctx.data.y,
        predicted=r.simplex.predicted,
        simplex_radius=r.simplex.radius,
        simplex_linf_radius=linf_radius(r.simplex.radius, r.dimension),
        face_distance=r.simplex.face_distance,
        decision_distance=r.simplex.decision_distance,
        decision_boundary_radius=db,
        certified_radius=r.certified,
        bp_radius=r.propagation.radius if r.propagation is not None else missing,
        search_radius=r.search.radius if r.search is not None else missing,
        search_exact=r.search.exact if r.search is not None else np.zeros(n, dtype=bool),
        best_radius=r.best,
        eps=np.asarray(ctx.eps, dtype=np.float64),
        verdict=r.verdict,
        witness=r.witnesses(ctx.data, ctx.eps),
        attack_distance=r.attack.distance,
        attack_linf_distance=r.attack_linf,
        ratio=r.ratio,
    )
