"""Bound propagation and complete search on the audit samples (beyond Singla & Feizi
2019: their Section 6 names tighter bounds from neighbouring regions as future work).

* **bound-propagation radius**: per sample the largest eps (bisection, started at the
  simplex / decision-boundary radius and stopped at the attack distance) at which CROWN,
  then alpha-CROWN, proves every margin above the logit slack
  (``audit_core.bounds.radius``), in the run's norm;
* **complete search** at each ``--eps``: branch and bound with beta-CROWN bounds
  (``audit_core.bounds.search``) for every correctly classified sample that neither a
  radius nor the attack settles: certified, proven non-robust (a point of the ball that
  onnxruntime misclassifies) or undecided when its budget runs out; then, budget left,
  a search at ``(1 - exact_tolerance)`` times the attack distance, which when certified
  closes the gap: the radius is exact to that tolerance.

Budgets are wall-clock (per search and for the whole analysis): the radii and verdicts
reported are those proven when time ran out.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch

from audit_core.analysis import AuditContext
from audit_core.attacks import numpy_distance
from audit_core.bounds.propagation import BoundPropagation
from audit_core.bounds.radius import RadiusBudget, certified_radius
from audit_core.bounds.search import (
    CERTIFIED,
    NON_ROBUST,
    UNDECIDED,
    BranchAndBound,
    SearchBudget,
    SearchOutcome,
)
from audit_core.bounds.verify import Verifier
from audit_core.errors import NotApplicable
from audit_core.labels import predict


@dataclass(frozen=True)
class Budgets:
    """What one ``certificates.effort`` level spends (seconds are wall clock)."""

    search_branches: int
    search_seconds: float
    search_total: float
    propagation_total: float
    alpha_iterations: int
    exact: bool
    root_iterations: int


EFFORT = {
    "quick": Budgets(400, 30.0, 60.0, 60.0, 0, False, 0),
    "thorough": Budgets(1_000_000, 60.0, float("inf"), float("inf"), 20, True, 20),
}
"""``quick`` keeps an audit of a zoo model within seconds: CROWN radii, searches of 400
subdomains (CROWN at the root) for the verdicts only. ``thorough`` (a release review):
optimised slopes, searches of up to a minute, and searches that close the gap to the
attack distance (exact radii). The subdomain count is the deterministic limit; the
seconds are caps (results that hit a cap depend on the machine's speed, and the report
says so)."""


def budgets(config) -> Budgets:
    """The effort preset with the explicitly set keys (non-zero; -1 / "auto": unset) over it."""
    preset = EFFORT[config.effort]
    exact = {"auto": preset.exact, "on": True, "off": False}[config.exact_search]
    return dataclasses.replace(
        preset,
        exact=exact,
        root_iterations=(
            preset.root_iterations if config.root_iterations < 0 else config.root_iterations
        ),
        search_branches=config.search_branches or preset.search_branches,
        search_seconds=config.search_seconds or preset.search_seconds,
        search_total=config.search_total_seconds or preset.search_total,
        propagation_total=config.propagation_seconds or preset.propagation_total,
        alpha_iterations=(
            preset.alpha_iterations if config.alpha_iterations < 0 else config.alpha_iterations
        ),
    )


@dataclass(frozen=True)
class PropagationResult:
    """Bound-propagation radii ``(N,)`` in the run's norm (``start`` where nothing more
    was proven); ``reason`` says why it did not run ("" when it did)."""

    radius: np.ndarray
    seconds_per_sample: float
    reason: str = ""


@dataclass(frozen=True)
class SearchResult:
    """``verdict`` ``(E, N)``: 1 certified, -1 proven non-robust, 0 undecided per eps;
    ``radius`` ``(N,)`` the largest radius the searches proved (0 where none);
    ``exact`` ``(N,)`` where it is within the tolerance of the attack distance;
    ``counterexamples``: per (eps index, sample) the confirmed point."""

    verdict: np.ndarray
    radius: np.ndarray
    exact: np.ndarray
    counterexamples: dict[tuple[int, int], np.ndarray]
    searches: int
    branches: int
    seconds: float
    reason: str = ""
    closest: np.ndarray | None = None
    """Per sample the distance of the closest counterexample any search found (inf: none)."""
    closest_points: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)
    timed_out: int = 0
    """Searches (or samples left unsearched) that a wall-clock cap, not the subdomain
    budget, left undecided: these verdicts depend on the machine's speed."""

    @property
    def seconds_per_search(self) -> float:
        return self.seconds / max(1, self.searches)


