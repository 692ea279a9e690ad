"""Soundness campaign of the certificates (Singla & Feizi 2019, Theorems 3 and 4) and of
bound propagation and the complete search (``audit_core.bounds``).

For every (model, sample) pair: the simplex certificate (and, on one-hidden-layer
nets, the decision-boundary certificate) and the bound-propagation radius (CROWN then
alpha-CROWN bisection, over the whole l2 ball) are computed, then every certified ball
is attacked -- PGD-l2 with restarts and uniform random search inside it, DeepFool
and the core's minimal-norm search outside it -- on the onnx2torch module, without
input bounds; PGD's worst point of each ball also goes through onnxruntime in
float32 (the deployed model). Any adversarial point within a certified radius, or
a class change of the deployed model inside a ball, is a violation.

The complete search then decides a few samples per model at an eps between the
bound-propagation radius and the attack distance (where it has to branch) or just past
the attack distance (where it must find its own counterexample): a
"certified" verdict is attacked like a radius; a "non-robust" one must come with a
point inside the ball that onnxruntime misclassifies.

Models: every piecewise-linear model-zoo model on its dataset; the corpus MNIST
models (mnist-net_256x2/4/6, mnist_relu_9_200, Convnet_maxpool, Convnet_avgpool) on
the 15 corpus images plus noisy copies; the 1-D corpus test_* nets on a grid; small
random 2-D/3-D ReLU nets on uniform points. On models with MaxPool, half of the
samples get small positive noise (an exact tie in a MaxPool window puts the sample
on a face of its region, where the certificate is 0 and nothing is claimed).

    python benchmarks/certificate_soundness.py            # >= 2,000 pairs, ~5-10 min
    python benchmarks/certificate_soundness.py --quick    # CI size, ~1 min

Prints per model: pairs, pairs with a positive radius (attacked; simplex, Theorem 4,
bound propagation), searches decided (certified / non-robust), violations,
deployed-model flips, the median and minimum certified/attack ratio of the simplex
and bound-propagation radii; then the totals. Exit status 1 if any violation was found.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # certificate_campaign
CORPUS = Path(
    os.environ.get("AUDIT_CORPUS", Path(__file__).resolve().parents[2] / "shared" / "corpus")
)
MNIST_MODELS = (
    "mnistfc/mnist-net_256x2.onnx",
    "mnistfc/mnist-net_256x4.onnx",
    "mnistfc/mnist-net_256x6.onnx",
    "eran/mnist_relu_9_200.onnx",
    "verivital/Convnet_maxpool.onnx",
    "verivital/Convnet_avgpool.onnx",
)
TINY_NETS = {
    "tiny-2d-8-8-3": [2, 8, 8, 3],
    "tiny-2d-12-1": [2, 12, 1],
    "tiny-3d-6-6-2": [3, 6, 6, 2],
    "tiny-3d-16-4": [3, 16, 4],
}


@dataclass(frozen=True)
class Case:
    """One model and how many samples to draw for it."""

    name: str
    kind: str  # "zoo", "mnist", "line", "tiny"
    source: str
    count: int


@dataclass(frozen=True)
class Row:
    """Campaign result of one model."""

    name: str
    pairs: int
    attacked: int
    db_attacked: int
    violations: int
    deployed_flips: int
    median_ratio: float
    min_ratio: float
    seconds: float
    note: str = ""
    bp_attacked: int = 0
    bp_median_ratio: float = np.nan
    searches: int = 0
    certified: int = 0
    non_robust: int = 0


def cases(quick: bool) -> list[Case]:
    import audit_model_zoo as zoo

    scale = 0.15 if quick else 1.0
    out = [Case(name, "zoo", name, max(6, int(_zoo_count(name) * scale))) for name in zoo.names()]
    out += [Case(Path(m).stem, "mnist", m, max(6, int(40 * scale))) for m in MNIST_MODELS]
    out += [Case(n, "line", f"test/{n}.onnx", max(6, int(40 * scale))) for n in
            ("test_nano", "test_tiny", "test_small")]  # fmt: skip
    out += [Case(n, "tiny", n, max(6, int(100 * scale))) for n in TINY_NETS]
    return out


def _zoo_count(name: str) -> int:
    if name.startswith("digits_"):
        return 120
    return 100


def run_case(case: Case) -> Row:
    """Certify and attack one model's samples (in a worker process, one torch thread)."""
    import torch

    from audit_core.model import open_model
    from audit_core.onnx_import import load_onnx
    from audit_plugins.certificates.radii import decision_boundary_certificate, simplex_certificate
    from certificate_campaign import AttackBudget, attack_certificate

    torch.set_num_threads(1)
    clock = time.perf_counter()
    rng = np.random.default_rng(zlib.crc32(case.name.encode()))
    with tempfile.TemporaryDirectory() as tmp:
        path = _model_path(case, Path(tmp))
        if not load_onnx(path).graph.is_piecewise_linear:
            return Row(case.name, 0, 0, 0, 0, 0, np.nan, np.nan, 0.0, "not piecewise linear")
        model = open_model(path, case.name, None, np.random.default_rng(0))
        x = _samples(case, model, rng)
        tolerance = model.fidelity.tolerance
        cert = simplex_certificate(model.graph, x, tolerance=tolerance)
        budget = AttackBudget(pgd_steps=60, pgd_restarts=8, random_samples=1000)
        result = attack_certificate(
            model.module, x, cert.predicted, cert.radius, budget=budget, loaded=model.loaded
        )
        violations, flips = result.violations, result.attacked & ~result.deployed_ok
        db_attacked = 0
        view = model.dense_view
        if view is not None and view.depth == 2:
            db = decision_boundary_certificate(view, x, cert.predicted, tolerance=tolerance)
            if (db > 0).any():
                light = AttackBudget(minimal=None)
                db_result = attack_certificate(
                    model.module, x, cert.predicted, db, budget=light, loaded=model.loaded
                )
                violations = violations | db_result.violations
                flips = flips | (db_result.attacked & ~db_result.deployed_ok)
                db_attacked = int(db_result.attacked.sum())
        bp = _propagation(model, x, cert.predicted, cert.radius, result.closest)
        violations, flips = violations | bp.violations, flips | (bp.attacked & ~bp.deployed_ok)
        searched = _searches(model, path, x, cert.predicted, bp.radius, result.closest, rng)
        violations[searched.wrong] = True
    ratio = result.ratio[result.attacked]
    ratio = ratio[np.isfinite(ratio)]
    bp_ratio = bp.ratio[bp.attacked]
    bp_ratio = bp_ratio[np.isfinite(bp_ratio)]
    return Row(
        name=case.name,
        pairs=len(x),
        attacked=int(result.attacked.sum()),
        db_attacked=db_attacked,
        violations=int(violations.sum()),
        deployed_flips=int(flips.sum()),
        median_ratio=float(np.median(ratio)) if ratio.size else np.nan,
        min_ratio=float(ratio.min()) if ratio.size else np.nan,
        seconds=time.perf_counter() - clock,
        bp_attacked=int(bp.attacked.sum()),
        bp_median_ratio=float(np.median(bp_ratio)) if bp_ratio.size else np.nan,
        searches=searched.count,
        certified=searched.certified,
        non_robust=searched.non_robust,
    )


