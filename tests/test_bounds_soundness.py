"""Soundness of bound propagation, the certified radius and the complete search, against
independent evidence (``soundness_oracles``: our own PGD on the layer graph in float64
with exact projection onto the ball or box within the input bounds, an onnxruntime
session built here, and the exact minimal adversarial distance of small nets by
enumerating their linear regions with LP/QP solvers).

* every certified radius (CROWN and optimised slopes, l2 and linf): PGD finds no point
  of the certified set with a margin <= 0, onnxruntime keeps the class at PGD's worst
  point; and every margin lower bound (CROWN, alpha-CROWN, full alpha-CROWN) at a
  radius beyond the certified one stays below PGD's value of that margin;
* every verdict of ``BranchAndBound.search``: certified -> PGD finds nothing;
  non-robust -> the counterexample lies in the set and onnxruntime misclassifies it;
* exact distances: radii never exceed the true minimal adversarial distance, the
  search never certifies just beyond it nor calls non-robust just inside it; the
  audit's exported radii (``bp_radius``, ``search_radius``, exact ones) and verdicts
  agree with it end to end;
* corner cases: eps 0, huge and tiny eps, samples on the input bounds, unbounded
  inputs, single-logit models with either label, misclassified samples, tied logits,
  a ReLU whose pre-activation is exactly 0 at the sample, zero and very large weights,
  max pooling ties.

``AUDIT_SOUNDNESS=full`` runs the larger campaigns (``-m slow``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from soundness_nets import input_maxpool_net, prelu_steep_net, residual_net, strided_conv_net
from soundness_oracles import (
    DenseLayer,
    Runtime,
    dense_forward,
    distance,
    graph_forward,
    minimal_distance,
    onnx_dense_layers,
    pgd,
    predicted,
    spec_pgd,
)

import audit_model_zoo as zoo
from audit_core.bounds.input_set import InputSet
from audit_core.bounds.propagation import BoundPropagation
from audit_core.bounds.radius import RadiusBudget, certified_radius
from audit_core.bounds.search import CERTIFIED, NON_ROBUST, BranchAndBound, SearchBudget
from audit_core.bounds.verify import Verifier, margin_specs
from audit_core.onnx_import import load_onnx
from audit_core.testing import mlp_onnx, random_mlp, save_dataset
from graphs import hardsigmoid_mlp, leaky_mlp, padded_maxpool_cnn, prelu_clip_cnn
from helpers import corpus

FULL = os.environ.get("AUDIT_SOUNDNESS") == "full"
TOLERANCE = 1e-4
"""Logit tolerance of the slack (the fidelity default)."""
NORMS = ("l2", "linf")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------- models


def _zoo(name: str, count: int):
    def build(tmp: Path):
        data = np.load(zoo.dataset_path(name))
        rng = np.random.default_rng(1)
        x = data["x"].astype(np.float64)
        x = x[rng.choice(len(x), count, replace=False)].reshape(count, -1)
        return zoo.model_path(name), x, float(data["lower"]), float(data["upper"])

    return build


def _mnist(relative: str, count: int):
    def build(tmp: Path):
        x = np.load(corpus("mnistfc/mnist_samples.npz"))["x"].astype(np.float64)
        return corpus(relative), np.clip(x[:count], 0.0, 1.0), 0.0, 1.0

    return build


def _uniform(builder, count: int, dim: int, seed: int = 0, ties: bool = False):
    def build(tmp: Path):
        x = np.random.default_rng(seed).uniform(0.0, 1.0, (count, dim))
        if ties:  # a constant image ties every max-pooling window
            x[0] = 0.5
        return builder(tmp), x, 0.0, 1.0

    return build


def _acasxu(tmp: Path):
    x = np.array([[0.2, -0.1, 0.05, 0.3, -0.2], [-0.25, 0.3, 0.1, 0.4, 0.2]])
    return corpus("acasxu/ACASXU_run2a_1_1_batch_2000.onnx"), x, -np.inf, np.inf


MODELS = {
    "zoo-mlp2": _zoo("digits_mlp2", 3),
    "zoo-binary-fc3": _zoo("binary_fc3_benign", 2),
    "zoo-single-logit-sphere": _zoo("sphere_depth2", 3),
    "zoo-cnn-maxpool": _zoo("digits_cnn", 2),
    "zoo-resnet": _zoo("digits_resnet", 1),
    "corpus-mnist-256x2": _mnist("mnistfc/mnist-net_256x2.onnx", 2),
    "corpus-acasxu-unbounded": _acasxu,
    "leaky-relu": _uniform(leaky_mlp, 3, 6),
    "hardsigmoid": _uniform(hardsigmoid_mlp, 2, 6),
    "prelu-steep-clip": _uniform(prelu_steep_net, 3, 4),
    "residual-add-sub": _uniform(residual_net, 3, 5),
    "prelu-clip-cnn": _uniform(prelu_clip_cnn, 1, 64),
    "maxpool-pads-dilation": _uniform(padded_maxpool_cnn, 1, 64),
    "maxpool-on-input-ties": _uniform(input_maxpool_net, 2, 36, ties=True),
    "conv-stride-dilation-ceil": _uniform(strided_conv_net, 1, 162),
}
LARGE = {"zoo-resnet", "corpus-mnist-256x2", "corpus-acasxu-unbounded"}
"""Only in the full campaign (``AUDIT_SOUNDNESS=full``): seconds per test, and the search's
root bounds overrun its budget on them."""
CONVOLUTIONAL = {"zoo-cnn-maxpool", "zoo-resnet", "prelu-clip-cnn", "maxpool-pads-dilation",
                 "maxpool-on-input-ties", "conv-stride-dilation-ceil"}  # fmt: skip
"""Full alpha-CROWN (slopes for every intermediate bound) takes minutes on these: only in
the full campaign."""


def _model_params() -> list:
    slow = [pytest.mark.slow, pytest.mark.skipif(not FULL, reason="AUDIT_SOUNDNESS=full")]
    return [pytest.param(name, marks=slow if name in LARGE else ()) for name in sorted(MODELS)]


@pytest.fixture(params=_model_params())
def model(request, tmp_path):
    path, x, lower, upper = MODELS[request.param](tmp_path)
    graph = load_onnx(path).graph
    return request.param, path, graph, x, lower, upper


def _diameter(graph, norm: str, lower: float, upper: float) -> float:
    span = upper - lower if np.isfinite(upper - lower) else 4.0
    return span * (np.sqrt(graph.input_size) if norm == "l2" else 1.0)


def _specs(graph, labels: np.ndarray) -> np.ndarray:
    return margin_specs(graph.num_outputs, torch.as_tensor(labels)).numpy()


# --------------------------------------------------------------------------- radii


@pytest.mark.parametrize("norm", NORMS)
def test_no_attack_inside_a_propagation_radius_and_every_bound_below_pgd(model, norm) -> None:
    name, path, graph, x, lower, upper = model
    verifier = Verifier(BoundPropagation(graph), TOLERANCE)
    runtime = Runtime(path)
    forward = graph_forward(graph)
    labels = graph.predict(x.reshape(len(x), *graph.input_shape))
    xt, yt = torch.as_tensor(x), torch.as_tensor(labels)
    stop = torch.full((len(x),), _diameter(graph, norm, lower, upper))
    zero = torch.zeros(len(x), dtype=torch.float64)
    radii = {
        "crown": certified_radius(verifier, xt, yt, norm, lower, upper, zero, stop,
                                  RadiusBudget(steps=12, alpha_steps=0)),
        "alpha": certified_radius(verifier, xt, yt, norm, lower, upper, zero, stop,
                                  RadiusBudget(steps=12, alpha_steps=4, alpha_iterations=15)),
    }  # fmt: skip
    for method, radius in radii.items():
        radius = radius.numpy()
        positive = radius > 0
        if not positive.any():
            continue
        found = pgd(forward, x[positive], labels[positive], radius[positive], norm, lower, upper,
                    steps=50, restarts=3)  # fmt: skip
        assert (found.margin > 0).all(), f"{name} {norm} {method}: PGD flips inside {radius}"
        assert (distance(found.point, x[positive], norm) <= radius[positive] * (1 + 1e-9)).all()
        kept = runtime.predict(found.point) == labels[positive]
        assert kept.all(), f"{name} {norm} {method}: onnxruntime flips inside the radius"
    assert (radii["alpha"] >= radii["crown"]).all()

    # beyond the certified radius the bounds are still bounds: below PGD, margin by margin
    eps = np.maximum(1.5 * radii["alpha"].numpy(), 0.02 * _diameter(graph, norm, lower, upper))
    inputs = InputSet.around(xt, torch.as_tensor(eps), norm, lower, upper)
    bounds = verifier.bp.intermediate(inputs)
    lower_bounds = {
        "crown": verifier.margins(inputs, yt, bounds).lower,
        "alpha": verifier.optimized_margins(inputs, yt, bounds, iterations=10).lower,
    }
    if name not in CONVOLUTIONAL or FULL:
        lower_bounds["full-alpha"] = verifier.optimized_bounds(inputs, yt, iterations=10)[1].lower
    attacked = spec_pgd(forward, x, _specs(graph, labels), eps, norm, lower, upper,
                        steps=40, restarts=2)  # fmt: skip
    scale = np.maximum(1.0, np.abs(attacked))
    for method, bound in lower_bounds.items():
        excess = bound.detach().numpy() - attacked
        assert (excess <= 1e-9 * scale).all(), f"{name} {norm} {method}: bound above PGD {excess}"


# --------------------------------------------------------------------------- search verdicts


def _check_verdict(outcome, graph, runtime, x, label, eps, norm, lower, upper, name) -> None:
    """The independent evidence behind one verdict of the search."""
    if outcome.verdict == CERTIFIED:
        found = pgd(graph_forward(graph), x[None], np.array([label]), eps, norm, lower, upper,
                    steps=60, restarts=4)  # fmt: skip
        assert found.margin[0] > 0, f"{name}: certified at {norm} {eps:g}, PGD flips it"
        assert runtime.predict(found.point)[0] == label, f"{name}: onnxruntime flips it"
    elif outcome.verdict == NON_ROBUST:
        point = outcome.counterexample
        assert point is not None and point.shape == (x.size,)
        assert distance(point[None], x[None], norm)[0] <= eps, f"{name}: outside the set"
        assert point.min() >= lower and point.max() <= upper, f"{name}: outside the bounds"
        assert runtime.predict(point[None])[0] != label, f"{name}: onnxruntime keeps the label"


SEARCH_EPS = {"l2": (0.3, 0.6, 1.2), "linf": (0.01, 0.04, 0.1)}
"""Radii, relative to the sample's own scale: a mix of certified and non-robust."""


