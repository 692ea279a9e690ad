"""Soundness campaign: every certified number the tool produces, checked against
independent evidence.

Claims checked, per (model, sample) pair:

* **simplex radius** (Singla & Feizi 2019, Theorem 3) in l2, and the l_inf box of
  half-width ``r / sqrt(d)`` that it certifies; the **decision-boundary radius**
  (Theorem 4) on one-hidden-layer nets;
* **bound-propagation radii** (CROWN then alpha-CROWN bisection, ``audit_core.bounds``) over
  the whole l2 ball and the whole l_inf box (no input bounds: the stronger claim);
* **complete-search verdicts** on a few samples per model, in l2 and l_inf, at an eps
  inside the gap between the bound-propagation radius and the attack distance or just past
  the attack distance: a "certified" ball is attacked like a radius; a "non-robust" verdict
  must come with a point inside the ball that onnxruntime misclassifies.

Attackers (each adversarial point is verified by a float64 forward pass of the onnx2torch
module and by onnxruntime in float32, the deployed model; its distance is exact in float64):

* the project's own: PGD (margin loss, restarts; l2 or l_inf) and uniform random search
  inside each ball, DeepFool and the minimal-norm search (DeepFool + PGD bisection) outside;
* an independent implementation, torchattacks 3.5.1: PGD-L2 and PGD-Linf (cross-entropy,
  one random start) inside each ball / box, DeepFool and CW-L2 (minimal-norm) outside.
  torchattacks wants inputs in [0, 1]: it sees each sample through an isotropic map of
  the cube of side ``s`` around it onto [0, 1]^d (``s = 2 r`` for PGD, so the ball is
  inscribed in the cube and its clipping never cuts the ball; ``s = 4 x`` the closest
  attack distance for the minimal-norm attacks), a single logit ``z`` as ``(0, z)``;
* exact answers on tiny nets: the true minimal adversarial distance of the 1-D corpus
  ``test_*`` nets (dense grid plus bisection on the line) and of the random 2-D/3-D ReLU
  nets (every activation region meeting a box, one exact QP per region and class:
  ``tests/test_certificates_soundness.py``), on a fixed subset of their samples.

Any verified adversarial point at distance ``<= r (1 + 1e-9)`` from a sample whose radius
is ``r`` is a violation, attributed to the attacker that found it. PGD and random search run
on every positive ball; the minimal-norm attacks run once per sample and are checked against
every claim of the sample; torchattacks DeepFool and CW-L2 run on a fixed subset of the
samples of each model (the first ``FULL_SUBSET``); the counts printed say how many claims
each attacker checked.

Theorem claims, through the analyses themselves (``audit --only ...`` in process):

* ``kkt`` (Vardi et al. 2022) on the binary depth-2 nets: the exact smallest ``c`` along
  ``z / ||z||``: every point the analysis reports flipped at ``c_inside`` must be
  misclassified there by the float64 module and by onnxruntime, and at ``c (1 - 1e-6)``
  and ``c / 2`` some margin point must not be flipped (minimality).
* ``lower-bounds`` (feature-extractor lower bounds): every prefix's lower bound on the
  robust 0-1 and cross-entropy loss of ANY classifier on its features, at every eps of
  its grid, must be <= the robust loss the attacks achieve on the model itself (the union
  of the attacks' verified points within eps; the model's own softmax for the
  cross-entropy). The attacks only give a lower estimate of the model's robust loss, so
  this check can miss a too-large bound, never invent a violation of a sound one.
* ``convex-transfer`` on models whose decision regions it proves convex: every exact flip
  scale ``c`` of ``x + c v`` (class kept just before, lost just after, in float64; lost by
  onnxruntime 1e-3 after; still lost at 2c, 4c and 16c: the ray never comes back) and
  Theorem 11's universal scale; ``linear-transfer`` on affine models: Theorem 5's bound
  (the point moved along ``-y w*`` by the bound is misclassified).

Not checked here: Theorem 3.1's robust network (a network the analysis constructs, not
the audited model), the KKT residual (a distance to a KKT point, not a claim about
inputs), the empirical parts of the transfer analyses (flip rates of directions on
models without a convexity proof, the transfer matrix), which claim nothing certified.

Models: every model-zoo model on its dataset (plus noisy copies where it is small); the
corpus MNIST models (mnist-net_256x2/4/6, mnist_relu_9_200, Convnet_maxpool,
Convnet_avgpool; the 15 corpus images plus noisy copies), ffnnSIGMOID (must be refused),
the ACAS Xu nets (uniform points of [-0.5, 0.5]^5), the 1-D corpus ``test_*`` nets on a
grid; four small random 2-D/3-D ReLU nets on uniform points.

    python benchmarks/certificate_soundness.py            # >= 10,000 pairs (about an hour)
    python benchmarks/certificate_soundness.py --quick    # CI size (330 pairs, about 2-3 minutes)

Prints per model the pairs, claims checked, violations and seconds; then per claim and
attacker the claims checked and violations, per attacker the runs and the adversarial
points it verified, and the totals. Exit status 1 if any violation was found.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # certificate_campaign
from certificate_campaign import Evidence

CORPUS = Path(
    os.environ.get("AUDIT_CORPUS", Path(__file__).resolve().parents[2] / "shared" / "corpus")
)
if not CORPUS.is_dir():
    CORPUS = Path("/work/shared/corpus")
MNIST_MODELS = (
    "mnistfc/mnist-net_256x2.onnx",
    "mnistfc/mnist-net_256x4.onnx",
    "mnistfc/mnist-net_256x6.onnx",
    "eran/mnist_relu_9_200.onnx",
    "verivital/Convnet_maxpool.onnx",
    "verivital/Convnet_avgpool.onnx",
    "eran/ffnnSIGMOID__Point_6x200.onnx",
)
QUICK_MNIST = {"mnist-net_256x2", "Convnet_maxpool", "ffnnSIGMOID__Point_6x200"}
"""The corpus MNIST models of --quick (each costs ~10 s even on 4 samples)."""
ACAS = ("acasxu/ACASXU_run2a_1_1_batch_2000.onnx", "acasxu/ACASXU_run2a_2_1_batch_2000.onnx")
TINY_NETS = {
    "tiny-2d-8-8-3": [2, 8, 8, 3],
    "tiny-2d-12-1": [2, 12, 1],
    "tiny-3d-6-6-2": [3, 6, 6, 2],
    "tiny-3d-16-4": [3, 16, 4],
}
FULL_SUBSET = 40
"""Samples per model (the first ones) that torchattacks DeepFool and CW-L2 attack."""
EXACT_SUBSET = 120
"""Samples per tiny net whose exact minimal adversarial distance is computed."""
BP_SUBSET = {"zoo": 64, "mnist": 40}
"""Samples per model (the first ones) with a bound-propagation radius on convolutional nets
and inputs of 500+ dimensions (every sample elsewhere): their CROWN bounds are the
campaign's most expensive step."""
ALPHA_SUBSET = 16
"""Samples per model (the first ones; half on inputs of 500+ dimensions) whose
bound-propagation radius is pushed further by alpha-CROWN after CROWN."""
SEARCHES_PER_MODEL = 4
"""Complete searches per model and norm (1 in --quick)."""
KKT_MODELS = {"sphere_depth2", "nonneg_2layer", "transfer_a9", "tiny-2d-12-1"}
LOWER_BOUND_MODELS = {
    "binary_fc3_benign": 30,
    "binary_fc3_pgd": 30,
    "nonneg_2layer": 30,
    "sphere_depth2": 30,
    "digits_mlp2": 30,
    "digits_linear": 30,
    "mnist-net_256x2": 0,
    "tiny-2d-8-8-3": 30,
}
"""Model -> audit points per class for the lower-bounds analysis (0: all)."""
QUICK_LOWER_BOUNDS = {"binary_fc3_benign", "nonneg_2layer", "digits_linear"}
TRANSFER_MODELS = {
    "digits_linear",
    "digits_svm_part0",
    "digits_svm_part1",
    "digits_svm_part2",
    "nonneg_2layer",
    "transfer_a9",
    "sphere_depth2",
    "tiny-2d-12-1",
}


