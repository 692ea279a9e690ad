"""Scaling of the analyses' independent work over the run's executor.

Three workloads, each through the Python API on one model with budgets that are unit
counts (never seconds), so every configuration does the same work:

* ``certificates``: bound-propagation radii and the complete search (quick effort,
  400-subdomain searches) on mnist-net_256x2 with the corpus images;
* ``attack-bound``: the minimal-norm search (l2) on digits_mlp3;
* ``lower-bounds``: the collision descents on mnist-net_256x2 (``max_pairs`` pairs of
  the corpus images with small noise, no time cap; digits_mlp3's descents are too small to
  leave the main process).

Each runs once untimed in every configuration (first-use costs: imports, compiled
problems, starting the local worker processes, about 2-3 s once per audit), then
serially (``--workers 1``), on 2 local worker processes and on a Dask ``LocalCluster`` of
2 one-thread workers started here (with Dask's default worker settings), ``--repeat``
times in turn; the script prints the best wall time of each (the machine is shared: the
best run is the one least disturbed by other work, as ``timeit`` reports it), the
speedup over serial (target: at least 1.7x on 2 idle cores) and checks that the reports
agree. The peer: the speedup of two processes over one on pure compute (numpy matrix
products, no audit code), measured in the same run just before and after each workload
(the best of both), the machine's ceiling at that time: a speedup near it means the
executor loses nothing. Then the growth with the problem size: the attack-bound and
certificates runs at n and 4n samples and the lower-bounds run at p and 4p pairs,
serially, with the fitted exponent of time ~ size^k (1: linear).

    python benchmarks/scaling.py [--samples 16] [--pairs 100] [--repeat 5] [--skip-dask]
                                 [--skip-growth]

The main process runs torch on one thread, as the CLI does (``audit`` sets it): with the
library default (all cores) the serial baseline would already use both cores in its
matrix products.

The machine is shared: quote the load average printed beside the numbers.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import numpy as np

CORPUS = Path(
    os.environ.get("AUDIT_CORPUS", Path(__file__).resolve().parents[2] / "shared" / "corpus")
)


def _workloads(samples: int, pairs: int) -> dict[str, dict]:
    import audit_model_zoo as zoo

    images = np.load(CORPUS / "mnistfc" / "mnist_samples.npz")
    x = np.clip(np.resize(images["x"], (samples, 784)), 0.0, 1.0)
    y = np.resize(images["y"], samples)
    mlp3 = zoo.model_path("digits_mlp3")
    return {
        "certificates": {
            "models": CORPUS / "mnistfc" / "mnist-net_256x2.onnx",
            "data": (x, y),
            "bounds": (0.0, 1.0),
            "eps": [0.5],
            "only": ["certificates"],
            "options": {
                "certificates": {
                    "search_seconds": math.inf,
                    "search_total_seconds": math.inf,
                    "propagation_seconds": math.inf,
                }
            },
        },
        "attack-bound": {"models": mlp3, "samples": samples, "only": ["attack-bound"]},
        "lower-bounds": {
            "models": CORPUS / "mnistfc" / "mnist-net_256x2.onnx",
            "data": _noisy_images(images, max(samples, 40)),
            "bounds": (0.0, 1.0),
            "only": ["lower-bounds"],
            "options": {"lower-bounds": {"max_pairs": pairs, "max_seconds": math.inf}},
        },
    }


def _noisy_images(images, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` corpus images (repeated, with small uniform noise: distinct points)."""
    noise = np.random.default_rng(0).uniform(0.0, 0.01, (count, 784))
    x = np.clip(np.resize(images["x"], (count, 784)) + noise, 0.0, 1.0)
    return x, np.resize(images["y"], count)


def _run(settings: dict, scheduler: str | None = None, workers: int = 1) -> tuple[float, dict]:
    import robustness_audit as ra

    settings = dict(settings)
    models, data = settings.pop("models"), settings.pop("data", None)
    clock = time.perf_counter()
    if scheduler:
        report = ra.audit(models, data, **settings, scheduler=scheduler)
    else:
        report = ra.audit(models, data, **settings, workers=workers)
    return time.perf_counter() - clock, _metrics(report)


