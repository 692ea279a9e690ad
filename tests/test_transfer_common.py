"""Shared pieces of the transfer analyses: the labels the empirical tests query."""

from __future__ import annotations

import numpy as np
import pytest

import audit_model_zoo as zoo
from audit_core.model import open_model
from audit_plugins.transfer import common


@pytest.fixture(scope="module")
def cnn():
    x = np.random.default_rng(0).random((300, 1, 8, 8))
    return open_model(zoo.model_path("digits_cnn"), "cnn", x[:8], np.random.default_rng(1)), x


def test_small_models_are_labelled_by_the_float64_layer_graph(cnn) -> None:
    model, x = cnn
    classify = common.labeller(model)
    assert classify.func is common.predict
    np.testing.assert_array_equal(classify(x.reshape(len(x), -1)), model.graph.predict(x))


def test_large_models_are_labelled_by_the_deployed_model(cnn, monkeypatch) -> None:
    """Above ``LARGE_MODEL_MACS`` the labels come from onnxruntime (float32), in chunks;
    away from ties they are the layer graph's."""
    model, x = cnn
    monkeypatch.setattr(common, "LARGE_MODEL_MACS", 0)
    monkeypatch.setitem(vars(model.graph), "chunk_rows", 64)  # several chunks
    classify = common.labeller(model)
    assert classify.func is common._runtime_labels
    found = classify(x.reshape(len(x), -1))
    assert found.dtype == np.int64 and found.shape == (300,)
    assert np.mean(found == model.graph.predict(x)) >= 0.99
    assert classify(np.zeros((0, 64))).shape == (0,)
