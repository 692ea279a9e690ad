"""The certificates analysis: Theorem 3 and 4 math, the safety margin, the audit end to end.

Soundness against attacks and exact distances is in test_certificates_soundness.py.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper

import audit_model_zoo as zoo
from audit_core.linearize import linearize
from audit_core.onnx_import import load_onnx
from audit_core.testing import mlp_onnx, random_mlp, save_dataset
from audit_plugins._certificates_math import (
    INPUT_ROUNDING,
    theorem4_numerator,
    theorem4_rows,
    verdicts,
)
from audit_plugins.certificates import decision_boundary_certificate, simplex_certificate
from helpers import corpus


@pytest.fixture(autouse=True)
def only_this_plugin(monkeypatch):
    monkeypatch.setenv("AUDIT_PLUGINS", "certificates")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The attacks are many small products: one thread per test worker avoids OpenMP
    contention on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _digits(name: str, count: int) -> np.ndarray:
    return np.load(zoo.dataset_path(name))["x"][:count].astype(np.float64)


# --------------------------------------------------------------------------- Theorem 3


def test_linear_model_radius_is_the_exact_boundary_distance_minus_the_margin() -> None:
    """A linear model has one region (P_min = inf): the true distance is the closed-form
    distance to the nearest decision hyperplane, and the certificate is just below it."""
    graph = load_onnx(zoo.model_path("digits_linear")).graph
    x = _digits("digits_linear", 40)
    cert = simplex_certificate(graph, x, tolerance=1e-4)
    w, b = graph.dense_view().weights[0], graph.dense_view().biases[0]
    logits = x @ w.T + b
    k = logits.argmax(1)
    exact = np.array(
        [
            min(
                (logits[n, k[n]] - logits[n, j]) / np.linalg.norm(w[k[n]] - w[j])
                for j in range(10)
                if j != k[n]
            )
            for n in range(len(x))
        ]
    )
    assert np.isinf(cert.face_distance).all()
    np.testing.assert_allclose(cert.raw_radius, exact, rtol=1e-9)
    assert (cert.radius < exact).all()
    # the margin: the logit slack over the gradient norm, plus the rounding terms
    gnorm = np.array(
        [min(np.linalg.norm(w[k[n]] - w[j]) for j in range(10) if j != k[n]) for n in range(40)]
    )
    rounding = INPUT_ROUNDING * (np.linalg.norm(x, axis=1) + exact) + 1e-9 * exact + 1e-10
    assert (exact - cert.radius <= (cert.slack / gnorm + rounding) * (1 + 1e-6)).all()
    assert (cert.slack >= 2e-4 * np.maximum(1.0, np.abs(logits).max(1))).all()
    assert ((exact - cert.radius) / exact < 1e-2).all()  # and it costs little


def test_radius_is_min_of_face_and_decision_distance_on_a_cnn() -> None:
    graph = load_onnx(zoo.model_path("digits_resnet")).graph
    x = _digits("digits_resnet", 6)
    cert = simplex_certificate(graph, x)
    lin = linearize(graph, x)
    np.testing.assert_array_equal(cert.face_distance, lin.face_distance)
    np.testing.assert_allclose(
        cert.raw_radius, np.minimum(cert.raw_decision_distance, lin.face_distance)
    )
    assert (cert.radius <= cert.raw_radius).all()
    assert (cert.decision_distance <= cert.raw_decision_distance).all()


def test_radius_on_the_boundary_of_a_region_is_zero(tmp_path) -> None:
    """A ReLU exactly at 0 puts x on a face: Theorem 3 claims nothing (radius 0)."""
    weights = [np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 1.0], [-1.0, -1.0]])]
    biases = [np.array([0.0, 0.5]), np.array([0.0, 0.0])]
    graph = load_onnx(mlp_onnx(tmp_path / "kink.onnx", weights, biases)).graph
    cert = simplex_certificate(graph, np.array([[0.0, 1.0], [0.3, 1.0]]))
    assert cert.radius[0] == 0.0
    assert cert.radius[1] > 0.29  # the face x1 = 0 is 0.3 away, the decision boundary further


def _skip_from_input(tmp_path):
    """logits = W2 relu(W1 x + b1) + S x: a residual Sum of a per-sample and a shared
    (sample-independent) Jacobian."""
    rng = np.random.default_rng(7)
    inits = [
        numpy_helper.from_array(rng.normal(size=(6, 4)).astype(np.float32), "W1"),
        numpy_helper.from_array(rng.normal(size=6).astype(np.float32), "B1"),
        numpy_helper.from_array(rng.normal(size=(3, 6)).astype(np.float32), "W2"),
        numpy_helper.from_array(rng.normal(size=(3, 4)).astype(np.float32), "S"),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "W1", "B1"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["a"]),
        helper.make_node("Gemm", ["a", "W2"], ["o"], transB=1),
        helper.make_node("Gemm", ["x", "S"], ["s"], transB=1),
        helper.make_node("Add", ["o", "s"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "skip",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 3])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "skip.onnx")
    return tmp_path / "skip.onnx"


def _reshaped_skip(tmp_path):
    """g = W2 relu(W1 x + b1); logits = W3 flatten(relu(reshape(g))) + g. The Reshape's
    tangent is a view of g's, and g is still read by the Add: the ReLU after the Reshape
    must not mask that memory in place."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(5, 3)).astype(np.float32), "W1"),
        numpy_helper.from_array(rng.normal(size=5).astype(np.float32), "B1"),
        numpy_helper.from_array(rng.normal(size=(5, 5)).astype(np.float32), "W2"),
        numpy_helper.from_array(rng.normal(size=(5, 5)).astype(np.float32), "W3"),
        numpy_helper.from_array(np.array([-1, 5, 1], dtype=np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "W1", "B1"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["a"]),
        helper.make_node("Gemm", ["a", "W2"], ["g"], transB=1),
        helper.make_node("Reshape", ["g", "shape"], ["v"]),
        helper.make_node("Relu", ["v"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Gemm", ["f", "W3"], ["o"], transB=1),
        helper.make_node("Add", ["o", "g"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "alias",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 5])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "alias.onnx")
    return tmp_path / "alias.onnx"


@pytest.mark.parametrize("builder", [_skip_from_input, _reshaped_skip])
def test_linearisation_shortcuts_match_autograd(builder, tmp_path) -> None:
    """The shared affine prefix (mixed with a per-sample branch in a Sum) and the in-place
    ReLU masking (refused when the memory is a view another branch still reads)."""
    graph = load_onnx(builder(tmp_path)).graph
    x = np.random.default_rng(8).normal(size=(5, graph.input_size))
    lin = linearize(graph, x)
    for n in range(len(x)):
        point = torch.tensor(x[n : n + 1])
        jac = torch.autograd.functional.jacobian(lambda z: graph.forward(z).reshape(-1), point)
        np.testing.assert_allclose(lin.C[n], jac.reshape(lin.C[n].shape), atol=1e-12)


# --------------------------------------------------------------------------- Theorem 4


def test_theorem4_numerator_equals_the_minimum_over_all_box_vertices(tmp_path) -> None:
    """``min over [0,1]^N1 |a . theta + c|``: the vertices give the range of the affine
    function (0 if they change sign); brute force over all 2^10 vertices."""
    weights, biases = random_mlp([3, 10, 4], seed=3, scale=2.0)
    x = np.random.default_rng(4).normal(size=(20, 3))
    z = x @ weights[0].T + biases[0]
    predicted = (np.maximum(z, 0) @ weights[1].T + biases[1]).argmax(1)
    rows, consts = theorem4_rows(weights[1], biases[1], predicted)
    closed = theorem4_numerator(z, rows, consts)
    vertices = np.array(list(itertools.product([0.0, 1.0], repeat=10)))  # (1024, 10)
    values = np.einsum("vi,nji->nvj", vertices, rows * z[:, None, :]) + consts[:, None, :]
    crosses = (values.min(axis=1) <= 0) & (values.max(axis=1) >= 0)
    brute = np.where(crosses, 0.0, np.abs(values).min(axis=1))
    np.testing.assert_allclose(closed, brute, atol=1e-12)
    assert (brute > 0).any() and (brute == 0).any()


def test_decision_boundary_certificate_on_a_nonnegative_output_net_is_the_closed_form() -> None:
    """nonneg_2layer: f = v . relu(W1 x + b1) - a with v >= 0. For class 0 (f < 0) the
    numerator is maximised by switching every unit on where it helps, i.e. at the actual
    pattern: Theorem 4 gives |f(u)| / (||v|| ||W1||_2); for class 1 it gives 0."""
    graph = load_onnx(zoo.model_path("nonneg_2layer")).graph
    view = graph.dense_view()
    x = _digits("nonneg_2layer", 60)
    f = graph.forward(x).numpy()[:, 0]
    predicted = (f > 0).astype(np.int64)
    db = decision_boundary_certificate(view, x, predicted)
    expected = np.abs(f) / (np.linalg.norm(view.weights[1]) * np.linalg.norm(view.weights[0], 2))
    zero = predicted == 0
    assert zero.any() and (~zero).any()
    np.testing.assert_allclose(db[zero], expected[zero], rtol=2e-3)
    assert (db[zero] < expected[zero]).all()
    np.testing.assert_array_equal(db[~zero], 0.0)


def test_decision_boundary_certificate_refuses_deeper_nets() -> None:
    view = load_onnx(zoo.model_path("digits_mlp3")).graph.dense_view()
    with pytest.raises(ValueError, match="depth 2"):
        decision_boundary_certificate(view, _digits("digits_mlp3", 2), np.zeros(2, dtype=int))


# --------------------------------------------------------------------------- safety margin


def test_worst_point_of_the_certified_ball_keeps_the_class_in_float32_onnxruntime() -> None:
    """On a linear model the worst point of the ball is explicit: x + r n, n the unit normal
    towards the nearest boundary. The deployed float32 model must keep the class there,
    while a step a little past the raw (marginless) distance must flip it."""
    path = zoo.model_path("digits_linear")
    graph = load_onnx(path).graph
    x = _digits("digits_linear", 30)
    cert = simplex_certificate(graph, x)
    lin = linearize(graph, x)
    k = cert.predicted
    gaps = lin.d - lin.d[np.arange(len(x)), k][:, None]
    normals = lin.C - lin.C[np.arange(len(x)), k][:, :, None].transpose(0, 2, 1)
    gaps = gaps + np.einsum("nkd,nd->nk", normals, x)
    norms = np.linalg.norm(normals, axis=2)
    ratio = np.where(norms > 0, -gaps / np.where(norms > 0, norms, 1), np.inf)
    j = ratio.argmin(1)
    unit = normals[np.arange(len(x)), j] / norms[np.arange(len(x)), j][:, None]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def deployed(points):
        return session.run(None, {name: points.astype(np.float32)})[0].argmax(1)

    assert (deployed(x + cert.radius[:, None] * unit) == k).all()
    past = x + (cert.raw_radius * 1.001)[:, None] * unit
    assert (graph.predict(past) != k).all()


# --------------------------------------------------------------------------- verdicts


def test_verdicts_partition_the_samples_and_misclassified_are_never_certified() -> None:
    correct = np.array([True, True, True, False, False])
    radius = np.array([0.5, 0.1, 0.1, 0.9, 0.0])
    attack = np.array([0.9, 0.15, 0.3, 0.0, 0.0])
    v = verdicts(correct, radius, attack, eps=0.2)
    np.testing.assert_array_equal(v.certified, [True, False, False, False, False])
    np.testing.assert_array_equal(v.non_robust, [False, True, False, True, True])
    np.testing.assert_array_equal(v.undecided, [False, False, True, False, False])


# --------------------------------------------------------------------------- end to end


FAST = ("-o", "attacks.restarts=1", "-o", "attacks.bisection_steps=6")
"""A lighter l2 minimal-norm search for end-to-end runs (the search is the core's)."""


def _findings(report: dict) -> dict[str, dict]:
    return {f["id"].split("/")[1]: f for f in report["findings"]}


def _metric(finding: dict, name: str):
    return next(m["value"] for m in finding["metrics"] if m["name"] == name)


def test_audit_on_a_two_layer_zoo_model_reports_both_certificates_and_exports(
    run_audit, tmp_path
) -> None:
    run = run_audit(
        zoo.model_path("digits_mlp2"), "--samples", "30", "--eps", "0.1,0.3", "--export", "exp",
        *FAST,
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr
    findings = _findings(run.report)
    assert set(findings) == {"simplex", "decision-boundary", "gap", "consistency", "runtime"}
    assert findings["decision-boundary"]["status"] == "pass"
    assert findings["consistency"]["status"] == "pass"
    assert findings["runtime"]["status"] == "pass"
    arrays = np.load(tmp_path / "exp" / "certificates.npz")
    for key in ("index", "label", "simplex_radius", "decision_boundary_radius", "attack_distance"):
        assert arrays[key].shape == (30,)
    assert np.isfinite(arrays["decision_boundary_radius"]).all()
    correct = arrays["predicted"] == arrays["label"]
    # certified < attack on every correctly classified sample with an attack point
    found = correct & np.isfinite(arrays["attack_distance"])
    assert (arrays["certified_radius"][found] < arrays["attack_distance"][found]).all()
    # the fractions are the exported arrays judged at the first eps (0.1)
    gap = findings["gap"]
    certified = np.mean(correct & (arrays["certified_radius"] > 0.1))
    non_robust = np.mean(~correct | (arrays["attack_distance"] <= 0.1))
    assert _metric(gap, "certified_fraction") == pytest.approx(certified)
    assert _metric(gap, "non_robust_fraction") == pytest.approx(non_robust)
    total = sum(_metric(gap, f"{v}_fraction") for v in ("certified", "non_robust", "undecided"))
    assert total == pytest.approx(1.0)
    assert {p["id"] for p in gap["evidence"]["plots"]} >= {
        "accuracy-curves-l2",
        "accuracy-curves-linf",
        "certified-vs-attack",
    }
    examples = findings["simplex"]["evidence"]["examples"]
    radii = [e["values"]["certified_radius"] for e in examples]
    assert radii == sorted(radii) and radii[0] == arrays["certified_radius"][correct].min()


def test_deeper_and_convolutional_models_skip_only_theorem4(run_audit, tmp_path) -> None:
    run = run_audit(zoo.model_path("digits_resnet"), "--samples", "8", "--export", "exp", *FAST)
    assert run.exit_code in (0, 1), run.stderr
    findings = _findings(run.report)
    assert findings["decision-boundary"]["status"] == "skipped"
    assert "Theorem 4 needs" in findings["decision-boundary"]["summary"]
    assert findings["simplex"]["status"] == "pass"
    arrays = np.load(tmp_path / "exp" / "certificates.npz")
    assert np.isnan(arrays["decision_boundary_radius"]).all()
    assert (arrays["simplex_radius"] >= 0).all()


def test_linf_verdicts_use_r_over_sqrt_d(run_audit, tmp_path) -> None:
    run = run_audit(
        zoo.model_path("binary_fc3_pgd"),
        "--samples", "20", "--norm", "linf", "--eps", "0.004", "--export", "exp", *FAST,
    )  # fmt: skip
    gap = _findings(run.report)["gap"]
    arrays = np.load(tmp_path / "exp" / "certificates.npz")
    correct = arrays["predicted"] == arrays["label"]
    linf = arrays["certified_radius"] / np.sqrt(64)
    np.testing.assert_allclose(arrays["simplex_linf_radius"], arrays["simplex_radius"] / 8)
    assert _metric(gap, "certified_fraction") == pytest.approx(np.mean(correct & (linf > 0.004)))
    non_robust = np.mean(~correct | (arrays["attack_linf_distance"] <= 0.004))
    assert _metric(gap, "non_robust_fraction") == pytest.approx(non_robust)


def test_single_logit_model_and_severity_thresholds(run_audit) -> None:
    model = zoo.model_path("nonneg_2layer")
    strict = run_audit(model, "--samples", "20", "--eps", "2.0", *FAST)
    gap = _findings(strict.report)["gap"]
    assert _metric(gap, "non_robust_fraction") > 0.5
    assert (gap["status"], gap["severity"]) == ("fail", "high")
    lenient = run_audit(
        model, "--samples", "20", "--eps", "2.0", *FAST,
        "-o", "certificates.fail_nonrobust_above=1.0",
        "-o", "certificates.warn_nonrobust_above=1.0",
        "-o", "certificates.warn_undecided_above=1.0",
        out="out2",
    )  # fmt: skip
    assert _findings(lenient.report)["gap"]["status"] == "pass"
    undecided = run_audit(
        model, "--samples", "20", "--eps", "2.0", *FAST,
        "-o", "certificates.fail_nonrobust_above=1.0",
        "-o", "certificates.warn_nonrobust_above=1.0",
        "-o", "certificates.warn_undecided_above=-1.0",
        out="out3",
    )  # fmt: skip
    gap = _findings(undecided.report)["gap"]
    assert (gap["status"], gap["severity"]) == ("warn", "low")
    assert gap["threshold"]["metric"] == "undecided_fraction"


def test_misclassified_samples_count_as_non_robust(run_audit, tmp_path, tiny_model) -> None:
    graph = load_onnx(tiny_model).graph
    x = np.random.default_rng(3).random((12, 4))
    predicted = graph.predict(x)
    wrong = (predicted + 1) % 3
    y = np.where(np.arange(12) < 4, wrong, predicted)  # 4 misclassified samples
    data = save_dataset(tmp_path / "d.npz", x, y, lower=0.0, upper=1.0)
    run = run_audit(tiny_model, "--data", data, "--eps", "1e-9", "--export", "exp", *FAST)
    arrays = np.load(tmp_path / "exp" / "certificates.npz")
    gap = _findings(run.report)["gap"]
    assert _metric(gap, "non_robust_fraction") >= 4 / 12
    assert np.isnan(arrays["ratio"][:4]).all()
    assert (arrays["simplex_radius"][:4] >= 0).all()  # still protects the predicted class


def test_non_piecewise_linear_model_is_skipped_with_the_reason(run_audit, tmp_path) -> None:
    x = np.clip(np.load(corpus("mnistfc/mnist_samples.npz"))["x"][:3], 0.0, 1.0)
    data = save_dataset(tmp_path / "m.npz", x.reshape(3, 1, 28, 28), np.zeros(3), lower=0.0,
                        upper=1.0)  # fmt: skip
    run = run_audit(corpus("eran/ffnnSIGMOID__Point_6x200.onnx"), "--data", data)
    (finding,) = run.report["findings"]
    assert finding["status"] == "skipped"
    assert "Sigmoid" in finding["summary"]
    assert run.exit_code == 5  # nothing could be analysed


def test_logit_gaps_below_the_runtime_slack_are_explained_and_tunable(run_audit, tmp_path) -> None:
    """ACAS Xu scores differ by ~1e-4: the default 1e-4 runtime slack certifies nothing,
    the report says why, and a tighter fidelity tolerance certifies them."""
    x = np.random.default_rng(0).uniform(-0.5, 0.5, size=(40, 5)).astype(np.float32)
    np.save(tmp_path / "acas.npy", x)
    model = corpus("acasxu/ACASXU_run2a_1_1_batch_2000.onnx")

    def simplex(*extra: str) -> dict:
        run = run_audit(model, "--data", "acas.npy", *extra, *FAST)
        assert run.exit_code == 0, run.stderr
        finding = next(f for f in run.findings if f["id"].startswith("certificates/simplex/"))
        return finding

    loose = simplex()
    metrics = {m["name"]: m["value"] for m in loose["metrics"]}
    assert metrics["zero_by_logit_slack_fraction"] >= 0.25
    assert metrics["zero_radius_fraction"] >= metrics["zero_by_logit_slack_fraction"]
    assert any("fidelity-tolerance" in note for note in loose["evidence"]["notes"])
    (tmp_path / "audit.toml").write_text("fidelity-tolerance = 1e-6\n")
    tight = {m["name"]: m["value"] for m in simplex()["metrics"]}
    # the runtime check inside the balls may raise it a little above 1e-6
    assert 1e-6 <= tight["logit_tolerance"] <= 1e-5
    assert tight["zero_by_logit_slack_fraction"] < metrics["zero_by_logit_slack_fraction"]
    assert tight["median_radius"] > 0


def _cancellation_net(tmp_path):
    """logit0 = relu(K s - K T + x0) - relu(K s - K T) = x0 exactly (s = sum x[1:] > T), but
    float32 adds x0 to ~1.2e6 and rounds it to a multiple of 0.125; logit1 = 0.05.

    At the audit sample (x0 = 0.5, the rest 1) every float32 operation is exact, and the
    fidelity check's random inputs have s < T (both units off): only points inside the
    certified ball show the runtime's error. A found soundness gap, kept as a regression test.
    """
    d, k, t = 20, 2.0**16, 15.0
    w1 = np.zeros((2, d))
    w1[:, 1:] = k
    w1[0, 0] = 1.0
    path = mlp_onnx(
        tmp_path / "cancel.onnx",
        [w1, np.array([[1.0, -1.0], [0.0, 0.0]])],
        [np.array([-k * t, -k * t]), np.array([0.0, 0.05])],
    )
    u = np.ones((1, d))
    u[0, 0] = 0.5
    return path, save_dataset(tmp_path / "cancel.npz", u, np.array([0]), lower=0.0, upper=1.0)


def test_runtime_deviation_inside_the_balls_shrinks_the_radius_below_the_deployed_flip(
    run_audit, tmp_path
) -> None:
    model, data = _cancellation_net(tmp_path)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    flip = np.ones((1, 20), dtype=np.float32)
    flip[0, 0] = 0.0625 - 2**-10  # float32 rounds x0 down to 0: the deployed class is 1
    assert session.run(None, {session.get_inputs()[0].name: flip})[0].argmax() == 1
    flip_distance = 0.5 - float(flip[0, 0])

    def radius(*extra: str) -> tuple[float, dict]:
        run = run_audit(model, "--data", data, "--export", "exp", *extra, *FAST)
        assert run.exit_code == 0, run.stderr
        exported = np.load(tmp_path / "exp" / "certificates.npz")
        return float(exported["certified_radius"][0]), run.finding("certificates/runtime/cancel")

    unchecked, skipped = radius("-o", "certificates.runtime_points=0")
    assert skipped["status"] == "skipped"
    assert unchecked > flip_distance  # without the check the radius is wrong for the runtime
    checked, finding = radius()
    assert checked < flip_distance
    assert finding["status"] == "warn" and finding["severity"] in ("medium", "high")
    metrics = {m["name"]: m["value"] for m in finding["metrics"]}
    assert metrics["max_scaled_deviation"] > 1e-2 > 1e-4  # the fidelity check saw 0


def test_runtime_check_passes_on_an_ordinary_model(run_audit) -> None:
    run = run_audit(zoo.model_path("digits_mlp2"), "--samples", "10", *FAST)
    finding = run.finding("certificates/runtime/digits_mlp2")
    assert finding["status"] == "pass"
    metrics = {m["name"]: m["value"] for m in finding["metrics"]}
    assert metrics["max_scaled_deviation"] < 1e-5 and metrics["logit_tolerance_used"] == 1e-4


def test_linf_non_robust_fraction_counts_the_linf_attack(run_audit) -> None:
    """Under --norm linf a sample attack-bound breaks within eps is proven non-robust here
    too (the linf search, not only the linf norm of l2 attack points)."""
    run = run_audit(
        corpus("mnistfc/mnist-net_256x2.onnx"),
        "--data",
        corpus("mnistfc/mnist_samples.npz"),
        "--samples",
        "10",
        "--norm",
        "linf",
        "--eps",
        "0.03",
        plugins=["attack-bound", "certificates"],
    )
    assert run.exit_code == 0, run.stderr
    attack = {m["name"]: m["value"] for m in run.finding(
        "attack-bound/robust-accuracy/mnist-net_256x2")["metrics"]}  # fmt: skip
    gap = {
        m["name"]: m["value"] for m in run.finding("certificates/gap/mnist-net_256x2")["metrics"]
    }
    broken = attack["clean_accuracy"] - attack["robust_accuracy"]
    assert broken > 0  # VNN-COMP: properties 7 and 14 are violated at 0.03
    assert gap["non_robust_fraction"] >= broken - 1e-12
