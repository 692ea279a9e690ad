"""Scaling of the analyses' independent work over the run's executor.

Three workloads, each through the Python API on one model with budgets that are unit
counts (never seconds), so every configuration does the same work:

* ``certificates``: bound-propagation radii and the complete search (quick effort,
  400-subdomain searches) on mnist-net_256x2 with the corpus images;
* ``attack-bound``: the minimal-norm search (l2) on digits_mlp3;
* ``lower-bounds``: the collision descents on mnist-net_256x2 (``max_pairs`` pairs of
  the corpus images with small noise, no time cap; digits_mlp3's descents are too small to
  leave the main process).

Each runs once untimed (first-use costs), then serially (``--workers 1``), on 2 local
worker processes and on a Dask ``LocalCluster`` of 2 one-thread workers started here;
the script prints the wall time, the speedup over serial (target: at least 1.7x on 2
idle cores) and checks that the reports agree. Then the growth with the problem size:
the attack-bound and certificates runs at n and 4n samples and the lower-bounds run at p
and 4p pairs, serially, with the fitted exponent of time ~ size^k (1: linear).

    python benchmarks/scaling.py [--samples 16] [--pairs 100] [--skip-dask] [--skip-growth]

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
    print(f"{'workload':<14}{'serial s':>10}{'2 workers':>11}{'speedup':>9}"
          f"{'dask x2':>9}{'speedup':>9}  reports agree")  # fmt: skip
    for name, settings in _workloads(args.samples, args.pairs).items():
        _run(settings)  # warm-up: first-use costs (imports, compiled problems) are not scaling
        serial, reference = _run(settings)
        local, found = _run(settings, workers=2)
        row = f"{name:<14}{serial:>10.1f}{local:>11.1f}{serial / local:>8.2f}x"
        agree = found == reference
        if cluster is not None:
            remote, found = _run(settings, scheduler=cluster.scheduler_address)
            row += f"{remote:>9.1f}{serial / remote:>8.2f}x"
            agree = agree and found == reference
        print(f"{row}  {'yes' if agree else 'NO'}", flush=True)
    if cluster is not None:
        cluster.close()
    if args.skip_growth:
        return
    print("\ngrowth (serial): time ~ size^k")
    small = _workloads(args.samples, args.pairs)
    large = _workloads(4 * args.samples, 4 * args.pairs)
    for name in small:
        t1, _ = _run(small[name])
        t4, _ = _run(large[name])
        unit = "pairs" if name == "lower-bounds" else "samples"
        print(f"{name:<14} x4 {unit}: {t1:.1f} s -> {t4:.1f} s, k = {math.log(t4 / t1, 4):.2f}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
