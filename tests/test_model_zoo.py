"""The committed model zoo: files, datasets, manifest numbers, model-specific properties,
byte-for-byte rebuild and the robustness gap of the adversarially trained binary net."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import audit_model_zoo as zoo
from audit_model_zoo.build import build_models
from audit_model_zoo.datasets import load_npz, validate_dataset
from audit_model_zoo.evaluate import (
    dataset_of,
    decide,
    mlp_from_onnx,
    onnx_accuracy,
    onnx_logits,
)
from audit_model_zoo.onnx_export import META_DATASET, META_ZOO_NAME
from audit_model_zoo.training import robust_accuracy, sphere_data, train_depth2_exponential

EXPECTED = {
    "digits_linear",
    "digits_mlp2",
    "digits_mlp3",
    "digits_cnn",
    "digits_resnet",
    "binary_fc3_benign",
    "binary_fc3_pgd",
    "sphere_depth2",
    "nonneg_2layer",
    "digits_svm_part0",
    "digits_svm_part1",
    "digits_svm_part2",
    "digits_mlp2_part0",
    "digits_mlp2_part1",
    "digits_mlp2_part2",
    "transfer_a9",
}
NAMES = zoo.names()
FAMILY = {n for n in EXPECTED if "_part" in n}
"""Transfer families (Charles et al. 2019, Sec. 7), each trained on a third of the data."""


def _model(name: str) -> onnx.ModelProto:
    return onnx.load(str(zoo.model_path(name)))


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _dims(value_info: onnx.ValueInfoProto) -> list[Any]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_manifest_has_the_fixed_names() -> None:
    assert set(NAMES) == EXPECTED
    assert len(NAMES) == len(set(NAMES))


@pytest.mark.parametrize("name", NAMES)
def test_model_file_is_valid(name: str) -> None:
    entry = zoo.entry(name)
    model = _model(name)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == entry["opset"]
    assert model.doc_string
    (inp,), (out,) = model.graph.input, model.graph.output
    assert _dims(inp) == entry["input_shape"]
    assert out.name == "logits" and _dims(out) == ["batch", entry["num_outputs"]]
    props = {p.key: p.value for p in model.metadata_props}
    assert props[META_ZOO_NAME] == name
    assert props[META_DATASET].startswith("../data/")
    assert dataset_of(zoo.model_path(name)) == zoo.dataset_path(name).resolve()
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in model.graph.initializer)


@pytest.mark.parametrize("name", NAMES)
def test_dataset_loads_and_validates(name: str) -> None:
    entry = zoo.entry(name)
    with np.load(zoo.dataset_path(name), allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    validate_dataset(arrays, tuple(entry["input_shape"][1:]), entry["num_classes"])
    assert len(np.unique(arrays["y"])) == entry["num_classes"]


@pytest.mark.parametrize("name", NAMES)
def test_accuracy_matches_manifest(name: str) -> None:
    accuracy = onnx_accuracy(zoo.model_path(name), zoo.dataset_path(name))
    assert abs(accuracy - zoo.entry(name)["accuracy"]) <= 1e-9
    assert accuracy >= (0.93 if name in FAMILY else 0.95)


def test_sphere_depth2_fits_its_training_set_without_output_bias() -> None:
    model = _model("sphere_depth2")
    last = model.graph.node[-1]
    assert last.op_type == "Gemm" and len(last.input) == 2  # no C input: no output bias
    assert _dims(model.graph.output[0]) == ["batch", 1]
    data = load_npz(zoo.dataset_path("sphere_depth2"))
    y_pm1 = np.where(data["y"] == 1, 1.0, -1.0)
    margins = y_pm1 * onnx_logits(zoo.model_path("sphere_depth2"), data["x"])[:, 0]
    assert (margins > 0).all()
    d = data["x"].shape[1]
    np.testing.assert_allclose(np.linalg.norm(data["x"], axis=1), np.sqrt(d), rtol=1e-6)


def test_nonneg_2layer_is_in_class_r_prime() -> None:
    model = _model("nonneg_2layer")
    output = model.graph.node[-1]
    weights = _weights(model)
    v, bias = weights[output.input[1]], weights[output.input[2]]
    assert v.shape[0] == 1 and (v >= 0).all()
    assert bias.shape == (1,) and -bias[0] > 0  # logit = f(x) - a with a > 0


def test_transfer_families_train_on_disjoint_thirds() -> None:
    from audit_model_zoo.build import _family_parts

    parts = _family_parts()
    assert len(parts) == 3 and sum(len(p) for p in parts) == 1347
    assert len(np.unique(np.concatenate(parts))) == 1347  # disjoint, covering the split
    for family, ops in (("digits_svm", ["Gemm"]), ("digits_mlp2", ["Gemm", "Relu", "Gemm"])):
        weights = []
        for k in range(3):
            model = _model(f"{family}_part{k}")
            assert [n.op_type for n in model.graph.node] == ops  # same architecture
            weights.append(numpy_helper.to_array(model.graph.initializer[0]))
        assert not np.allclose(weights[0], weights[1])  # different data, different models


def test_transfer_a9_fits_its_three_points_with_f_itself_as_logit() -> None:
    data = load_npz(zoo.dataset_path("transfer_a9"))
    np.testing.assert_array_equal(data["x"], [[-1, 1], [1, 1], [0, -1]])
    np.testing.assert_array_equal(data["y"], [1, 1, 0])
    logits = onnx_logits(zoo.model_path("transfer_a9"), data["x"])[:, 0]
    np.testing.assert_allclose(logits, [0.5, 0.5, 0.0])  # f(x3) = 0: on the class-0 side
    assert (decide(logits[:, None]) == data["y"]).all()


def test_mlp3_uses_matmul_add_and_gemm() -> None:
    ops = {n.op_type for n in _model("digits_mlp3").graph.node}
    assert {"MatMul", "Add", "Gemm", "Relu"} <= ops


def test_resnet_keeps_batch_norm_with_real_running_stats() -> None:
    model = _model("digits_resnet")
    weights = _weights(model)
    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    assert len(bns) == 3
    assert any(n.op_type == "Add" for n in model.graph.node)
    for bn in bns:
        mean, var = weights[bn.input[3]], weights[bn.input[4]]
        assert not np.allclose(mean, 0.0) and not np.allclose(var, 1.0)


TRAINING_RTOL = 1e-5
"""Training runs float32 torch kernels whose last digits differ between CPUs (AVX2 vs
AVX-512, BLAS builds): numbers from training are compared to this relative tolerance,
far below any change a real edit of the recipe makes (the loss moves in the 3rd digit)."""


def assert_close_tree(rebuilt: Any, committed: Any, where: str = "entry") -> None:
    """Equal structure and non-float values; floats within ``TRAINING_RTOL``."""
    if isinstance(committed, dict):
        assert isinstance(rebuilt, dict) and rebuilt.keys() == committed.keys(), where
        for key in committed:
            assert_close_tree(rebuilt[key], committed[key], f"{where}.{key}")
    elif isinstance(committed, list):
        assert isinstance(rebuilt, list) and len(rebuilt) == len(committed), where
        for i, (a, b) in enumerate(zip(rebuilt, committed, strict=True)):
            assert_close_tree(a, b, f"{where}[{i}]")
    elif isinstance(committed, float) and not isinstance(committed, bool):
        assert rebuilt == pytest.approx(committed, rel=TRAINING_RTOL, abs=1e-12), where
    else:
        assert rebuilt == committed, where


def assert_same_onnx(rebuilt: Path, committed: Path) -> None:
    """Same graph, attributes and metadata; initializer values within ``TRAINING_RTOL`` of
    the largest weight of each tensor (a real change moves weights by far more)."""
    new, old = onnx.load(str(rebuilt)), onnx.load(str(committed))
    new_weights = {t.name: numpy_helper.to_array(t) for t in new.graph.initializer}
    old_weights = {t.name: numpy_helper.to_array(t) for t in old.graph.initializer}
    assert new_weights.keys() == old_weights.keys()
    for name, value in old_weights.items():
        assert new_weights[name].shape == value.shape and new_weights[name].dtype == value.dtype
        scale = float(np.abs(value).max(initial=0.0)) or 1.0
        np.testing.assert_allclose(new_weights[name], value, rtol=0, atol=TRAINING_RTOL * scale)
    del new.graph.initializer[:], old.graph.initializer[:]
    assert new.SerializeToString() == old.SerializeToString()


def test_rebuild_reproduces_committed_files(tmp_path: Path) -> None:
    (entry,) = build_models(["digits_linear"], root=tmp_path, log=lambda _: None)
    assert_close_tree(entry, zoo.entry("digits_linear"))
    assert_same_onnx(tmp_path / entry["file"], zoo.ZOO_DIR / entry["file"])
    # the dataset is made by numpy from a fixed seed, with no float kernels: byte for byte
    dataset = entry["dataset"]
    assert (tmp_path / dataset).read_bytes() == (zoo.ZOO_DIR / dataset).read_bytes()


def test_rebuild_check_catches_a_changed_weight(tmp_path: Path) -> None:
    """The tolerance of the rebuild test still sees a real change of one weight."""
    model = onnx.load(str(zoo.model_path("digits_linear")))
    weight = model.graph.initializer[0]
    array = numpy_helper.to_array(weight).copy()
    array.flat[0] += 1e-3 * float(np.abs(array).max())
    weight.CopyFrom(numpy_helper.from_array(array, weight.name))
    onnx.save(model, str(tmp_path / "changed.onnx"))
    with pytest.raises(AssertionError):
        assert_same_onnx(tmp_path / "changed.onnx", zoo.model_path("digits_linear"))


def test_mlp_from_onnx_matches_onnxruntime() -> None:
    path = zoo.model_path("digits_mlp3")
    x = load_npz(zoo.dataset_path("digits_mlp3"))["x"][:50]

    with torch.no_grad():
        torch_logits = mlp_from_onnx(path)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(torch_logits, onnx_logits(path, x), atol=1e-4)
    assert (decide(torch_logits) == decide(onnx_logits(path, x))).all()


def test_pgd_training_buys_l2_robustness() -> None:
    eps = zoo.entry("binary_fc3_pgd")["training"]["eps_train"]
    data = load_npz(zoo.dataset_path("binary_fc3_pgd"))
    robust = {
        name: robust_accuracy(mlp_from_onnx(zoo.model_path(name)), data["x"], data["y"], eps)
        for name in ("binary_fc3_benign", "binary_fc3_pgd")
    }
    assert robust["binary_fc3_pgd"] >= robust["binary_fc3_benign"] + 0.2
    for name, value in robust.items():
        assert abs(value - zoo.entry(name)["robust_accuracy"]) <= 0.05


def test_depth2_trainer_reaches_the_loss_target_on_small_data() -> None:
    x, y = sphere_data(d=20, m=6, seed=1)
    fit = train_depth2_exponential(x, y, width=10, seed=0, loss_target=1e-4)
    margins = y * (np.maximum(x @ fit.W.T + fit.b, 0.0) @ fit.v)
    assert (margins > 0).all()
    assert fit.history[-1]["loss"] < 1e-4
    assert fit.W.shape == (10, 20) and fit.b.shape == (10,) and fit.v.shape == (10,)
