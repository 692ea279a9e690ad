"""Soundness of the certificates: no adversarial example may lie inside a certified ball.

Two independent checks (a violation is a critical bug, never a flaky test):

* **Attack campaign** on every piecewise-linear model-zoo model and on the corpus
  models mnist-net_256x2/4/6, mnist_relu_9_200, Convnet_maxpool, Convnet_avgpool:
  PGD-l2 with restarts and random search inside each certified ball, DeepFool,
  all on the onnx2torch module (not the layer graph that computed the radius),
  **without input bounds** (the certificate speaks of the whole ball; the box only
  weakens an attacker); PGD's worst point of each ball is also run through
  onnxruntime in float32 (the deployed model) and must keep the class.
* **Exact check** on tiny networks: the true minimal adversarial distance by brute
  force -- a dense grid on the line for the 1-D corpus ``test_*`` models, and for 2-D
  and 3-D ReLU nets an enumeration of every activation region meeting a box (depth-first
  over neurons, an LP prunes empty patterns) with one exact QP per region and class
  (active-set enumeration, exact in dimension <= 3). Both certificates must stay
  below it; the simplex certificate must be tight where the closest adversarial point
  lies in the sample's own region.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

import audit_model_zoo as zoo
from audit_core.labels import predict
from audit_core.model import AuditedModel, open_model
from audit_core.onnx_import import load_onnx
from audit_core.testing import mlp_onnx, random_mlp
from audit_plugins.certificates.radii import decision_boundary_certificate, simplex_certificate
from certificate_campaign import AttackBudget, attack_certificate
from helpers import corpus

BUDGET = AttackBudget(pgd_steps=40, pgd_restarts=4, random_samples=300, minimal=None)
SAMPLES_PER_MODEL = 6


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Attack loops are many small products: one thread avoids OpenMP contention on
    a shared 2-core machine (15x slower with 2 busy threads per worker)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- campaign


def _zoo_cases() -> list[tuple[str, Path, Path | None]]:
    return [(f"zoo-{name}", zoo.model_path(name), zoo.dataset_path(name)) for name in zoo.names()]


CORPUS_MODELS = [
    "mnistfc/mnist-net_256x2.onnx",
    "mnistfc/mnist-net_256x4.onnx",
    "mnistfc/mnist-net_256x6.onnx",
    "eran/mnist_relu_9_200.onnx",
    "verivital/Convnet_maxpool.onnx",
    "verivital/Convnet_avgpool.onnx",
]


def _corpus_cases() -> list[tuple[str, Path, Path | None]]:
    return [(f"corpus-{Path(m).stem}", corpus(m), None) for m in CORPUS_MODELS]


def _mnist_samples(rng: np.random.Generator, count: int) -> np.ndarray:
    """Corpus MNIST images."""
    images = np.load(corpus("mnistfc/mnist_samples.npz"))["x"].astype(np.float64)
    return images[rng.choice(len(images), count, replace=False)]


def _with_noise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Half of the samples with small positive noise: on a constant image background MaxPool
    windows tie exactly, the sample sits on a face of its region and the simplex certificate
    is 0 (nothing claimed, nothing to test); the noise breaks the ties."""
    noisy = np.minimum(x + rng.uniform(0.0, 0.05, x.shape), 1.0)
    half = len(x) // 2
    return np.concatenate([x[:half], noisy[half:]])


def _samples(model: AuditedModel, data: Path | None, rng: np.random.Generator) -> np.ndarray:
    if data is None:
        flat = _mnist_samples(rng, SAMPLES_PER_MODEL)
    else:
        flat = np.load(data)["x"].astype(np.float64)
        flat = flat[rng.choice(len(flat), min(SAMPLES_PER_MODEL, len(flat)), replace=False)]
        flat = flat.reshape(len(flat), -1)
        if model.name == "sphere_depth2":  # training points sit on ReLU kinks: add fresh ones
            fresh = rng.normal(size=flat.shape)
            flat = np.concatenate([flat, 10 * fresh / np.linalg.norm(fresh, axis=1)[:, None]])
    if any(type(node.layer).__name__ == "MaxPool" for node in model.graph.nodes):
        flat = _with_noise(flat, rng)
    return flat.reshape(len(flat), *model.graph.input_shape)


