"""Collisions of the lower-bounds plugin (``audit_plugins.lower_bounds.collisions``): the
affine closed form of Section 3.1, verified ReLU collisions, carry-over, pruning, the box.

Every check compares with an independent computation: cvxpy formulations written here from
the weights, numpy forward passes.
"""

from __future__ import annotations

import itertools

import cvxpy as cp
import numpy as np
import pytest

from audit_core.executor import MAIN_PROCESS, ProcessExecutor
from audit_core.onnx_import import load_onnx
from audit_core.testing import mlp_onnx, random_mlp
from audit_plugins.lower_bounds.collisions import (
    INLINE_WORK,
    Pairs,
    SearchSettings,
    affine_collisions,
    affine_distances,
    collision_lower_bound,
    prefix_collisions,
)
from audit_plugins.lower_bounds.prefix import (
    AFFINE,
    INPUT,
    RELU,
    build_prefixes,
)
from helpers import CORPUS
from lower_bounds_nets import all_pairs, collisions_of, make_small_net, numpy_forward


@pytest.fixture(scope="module")
def small_net(tmp_path_factory):
    """A 6-10-8-2 ReLU MLP, its graph and 8 + 8 random points."""
    return make_small_net(tmp_path_factory.mktemp("lb"))


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


def test_collision_lower_bound_is_the_same_on_workers_for_a_corpus_net() -> None:
    """mnist-net_256x2 and its 15 images: the bound's units (points' Lipschitz constants,
    pairs' projections) shipped to 2 worker processes give the serial numbers exactly."""
    graph = load_onnx(CORPUS / "mnistfc" / "mnist-net_256x2.onnx").graph
    samples = np.load(CORPUS / "mnistfc" / "mnist_samples.npz")
    x, y = np.clip(samples["x"].reshape(15, -1), 0, 1).astype(np.float64), samples["y"]
    a, b = (pos.ravel() for pos in np.triu_indices(len(y), 1))
    pairs = Pairs(x, a[y[a] != y[b]], b[y[a] != y[b]])
    relu = [p for p in build_prefixes(graph, 10**8) if p.kind == RELU]
    assert relu and len(pairs) * 256**2 >= INLINE_WORK  # shipped, not run inline
    workers = ProcessExecutor(2)
    for prefix in relu:
        for budget in (np.inf, 0.5):
            serial = collision_lower_bound(prefix, pairs, budget)
            shipped = collision_lower_bound(prefix, pairs, budget, workers)
            np.testing.assert_array_equal(shipped, serial)
            assert serial.max() > 0
    assert workers.take_units().get(MAIN_PROCESS, 0) == 0


def test_pruning_and_projection_do_not_change_the_collision_distances(small_net) -> None:
    graph, _, _, x, y = small_net
    pairs = all_pairs(x, y)
    budget = 1.0
    _, plain = collisions_of(graph, pairs, budget=np.inf)
    _, pruned = collisions_of(graph, pairs, budget=budget)
    for a, b in zip(plain, pruned, strict=True):
        within = a.eps <= budget
        np.testing.assert_allclose(b.eps[within], a.eps[within], rtol=1e-6)


def test_box_constrained_collisions_stay_inside_and_match_cvxpy(tmp_path) -> None:
    """lower-bounds.box: the affine prefix's collision is the exact boxed optimum."""
    weights, biases = random_mlp([10, 4, 6, 2], seed=21)
    graph = load_onnx(mlp_onnx(tmp_path / "boxed.onnx", weights, biases)).graph
    rng = np.random.default_rng(22)
    x, y = rng.random((8, 10)), np.repeat([0, 1], 4)
    pairs = all_pairs(x, y)
    settings = SearchSettings(max_budget=np.inf, bounds=(0.0, 1.0))
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
