"""Singla & Feizi (2019), Figure 2 in miniature on the model zoo.

Per correctly classified sample: the simplex certificate (Theorem 3), the
decision-boundary certificate (Theorem 4, one-hidden-layer nets only), and two
attack upper bounds on the minimal l2 adversarial distance: DeepFool
(Moosavi-Dezfooli et al. 2016, one run, 2% overshoot) and iterated FGSM (Kurakin
et al. 2016, l2 steps, the smallest successful eps found by bisection per sample).
Like the certificates, the attacks are unconstrained (no input box), so that all
four numbers bound the same quantity: the minimal l2 distance to another class.

Figure 2a (two-layer nets: digits_mlp2, nonneg_2layer, sphere_depth2) and 2b
(three-layer nets: digits_mlp3, binary_fc3_benign, binary_fc3_pgd). The paper
reports: simplex >= decision boundary on the samples (2a); both certificates below
both attack bounds on all samples; DeepFool a better (smaller) upper bound than
iterated FGSM.

    python benchmarks/reproduce_singla2019.py [--samples 200] [--rows 8]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

import audit_model_zoo as zoo
from audit_core.attacks import deepfool, iterated_fgsm
from audit_core.model import open_model
from audit_plugins.certificates.radii import decision_boundary_certificate, simplex_certificate

TWO_LAYER = ("digits_mlp2", "nonneg_2layer", "sphere_depth2")
THREE_LAYER = ("digits_mlp3", "binary_fc3_benign", "binary_fc3_pgd")


def ifgsm_distance(model, x, y, start, steps: int, halvings: int) -> np.ndarray:
    """Smallest l2 distance of an I-FGSM adversarial example, by bisection on eps per sample
    (``inf`` where I-FGSM fails even at the largest radius tried)."""
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    lo, hi = np.zeros(len(x)), np.asarray(start, dtype=np.float64).copy()
    best = np.full(len(x), np.inf)
    for _ in range(6):  # grow hi until I-FGSM succeeds
        res = iterated_fgsm(model, xt, yt, torch.as_tensor(hi), norm="l2", steps=steps)
        ok = res.success.numpy()
        best = np.where(ok, np.minimum(best, res.distance.numpy()), best)
        if ok.all():
            break
        hi = np.where(ok, hi, 2 * hi)
    hi = np.where(np.isfinite(best), hi, np.inf)
    for _ in range(halvings):
        mid = np.where(np.isfinite(hi), 0.5 * (lo + hi), 0.0)
        res = iterated_fgsm(model, xt, yt, torch.as_tensor(mid), norm="l2", steps=steps)
        ok = res.success.numpy() & np.isfinite(hi)
        best = np.where(ok, np.minimum(best, res.distance.numpy()), best)
        hi, lo = np.where(ok, mid, hi), np.where(ok, lo, mid)
    return best


def run_model(name: str, samples: int, steps: int) -> dict[str, np.ndarray]:
    data = np.load(zoo.dataset_path(name))
    x = data["x"].astype(np.float64)[:samples]
    y = data["y"].astype(np.int64)[:samples]
    lower, upper = float(data["lower"]), float(data["upper"])
    model = open_model(zoo.model_path(name), name, None, np.random.default_rng(0),
                       bounds=(lower, upper))  # fmt: skip
    clock = time.perf_counter()
    cert = simplex_certificate(model.graph, x, tolerance=model.fidelity.tolerance)
    seconds = (time.perf_counter() - clock) / len(x)
    keep = cert.predicted == y
    x, y = x[keep], y[keep]
    view = model.dense_view
    db = (
        decision_boundary_certificate(view, x, y, tolerance=model.fidelity.tolerance)
        if view is not None and view.depth == 2
        else np.full(len(x), np.nan)
    )
    fool = deepfool(model.module, torch.as_tensor(x), torch.as_tensor(y), norm="l2")
    fool_d = fool.distance.numpy()
    start = np.where(np.isfinite(fool_d), 1.5 * fool_d, np.sqrt(x[0].size) * (upper - lower))
    return {
        "simplex": cert.radius[keep],
        "decision boundary": db,
        "DeepFool": fool_d,
        "I-FGSM": ifgsm_distance(model.module, x, y, start, steps, 12),
        "seconds": np.array([seconds]),
    }


def report(name: str, r: dict[str, np.ndarray], rows: int) -> dict[str, float]:
    keys = ("simplex", "decision boundary", "DeepFool", "I-FGSM")
    print(f"\n{name}: {len(r['simplex'])} correctly classified samples "
          f"(simplex: {1000 * r['seconds'][0]:.2f} ms per sample)")  # fmt: skip
    print(f"  {'sample':>6}" + "".join(f"{k:>20}" for k in keys))
    for i in range(min(rows, len(r["simplex"]))):
        print(f"  {i:>6}" + "".join(f"{r[k][i]:>20.5g}" for k in keys))
    medians = [np.median(r[k][~np.isnan(r[k])]) if not np.isnan(r[k]).all() else np.nan
               for k in keys]  # fmt: skip
    print(f"  {'median':>6}" + "".join(f"{m:>20.5g}" for m in medians))
    simplex, db, fool, fgsm = (r[k] for k in keys)
    upper = np.minimum(fool, fgsm)
    stats = {
        "certs below both attacks": float(
            np.mean((simplex <= upper) & (np.isnan(db) | (db <= upper)))
        ),
        "DeepFool <= I-FGSM": float(np.mean(fool <= fgsm)),
    }
    if not np.isnan(db).all():
        stats["simplex >= decision boundary"] = float(np.mean(simplex >= db))
        stats["simplex > decision boundary"] = float(np.mean(simplex > db))
    for key, value in stats.items():
        print(f"  {key}: {value:.1%} of the samples")
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Singla & Feizi 2019, Figure 2 in miniature")
    parser.add_argument("--samples", type=int, default=200, help="samples per model")
    parser.add_argument("--rows", type=int, default=8, help="per-sample rows printed per model")
    parser.add_argument("--steps", type=int, default=20, help="I-FGSM iterations")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    clock = time.perf_counter()
    all_stats = {}
    for figure, names in (("Figure 2a (two-layer)", TWO_LAYER), ("Figure 2b (three-layer)",
                                                                  THREE_LAYER)):  # fmt: skip
        print(f"\n=== {figure} ===")
        for name in names:
            all_stats[name] = report(name, run_model(name, args.samples, args.steps), args.rows)
    print("\n=== The paper's orderings ===")
    below = min(s["certs below both attacks"] for s in all_stats.values())
    print(f"both certificates below both attack bounds on all samples: "
          f"{'yes' if below == 1.0 else 'NO'} (worst model: {below:.1%})")  # fmt: skip
    for name in TWO_LAYER:
        s = all_stats[name]
        print(f"simplex >= decision boundary on {name}: {s['simplex >= decision boundary']:.1%} "
              f"(strictly greater: {s['simplex > decision boundary']:.1%})")  # fmt: skip
    for name, s in all_stats.items():
        print(f"DeepFool <= I-FGSM on {name}: {s['DeepFool <= I-FGSM']:.1%}")
    print(f"wall time: {time.perf_counter() - clock:.0f} s")
    return 0 if below == 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