@pytest.mark.parametrize(
    ("name", "path", "data"), [pytest.param(*c, id=c[0]) for c in _zoo_cases() + _corpus_cases()]
)
def test_no_attack_finds_an_adversarial_example_inside_a_certified_ball(name, path, data) -> None:
    rng = np.random.default_rng(0)
    model = open_model(path, name, None, rng)
    # every case claims a certificate (non-piecewise-linear models are refused elsewhere:
    # test_certificates.py::test_non_piecewise_linear_model_is_skipped_with_the_reason)
    assert model.graph.is_piecewise_linear, f"{name} is not piecewise linear: drop it here"
    x = _samples(model, data, rng)
    cert = simplex_certificate(model.graph, x, tolerance=model.fidelity.tolerance)
    radii = {"simplex": cert.radius}
    if model.dense_view is not None and model.dense_view.depth == 2:
        radii["decision-boundary"] = decision_boundary_certificate(
            model.dense_view, x, cert.predicted, tolerance=model.fidelity.tolerance
        )
    attacked = 0
    for which, radius in radii.items():
        result = attack_certificate(
            model.module, x, cert.predicted, radius, budget=BUDGET, loaded=model.loaded
        )
        bad = np.flatnonzero(result.violations)
        assert bad.size == 0, (
            f"{which} certificate violated on {name}: samples {bad.tolist()}, radius "
            f"{radius[bad].tolist()}, closest attack {result.closest[bad].tolist()}, "
            f"deployed model keeps the class: {result.deployed_ok[bad].tolist()}"
        )
        attacked += int(result.attacked.sum())
    assert attacked > 0, "no sample had a positive radius: the check would be vacuous"


def test_the_campaign_catches_a_slightly_inflated_certificate() -> None:
    """The attacks are strong enough to matter: on a linear model the simplex certificate
    is exact (up to its margin), so 1% more radius must be broken on every sample."""
    model = open_model(zoo.model_path("digits_linear"), "lin", None, np.random.default_rng(0))
    x = np.load(zoo.dataset_path("digits_linear"))["x"][:12].astype(np.float64)
    cert = simplex_certificate(model.graph, x)
    honest = attack_certificate(model.module, x, cert.predicted, cert.radius, budget=BUDGET)
    inflated = attack_certificate(
        model.module, x, cert.predicted, cert.radius * 1.01, budget=BUDGET
    )
    assert not honest.violations.any()
    assert inflated.violations.all()
    # and the deployed float32 model is the one checked at the surface of the ball
    assert honest.deployed_ok.all()


# --------------------------------------------------------------------------- exact: 1-D


def _first_flip_on_line(graph, u: float, label: int, reach: float, points: int) -> float:
    """Exact distance to the nearest point of another class on ``[u - reach, u + reach]`` by a
    dense grid (forward passes only) refined by bisection; ``inf`` if none."""
    best = np.inf
    for sign in (1.0, -1.0):
        t = np.linspace(0.0, reach, points)
        labels = graph.predict((u + sign * t)[:, None])
        flips = np.flatnonzero(labels != label)
        if not flips.size:
            continue
        lo, hi = t[flips[0] - 1], t[flips[0]]
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if graph.predict(np.array([[u + sign * mid]]))[0] != label:
                hi = mid
            else:
                lo = mid
        best = min(best, lo)
    return best


