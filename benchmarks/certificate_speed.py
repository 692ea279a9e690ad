"""Speed of the batched simplex certificate (Singla & Feizi 2019, Table 1) against its floor.

The certificate (``audit_plugins.certificates.radii.simplex_certificate``: Algorithm 1 via
``audit_core.linearize``, face distances P_min, decision distances d_min, safety
margin, all float64) is timed per sample on

* a 784-1024-1024-1024-10 ReLU MLP with random weights (the paper's MNIST 3x[1024]),
* the corpus model mnist-net_256x2 (784-256-256-10),

beside its *floor*: plain float64 matrix products doing the same number of FLOPs in
the same run, with the same threads. Algorithm 1 starts from ``C = W1`` (the same for
every sample) and then multiplies ``C <- W_i diag(theta) C`` for every later layer, i.e.
``N * D * out_i * in_i`` multiply-adds per layer; the floor times
``(N D x in_i) @ (in_i x out_i)`` products of random matrices of exactly those shapes.
Each timing is the best of ``--repeats`` interleaved runs (the machine is shared).

    python benchmarks/certificate_speed.py [--batch 32] [--repeats 3]

Target: the certificate within 2x of the floor. The paper reports 3.7 ms per sample
for 3x[1024] on its own hardware.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from audit_core.onnx_import import load_onnx
from audit_core.testing import mlp_onnx, random_mlp
from audit_plugins.certificates.radii import simplex_certificate

CORPUS = Path(
    os.environ.get("AUDIT_CORPUS", Path(__file__).resolve().parents[2] / "shared" / "corpus")
)


def certificate_seconds(graph, x: np.ndarray) -> float:
    clock = time.perf_counter()
    simplex_certificate(graph, x)
    return time.perf_counter() - clock


def floor_seconds(shapes: list[tuple[int, int]], rows: int, rng: torch.Generator) -> float:
    """Plain float64 products ``(rows x in) @ (in x out)`` for each ``(out, in)`` shape."""
    operands = [
        (
            torch.randn(rows, n_in, dtype=torch.float64, generator=rng),
            torch.randn(n_in, n_out, dtype=torch.float64, generator=rng),
        )
        for n_out, n_in in shapes
    ]
    clock = time.perf_counter()
    for a, b in operands:
        torch.matmul(a, b)
    return time.perf_counter() - clock


def bench(name: str, graph, batch: int, repeats: int) -> tuple[float, float]:
    view = graph.dense_view()
    dim = graph.input_size
    shapes = [w.shape for w in view.weights[1:]]  # C <- W_i diag(theta) C, i >= 2
    macs = batch * dim * sum(o * i for o, i in shapes)
    x = np.random.default_rng(0).random((batch, dim))
    rng = torch.Generator().manual_seed(0)
    certificate_seconds(graph, x[:2])  # warm-up (weight caches, allocator)
    cert, floor = np.inf, np.inf
    for _ in range(repeats):
        cert = min(cert, certificate_seconds(graph, x))
        floor = min(floor, floor_seconds(shapes, batch * dim, rng))
    per_cert, per_floor = 1e3 * cert / batch, 1e3 * floor / batch
    print(
        f"{name:<28}{batch:>6}{macs / batch / 1e9:>12.3f}{per_cert:>14.2f}{per_floor:>14.2f}"
        f"{cert / floor:>8.2f}"
    )
    return per_cert, per_floor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="simplex certificate speed vs its floor")
    parser.add_argument("--batch", type=int, default=32, help="samples per certificate call")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    args = parser.parse_args(argv)
    print(f"torch threads: {torch.get_num_threads()}; float64")
    print(
        f"{'model':<28}{'batch':>6}{'GMAC/sample':>12}{'cert ms/smp':>14}{'floor ms/smp':>14}"
        f"{'ratio':>8}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        weights, biases = random_mlp([784, 1024, 1024, 1024, 10], seed=0)
        big = load_onnx(mlp_onnx(Path(tmp) / "mlp3x1024.onnx", weights, biases)).graph
        ratios = [bench("784-1024-1024-1024-10", big, args.batch, args.repeats)]
    small = load_onnx(CORPUS / "mnistfc" / "mnist-net_256x2.onnx").graph
    ratios.append(bench("mnist-net_256x2", small, 4 * args.batch, args.repeats))
    worst = max(c / f for c, f in ratios)
    print(f"\nworst ratio certificate / floor: {worst:.2f} (target <= 2)")
    print(
        f"paper (Table 1, MNIST 3x[1024], simplex): 3.7 ms per sample; here {ratios[0][0]:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