def _best_times(
    settings: dict, configurations: dict[str, dict], repeat: int
) -> tuple[dict[str, float], list[dict]]:
    """The best of ``repeat`` wall times per configuration (run in turn, so that a busy
    spell of the machine hits all of them alike), and every run's metrics."""
    best = dict.fromkeys(configurations, math.inf)
    reports = []
    for _ in range(repeat):
        for label, options in configurations.items():
            seconds, metrics = _run(settings, **options)
            best[label] = min(best[label], seconds)
            reports.append(metrics)
    return best, reports


CEILING_PRODUCTS = 1500
"""Matrix products (300 x 300, float64) per task of the machine-ceiling peer: about 1 s."""


def _products(count: int) -> None:
    """Pure compute without audit code: ``count`` float64 matrix products on one thread."""
    from threadpoolctl import threadpool_limits

    matrix = np.random.default_rng(0).normal(size=(300, 300))
    with threadpool_limits(1):
        for _ in range(count):
            matrix @ matrix


def _ceiling(pool, repeat: int) -> float:
    """The speedup two processes (``pool``) get over one on pure compute right now (best
    of ``repeat``): what this machine's two cores allow at the moment (a shared host's
    cores are not always two whole cores), the peer a workload's speedup is compared with."""
    list(pool.map(_products, [1, 1]))  # the pool's processes are started
    serial = parallel = math.inf
    for _ in range(repeat):
        clock = time.perf_counter()
        _products(2 * CEILING_PRODUCTS)
        serial = min(serial, time.perf_counter() - clock)
        clock = time.perf_counter()
        list(pool.map(_products, [CEILING_PRODUCTS, CEILING_PRODUCTS]))
        parallel = min(parallel, time.perf_counter() - clock)
    return serial / parallel


def _metrics(report) -> dict:
    return {
        (f.id, m.name): m.value
        for f in report.findings
        for m in f.metrics
        if "seconds" not in m.name and isinstance(m.value, (int, float))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5, help="runs per configuration")
    parser.add_argument("--skip-dask", action="store_true")
    parser.add_argument("--skip-growth", action="store_true")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)  # as the CLI runs: the serial baseline is one core, not two
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    cluster = None
    if not args.skip_dask:
        from distributed import LocalCluster

        cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(2)
    print(f"{'workload':<14}{'serial s':>10}{'2 workers':>11}{'speedup':>9}{'ceiling':>9}"
          f"{'dask x2':>9}{'speedup':>9}  reports agree")  # fmt: skip
    for name, settings in _workloads(args.samples, args.pairs).items():
        ceiling = _ceiling(pool, args.repeat)
        configurations = {"serial": {}, "local": {"workers": 2}}
        if cluster is not None:
            configurations["dask"] = {"scheduler": cluster.scheduler_address}
        for options in configurations.values():  # warm-up: first-use costs are not scaling
            _run(settings, **options)
        best, reports = _best_times(settings, configurations, args.repeat)
        serial, local = best["serial"], best["local"]
        speedup = serial / local
        ceiling = max(ceiling, _ceiling(pool, args.repeat))  # before and after the runs
        row = f"{name:<14}{serial:>10.1f}{local:>11.1f}{speedup:>8.2f}x{ceiling:>8.2f}x"
        if cluster is not None:
            row += f"{best['dask']:>9.1f}{serial / best['dask']:>8.2f}x"
        agree = all(report == reports[0] for report in reports)
        print(f"{row}  {'yes' if agree else 'NO'}", flush=True)
    pool.shutdown()
    if cluster is not None:
        cluster.close()
    if args.skip_growth:
        return
    print("\ngrowth (serial): time ~ size^k")
    small = _workloads(args.samples, args.pairs)
    large = _workloads(4 * args.samples, 4 * args.pairs)
    for name in small:
        t1 = _best_times(small[name], {"serial": {}}, args.repeat)[0]["serial"]
        t4 = _best_times(large[name], {"serial": {}}, args.repeat)[0]["serial"]
        unit = "pairs" if name == "lower-bounds" else "samples"
        print(f"{name:<14} x4 {unit}: {t1:.1f} s -> {t4:.1f} s, k = {math.log(t4 / t1, 4):.2f}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