@dataclass(frozen=True)
class Case:
    """One model and how many samples to draw for it."""

    name: str
    kind: str  # "zoo", "mnist", "acas", "line", "tiny"
    source: str
    count: int
    quick: bool = False


@dataclass
class Row:
    """Campaign result of one model."""

    name: str
    pairs: int = 0
    seconds: float = 0.0
    note: str = ""
    evidence: Evidence = field(default_factory=Evidence)


def cases(quick: bool) -> list[Case]:
    import audit_model_zoo as zoo

    scale = 0.03 if quick else 1.0

    def n(full: int) -> int:
        return max(6, int(full * scale))

    out = [Case(name, "zoo", name, n(_zoo_count(name)), quick) for name in zoo.names()]
    mnist = [m for m in MNIST_MODELS if not quick or Path(m).stem in QUICK_MNIST]
    out += [Case(Path(m).stem, "mnist", m, 4 if quick else 80, quick) for m in mnist]
    out += [Case(Path(m).stem.split("_batch")[0], "acas", m, n(500), quick) for m in ACAS]
    out += [Case(name, "line", f"test/{name}.onnx", n(200), quick) for name in
            ("test_nano", "test_tiny", "test_small")]  # fmt: skip
    out += [Case(name, "tiny", name, n(600), quick) for name in TINY_NETS]
    return out


def _zoo_count(name: str) -> int:
    if name == "transfer_a9":
        return 200
    return 450


# --------------------------------------------------------------------------- one model


def run_case(case: Case) -> Row:
    """Every claim on one model's samples, attacked (in a worker process, one torch thread);
    a crash is reported as the model's note and counts as a violation (the run fails)."""
    import traceback

    try:
        return _run_case(case)
    except Exception as error:  # keep the other models' results
        row = Row(case.name, note=f"ERROR {type(error).__name__}: {error}")
        row.evidence.count("campaign error (no claim checked)", "-", 1, 1,
                           f"{case.name}: {traceback.format_exc()}")  # fmt: skip
        return row


