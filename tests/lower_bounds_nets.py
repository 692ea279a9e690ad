"""Shared by the lower-bounds tests (importable as ``lower_bounds_nets``): a small ReLU MLP
with random points, all pairs of a two-class set, every prefix's collisions, a numpy
forward pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from audit_core.executor import ProcessExecutor
from audit_core.onnx_import import load_onnx
from audit_core.testing import mlp_onnx, random_mlp
from audit_plugins.lower_bounds.collisions import Pairs, SearchSettings, prefix_collisions
from audit_plugins.lower_bounds.prefix import build_prefixes


def make_small_net(folder: Path):
    """A 6-10-8-2 ReLU MLP, its graph and 8 + 8 random points."""
    weights, biases = random_mlp([6, 10, 8, 2], seed=5)
    path = mlp_onnx(folder / "net.onnx", weights, biases)
    x = np.random.default_rng(6).normal(size=(16, 6))
    y = np.repeat([0, 1], 8)
    return load_onnx(path).graph, weights, biases, x, y


def numpy_forward(weights, biases, x, layers):
    """The MLP's first ``layers`` nodes after the input (Gemm, Relu, Gemm, ...) in numpy."""
    h = x
    for step in range(layers):
        i = step // 2
        h = h @ weights[i].T + biases[i] if step % 2 == 0 else np.maximum(h, 0.0)
    return h


class _Eager(ProcessExecutor):
    """Local processes even for work the analysis would keep in its own process."""

    def map(self, function, units, **options):
        return super().map(function, units, **{**options, "inline": False})


def all_pairs(x, y) -> Pairs:
    a, b = np.meshgrid(np.flatnonzero(y == 0), np.flatnonzero(y == 1), indexing="ij")
    return Pairs(np.asarray(x, dtype=np.float64), a.ravel(), b.ravel())


def collisions_of(graph, pairs, workers=1, budget=np.inf):
    """Every prefix's collisions; the descents on ``workers`` local processes (not
    ``inline``: every pair is shipped, however small the work)."""
    settings = SearchSettings(max_budget=budget)
    executor = _Eager(workers) if workers > 1 else None
    prefixes = build_prefixes(graph, 10**8)
    found, previous = [], None
    for position, prefix in enumerate(prefixes):
        previous = prefix_collisions(
            graph, prefix, position, pairs, previous, settings, float("inf"), None, executor
        )
        found.append(previous)
    return prefixes, found