@pytest.mark.parametrize("norm", NORMS)
def test_every_search_verdict_is_backed_by_pgd_or_onnxruntime(model, norm) -> None:
    name, path, graph, x, lower, upper = model
    runtime = Runtime(path)
    search = BranchAndBound(Verifier(BoundPropagation(graph), TOLERANCE), runtime.confirm)
    labels = graph.predict(x.reshape(len(x), *graph.input_shape))
    seconds = 0.25
    per_pixel = np.sqrt(graph.input_size) if norm == "l2" else 1.0
    scale = _diameter(graph, norm, lower, upper) / per_pixel
    seen = []
    for row in range(min(len(x), 2 if FULL else 1)):
        for eps in SEARCH_EPS[norm]:
            eps = eps * scale
            outcome = search.search(x[row], int(labels[row]), eps, norm, lower, upper,
                                    SearchBudget(seconds=seconds))  # fmt: skip
            _check_verdict(outcome, graph, runtime, x[row], int(labels[row]), eps, norm, lower,
                           upper, name)  # fmt: skip
            seen.append(outcome.verdict)
    print(name, norm, "verdicts", seen)


# --------------------------------------------------------------------------- exact distances


def _random_net(tmp: Path, seed: int) -> tuple[Path, list[DenseLayer]]:
    """A 2-D or 3-D ReLU / LeakyReLU net with decision boundaries inside [0, 1]^d."""
    rng = np.random.default_rng(seed)
    dim = 2 + seed % 2
    sizes = [dim, int(rng.integers(5, 9)), int(rng.integers(4, 8)), 2 + seed % 3]
    weights, biases = random_mlp(sizes, seed=seed, scale=3.0)
    biases[0] = biases[0] - weights[0] @ np.full(dim, 0.5)
    activation = "LeakyRelu" if seed % 4 == 3 else "Relu"
    path = mlp_onnx(tmp / f"net{seed}.onnx", weights, biases, activation=activation)
    return path, onnx_dense_layers(path)


