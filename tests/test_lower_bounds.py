"""Collision finding, conflict graphs and loss bounds of the lower-bounds plugin.

Every check compares with an independent computation: cvxpy formulations written
here from the weights, a brute-force enumeration of activation patterns, numpy
forward passes, linear programs.
"""

from __future__ import annotations

import itertools
import math

import cvxpy as cp
import numpy as np
import pytest
from scipy.optimize import linprog

from audit_core.onnx_import import load_onnx
from audit_core.testing import mlp_onnx, random_mlp
from audit_plugins._lower_bounds_collisions import (
    Pairs,
    SearchSettings,
    affine_collisions,
    affine_distances,
    collision_lower_bound,
    prefix_collisions,
)
from audit_plugins._lower_bounds_descent import (
    DescentSettings,
    build_cone,
    descend,
    descend_many,
    flip_patterns,
    initial_masks,
    make_chain,
    solve_cone,
)
from audit_plugins._lower_bounds_graph import (
    bound_curves,
    conflict_graph,
    cross_entropy_bound,
    zero_one_bound,
)
from audit_plugins._lower_bounds_prefix import (
    AFFINE,
    CARRIED,
    INPUT,
    RELU,
    _chain_search_size,
    build_prefixes,
    row_space,
    search_size,
)


def numpy_forward(weights, biases, x, layers):
    """The MLP's first ``layers`` nodes after the input (Gemm, Relu, Gemm, ...) in numpy."""
    h = x
    for step in range(layers):
        i = step // 2
        h = h @ weights[i].T + biases[i] if step % 2 == 0 else np.maximum(h, 0.0)
    return h


def all_pairs(x, y) -> Pairs:
    a, b = np.meshgrid(np.flatnonzero(y == 0), np.flatnonzero(y == 1), indexing="ij")
    return Pairs(np.asarray(x, dtype=np.float64), a.ravel(), b.ravel())


# ------------------------------------------------------------------ affine


def cvxpy_affine_distance(weight, u, v) -> float:
    """Section 3.1's program solved as written: min eps, ||d|| <= eps, ||d'|| <= eps."""
    delta, delta2, eps = cp.Variable(len(u)), cp.Variable(len(u)), cp.Variable()
    constraints = [
        cp.norm(delta) <= eps,
        cp.norm(delta2) <= eps,
        weight @ (u + delta) == weight @ (v + delta2),
    ]
    cp.Problem(cp.Minimize(eps), constraints).solve(solver=cp.CLARABEL)
    return float(eps.value)


@pytest.mark.parametrize(
    "shape", [(3, 8), (8, 8), (12, 5), "rank2"], ids=["wide", "square", "tall", "rank-2"]
)
def test_affine_closed_form_equals_cvxpy_solve(shape) -> None:
    rng = np.random.default_rng(1)
    if shape == "rank2":  # rank-deficient: 6 outputs, rank 2
        weight = rng.normal(size=(6, 2)) @ rng.normal(size=(2, 7))
    else:
        weight = rng.normal(size=shape)
    x = rng.normal(size=(6, weight.shape[1]))
    closed = affine_distances(weight, x[:3], x[3:])
    for i, j in itertools.product(range(3), range(3)):
        expected = cvxpy_affine_distance(weight, x[i], x[3 + j])
        assert closed[i, j] == pytest.approx(expected, rel=1e-5, abs=1e-7)
    if weight.shape[0] >= weight.shape[1] and shape != "rank2":  # injective: input distance
        np.testing.assert_allclose(
            closed, np.linalg.norm(x[:3, None] - x[None, 3:], axis=2) / 2, rtol=1e-10
        )


def test_affine_collisions_are_exact_and_meet_the_closed_form() -> None:
    rng = np.random.default_rng(2)
    weight = rng.normal(size=(4, 10))
    x, y = rng.normal(size=(8, 10)), np.array([0, 0, 0, 0, 1, 1, 1, 1])
    pairs = all_pairs(x, y)
    u_t, v_t = affine_collisions(weight, pairs)
    np.testing.assert_allclose(u_t @ weight.T, v_t @ weight.T, atol=1e-10)
    budget = np.maximum(
        np.linalg.norm(u_t - pairs.u, axis=1), np.linalg.norm(v_t - pairs.v, axis=1)
    )
    closed = affine_distances(weight, x[y == 0], x[y == 1]).ravel()
    np.testing.assert_allclose(budget, closed, rtol=1e-9)
    assert np.all(closed < np.linalg.norm(pairs.u - pairs.v, axis=1) / 2)


