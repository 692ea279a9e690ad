"""Certify the classification of each sample over an input set: lower bounds on every
margin ``logit_label - logit_j`` by bound propagation, against the deployed runtime's
logit slack.

A sample is certified at eps when every margin's lower bound over the set exceeds
``2 tau S``: tau is the relative logit deviation allowed between onnxruntime (float32)
and the float64 graph (the fidelity tolerance) and S bounds ``max(1, |logit|)`` over the
set (from the same bound propagation). The set is inflated by the float32 rounding of
the input (``2^-23 (||x0|| + eps)``) and a float64 margin (``1e-9 eps + 1e-10``): the
same safety margin as the simplex certificate (``audit_plugins`` certificates math).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from audit_core.bounds.ascent import Ascent
from audit_core.bounds.input_set import InputSet
from audit_core.bounds.propagation import BoundPropagation, Relaxations
from audit_core.layers import Bounds, ElementwisePiecewiseLinear

Tensor = torch.Tensor
INPUT_ROUNDING = 2.0**-23
"""Twice the float32 unit roundoff: the deployed model sees ``fl32(x)``."""
RELATIVE_MARGIN = 1e-9
ABSOLUTE_MARGIN = 1e-10


def inflated(eps: Tensor, center_norm: Tensor) -> Tensor:
    """The radius whose set covers every float32-rounded point within ``eps``."""
    return eps * (1 + RELATIVE_MARGIN) + INPUT_ROUNDING * (center_norm + eps) + ABSOLUTE_MARGIN


def margin_specs(num_outputs: int, labels: Tensor) -> Tensor:
    """``(B, S, K)``: the margins to keep positive. K >= 2: ``e_label - e_j`` for every
    ``j != label`` (S = K - 1); one logit (binary, class 1 where it is > 0): ``+logit``
    for label 1 and ``-logit`` for label 0."""
    labels = labels.long()
    batch = len(labels)
    if num_outputs == 1:
        return (2.0 * labels.double() - 1.0).reshape(batch, 1, 1)
    eye = torch.eye(num_outputs, dtype=torch.float64)
    specs = eye[labels][:, None, :] - eye[None, :, :]  # (B, K, K): row j = e_y - e_j
    keep = torch.ones((batch, num_outputs), dtype=torch.bool)
    keep[torch.arange(batch), labels] = False
    return specs[keep].reshape(batch, num_outputs - 1, num_outputs)


@dataclass(frozen=True)
class MarginBounds:
    """Per row: margin lower bounds ``(B, S)``, the logit slack ``(B,)``, and whether every
    margin clears it."""

    lower: Tensor
    slack: Tensor

    @property
    def certified(self) -> Tensor:
        return (self.lower > self.slack[:, None]).all(dim=1)

    @property
    def worst(self) -> Tensor:
        """The smallest margin lower bound minus the slack (> 0: certified)."""
        return self.lower.min(dim=1).values - self.slack


class Verifier:
    """Margin bounds of one graph by CROWN, optionally with optimised slopes."""

    def __init__(self, propagation: BoundPropagation, tolerance: float) -> None:
        self.bp = propagation
        self.tolerance = tolerance
        self.output = len(propagation.nodes) - 1
        self.num_outputs = int(torch.tensor(propagation.shapes[-1]).prod())

    @property
    def logit_specs(self) -> int:
        """Specs bounding the logits (for the slack's scale): none without a tolerance."""
        return 2 * self.num_outputs if self.tolerance > 0 else 0

    def specs(self, labels: Tensor) -> Tensor:
        """Margin specs followed by ``+e_k`` and ``-e_k`` for every logit (for the slack)."""
        margins = margin_specs(self.num_outputs, labels)
        if not self.logit_specs:
            return margins.reshape(len(labels), margins.shape[1], *self.bp.shapes[-1])
        eye = torch.eye(self.num_outputs, dtype=torch.float64)
        logits = torch.cat([eye, -eye]).expand(len(labels), -1, -1)
        specs = torch.cat([margins, logits], dim=1)
        return specs.reshape(len(labels), specs.shape[1], *self.bp.shapes[-1])

    def margins(
        self,
        inputs: InputSet,
        labels: Tensor,
        bounds: dict[int, Bounds] | None = None,
        alphas: dict[int, Tensor] | None = None,
    ) -> MarginBounds:
        """CROWN margin bounds over ``inputs`` (intermediate bounds computed if not given)."""
        if bounds is None:
            bounds = self.bp.intermediate(inputs)
        specs = self.specs(labels)
        lower = self.bp.lower_bound(self.output, specs, inputs, bounds, Relaxations(alphas or {}))
        return self._split(lower, len(specs[0]))

    def _split(self, lower: Tensor, total: int) -> MarginBounds:
        count = total - self.logit_specs
        if not self.logit_specs:
            return MarginBounds(lower, torch.zeros(len(lower), dtype=lower.dtype))
        logit_low = lower[:, count : count + self.num_outputs]
        logit_high = -lower[:, count + self.num_outputs :]
        scale = torch.maximum(logit_low.abs(), logit_high.abs()).amax(dim=1).clamp_min(1.0)
        return MarginBounds(lower[:, :count], 2.0 * self.tolerance * scale)

    def optimized_margins(
        self,
        inputs: InputSet,
        labels: Tensor,
        bounds: dict[int, Bounds],
        iterations: int,
        learning_rate: float = 0.1,
    ) -> MarginBounds:
        """alpha-CROWN: margin bounds maximised over the lower slopes of every unstable
        neuron (one slope per margin and neuron, projected gradient ascent with Adam);
        each iterate is a valid bound, the best one per margin is kept."""
        specs = self.specs(labels)
        alphas = self.initial_alphas(bounds, specs.shape[1])
        best = torch.full(specs.shape[:2], -float("inf"), dtype=torch.float64)
        ascent = Ascent([(list(alphas.values()), learning_rate, 0.0, 1.0)]) if alphas else None
        for step in range(iterations + 1):
            last = step == iterations or ascent is None
            with torch.set_grad_enabled(not last):
                lower = self.bp.lower_bound(self.output, specs, inputs, bounds, Relaxations(alphas))
            best = torch.maximum(best, lower.detach())
            if last:
                break
            ascent.ascend(lower.sum())
        return self._split(best, specs.shape[1])

    def optimized_bounds(
        self,
        inputs: InputSet,
        labels: Tensor,
        iterations: int,
        learning_rate: float = 0.1,
        deadline: float = float("inf"),
    ) -> tuple[dict[int, Bounds], MarginBounds]:
        """Full alpha-CROWN: the intermediate bounds too are computed with their own
        optimised slopes (one alpha per bounded neuron, side and earlier neuron), all
        trained on the margins' bounds. Returns the tightest bounds seen for every node
        (each iterate's are valid) and the best margin bounds; past ``deadline``
        (``time.perf_counter()``) the current iterate is the last."""
        bp = self.bp
        with torch.no_grad():
            start = bp.intermediate(inputs)
        masks = {p: bp.unstable(p, start[p]) for p in bp.pre_activations if bp.refinable(p)}
        inner = self._inner_alphas(start, masks)
        specs = self.specs(labels)
        outer = self.initial_alphas(start, specs.shape[1])
        params = [a for group in inner.values() for a in group.values()] + list(outer.values())
        ascent = Ascent([(params, learning_rate, 0.0, 1.0)]) if params else None
        # the refined neurons float free (intersecting them with CROWN's bounds would stop
        # their gradient after the first step); the others keep CROWN's bounds
        free = {
            p: (torch.where(masks[p], -torch.inf, low), torch.where(masks[p], torch.inf, high))
            if p in masks
            else (low, high)
            for p, (low, high) in start.items()
        }
        best_bounds = dict(start)
        best = torch.full(specs.shape[:2], -float("inf"), dtype=torch.float64)
        for step in range(iterations + 1):
            last = step == iterations or ascent is None or time.perf_counter() > deadline
            with torch.set_grad_enabled(not last):
                relax = {p: Relaxations(group) for p, group in inner.items()}
                bounds = bp.intermediate(inputs, known=free, relaxations=relax, masks=masks)
                lower = bp.lower_bound(self.output, specs, inputs, bounds, Relaxations(outer))
            best = torch.maximum(best, lower.detach())
            best_bounds = {
                p: (
                    torch.maximum(best_bounds[p][0], low.detach()),
                    torch.minimum(best_bounds[p][1], high.detach()),
                )
                for p, (low, high) in bounds.items()
            }
            if last:
                break
            ascent.ascend(lower.sum())
        return best_bounds, self._split(best, specs.shape[1])

    def _inner_alphas(
        self, bounds: dict[int, Bounds], masks: dict[int, Tensor]
    ) -> dict[int, dict[int, Tensor]]:
        """Per refined node p, alphas ``(B, 2 n_p, *shape)`` for every earlier elementwise
        piecewise-linear node (n_p: p's refined neurons)."""
        inner: dict[int, dict[int, Tensor]] = {}
        for p, mask in masks.items():
            count = 2 * int(mask.sum())
            if not count:
                continue
            group = {}
            for index in self.bp.relaxed:
                layer = self.bp.nodes[index].layer
                source = self.bp.nodes[index].inputs[0]
                if index >= p or not isinstance(layer, ElementwisePiecewiseLinear):
                    continue
                alpha = default_alpha(layer, *bounds[source])
                shape = (alpha.shape[0], count, *alpha.shape[1:])
                group[index] = alpha.unsqueeze(1).expand(shape).clone().requires_grad_(True)
            if group:
                inner[p] = group
        return inner

    def initial_alphas(self, bounds: dict[int, Bounds], count: int) -> dict[int, Tensor]:
        """Per elementwise piecewise-linear node, alphas ``(B, count, *shape)`` starting at
        CROWN's default slope (requiring grad)."""
        alphas = {}
        for index in self.bp.relaxed:
            layer = self.bp.nodes[index].layer
            if not isinstance(layer, ElementwisePiecewiseLinear):
                continue
            low, high = bounds[self.bp.nodes[index].inputs[0]]
            alpha = default_alpha(layer, low, high)
            shape = (alpha.shape[0], count, *alpha.shape[1:])
            alphas[index] = alpha.unsqueeze(1).expand(shape).clone().requires_grad_(True)
        return alphas


def default_alpha(layer: ElementwisePiecewiseLinear, low: Tensor, high: Tensor) -> Tensor:
    """The alpha of CROWN's default lower slope on ``[low, high]``."""
    smallest, largest = layer.slope_range(low, high)
    span = largest - smallest
    start = layer.default_lower_slope(low, high)
    return torch.where(span > 0, (start - smallest) / torch.where(span > 0, span, 1.0), 0.0)
