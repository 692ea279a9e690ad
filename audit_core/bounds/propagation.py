"""Bound propagation on a piecewise-linear ``LayerGraph``: interval bounds (IBP) and
backward linear relaxation (CROWN; Zhang et al. 2018, "Efficient Neural Network
Robustness Certification with General Activation Functions"), with optimisable lower
slopes (alpha-CROWN; Xu et al. 2021) and split constraints (beta-CROWN; Wang et al.
2021) for branch and bound.

Every rule about an op lives with its layer type (``audit_core.layers``): affine layers
give their adjoint and offset, piecewise-linear layers their ``backward_bound``; this
module only walks the graph. Everything is float64 and batched over B rows (samples,
or the subdomains of one sample in branch and bound).

Bounds are computed where a relaxation needs them: at the input of every
piecewise-linear layer ("pre-activation" nodes), in topological order, each once:
interval bounds first, then CROWN for the neurons whose interval straddles a kink
(the others are stable: their relaxation is exact), intersected with the interval
and with any bounds known already (a parent subdomain's, a split's). The margins'
lower bounds then come from one backward pass from the output.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from audit_core.bounds.input_set import InputSet, no_nan
from audit_core.errors import NotApplicable
from audit_core.graph import LayerGraph
from audit_core.layers import Bounds, ElementwisePiecewiseLinear, LayerKind

Tensor = torch.Tensor
SPEC_BUDGET = 2**25
"""Largest number of float64 coefficients one backward pass holds per node (256 MB):
the specs of an intermediate bound are split into chunks below it."""
EXACT_BUDGET = 2**22
"""Largest number of coefficients per chunk given the exact (sorting) l2 concretisation
for intermediate bounds; further unstable neurons keep the cheaper bound (wide conv
layers: 32 x 27 x 27 neurons on a 784-pixel input would take seconds per sample)."""


@dataclass
class Splits:
    """Split constraints of subdomains (beta-CROWN): per pre-activation node, a tensor
    ``(B, *shape)`` of the kink each neuron is split at (nan: not split) and the side
    (+1: ``z >= kink``, -1: ``z <= kink``, 0: not split)."""

    kink: dict[int, Tensor] = field(default_factory=dict)
    side: dict[int, Tensor] = field(default_factory=dict)

    def apply(self, node: int, bounds: Bounds) -> Bounds:
        """``bounds`` of ``node`` tightened by its splits."""
        if node not in self.side:
            return bounds
        low, high = bounds
        side, kink = self.side[node], self.kink[node]
        low = torch.where(side > 0, torch.maximum(low, kink), low)
        high = torch.where(side < 0, torch.minimum(high, kink), high)
        return low, high


@dataclass
class Relaxations:
    """What a backward pass may tune: per elementwise piecewise-linear node, alpha in
    [0, 1] ``(B, S or 1, *shape)``, the lower slope's position in the range of slopes met
    on each neuron's interval (stable neurons keep their exact slope); per split
    pre-activation node, beta multipliers ``(B, S or 1, *shape)`` (>= 0)."""

    alphas: dict[int, Tensor] = field(default_factory=dict)
    betas: dict[int, Tensor] = field(default_factory=dict)
    cache: dict[int, object] | None = None
    """Per node, the relaxation parts that do not depend on alpha (``relaxation_parts``);
    give the same dict to every pass over the same bounds (optimisation steps)."""


class BoundPropagation:
    """Interval and CROWN bounds of a piecewise-linear graph over an ``InputSet``."""

    def __init__(self, graph: LayerGraph) -> None:
        if not graph.is_piecewise_linear:
            bad = sorted({n.layer.op for n in graph.nodes if n.layer.kind is LayerKind.NONLINEAR})
            raise NotApplicable(f"the model is not piecewise linear ({', '.join(bad)} inside)")
        self.graph = graph
        self.nodes = graph.nodes
        self.shapes = [node.shape for node in graph.nodes]
        self.relaxed = [
            i for i, n in enumerate(self.nodes) if n.layer.kind is LayerKind.PIECEWISE_LINEAR
        ]
        self.pre_activations = sorted({self.nodes[i].inputs[0] for i in self.relaxed})
        self.consumers = {
            p: [i for i in self.relaxed if self.nodes[i].inputs[0] == p]
            for p in self.pre_activations
        }
        self.offsets = self._offsets()

    def _offsets(self) -> dict[int, Tensor]:
        offsets = {}
        like = torch.zeros(1, dtype=torch.float64)
        with torch.no_grad():
            for index, node in enumerate(self.nodes[1:], start=1):
                if node.layer.kind is LayerKind.AFFINE:
                    shapes = [self.shapes[i] for i in node.inputs]
                    offset = node.layer.offset(shapes, like)
                    if offset.abs().max() > 0:
                        offsets[index] = offset
        return offsets

    # ------------------------------------------------------------ interval bounds
    def interval(self, inputs: InputSet, known: Mapping[int, Bounds] | None = None) -> list[Bounds]:
        """Interval bounds of every node (IBP), using ``known`` bounds where given."""
        known = known or {}
        low, high = inputs.box()
        bounds: list[Bounds] = [
            (low.reshape(-1, *self.shapes[0]), high.reshape(-1, *self.shapes[0]))
        ]
        with torch.no_grad():
            for index, node in enumerate(self.nodes[1:], start=1):
                here = node.layer.interval(*(bounds[i] for i in node.inputs))
                if index in known:
                    here = _intersect(here, known[index])
                bounds.append(here)
        return bounds

    # ------------------------------------------------------------ CROWN
    def intermediate(
        self,
        inputs: InputSet,
        known: Mapping[int, Bounds] | None = None,
        splits: Splits | None = None,
        relaxations: Mapping[int, Relaxations] | None = None,
        refine: bool = True,
        masks: Mapping[int, Tensor] | None = None,
    ) -> dict[int, Bounds]:
        """Bounds of every pre-activation node (CROWN where a neuron is unstable).

        ``known``: bounds valid already (a parent subdomain's), intersected in;
        ``splits``: split constraints applied to the bounds; ``relaxations``: per
        pre-activation node, the alphas (and betas) of its own backward pass, whose spec
        axis lists the ``masks`` neurons' lower bounds, then their upper bounds
        (alpha-CROWN on intermediate bounds); ``masks``: the neurons to refine per node
        (default: the unstable ones).
        """
        known = known or {}
        splits = splits or Splits()
        result: dict[int, Bounds] = {}
        low, high = inputs.box()
        interval: list[Bounds] = [
            (low.reshape(-1, *self.shapes[0]), high.reshape(-1, *self.shapes[0]))
        ]
        if 0 in self.consumers:
            result[0] = interval[0]
        for index, node in enumerate(self.nodes[1:], start=1):
            with torch.no_grad():
                here = node.layer.interval(*(interval[i] for i in node.inputs))
            here = _intersect(here, known.get(index))
            if index in self.consumers:
                mask = None if masks is None else masks.get(index)
                here = self._tighten(index, here, inputs, result, splits, relaxations, refine, mask)
                result[index] = here
            interval.append(here)
        return result

    def _tighten(
        self,
        node: int,
        here: Bounds,
        inputs: InputSet,
        done: dict[int, Bounds],
        splits: Splits,
        relaxations: Mapping[int, Relaxations] | None,
        refine: bool,
        mask: Tensor | None = None,
    ) -> Bounds:
        """A pre-activation's bounds: CROWN on its unstable neurons, then its splits.

        Only outputs of affine layers (and the input) are refined: through an elementwise
        monotone layer the interval of each output is exact given its input's interval,
        and CROWN cannot beat it."""
        if refine and self.refinable(node):
            mask = self.unstable(node, here) if mask is None else mask
            if bool(mask.any()):
                relax = (relaxations or {}).get(node)
                here = self._refine(node, here, mask, inputs, done, splits, relax)
        return splits.apply(node, here)

    def refinable(self, node: int) -> bool:
        """True for the pre-activation nodes CROWN refines (outputs of affine layers)."""
        return self.nodes[node].layer.kind in (LayerKind.AFFINE, LayerKind.INPUT)

    def unstable(self, node: int, bounds: Bounds) -> Tensor:
        """Neurons of ``node`` unstable in some row of the batch, ``(*shape)``."""
        return self._straddles(node, *bounds).any(dim=0)

    def _straddles(self, node: int, low: Tensor, high: Tensor) -> Tensor:
        """Where the relaxation of ``node``'s consumers is not exact (elementwise)."""
        mask = torch.zeros_like(low, dtype=torch.bool)
        for consumer in self.consumers[node]:
            layer = self.nodes[consumer].layer
            if isinstance(layer, ElementwisePiecewiseLinear):
                for kink in layer.kinks():
                    mask |= (low < kink) & (high > kink)
            else:
                mask |= torch.ones_like(mask)
        return mask

    def _refine(
        self,
        node: int,
        bounds: Bounds,
        mask: Tensor,
        inputs: InputSet,
        done: dict[int, Bounds],
        splits: Splits,
        relax: Relaxations | None,
    ) -> Bounds:
        """CROWN bounds of the ``mask`` neurons of ``node`` (both sides), intersected.

        For l2 sets each bound is first concretised cheaply (``quick_minimum``); the exact
        minimum is computed only for the neurons that this leaves unstable (a stable
        neuron's relaxation is exact whatever its bounds)."""
        low, high = bounds
        batch = low.shape[0]
        flat_low, flat_high = low.reshape(batch, -1).clone(), high.reshape(batch, -1).clone()
        chosen = mask.reshape(-1).nonzero()[:, 0]
        width = flat_low.shape[1]
        widest = max(int(torch.tensor(s).prod()) if s else 1 for s in self.shapes[: node + 1])
        chunk = max(1, SPEC_BUDGET // (2 * batch * widest))
        for start in range(0, len(chosen), chunk):
            part = chosen[start : start + chunk]
            count = len(part)
            specs = torch.zeros((2 * count, width), dtype=torch.float64)
            specs[torch.arange(count), part] = 1.0
            specs[torch.arange(count, 2 * count), part] = -1.0
            specs = specs.reshape(1, 2 * count, *self.shapes[node])
            specs = specs.expand(batch, *specs.shape[1:])
            rows = torch.cat(
                [
                    torch.arange(start, start + count),
                    len(chosen) + torch.arange(start, start + count),
                ]
            )
            weights, bias = self.backward(node, specs, done, _rows_of(relax, rows), splits)
            found = no_nan(inputs.quick_minimum(weights) + bias)
            new_low = torch.maximum(flat_low[:, part], found[:, :count])
            new_high = torch.minimum(flat_high[:, part], -found[:, count:])
            if inputs.norm == "l2":
                full = _unflatten(new_low, new_high, part, low.shape)
                still = self._straddles(node, *full).reshape(batch, -1)[:, part]
                found = self._exact_where(still, weights, bias, found, inputs)
                new_low = torch.maximum(flat_low[:, part], found[:, :count])
                new_high = torch.minimum(flat_high[:, part], -found[:, count:])
            flat_low[:, part], flat_high[:, part] = new_low, new_high
        return flat_low.reshape(low.shape), flat_high.reshape(high.shape)

    def _exact_where(
        self, still: Tensor, weights: Tensor, bias: Tensor, found: Tensor, inputs: InputSet
    ) -> Tensor:
        """``found`` with the exact minimum on both specs of every ``still`` neuron."""
        rows, columns = still.nonzero(as_tuple=True)
        limit = EXACT_BUDGET // (2 * weights.shape[-1])
        rows, columns = rows[:limit], columns[:limit]
        if len(rows) == 0:
            return found
        count = still.shape[1]
        rows = torch.cat([rows, rows])
        columns = torch.cat([columns, columns + count])
        exact = inputs.repeat(rows).minimum(weights[rows, columns][:, None, :])[:, 0]
        found = found.clone()
        exact = no_nan(exact + bias[rows, columns])
        found[rows, columns] = torch.maximum(found[rows, columns], exact)
        return found

    def lower_bound(
        self,
        start: int,
        specs: Tensor,
        inputs: InputSet,
        bounds: Mapping[int, Bounds],
        relax: Relaxations | None = None,
        splits: Splits | None = None,
    ) -> Tensor:
        """Lower bounds ``(B, S)`` of ``specs . z_start`` over the input set (CROWN)."""
        weights, bias = self.backward(start, specs, bounds, relax, splits)
        return concretise(inputs, weights, bias)

    def backward(
        self,
        start: int,
        specs: Tensor,
        bounds: Mapping[int, Bounds],
        relax: Relaxations | None = None,
        splits: Splits | None = None,
        record: dict[int, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Linear lower bound of ``specs . z_start`` in the graph input: ``(A, b)`` with
        ``specs . z_start >= A . x + b`` for every input whose pre-activations lie in
        ``bounds``; ``A`` ``(B, S, D)``, ``b`` ``(B, S)``. ``record`` receives the
        coefficients reaching each piecewise-linear node (for branching heuristics)."""
        relax = relax or Relaxations()
        batch, count = specs.shape[:2]
        pending: dict[int, Tensor] = {start: specs}
        bias = torch.zeros((batch, count), dtype=specs.dtype)
        for index in range(start, 0, -1):
            coefficients = pending.pop(index, None)
            if coefficients is None:
                continue
            if index in relax.betas and splits is not None:
                coefficients, bias = _beta_term(
                    coefficients, bias, relax.betas[index], splits, index
                )
            node = self.nodes[index]
            if node.layer.kind is LayerKind.AFFINE:
                shapes = [self.shapes[i] for i in node.inputs]
                flat = coefficients.reshape(batch * count, *self.shapes[index])
                parts = node.layer.adjoint(flat, shapes)
                if index in self.offsets:
                    offset = self.offsets[index].reshape(-1).to(coefficients.dtype)
                    bias = bias + coefficients.flatten(2) @ offset
                for source, part in zip(node.inputs, parts, strict=True):
                    _accumulate(pending, source, part.reshape(batch, count, *self.shapes[source]))
            else:
                source = node.inputs[0]
                if record is not None:
                    record[index] = coefficients.detach()
                parts = _parts(node.layer, bounds[source], relax.cache, index)
                slope = _slope(node.layer, bounds[source], relax.alphas.get(index), parts)
                weights, offset = node.layer.backward_bound(
                    coefficients, bounds[source], slope, **({"parts": parts} if parts else {})
                )
                bias = bias + offset
                _accumulate(pending, source, weights)
        weights = pending.get(0)
        if weights is None:
            weights = torch.zeros((batch, count, *self.shapes[0]), dtype=specs.dtype)
        return weights.reshape(batch, count, -1), bias


def _rows_of(relax: Relaxations | None, rows: Tensor) -> Relaxations | None:
    """The alphas and betas of the specs ``rows`` (one chunk of an intermediate bound)."""
    if relax is None:
        return None
    return Relaxations(
        {i: a[:, rows] if a.shape[1] > 1 else a for i, a in relax.alphas.items()},
        {i: b[:, rows] if b.shape[1] > 1 else b for i, b in relax.betas.items()},
    )


def _parts(layer, bounds: Bounds, cache: dict[int, object] | None, index: int):
    """The layer's relaxation parts on ``bounds`` (unsqueezed for the spec axis), from
    ``cache`` when it has them; None for layers without (max pooling)."""
    if not isinstance(layer, ElementwisePiecewiseLinear):
        return None
    if cache is not None and index in cache:
        return cache[index]
    low, high = (bound.unsqueeze(1) for bound in bounds)
    parts = layer.relaxation_parts(low, high)
    if cache is not None:
        cache[index] = parts
    return parts


def _slope(layer, bounds: Bounds, alpha: Tensor | None, parts) -> Tensor | None:
    """The lower slopes for ``alpha`` (None: the layer's default)."""
    if alpha is None:
        return None
    if parts is not None:
        return parts.smallest + alpha * parts.span
    smallest, largest = layer.slope_range(*bounds)
    return smallest.unsqueeze(1) + alpha * (largest - smallest).unsqueeze(1)


def _beta_term(
    coefficients: Tensor, bias: Tensor, beta: Tensor, splits: Splits, node: int
) -> tuple[Tensor, Tensor]:
    """Lagrangian of the split constraints ``side (z - kink) >= 0`` with multipliers
    ``beta >= 0``: on the subdomain ``f >= f - beta side (z - kink)``."""
    side = splits.side[node].unsqueeze(1)
    kink = torch.nan_to_num(splits.kink[node], nan=0.0).unsqueeze(1)
    weight = beta * side
    coefficients = coefficients - weight
    bias = bias + (weight * kink).flatten(2).sum(-1)
    return coefficients, bias


def concretise(inputs: InputSet, weights: Tensor, bias: Tensor) -> Tensor:
    """The lower bound ``min over inputs of weights . x + bias`` ``(B, S)``, with NaN (from
    overflowing extreme sets) as ``-inf``: no bound, never a false one."""
    return no_nan(inputs.minimum(weights) + bias)


def _unflatten(low: Tensor, high: Tensor, part: Tensor, shape: torch.Size) -> Bounds:
    """Bounds ``(B, count)`` of the neurons ``part`` as full-shape tensors (the others at
    ``+inf``, never straddling a kink), the form ``_straddles`` reads."""
    batch = low.shape[0]
    full_low = torch.full(
        (batch, int(torch.tensor(shape[1:]).prod())), float("inf"), dtype=low.dtype
    )
    full_high = full_low.clone()
    full_low[:, part], full_high[:, part] = low, high
    return full_low.reshape(shape), full_high.reshape(shape)


def _accumulate(pending: dict[int, Tensor], index: int, value: Tensor) -> None:
    pending[index] = value if index not in pending else pending[index] + value


def _intersect(bounds: Bounds, other: Bounds | None) -> Bounds:
    if other is None:
        return bounds
    return torch.maximum(bounds[0], other[0]), torch.minimum(bounds[1], other[1])