def test_row_space_drops_zero_singular_values() -> None:
    rng = np.random.default_rng(3)
    weight = rng.normal(size=(9, 3)) @ rng.normal(size=(3, 12))
    basis = row_space(weight)
    assert basis.shape == (3, 12)
    np.testing.assert_allclose(basis @ basis.T, np.eye(3), atol=1e-9)
    np.testing.assert_allclose(weight @ basis.T @ basis, weight, atol=1e-9)


# --------------------------------------------------------------- ReLU prefixes


@pytest.fixture(scope="module")
def small_net(tmp_path_factory):
    """A 6-10-8-2 ReLU MLP, its graph and 8 + 8 random points."""
    weights, biases = random_mlp([6, 10, 8, 2], seed=5)
    path = mlp_onnx(tmp_path_factory.mktemp("lb") / "net.onnx", weights, biases)
    x = np.random.default_rng(6).normal(size=(16, 6))
    y = np.repeat([0, 1], 8)
    return load_onnx(path).graph, weights, biases, x, y


def collisions_of(graph, pairs, workers=1, budget=np.inf):
    settings = SearchSettings(max_budget=budget, workers=workers)
    prefixes = build_prefixes(graph, 10**8)
    found, previous = [], None
    for position, prefix in enumerate(prefixes):
        previous = prefix_collisions(
            graph, prefix, position, pairs, previous, settings, float("inf")
        )
        found.append(previous)
    return prefixes, found


def test_relu_collisions_are_verified_by_an_independent_forward_pass(small_net) -> None:
    graph, weights, biases, x, y = small_net
    pairs = all_pairs(x, y)
    prefixes, found = collisions_of(graph, pairs, workers=2)
    assert [p.kind for p in prefixes] == [INPUT, AFFINE, RELU, RELU, RELU]
    half = np.linalg.norm(pairs.u - pairs.v, axis=1) / 2
    for prefix, collisions in zip(prefixes, found, strict=True):
        assert np.all(np.isfinite(collisions.eps))
        fu = numpy_forward(weights, biases, collisions.u_tilde, prefix.node)
        fv = numpy_forward(weights, biases, collisions.v_tilde, prefix.node)
        np.testing.assert_allclose(fu, fv, atol=1e-6 * max(1.0, np.abs(fu).max()))
        moved = np.maximum(
            np.linalg.norm(collisions.u_tilde - pairs.u, axis=1),
            np.linalg.norm(collisions.v_tilde - pairs.v, axis=1),
        )
        np.testing.assert_allclose(collisions.eps, moved, rtol=1e-12)
        assert np.all(collisions.eps <= half * (1 + 1e-12))
    # the ReLU layers make collisions cheaper than in input space for most pairs
    assert np.mean(found[-1].eps < 0.9 * half) > 0.5


def test_collisions_carry_over_to_longer_prefixes(small_net) -> None:
    """f_k = h o f_j: a collision of f_j is one of f_k, so distances never grow with depth."""
    graph, weights, biases, x, y = small_net
    pairs = all_pairs(x, y)
    prefixes, found = collisions_of(graph, pairs)
    for shorter, longer in itertools.pairwise(found):
        assert np.all(longer.eps <= shorter.eps)
    first_relu = found[2]
    for prefix in prefixes[3:]:  # the first ReLU's collisions, pushed through more layers
        fu = numpy_forward(weights, biases, first_relu.u_tilde, prefix.node)
        fv = numpy_forward(weights, biases, first_relu.v_tilde, prefix.node)
        np.testing.assert_allclose(fu, fv, atol=1e-6 * max(1.0, np.abs(fu).max()))


