"""The kkt analysis's geometry (``audit_plugins.kkt.geometry``, Vardi, Yehudai & Shamir
2022): the exact line search along z, the KKT fit, the margin set."""

from __future__ import annotations

import math

import numpy as np
import pytest

from audit_core.testing import random_mlp
from audit_plugins.kkt.geometry import (
    Depth2Net,
    kkt_fit,
    line_pieces,
    line_values,
    margin_direction,
    margin_set,
    negative_intervals,
    smallest_universal_flip,
)


def _net(W, b, v, out_bias: float = 0.0) -> Depth2Net:
    return Depth2Net(
        np.asarray(W, float), np.asarray(b, float), np.asarray(v, float)[None, :],
        np.array([out_bias]), np.ones(1),
    )  # fmt: skip


def _universal_c(net: Depth2Net, x: np.ndarray, y: np.ndarray) -> float:
    """The analysis's exact c for z = sum y_i x_i over all the given points."""
    z = margin_direction(x, y, np.ones(len(x), bool))
    starts, ends = negative_intervals(line_pieces(net, x, y, z / np.linalg.norm(z)))
    return smallest_universal_flip(starts, ends).c


def _flip_back_net() -> tuple[Depth2Net, np.ndarray, np.ndarray]:
    """d = 1, g(s) = (s - 5) - 2 relu(s - 6.5) + 2 relu(s - 8.5): positive on (5, 8) and
    (9, inf). From s = 10 the point flips on (1, 2), flips back, flips for good after 5;
    from s = 7.9 it flips after 2.9. All of I is flipped first at c = 5 (not max(1, 2.9))."""
    net = _net([[1.0], [-1.0], [1.0], [1.0]], [-5, 5, -6.5, -8.5], [1, -1, -2, 2])
    return net, np.array([[10.0], [7.9]]), np.array([1.0, 1.0])


def test_flip_back_is_handled_exactly() -> None:
    net, x, y = _flip_back_net()
    starts, ends = negative_intervals(line_pieces(net, x, y, np.array([1.0])))
    np.testing.assert_allclose(starts[0, :2], [1.0, 5.0])
    np.testing.assert_allclose(ends[0, :1], [2.0])
    flip = smallest_universal_flip(starts, ends)
    assert flip.c == pytest.approx(5.0) and flip.first_flip[1] == pytest.approx(2.9)
    assert (y * net(x - y[:, None] * flip.c_inside) < 0).all()


@pytest.mark.parametrize("case", ["flip-back", "random-2", "random-6", "random-7", "random-3"])
def test_exact_line_search_matches_a_dense_grid(case) -> None:
    if case == "flip-back":
        net, x, y = _flip_back_net()  # the non-monotone case
    else:
        seed = int(case[-1])
        weights, biases = random_mlp([6, 40, 1], seed=seed)
        net = _net(weights[0], biases[0], weights[1][0], biases[1][0])
        x = np.random.default_rng(seed).normal(size=(12, 6))
        y = np.sign(net(x))  # every point classified correctly
    c = _universal_c(net, x, y)
    z = margin_direction(x, y, np.ones(len(x), bool))
    grid = np.linspace(0.0, 3 * c if np.isfinite(c) else 100.0, 60_001)
    flipped = (line_values(net, x, y, z / np.linalg.norm(z), grid) < 0).all(axis=0)
    step = grid[1]
    assert not flipped[grid < c - 1e-9].any()
    if np.isfinite(c):
        assert flipped[(grid > c + 1e-9) & (grid < c + 3 * step)].any()
    else:
        assert case == "random-3"  # one point never flips along z
    # the piecewise-linear form agrees with the direct evaluation everywhere on the grid
    pieces = line_pieces(net, x, y, z / np.linalg.norm(z))
    row = np.searchsorted(pieces.knots[0], grid[::97], side="right") - 1
    at = pieces.values[0, row] + pieces.slopes[0, row] * (grid[::97] - pieces.knots[0, row])
    np.testing.assert_allclose(at, line_values(net, x[:1], y[:1], z / np.linalg.norm(z),
                                               grid[::97])[0], atol=1e-9)  # fmt: skip


def balanced_margin_net(d: int, m: int) -> tuple[Depth2Net, np.ndarray, np.ndarray]:
    """N' of Section 5.1 on x_i = sqrt(d) e_i (i < m), balanced (||w_j|| = |v_j|): w_j =
    d^{-3/4} x_j, v_j = d^{-1/4} y_j. A KKT point of (2) with lambda_i = d^{-1/2} (each x_i
    lies on the kink of every other neuron, where the subgradient 0 is chosen)."""
    x = math.sqrt(d) * np.eye(d)[:m]
    y = np.where(np.arange(m) < m // 2, 1.0, -1.0)
    return _net(d**-0.75 * x, np.zeros(m), d**-0.25 * y), x, y


def _simplex_kkt_net(d: int, m: int) -> tuple[Depth2Net, np.ndarray, np.ndarray]:
    """A KKT point with biases: x_i a regular simplex on the sphere of radius sqrt(d)
    (<x_i, x_j> = -d/(m-1) < -1), w_j = beta lambda x_j, b_j = beta lambda, v_j = beta y_j,
    lambda = (d+1)^{-1/2}, beta^2 = lambda: neuron j is active on x_j only."""
    simplex = np.eye(m) - 1.0 / m
    x = np.zeros((m, d))
    x[:, :m] = simplex / np.linalg.norm(simplex, axis=1, keepdims=True) * math.sqrt(d)
    y = np.where(np.arange(m) % 2 == 0, 1.0, -1.0)
    lam = (d + 1) ** -0.5
    beta = math.sqrt(lam)
    return _net(beta * lam * x, np.full(m, beta * lam), beta * y), x, y


def test_kkt_residual_is_zero_at_constructed_kkt_points_and_large_at_random() -> None:
    net, x, y = balanced_margin_net(10, 10)
    fit = kkt_fit(net, x, y, zero_tol=1e-9)
    assert fit.residual < 1e-10 and not fit.with_bias
    np.testing.assert_allclose(fit.lam, 10**-0.5, rtol=1e-9)
    net, x, y = _simplex_kkt_net(12, 5)
    np.testing.assert_allclose(y * net(x), 1.0, rtol=1e-12)
    fit = kkt_fit(net, x, y, zero_tol=1e-9)
    assert fit.residual < 1e-10 and fit.with_bias and fit.kinks == 0
    assert fit.imbalance < 1e-12
    np.testing.assert_allclose(fit.lam, 13**-0.5, rtol=1e-9)
    # the same nets scaled (homogeneity) and random nets
    assert kkt_fit(net.scaled(7.0), x, y).residual < 1e-10
    weights, biases = random_mlp([12, 30, 1], seed=3)
    random_net = _net(weights[0], biases[0], weights[1][0])
    labels = np.sign(random_net(x))
    assert kkt_fit(random_net, x, labels, zero_tol=1e-5).residual > 0.3


def test_margin_set_follows_the_slack() -> None:
    margins = np.array([2.0, 2.1, 2.3, 4.0, -1.0])
    result = margin_set(margins, 0.1)
    assert result.gamma == 2.0 and result.mask.tolist() == [True, True, False, False, False]
    assert margin_set(margins, 1.0).mask.tolist() == [True, True, True, True, False]
