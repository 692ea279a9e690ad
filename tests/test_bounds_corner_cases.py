"""Adversarial corner cases for bound propagation, the certified radius and the complete
search, each judged by independent evidence (``soundness_oracles``): eps 0, tiny and
huge eps, samples on the input bounds, unbounded inputs, single-logit models with
either label, misclassified samples, tied logits, a ReLU whose pre-activation is
exactly 0 at the sample, zero and very large weights.

A wrong "certified" or "non-robust" is a bug even where the input is extreme. The
tests at the end reproduce bugs found here and fixed: NaN bounds counted as proofs, the
l2 dual overflowing, counterexamples outside the set by rounding, the root ignoring the
search's time budget.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from soundness_oracles import (
    Runtime,
    distance,
    exact_distance,
    graph_forward,
    onnx_dense_layers,
    pgd,
)

from audit_core.bounds.input_set import InputSet
from audit_core.bounds.propagation import BoundPropagation
from audit_core.bounds.radius import RadiusBudget, certified_radius
from audit_core.bounds.search import CERTIFIED, NON_ROBUST, BranchAndBound, SearchBudget
from audit_core.bounds.verify import Verifier
from audit_core.onnx_import import load_onnx
from audit_core.testing import mlp_onnx, random_mlp, save_dataset

TOLERANCE = 1e-4
INF = float("inf")
NORMS = ("l2", "linf")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Net:
    """An onnx file with its layer graph, runtime, verifier and search."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.graph = load_onnx(path).graph
        self.runtime = Runtime(path)
        self.verifier = Verifier(BoundPropagation(self.graph), TOLERANCE)
        self.search = BranchAndBound(self.verifier, self.runtime.confirm)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.graph.predict(x.reshape(len(x), *self.graph.input_shape))

    def decide(self, x, label, eps, norm, lower=0.0, upper=1.0, seconds=0.25):
        outcome = self.search.search(x, int(label), eps, norm, lower, upper,
                                     SearchBudget(seconds=seconds))  # fmt: skip
        self.check(outcome, x, label, eps, norm, lower, upper)
        return outcome

    def check(self, outcome, x, label, eps, norm, lower, upper) -> None:
        """Certified: PGD (float64) and onnxruntime at PGD's worst point keep the label;
        non-robust: the counterexample is in the set (to 4 ulp) and fools onnxruntime."""
        if outcome.verdict == CERTIFIED:
            found = pgd(graph_forward(self.graph), x[None], np.array([label]), eps, norm, lower,
                        upper, steps=40, restarts=3)  # fmt: skip
            assert found.margin[0] > 0, f"certified at {norm} {eps:g}: PGD flips the label"
            assert self.runtime.predict(found.point)[0] == label
        elif outcome.verdict == NON_ROBUST:
            point = outcome.counterexample
            assert distance(point[None], x[None], norm)[0] <= eps  # exactly, in float64
            assert point.min() >= lower and point.max() <= upper
            assert self.runtime.predict(point[None])[0] != label

    def radius(self, x, labels, norm, lower=0.0, upper=1.0, stop=2.0) -> np.ndarray:
        return certified_radius(
            self.verifier, torch.as_tensor(x), torch.as_tensor(labels), norm, lower, upper,
            torch.zeros(len(x)), torch.full((len(x),), stop), RadiusBudget(steps=12),
        ).numpy()  # fmt: skip

    def assert_radius_sound(self, x, labels, norm, lower=0.0, upper=1.0, stop=2.0) -> np.ndarray:
        radius = self.radius(x, labels, norm, lower, upper, stop)
        positive = radius > 0
        if positive.any():
            found = pgd(graph_forward(self.graph), x[positive], labels[positive], radius[positive],
                        norm, lower, upper, steps=40, restarts=3)  # fmt: skip
            assert (found.margin > 0).all(), f"{norm}: PGD flips inside {radius}"
            assert (self.runtime.predict(found.point) == labels[positive]).all()
        return radius


