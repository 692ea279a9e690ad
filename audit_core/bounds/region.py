"""One linear region: the exact minimum of a margin over a subdomain whose every unstable
neuron is split (the "region search" of the complete search).

On such a subdomain every activation is fixed, so the network is affine there: the
margin is ``c . x + d`` and each split neuron ``z_i(x) = a_i . x + b_i`` (from backward
passes whose relaxations are all exact), and the subdomain is the polytope
``s_i (z_i(x) - k_i) >= 0`` within the input set. Its minimum is a linear program (linf
box) or a second-order cone program (l2 ball), solved with Clarabel through cvxpy.

A solver's answer is not a proof: the caller feeds the multipliers of the split
constraints back into the float64 bound propagation as betas (the Lagrangian bound is
valid for any multipliers >= 0, and exact at the optimal ones), and checks the minimiser
as a counterexample in the float64 graph and the deployed runtime.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from audit_core.bounds.input_set import InputSet
from audit_core.bounds.propagation import BoundPropagation, Splits
from audit_core.layers import Bounds, ElementwisePiecewiseLinear

Tensor = torch.Tensor
INFEASIBLE_SCALE = 1e6
"""A certificate of infeasibility (a ray of multipliers) is scaled by this before it is
tried as betas: the Lagrangian bound then grows past any margin if the ray is genuine."""


@dataclass(frozen=True)
class RegionSolution:
    """``point``: the minimiser (flat, float64) or None; ``betas``: multipliers ``(1, *shape)``
    per split pre-activation node; ``infeasible``: the solver found no point (the betas
    are then a scaled infeasibility certificate, still to be checked by the caller)."""

    point: np.ndarray | None
    betas: dict[int, Tensor]
    infeasible: bool = False


def solve_region(
    bp: BoundPropagation,
    bounds: dict[int, Bounds],
    splits: Splits,
    spec: Tensor,
    inputs: InputSet,
) -> RegionSolution | None:
    """The region's exact minimum (one subdomain, batch 1), or None when the subdomain is
    not a single linear region or the solver fails."""
    if not _single_region(bp, bounds):
        return None
    rows = _split_rows(bp, bounds, splits)
    c, d = bp.backward(len(bp.nodes) - 1, spec.reshape(1, 1, *bp.shapes[-1]), bounds)
    return _solve(c[0, 0].numpy(), float(d[0, 0]), rows, inputs, bp)


@dataclass(frozen=True)
class _Rows:
    """The split constraints ``side * (weights . x + bias - kink) >= 0`` of one node."""

    node: int
    positions: Tensor
    weights: np.ndarray
    bias: np.ndarray
    side: np.ndarray
    kink: float


def _single_region(bp: BoundPropagation, bounds: dict[int, Bounds]) -> bool:
    """True when every piecewise-linear layer is a one-kink activation whose neurons are
    all on one side of the kink (stable, or split: the split clamps the bounds)."""
    for index in bp.relaxed:
        layer = bp.nodes[index].layer
        if not isinstance(layer, ElementwisePiecewiseLinear) or len(layer.kinks()) != 1:
            return False
        low, high = bounds[bp.nodes[index].inputs[0]]
        kink = layer.kinks()[0]
        if bool(((low < kink) & (high > kink)).any()):
            return False
    return True


def _split_rows(bp: BoundPropagation, bounds: dict[int, Bounds], splits: Splits) -> list[_Rows]:
    rows = []
    for node, side in splits.side.items():
        positions = side.reshape(-1).nonzero()[:, 0]
        if not len(positions):
            continue
        width = side[0].numel()
        specs = torch.zeros((1, len(positions), width), dtype=torch.float64)
        specs[0, torch.arange(len(positions)), positions] = 1.0
        weights, bias = bp.backward(node, specs.reshape(1, len(positions), *side.shape[1:]), bounds)
        kink = float(splits.kink[node].reshape(-1)[positions[0]])
        rows.append(
            _Rows(
                node,
                positions,
                weights[0].numpy(),
                bias[0].numpy(),
                side.reshape(-1)[positions].numpy(),
                kink,
            )
        )
    return rows


def _solve(
    c: np.ndarray, d: float, rows: list[_Rows], inputs: InputSet, bp: BoundPropagation
) -> RegionSolution | None:
    import cvxpy as cp

    center = inputs.center[0].numpy()
    eps = float(inputs.eps[0])
    low, high = (b[0].numpy() for b in inputs.box())
    x = cp.Variable(center.size)
    constraints = []  # infinite bounds (unbounded inputs, eps = inf) constrain nothing
    for side, bound in ((1, low), (-1, high)):
        finite = np.flatnonzero(np.isfinite(bound))
        if finite.size:
            constraints.append(side * (x[finite] - bound[finite]) >= 0)
    if inputs.norm == "l2" and np.isfinite(eps):
        constraints.append(cp.norm(x - center, 2) <= eps)
    split = [cp.multiply(r.side, r.weights @ x + r.bias - r.kink) >= 0 for r in rows]
    problem = cp.Problem(cp.Minimize(c @ x + d), constraints + split)
    try:
        problem.solve(solver="CLARABEL")
    except (cp.error.SolverError, ValueError):  # ValueError: data cvxpy cannot take
        return None
    if problem.status in ("infeasible", "infeasible_inaccurate"):
        return RegionSolution(None, _betas(rows, split, bp, INFEASIBLE_SCALE), True)
    if problem.status not in ("optimal", "optimal_inaccurate") or x.value is None:
        return None
    return RegionSolution(np.asarray(x.value, dtype=np.float64), _betas(rows, split, bp, 1.0))


def _betas(rows: list[_Rows], split, bp: BoundPropagation, scale: float) -> dict[int, Tensor]:
    betas = {}
    for r, constraint in zip(rows, split, strict=True):
        dual = constraint.dual_value
        values = np.zeros(int(np.prod(bp.shapes[r.node])))
        if dual is not None:
            values[r.positions.numpy()] = (
                np.maximum(np.asarray(dual, dtype=np.float64), 0.0) * scale
            )
        betas[r.node] = torch.as_tensor(values).reshape(1, *bp.shapes[r.node])
    return betas
