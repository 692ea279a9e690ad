"""Conflict graphs and the bounds of Lemma 1 (``audit_plugins.lower_bounds.graph``), against
linear programs and cvxpy solves.
"""

from __future__ import annotations

import math

import cvxpy as cp
import numpy as np
import pytest
from scipy.optimize import linprog

from audit_plugins.lower_bounds.graph import (
    bound_curves,
    conflict_graph,
    cross_entropy_bound,
    zero_one_bound,
)
from lower_bounds_nets import all_pairs, collisions_of, make_small_net


@pytest.fixture(scope="module")
def small_net(tmp_path_factory):
    """A 6-10-8-2 ReLU MLP, its graph and 8 + 8 random points."""
    return make_small_net(tmp_path_factory.mktemp("lb"))


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