def test_collision_lower_bound_never_exceeds_a_found_collision(small_net) -> None:
    graph, _, _, x, y = small_net
    pairs = all_pairs(x, y)
    prefixes, found = collisions_of(graph, pairs)
    for prefix, collisions in zip(prefixes[2:], found[2:], strict=True):
        unconditional = collision_lower_bound(prefix, pairs)
        assert np.all(unconditional <= collisions.eps)
        assert unconditional.max() > 0
        for budget in np.quantile(collisions.eps, [0.25, 0.5, 0.9]):
            conditional = collision_lower_bound(prefix, pairs, budget)
            within = collisions.eps <= budget
            assert np.all(conditional[within] <= collisions.eps[within])


def test_pruning_and_projection_do_not_change_the_collision_distances(small_net) -> None:
    graph, _, _, x, y = small_net
    pairs = all_pairs(x, y)
    budget = 1.0
    _, plain = collisions_of(graph, pairs, budget=np.inf)
    _, pruned = collisions_of(graph, pairs, budget=budget)
    for a, b in zip(plain, pruned, strict=True):
        within = a.eps <= budget
        np.testing.assert_allclose(b.eps[within], a.eps[within], rtol=1e-6)


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


# ------------------------------------------------------------- brute force 2-D


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


# ------------------------------------------------------------ conflict graph


def random_bipartite(rng, n_a, n_b, density):
    mask = rng.random((n_a, n_b)) < density
    ea, eb = np.nonzero(mask)
    return ea, eb


def test_zero_one_bound_from_matching_equals_the_lp_optimum() -> None:
    rng = np.random.default_rng(7)
    for trial in range(25):
        n_a, n_b = rng.integers(1, 12, size=2)
        ea, eb = random_bipartite(rng, n_a, n_b, rng.uniform(0.05, 0.6))
        n = n_a + n_b
        # LP of Lemma 1 for the 0-1 loss: min sum(1 - q) / n, 0 <= q <= 1, q_a + q_b <= 1
        a_ub = np.zeros((len(ea), n))
        a_ub[np.arange(len(ea)), ea] = 1
        a_ub[np.arange(len(ea)), n_a + eb] = 1
        lp = linprog(
            -np.ones(n) / n,
            A_ub=a_ub if len(ea) else None,
            b_ub=np.ones(len(ea)) if len(ea) else None,
            bounds=[(0, 1)] * n,
            method="highs",
        )
        expected = 1 + lp.fun
        assert zero_one_bound(conflict_graph(n_a, n_b, ea, eb), n) == pytest.approx(
            expected, abs=1e-9
        ), trial


def cvxpy_cross_entropy(ea, eb, n_a, n_b) -> float:
    n = n_a + n_b
    q = cp.Variable(n)
    constraints = [q <= 1] + [q[i] + q[n_a + j] <= 1 for i, j in zip(ea, eb, strict=True)]
    problem = cp.Problem(cp.Minimize(-cp.sum(cp.log(q)) / n), constraints)
    problem.solve(solver=cp.CLARABEL)
    return float(problem.value)


def test_cross_entropy_bound_is_a_dual_bound_of_lemma_1_program() -> None:
    rng = np.random.default_rng(8)
    for _ in range(8):
        n_a, n_b = rng.integers(2, 9, size=2)
        ea, eb = random_bipartite(rng, n_a, n_b, 0.3)
        if len(ea) == 0:
            continue
        ours = cross_entropy_bound(ea, eb, n_a + n_b)
        primal = cvxpy_cross_entropy(ea, eb, n_a, n_b)
        assert ours <= primal + 1e-9
        assert ours == pytest.approx(primal, rel=1e-5, abs=1e-7)
    # closed forms: one edge -> q = 1/2 each; K_{a,b} -> q = a/(a+b) on one side
    assert cross_entropy_bound(np.array([0]), np.array([0]), 10) == pytest.approx(
        2 * math.log(2) / 10, rel=1e-6
    )
    ea, eb = np.meshgrid(np.arange(3), np.arange(5), indexing="ij")
    a, b = 3, 5
    expected = -(a * math.log(a / (a + b)) + b * math.log(b / (a + b))) / 8
    assert cross_entropy_bound(ea.ravel(), eb.ravel(), 8) == pytest.approx(expected, rel=1e-6)