def _run_case(case: Case) -> Row:
    import torch

    from audit_core.model import open_model
    from audit_core.onnx_import import load_onnx

    torch.set_num_threads(1)
    clock = time.perf_counter()
    row = Row(case.name)
    rng = np.random.default_rng(zlib.crc32(case.name.encode()))
    with tempfile.TemporaryDirectory() as tmp:
        path = _model_path(case, Path(tmp))
        if not load_onnx(path).graph.is_piecewise_linear:
            row.note = "not piecewise linear: no certificate is claimed"
            row.evidence.count("refusal: no certificate for a non-PL model", "the analysis", 1,
                               int(not _refused(path, case.name, Path(tmp))))  # fmt: skip
            row.seconds = time.perf_counter() - clock
            return row
        model = open_model(path, case.name, None, np.random.default_rng(0))
        x = _samples(case, model, rng)
        row.pairs = len(x)
        _certificates(case, model, x, rng, row.evidence)
        if case.name in KKT_MODELS:
            _kkt(case, model, x, Path(tmp), row.evidence)
        if case.name in LOWER_BOUND_MODELS and (not case.quick or case.name in QUICK_LOWER_BOUNDS):
            _lower_bounds(case, model, x, Path(tmp), row.evidence)
        if case.name in TRANSFER_MODELS:
            _transfer(case, model, x, Path(tmp), row.evidence)
    row.seconds = time.perf_counter() - clock
    return row


def _refused(path: Path, name: str, tmp: Path) -> bool:
    """The certificates analysis refuses a non-piecewise-linear model (with a reason)."""
    from audit_core.onnx_import import load_onnx
    from audit_core.testing import save_dataset

    graph = load_onnx(path).graph
    x = np.random.default_rng(0).uniform(0, 1, (4, *graph.input_shape))
    data = save_dataset(tmp / "refuse.npz", x, np.zeros(4, dtype=np.int64))
    outcome = _audit(path, data, ("certificates",), (0.1,), {}, 4, outcome_only=True)
    runs = [run for run in outcome.report.analyses if run.analysis == "certificates"]
    return bool(runs) and all(run.outcome == "skipped" and run.reason for run in runs)


def _certificates(case: Case, model, x: np.ndarray, rng, evidence: Evidence) -> None:
    from audit_plugins.certificates.radii import decision_boundary_certificate, simplex_certificate

    where = case.name
    tolerance = model.fidelity.tolerance
    d = int(np.prod(x.shape[1:]))
    cert = simplex_certificate(model.graph, x, tolerance=tolerance)
    labels = cert.predicted
    l2 = {"simplex radius (l2)": cert.radius}
    view = model.dense_view
    if view is not None and view.depth == 2:
        l2["decision-boundary radius (l2)"] = decision_boundary_certificate(
            view, x, labels, tolerance=tolerance
        )
    linf = {"simplex radius as linf box (r/sqrt d)": cert.radius / np.sqrt(d)}
    # minimal-norm attacks: once per sample, checked against every claim of the sample
    points = _minimal_points(case, model, x, labels, evidence)
    closest = np.full(len(x), np.inf)
    closest_linf = np.full(len(x), np.inf)
    for found in points.values():
        ours, deployed = _verify(model, x, labels, found, "l2")
        closest = np.minimum(closest, np.minimum(ours, deployed))
        ours, deployed = _verify(model, x, labels, found, "linf")
        closest_linf = np.minimum(closest_linf, np.minimum(ours, deployed))
    if case.kind in ("line", "tiny"):
        exact = _exact_distances(case, model, x[:EXACT_SUBSET], labels[:EXACT_SUBSET])
        points["exact minimal distance"] = exact
    start = np.maximum.reduce(list(l2.values()))
    l2["bound-propagation radius (l2)"] = _propagation(case, model, x, labels, start, closest,
                                                       "l2")  # fmt: skip
    linf["bound-propagation radius (linf)"] = _propagation(
        case, model, x, labels, linf["simplex radius as linf box (r/sqrt d)"], closest_linf,
        "linf",
    )  # fmt: skip
    for norm, claims in (("l2", l2), ("linf", linf)):
        for claim, radius in claims.items():
            _attack_balls(case, model, x, labels, radius, norm, claim, evidence, rng)
            for attacker, found in points.items():
                if attacker == "exact minimal distance":
                    if norm == "l2":
                        evidence.balls(claim, attacker, radius[: len(found)], found, where)
                    continue
                ours, deployed = _verify(model, x, labels, found, norm)
                ran = ~np.isnan(found.reshape(len(x), -1)[:, 0])
                distance = np.where(ran, np.minimum(ours, deployed), np.nan)
                evidence.balls(claim, attacker, radius, distance, where)
    _searches(case, model, x, labels, l2["bound-propagation radius (l2)"], closest, "l2",
              evidence, rng)  # fmt: skip
    _searches(case, model, x, labels, linf["bound-propagation radius (linf)"], closest_linf,
              "linf", evidence, rng)  # fmt: skip


def _verify(model, x, labels, points, norm):
    """Float64-module and onnxruntime distances of the points (inf: not adversarial; NaN
    rows: the attacker did not run on that sample)."""
    from certificate_campaign import verified_distance

    ran = ~np.isnan(points.reshape(len(x), -1)[:, 0])
    ours = np.full(len(x), np.inf)
    deployed = np.full(len(x), np.inf)
    if ran.any():
        a, b = verified_distance(model, x[ran], labels[ran], points[ran], norm)
        ours[ran], deployed[ran] = a, b
    return ours, deployed