@pytest.mark.parametrize("name", ["test_nano", "test_tiny", "test_small"])
def test_certificate_below_the_exact_distance_on_one_dimensional_corpus_nets(name) -> None:
    graph = load_onnx(corpus(f"test/{name}.onnx")).graph
    u = np.linspace(-3.0, 3.0, 41)
    cert = simplex_certificate(graph, u[:, None])
    exact = np.array(
        [
            _first_flip_on_line(graph, v, k, 8.0, 20001)
            for v, k in zip(u, cert.predicted, strict=True)
        ]
    )
    assert (cert.radius <= exact).all()
    assert (cert.radius > 0).any()
    if name == "test_small":  # f > 0 everywhere: no adversarial example exists at all
        assert np.isinf(exact).all()
    else:  # tight wherever a radius is claimed (up to the margin: 2e-4 / |slope|)
        positive = cert.radius > 0
        np.testing.assert_allclose(cert.radius[positive], exact[positive], rtol=1e-3, atol=1e-3)


# --------------------------------------------------------------------------- exact: 2-D, 3-D


def _feasible(P: np.ndarray, q: np.ndarray, box: float, witness: np.ndarray | None):
    """A point of ``{y : P y + q >= 0, |y|_inf <= box}`` or None (LP, HiGHS)."""
    if witness is not None and (P @ witness + q >= -1e-12).all():
        return witness
    dim = P.shape[1]
    res = linprog(np.zeros(dim), A_ub=-P, b_ub=q, bounds=[(-box, box)] * dim, method="highs")
    return res.x if res.status == 0 else None


def _regions(weights, biases, box: float) -> list[tuple[np.ndarray, ...]]:
    """Every activation pattern whose closed region meets the box: ``(P, q, A, c)`` with the
    region ``P y + q >= 0`` and the logits ``A y + c`` there (depth-first over neurons)."""
    leaves: list[tuple[np.ndarray, ...]] = []
    dim = weights[0].shape[1]

    def visit(layer, i, A, c, P, q, active, witness):
        if i == A.shape[0]:
            mask = np.array(active, dtype=np.float64)
            A2 = weights[layer + 1] @ (mask[:, None] * A)
            c2 = weights[layer + 1] @ (mask * c) + biases[layer + 1]
            if layer + 1 == len(weights) - 1:
                leaves.append((P, q, A2, c2))
            else:
                visit(layer + 1, 0, A2, c2, P, q, [], witness)
            return
        for sign in (1.0, -1.0):
            P2, q2 = np.vstack([P, sign * A[i]]), np.append(q, sign * c[i])
            point = _feasible(P2, q2, box, witness)
            if point is not None:
                visit(layer, i + 1, A, c, P2, q2, [*active, sign > 0], point)

    visit(0, 0, weights[0], biases[0], np.zeros((0, dim)), np.zeros(0), [], None)
    return leaves


def _projection_candidates(G: np.ndarray, h: np.ndarray, u: np.ndarray) -> float:
    """``min ||y - u||`` over ``G y <= h`` (batched over regions, ``G`` ``(L, m, D)``): the
    optimum is the projection of u onto the affine hull of a linearly independent active set
    of size <= D, so enumerating those sets and keeping feasible points is exact."""
    _, m, dim = G.shape
    scale = 1e-9 * (1.0 + np.abs(h).max())
    best = np.inf
    inside = (G @ u <= h + scale).all(axis=1)
    if inside.any():
        return 0.0
    for size in range(1, dim + 1):
        combos = np.array(list(itertools.combinations(range(m), size)))
        GS = G[:, combos]  # (L, C, s, D)
        hS = h[:, combos]
        M = GS @ GS.transpose(0, 1, 3, 2)
        ok = np.abs(np.linalg.det(M)) > 1e-12
        M = np.where(ok[..., None, None], M, np.eye(size))
        lam = np.linalg.solve(M, (GS @ u - hS)[..., None])[..., 0]
        y = u - np.einsum("lcsd,lcs->lcd", GS, lam)
        feasible = ok & (np.einsum("lmd,lcd->lcm", G, y) <= h[:, None, :] + scale).all(axis=2)
        if feasible.any():
            best = min(best, float(np.linalg.norm(y - u, axis=2)[feasible].min()))
    return best