def _propagation(model, x: np.ndarray, labels: np.ndarray, start: np.ndarray, closest):
    """Bound-propagation radii over the whole l2 ball (no input bounds, as the attacks),
    bisected between the simplex radius and the closest attack distance, then attacked."""
    import torch

    from audit_core.bounds.propagation import BoundPropagation
    from audit_core.bounds.radius import RadiusBudget, certified_radius
    from audit_core.bounds.verify import Verifier
    from certificate_campaign import AttackBudget, attack_certificate

    verifier = Verifier(BoundPropagation(model.graph), model.fidelity.tolerance)
    flat = torch.as_tensor(x.reshape(len(x), -1))
    stop = np.where(np.isfinite(closest), closest, 10 * np.maximum(start, 1e-3))
    radius = certified_radius(
        verifier, flat, torch.as_tensor(labels), "l2", -np.inf, np.inf,
        torch.as_tensor(np.minimum(start, stop)), torch.as_tensor(stop), RadiusBudget(),
    ).numpy()  # fmt: skip
    light = AttackBudget(pgd_steps=60, pgd_restarts=8, random_samples=1000, minimal=None)
    attacked = attack_certificate(model.module, x, labels, radius, budget=light,
                                  loaded=model.loaded)  # fmt: skip
    # the ratio's denominator: the closest point any attack of the run found
    distances = dict(attacked.distances, simplex_run=closest)
    return type(attacked)(radius, distances, attacked.deployed_ok)