def test_bounds_grow_with_eps_and_with_depth(small_net) -> None:
    graph, _, _, x, y = small_net
    pairs = all_pairs(x, y)
    _, found = collisions_of(graph, pairs)
    distances = np.array([c.eps for c in found])
    grid = np.linspace(0.0, distances.max() * 1.05, 12)
    local_a = np.searchsorted(np.flatnonzero(y == 0), pairs.a)
    local_b = np.searchsorted(np.flatnonzero(y == 1), pairs.b)
    zero_one, entropy, edges = bound_curves(distances, local_a, local_b, 8, 8, grid)
    for values in (zero_one, entropy, edges):
        assert np.all(np.diff(values, axis=1) >= -1e-7)  # budget
        assert np.all(np.diff(values, axis=0) >= -1e-7)  # depth (carried collisions)
    assert zero_one[-1, -1] == pytest.approx(0.5)  # every point conflicts: perfect matching
    assert entropy[-1, -1] == pytest.approx(math.log(2), rel=1e-5)
    assert zero_one[0, 0] == 0.0


def test_layer_reading_names_the_largest_rise_and_the_saturating_prefix() -> None:
    from audit_plugins.lower_bounds import layer_contribution, saturation_prefix

    values = np.array([0.05, 0.05, 0.2, 0.55, 0.6])
    assert layer_contribution(values) == (3, pytest.approx(0.35))
    assert saturation_prefix(values) == 4
    assert saturation_prefix(np.array([0.0, 0.3, 0.7, 0.7])) == 2
    assert layer_contribution(np.zeros(3)) == (1, 0.0)


def test_box_constrained_collisions_stay_inside_and_match_cvxpy(tmp_path) -> None:
    """lower-bounds.box: the affine prefix's collision is the exact boxed optimum."""
    weights, biases = random_mlp([10, 4, 6, 2], seed=21)
    graph = load_onnx(mlp_onnx(tmp_path / "boxed.onnx", weights, biases)).graph
    rng = np.random.default_rng(22)
    x, y = rng.random((8, 10)), np.repeat([0, 1], 4)
    pairs = all_pairs(x, y)
    settings = SearchSettings(max_budget=np.inf, workers=1, bounds=(0.0, 1.0))
    prefixes = build_prefixes(graph, 10**8)
    found, previous = [], None
    for position, prefix in enumerate(prefixes):
        previous = prefix_collisions(graph, prefix, position, pairs, previous, settings, np.inf)
        found.append(previous)
        inside = [(z >= -1e-9) & (z <= 1 + 1e-9) for z in (previous.u_tilde, previous.v_tilde)]
        assert np.all(inside[0]) and np.all(inside[1])
    assert prefixes[1].kind == AFFINE
    unconstrained = affine_distances(weights[0], x[y == 0], x[y == 1]).ravel()
    assert np.all(found[1].eps >= unconstrained - 1e-9)
    assert np.any(found[1].eps > unconstrained + 1e-6)  # the box binds for some pairs
    for k in range(0, len(pairs), 5):
        u, v = pairs.u[k], pairs.v[k]
        du, dv, eps = cp.Variable(10), cp.Variable(10), cp.Variable()
        constraints = [
            cp.norm(du) <= eps,
            cp.norm(dv) <= eps,
            weights[0] @ (u + du) == weights[0] @ (v + dv),
            u + du >= 0,
            u + du <= 1,
            v + dv >= 0,
            v + dv <= 1,
        ]
        cp.Problem(cp.Minimize(eps), constraints).solve(solver=cp.CLARABEL)
        assert found[1].eps[k] == pytest.approx(float(eps.value), rel=1e-5, abs=1e-7)


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


def test_relu_chains_above_the_search_limit_only_carry_collisions(small_net) -> None:
    graph, *_ = small_net
    full = build_prefixes(graph, 10**8)
    sizes = [search_size(p.blocks) for p in full if p.kind == RELU]
    assert sizes == sorted(sizes) and sizes[0] == 10 * 6  # 10 neurons x rank 6
    # decided from the node shapes before composing, with the same value
    assert sizes == [_chain_search_size(graph, p.node) for p in full if p.kind == RELU]
    limited = build_prefixes(graph, 10**8, max_search=sizes[0])
    assert [p.kind for p in limited] == [INPUT, AFFINE, RELU, CARRIED, CARRIED]
    assert "max_search_size" in limited[-1].note