def _ulps(x: np.ndarray, eps: float) -> float:
    """Rounding slack of ``InputSet.argmin``'s points (a minimiser, not a counterexample:
    those are inside exactly): a few ulps of their coordinates."""
    return 4 * float(np.spacing(np.abs(x).max() + eps)) * np.sqrt(x.size)


def _adversary_in_box(net: Net, x: np.ndarray, label: int, norm: str = "linf") -> bool:
    """PGD over the whole box [0, 1]^d (the set of any eps beyond its diameter) finds a
    point the model does not give ``label``."""
    eps = np.sqrt(x.size) if norm == "l2" else 1.0
    found = pgd(graph_forward(net.graph), x[None], np.array([label]), eps, norm,
                steps=60, restarts=6)  # fmt: skip
    return bool(found.margin[0] < 0)


def _mlp(tmp: Path, name: str, weights, biases, **kwargs) -> Net:
    return Net(mlp_onnx(tmp / f"{name}.onnx", weights, biases, **kwargs))


@pytest.fixture
def net(tmp_path) -> Net:
    """A 3-8-8-3 ReLU net whose classes all meet [0, 1]^3."""
    weights, biases = random_mlp([3, 8, 8, 3], seed=1, scale=3.0)
    biases[0] = biases[0] - weights[0] @ np.full(3, 0.5)
    return _mlp(tmp_path, "net", weights, biases)


# --------------------------------------------------------------------------- eps


@pytest.mark.parametrize("norm", NORMS)
def test_eps_zero_and_eps_near_float64_precision(net, norm) -> None:
    """At eps 0 the set is the sample: certified only where its margin is positive, a
    counterexample only the sample itself; radii of a misclassified label are 0."""
    x = np.random.default_rng(0).uniform(0.0, 1.0, (2, 3))
    labels = net.predict(x)
    wrong = (labels + 1) % 3
    for eps in (0.0, 5e-324, 1e-300, 1e-17, 1e-12):
        for row in range(len(x)):
            right = net.decide(x[row], labels[row], eps, norm)
            assert right.verdict != NON_ROBUST  # nothing is that close to a boundary here
            bad = net.decide(x[row], wrong[row], eps, norm)
            assert bad.verdict != CERTIFIED
    assert (net.radius(x, wrong, norm) == 0).all()


@pytest.mark.parametrize("norm", NORMS)
def test_samples_on_the_input_bounds_and_unbounded_inputs(net, norm) -> None:
    corners = np.array([[0, 0, 0], [1, 1, 1], [0, 1, 0.5], [1, 0, 1], [0.5, 0, 1]], float)
    labels = net.predict(corners)
    net.assert_radius_sound(corners, labels, norm)
    net.assert_radius_sound(corners, labels, norm, -INF, INF, stop=4.0)
    for row in range(len(corners)):
        for eps in (0.1, 0.4):
            net.decide(corners[row], labels[row], eps, norm)
            net.decide(corners[row], labels[row], eps, norm, -INF, INF)


@pytest.mark.parametrize("norm", NORMS)
def test_huge_eps_within_finite_bounds_covers_the_whole_box(net, norm) -> None:
    """eps far beyond the box's diameter is the box itself: the verdict must be the one
    at the diameter (here non-robust: an adversarial point exists in [0, 1]^3)."""
    x = np.array([0.3, 0.5, 0.7])
    label = int(net.predict(x[None])[0])
    assert _adversary_in_box(net, x, label)
    for eps in (10.0, 1e10, 1e100):
        assert net.decide(x, label, eps, norm, seconds=1.0).verdict != CERTIFIED


HUGE = [
    pytest.param("l2", 1e200, 0.0, 1.0, id="l2-1e200-within-[0,1]"),
    pytest.param("l2", INF, 0.0, 1.0, id="l2-inf-within-[0,1]"),
    pytest.param("l2", 1e20, -INF, INF, id="l2-1e20-unbounded"),
    pytest.param("linf", INF, -INF, INF, id="linf-inf-unbounded"),
]