def _minimal_points(case: Case, model, x, labels, evidence: Evidence) -> dict[str, np.ndarray]:
    """The minimal-norm attacks' points (NaN rows where an attacker did not run)."""
    import torch

    from audit_core.attacks import MinimalAttackConfig, deepfool, minimal_adversarial
    from certificate_campaign import torchattacks_available, torchattacks_points

    xt, yt = torch.as_tensor(x), torch.as_tensor(labels)
    out = {"own DeepFool": deepfool(model.module, xt, yt, norm="l2").x_adv.numpy()}
    config = MinimalAttackConfig(restarts=2, bisection_steps=8)
    minimal = minimal_adversarial(model.module, xt, yt, norm="l2", config=config,
                                  generator=torch.Generator().manual_seed(1))  # fmt: skip
    out["own minimal-norm search"] = minimal.x_adv
    for attacker in out:
        evidence.ran(attacker, len(x))
    if torchattacks_available():
        subset = np.zeros(len(x), dtype=bool)
        subset[:FULL_SUBSET] = True
        reach = np.where(np.isfinite(minimal.distance), minimal.distance, np.linalg.norm(
            x.reshape(len(x), -1), axis=1) + 1.0)  # fmt: skip
        scale = np.where(subset, 4 * np.maximum(reach, 1e-6), 0.0)
        for attacker in ("torchattacks DeepFool", "torchattacks CW-L2"):
            found = torchattacks_points(model.module, x, labels, scale, attacker)
            found[~subset] = np.nan
            out[attacker] = found
            evidence.ran(attacker, int(subset.sum()))
    for attacker, found in out.items():
        ours, deployed = _verify(model, x, labels, found, "l2")
        evidence.ran(attacker, 0, int(np.isfinite(np.minimum(ours, deployed)).sum()))
    return out


def _attack_balls(case, model, x, labels, radius, norm, claim, evidence, rng) -> None:
    """The in-ball attackers on every positive ball of one claim."""
    import torch

    from audit_core.attacks import pgd, random_search
    from certificate_campaign import torchattacks_available, torchattacks_points

    rows = np.flatnonzero((radius > 0) & np.isfinite(radius))
    if rows.size == 0:
        return
    xr, yr, rr = x[rows], labels[rows], radius[rows]
    xt, yt, rt = torch.as_tensor(xr), torch.as_tensor(yr), torch.as_tensor(rr)
    generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
    steps, restarts = (30, 4) if case.quick else (60, 8)
    step = 0.1 * rt if norm == "l2" else 2.5 * rt / steps
    found = {
        f"own PGD-{norm}": pgd(model.module, xt, yt, rt, norm=norm, steps=steps,
                               restarts=restarts, step_size=step, generator=generator).x_adv,
        f"own random search ({norm})": random_search(
            model.module, xt, yt, rt, norm=norm, samples=300 if case.quick else 1000,
            generator=generator).x_adv,
    }  # fmt: skip
    found = {k: v.numpy() for k, v in found.items()}
    if torchattacks_available():
        attacker = "torchattacks PGD-L2" if norm == "l2" else "torchattacks PGD-Linf"
        found[attacker] = torchattacks_points(model.module, xr, yr, 2 * rr, attacker,
                                              seed=int(rng.integers(2**31)))  # fmt: skip
    for attacker, points in found.items():  # inside: misclassified in float64 or float32
        ours, deployed = verified(model, xr, yr, points, norm)
        either = np.minimum(ours, deployed)
        evidence.ran(attacker, rows.size, int(np.isfinite(either).sum()))
        evidence.balls(claim, attacker, rr, either, case.name)


def verified(model, x, labels, points, norm):
    from certificate_campaign import verified_distance

    return verified_distance(model, x, labels, points, norm)


def _propagation(case: Case, model, x, labels, start, closest, norm: str) -> np.ndarray:
    """Bound-propagation radii over the whole ball (no input bounds), bisected between the
    theorems' radius and the closest attack distance: CROWN on every sample, then
    optimised slopes (alpha-CROWN, 20 iterations, 4 halvings) on the first ``ALPHA_SUBSET``
    samples."""
    import torch

    from audit_core.bounds.propagation import BoundPropagation
    from audit_core.bounds.radius import RadiusBudget, certified_radius
    from audit_core.bounds.verify import Verifier

    verifier = Verifier(BoundPropagation(model.graph), model.fidelity.tolerance)
    flat = torch.as_tensor(x.reshape(len(x), -1))
    stop = np.where(np.isfinite(closest), closest, 10 * np.maximum(start, 1e-3))
    wide = flat.shape[1] >= 500
    conv = any(type(n.layer).__name__ == "Conv" for n in model.graph.nodes)
    count = len(x) if not (wide or conv) else (6 if case.quick else BP_SUBSET[case.kind])
    crown = RadiusBudget(steps=4 if case.quick else (6 if wide else 8), alpha_steps=0)
    radius = np.full(len(x), np.nan)  # NaN: not computed, nothing claimed
    radius[:count] = certified_radius(
        verifier, flat[:count], torch.as_tensor(labels[:count]), norm, -np.inf, np.inf,
        torch.as_tensor(np.minimum(start, stop)[:count]), torch.as_tensor(stop[:count]), crown,
    ).numpy()  # fmt: skip
    k = 1 if case.quick else ALPHA_SUBSET // (2 if wide or conv else 1)
    alpha = RadiusBudget(steps=0, alpha_steps=4, alpha_iterations=20)
    radius[:k] = certified_radius(
        verifier, flat[:k], torch.as_tensor(labels[:k]), norm, -np.inf, np.inf,
        torch.as_tensor(radius[:k]), torch.as_tensor(stop[:k]), alpha,
    ).numpy()  # fmt: skip
    return np.where(np.isnan(radius), np.nan, np.maximum(radius, 0.0))


