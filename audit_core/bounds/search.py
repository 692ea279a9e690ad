"""Complete search: branch and bound over unstable neurons with beta-CROWN bounds.

At one input set (an l2 ball or linf box around a sample, within the input bounds) the
search decides whether every margin ``logit_label - logit_j`` stays above the logit
slack (certified) or finds a point of the set that the deployed runtime misclassifies
(non-robust), or runs out of budget (undecided).

Each margin is searched on its own (the specs the root bound does not settle, hardest
first). A subdomain fixes the side of some unstable neurons (``z >= kink`` or
``z <= kink``) of single-kink activations (ReLU, LeakyReLU, PReLU); its bound comes from
one backward pass (CROWN) in which a split neuron's relaxation is exact, with the lower
slopes (alpha) and the Lagrange multipliers of the split constraints (beta, Wang et al.
2021, "Beta-CROWN: Efficient Bound Propagation with Per-neuron Split Constraints")
optimised by projected gradient ascent; every iterate is a valid bound, the best is
kept. Intermediate bounds are the root's (valid on every subdomain) with the splits
applied. The subdomains with the lowest bounds are split first, on the neuron whose
upper relaxation costs the bound most (the intercept score of BaBSR, Bunel et al.
2020). In every subdomain the point where the linear lower bound is smallest is
evaluated: a cheap attack; a point the float64 graph misclassifies is confirmed in the
deployed runtime before the search reports it.

Complete for networks whose piecewise-linear layers all have one kink: once every
unstable neuron of a subdomain is split, its bound is the linear program over that
region. Max pooling and two-kink activations are relaxed, never split: on such
networks the search is sound but may stay undecided.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from audit_core.bounds.ascent import Ascent
from audit_core.bounds.domains import Bounded, Pool, Problem, into_set
from audit_core.bounds.input_set import InputSet
from audit_core.bounds.propagation import Relaxations, Splits, concretise
from audit_core.bounds.verify import Verifier, default_alpha, inflated, margin_specs
from audit_core.layers import Bounds, ElementwisePiecewiseLinear

Tensor = torch.Tensor
CERTIFIED, NON_ROBUST, UNDECIDED = 1, -1, 0

Confirm = Callable[[np.ndarray, int], np.ndarray]
"""``(points (N, D) flat, label) -> (N,) bool``: True where the deployed runtime
misclassifies the point (the search's counterexamples must pass it)."""


@dataclass(frozen=True)
class SearchBudget:
    """Limits of one search. ``branches``: subdomains bounded (the deterministic limit:
    the same search on the same machine always gives the same answer); ``seconds``: wall
    clock cap; ``memory``: bytes the live subdomains may hold; ``batch``: subdomains split
    per step; ``iterations``: alpha/beta steps per bound (``root_iterations`` at the
    root); ``candidates``: neurons tried per split (filtered smart branching; 1: the best
    intercept score)."""

    branches: int = 100_000
    seconds: float = 1.0
    memory: int = 2 * 2**30
    batch: int = 64
    iterations: int = 8
    candidates: int = 1
    root_iterations: int = 20
    alpha_rate: float = 0.1
    beta_rate: float = 0.05


@dataclass(frozen=True)
class SearchOutcome:
    """``verdict``: 1 certified, -1 proven non-robust, 0 undecided. ``margin``: the lowest
    lower bound of a margin minus the slack over the subdomains left (> 0 when
    certified). ``counterexample``: the confirmed point (flat) when non-robust."""

    verdict: int
    margin: float
    branches: int
    seconds: float
    counterexample: np.ndarray | None = None
    timed_out: bool = False
    """True when the wall-clock cap, not the branch budget, ended an undecided search."""


@dataclass(frozen=True)
class _Branchable:
    """A pre-activation node whose neurons may be split: its single-kink consumer."""

    node: int
    consumer: int
    kink: float


class BranchAndBound:
    """The search on one graph (through its ``Verifier``)."""

    def __init__(self, verifier: Verifier, confirm: Confirm | None = None) -> None:
        self.verifier = verifier
        self.bp = verifier.bp
        self.confirm = confirm
        self.branchable = self._branchable()

    def _branchable(self) -> list[_Branchable]:
        result = []
        for node in self.bp.pre_activations:
            consumers = self.bp.consumers[node]
            layer = self.bp.nodes[consumers[0]].layer
            single = isinstance(layer, ElementwisePiecewiseLinear) and len(layer.kinks()) == 1
            if len(consumers) == 1 and single:
                result.append(_Branchable(node, consumers[0], layer.kinks()[0]))
        return result

    def search(
        self,
        center: np.ndarray,
        label: int,
        eps: float,
        norm: str,
        lower: float,
        upper: float,
        budget: SearchBudget,
    ) -> SearchOutcome:
        """Decide the sample ``center`` (its label ``label``) at radius ``eps``."""
        clock = time.perf_counter()
        deadline = clock + budget.seconds
        x0 = torch.as_tensor(np.asarray(center, dtype=np.float64)).reshape(1, -1)
        size = x0.norm() if norm == "l2" else x0.abs().max()
        radius = float(inflated(torch.tensor(eps, dtype=torch.float64), size))
        inputs = InputSet.around(x0, radius, norm, lower, upper)
        exact = InputSet.around(x0, eps, norm, lower, upper)
        run = _Run(self, inputs, exact, label, budget, deadline)
        verdict, margin, point = run.decide()
        seconds = time.perf_counter() - clock
        timed_out = verdict == UNDECIDED and run.timed_out
        return SearchOutcome(verdict, margin, run.branches, seconds, point, timed_out)


class _Run:
    """One search: the root bounds, then one branch-and-bound per unsettled margin."""

    def __init__(
        self,
        owner: BranchAndBound,
        inputs: InputSet,
        exact: InputSet,
        label: int,
        budget: SearchBudget,
        deadline: float,
    ) -> None:
        self.owner, self.bp, self.verifier = owner, owner.bp, owner.verifier
        self.inputs, self.exact, self.label = inputs, exact, label
        self.budget, self.deadline = budget, deadline
        self.branches = 0
        self.regions = 0
        self.timed_out = False

    def decide(self) -> tuple[int, float, np.ndarray | None]:
        labels = torch.tensor([self.label])
        self.bounds, root = self.verifier.optimized_bounds(
            self.inputs,
            labels,
            self.budget.root_iterations,
            self.budget.alpha_rate,
            deadline=self.deadline,
        )
        self.slack = float(root.slack[0])
        specs = margin_specs(self.verifier.num_outputs, labels)[0]
        lower = root.lower[0]
        margins = []
        for j in torch.argsort(lower).tolist():
            if float(lower[j]) > self.slack:
                margins.append(float(lower[j]) - self.slack)
                continue
            if time.perf_counter() > self.deadline:
                self.timed_out = True
                return UNDECIDED, float(lower[j]) - self.slack, None
            spec = specs[j].reshape(1, 1, *self.bp.shapes[-1])
            verdict, margin, point = self._spec(spec)
            if verdict != CERTIFIED:
                return verdict, margin, point
            margins.append(margin)
        return CERTIFIED, min(margins), None

    # ------------------------------------------------------------ one margin
    def _spec(self, spec: Tensor) -> tuple[int, float, np.ndarray | None]:
        pool = Pool()
        root = self._empty_domain()
        result = self._bound(spec, root, self.budget.root_iterations)
        if result.counterexample is not None:
            return NON_ROBUST, float(result.lower.min()) - self.slack, result.counterexample
        pool.add(result.keep(~(result.lower > self.slack)))
        stuck_margin = float("inf")
        while len(pool):
            spent = self.branches >= self.budget.branches or pool.nbytes() > self.budget.memory
            self.timed_out = not spent and time.perf_counter() > self.deadline
            if spent or self.timed_out:
                low = min(float(pool.lower.min()), stuck_margin + self.slack)
                return UNDECIDED, low - self.slack, None
            parents = pool.take(pool.lowest(self.budget.batch))
            children, stuck = self._split(spec, parents)
            if stuck is not None:
                verdict, margin, point = self._regions(spec, stuck)
                self.regions += len(stuck["lower"])
                if verdict == NON_ROBUST:
                    return NON_ROBUST, margin, point
                stuck_margin = min(stuck_margin, margin)
            if children is None:
                continue
            result = self._bound(spec, children, self.budget.iterations)
            self.branches += len(children["lower"])
            if result.counterexample is not None:
                return NON_ROBUST, float(result.lower.min()) - self.slack, result.counterexample
            pool.add(result.keep(~(result.lower > self.slack)))
        if stuck_margin < float("inf"):
            return UNDECIDED, stuck_margin, None
        return CERTIFIED, 0.0, None

    def _empty_domain(self) -> dict[str, Tensor]:
        domain: dict[str, Tensor] = {"lower": torch.full((1,), -float("inf"), dtype=torch.float64)}
        for item in self.owner.branchable:
            shape = (1, *self.bp.shapes[item.node])
            domain[f"side{item.node}"] = torch.zeros(shape, dtype=torch.int8)
            domain[f"beta{item.node}"] = torch.zeros(shape, dtype=torch.float32)
            domain[f"score{item.node}"] = torch.zeros(shape, dtype=torch.float32)
        for index in self._sloped():
            source = self.bp.nodes[index].inputs[0]
            shape = (1, *self.bp.shapes[source])
            domain[f"alpha{index}"] = torch.full(shape, float("nan"), dtype=torch.float32)
        return domain

    def _sloped(self) -> list[int]:
        return [
            i
            for i in self.bp.relaxed
            if isinstance(self.bp.nodes[i].layer, ElementwisePiecewiseLinear)
        ]

    def _split(
        self, spec: Tensor, parents: dict[str, Tensor]
    ) -> tuple[dict[str, Tensor] | None, dict[str, Tensor] | None]:
        """Two children per parent, split on the neuron ``_choose`` picks; parents with no
        neuron left to split are returned apart (``stuck``)."""
        node, index, splittable = self._choose(spec, parents)
        stuck = None
        if not bool(splittable.all()):
            stuck = {k: v[~splittable] for k, v in parents.items()}
        if not bool(splittable.any()):
            return None, stuck
        keep = splittable.nonzero()[:, 0]
        parents = {k: v[keep] for k, v in parents.items()}
        return self._children(parents, node[keep], index[keep]), stuck

    def _regions(
        self, spec: Tensor, domains: dict[str, Tensor]
    ) -> tuple[int, float, np.ndarray | None]:
        """Subdomains whose every unstable neuron is split: the network is affine on each,
        so the margin's minimum over it is a linear program (linf) or a second-order cone
        program (l2), solved exactly (``audit_core.bounds.region``). Its multipliers, fed
        back as betas, give the sound float64 bound; its minimiser is a candidate
        counterexample. Returns the worst outcome: a counterexample, or the lowest margin
        left (<= 0: undecided), or a positive margin when all are closed."""
        from audit_core.bounds.region import solve_region

        worst = float("inf")
        for row in range(len(domains["lower"])):
            domain = {k: v[row : row + 1] for k, v in domains.items()}
            problem = self._problem(spec, domain, 1)
            alphas, _ = self._parameters(domain, problem)
            solved = solve_region(self.bp, problem.bounds, problem.splits, spec, self.inputs)
            if solved is None:  # not a single linear region (max pooling, two kinks) or failed
                worst = min(worst, float(domain["lower"][0]) - self.slack)
                continue
            betas = {i: b.unsqueeze(1) for i, b in solved.betas.items()}
            with torch.no_grad():
                lower, _ = self._evaluate(problem, alphas, betas)
            margin = max(float(lower[0]), float(domain["lower"][0])) - self.slack
            if math.isnan(margin):  # NaN proves nothing
                margin = -math.inf
            if margin > 0:
                continue
            if solved.point is not None:
                point = self._confirmed(torch.as_tensor(solved.point).reshape(1, -1), spec)
                if point is not None:
                    return NON_ROBUST, margin, point
            worst = min(worst, margin)
        return (CERTIFIED, 0.0, None) if worst == float("inf") else (UNDECIDED, worst, None)

    def _children(
        self, parents: dict[str, Tensor], node: Tensor, index: Tensor
    ) -> dict[str, Tensor]:
        """Each parent twice: on ``z >= kink`` (first half), then ``z <= kink``, at the
        neuron ``index`` of pre-activation node ``node``."""
        count = len(node)
        children = {k: torch.cat([v, v]) for k, v in parents.items()}
        rows = torch.arange(2 * count)
        nodes, indices = torch.cat([node, node]), torch.cat([index, index])
        sides = torch.cat([torch.ones(count), -torch.ones(count)]).to(torch.int8)
        for item in self.owner.branchable:
            here = nodes == item.node
            side = children[f"side{item.node}"].reshape(len(rows), -1).clone()
            side[rows[here], indices[here]] = sides[here]
            children[f"side{item.node}"] = side.reshape(children[f"side{item.node}"].shape)
        return children

    def _choose(self, spec: Tensor, parents: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """The neuron to split per parent: of the ``candidates`` best intercept scores, the
        one whose worse child gets the highest bound with the parent's alphas and betas
        (filtered smart branching, De Palma et al. 2021). Returns (node, flat index,
        splittable) per parent."""
        count = len(parents["lower"])
        nodes = [item.node for item in self.owner.branchable]
        if not nodes:  # nothing to split (an affine model): each parent is one linear region
            none = torch.zeros(count, dtype=torch.long)
            return none, none, torch.zeros(count, dtype=torch.bool)
        scores = torch.cat([parents[f"score{n}"].reshape(count, -1) for n in nodes], dim=1)
        sizes = torch.tensor([parents[f"score{n}"][0].numel() for n in nodes])
        starts = torch.cumsum(sizes, 0) - sizes
        k = min(self.budget.candidates, scores.shape[1])
        values, flat = scores.topk(k, dim=1)
        valid = values > -float("inf")
        owner = torch.bucketize(flat, starts, right=True) - 1
        node_of = torch.tensor(nodes)[owner]
        index_of = flat - starts[owner]
        if k > 1:
            worst = self._trial(spec, parents, node_of, index_of)
            choice = torch.where(valid, worst, -float("inf")).argmax(dim=1)
        else:
            choice = torch.zeros(count, dtype=torch.long)
        rows = torch.arange(count)
        return node_of[rows, choice], index_of[rows, choice], valid[rows, choice]

    def _trial(
        self, spec: Tensor, parents: dict[str, Tensor], node_of: Tensor, index_of: Tensor
    ) -> Tensor:
        """``(P, k)``: the lower of the two children's bounds for each candidate split, from
        one float32 pass with the parent's alphas and betas."""
        count, k = node_of.shape
        repeated = {key: value.repeat_interleave(k, dim=0) for key, value in parents.items()}
        children = self._children(repeated, node_of.reshape(-1), index_of.reshape(-1))
        problem = self._problem(spec, children, len(children["lower"]))
        alphas, betas = self._parameters(children, problem)
        light = problem.to(torch.float32)
        with torch.no_grad():
            lower, _ = self._evaluate(
                light,
                {i: a.float() for i, a in alphas.items()},
                {i: b.float() for i, b in betas.items()},
            )
        lower = lower.double().reshape(2, count, k)
        return torch.minimum(lower[0], lower[1])

    # ------------------------------------------------------------ bounding
    def _bound(self, spec: Tensor, domains: dict[str, Tensor], iterations: int) -> Bounded:
        """Bounds of a batch of subdomains: first with the inherited alphas and betas; the
        subdomains that this leaves open get ``iterations`` steps of projected gradient
        ascent (in float32: any alpha in [0, 1] and beta >= 0 give a valid bound), then a
        float64 bound with the result (the one that counts), their branching scores and
        the cheap attack."""
        count = len(domains["lower"])
        problem = self._problem(spec, domains, count)
        alphas, betas = self._parameters(domains, problem)
        with torch.no_grad():
            first, _ = self._evaluate(problem, alphas, betas)
        result = dict(domains)
        result["lower"] = first
        for item in self.owner.branchable:
            result[f"score{item.node}"] = torch.full_like(domains[f"score{item.node}"], -np.inf)
        rows = (~(first > self.slack)).nonzero()[:, 0]
        if not len(rows):
            return Bounded(result, None)
        sub = problem.take(rows)
        alphas = {i: a[rows] for i, a in alphas.items()}
        betas = {i: b[rows] for i, b in betas.items()}
        if iterations:
            alphas, betas = self._optimize(sub, alphas, betas, iterations)
        record: dict[int, Tensor] = {}
        with torch.no_grad():
            lower, weights = self._evaluate(sub, alphas, betas, record)
        result["lower"] = first.clone()
        result["lower"][rows] = torch.maximum(first[rows], lower)
        for i, alpha in alphas.items():
            result[f"alpha{i}"] = result[f"alpha{i}"].clone()
            result[f"alpha{i}"][rows] = alpha[:, 0].float()
        for i, beta in betas.items():
            result[f"beta{i}"] = result[f"beta{i}"].clone()
            result[f"beta{i}"][rows] = (beta * sub.masks[i])[:, 0].float()
        for item in self.owner.branchable:
            result[f"score{item.node}"][rows] = self._scores(item, record, sub.bounds, sub.splits)
        return Bounded(result, self._attack(weights, sub.specs))

    def _problem(self, spec: Tensor, domains: dict[str, Tensor], count: int) -> Problem:
        """The subdomains as bound-propagation inputs (float64)."""
        inputs = self.inputs.repeat(torch.zeros(count, dtype=torch.long))
        splits = Splits()
        bounds: dict[int, Bounds] = {}
        for node, (low, high) in self.bounds.items():
            bounds[node] = (low.expand(count, *low.shape[1:]), high.expand(count, *high.shape[1:]))
        for item in self.owner.branchable:
            side = domains[f"side{item.node}"].to(torch.float64)
            splits.side[item.node] = side
            splits.kink[item.node] = torch.full_like(side, item.kink)
            bounds[item.node] = splits.apply(item.node, bounds[item.node])
        masks = {i: (splits.side[i] != 0).to(torch.float64).unsqueeze(1) for i in splits.side}
        specs = spec.expand(count, *spec.shape[1:])
        return Problem(inputs, bounds, splits, specs, masks)

    def _parameters(
        self, domains: dict[str, Tensor], problem: Problem
    ) -> tuple[dict[int, Tensor], dict[int, Tensor]]:
        alphas = self._alphas(domains, problem.bounds)
        betas = {
            item.node: domains[f"beta{item.node}"].to(torch.float64).unsqueeze(1)
            for item in self.owner.branchable
        }
        return alphas, betas

    def _evaluate(
        self,
        problem: Problem,
        alphas: dict[int, Tensor],
        betas: dict[int, Tensor],
        record: dict[int, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The bound of each subdomain and the linear bound's input coefficients."""
        relax = Relaxations(alphas, {i: betas[i] * problem.masks[i] for i in betas}, problem.cache)
        weights, bias = self.bp.backward(
            len(self.bp.nodes) - 1, problem.specs, problem.bounds, relax, problem.splits, record
        )
        return concretise(problem.inputs, weights, bias)[:, 0], weights

    def _optimize(
        self,
        problem: Problem,
        alphas: dict[int, Tensor],
        betas: dict[int, Tensor],
        iterations: int,
    ) -> tuple[dict[int, Tensor], dict[int, Tensor]]:
        """Projected gradient ascent on the bounds, in float32; returns float64 values."""
        light = problem.to(torch.float32)
        alphas = {i: a.float().requires_grad_(True) for i, a in alphas.items()}
        betas = {i: b.float().requires_grad_(True) for i, b in betas.items()}
        ascent = Ascent(
            [
                (list(alphas.values()), self.budget.alpha_rate, 0.0, 1.0),
                (list(betas.values()), self.budget.beta_rate, 0.0, None),
            ]
        )
        for _ in range(iterations):
            if time.perf_counter() > self.deadline:
                break
            lower, _ = self._evaluate(light, alphas, betas)
            ascent.ascend(lower.sum())
        return (
            {i: a.detach().double() for i, a in alphas.items()},
            {i: b.detach().double() for i, b in betas.items()},
        )

    def _alphas(self, domains: dict[str, Tensor], bounds: dict[int, Bounds]) -> dict[int, Tensor]:
        """Each subdomain's alphas (its parent's; CROWN's default at the root)."""
        alphas = {}
        for index in self._sloped():
            layer = self.bp.nodes[index].layer
            stored = domains[f"alpha{index}"].to(torch.float64)
            start = default_alpha(layer, *bounds[self.bp.nodes[index].inputs[0]])
            alphas[index] = torch.where(torch.isnan(stored), start, stored).unsqueeze(1)
        return alphas

    def _scores(
        self,
        item: _Branchable,
        record: dict[int, Tensor],
        bounds: dict[int, Bounds],
        splits: Splits,
    ) -> Tensor:
        """The intercept score of every neuron that may still be split (else -inf): the
        gap of the upper relaxation at the kink times the weight of the bound on it."""
        low, high = bounds[item.node]
        layer = self.bp.nodes[item.consumer].layer
        relax = layer.relaxation(low, high)
        kink = torch.full_like(low, item.kink)
        gap = (relax.upper_slope * kink + relax.upper_bias - layer.forward(kink)).clamp_min(0.0)
        coefficient = record[item.consumer][:, 0]
        score = (-coefficient).clamp_min(0.0) * gap
        score = score + 1e-9 * torch.minimum(high - kink, kink - low).clamp_min(0.0)
        open_ = (low < item.kink) & (high > item.kink) & (splits.side[item.node] == 0)
        return torch.where(open_, score, -float("inf")).float()

    def _attack(self, weights: Tensor, specs: Tensor) -> np.ndarray | None:
        """The points minimising each subdomain's linear bound, tried as counterexamples."""
        points = self.inputs.repeat(torch.zeros(len(weights), dtype=torch.long))
        return self._confirmed(points.argmin(weights)[:, 0], specs[:1])

    def _confirmed(self, points: Tensor, spec: Tensor) -> np.ndarray | None:
        """``points`` moved into the exact (uninflated) set: the first one the float64 graph
        puts on the wrong side of ``spec``'s margin and the deployed runtime misclassifies."""
        points = into_set(points, self.exact)
        if len(points) == 0:
            return None
        with torch.no_grad():
            logits = self.bp.graph.forward(points).reshape(len(points), -1)
        margins = logits @ spec.reshape(-1).to(logits.dtype)
        candidates = points[margins < 0].numpy()
        if len(candidates) == 0:
            return None
        confirm = self.owner.confirm
        fooled = (
            confirm(candidates, self.label)
            if confirm is not None
            else np.ones(len(candidates), bool)
        )
        return candidates[np.flatnonzero(fooled)[0]] if fooled.any() else None