EXACT_SEEDS = range(16) if FULL else (0, 3)


@pytest.mark.parametrize("seed", EXACT_SEEDS)
def test_radii_and_verdicts_against_the_exact_distance_on_small_nets(tmp_path, seed) -> None:
    path, layers = _random_net(tmp_path, seed)
    graph = load_onnx(path).graph
    runtime = Runtime(path)
    verifier = Verifier(BoundPropagation(graph), TOLERANCE)
    search = BranchAndBound(verifier, runtime.confirm)
    rng = np.random.default_rng(100 + seed)
    x = rng.uniform(0.0, 1.0, (3, graph.input_size))
    labels = predicted(dense_forward(layers, x))
    assert (labels == graph.predict(x)).all()
    for norm in NORMS:
        exact = np.array([minimal_distance(layers, x[i], labels[i], norm, 0.0, 1.0, 2.0)
                          for i in range(len(x))])  # fmt: skip
        radius = certified_radius(
            verifier, torch.as_tensor(x), torch.as_tensor(labels), norm, 0.0, 1.0,
            torch.zeros(len(x)), torch.full((len(x),), 2.0), RadiusBudget(steps=16),
        ).numpy()  # fmt: skip
        assert (radius <= exact).all(), f"{norm}: radius {radius} above exact {exact}"
        for i in np.flatnonzero(np.isfinite(exact)):
            for factor in (0.98, 1.02):
                eps = float(exact[i] * factor)
                outcome = search.search(x[i], int(labels[i]), eps, norm, 0.0, 1.0,
                                        SearchBudget(seconds=0.5))  # fmt: skip
                if factor > 1:
                    assert outcome.verdict != CERTIFIED, f"{norm}: certified beyond {exact[i]}"
                else:
                    assert outcome.verdict != NON_ROBUST, f"{norm}: non-robust within {exact[i]}"
                _check_verdict(outcome, graph, runtime, x[i], int(labels[i]), eps, norm, 0.0,
                               1.0, f"net{seed}")  # fmt: skip


