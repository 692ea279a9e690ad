"""Exact certified l2 radii on the model zoo's MLPs (issue target: the search closes the
gap to an adversarial example on at least 90% of the samples within 10 s per sample).

For each zoo MLP the certificates analysis runs with ``effort = thorough`` and a 10 s
budget per search through the Python API (``mnist-net_256x2``: the corpus's VNN-COMP
network on its 15 MNIST images within [0, 1]); it prints, per model, the fraction of
correctly classified samples whose certified radius is within ``exact_tolerance`` (1%)
of a verified adversarial example (``search_exact``), the median certified / adversarial
ratio, and the analysis's time per sample. ``--samples`` sets the sample count (default
30; 100 for the full run).

    python benchmarks/exact_radii.py [--samples 30] [--models digits_mlp2,mnist-net_256x2]
        [--search-seconds 10]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

MLPS = (
    "digits_mlp2",
    "digits_mlp3",
    "binary_fc3_benign",
    "binary_fc3_pgd",
    "sphere_depth2",
    "nonneg_2layer",
    "mnist-net_256x2",
)
CORPUS = Path(
    os.environ.get("AUDIT_CORPUS", Path(__file__).resolve().parents[2] / "shared" / "corpus")
)


def measure(model: str, samples: int, seconds: float = 10.0) -> tuple[float, float, float, int]:
    import audit_model_zoo as zoo
    import robustness_audit as ra

    options = {"certificates": {"effort": "thorough", "search_seconds": seconds}}
    clock = time.perf_counter()
    if model.startswith("mnist-net"):
        images = np.load(CORPUS / "mnistfc" / "mnist_samples.npz")
        x = np.clip(images["x"][:samples], 0.0, 1.0)
        report = ra.audit(
            CORPUS / "mnistfc" / f"{model}.onnx", x, labels=images["y"][:samples],
            bounds=(0.0, 1.0), only=["certificates"], options=options,
        )  # fmt: skip
    else:
        report = ra.audit(
            zoo.model_path(model), only=["certificates"], samples=samples, options=options
        )
    seconds = time.perf_counter() - clock
    arrays = report.arrays_for("certificates")
    correct = arrays["predicted"] == arrays["label"]
    exact = float(np.mean(arrays["search_exact"][correct])) if correct.any() else float("nan")
    ratio = arrays["ratio"][correct]
    ratio = ratio[np.isfinite(ratio)]
    median = float(np.median(ratio)) if ratio.size else float("nan")
    return exact, median, seconds / len(correct), int(correct.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--models", default=",".join(MLPS))
    parser.add_argument("--search-seconds", type=float, default=10.0, help="per search")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    print(f"{'model':<20}{'samples':>8}{'exact':>8}{'median ratio':>14}{'s/sample':>10}")
    for model in args.models.split(","):
        exact, median, per_sample, count = measure(model, args.samples, args.search_seconds)
        print(f"{model:<20}{count:>8}{exact:>8.1%}{median:>14.4f}{per_sample:>10.2f}", flush=True)


if __name__ == "__main__":
    main()
