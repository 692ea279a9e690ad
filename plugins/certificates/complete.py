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
  closes the gap (the radius is exact to that tolerance), and when undecided is
  followed by a bisection that raises the proven radius as far as the budget allows.

Budgets are wall-clock (per search and for the whole analysis): the radii and verdicts
reported are those proven when time ran out.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass
from typing import Any

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
from audit_core.executor import Shared, batches, not_run
from audit_core.labels import predict
from audit_core.model import AuditedModel


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


MIN_RADIUS_BATCH = 4
"""Fewest samples bounded together per unit when samples are few (``executor.batches``)."""
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
    deadlines: Deadlines | None = None,
) -> PropagationResult:
    """CROWN then alpha-CROWN radius per sample, in the run's norm: one unit of the run's
    executor per batch of ``RadiusBudget.batch`` samples, all within the analysis's
    wall-clock budget ``propagation_total``."""
    config = ctx.config
    data = ctx.data
    clock = time.perf_counter()
    stop = np.maximum(np.where(np.isfinite(stop), stop, _diameter(ctx)), start)
    radius_budget = RadiusBudget(
        steps=config.propagation_steps,
        alpha_steps=config.alpha_steps if budget.alpha_iterations else 0,
        alpha_iterations=budget.alpha_iterations,
        seconds=budget.propagation_total,
    )
    deadline = (deadlines or Deadlines(budget)).propagation()
    cut = batches(len(data), radius_budget.batch, MIN_RADIUS_BATCH)
    units = [(r.start, start[r.start : r.stop], stop[r.start : r.stop]) for r in cut]
    found = ctx.executor.map(
        functools.partial(_radius_batch, budget=radius_budget, deadline=deadline),
        units,
        shared=_shared_bounds(ctx, checker, predicted),
        progress=ctx.progress.advance,
        weights=[len(u[1]) for u in units],
    )
    parts = [u[1] if not_run(r) else r for u, r in zip(units, found, strict=True)]
    radius = np.concatenate(parts) if parts else np.zeros(0)
    seconds = (time.perf_counter() - clock) / max(1, len(data))
    return PropagationResult(np.maximum(radius, start), seconds)


@dataclass(frozen=True)
class Deadlines:
    """The analysis's wall-clock budgets (``time.time()``), each started at its first use
    and shared by every round of the analysis and every worker: more workers run more
    batches and searches within the same budget."""

    budget: Budgets
    started: dict[str, float] = dataclasses.field(default_factory=dict)

    def propagation(self) -> float | None:
        return self._deadline("propagation", self.budget.propagation_total)

    def search(self) -> float | None:
        return self._deadline("search", self.budget.search_total)

    def _deadline(self, name: str, seconds: float) -> float | None:
        if not np.isfinite(seconds):
            return None
        self.started.setdefault(name, time.time())
        return self.started[name] + seconds


@dataclass(frozen=True)
class _BoundsData:
    """What every radius batch and search reads (shipped once per worker)."""

    checker: Verifier
    model: AuditedModel
    x: np.ndarray
    """``(N, D)`` flat float64 samples."""
    predicted: np.ndarray
    norm: str
    lower: float
    upper: float


def _shared_bounds(ctx: AuditContext, checker: Verifier, predicted: np.ndarray) -> Shared:
    data = ctx.data
    x = np.ascontiguousarray(data.x, dtype=np.float64).reshape(len(data), -1)
    state = _BoundsData(
        checker, ctx.model, x, predicted, ctx.norm, float(data.lower), float(data.upper)
    )
    return ctx.executor.share(state)


