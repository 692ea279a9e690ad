"""Reading and validating audit data."""

from __future__ import annotations

import numpy as np
import pytest

import audit_model_zoo as zoo
from audit_core.data import read_data, subsample, validate
from audit_core.errors import DataError
from audit_core.onnx_import import load_onnx


@pytest.fixture(scope="module")
def cnn_graph():
    return load_onnx(zoo.model_path("digits_cnn")).graph


@pytest.fixture(scope="module")
def mlp_graph():
    return load_onnx(zoo.model_path("digits_mlp2")).graph


def test_npz_with_bounds_names_and_flat_samples_fits_an_image_model(cnn_graph) -> None:
    raw = read_data(zoo.dataset_path("digits_mlp2"))  # (N, 64) vectors
    data = validate(raw, cnn_graph)
    assert data.x.shape[1:] == (1, 8, 8) and data.x.dtype == np.float64
    assert (data.lower, data.upper, data.bounds_source) == (0.0, 1.0, "file")
    assert data.class_names == tuple(str(i) for i in range(10))
    assert data.labels_from == "file"


def test_npy_with_label_file_and_csv(tmp_path, mlp_graph) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.random((7, 64)), rng.integers(0, 10, 7)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "y.txt").write_text("\n".join(str(v) for v in y))
    data = validate(read_data(tmp_path / "x.npy", tmp_path / "y.txt"), mlp_graph)
    np.testing.assert_array_equal(data.y, y)
    header = ",".join([f"p{i}" for i in range(64)] + ["label"])
    rows = "\n".join(",".join(map(str, [*row, label])) for row, label in zip(x, y, strict=True))
    (tmp_path / "d.csv").write_text(header + "\n" + rows + "\n")
    from_csv = validate(read_data(tmp_path / "d.csv"), mlp_graph)
    np.testing.assert_allclose(from_csv.flat, x)
    np.testing.assert_array_equal(from_csv.y, y)


def test_missing_labels_use_predictions(tmp_path, mlp_graph) -> None:
    x = np.random.default_rng(1).random((5, 64))
    np.save(tmp_path / "x.npy", x)
    predicted = mlp_graph.predict(x)
    data = validate(read_data(tmp_path / "x.npy"), mlp_graph, predicted_labels=predicted)
    assert data.labels_from == "model predictions"
    np.testing.assert_array_equal(data.y, predicted)


def test_bounds_precedence_and_violations(tmp_path, mlp_graph) -> None:
    x = np.random.default_rng(2).random((4, 64)) * 0.5 + 0.25
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros(4, int))
    raw = read_data(tmp_path / "d.npz")
    data = validate(raw, mlp_graph)
    assert data.bounds_source == "data"
    assert (data.lower, data.upper) == (x.min(), x.max())
    assert validate(raw, mlp_graph, bounds=(0.0, 1.0)).bounds_source == "option"
    with pytest.raises(DataError, match="outside the input bounds"):
        validate(raw, mlp_graph, bounds=(0.3, 1.0))


@pytest.mark.parametrize(
    ("arrays", "needle"),
    [
        ({"x": np.zeros((3, 64)), "y": np.zeros(4, int)}, "4 labels for 3 samples"),
        ({"x": np.zeros((3, 64)), "y": np.array([0.5, 1, 2])}, "whole numbers"),
        ({"x": np.zeros((3, 64)), "y": np.array([0, -1, 2])}, "out of range"),
        ({"x": np.zeros((0, 64)), "y": np.zeros(0, int)}, "no samples"),
        ({"x": np.full((2, 64), np.inf), "y": np.zeros(2, int)}, "Inf"),
        ({"x": np.eye(2, 64), "y": np.zeros(2, int), "class_names": ["a", "b"]}, "class names"),
    ],
)
def test_validation_errors(tmp_path, mlp_graph, arrays, needle) -> None:
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError, match=needle):
        validate(read_data(tmp_path / "d.npz"), mlp_graph)


@pytest.mark.parametrize("suffix", [".json", ".pkl"])
def test_unknown_formats(tmp_path, suffix) -> None:
    (tmp_path / f"d{suffix}").write_text("{}")
    with pytest.raises(DataError, match="unknown data format"):
        read_data(tmp_path / f"d{suffix}")


def test_truncated_npz(tmp_path) -> None:
    good = zoo.dataset_path("digits_mlp2").read_bytes()
    (tmp_path / "cut.npz").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"not a readable \.npz"):
        read_data(tmp_path / "cut.npz")


def test_subsample_is_seeded_and_keeps_file_order(mlp_graph) -> None:
    data = validate(read_data(zoo.dataset_path("digits_mlp2")), mlp_graph)
    first = subsample(data, 20, np.random.default_rng(5))
    again = subsample(data, 20, np.random.default_rng(5))
    np.testing.assert_array_equal(first.indices, again.indices)
    assert (np.diff(first.indices) > 0).all()
    np.testing.assert_array_equal(first.x, data.x[first.indices])
    assert subsample(data, 10_000, np.random.default_rng(0)) is data


def test_float_noise_outside_the_bounds_is_clipped_and_counted(tmp_path) -> None:
    """The corpus MNIST samples have background pixels of -1.86e-9: with bounds [0, 1]
    they are clipped to 0 (and counted); values further out stay a data error."""
    from audit_core.data import BOUNDS_TOLERANCE, RawData, validate
    from audit_core.onnx_import import load_onnx
    from helpers import corpus

    graph = load_onnx(corpus("mnistfc/mnist-net_256x2.onnx")).graph
    x = np.load(corpus("mnistfc/mnist_samples.npz"))["x"][:4].astype(np.float64)
    assert x.min() < 0
    data = validate(RawData(x=x, y=None, source="mnist"), graph, bounds=(0.0, 1.0))
    assert data.x.min() == 0.0 and data.clipped == int(np.count_nonzero(x < 0))
    far = x.copy()
    far[0, 0] = -2 * BOUNDS_TOLERANCE
    with pytest.raises(DataError, match="outside the input bounds"):
        validate(RawData(x=far, y=None, source="mnist"), graph, bounds=(0.0, 1.0))
