"""Speed of collision finding (lower-bounds analysis), each beside a peer in the same run.

(a) Affine prefix, all pairs of 1,000 + 1,000 points: the closed form of Section
    3.1 (row space of the composed map, data projected once, all distances from
    one matrix product) beside ONE matrix product of the same shape,
    (1000 x D) @ (D x 1000): the floor of any all-pairs computation on these
    points. Target: within 3x of the floor. Printed with all BLAS threads and
    with one (the steadier figure on a busy shared machine).
(b) ReLU prefix, collisions per pair: the analysis's search (exact equality-only
    solve with constraint generation, Clarabel called directly, far pattern rows
    left out, the row-space projection of Appendix D.1, pruning of pairs that
    cannot collide within the largest budget, all cores) beside the naive way: the
    same descent (Algorithm 2 / Appendix C) with a fresh cvxpy problem built and
    solved at every step, all pattern rows, no projection, no pruning, one core.
    Target: at least 10x faster per pair. Both give the same collision distances
    (checked on the pairs the naive way runs; pruned pairs must be beyond budget).

    python benchmarks/collision_speed.py [--naive-pairs 24] [--repeat 15]

Timings are best-of-``repeat`` wall clock on a shared machine: read the ratios.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

import audit_model_zoo as zoo
from audit_core.onnx_import import load_onnx
from audit_plugins.lower_bounds.collisions import (
    Pairs,
    SearchSettings,
    affine_distances,
    best_candidates,
    relu_collisions,
    worker_count,
)
from audit_plugins.lower_bounds.descent import DescentSettings, descend, make_chain
from audit_plugins.lower_bounds.prefix import build_prefixes

CORPUS = Path(os.environ.get("AUDIT_CORPUS", Path(__file__).resolve().parents[2] / "shared/corpus"))
CORPUS_MNIST = CORPUS / "mnistfc"


def best_times(functions, repeat: int) -> list[float]:
    """Best wall-clock time of each function, the functions interleaved in every round
    (so that both see the same load on a shared machine)."""
    best = [float("inf")] * len(functions)
    for _ in range(repeat):
        for i, function in enumerate(functions):
            start = time.perf_counter()
            function()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def affine_case(label: str, weight: np.ndarray, repeat: int, rng: np.random.Generator) -> None:
    dim = weight.shape[1]
    xa, xb = rng.random((1000, dim)), rng.random((1000, dim))
    distances = affine_distances(weight, xa, xb)
    print(f"  {label} (L {weight.shape[0]}x{dim}), median eps_f {np.median(distances):.3f}:")
    for threads in ("all", 1):
        with threadpool_limits(None if threads == "all" else threads):
            ours, floor = best_times(
                [lambda: affine_distances(weight, xa, xb), lambda: xa @ xb.T], repeat
            )
        print(
            f"    BLAS threads {threads!s:>3}: all 10^6 pairs {ours * 1e3:6.1f} ms, one "
            f"(1000x{dim})@({dim}x1000) product {floor * 1e3:6.1f} ms -> {ours / floor:4.2f}x "
            f"the floor (target <= 3x)"
        )


def part_a(repeat: int) -> None:
    print("(a) affine prefix, all pairs of 1,000 + 1,000 points (row space included)")
    rng = np.random.default_rng(0)
    mnist = load_onnx(CORPUS_MNIST / "mnist-net_256x2.onnx").graph
    weight = build_prefixes(mnist, 5e7)[1].blocks[0].weight
    affine_case("mnist-net_256x2, first Gemm", weight, repeat, rng)
    fc3 = load_onnx(zoo.model_path("binary_fc3_benign")).graph
    weight = build_prefixes(fc3, 5e7)[1].blocks[0].weight
    affine_case("binary_fc3_benign, first Gemm", weight, repeat, rng)


def pairs_of(name: str) -> tuple[object, Pairs]:
    graph = load_onnx(zoo.model_path(name)).graph
    data = np.load(zoo.dataset_path(name))
    x, y = data["x"].reshape(len(data["x"]), -1).astype(np.float64), data["y"]
    a, b = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
    grid_a, grid_b = np.meshgrid(a, b, indexing="ij")
    return graph, Pairs(x, grid_a.ravel(), grid_b.ravel())


def naive(prefix, pairs: Pairs, count: int) -> tuple[float, np.ndarray]:
    """Seconds per pair and eps of the first ``count`` pairs, the naive way."""
    chain = make_chain(prefix.blocks, None)
    settings = DescentSettings(solver="cvxpy", fast=False, drop_far_rows=False)
    start = time.perf_counter()
    eps = []
    for u, v in zip(pairs.u[:count], pairs.v[:count], strict=True):
        result = descend(chain, u, v, settings)
        budget = np.maximum(
            np.linalg.norm(result.u_tilde - u, axis=1), np.linalg.norm(result.v_tilde - v, axis=1)
        )
        eps.append(budget.min() if len(budget) else np.inf)
    return (time.perf_counter() - start) / count, np.array(eps)


def part_b(naive_pairs: int, budget: float) -> None:
    print(
        f"\n(b) ReLU prefixes, collisions per pair (largest budget {budget:g}, "
        f"{worker_count(0)} cores)"
    )
    graph, pairs = pairs_of("binary_fc3_benign")
    for prefix in build_prefixes(graph, 5e7):
        if prefix.kind != "relu":
            continue
        sub = graph.prefix(prefix.node)
        settings = SearchSettings(max_budget=budget)
        start = time.perf_counter()
        known = np.full(len(pairs), np.inf)
        finished, stats = relu_collisions(prefix, pairs, known, settings, float("inf"))
        eps, _, _, rejected = best_candidates(sub, pairs, finished, settings)
        ours = (time.perf_counter() - start) / len(pairs)
        per_pair, eps_naive = naive(prefix, pairs, naive_pairs)
        head = eps[:naive_pairs]
        searched = np.isfinite(head)
        agree = float(np.max(np.abs(head[searched] - eps_naive[searched]), initial=0.0))
        pruned_ok = bool(np.all(eps_naive[~searched] > budget))
        print(
            f"  binary_fc3_benign {prefix.name:<15} {len(pairs)} pairs: ours "
            f"{ours * 1e3:6.2f} ms/pair (pruned {stats['pruned']}, searched "
            f"{stats['searched']}, {stats['cone_steps']} cone steps, rejected {rejected}); "
            f"naive {per_pair * 1e3:7.1f} ms/pair on {naive_pairs} pairs -> "
            f"{per_pair / ours:5.1f}x faster (target >= 10x); max |eps diff| {agree:.1e} on "
            f"{int(searched.sum())} shared pairs, pruned ones beyond budget in naive: {pruned_ok}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--naive-pairs", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--budget", type=float, default=1.0, help="largest eps of the grid")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
    part_a(args.repeat)
    part_b(args.naive_pairs, args.budget)


if __name__ == "__main__":
    main()