def _searches(case, model, x, labels, bp_radius, closest, norm, evidence, rng) -> None:
    """The complete search on a few samples, at eps halfway (geometrically) between the
    bound-propagation radius and the attack distance, or 5% past the attack distance;
    "certified" balls attacked, "non-robust" witnesses checked by onnxruntime."""
    from audit_core.bounds.propagation import BoundPropagation
    from audit_core.bounds.search import CERTIFIED, NON_ROBUST, BranchAndBound, SearchBudget
    from audit_core.bounds.verify import Verifier
    from certificate_campaign import adversarial, flat_distance

    def confirm(points: np.ndarray, label: int) -> np.ndarray:
        logits = model.runtime.logits(points.reshape(len(points), *model.graph.input_shape))
        from audit_core.labels import predict

        return np.asarray(predict(logits)) != label

    verifier = Verifier(BoundPropagation(model.graph), model.fidelity.tolerance)
    search = BranchAndBound(verifier, confirm)
    usable = np.flatnonzero((bp_radius > 0) & np.isfinite(closest))
    picks = rng.permutation(usable)[: 1 if case.quick else SEARCHES_PER_MODEL]
    certified = np.zeros(len(x))
    claim = f"complete search: certified ({norm})"
    witness = f"complete search: non-robust witness ({norm})"
    budget = SearchBudget(seconds=1.0 if case.quick else 2.0, branches=2000)
    for k, i in enumerate(picks):  # inside the gap, or just past the attack distance
        eps = float(np.sqrt(bp_radius[i] * closest[i]) if k % 2 else 1.05 * closest[i])
        flat = x[i].reshape(-1)
        outcome = search.search(flat, int(labels[i]), eps, norm, -np.inf, np.inf, budget)
        if outcome.verdict == CERTIFIED:
            certified[i] = eps
        elif outcome.verdict == NON_ROBUST:
            point = outcome.counterexample.reshape(1, *x.shape[1:])
            inside = flat_distance(point, x[i : i + 1], norm)[0] <= eps * (1 + 1e-9)
            _, deployed = adversarial(model, point, labels[i : i + 1])
            bad = not (inside and deployed[0])
            evidence.count(witness, "onnxruntime (inside and misclassified)", 1, int(bad),
                           f"{case.name}: search witness of sample {i} at eps {eps}")  # fmt: skip
        else:
            evidence.count(f"complete search: undecided ({norm}, nothing claimed)", "-", 1)
    if (certified > 0).any():
        _attack_balls(case, model, x, labels, certified, norm, claim, evidence, rng)


