"""Figures 1 and 2 of Vardi, Yehudai & Shamir (2022) in miniature (the ``kkt`` analysis).

The paper trains depth-2 ReLU nets (width 1000, and 100 ... 8000 in Figure 1(b)) on
m = d^alpha points uniform on the sphere of radius sqrt(d) with uniform labels, with
the exponential loss, full batch, lr 1e-5 multiplied by 1.1 every 100 iterations until
the loss is below 1e-30, 5 seeds. It plots the smallest c with
y_i N(x_i - y_i c z/||z||) < 0 for every i of the margin set I (10 % slack), where
z = sum_I y_i x_i, beside sqrt(d) (Figure 1), and the fraction of samples on the
margin (Figure 2). Claims: c is far below sqrt(d), does not depend on the width, and
(almost) all samples are on the margin.

Here: d in {50, 100, 200, 400}, alpha in {0.5, 1}, width in {100, 1000}, 3 seeds; data
and trainer from the model zoo (``training.sphere_data``,
``training.train_depth2_exponential``); margin set, exact c (piecewise-linear line
search, not a grid) and the KKT residual from the analysis's geometry module. To fit
in ~10 minutes on 2 cores, the learning rate grows by the paper's factor 1.1 every
``--every`` (default 5) iterations instead of 100: 20x fewer iterations for the same
geometric schedule. The peer rows re-train small configurations with the paper's exact
schedule in the same run and print the ratio of the two c's.

    python benchmarks/reproduce_kkt.py [--dims 50,100,200,400] [--seeds 3] [--every 5]
        [--widths 100,1000] [--workers 2]

The exit status is 0 either way: a claim that fails is a finding about the miniature.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from audit_model_zoo.training import sphere_data, train_depth2_exponential
from audit_plugins.kkt.geometry import (
    Depth2Net,
    kkt_fit,
    line_pieces,
    margin_direction,
    margin_set,
    negative_intervals,
    smallest_universal_flip,
)

SLACK = 0.1


@dataclass(frozen=True)
class Job:
    d: int
    alpha: float
    width: int
    seed: int
    every: int

    @property
    def m(self) -> int:
        return round(self.d**self.alpha)

    @property
    def cost(self) -> float:
        """Rough seconds: ~750 lr steps of ``every`` iterations, each a few GEMMs + overhead."""
        return 750 * self.every * (6e-10 * self.m * self.d * self.width + 8e-5)


@dataclass(frozen=True)
class Result:
    job: Job
    c: float
    on_margin: float
    flipped_all: float
    residual: float
    iterations: int
    seconds: float
    every: int


def run(job: Job) -> Result:
    """Train one net (retrying a diverged fast schedule at twice the period) and measure."""
    x, y = sphere_data(job.d, job.m, job.seed)
    start = time.perf_counter()
    every = job.every
    while True:
        try:
            fit = train_depth2_exponential(x, y, job.width, job.seed, lr_every=every)
            break
        except RuntimeError:
            if every >= 100:
                raise
            every *= 2
    seconds = time.perf_counter() - start
    net = Depth2Net(fit.W, fit.b, fit.v[None, :], np.zeros(1), np.ones(1))
    yf = y.astype(np.float64)
    margin = margin_set(yf * net(x), SLACK)
    z = margin_direction(x, yf, margin.mask)
    starts, ends = negative_intervals(line_pieces(net, x, yf, z / np.linalg.norm(z)))
    flip = smallest_universal_flip(starts[margin.mask], ends[margin.mask])
    moved = x - yf[:, None] * flip.c_inside * (z / np.linalg.norm(z))[None, :]
    flipped = float(np.mean(yf * net(moved) < 0))
    residual = kkt_fit(net, x[margin.mask], yf[margin.mask], zero_tol=0.0).residual
    iterations = int(fit.history[-1]["iteration"])
    return Result(
        job, flip.c, float(margin.mask.mean()), flipped, residual, iterations, seconds, every
    )


def _mean_std(values: list[float]) -> str:
    return f"{np.mean(values):6.3f} ± {np.std(values):5.3f}"


def print_table(results: list[Result]) -> None:
    print("Figure 1 (c vs sqrt(d)) and Figure 2 (fraction on the margin), mean ± std over seeds")
    print(
        f"{'d':>4} {'alpha':>5} {'m':>4} {'width':>5} | {'c':>15} {'sqrt(d)':>7} {'c/sqrt(d)':>9}"
        f" | {'on margin':>9} {'flipped':>7} | {'KKT res':>7} {'iters':>6} {'s/run':>6}"
    )
    for key in sorted({(r.job.d, r.job.alpha, r.job.width) for r in results}):
        rows = [r for r in results if (r.job.d, r.job.alpha, r.job.width) == key]
        d, alpha, width = key
        cs = [r.c for r in rows]
        retried = any(r.every != r.job.every for r in rows)
        print(
            f"{d:>4} {alpha:>5} {rows[0].job.m:>4} {width:>5} | {_mean_std(cs)} "
            f"{np.sqrt(d):7.3f} {np.mean(cs) / np.sqrt(d):9.3f} | "
            f"{np.mean([r.on_margin for r in rows]):9.3f} "
            f"{np.mean([r.flipped_all for r in rows]):7.3f} | "
            f"{np.mean([r.residual for r in rows]):7.3f} "
            f"{np.mean([r.iterations for r in rows]):6.0f} "
            f"{np.mean([r.seconds for r in rows]):6.1f}" + (" (retried slower)" if retried else "")
        )


def print_claims(results: list[Result]) -> None:
    print("\nClaims of the paper, checked on the miniature:")
    for alpha in sorted({r.job.alpha for r in results}):
        dims = sorted({r.job.d for r in results if r.job.alpha == alpha})
        ratios = {
            d: np.mean([r.c / np.sqrt(d) for r in results if (r.job.d, r.job.alpha) == (d, alpha)])
            for d in dims
        }
        judged = [v for d, v in ratios.items() if d >= 100] or list(ratios.values())
        shown = ", ".join(f"d={d}: {v:.3f}" for d, v in ratios.items())
        print(
            f"- c far below sqrt(d) (alpha={alpha}): mean c / sqrt(d) {shown} -> "
            f"{'holds' if max(judged) < 0.5 else 'does NOT hold'} (< 0.5 for every d >= 100, "
            "the paper's range)"
        )
    widths = sorted({r.job.width for r in results})
    spread = []
    for d, alpha in sorted({(r.job.d, r.job.alpha) for r in results}):
        means = [
            np.mean([r.c for r in results if (r.job.d, r.job.alpha, r.job.width) == (d, alpha, w)])
            for w in widths
        ]
        spread.append(max(means) / min(means))
        print(f"    d={d:>3} alpha={alpha}: mean c per width {widths} = {np.round(means, 3)}")
    worst = max(spread)
    print(
        f"- c independent of the width: largest ratio of mean c between widths = {worst:.3f} "
        f"-> {'holds' if worst < 1.25 else 'does NOT hold'} (threshold 1.25)"
    )
    for alpha in sorted({r.job.alpha for r in results}):
        low = min(r.on_margin for r in results if r.job.alpha == alpha)
        print(
            f"- most samples on the margin (alpha={alpha}): smallest fraction = {low:.3f} "
            f"-> {'holds' if low >= 0.9 else 'does NOT hold'} (paper: all for alpha = 0.5, "
            ">= 92 % otherwise)"
        )


def print_peers(fast: list[Result], paper: list[Result], every: int) -> None:
    print("\nPeer: the paper's exact schedule (lr x1.1 every 100 iterations) vs the fast one")
    for p in paper:
        f = next(r for r in fast if r.job == Job(p.job.d, p.job.alpha, p.job.width, 0, every))
        print(
            f"  d={p.job.d:>3} m={p.job.m:>3} width={p.job.width}: c paper {p.c:.4f} "
            f"({p.iterations} iters, {p.seconds:.1f}s), fast {f.c:.4f} ({f.iterations} iters, "
            f"{f.seconds:.1f}s): ratio fast/paper {f.c / p.c:.4f}, speed-up "
            f"{p.seconds / max(f.seconds, 1e-9):.1f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", default="50,100,200,400")
    parser.add_argument("--alphas", default="0.5,1")
    parser.add_argument("--widths", default="100,1000")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    dims = [int(v) for v in args.dims.split(",")]
    alphas = [float(v) for v in args.alphas.split(",")]
    widths = [int(v) for v in args.widths.split(",")]
    jobs = [
        Job(d, a, w, s, args.every)
        for d in dims
        for a in alphas
        for w in widths
        for s in range(args.seeds)
    ]
    peers = [Job(d, 0.5, 100, 0, 100) for d in dims[:2]]
    order = sorted(jobs + peers, key=lambda j: -j.cost)
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        results = dict(zip(order, pool.map(run, order), strict=True))
    wall = time.perf_counter() - start
    fast = [results[j] for j in jobs]
    print(f"{len(jobs)} trainings + {len(peers)} peers on {args.workers} workers: {wall:.0f} s\n")
    print_table(fast)
    print_claims(fast)
    print_peers(fast, [results[j] for j in peers], args.every)


if __name__ == "__main__":
    main()