@pytest.mark.parametrize("name", ["test_nano", "test_tiny", "test_small"])
def test_one_dimensional_corpus_nets_against_the_exact_distance(name) -> None:
    """The 1-D corpus nets on unbounded inputs: radii below the exact distance to the
    nearest flip on the line, the search never certifying beyond it."""
    path = corpus(f"test/{name}.onnx")
    layers = onnx_dense_layers(path)
    graph = load_onnx(path).graph
    runtime = Runtime(path)
    verifier = Verifier(BoundPropagation(graph), TOLERANCE)
    search = BranchAndBound(verifier, runtime.confirm)
    x = np.linspace(-3.0, 3.0, 7)[:, None]
    labels = predicted(dense_forward(layers, x))
    assert (labels == graph.predict(x)).all()
    inf = float("inf")
    for norm in NORMS:
        exact = np.array([minimal_distance(layers, x[i], labels[i], norm, -inf, inf, 8.0)
                          for i in range(len(x))])  # fmt: skip
        radius = certified_radius(
            verifier, torch.as_tensor(x), torch.as_tensor(labels), norm, -inf, inf,
            torch.zeros(len(x)), torch.full((len(x),), 8.0), RadiusBudget(steps=20),
        ).numpy()  # fmt: skip
        assert (radius <= exact).all(), f"{name} {norm}: radius {radius} above exact {exact}"
        for i in np.flatnonzero(np.isfinite(exact) & (exact > 0)):
            outcome = search.search(x[i], int(labels[i]), float(exact[i]) * 1.01, norm, -inf, inf,
                                    SearchBudget(seconds=0.25))  # fmt: skip
            assert outcome.verdict != CERTIFIED
            _check_verdict(outcome, graph, runtime, x[i], int(labels[i]), exact[i] * 1.01, norm,
                           -inf, inf, name)  # fmt: skip