def _exact_distances(case: Case, model, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The true minimal l2 adversarial distance (NaN where it is not known exactly)."""
    import test_certificates_soundness as exact

    if case.kind == "line":
        distances = [exact._first_flip_on_line(model.graph, float(v[0]), int(k), 8.0, 20001)
                     for v, k in zip(x.reshape(len(x), -1), labels, strict=True)]  # fmt: skip
        return np.asarray(distances)
    view = model.dense_view
    weights, biases = list(view.weights), list(view.biases)
    box = 3.0
    leaves = exact._regions(weights, biases, box)
    flat = x.reshape(len(x), -1)
    out = np.array([exact.exact_distance(leaves, p, int(k)) for p, k in
                    zip(flat, labels, strict=True)])  # fmt: skip
    valid = out <= box - np.abs(flat).max(axis=1)  # the whole ball inside the enumerated box
    return np.where(valid, out, np.nan)


# --------------------------------------------------------------------------- theorem claims


def _audit(path, data, only, eps, options, samples, outcome_only=False, norm="l2"):
    from audit_core.console import QuietUI
    from audit_core.plugins import PluginHost
    from audit_core.runner import run_audit
    from audit_core.settings import Settings

    settings = Settings(
        models=(str(path),),
        data=str(data),
        only=only,
        samples=samples,
        eps=eps,
        norm=norm,
        workers=1,
        analysis_options=options,
    )
    host = PluginHost()
    host.load_entry_points()
    outcome = run_audit(settings, host, QuietUI())
    if outcome_only:
        return outcome
    return {key: arrays for (_, key), arrays in outcome.exports.items()}


def _audit_data(tmp: Path, name: str, x: np.ndarray, y: np.ndarray):
    """The points as an audit-data file, and the float64 points the analyses will read."""
    from audit_core.testing import save_dataset

    x32 = np.asarray(x, dtype=np.float32)
    bounds = {"lower": float(x32.min()) - 1.0, "upper": float(x32.max()) + 1.0}
    path = save_dataset(tmp / f"{name}.npz", x32, y, **bounds)
    return path, x32.astype(np.float64)


def _kkt(case: Case, model, x, tmp: Path, evidence: Evidence) -> None:
    """KKT universal flip: witnesses misclassified, c minimal."""
    from certificate_campaign import adversarial

    labels = model.graph.predict(x)  # a labelling the net fits: every margin positive
    path, xs = _audit_data(tmp, "kkt", x, labels)
    exports = _audit(model.path, path, ("kkt",), (0.1,), {}, len(x))
    if "kkt" not in exports:
        evidence.count("kkt: not applicable", "-", 1)
        return
    arrays = exports["kkt"]
    z, c, c_in = arrays["z"], float(arrays["c"]), float(arrays["c_inside"])
    mask, flipped = arrays["margin_mask"].astype(bool), arrays["flipped_at_c"].astype(bool)
    if not np.isfinite(c_in) or np.linalg.norm(z) == 0:
        evidence.count("kkt: no universal flip claimed", "-", 1)
        return
    u = z / np.linalg.norm(z)
    y_pm = 2.0 * labels - 1.0
    flat = xs.reshape(len(xs), -1)
    moved = (flat - y_pm[:, None] * c_in * u).reshape(xs.shape)
    ours, deployed = adversarial(model, moved, labels)
    claim = "kkt: point flipped at c (universal direction)"
    evidence.count(claim, "float64 onnx2torch", flipped.sum(), (flipped & ~ours).sum(),
                   f"{case.name}: kkt witnesses not flipped (float64)")  # fmt: skip
    evidence.count(claim, "onnxruntime", flipped.sum(), (flipped & ~deployed).sum(),
                   f"{case.name}: kkt witnesses not flipped (onnxruntime)")  # fmt: skip
    for factor in (1 - 1e-6, 0.5):
        before = (flat - y_pm[:, None] * factor * c * u).reshape(xs.shape)
        ours, _ = adversarial(model, before[mask], labels[mask])
        evidence.count("kkt: c is the smallest flipping the margin set", "float64 onnx2torch", 1,
                       int(ours.all()), f"{case.name}: all of I flipped at {factor} c")  # fmt: skip


def _lower_bounds(case: Case, model, x, tmp: Path, evidence: Evidence) -> None:
    """Every prefix's lower bounds <= the robust loss the attacks achieve on the model."""
    import torch

    from audit_core.attacks import MinimalAttackConfig, minimal_adversarial, pgd
    from certificate_campaign import torchattacks_available, torchattacks_points, verified_distance

    per_class = LOWER_BOUND_MODELS[case.name]
    if case.quick:
        per_class = 8
    labels = _true_labels(case, model, x)
    keep = np.concatenate([np.flatnonzero(labels == k)[:per_class] if per_class else
                           np.flatnonzero(labels == k) for k in np.unique(labels)])  # fmt: skip
    keep = np.sort(keep)
    path, xs = _audit_data(tmp, "lower", x[keep], labels[keep])
    y = labels[keep]
    scale = np.linalg.norm(xs.reshape(len(xs), -1), axis=1).mean()
    grid = [round(float(v), 6) for v in np.linspace(0.0, 0.5 * scale, 6 if case.quick else 9)]
    options = {"lower-bounds": {"eps_grid": grid, "max_seconds": 10.0 if case.quick else 90.0}}
    exports = _audit(model.path, path, ("lower-bounds",), (grid[1],), options, len(xs))
    if "lower_bounds" not in exports:
        evidence.count("lower bounds: not applicable", "-", 1)
        return
    arrays = exports["lower_bounds"]
    a, b = (int(k) for k in arrays["classes"])
    rows = np.flatnonzero((y == a) | (y == b))
    pts, lab = xs[rows], y[rows]
    n = len(rows)
    xt, yt = torch.as_tensor(pts), torch.as_tensor(lab)
    config = MinimalAttackConfig(restarts=2, bisection_steps=8)
    minimal = minimal_adversarial(model.module, xt, yt, norm="l2", config=config)
    candidates = [minimal.x_adv]  # minimal-norm points count at every eps they lie within
    if torchattacks_available():
        reach = np.where(np.isfinite(minimal.distance), minimal.distance, 1.0)
        for attacker in ("torchattacks DeepFool", "torchattacks CW-L2"):
            candidates.append(torchattacks_points(model.module, pts, lab, 4 * reach, attacker))
    clean_lost, _ = verified_distance(model, pts, lab, pts, "l2")
    for e, eps in enumerate(arrays["eps"]):
        at_eps = list(candidates)
        if eps > 0:
            radius = torch.full((n,), float(eps), dtype=torch.float64)
            at_eps.append(pgd(model.module, xt, yt, radius, norm="l2", steps=40, restarts=2,
                              step_size=0.1 * radius).x_adv.numpy())  # fmt: skip
            if torchattacks_available():
                at_eps.append(torchattacks_points(model.module, pts, lab, np.full(n, 2 * eps),
                                                  "torchattacks PGD-L2"))  # fmt: skip
        lost = np.isfinite(clean_lost)
        entropy = _cross_entropy(model, pts, lab)
        for points in at_eps:
            ours, deployed = verified_distance(model, pts, lab, points, "l2")
            inside = np.linalg.norm((points - pts).reshape(n, -1), axis=1) <= eps
            lost |= inside & (np.isfinite(ours) | np.isfinite(deployed))
            entropy = np.where(inside, np.maximum(entropy, _cross_entropy(model, points, lab)),
                               entropy)  # fmt: skip
        for key, empirical in (
            ("zero_one_bound", lost.mean()),
            ("cross_entropy_bound", entropy.mean()),
        ):
            bounds = arrays[key][:, e]
            bad = bounds > empirical + 1e-9
            what = "0-1" if key == "zero_one_bound" else "cross-entropy"
            evidence.count(f"lower bound on robust {what} loss (every prefix)",
                           "union of the attacks (both implementations)", len(bounds), bad.sum(),
                           f"{case.name}: {what} bound {bounds.max():.4g} > attacks' "
                           f"{empirical:.4g} at eps {eps}")  # fmt: skip
    evidence.ran("lower-bounds attacks (own PGD-l2, torchattacks PGD-L2 per eps)", n * len(grid))


def _cross_entropy(model, points, labels) -> np.ndarray:
    """The model's own cross-entropy (nats) at the points: softmax over its logits, or the
    sigmoid of a single logit, float64."""
    import torch

    with torch.no_grad():
        logits = model.module(torch.as_tensor(points)).reshape(len(points), -1)
    if logits.shape[1] == 1:
        logits = torch.cat([torch.zeros_like(logits), logits], dim=1)
    loss = torch.nn.functional.cross_entropy(logits, torch.as_tensor(labels), reduction="none")
    return loss.numpy()


def _true_labels(case: Case, model, x) -> np.ndarray:
    """The dataset's labels where the samples are its points, else the model's predictions."""
    import audit_model_zoo as zoo

    if case.kind == "zoo":
        data = np.load(zoo.dataset_path(case.source))
        flat = data["x"].reshape(len(data["x"]), -1).astype(np.float64)
        lookup = {row.tobytes(): int(label) for row, label in zip(flat, data["y"], strict=True)}
        predicted = model.graph.predict(x)
        return np.array([lookup.get(row.tobytes(), p) for row, p in
                         zip(x.reshape(len(x), -1), predicted, strict=True)])  # fmt: skip
    if case.kind == "mnist":
        images = np.load(CORPUS / "mnistfc/mnist_samples.npz")
        lookup = {row.tobytes(): int(k) for row, k in
                  zip(images["x"].astype(np.float64), images["y"], strict=True)}  # fmt: skip
        predicted = model.graph.predict(x)
        return np.array([lookup.get(row.tobytes(), p) for row, p in
                         zip(x.reshape(len(x), -1), predicted, strict=True)])  # fmt: skip
    return model.graph.predict(x)


def _transfer(case: Case, model, x, tmp: Path, evidence: Evidence) -> None:
    """convex-transfer's exact flip scales (proven convex regions) and linear-transfer's
    Theorem 5 bound (affine models)."""
    from certificate_campaign import adversarial

    labels = _true_labels(case, model, x)
    count = 60 if case.quick else 300
    path, xs = _audit_data(tmp, "transfer", x[:count], labels[:count])
    y = labels[:count]
    exports = _audit(model.path, path, ("convex-transfer", "linear-transfer"), (0.5,), {},
                     len(xs))  # fmt: skip
    flat = xs.reshape(len(xs), -1)
    convex = exports.get("convex-transfer")
    if convex is not None and str(convex["structure"]) != "none":
        for k, v in zip(convex["classes"], convex["v"], strict=True):
            rows = convex["point_class"] == k
            index, scale = convex["point_index"][rows], convex["point_scale"][rows]
            finite = np.isfinite(scale) & (scale > 0)
            index, scale = index[finite], scale[finite]
            if not index.size:
                continue
            cls = np.full(index.size, int(k))

            def at(factor, index=index, scale=scale, v=v):
                return (flat[index] + (scale * factor)[:, None] * v).reshape(-1, *xs.shape[1:])

            ours, _ = adversarial(model, at(1 - 1e-6), cls)
            evidence.count(
                "convex-transfer: exact flip scale (kept before)",
                "float64 onnx2torch",
                index.size,
                ours.sum(),
                f"{case.name}: flipped before c, class {k}",
            )
            for factor, what in ((1 + 1e-6, "lost just after"), (2.0, "never back: 2c"),
                                 (4.0, "never back: 4c"), (16.0, "never back: 16c")):  # fmt: skip
                ours, deployed = adversarial(model, at(factor), cls)
                evidence.count(f"convex-transfer: exact flip scale ({what})",
                               "float64 onnx2torch", index.size, (~ours).sum(),
                               f"{case.name}: class {k} kept at {factor} c")  # fmt: skip
                if factor > 1 + 1e-5:
                    evidence.count(
                        f"convex-transfer: exact flip scale ({what})",
                        "onnxruntime",
                        index.size,
                        (~deployed).sum(),
                        f"{case.name}: class {k} kept at {factor} c (runtime)",
                    )
            _, deployed = adversarial(model, at(1 + 1e-3), cls)
            evidence.count("convex-transfer: exact flip scale (lost just after)",
                           "onnxruntime (at 1.001 c)", index.size, (~deployed).sum(),
                           f"{case.name}: class {k} kept at 1.001 c (runtime)")  # fmt: skip
            members = np.flatnonzero(model.graph.predict(xs) == k)
            if members.size and np.isfinite(convex["point_scale"][rows]).all():
                universal = scale.max() * (1 + 1e-6)
                moved = (flat[members] + universal * v).reshape(-1, *xs.shape[1:])
                ours, deployed = adversarial(model, moved, np.full(members.size, int(k)))
                evidence.count("convex-transfer: universal scale (Theorem 11)",
                               "float64 onnx2torch", members.size, (~ours).sum(),
                               f"{case.name}: universal scale misses class {k}")  # fmt: skip
    linear = exports.get("linear-transfer")
    if linear is not None and "bound_c" in linear:
        pairs, w_star = linear["pairs"], linear["w_star"]
        for p, i, c in zip(linear["bound_pair"], linear["bound_index"], linear["bound_c"],
                           strict=True):  # fmt: skip
            k = int(pairs[p][0])
            sign = 1.0 if y[i] == k else -1.0
            direction = -sign * w_star[p]
            label = np.array([y[i]])
            for factor, attacker in ((1 + 1e-9, "float64 onnx2torch"), (4.0, "float64 onnx2torch"),
                                     (1 + 1e-4, "onnxruntime (at 1.0001 bound)")):  # fmt: skip
                point = (flat[i] + (c * factor + 1e-12) * direction).reshape(1, *xs.shape[1:])
                ours, deployed = adversarial(model, point, label)
                bad = not (deployed[0] if attacker.startswith("onnx") else ours[0])
                evidence.count(
                    "linear-transfer: Theorem 5 bound flips the point",
                    attacker,
                    1,
                    int(bad),
                    f"{case.name}: Theorem 5 point {i} kept at {factor}",
                )


# --------------------------------------------------------------------------- models, samples


def _model_path(case: Case, tmp: Path) -> Path:
    import audit_model_zoo as zoo
    from audit_core.testing import mlp_onnx, random_mlp

    if case.kind == "zoo":
        return zoo.model_path(case.source)
    if case.kind in ("mnist", "line", "acas"):
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
    elif case.kind == "acas":
        flat = rng.uniform(-0.5, 0.5, (case.count, int(np.prod(shape))))
    elif case.kind == "line":
        flat = np.linspace(-3.0, 3.0, case.count)[:, None]
    else:
        flat = rng.uniform(-1.0, 1.0, (case.count, int(np.prod(shape))))
    if case.kind == "zoo" and any(type(n.layer).__name__ == "MaxPool" for n in model.graph.nodes):
        half = len(flat) // 2
        flat[half:] = np.minimum(flat[half:] + rng.uniform(0.0, 0.05, flat[half:].shape), 1.0)
    return flat.reshape(len(flat), *shape)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    from certificate_campaign import torchattacks_available

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI size (about 330 pairs)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument("--only", default="", help="comma-separated model names (debugging)")
    args = parser.parse_args(argv)
    clock = time.perf_counter()
    todo = cases(args.quick)
    if args.only:
        todo = [c for c in todo if c.name in args.only.split(",")]
    todo.sort(key=lambda c: c.kind != "mnist")  # the slowest first
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_case, case) for case in todo]
        for done in as_completed(futures):  # progress on stderr
            row = done.result()
            print(
                f"{row.name}: {row.pairs} pairs, {row.seconds:.0f} s, "
                f"{row.evidence.total_violations} violations",
                file=sys.stderr,
                flush=True,
            )
        rows = [f.result() for f in futures]
    if not torchattacks_available():
        print("torchattacks is not installed: the second implementation did not run")
    evidence = _print(rows, time.perf_counter() - clock)
    return 1 if evidence.total_violations else 0


