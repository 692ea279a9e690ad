"""Tests of the example plugin, written with the fixtures robustness-audit ships.

``audit_model_builder``, ``audit_runner`` and ``audit_register_plugin`` come from
``robustness_audit.pytest_plugin`` (a ``pytest11`` entry point): installing
robustness-audit is all it takes, no conftest.py.
"""

from __future__ import annotations

import math

import audit_lipschitz
import numpy as np
import pytest
import torch
from audit_lipschitz import lipschitz_bound
from audit_lipschitz.norms import conv_young_bound, spectral_norm

from audit_core.onnx_import import load_onnx


def test_linear_model_constant_is_the_spectral_norm(audit_model_builder) -> None:
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(3, 5))
    graph = load_onnx(audit_model_builder.mlp([weight], [np.zeros(3)])).graph
    bound = lipschitz_bound(graph)
    # float32 ONNX weights: compare with the stored weights' norm
    stored = np.asarray(graph.nodes[1].layer.weight, dtype=np.float64)
    assert bound.constant == pytest.approx(np.linalg.norm(stored, 2), rel=1e-8)
    assert bound.constant >= np.linalg.norm(stored, 2)
    assert bound.composed


def test_bound_dominates_every_observed_slope(audit_model_builder) -> None:
    graph = load_onnx(audit_model_builder.random_mlp([6, 32, 32, 4], seed=3)).graph
    constant = lipschitz_bound(graph).constant
    rng = np.random.default_rng(1)
    x, x2 = rng.random((500, 6)), rng.random((500, 6))
    x2[:250] = x[:250] + 1e-3 * rng.normal(size=(250, 6))  # near pairs: local slopes
    change = np.linalg.norm(graph.forward(x).numpy() - graph.forward(x2).numpy(), axis=1)
    slopes = change / np.linalg.norm(x - x2, axis=1)
    assert slopes.max() <= constant
    per_layer = math.prod(np.linalg.norm(graph.nodes[i].layer.weight, 2) for i in (1, 3, 5))
    assert constant == pytest.approx(per_layer, rel=1e-8)  # dense chain: one block per layer


def test_radius_never_exceeds_the_exact_distance_of_a_linear_model(audit_model_builder) -> None:
    rng = np.random.default_rng(2)
    weight, bias = rng.normal(size=(4, 6)), rng.normal(size=4)
    model = audit_model_builder.mlp([weight], [bias])
    graph = load_onnx(model).graph
    w = np.asarray(graph.nodes[1].layer.weight, dtype=np.float64)
    b = np.asarray(graph.nodes[1].layer.bias, dtype=np.float64)
    x = rng.random((200, 6))
    y = graph.predict(x)
    logits = x @ w.T + b
    # exact l2 distance to the decision boundary of an affine classifier
    exact = np.full(len(x), np.inf)
    for j in range(4):
        other = y != j
        gap = logits[other, y[other]] - logits[other, j]
        normal = np.linalg.norm(w[y[other]] - w[j], axis=1)
        exact[other] = np.minimum(exact[other], gap / normal)
    margin = np.sort(logits, axis=1)[:, -1] - np.sort(logits, axis=1)[:, -2]
    radius = margin / (math.sqrt(2) * lipschitz_bound(graph).constant)
    assert np.all(radius <= exact * (1 + 1e-12))
    assert np.all(radius > 0)


def test_single_logit_radius_is_exact_for_a_linear_model(
    audit_model_builder, audit_runner, audit_register_plugin
) -> None:
    """One logit (class 1 iff logit > 0): radius |logit| / ||w|| is the exact distance."""
    rng = np.random.default_rng(5)
    weight = rng.normal(size=(1, 4))
    model = audit_model_builder.mlp([weight], [np.array([0.1])], name="linear1")
    x = rng.random((40, 4))
    data = audit_model_builder.labelled_dataset(model, x)
    audit_register_plugin(audit_lipschitz, name="lipschitz-under-test")
    result = audit_runner(
        model,
        "--data",
        data,
        "--export",
        "arrays",
        "-o",
        "lipschitz-certificate.logit_tolerance=0",
        plugins=[],
    )
    assert result.exit_code == 0, result.stderr
    radius = np.load(result.out_dir.parent / "arrays" / "lipschitz-certificate.npz")["radius"]
    graph = load_onnx(model).graph
    w = np.asarray(graph.nodes[1].layer.weight, dtype=np.float64)[0]
    b = float(np.asarray(graph.nodes[1].layer.bias)[0])
    stored = np.load(data)["x"].astype(np.float64)  # the float32 samples the audit reads
    exact = np.sort(np.abs(stored @ w + b) / np.linalg.norm(w))
    radius = np.sort(radius)  # same monotone map of the same samples, maybe reordered
    assert radius == pytest.approx(exact, rel=1e-8)
    assert np.all(radius <= exact)


def test_young_bound_is_an_upper_bound() -> None:
    from audit_core.layers import Conv

    rng = np.random.default_rng(4)
    layer = Conv(
        weight=rng.normal(size=(4, 2, 3, 3)), strides=(2, 2), pads=(1, 1, 1, 1), dilations=(1, 1)
    )

    basis = torch.eye(2 * 7 * 7, dtype=torch.float64).reshape(-1, 2, 7, 7)
    matrix = layer.linear(basis).reshape(2 * 7 * 7, -1).numpy()
    assert spectral_norm(matrix) <= conv_young_bound(layer)


def test_audit_runs_the_plugin(audit_model_builder, audit_runner, audit_register_plugin) -> None:
    model = audit_model_builder.random_mlp([4, 16, 3], seed=4)
    x = np.random.default_rng(0).random((30, 4))
    data = audit_model_builder.labelled_dataset(model, x)
    audit_register_plugin(audit_lipschitz, name="lipschitz-under-test")
    result = audit_runner(model, "--data", data, "--eps", "0.01", plugins=[])  # only ours
    assert result.exit_code == 0, result.stderr
    radius = result.finding("lipschitz-certificate/radius/model")
    assert radius["method"] == "certified" and radius["status"] == "pass"
    metrics = {m["name"]: m["value"] for m in radius["metrics"]}
    assert 0.5 <= metrics["certified_accuracy"] <= 1.0
    assert metrics["samples_compared"] == 30
    assert metrics["combined_certified_accuracy"] >= metrics["simplex_certified_accuracy"]
    (run,) = result.report["analyses"]
    assert run["plugin"] == "lipschitz-under-test" and run["headline"].startswith("L <= ")


def test_listed_by_audit_plugins(audit_runner) -> None:
    """Needs the package installed (its entry point), as after ``pip install -e .``."""
    import json

    listing = json.loads(audit_runner("plugins", "--json").stdout)["plugins"]
    plugin = next(p for p in listing if p["name"] == "lipschitz-certificate")
    assert plugin["version"] == audit_lipschitz.__version__ and plugin["builtin"] is False
    assert plugin["analyses"][0]["name"] == "lipschitz-certificate"
