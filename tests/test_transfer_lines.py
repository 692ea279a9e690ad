"""Exact line searches (``audit_plugins.transfer.lines``) against dense grids: depth-2 nets,
single-logit ties, halfspace exits."""

from __future__ import annotations

import numpy as np
import pytest

from audit_core.testing import random_mlp
from audit_plugins.transfer.lines import Depth2, first_exit_halfspaces, first_flip_depth2


def _grid_first_flip(logits_fn, x, v, y, grid):
    flips = np.stack([logits_fn(x + t * v).argmax(1) != y for t in grid])  # (G, L)
    return np.where(flips.any(0), grid[flips.argmax(0)], np.inf)


@pytest.mark.parametrize("sizes", [[6, 12, 3], [4, 9, 1], [5, 7, 2], [3, 4]])
def test_exact_line_search_agrees_with_a_dense_grid(sizes: list[int]) -> None:
    rng = np.random.default_rng(sum(sizes))
    weights, biases = random_mlp(sizes, seed=len(sizes) + sizes[1])
    net = Depth2.from_dense(tuple(weights), tuple(biases))
    x = rng.standard_normal((60, sizes[0]))
    v = rng.standard_normal((60, sizes[0]))
    y = net.logits(x).argmax(1)
    exact = first_flip_depth2(net, x, v, y)
    step = 1e-3
    grid = np.arange(1, 4001) * step
    coarse = _grid_first_flip(net.logits, x, v, y, grid)
    seen = np.isfinite(coarse)
    assert seen.sum() >= 20
    assert (exact[seen] <= coarse[seen] + 1e-12).all()  # nothing flips before the exact t
    assert (coarse[seen] - exact[seen] <= step + 1e-12).all()  # the grid finds it next
    after = x + (exact * (1 + 1e-9) + 1e-12)[:, None] * v
    finite = np.isfinite(exact)
    assert (net.logits(after[finite]).argmax(1) != y[finite]).all()
    assert (exact[~seen] > grid[-1] - step).all()  # flips beyond the grid only


def test_single_logit_ties_go_to_class_zero() -> None:
    net = Depth2.from_dense((np.array([[1.0, 0.0]]),), (np.array([-1.0]),))  # g = x_1 - 1
    t = first_flip_depth2(net, np.zeros((1, 2)), np.array([1.0, 0.0]), np.array([0]))
    assert t[0] == pytest.approx(1.0)  # class 1 needs g > 0: the infimum is g = 0
    t = first_flip_depth2(net, np.array([[2.0, 0.0]]), np.array([-1.0, 0.0]), np.array([1]))
    assert t[0] == pytest.approx(1.0)  # g = 0 is already class 0


def test_halfspace_exit_agrees_with_a_dense_grid() -> None:
    rng = np.random.default_rng(11)
    H, h = rng.standard_normal((7, 3)), -np.abs(rng.standard_normal(7)) - 0.5
    x = 0.1 * rng.standard_normal((40, 3))
    x = x[(x @ H.T + h <= 0).all(1)]
    v = rng.standard_normal((len(x), 3))
    exact = first_exit_halfspaces(H, h, x, v)
    grid = np.arange(1, 20001) * 1e-3
    inside = np.stack([((x + t * v) @ H.T + h <= 0).all(1) for t in grid])
    first_out = np.where((~inside).any(0), grid[(~inside).argmax(0)], np.inf)
    assert np.isfinite(first_out).all()
    np.testing.assert_array_less(exact - 1e-12, first_out)
    assert (first_out - exact <= 1e-3 + 1e-12).all()