def exact_distance(leaves, u: np.ndarray, label: int) -> float:
    """True minimal l2 distance from u to a point of another class (closed classes)."""
    P = np.stack([leaf[0] for leaf in leaves])
    q = np.stack([leaf[1] for leaf in leaves])
    A = np.stack([leaf[2] for leaf in leaves])
    c = np.stack([leaf[3] for leaf in leaves])
    if A.shape[1] == 1:  # one logit: class 1 iff logit > 0
        sign = 1.0 if label == 1 else -1.0
        targets = [(-sign * A[:, 0], -sign * c[:, 0])]  # rows r with r y + e >= 0
    else:
        targets = [(A[:, j] - A[:, label], c[:, j] - c[:, label]) for j in range(A.shape[1])]
        targets = [t for j, t in enumerate(targets) if j != label]
    best = np.inf
    for row, offset in targets:
        # a region where the difference is a constant counts only if it is strictly adversarial
        flat = np.abs(row).max(axis=1) == 0
        offset = np.where(flat & (offset <= 0), -1.0, offset)
        G = -np.concatenate([P, row[:, None, :]], axis=1)
        h = np.concatenate([q, offset[:, None]], axis=1)
        best = min(best, _projection_candidates(G, h, u))
    return best


TINY_NETS = {
    "2d-deep-3class": ([2, 8, 8, 3], 11),
    "2d-shallow-3class": ([2, 12, 3], 12),
    "2d-shallow-one-logit": ([2, 10, 1], 13),
    "3d-deep-2class": ([3, 6, 5, 2], 14),
    "3d-shallow-4class": ([3, 9, 4], 15),
    "2d-shallow-nonneg-one-logit": ([2, 10, 1], 16),  # v >= 0, bias -1: Theorem 4 bites
}


def _tiny(name: str, tmp_path: Path):
    if name == "zoo-transfer_a9":
        view = load_onnx(zoo.model_path("transfer_a9")).graph.dense_view()
        return list(view.weights), list(view.biases)
    sizes, seed = TINY_NETS[name]
    weights, biases = random_mlp(sizes, seed=seed, scale=2.0)
    if "nonneg" in name:
        weights[-1], biases[-1] = np.abs(weights[-1]), np.array([-1.0])
    # through ONNX and back, so that the weights are the float32 ones a model file holds
    graph = load_onnx(mlp_onnx(tmp_path / f"{name}.onnx", weights, biases)).graph
    view = graph.dense_view()
    return list(view.weights), list(view.biases)


@pytest.mark.parametrize("name", [*TINY_NETS, "zoo-transfer_a9"])
def test_certificates_below_the_exact_distance_on_tiny_nets(name, tmp_path) -> None:
    weights, biases = _tiny(name, tmp_path)
    dim, box = weights[0].shape[1], 3.0
    path = mlp_onnx(tmp_path / "net.onnx", weights, biases)
    graph = load_onnx(path).graph
    u = _points(graph, dim, np.random.default_rng(1))
    cert = simplex_certificate(graph, u)
    leaves = _regions(weights, biases, box)
    exact = np.array([exact_distance(leaves, p, k) for p, k in zip(u, cert.predicted, strict=True)])
    valid = exact <= box - np.abs(u).max(axis=1)  # the whole ball lies in the enumerated box
    assert valid.sum() >= 16, "too few samples with their closest adversary inside the box"
    assert (cert.radius[valid] <= exact[valid]).all(), (cert.radius - exact)[valid].max()
    if len(weights) == 2:
        db = decision_boundary_certificate(graph.dense_view(), u, cert.predicted)
        assert (db[valid] <= exact[valid]).all()
        if "nonneg" in name:  # class-0 points: the numerator is |f(u)| > 0
            assert (db[valid] > 0).sum() >= 4
    # exact where d_min < P_min: the nearest local decision point then lies in the region
    binds = valid & (cert.raw_decision_distance < cert.face_distance)
    np.testing.assert_allclose(cert.raw_radius[binds], exact[binds], rtol=1e-7)
    assert binds.any() or name == "zoo-transfer_a9"  # there the boundary is a ReLU face
    ratio = cert.radius[valid] / exact[valid]
    assert ratio.max() > 0.99, f"never tight: {np.round(ratio, 3)}"