def _radius_batch(
    state: _BoundsData,
    unit: tuple[int, np.ndarray, np.ndarray],
    budget: RadiusBudget,
    deadline: float | None,
) -> np.ndarray:
    """The radii of one batch of samples (a unit of the executor)."""
    first, start, stop = unit
    seconds = budget.seconds if deadline is None else deadline - time.time()
    if seconds <= 0:
        return start
    rows = slice(first, first + len(start))
    return certified_radius(
        state.checker,
        torch.as_tensor(state.x[rows]),
        torch.as_tensor(state.predicted[rows]),
        state.norm,
        state.lower,
        state.upper,
        torch.as_tensor(start, dtype=torch.float64),
        torch.as_tensor(stop, dtype=torch.float64),
        dataclasses.replace(budget, seconds=seconds),
    ).numpy()


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
    deadlines: Deadlines | None = None,
) -> SearchResult:
    """Verdicts at every eps for the samples no radius or attack settles, then exact
    radii where budget is left (see the module docstring). The searches of one eps (and
    the gap-closing searches of each sample) are units of the run's executor."""
    deadline = (deadlines or Deadlines(budget)).search()
    searches = _Searches(ctx, checker, predicted, budget, deadline)
    eps = np.asarray(ctx.eps, dtype=np.float64)
    verdict = np.zeros((len(eps), len(ctx.data)), dtype=np.int8)
    for e in np.argsort(eps):
        ctx.progress.note(f"complete search at eps {eps[e]:g}")
        todo = []
        for sample in range(len(ctx.data)):
            known = min(attack[sample], searches.closest[sample])
            proven = max(radius[sample], searches.found[sample])
            settled = _settled(correct[sample], proven, known, eps[e], verdict[:, sample], eps)
            if settled is None:
                todo.append(sample)
            else:
                verdict[e, sample] = settled
        verdict[e, todo] = searches.decide(todo, float(eps[e]), int(e))
    upper = np.minimum(attack, searches.closest)
    if budget.exact:
        gaps = np.flatnonzero(correct & np.isfinite(upper) & (upper > 0))
        searches.close_gaps(gaps, radius, upper)
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
    closest counterexample per sample), and their counterexamples per (eps, sample).
    The searches run as units of the run's executor (``_search_one``, ``_gap_searches``);
    their outcomes are recorded here, in sample order."""

    def __init__(
        self,
        ctx: AuditContext,
        checker: Verifier,
        predicted: np.ndarray,
        budget: Budgets,
        deadline: float | None,
    ) -> None:
        self.ctx, self.predicted, self.budget = ctx, predicted, budget
        self.shared = _shared_bounds(ctx, checker, predicted)
        self.clock = time.perf_counter()
        self.deadline = deadline
        count = len(ctx.data)
        self.found = np.zeros(count)
        self.closest = np.full(count, np.inf)
        self.points: dict[int, np.ndarray] = {}
        self.counterexamples: dict[tuple[int, int], np.ndarray] = {}
        self.runs = {"searches": 0, "branches": 0, "timed_out": 0}

    def decide(self, samples: list[int], eps: float, index: int) -> list[int]:
        """The verdicts of ``samples`` at ``eps`` (counterexamples kept under
        ``(index, sample)``)."""
        outcomes = self.ctx.executor.map(
            functools.partial(_search_one, budget=self.budget, deadline=self.deadline),
            [(sample, eps) for sample in samples],
            shared=self.shared,
            deadline=self.deadline,
            chunk=1,  # a search is seconds of work that varies 10x: one per task balances
        )
        verdicts = []
        for sample, outcome in zip(samples, outcomes, strict=True):
            outcome = self._record(sample, eps, outcome)
            if outcome is not None and outcome.verdict == NON_ROBUST:
                self.counterexamples[index, sample] = outcome.counterexample
            verdicts.append(UNDECIDED if outcome is None else outcome.verdict)
        return verdicts

    def close_gaps(self, samples: np.ndarray, proven: np.ndarray, upper: np.ndarray) -> None:
        """Per sample, search just below the closest adversarial distance known until a
        search proves it (the radius is then exact to the tolerance), or a closer
        counterexample moves it down and the search repeats there, or the budget runs out."""
        units = [
            (int(s), float(proven[s]), float(upper[s]), float(self.found[s]), self.closest[s])
            for s in samples
        ]
        runs = self.ctx.executor.map(
            functools.partial(
                _gap_searches,
                budget=self.budget,
                deadline=self.deadline,
                tolerance=self.ctx.config.exact_tolerance,
            ),
            units,
            shared=self.shared,
            deadline=self.deadline,
            chunk=1,
        )
        for unit, outcomes in zip(units, runs, strict=True):
            for eps, outcome in [(0.0, None)] if not_run(outcomes) else outcomes:
                self._record(unit[0], eps, outcome)

    def _record(self, sample: int, eps: float, outcome: Any) -> SearchOutcome | None:
        """Count one search (None or ``NOT_RUN``: the analysis's budget was spent) and keep
        what it proved or found."""
        if outcome is None or not_run(outcome):
            self.runs["timed_out"] += 1
            return None
        self.runs["searches"] += 1
        self.runs["branches"] += outcome.branches
        self.runs["timed_out"] += outcome.timed_out
        if outcome.verdict == CERTIFIED:
            self.found[sample] = max(self.found[sample], eps)
        if outcome.verdict == NON_ROBUST:
            distance = _distance(self.shared.value, sample, outcome.counterexample)
            if distance < self.closest[sample]:
                self.closest[sample] = distance
                self.points[sample] = outcome.counterexample
        return outcome

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


def _distance(state: _BoundsData, sample: int, point: np.ndarray) -> float:
    x = state.x[sample].reshape(1, -1)
    return float(numpy_distance(point.reshape(1, -1), x, state.norm)[0])


def _search_one(
    state: _BoundsData, unit: tuple[int, float], budget: Budgets, deadline: float | None
) -> SearchOutcome | None:
    """One search of sample ``unit[0]`` at eps ``unit[1]`` (a unit of the executor); None
    when the analysis's budget is spent."""
    sample, eps = unit
    seconds = budget.search_seconds
    if deadline is not None:
        seconds = min(seconds, deadline - time.time())
    if seconds <= 0:
        return None
    search = BranchAndBound(state.checker, _confirm(state.model))
    return search.search(
        state.x[sample],
        int(state.predicted[sample]),
        eps,
        state.norm,
        state.lower,
        state.upper,
        SearchBudget(
            branches=budget.search_branches,
            seconds=seconds,
            root_iterations=budget.root_iterations,
        ),
    )


GAP_SEARCHES = 6
"""Gap-closing searches per sample: one just below the closest adversarial distance,
then bisection between the largest proven radius and the smallest undecided eps."""


def _gap_searches(
    state: _BoundsData,
    unit: tuple[int, float, float, float, float],
    budget: Budgets,
    deadline: float | None,
    tolerance: float,
) -> list[tuple[float, SearchOutcome | None]]:
    """The gap-closing searches of one sample (a unit of the executor). The first runs at
    ``(1 - tolerance)`` times the closest adversarial distance known: certified, the
    radius is exact to the tolerance. Left undecided, the next ones bisect between the
    largest radius proven and the smallest eps left undecided, so the proven radius grows
    with every search that succeeds (anytime); a counterexample moves the distance down.
    At most ``GAP_SEARCHES`` searches, until the gap is below the tolerance or the budget
    is spent."""
    sample, proven, upper, found, closest = unit
    low, hard = max(proven, found), float("inf")
    outcomes: list[tuple[float, SearchOutcome | None]] = []
    for _ in range(GAP_SEARCHES):
        ceiling = (1 - tolerance) * upper
        if low >= ceiling or min(hard, ceiling) - low <= tolerance * upper:
            break
        eps = ceiling if hard > ceiling else (low + hard) / 2
        outcome = _search_one(state, (sample, eps), budget, deadline)
        outcomes.append((eps, outcome))
        if outcome is None:
            break
        if outcome.verdict == CERTIFIED:
            low = eps
        elif outcome.verdict == NON_ROBUST:
            closest = min(closest, _distance(state, sample, outcome.counterexample))
            upper = min(upper, closest)
        else:
            hard = eps
    return outcomes


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


def _confirm(model: AuditedModel):
    """The search's counterexample check: onnxruntime (float32) misclassifies the point."""
    shape = model.graph.input_shape

    def confirm(points: np.ndarray, label: int) -> np.ndarray:
        logits = model.runtime.logits(points.reshape(len(points), *shape))
        return np.asarray(predict(logits)) != label

    return confirm
