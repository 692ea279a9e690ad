"""The collision descent of Algorithm 2 / Appendices C-D
(``audit_plugins.lower_bounds.descent``): the fast cone solve against the full program, the
descent against a brute-force enumeration of activation patterns, its deadline.
"""

from __future__ import annotations

import itertools

import cvxpy as cp
import numpy as np
import pytest

from audit_core.onnx_import import load_onnx
from audit_core.testing import mlp_onnx, random_mlp
from audit_plugins.lower_bounds.collisions import (
    Pairs,
    collision_lower_bound,
)
from audit_plugins.lower_bounds.descent import (
    DescentSettings,
    build_cone,
    descend,
    descend_many,
    flip_patterns,
    initial_masks,
    make_chain,
    solve_cone,
)
from audit_plugins.lower_bounds.prefix import (
    RELU,
    build_prefixes,
)
from lower_bounds_nets import make_small_net


@pytest.fixture(scope="module")
def small_net(tmp_path_factory):
    """A 6-10-8-2 ReLU MLP, its graph and 8 + 8 random points."""
    return make_small_net(tmp_path_factory.mktemp("lb"))


def test_fast_solve_equals_the_full_cone_program(small_net) -> None:
    """Active set / constraint generation: the full program's optimum and the same flips."""
    graph, _, _, x, _ = small_net
    flipped = 0
    for prefix in build_prefixes(graph, 10**8)[2:]:
        chain = make_chain(prefix.blocks, None)
        for i in range(6):
            u, v = x[i], x[8 + i]
            masks = initial_masks(chain, u, v)
            masks = (masks, [m.copy() for m in masks])
            for _ in range(3):  # follow the descent for a few steps
                data = build_cone(chain, u, v, *masks)
                full = solve_cone(data, "cvxpy", fast=False)
                fast = solve_cone(data, "clarabel", fast=True)
                assert fast.t == pytest.approx(full.t, rel=1e-6, abs=1e-8)
                by_full = flip_patterns(chain, data, full.in_dual, masks, 1e-6)
                by_fast = flip_patterns(chain, data, fast.in_dual, masks, 1e-6)
                for a, b in zip(by_full[0] + by_full[1], by_fast[0] + by_fast[1], strict=True):
                    np.testing.assert_array_equal(a, b)
                if by_full[2] == 0:
                    break
                flipped += by_full[2]
                masks = (by_full[0], by_full[1])
    assert flipped > 0  # the comparison covered steps that change patterns


def brute_force_distance(weights, biases, u, v) -> float:
    """eps_f(u, v) exactly: the minimum over every activation pattern of both points.

    The collision set is the union, over patterns (s_u, s_v) of every ReLU layer
    with a shared last-layer pattern, of polytopes; each gives a convex program.
    One cvxpy problem with parametrised masked matrices, solved for every pattern.
    """
    depth = len(weights)
    widths = [w.shape[0] for w in weights]
    du, dv, eps = cp.Variable(2), cp.Variable(2), cp.Variable()
    params = {}
    constraints = [cp.norm(du) <= eps, cp.norm(dv) <= eps]
    for side, (point, delta) in enumerate(((u, du), (v, dv))):
        for layer in range(depth):
            matrix = cp.Parameter((widths[layer], 2), name=f"M{side}{layer}")
            offset = cp.Parameter(widths[layer], name=f"c{side}{layer}")
            params[side, layer] = (matrix, offset)
            constraints.append(matrix @ (point + delta) + offset >= 0)  # sign-flipped rows
    eq_u = cp.Parameter((widths[-1], 2))
    eq_v = cp.Parameter((widths[-1], 2))
    e_u, e_v = cp.Parameter(widths[-1]), cp.Parameter(widths[-1])
    constraints.append(eq_u @ (u + du) + e_u == eq_v @ (v + dv) + e_v)
    problem = cp.Problem(cp.Minimize(eps), constraints)
    best = np.inf
    hidden = [list(itertools.product([0.0, 1.0], repeat=w)) for w in widths[:-1]]
    for patterns_u in itertools.product(*hidden):
        for patterns_v in itertools.product(*hidden):
            for last in itertools.product([0.0, 1.0], repeat=widths[-1]):
                maps = []
                for side, pats in ((0, patterns_u), (1, patterns_v)):
                    m, c = np.eye(2), np.zeros(2)
                    for layer in range(depth):
                        z_m, z_c = weights[layer] @ m, weights[layer] @ c + biases[layer]
                        s = np.array(pats[layer] if layer < depth - 1 else last)
                        sign = 2 * s - 1
                        params[side, layer][0].value = sign[:, None] * z_m
                        params[side, layer][1].value = sign * z_c
                        m, c = s[:, None] * z_m, s * z_c
                    maps.append((m, c))
                eq_u.value, e_u.value = maps[0]
                eq_v.value, e_v.value = maps[1]
                problem.solve(solver=cp.CLARABEL)
                if problem.status == cp.OPTIMAL:
                    best = min(best, float(eps.value))
    return best