@dataclass(frozen=True)
class Searched:
    count: int
    certified: int
    non_robust: int
    wrong: np.ndarray
    """Sample indices with a verdict the evidence contradicts."""


SEARCHES_PER_MODEL = 6


def _searches(model, path: Path, x, labels, bp_radius, closest, rng) -> Searched:
    """The complete search on a few samples, at eps halfway (geometrically) between the
    bound-propagation radius and the attack distance or 5% past the attack distance;
    every verdict checked."""
    from audit_core.bounds.propagation import BoundPropagation
    from audit_core.bounds.search import CERTIFIED, NON_ROBUST, BranchAndBound, SearchBudget
    from audit_core.bounds.verify import Verifier
    from certificate_campaign import AttackBudget, attack_certificate, deployed_predictions

    def confirm(points: np.ndarray, label: int) -> np.ndarray:
        return deployed_predictions(model.loaded, points) != label

    verifier = Verifier(BoundPropagation(model.graph), model.fidelity.tolerance)
    search = BranchAndBound(verifier, confirm)
    usable = np.flatnonzero((bp_radius > 0) & np.isfinite(closest))
    picks = rng.permutation(usable)[:SEARCHES_PER_MODEL]
    certified, non_robust, wrong = [], 0, []
    budget = SearchBudget(seconds=2.0, branches=2000)
    for k, i in enumerate(picks):  # inside the gap, or just past the attack distance
        eps = float(np.sqrt(bp_radius[i] * closest[i]) if k % 2 else 1.05 * closest[i])
        flat = x[i].reshape(-1)
        outcome = search.search(flat, int(labels[i]), eps, "l2", -np.inf, np.inf, budget)
        if outcome.verdict == CERTIFIED:
            certified.append((i, eps))
        elif outcome.verdict == NON_ROBUST:
            non_robust += 1
            point = outcome.counterexample
            inside = np.linalg.norm(point - flat) <= eps
            if not (inside and confirm(point[None], int(labels[i]))[0]):
                wrong.append(i)
    if certified:
        index = np.array([i for i, _ in certified])
        radius = np.zeros(len(x))
        radius[index] = [e for _, e in certified]
        light = AttackBudget(pgd_steps=60, pgd_restarts=8, random_samples=1000, minimal=None)
        checked = attack_certificate(model.module, x, labels, radius, budget=light,
                                     loaded=model.loaded)  # fmt: skip
        wrong += list(np.flatnonzero(checked.violations))
    return Searched(len(picks), len(certified), non_robust, np.asarray(wrong, dtype=int))


def _model_path(case: Case, tmp: Path) -> Path:
    import audit_model_zoo as zoo
    from audit_core.testing import mlp_onnx, random_mlp

    if case.kind == "zoo":
        return zoo.model_path(case.source)
    if case.kind in ("mnist", "line"):
        return CORPUS / case.source
    sizes = TINY_NETS[case.source]
    weights, biases = random_mlp(sizes, seed=sum(sizes), scale=2.0)
    return mlp_onnx(tmp / f"{case.name}.onnx", weights, biases)


