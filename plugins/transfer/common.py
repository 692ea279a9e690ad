"""Small shared pieces of the transfer analyses (norms, flips along rays, labels)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from audit_core import labels
from audit_core.attack_budget import LARGE_MODEL_MACS
from audit_core.data import AuditData
from audit_core.graph import LayerGraph
from audit_core.model import AuditedModel

_ROWS_BUDGET = 2**22  # floats per batch of perturbed inputs
_PREDICT_ROWS = 8192


Labels = Callable[[np.ndarray], np.ndarray]
"""Labels of flat input rows (``labeller``)."""


def labeller(model: AuditedModel) -> Labels:
    """The labels the empirical tests (flip curves, segments, rays) query: the layer graph
    in float64, or, for a model above ``LARGE_MODEL_MACS`` multiply-adds per sample, the
    deployed model in onnxruntime (float32; resnet18: 3.4x faster than the float64 graph),
    whose labels are what those tests are about. Exact checks of the theorems keep the
    float64 layer graph (``predict``)."""
    if model.forward_macs > LARGE_MODEL_MACS:
        return functools.partial(_runtime_labels, model)
    return functools.partial(predict, model.graph)


def _runtime_labels(model: AuditedModel, x: np.ndarray) -> np.ndarray:
    shape = model.graph.input_shape
    rows = model.graph.chunk_rows
    parts = [
        labels.predict(model.runtime.outputs(x[s : s + rows].reshape(-1, *shape))[1])
        for s in range(0, len(x), rows)
    ]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


def predict(graph: LayerGraph, x: np.ndarray) -> np.ndarray:
    """Labels of flat rows ``x`` by the layer graph (float64), in chunks."""
    if len(x) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate(
        [graph.predict(x[s : s + _PREDICT_ROWS]) for s in range(0, len(x), _PREDICT_ROWS)]
    )


def norm_of(v: np.ndarray, norm: str) -> np.ndarray:
    """l2 or linf norm along the last axis."""
    return np.abs(v).max(axis=-1) if norm == "linf" else np.linalg.norm(v, axis=-1)


def class_name(data: AuditData, k: int) -> str:
    return data.class_names[k] if data.class_names else str(k)


def box_diameter(data: AuditData) -> float:
    """l2 diameter of the input box ``[lower, upper]^D``."""
    return float(np.sqrt(data.flat.shape[1]) * (data.upper - data.lower))


def flip_curves(
    classify: Labels, points: np.ndarray, directions: np.ndarray, label: int, scales: np.ndarray
) -> np.ndarray:
    """``(R, G)``: fraction of ``points`` with ``h(x + s d_r) != label`` per direction and scale."""
    if len(points) == 0:
        return np.full((len(directions), len(scales)), np.nan)
    flips = _flips(classify, points, directions, label, scales)
    parts = [flipped.mean(axis=2) for flipped in flips]
    return np.concatenate(parts)


def first_flip_on_grid(
    classify: Labels,
    points: np.ndarray,
    directions: np.ndarray,
    label: int,
    scales: np.ndarray,
) -> np.ndarray:
    """``(R, n)``: the first grid scale ``s`` with ``h(x + s d_r) != label`` (``inf`` if none)."""
    parts = [
        np.where(flipped.any(axis=1), scales[flipped.argmax(axis=1)], np.inf)
        for flipped in _flips(classify, points, directions, label, scales)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, len(points)))


def _flips(
    classify: Labels, points: np.ndarray, directions: np.ndarray, label: int, scales: np.ndarray
):
    """``(r, G, n)`` bool blocks over the directions: ``h(x + s d) != label``, built in
    batches of whole directions (``(G, n, D)`` inputs each, at most ``_ROWS_BUDGET`` floats)."""
    step = max(1, _ROWS_BUDGET // max(len(scales) * points.size, 1))
    for start in range(0, len(directions), step):
        dirs = directions[start : start + step]
        rows = points[None, None] + scales[None, :, None, None] * dirs[:, None, None, :]
        found = classify(rows.reshape(-1, points.shape[1]))
        yield found.reshape(len(dirs), len(scales), len(points)) != label


def smallest_reaching(scales: np.ndarray, curve: np.ndarray, level: float) -> float:
    """Smallest grid value where ``curve >= level`` (``inf`` if never)."""
    hits = np.flatnonzero(np.nan_to_num(curve, nan=0.0) >= level)
    return float(scales[hits[0]]) if hits.size else float("inf")