@pytest.mark.parametrize("sizes", [[2, 3], [2, 3, 2]], ids=["one-relu-layer", "two-relu-layers"])
def test_descent_against_brute_force_on_tiny_2d_nets(tmp_path, sizes) -> None:
    weights, biases = random_mlp([*sizes, 2], seed=11)
    graph = load_onnx(mlp_onnx(tmp_path / "tiny.onnx", weights, biases)).graph
    prefix = build_prefixes(graph, 10**8)[-1]  # the last ReLU
    assert prefix.kind == RELU
    chain = make_chain(prefix.blocks, None)
    rng = np.random.default_rng(12)
    count = 8 if len(sizes) == 2 else 3
    points = rng.normal(size=(2 * count, 2))
    agree = 0
    for u, v in zip(points[:count], points[count:], strict=True):
        result = descend(chain, u, v, DescentSettings())
        ours = float(
            np.min(
                np.maximum(
                    np.linalg.norm(result.u_tilde - u, axis=1),
                    np.linalg.norm(result.v_tilde - v, axis=1),
                )
            )
        )
        exact = brute_force_distance(weights[:-1], biases[:-1], u, v)
        assert ours >= exact - 1e-6  # a found collision can never beat the optimum
        assert exact <= np.linalg.norm(u - v) / 2 + 1e-9
        pair = Pairs(np.stack([u, v]), np.array([0]), np.array([1]))
        # the pruning bound is a true lower bound, also with the finite budgets the audit
        # prunes with (local Lipschitz constants over the budget ball); just above the
        # brute force's value, which a cone solver gives to ~1e-8
        for budget in (np.inf, exact * (1 + 1e-6), 2 * exact):
            assert collision_lower_bound(prefix, pair, budget)[0] <= exact + 1e-7, budget
        agree += ours <= exact + 1e-5
    assert agree >= count // 2  # the local descent finds the global optimum often


def test_descent_past_its_deadline_keeps_the_first_step_only(tmp_path) -> None:
    weights, biases = random_mlp([2, 3, 2, 2], seed=11)
    graph = load_onnx(mlp_onnx(tmp_path / "tiny.onnx", weights, biases)).graph
    chain = make_chain(build_prefixes(graph, 10**8)[-1].blocks, None)
    points = np.random.default_rng(12).normal(size=(6, 2))
    pairs = list(zip(points[:3], points[3:], strict=True))
    results = [descend(chain, u, v, DescentSettings()) for u, v in pairs]
    late = [descend(chain, u, v, DescentSettings(), deadline=0.0) for u, v in pairs]
    for full, cut in zip(results, late, strict=True):
        assert cut.steps == 1  # the first cone program always runs
        assert cut.status == ("deadline" if full.steps > 1 else full.status)
        np.testing.assert_allclose(cut.u_tilde[0], full.u_tilde[0])
    assert any(full.steps > 1 for full in results)  # the cut was exercised
    assert descend_many(chain, points[:3], points[3:], DescentSettings(), 0.0) == [None] * 3
