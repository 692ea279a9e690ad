"""The lower-bounds analysis through ``audit`` on zoo and corpus models.

Includes the cross-check with the model's own certificates: a verified collision
(u~, v~) of the whole feature extractor gives the model identical logits at u~
and v~, so the two points cannot both be certified (correctly) beyond the
collision's budget; and the 0-1 lower bound never exceeds 1 - certified accuracy.
The certificate (Singla & Feizi, Theorem 3: min(face distance, decision
distance), correct samples only) is computed here from ``audit_core.linearize``.
"""

from __future__ import annotations

import numpy as np
import pytest

import audit_model_zoo as zoo
from audit_core.linearize import decision_distances, linearize
from audit_core.onnx_import import load_onnx
from audit_core.testing import save_dataset
from audit_plugins.lower_bounds.compute import choose_task, layer_contribution, saturation_prefix
from audit_plugins.lower_bounds.findings import CAVEAT
from helpers import corpus


@pytest.fixture(autouse=True)
def only_this_plugin(monkeypatch):
    monkeypatch.setenv("AUDIT_PLUGINS", "lower-bounds")


def subset(
    tmp_path, name: str, per_class: int, classes=(0, 1)
) -> tuple[str, np.ndarray, np.ndarray]:
    """The first ``per_class`` points of each class of a zoo dataset, as an audit-data file."""
    data = np.load(zoo.dataset_path(name))
    keep = np.concatenate([np.flatnonzero(data["y"] == c)[:per_class] for c in classes])
    x, y = data["x"][keep].astype(np.float32), data["y"][keep]
    extra = {k: data[k] for k in ("class_names", "lower", "upper") if k in data.files}
    path = save_dataset(tmp_path / f"{name}.npz", x, y, **extra)
    return str(path), x.astype(np.float64), y


