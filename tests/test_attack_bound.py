"""The attack-bound analysis on zoo and corpus models."""

from __future__ import annotations

import numpy as np
import pytest

import audit_model_zoo as zoo
from audit_core.console import QuietUI
from audit_core.findings import Status
from audit_core.plugins import PluginHost
from audit_core.runner import run_audit
from audit_core.settings import Settings
from helpers import corpus


def _audit(model, **settings):
    host = PluginHost()
    host.load_entry_points()
    settings = Settings(models=(str(model),), only=("attack-bound",), **settings)
    return run_audit(settings, host, QuietUI())


@pytest.mark.parametrize(
    ("model", "data"),
    [
        (zoo.model_path("digits_cnn"), None),
        (zoo.model_path("sphere_depth2"), None),
        (corpus("mnistfc/mnist-net_256x4.onnx"), corpus("mnistfc/mnist_samples.npz")),
    ],
    ids=["zoo-cnn", "zoo-single-logit", "corpus-mnist-256x4"],
)
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_exported_adversarial_examples_are_real(model, data, norm) -> None:
    outcome = _audit(model, data=str(data) if data else None, samples=10, norm=norm)
    arrays = outcome.exports[(model.stem, "attack-bound")]
    from audit_core.fidelity import onnxruntime_logits
    from audit_core.labels import predict
    from audit_core.onnx_import import load_onnx

    loaded = load_onnx(model)
    x_adv, distance, labels = arrays["x_adv"], arrays["attack_distance"], arrays["label"]
    found = np.isfinite(distance)
    assert found.any()
    # verified with the layer graph, an implementation independent of the attacked module
    assert (loaded.graph.predict(x_adv[found]) != labels[found]).all()
    # and they fool the deployed model (float32 onnxruntime), not only the float64 one
    assert (predict(onnxruntime_logits(loaded, x_adv[found])) != labels[found]).all()
    dataset = np.load(data or zoo.dataset_path(model.stem))
    clean = dataset["x"][arrays["index"]].reshape(len(x_adv), -1).astype(np.float64)
    order = 2 if norm == "l2" else np.inf
    measured = np.linalg.norm(x_adv.reshape(len(x_adv), -1) - clean, ord=order, axis=1)
    np.testing.assert_allclose(distance[found], measured[found], rtol=1e-6, atol=1e-6)
    info = outcome.report.data
    assert x_adv.min() >= info.lower - 1e-12 and x_adv.max() <= info.upper + 1e-12


def test_robust_accuracy_decreases_with_eps_and_linf_works() -> None:
    outcome = _audit(zoo.model_path("digits_mlp2"), samples=20, eps=(0.05, 0.02, 0.1), norm="linf")
    finding = outcome.report.findings[0]
    values = [finding.metric(f"robust_accuracy@{e:g}").value for e in (0.02, 0.05, 0.1)]
    assert values == sorted(values, reverse=True)
    assert finding.metric("robust_accuracy").value == values[1]  # judged at the first eps


def test_adversarially_trained_net_is_more_robust_than_the_benign_one() -> None:
    medians = {}
    for name in ("binary_fc3_benign", "binary_fc3_pgd"):
        outcome = _audit(zoo.model_path(name), samples=40, eps=(1.0,))
        distances = outcome.report.findings[1]
        medians[name] = distances.metric("median_attack_distance").value
        if name == "binary_fc3_benign":
            assert outcome.report.findings[0].status is Status.FAIL
    assert medians["binary_fc3_pgd"] > 1.25 * medians["binary_fc3_benign"]


def test_worst_examples_carry_images_for_digit_inputs() -> None:
    outcome = _audit(zoo.model_path("digits_mlp2"), samples=10)
    examples = outcome.report.findings[1].evidence.examples
    assert examples
    assert set(examples[0].images) == {"input", "adversarial", "perturbation"}
    assert len(examples[0].images["input"]) == 8
    distances = [e.values["attack_distance"] for e in examples]
    assert distances == sorted(distances)
