"""Figure 4 of Charles, Rosenberg & Papailiopoulos (2019) in miniature, through ``audit``.

The paper trains 50 linear SVMs (LinearSVC) and 50 ReLU nets on random 10000-image
subsets of MNIST, makes adversarial examples on each with 40 iterations of FGSM
(step 0.01, linf eps 0.01 ... 0.40) on 1000 test images, and plots the average
accuracy of each family under SVM-made, NN-made and random perturbations.

Here: the model zoo's transfer families (3 LinearSVCs ``digits_svm_part*`` and 3
MLPs 64-32-10 ``digits_mlp2_part*``, each trained on a disjoint third of the 8x8
digits training split), the whole digits test split (450 images), the same attack
and eps grid, run by the ``model-transfer`` analysis in one ``audit`` call. A model
is never evaluated on its own examples (transfer only). Error bars of the paper
become the min/max over the targets of a family.

    python benchmarks/reproduce_transfer.py [--step 0.01] [--samples 450]

Prints the two panels as tables and whether the paper's orderings hold (the exit
status is 0 either way: a failed ordering is a finding about the miniature, not a bug).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import audit_model_zoo as zoo
from audit_core.console import QuietUI
from audit_core.exports import RUN_WIDE
from audit_core.plugins import PluginHost
from audit_core.runner import run_audit
from audit_core.settings import Settings

SVMS = tuple(f"digits_svm_part{k}" for k in range(3))
NNS = tuple(f"digits_mlp2_part{k}" for k in range(3))


def transfer_arrays(step: float, samples: int) -> dict[str, np.ndarray]:
    """Run ``audit SVMS NNS --only model-transfer`` in-process; return its export."""
    grid = tuple(round(step * k, 6) for k in range(1, round(0.4 / step) + 1))
    settings = Settings(
        models=tuple(str(zoo.model_path(n)) for n in (*SVMS, *NNS)),
        only=("model-transfer",),
        samples=samples,
        norm="linf",
        eps=(grid[len(grid) // 4],),
        analysis_options={
            "model-transfer": {"norms": ["linf"], "linf_eps": list(grid), "steps": 40}
        },
    )
    host = PluginHost()
    host.load_entry_points()
    outcome = run_audit(settings, host, QuietUI())
    return outcome.exports[(RUN_WIDE, "model-transfer")]


def panel(
    accuracy: np.ndarray, names: list[str], targets: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """Mean/min/max over ``targets`` of the accuracy under SVM-made, NN-made (other models
    only) and random perturbations; each ``(3, G)`` = mean, min, max."""
    t_index = [names.index(t) for t in targets]
    out = {}
    for kind, sources in (("SVM-made", SVMS), ("NN-made", NNS)):
        per_target = []
        for t, target in zip(t_index, targets, strict=True):
            rows = [names.index(s) for s in sources if s != target]
            per_target.append(accuracy[rows, t].mean(axis=0))
        out[kind] = _stats(np.array(per_target))
    out["random"] = _stats(accuracy[-1, t_index])
    return out


def _stats(per_target: np.ndarray) -> np.ndarray:
    return np.stack([per_target.mean(0), per_target.min(0), per_target.max(0)])


def print_panel(title: str, eps: np.ndarray, curves: dict[str, np.ndarray], every: int) -> None:
    print(f"\n{title}")
    header = "  eps  " + "".join(f"| {k:^21} " for k in curves)
    print(header)
    print("-" * len(header))
    for g in range(every - 1, len(eps), every):
        cells = "".join(f"| {c[0, g]:.3f} [{c[1, g]:.3f}, {c[2, g]:.3f}] " for c in curves.values())
        print(f" {eps[g]:.2f} {cells}")


def grid_means(svm: dict[str, np.ndarray], nn: dict[str, np.ndarray]) -> dict[str, float]:
    """Accuracy of each family under each kind of perturbation, averaged over the grid."""
    return {
        f"{family}:{kind}": float(curve[0].mean())
        for family, panel_ in (("svm", svm), ("nn", nn))
        for kind, curve in panel_.items()
    }


def orderings(mean: dict[str, float]) -> list[tuple[str, bool]]:
    """The paper's qualitative claims, on accuracies averaged over the eps grid."""
    nn_gap = mean["nn:random"] - mean["nn:NN-made"]
    svm_gap_on_nn = mean["nn:random"] - mean["nn:SVM-made"]
    return [
        (
            "(a) SVM examples transfer to SVMs: accuracy under SVM-made << random",
            mean["svm:SVM-made"] < mean["svm:random"] - 0.1,
        ),
        (
            "(a) NN examples transfer to SVMs: accuracy under NN-made << random",
            mean["svm:NN-made"] < mean["svm:random"] - 0.1,
        ),
        (
            "(a) on SVMs, SVM examples are more effective than NN examples",
            mean["svm:SVM-made"] < mean["svm:NN-made"],
        ),
        (
            "(b) NN examples transfer to NNs: accuracy under NN-made << random",
            mean["nn:NN-made"] < mean["nn:random"] - 0.1,
        ),
        (
            "(b) on NNs, SVM examples are less effective than NN examples",
            mean["nn:SVM-made"] > mean["nn:NN-made"],
        ),
        (
            "(b) SVM examples barely beat random against NNs (gap below half the NN-made gap)",
            0 <= svm_gap_on_nn < 0.5 * nn_gap,
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step", type=float, default=0.01, help="linf eps grid step")
    parser.add_argument("--samples", type=int, default=450, help="digits test images")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    arrays = transfer_arrays(args.step, args.samples)
    seconds = time.perf_counter() - start
    names = [str(n) for n in arrays["sources"]]
    accuracy, eps = arrays["linf_accuracy"], arrays["linf_eps"]
    clean = dict(zip(arrays["targets"], arrays["clean_accuracy"], strict=True))
    print(f"Figure 4 in miniature: {len(SVMS)} LinearSVCs, {len(NNS)} MLPs 64-32-10, "
          f"{args.samples} digits test images, iterated FGSM 40 x 0.01, {len(eps)} eps "
          f"({seconds:.0f} s)")  # fmt: skip
    print("clean accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in clean.items()))
    every = max(1, len(eps) // 10)
    svm = panel(accuracy, names, SVMS)
    nn = panel(accuracy, names, NNS)
    print_panel("(a) accuracy of the SVMs: mean [min, max] over the 3 SVMs", eps, svm, every)
    print_panel("(b) accuracy of the NNs: mean [min, max] over the 3 NNs", eps, nn, every)
    mean = grid_means(svm, nn)
    print("\nAccuracy averaged over the eps grid:")
    for family in ("svm", "nn"):
        cells = ", ".join(f"{k} {mean[f'{family}:{k}']:.3f}" for k in svm)
        print(f"  {family.upper()}s: {cells}")
    print("\nThe paper's orderings (on these averages):")
    checks = orderings(mean)
    for claim, holds in checks:
        print(f"  [{'holds' if holds else 'FAILS'}] {claim}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