@pytest.mark.parametrize(("norm", "eps", "lower", "upper"), HUGE)
def test_huge_eps_is_never_certified_when_an_adversarial_example_exists(
    net, norm, eps, lower, upper
) -> None:
    x = np.array([0.3, 0.5, 0.7])
    label = int(net.predict(x[None])[0])
    assert _adversary_in_box(net, x, label)
    outcome = net.search.search(x, label, eps, norm, lower, upper, SearchBudget(seconds=1.0))
    assert outcome.verdict != CERTIFIED


def test_audit_never_certifies_a_huge_eps_end_to_end(run_audit, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("AUDIT_PLUGINS", "certificates")
    weights, biases = random_mlp([3, 8, 8, 3], seed=1)
    net = _mlp(tmp_path, "m", weights, biases)
    x = np.random.default_rng(0).uniform(0.0, 1.0, (6, 3)).astype(np.float32).astype(np.float64)
    y = net.predict(x)
    # every sample has an adversarial example in the box, at l2 distance < sqrt(3)
    assert all(_adversary_in_box(net, x[i], int(y[i]), "l2") for i in range(len(x)))
    data = save_dataset(tmp_path / "d.npz", x, y, lower=0.0, upper=1.0)
    run = run_audit(net.path, "--data", data, "--eps", "0.5,1e200", "--export", "exp",
                    "-o", "certificates.search_seconds=1")  # fmt: skip
    assert run.exit_code in (0, 1), run.stderr
    arrays = np.load(tmp_path / "exp" / "certificates.npz")
    assert (arrays["verdict"][1] != 1).all()
    assert (arrays["best_radius"] < np.sqrt(3)).all()


# --------------------------------------------------------------------------- the input set


@pytest.mark.parametrize(
    ("eps", "lower", "upper", "method"),
    [
        pytest.param(0.0, 0.0, 1.0, "quick_minimum", id="quick-eps0"),
        pytest.param(5e-324, -INF, INF, "quick_minimum", id="quick-eps-denormal"),
        pytest.param(1e20, -INF, INF, "minimum", id="exact-eps1e20-unbounded"),
    ],
)
def test_l2_concretisation_is_a_finite_lower_bound_at_extreme_eps(eps, lower, upper, method):
    rng = np.random.default_rng(0)
    center = torch.as_tensor(rng.uniform(0.0, 1.0, (1, 5)))
    a = torch.as_tensor(rng.normal(size=(1, 3, 5)))
    inputs = InputSet.around(center, eps, "l2", lower, upper)
    value = getattr(inputs, method)(a)[0]
    at_center = a[0] @ center[0]
    truth = at_center - eps * a[0].norm(dim=1) if not np.isfinite(upper) else at_center
    assert torch.isfinite(value).all()
    assert (value <= truth + 1e-9 * truth.abs().clamp_min(1.0)).all()


@pytest.mark.parametrize("norm", NORMS)
def test_concretisation_never_exceeds_the_minimum_at_points_of_the_set(norm) -> None:
    """``minimum``, ``quick_minimum`` and ``argmin`` on hostile inputs: coefficients from 1e-12
    to 1e12 and exact zeros, centres on the bounds, eps from 1e-9 to 1e3; the bound is at
    most the value at ``argmin`` and at random points of the set, ``argmin`` is in the set."""
    rng = np.random.default_rng(3)
    for trial in range(40):
        dim = int(rng.integers(1, 30))
        center = rng.uniform(0.0, 1.0, (1, dim))
        center[0, rng.random(dim) < 0.4] = rng.choice([0.0, 1.0])
        a = rng.normal(size=(1, 4, dim)) * 10.0 ** rng.uniform(-12, 12, size=(1, 4, dim))
        a[rng.random(a.shape) < 0.2] = 0.0
        eps = float(10.0 ** rng.uniform(-9, 3))
        inputs = InputSet.around(torch.as_tensor(center), eps, norm, 0.0, 1.0)
        at = torch.as_tensor(a)
        low, quick = inputs.minimum(at)[0].numpy(), inputs.quick_minimum(at)[0].numpy()
        points = inputs.argmin(at)[0].numpy()
        assert not np.isnan(low).any() and not np.isnan(quick).any()
        order = 2 if norm == "l2" else np.inf
        reach = np.linalg.norm(points - center, ord=order, axis=1)
        assert (reach <= eps * (1 + 1e-9) + _ulps(center, eps)).all()
        assert points.min() >= 0.0 and points.max() <= 1.0
        samples = _points_of(center[0], eps, norm, rng, 200)
        for j in range(4):
            values = np.concatenate([samples @ a[0, j], [points[j] @ a[0, j]]])
            scale = np.abs(a[0, j]).sum() + 1e-300
            assert low[j] <= values.min() + 1e-12 * scale, f"trial {trial} spec {j}"
            assert quick[j] <= values.min() + 1e-12 * scale, f"trial {trial} spec {j}"


def test_exact_l2_minimum_is_never_looser_than_the_quick_bound() -> None:
    rng = np.random.default_rng(3)
    for _ in range(6):  # the sixth instance of the hostile stream above
        dim = int(rng.integers(1, 30))
        center = rng.uniform(0.0, 1.0, (1, dim))
        center[0, rng.random(dim) < 0.4] = rng.choice([0.0, 1.0])
        a = rng.normal(size=(1, 4, dim)) * 10.0 ** rng.uniform(-12, 12, size=(1, 4, dim))
        a[rng.random(a.shape) < 0.2] = 0.0
        eps = float(10.0 ** rng.uniform(-9, 3))
    inputs = InputSet.around(torch.as_tensor(center), eps, "l2", 0.0, 1.0)
    at = torch.as_tensor(a)
    exact, quick = inputs.minimum(at)[0], inputs.quick_minimum(at)[0]
    assert torch.isfinite(quick).all()
    assert (exact >= quick - 1e-9 * quick.abs()).all()


def _points_of(center: np.ndarray, eps: float, norm: str, rng, count: int) -> np.ndarray:
    if norm == "linf":
        steps = rng.uniform(-eps, eps, (count, center.size))
    else:
        steps = rng.normal(size=(count, center.size))
        steps *= eps * rng.uniform(0, 1, (count, 1)) / np.linalg.norm(steps, axis=1, keepdims=True)
    return np.clip(center + steps, 0.0, 1.0)


# --------------------------------------------------------------------------- models


@pytest.mark.parametrize("label", [0, 1])
@pytest.mark.parametrize("norm", NORMS)
def test_single_logit_models_with_either_label(tmp_path, norm, label) -> None:
    weights, biases = random_mlp([3, 10, 1], seed=3, scale=3.0)
    biases[0] = biases[0] - weights[0] @ np.full(3, 0.5)
    net = _mlp(tmp_path, "binary", weights, biases)
    x = np.random.default_rng(2).uniform(0.0, 1.0, (400, 3))
    labels = net.predict(x)
    assert (labels == 0).any() and (labels == 1).any()
    mine = x[labels == label][:3]
    radius = net.assert_radius_sound(mine, np.full(len(mine), label), norm)
    assert (radius > 0).any()
    wrong = net.radius(mine, np.full(len(mine), 1 - label), norm)
    assert (wrong == 0).all()
    verdicts = []
    for row in range(len(mine)):
        for eps in (0.01, 0.05, 0.2):
            verdicts.append(net.decide(mine[row], label, eps, norm).verdict)
        assert net.decide(mine[row], 1 - label, 0.05, norm).verdict != CERTIFIED
    assert CERTIFIED in verdicts


@pytest.mark.parametrize("norm", NORMS)
def test_tied_logits_are_never_certified_for_either_tied_class(tmp_path, norm) -> None:
    """Logits 1 and 2 are equal everywhere: argmax picks 1, so label 1's margin against
    2 is identically 0 (no positive lower bound exists) and label 2 is never predicted."""
    weights, biases = random_mlp([3, 8, 3], seed=5)
    weights[-1][2], biases[-1][2] = weights[-1][1], biases[-1][1]
    biases[-1][0] -= 5.0
    net = _mlp(tmp_path, "tied", weights, biases)
    x = np.random.default_rng(1).uniform(0.0, 1.0, (3, 3))
    assert (net.predict(x) == 1).all() and (net.runtime.predict(x) == 1).all()
    for label in (1, 2):
        assert (net.radius(x, np.full(3, label), norm) == 0).all()
        for row in range(len(x)):
            for eps in (0.0, 0.01, 0.3):
                assert net.decide(x[row], label, eps, norm).verdict != CERTIFIED


@pytest.mark.parametrize("norm", NORMS)
def test_relu_pre_activation_exactly_zero_at_the_sample(tmp_path, norm) -> None:
    x0 = np.array([0.5, 0.25])
    weights, biases = random_mlp([2, 6, 6, 2], seed=18, scale=2.0)
    weights[0] = np.round(weights[0] * 16) / 16  # dyadic: W x0 is exact in float32
    biases[0] = -(weights[0] @ x0)  # every first-layer neuron sits on its kink
    net = _mlp(tmp_path, "kink", weights, biases)
    with torch.no_grad():
        hidden = net.graph.forward(torch.as_tensor(x0[None]), upto=1)
    assert (hidden == 0).all()
    label = net.predict(x0[None])
    layers = onnx_dense_layers(net.path)
    exact = exact_distance(layers, x0, int(label[0]), norm, 0.0, 1.0, 2.0)
    assert np.isfinite(exact)
    radius = net.assert_radius_sound(x0[None], label, norm)
    assert radius[0] <= exact
    for eps in (0.0, 1e-12, 0.5 * exact, 0.99 * exact, 1.01 * exact):
        outcome = net.decide(x0, int(label[0]), eps, norm)
        assert outcome.verdict != (NON_ROBUST if eps < exact else CERTIFIED)


@pytest.mark.parametrize("norm", NORMS)
def test_zero_weights_and_constant_outputs(tmp_path, norm) -> None:
    """A zero first layer makes the logits constant: robust at any eps (certified is
    right); zero rows and columns elsewhere leave dead neurons."""
    weights, biases = random_mlp([3, 8, 8, 3], seed=10)
    weights[0][:] = 0.0
    constant = _mlp(tmp_path, "constant", weights, biases)
    x = np.array([[0.2, 0.4, 0.9], [0.0, 1.0, 0.0]])
    labels = constant.predict(x)
    constant.assert_radius_sound(x, labels, norm)
    for eps in (0.5, 100.0):
        assert constant.decide(x[0], labels[0], eps, norm).verdict == CERTIFIED
    weights, biases = random_mlp([3, 8, 8, 3], seed=10, scale=3.0)
    weights[1][:, :4] = 0.0
    weights[0][2:5] = 0.0
    sparse = _mlp(tmp_path, "sparse", weights, biases)
    labels = sparse.predict(x)
    sparse.assert_radius_sound(x, labels, norm)
    for eps in (0.1, 0.5, 1.0):
        sparse.decide(x[0], labels[0], eps, norm)


@pytest.mark.parametrize("norm", NORMS)
def test_very_large_weights(tmp_path, norm) -> None:
    """Weights of 1e4 (logits near 1e12, the slack scales with them)."""
    weights, biases = random_mlp([3, 8, 8, 3], seed=2)
    weights = [w * 1e4 for w in weights]
    biases = [b * 1e4 ** (i + 1) for i, b in enumerate(biases)]
    net = _mlp(tmp_path, "large", weights, biases)
    x = np.random.default_rng(4).uniform(0.0, 1.0, (3, 3))
    labels = net.predict(x)
    net.assert_radius_sound(x, labels, norm)
    for row in range(len(x)):
        for eps in (0.05, 0.3):
            net.decide(x[row], labels[row], eps, norm)


def test_huge_logits_are_never_certified_when_an_adversarial_example_exists(tmp_path) -> None:
    weights, biases = random_mlp([3] + [8] * 5 + [3], seed=2)
    weights = [w * 1e4 for w in weights]
    biases = [b * 1e4 ** (i + 1) for i, b in enumerate(biases)]
    net = _mlp(tmp_path, "huge", weights, biases)
    x = np.array([0.3, 0.5, 0.7])
    label = int(net.predict(x[None])[0])
    found = pgd(graph_forward(net.graph), x[None], np.array([label]), 0.5, "l2",
                steps=60, restarts=4)  # fmt: skip
    assert found.margin[0] < 0  # the evidence: an adversarial point in the ball
    outcome = net.search.search(x, label, 0.5, "l2", 0.0, 1.0, SearchBudget(seconds=1.0))
    assert outcome.verdict != CERTIFIED


# --------------------------------------------------------------------------- counterexamples


def _corner_net(tmp: Path, x0: float, eps: float) -> Net:
    """Two inputs, logits ``(c - x_1, 0)`` through an identity ReLU layer with c just
    below ``x0 + eps``: only points near the box's far edge are misclassified."""
    cut = x0 + 0.9999 * eps
    weights = [np.eye(2), np.array([[-1.0, 0.0], [0.0, 0.0]])]
    biases = [np.zeros(2), np.array([cut, 0.0])]
    return _mlp(tmp, "corner", weights, biases)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize(
    "x0",
    [
        pytest.param(0.31020869235748516, id="float64-edge-rounds-out"),  # x0 + eps > 0.6
        pytest.param(0.125, id="float32-edge-rounds-out"),  # float32(0.425) > 0.425
    ],
)
def test_counterexamples_and_their_float32_points_lie_inside_the_set(tmp_path, norm, x0):
    """The counterexample, and the float32 point onnxruntime confirms (the same point),
    lie inside the set exactly, and onnxruntime misclassifies it."""
    eps = 0.3
    net = _corner_net(tmp_path, x0, eps)
    x = np.array([x0, 0.5])
    outcome = net.search.search(x, 0, eps, norm, 0.0, 1.0, SearchBudget(seconds=1.0))
    assert outcome.verdict == NON_ROBUST
    deployed = outcome.counterexample.astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(deployed, outcome.counterexample)
    assert distance(outcome.counterexample[None], x[None], norm)[0] <= eps
    assert net.runtime.predict(deployed[None])[0] != 0


# --------------------------------------------------------------------------- budgets


def test_the_search_returns_within_its_time_budget() -> None:
    import audit_model_zoo as zoo

    net = Net(zoo.model_path("digits_resnet"))
    x = np.random.default_rng(0).uniform(0.0, 1.0, net.graph.input_size)
    label = int(net.predict(x[None])[0])
    inputs = InputSet.around(torch.as_tensor(x[None]), 0.02, "linf", 0.0, 1.0)
    clock = time.perf_counter()
    with torch.no_grad():
        net.verifier.margins(inputs, torch.tensor([label]))  # one CROWN bound: the time unit
    unit = time.perf_counter() - clock
    budget = 0.01
    outcome = net.search.search(x, label, 0.02, "linf", 0.0, 1.0, SearchBudget(seconds=budget))
    assert outcome.seconds <= budget + 5 * unit, f"{outcome.seconds:.2f} s, CROWN {unit:.3f} s"