def certified_radius(graph, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Theorem 3 certificate per sample (0 where misclassified)."""
    lin = linearize(graph, x)
    radius = np.minimum(lin.face_distance, decision_distances(lin, y).min(axis=1))
    return np.where(graph.predict(x) == y, radius, 0.0)


@pytest.mark.parametrize(
    ("name", "per_class"),
    [
        ("binary_fc3_benign", 10),
        ("binary_fc3_pgd", 10),
        ("nonneg_2layer", 10),
        ("sphere_depth2", 10),
    ],
)
def test_whole_network_bound_respects_the_models_certificates(
    run_audit, tmp_path, name, per_class
) -> None:
    path, x, y = subset(tmp_path, name, per_class)
    graph = load_onnx(zoo.model_path(name)).graph
    radius = certified_radius(graph, x, y)
    eps = np.quantile(radius[radius > 0], [0.1, 0.5, 0.9]) if (radius > 0).any() else [0.1]
    # the largest budget covers every pair, so that no pair is pruned from the search
    top = np.linalg.norm(x[:per_class, None] - x[None, per_class:], axis=2).max() / 2
    grid = ",".join(f"{e:.6g}" for e in sorted({0.0, *eps, *(2 * np.asarray(eps)), top}))
    run = run_audit(
        zoo.model_path(name),
        "--data",
        path,
        "--eps",
        f"{eps[0]:.6g}",
        "-o",
        f"lower-bounds.eps_grid={grid}",
        "--workers",
        "1",
        "--export",
        "exp",
    )
    assert run.exit_code in (0, 1), run.stderr
    arrays = np.load(tmp_path / "exp" / "lower_bounds.npz")
    deepest = arrays["collision_distance"][-1]
    a, b = arrays["pair_position"].T
    both_correct = (radius[a] > 0) & (radius[b] > 0)
    # a collision at budget d gives equal logits at u~ and v~: not both certified beyond d
    assert np.all(deepest[both_correct] >= np.minimum(radius[a], radius[b])[both_correct] - 1e-9)
    for e, bound in zip(arrays["eps"], arrays["zero_one_bound"][-1], strict=True):
        certified_accuracy = np.mean(radius > e)
        assert bound <= 1.0 - certified_accuracy + 1e-12


def test_binary_model_end_to_end_with_export(run_audit, tmp_path) -> None:
    path, x, y = subset(tmp_path, "binary_fc3_benign", 8)
    run = run_audit(
        zoo.model_path("binary_fc3_benign"),
        "--data",
        path,
        "--eps",
        "0.9",
        "-o",
        "lower-bounds.grid_points=7",
        "--export",
        "exp",
    )
    assert run.exit_code in (0, 1), run.stderr
    findings = [f for f in run.report["findings"] if f["analysis"] == "lower-bounds"]
    assert [f["id"].split("/")[1] for f in findings] == [
        "robust-loss",
        "layer-contribution",
        "collisions",
    ]
    for finding in findings:
        assert finding["method"] == "certified"
        assert CAVEAT in finding["summary"]
    plots = findings[0]["evidence"]["plots"]
    assert len(plots[0]["series"]) == 5  # input, Dense, Relu, Dense, Relu
    arrays = np.load(tmp_path / "exp" / "lower_bounds.npz")
    assert arrays["pair_position"].shape == arrays["pair_index"].shape == (64, 2)
    assert arrays["collision_distance"].shape == (5, 64)
    assert (
        arrays["zero_one_bound"].shape
        == arrays["cross_entropy_bound"].shape
        == (5, len(arrays["eps"]))
    )
    assert 0.9 in arrays["eps"]
    metrics = {m["name"]: m["value"] for m in findings[0]["metrics"]}
    column = list(arrays["eps"]).index(0.9)
    assert metrics["zero_one_lower_bound"] == pytest.approx(arrays["zero_one_bound"][-1, column])
    assert metrics["robust_accuracy_ceiling"] == pytest.approx(1 - metrics["zero_one_lower_bound"])
    # the input-space distances are the half distances of the exported pairs
    a, b = arrays["pair_position"].T
    np.testing.assert_allclose(
        arrays["collision_distance"][0], np.linalg.norm(x[a] - x[b], axis=1) / 2, rtol=1e-6
    )
    assert np.all(y[a] == 0) and np.all(y[b] == 1)


def test_multi_class_model_with_a_chosen_pair_and_the_default(run_audit, tmp_path) -> None:
    path, _, _ = subset(tmp_path, "digits_mlp2", 6, classes=range(10))
    run = run_audit(
        zoo.model_path("digits_mlp2"),
        "--data",
        path,
        "-o",
        "lower-bounds.classes=3,8",
        "--export",
        "exp",
    )
    assert run.exit_code in (0, 1), run.stderr
    arrays = np.load(tmp_path / "exp" / "lower_bounds.npz")
    assert tuple(arrays["classes"]) == (3, 8)
    assert arrays["pair_position"].shape == (36, 2)
    summary = run.report["findings"][0]["summary"]
    assert "classes 3 vs 8 (chosen with lower-bounds.classes" in summary
    # the default pair is the most confused one of the model's confusion matrix
    from audit_core.data import AuditData

    graph = load_onnx(zoo.model_path("digits_mlp2")).graph
    data = np.load(path)
    audit_data = AuditData(
        data["x"].astype(np.float64),
        data["y"],
        np.arange(len(data["y"])),
        0.0,
        1.0,
        tuple(str(n) for n in data["class_names"]),
        path,
    )
    task = choose_task(graph, audit_data, "")
    predicted = graph.predict(audit_data.x)
    confusion = np.zeros((10, 10))
    np.add.at(confusion, (audit_data.y, predicted), 1)
    score = confusion + confusion.T
    np.fill_diagonal(score, -1)
    assert score[task.classes] == score.max()


def test_cnn_prefix_after_maxpool_keeps_the_carried_collisions(run_audit, tmp_path) -> None:
    path, _, _ = subset(tmp_path, "digits_cnn", 4, classes=(3, 8))
    run = run_audit(zoo.model_path("digits_cnn"), "--data", path, "--export", "exp")
    assert run.exit_code in (0, 1), run.stderr
    arrays = np.load(tmp_path / "exp" / "lower_bounds.npz")
    assert list(arrays["prefix_kind"]) == ["input", "affine", "relu", "carried"]
    distances = arrays["collision_distance"]
    np.testing.assert_array_equal(distances[3], distances[2])  # carried and re-verified
    assert np.all(distances[2] <= distances[1])


def test_corpus_mnist_net_smoke(run_audit, tmp_path) -> None:
    """A real model made elsewhere: mnist-net_256x2 (784 inputs) on the corpus images."""
    run = run_audit(
        corpus("mnistfc/mnist-net_256x2.onnx"),
        "--data",
        corpus("mnistfc/mnist_samples.npz"),
        "-o",
        "lower-bounds.classes=1,8",
        "-o",
        "lower-bounds.max_steps=3",
        "--export",
        "exp",
    )
    assert run.exit_code in (0, 1), run.stderr
    arrays = np.load(tmp_path / "exp" / "lower_bounds.npz")
    assert list(arrays["prefix_kind"]) == ["input", "affine", "relu", "relu", "relu"]
    distances = arrays["collision_distance"]
    assert distances.shape == (5, 4)
    # 784 -> 256 reduces the dimension: affine collisions are cheaper than input ones,
    # and the ReLU layers cheaper still
    assert np.all(distances[1] < distances[0])
    assert np.all(distances[4] <= distances[1])
    notes = run.report["findings"][2]["evidence"]["notes"]
    assert any("search_dim 256" in note for note in notes)  # Appendix D.1 projection


def test_box_option_is_reported_and_never_lowers_the_bounds(run_audit, tmp_path) -> None:
    path, _, _ = subset(tmp_path, "binary_fc3_benign", 6)
    common = ("--data", path, "--eps", "1.0", "--workers", "1")
    free = run_audit(zoo.model_path("binary_fc3_benign"), *common, "--export", "free")
    boxed = run_audit(
        zoo.model_path("binary_fc3_benign"),
        *common,
        "-o",
        "lower-bounds.box=true",
        "--export",
        "boxed",
        out="out-boxed",
    )
    assert free.exit_code in (0, 1) and boxed.exit_code in (0, 1), boxed.stderr
    assert "kept inside the input bounds [0, 1]" in boxed.report["findings"][0]["summary"]
    assert "without input-box constraint" in free.report["findings"][0]["summary"]
    a = np.load(tmp_path / "free" / "lower_bounds.npz")["collision_distance"]
    b = np.load(tmp_path / "boxed" / "lower_bounds.npz")["collision_distance"]
    # input space and the injective first layer: the midpoint is optimal either way
    np.testing.assert_allclose(b[:2], a[:2], rtol=1e-9)
    assert np.median(b[-1]) >= np.median(a[-1])  # the box makes collisions harder


def test_layer_reading_names_the_largest_rise_and_the_saturating_prefix() -> None:
    values = np.array([0.05, 0.05, 0.2, 0.55, 0.6])
    assert layer_contribution(values) == (3, pytest.approx(0.35))
    assert saturation_prefix(values) == 4
    assert saturation_prefix(np.array([0.0, 0.3, 0.7, 0.7])) == 2
    assert layer_contribution(np.zeros(3)) == (1, 0.0)