def verifier(ctx: AuditContext, tolerance: float) -> Verifier | str:
    """The model's bound propagation, or why it cannot run."""
    try:
        return Verifier(BoundPropagation(ctx.model.graph), tolerance)
    except NotApplicable as reason:
        return str(reason)


def propagation_radius(
    ctx: AuditContext,
    checker: Verifier,
    predicted: np.ndarray,
    start: np.ndarray,
    stop: np.ndarray,
    budget: Budgets,
) -> PropagationResult:
    """CROWN then alpha-CROWN radius per sample, in the run's norm."""
    config = ctx.config
    data = ctx.data
    clock = time.perf_counter()
    stop = np.where(np.isfinite(stop), stop, _diameter(ctx))
    radius = certified_radius(
        checker,
        torch.as_tensor(data.x, dtype=torch.float64),
        torch.as_tensor(predicted),
        ctx.norm,
        float(data.lower),
        float(data.upper),
        torch.as_tensor(start, dtype=torch.float64),
        torch.as_tensor(np.maximum(stop, start), dtype=torch.float64),
        RadiusBudget(
            steps=config.propagation_steps,
            alpha_steps=config.alpha_steps if budget.alpha_iterations else 0,
            alpha_iterations=budget.alpha_iterations,
            seconds=budget.propagation_total,
        ),
    ).numpy()
    seconds = (time.perf_counter() - clock) / max(1, len(data))
    return PropagationResult(np.maximum(radius, start), seconds)


def _diameter(ctx: AuditContext) -> float:
    """The largest distance inside the input bounds (the cap of a radius)."""
    span = float(ctx.data.upper - ctx.data.lower)
    return span * (np.sqrt(ctx.model.graph.input_size) if ctx.norm == "l2" else 1.0)


def complete_search(
    ctx: AuditContext,
    checker: Verifier,
    predicted: np.ndarray,
    correct: np.ndarray,
    radius: np.ndarray,
    attack: np.ndarray,
    budget: Budgets,
) -> SearchResult:
    """Verdicts at every eps for the samples no radius or attack settles, then exact
    radii where budget is left (see the module docstring)."""
    searches = _Searches(ctx, checker, predicted, budget)
    eps = np.asarray(ctx.eps, dtype=np.float64)
    verdict = np.zeros((len(eps), len(ctx.data)), dtype=np.int8)
    for e in np.argsort(eps):
        ctx.progress.note(f"complete search at eps {eps[e]:g}")
        for sample in range(len(ctx.data)):
            known = min(attack[sample], searches.closest[sample])
            proven = max(radius[sample], searches.found[sample])
            settled = _settled(correct[sample], proven, known, eps[e], verdict[:, sample], eps)
            verdict[e, sample] = (
                settled if settled is not None else searches.decide(sample, float(eps[e]), int(e))
            )
    upper = np.minimum(attack, searches.closest)
    if budget.exact:
        for sample in np.flatnonzero(correct & np.isfinite(upper) & (upper > 0)):
            searches.close_gap(sample, radius[sample], upper[sample])
    upper = np.minimum(attack, searches.closest)
    best = np.maximum(radius, searches.found)
    for e, at in enumerate(eps):  # what the gap-closing searches proved or found
        open_ = verdict[e] == UNDECIDED
        verdict[e, open_ & correct & (best >= at)] = CERTIFIED
        verdict[e, open_ & (upper <= at)] = NON_ROBUST
    exact = _exact(correct, best, upper, ctx.config.exact_tolerance)
    return searches.result(verdict, exact)