def _points(graph, dim: int, rng: np.random.Generator) -> np.ndarray:
    """16 uniform points of [-1, 1]^dim and up to 16 points 0.02 from a decision boundary
    (where the local decision hyperplane, not a region face, tends to bind)."""
    uniform = rng.uniform(-1.0, 1.0, size=(16, dim))
    a, b = rng.uniform(-1.0, 1.0, size=(2, 200, dim))
    pairs = graph.predict(a) != graph.predict(b)
    a, b = a[pairs][:16], b[pairs][:16]
    lo, hi = np.zeros(len(a)), np.ones(len(a))
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        same = graph.predict(a + mid[:, None] * (b - a)) == graph.predict(a)
        lo, hi = np.where(same, mid, lo), np.where(same, hi, mid)
    step = 0.02 / np.linalg.norm(b - a, axis=1)
    near = a + np.maximum(lo - step, 0.0)[:, None] * (b - a)
    return np.concatenate([uniform, near])


def test_exact_solver_agrees_with_a_dense_grid(tmp_path) -> None:
    """The brute force itself, checked against a 2-D grid of forward passes."""
    weights, biases = _tiny("2d-deep-3class", tmp_path)
    leaves = _regions(weights, biases, 3.0)
    u, h = np.array([0.3, -0.2]), 0.004
    grid = np.stack(np.meshgrid(*[np.arange(-2.0, 2.0, h)] * 2), axis=-1).reshape(-1, 2)
    labels = predict(_logits(weights, biases, u + grid))
    label = int(predict(_logits(weights, biases, u[None]))[0])
    grid_min = np.linalg.norm(grid[labels != label], axis=1).min()
    exact = exact_distance(leaves, u, label)
    assert exact <= grid_min + 1e-12
    assert grid_min - exact <= h * np.sqrt(2)


def _logits(weights, biases, points: np.ndarray) -> np.ndarray:
    z = points
    for w, b in zip(weights[:-1], biases[:-1], strict=True):
        z = np.maximum(z @ w.T + b, 0.0)
    return z @ weights[-1].T + biases[-1]


def test_certified_linf_radius_never_covers_a_box_found_violated() -> None:
    """VNN-COMP 2021 ground truth (corpus): where an adversarial example exists in the linf
    box of half-width eps, the certified linf radius r / sqrt(d) must stay below eps."""
    import json

    truth = json.loads(corpus("mnistfc/ground_truth_2021.json").read_text())
    samples = np.load(corpus("mnistfc/mnist_samples.npz"))
    position = {str(name): i for i, name in enumerate(samples["names"])}
    violated = [row for row in truth if row["truth"].startswith("violated")]
    assert violated
    for network in sorted({row["network"] for row in violated}):
        rows = [row for row in violated if row["network"] == network]
        index = [position[row["property"].rsplit("_", 1)[0]] for row in rows]
        graph = load_onnx(corpus(f"mnistfc/{network}")).graph
        cert = simplex_certificate(graph, samples["x"][index].astype(np.float64))
        eps = np.array([row["eps_linf"] for row in rows])
        assert (cert.radius / np.sqrt(784) < eps).all()
        assert (cert.predicted == [row["label"] for row in rows]).all()


