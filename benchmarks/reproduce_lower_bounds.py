"""Figures 2-3 of the feature-extractor lower-bounds paper in miniature, through ``audit``.

The paper computes, for the layers of a 3-layer FCNN (300-200-2) trained on a
2-class MNIST task benignly or with PGD (eps_train = 2.0), lower bounds on the
robust cross-entropy loss of any classifier built on each layer's features, as a
function of the l2 budget eps (Figure 2: first linear layer, several trainings;
Figure 3: all layers of the benign net; Figure 4: all layers of the PGD net).
It observes that the first ReLU layer raises the bound the most, and that the
layers of the PGD-trained net give lower bounds than the benign net's.

Here: the model zoo's ``binary_fc3_benign`` and ``binary_fc3_pgd`` (64-64-32-2,
digits 3 vs 7, l2 PGD at eps_train = 1.0), all 91 test points (2070 pairs), one
``audit --only lower-bounds`` run, the same eps grid for both nets and no time
limit on the collision search.

    python benchmarks/reproduce_lower_bounds.py [--samples 91] [--top 1.5] [--points 13]

Prints the bound tables (0-1 and cross-entropy, prefix x eps) and whether the
paper's two observations hold (the exit status is 0 either way: a failed
observation is a finding about the miniature, not a bug).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import audit_model_zoo as zoo
from audit_core.console import QuietUI
from audit_core.plugins import PluginHost
from audit_core.runner import run_audit
from audit_core.settings import Settings

MODELS = ("binary_fc3_benign", "binary_fc3_pgd")


def lower_bound_arrays(samples: int, grid: tuple[float, ...]) -> dict[str, dict]:
    """Run ``audit MODELS --only lower-bounds`` in-process; return each model's export."""
    settings = Settings(
        models=tuple(str(zoo.model_path(n)) for n in MODELS),
        only=("lower-bounds",),
        samples=samples,
        eps=(1.0,),
        analysis_options={"lower-bounds": {"eps_grid": list(grid), "max_seconds": 3600.0}},
    )
    host = PluginHost()
    host.load_entry_points()
    outcome = run_audit(settings, host, QuietUI())
    return {name: outcome.exports[(name, "lower_bounds")] for name in MODELS}


def table(title: str, arrays: dict, key: str, fmt: str) -> None:
    eps = arrays["eps"]
    print(f"\n{title}")
    print(f"{'prefix':<22}" + "".join(f"{e:>7.3g}" for e in eps))
    for name, row in zip(arrays["prefix_name"], arrays[key], strict=True):
        print(f"{name:<22}" + "".join(format(v, fmt).rjust(7) for v in row))


def observations(exports: dict[str, dict]) -> list[tuple[str, bool]]:
    """The paper's two readings, checked on the miniature."""
    checks = []
    for name, arrays in exports.items():
        names = list(arrays["prefix_name"])
        relu = next(i for i, n in enumerate(names) if n.endswith("Relu"))
        ce = arrays["cross_entropy_bound"]
        rises = np.diff(ce, axis=0).max(axis=1)  # largest rise of each layer over the grid
        first_relu_rise = float(rises[relu - 1])
        checks.append(
            (
                f"{name}: the first ReLU layer ({names[relu]}) raises the bound "
                f"(max rise {first_relu_rise:.3f} nats over its input prefix)",
                first_relu_rise > 0,
            )
        )
    benign, pgd = (exports[m]["cross_entropy_bound"] for m in MODELS)
    names = exports[MODELS[0]]["prefix_name"]
    for index in range(2, len(names)):  # the first ReLU layer and after
        area_b, area_p = float(benign[index].sum()), float(pgd[index].sum())
        above = int(np.sum(pgd[index] > benign[index] + 1e-9))
        checks.append(
            (
                f"{names[index]}: the PGD-trained net's bound is lower than the benign net's "
                f"(summed over the grid: PGD {area_p:.3f} vs benign {area_b:.3f} nats; PGD "
                f"above benign at {above} of {len(benign[index])} budgets)",
                area_p < area_b,
            )
        )
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=91)
    parser.add_argument("--top", type=float, default=1.5, help="largest eps of the grid")
    parser.add_argument("--points", type=int, default=13, help="eps grid points")
    args = parser.parse_args()
    grid = tuple(float(e) for e in np.round(np.linspace(0.0, args.top, args.points), 6))
    started = time.perf_counter()
    exports = lower_bound_arrays(args.samples, grid)
    elapsed = time.perf_counter() - started
    for name, arrays in exports.items():
        pairs = arrays["pair_position"].shape[0]
        print(f"\n=== {name}: {pairs} pairs, classes {tuple(arrays['classes'])} ===")
        table(
            "cross-entropy lower bound (nats, mean per point)", arrays, "cross_entropy_bound", ".3f"
        )
        table("0-1 lower bound (fraction of points)", arrays, "zero_one_bound", ".3f")
        table("edges of the conflict graph", arrays, "edges", "d")
    print(f"\naudit run: {elapsed:.1f} s for both models")
    print("\npaper's observations (Section 4.2) on the miniature:")
    for text, ok in observations(exports):
        print(f"  [{'holds' if ok else 'FAILS'}] {text}")


if __name__ == "__main__":
    main()