class _Searches:
    """The searches of one analysis: their budget, what they proved (``found``: the
    largest certified radius per sample) and found (``closest``: the distance of the
    closest counterexample per sample), and their counterexamples per (eps, sample)."""

    def __init__(
        self, ctx: AuditContext, checker: Verifier, predicted: np.ndarray, budget: Budgets
    ) -> None:
        self.ctx, self.predicted, self.budget = ctx, predicted, budget
        self.search = BranchAndBound(checker, _confirm(ctx))
        self.clock = time.perf_counter()
        self.deadline = self.clock + budget.search_total
        count = len(ctx.data)
        self.found = np.zeros(count)
        self.closest = np.full(count, np.inf)
        self.points: dict[int, np.ndarray] = {}
        self.counterexamples: dict[tuple[int, int], np.ndarray] = {}
        self.runs = {"searches": 0, "branches": 0, "timed_out": 0}

    def run(self, sample: int, eps: float) -> SearchOutcome | None:
        """One search at ``eps``; None when the analysis's budget is spent."""
        seconds = min(self.budget.search_seconds, self.deadline - time.perf_counter())
        if seconds <= 0:
            self.runs["timed_out"] += 1
            return None
        data = self.ctx.data
        outcome = self.search.search(
            data.x[sample].reshape(-1),
            int(self.predicted[sample]),
            eps,
            self.ctx.norm,
            float(data.lower),
            float(data.upper),
            SearchBudget(
                branches=self.budget.search_branches,
                seconds=seconds,
                root_iterations=self.budget.root_iterations,
            ),
        )
        self.runs["searches"] += 1
        self.runs["branches"] += outcome.branches
        self.runs["timed_out"] += outcome.timed_out
        if outcome.verdict == CERTIFIED:
            self.found[sample] = max(self.found[sample], eps)
        if outcome.verdict == NON_ROBUST:
            self._record(sample, outcome.counterexample)
        return outcome

    def _record(self, sample: int, point: np.ndarray) -> None:
        x = self.ctx.data.x[sample].reshape(1, -1)
        distance = float(numpy_distance(point.reshape(1, -1), x, self.ctx.norm)[0])
        if distance < self.closest[sample]:
            self.closest[sample] = distance
            self.points[sample] = point

    def decide(self, sample: int, eps: float, index: int) -> int:
        """The verdict at ``eps`` (its counterexample kept under ``(index, sample)``)."""
        outcome = self.run(sample, eps)
        if outcome is None:
            return UNDECIDED
        if outcome.verdict == NON_ROBUST:
            self.counterexamples[index, sample] = outcome.counterexample
        return outcome.verdict

    def close_gap(self, sample: int, proven: float, upper: float) -> None:
        """Search just below the closest adversarial distance known until a search proves
        it (the radius is then exact to the tolerance), or a closer counterexample moves
        it down and the search repeats there, or the budget runs out."""
        tolerance = self.ctx.config.exact_tolerance
        while max(proven, self.found[sample]) < (1 - tolerance) * upper:
            outcome = self.run(sample, (1 - tolerance) * upper)
            if outcome is None or outcome.verdict == UNDECIDED:
                return
            if outcome.verdict == NON_ROBUST:
                upper = min(upper, self.closest[sample])

    def result(self, verdict: np.ndarray, exact: np.ndarray) -> SearchResult:
        return SearchResult(
            verdict,
            self.found,
            exact,
            self.counterexamples,
            self.runs["searches"],
            self.runs["branches"],
            time.perf_counter() - self.clock,
            timed_out=self.runs["timed_out"],
            closest=self.closest,
            closest_points=self.points,
        )


def _settled(
    correct: bool,
    radius: float,
    attack: float,
    eps: float,
    earlier: np.ndarray,
    all_eps: np.ndarray,
) -> int | None:
    """The verdict at ``eps`` without a search, or None: misclassified or an attack
    within eps is non-robust, a radius reaching eps certified; so is a non-robust verdict
    at a smaller eps (its counterexample lies in this ball too)."""
    if not correct or attack <= eps:
        return NON_ROBUST
    if radius >= eps:
        return CERTIFIED
    smaller = (all_eps < eps) & (earlier == NON_ROBUST)
    return NON_ROBUST if smaller.any() else None


def _exact(
    correct: np.ndarray, radius: np.ndarray, attack: np.ndarray, tolerance: float
) -> np.ndarray:
    """Radius within ``tolerance`` (relative) of a verified attack distance."""
    finite = np.isfinite(attack)
    return correct & finite & (radius >= (1 - tolerance) * np.where(finite, attack, 0.0))


def _confirm(ctx: AuditContext):
    """The search's counterexample check: onnxruntime (float32) misclassifies the point."""
    shape = ctx.model.graph.input_shape

    def confirm(points: np.ndarray, label: int) -> np.ndarray:
        logits = ctx.model.runtime.logits(points.reshape(len(points), *shape))
        return np.asarray(predict(logits)) != label

    return confirm