def _broadcast_add_net(tmp_path: Path, pool: bool) -> Path:
    """A scalar input broadcast wider by an Add of a constant, then ReLU or MaxPool.

    dense: ``x [N,1] + c [1,16] -> Relu -> Gemm`` with logit0 - logit1 =
    2 - sum_i relu(x + c_i); maxpool: ``x [N,1,1,1] + c [1,2,3,3] -> MaxPool 2x2 ->
    Flatten -> Gemm`` (random weights, 3 classes).
    """
    from onnx import helper
    from onnx_factory import init, make_model, save

    mk = helper.make_node
    g = np.random.default_rng(7)
    if pool:
        nodes = [
            mk("Add", ["x", "c"], ["h"]),
            mk("MaxPool", ["h"], ["p"], kernel_shape=[2, 2]),
            mk("Flatten", ["p"], ["f"]),
            mk("Gemm", ["f", "W", "b"], ["y"], transB=1),
        ]
        inits = [
            init("c", g.normal(size=(1, 2, 3, 3))),
            init("W", g.normal(size=(3, 8))),
            init("b", g.normal(size=3)),
        ]
        return save(make_model(nodes, ["N", 1, 1, 1], inits), tmp_path)
    w = np.zeros((2, 16))
    w[0] = -1.0
    nodes = [
        mk("Add", ["x", "c"], ["h"]),
        mk("Relu", ["h"], ["r"]),
        mk("Gemm", ["r", "W", "b"], ["y"], transB=1),
    ]
    inits = [init("c", np.linspace(0.0, 0.01, 16)[None, :]), init("W", w), init("b", [2.0, 0.0])]
    return save(make_model(nodes, ["N", 1], inits), tmp_path)


@pytest.mark.parametrize("pool", [False, True], ids=["dense", "maxpool"])
def test_certificates_below_the_exact_distance_when_an_add_broadcasts_the_input(
    tmp_path, pool
) -> None:
    """A found bug: the broadcast was lost in the linear part (a too large Theorem 4
    radius on the dense net, a crash on the MaxPool net)."""
    graph = load_onnx(_broadcast_add_net(tmp_path, pool)).graph
    u = np.linspace(-1.0, 1.0, 9).reshape(9, *graph.input_shape)
    line = np.linspace(-3.0, 3.0, 600_001)
    classes = predict(graph.forward(line.reshape(-1, *graph.input_shape)).numpy())
    simplex = simplex_certificate(graph, u)
    radii = [simplex.radius]
    if not pool:  # Theorem 4 needs a dense 2-layer view
        radii.append(decision_boundary_certificate(graph.dense_view(), u, simplex.predicted))
    for i, x in enumerate(u.reshape(-1)):
        exact = float(np.abs(line[classes != simplex.predicted[i]] - x).min())
        for radius in radii:
            assert radius[i] <= exact + 1e-5, (x, radius[i], exact)
    assert (simplex.radius > 0).any() and all((r > 0).any() for r in radii)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_leaky_relu_certificate_below_every_flipped_point_of_a_dense_grid(tmp_path, seed) -> None:
    """LeakyReLU regions (slope alpha, not 0, on the inactive side): no point of a fine 2-D
    grid where the class changes lies inside a certified ball."""
    weights, biases = random_mlp([2, 10, 10, 3], seed=seed)
    path = mlp_onnx(tmp_path / "leaky.onnx", weights, biases, activation="LeakyRelu")
    import onnx
    from onnx import helper

    model = onnx.load(path)
    for node in model.graph.node:
        if node.op_type == "LeakyRelu":  # a slope far from ReLU's 0
            node.attribute.append(helper.make_attribute("alpha", 0.3))
    onnx.save(model, path)
    graph = load_onnx(path).graph
    assert graph.describe().count("LeakyRelu(0.3)") == 2
    h = 0.004
    grid = np.stack(np.meshgrid(*[np.arange(-2.0, 2.0, h)] * 2), axis=-1).reshape(-1, 2)
    labels = predict(graph.forward(grid).numpy())
    u = np.random.default_rng(seed).uniform(-1.0, 1.0, size=(40, 2))
    cert = simplex_certificate(graph, u)
    assert (cert.radius > 0).mean() > 0.5  # the check is not vacuous
    for point, label, radius in zip(u, cert.predicted, cert.radius, strict=True):
        flipped = grid[labels != label]
        nearest = np.linalg.norm(flipped - point, axis=1).min() if len(flipped) else np.inf
        assert radius <= nearest, (point, radius, nearest)