def _samples(case: Case, model, rng: np.random.Generator) -> np.ndarray:
    import audit_model_zoo as zoo

    shape = model.graph.input_shape
    if case.kind == "zoo":
        data = np.load(zoo.dataset_path(case.source))["x"].astype(np.float64)
        flat = data.reshape(len(data), -1)
        if len(flat) < case.count:  # small sets (sphere, a9): add points around them
            extra = flat[rng.integers(len(flat), size=case.count - len(flat))]
            spread = np.abs(flat).max() * 0.3
            flat = np.concatenate([flat, extra + rng.normal(0, spread, extra.shape)])
        else:
            flat = flat[rng.choice(len(flat), case.count, replace=False)]
    elif case.kind == "mnist":
        images = np.load(CORPUS / "mnistfc/mnist_samples.npz")["x"].astype(np.float64)
        clean = images[rng.permutation(len(images))[: min(len(images), case.count // 2)]]
        picks = images[rng.integers(len(images), size=case.count - len(clean))]
        noise = rng.uniform(0.0, rng.uniform(0.0, 0.1, (len(picks), 1)), picks.shape)
        flat = np.concatenate([clean, np.minimum(picks + noise, 1.0)])
    elif case.kind == "line":
        flat = np.linspace(-3.0, 3.0, case.count)[:, None]
    else:
        flat = rng.uniform(-1.0, 1.0, (case.count, int(np.prod(shape))))
    if case.kind == "zoo" and any(type(n.layer).__name__ == "MaxPool" for n in model.graph.nodes):
        half = len(flat) // 2
        flat[half:] = np.minimum(flat[half:] + rng.uniform(0.0, 0.05, flat[half:].shape), 1.0)
    return flat.reshape(len(flat), *shape)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI size (about 350 pairs)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    args = parser.parse_args(argv)
    clock = time.perf_counter()
    todo = cases(args.quick)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(run_case, todo))
    _print(rows, time.perf_counter() - clock)
    return 1 if sum(r.violations for r in rows) else 0


def _print(rows: list[Row], seconds: float) -> None:
    head = f"{'model':<22}{'pairs':>6}{'attacked':>9}{'thm4':>6}{'bp':>5}{'search c/n':>11}"
    print(head + f"{'viol':>6}{'flips':>6}{'ratio simplex':>14}{'bp':>7}{'min':>9}{'s':>7}")
    for r in rows:
        if r.note:
            print(f"{r.name:<22}{'-':>6}  skipped: {r.note}")
            continue
        decided = f"{r.certified}/{r.non_robust} of {r.searches}"
        print(
            f"{r.name:<22}{r.pairs:>6}{r.attacked:>9}{r.db_attacked:>6}{r.bp_attacked:>5}"
            f"{decided:>11}{r.violations:>6}{r.deployed_flips:>6}{r.median_ratio:>14.4g}"
            f"{r.bp_median_ratio:>7.3g}{r.min_ratio:>9.2e}{r.seconds:>7.1f}"
        )
    pairs = sum(r.pairs for r in rows)
    attacked = sum(r.attacked for r in rows)
    violations = sum(r.violations for r in rows)
    print(
        f"\npairs checked: {pairs} (model, sample) pairs over {len(rows)} models; "
        f"{attacked} with a positive simplex radius attacked, "
        f"{sum(r.db_attacked for r in rows)} positive decision-boundary radii attacked, "
        f"{sum(r.bp_attacked for r in rows)} positive bound-propagation radii attacked; "
        f"{sum(r.searches for r in rows)} searches: {sum(r.certified for r in rows)} certified "
        f"(attacked), {sum(r.non_robust for r in rows)} non-robust (point checked)"
    )
    print(f"violations: {violations} (must be 0); deployed float32 flips inside a ball: "
          f"{sum(r.deployed_flips for r in rows)}")  # fmt: skip
    print(f"wall time: {seconds:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