@pytest.fixture
def run_certificates(run_audit, monkeypatch):
    monkeypatch.setenv("AUDIT_PLUGINS", "certificates")
    return run_audit


@pytest.mark.parametrize("norm", NORMS)
def test_exported_radii_and_verdicts_agree_with_the_exact_distance(
    run_certificates, tmp_path, norm
) -> None:
    """End to end (``audit --export``, effort thorough): every exported radius is below the
    exact distance, a radius marked exact is within the tolerance of it, and every
    verdict at every eps agrees with it."""
    path, layers = _random_net(tmp_path, 21)
    rng = np.random.default_rng(7)
    x = rng.uniform(0.0, 1.0, (8, len(layers[0].weight[0])))
    y = predicted(dense_forward(layers, x))
    y[0] = (y[0] + 1) % len(layers[-1].bias)  # one misclassified sample
    data = save_dataset(tmp_path / "data.npz", x, y, lower=0.0, upper=1.0)
    eps = (0.05, 0.1, 0.2) if norm == "l2" else (0.03, 0.08, 0.15)
    run = run_certificates(
        path, "--data", data, "--norm", norm, "--eps", ",".join(map(str, eps)),
        "--export", "exp", "-o", "certificates.effort=thorough",
        "-o", "certificates.search_seconds=2",
    )  # fmt: skip
    assert run.exit_code in (0, 1), run.stderr
    arrays = np.load(tmp_path / "exp" / "certificates.npz")
    tolerance = 0.01  # exact_tolerance's default
    xs = x.astype(np.float32).astype(np.float64)
    correct = arrays["predicted"] == arrays["label"]
    exact = np.array([minimal_distance(layers, xs[i], arrays["predicted"][i], norm, 0.0, 1.0, 2.0)
                      for i in range(len(x))])  # fmt: skip
    for key in ("bp_radius", "search_radius", "best_radius"):
        assert (arrays[key] <= exact).all(), f"{key} {arrays[key]} above exact {exact}"
    marked = arrays["search_exact"]
    assert marked.any(), "the search closed no gap on a 2-D net"
    assert (arrays["best_radius"][marked] >= (1 - tolerance) * exact[marked] - 1e-12).all()
    attack = arrays["attack_distance" if norm == "l2" else "attack_linf_distance"]
    assert (attack[correct] >= exact[correct] * (1 - 1e-6)).all()  # no attack beats the exact
    for row, e in zip(arrays["verdict"], eps, strict=True):
        assert (row[~correct] == -1).all()
        assert (exact[correct & (row == 1)] > e).all(), f"certified at {e}, exact {exact}"
        assert (exact[correct & (row == -1)] <= e).all(), f"non-robust at {e}, exact {exact}"