def _print(rows: list[Row], seconds: float) -> Evidence:
    print(f"{'model':<26}{'pairs':>7}{'claims':>9}{'viol':>6}{'s':>8}")
    total = Evidence()
    for r in rows:
        claims = sum(r.evidence.claims.values())
        print(f"{r.name:<26}{r.pairs:>7}{claims:>9}{r.evidence.total_violations:>6}"
              f"{r.seconds:>8.1f}  {r.note}")  # fmt: skip
        total.merge(r.evidence)
    print(f"\n{'claim':<54}{'attacker':<44}{'checked':>9}{'viol':>6}")
    for claim, attacker in sorted(total.claims):
        checked = total.claims[claim, attacker]
        if not checked:
            continue
        print(f"{claim:<54}{attacker:<44}{checked:>9}{total.violations[claim, attacker]:>6}")
    print(f"\n{'attacker':<66}{'runs':>9}{'adversarial':>12}")
    for attacker in sorted(total.runs):
        print(f"{attacker:<66}{total.runs[attacker]:>9}{total.found[attacker]:>12}")
    pairs = sum(r.pairs for r in rows)
    print(f"\npairs: {pairs} (model, sample) pairs over {len(rows)} models; "
          f"claims checked: {sum(total.claims.values())}; "
          f"violations: {total.total_violations} (must be 0)")  # fmt: skip
    for line in total.details:
        print("VIOLATION", line)
    print(f"wall time: {seconds:.0f} s")
    return total


if __name__ == "__main__":
    sys.exit(main())
