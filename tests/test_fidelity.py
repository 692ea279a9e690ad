"""Fidelity check: layer graph and torch module against onnxruntime."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import audit_model_zoo as zoo
from audit_core.errors import FidelityError
from audit_core.fidelity import check_fidelity, sample_errors, scaled_error
from audit_core.layers import Dense, frozen_array
from audit_core.onnx_import import load_onnx
from audit_core.torch_module import build_torch_model
from helpers import CORPUS

MODELS = sorted(CORPUS.glob("*/*.onnx")) + [zoo.model_path(n) for n in zoo.names()]


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_every_corpus_and_zoo_model_passes(path) -> None:
    loaded = load_onnx(path)
    torch_model = build_torch_model(loaded.proto, loaded.graph, loaded.has_batch)
    assert torch_model.source == "onnx2torch", torch_model.note
    report = check_fidelity(loaded, torch_model, None, np.random.default_rng(0))
    assert report.graph_error < 1e-5 and report.torch_error < 1e-5
    assert report.inputs_checked == 8


def _tampered(loaded, node_index: int):
    """The same model with one Dense layer's weights perturbed in the layer graph only."""
    nodes = list(loaded.graph.nodes)
    layer = nodes[node_index].layer
    assert isinstance(layer, Dense)
    bad = dataclasses.replace(layer, weight=frozen_array(layer.weight * 1.5))
    nodes[node_index] = dataclasses.replace(nodes[node_index], layer=bad)
    graph = dataclasses.replace(loaded.graph, nodes=tuple(nodes))
    return dataclasses.replace(loaded, graph=graph)


def test_a_disagreeing_graph_stops_the_audit_naming_the_first_bad_layer() -> None:
    loaded = load_onnx(zoo.model_path("digits_mlp3"))
    dense = [i for i, n in enumerate(loaded.graph.nodes) if isinstance(n.layer, Dense)]
    tampered = _tampered(loaded, dense[1])
    torch_model = build_torch_model(loaded.proto, loaded.graph, loaded.has_batch)
    data = np.load(zoo.dataset_path("digits_mlp3"))["x"][:5]
    with pytest.raises(
        FidelityError, match=f"first disagreeing layer: {tampered.graph.nodes[dense[1]].name}"
    ):
        check_fidelity(tampered, torch_model, data, np.random.default_rng(0))


def test_a_disagreeing_torch_module_is_caught() -> None:
    loaded = load_onnx(zoo.model_path("digits_mlp2"))
    tampered = _tampered(loaded, 1)
    wrong_torch = build_torch_model(tampered.proto, tampered.graph, tampered.has_batch)
    wrong_torch = dataclasses.replace(wrong_torch, module=tampered.graph.to_torch())
    with pytest.raises(FidelityError, match="torch module disagrees"):
        check_fidelity(loaded, wrong_torch, None, np.random.default_rng(0))


def test_old_export_without_onnx2torch_support_still_gets_a_module() -> None:
    loaded = load_onnx(CORPUS / "acasxu" / "ACASXU_run2a_1_1_batch_2000.onnx")
    torch_model = build_torch_model(loaded.proto, loaded.graph, loaded.has_batch)
    # onnx2torch has no Flatten-1 converter: the module comes from an opset-13 upgrade
    assert torch_model.source == "onnx2torch"


def test_scaled_error_is_per_sample() -> None:
    """One input with large outputs must not hide a large absolute error at another."""
    reference = np.array([[1000.0, 0.0], [0.5, 0.2]])
    ours = reference + np.array([[0.0, 0.0], [0.05, 0.0]])
    np.testing.assert_allclose(sample_errors(ours, reference), [0.0, 0.05])
    assert scaled_error(ours, reference) == pytest.approx(0.05)  # not 0.05 / 1000
