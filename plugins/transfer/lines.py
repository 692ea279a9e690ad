"""Exact line searches: where a model's decision changes along ``x + t v``.

Part of ``audit_plugins.transfer``. Along a line, an affine/ReLU network of
depth <= 2 is piecewise linear in ``t`` with breakpoints where a hidden
pre-activation ``a_j + t s_j`` changes sign (``t_j = -a_j / s_j``); between two
breakpoints every logit is affine in ``t``. :func:`first_flip_depth2` evaluates
the logits exactly at every breakpoint and solves the affine pieces for the first
``t > 0`` where the prediction differs from ``y``: no grid, no tolerance beyond
float64 rounding. :func:`first_exit_halfspaces` does the same for a polyhedron
``{H x + h <= 0}`` (a linear classifier's class region, an AND-of-halfspaces
net). Everything is batched over lines (numpy, float64, chunked).

The decision rule is the project's (``audit_core.labels``): argmax with ties to the
lowest index; one logit ``g`` is read as the two logits ``(0, g)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_CHUNK_ELEMENTS = 2**22


@dataclass(frozen=True)
class Depth2:
    """Logits ``W2 relu(W1 x + b1) + b2`` (``W1`` None: the linear map ``W2 x + b2``).

    Always at least two logits: a single-logit model is stored as ``(0, g)``.
    """

    W1: np.ndarray | None
    b1: np.ndarray | None
    W2: np.ndarray
    b2: np.ndarray

    @classmethod
    def from_dense(cls, weights: tuple[np.ndarray, ...], biases: tuple[np.ndarray, ...]) -> Depth2:
        """From a ``DenseView`` of depth 1 or 2."""
        if len(weights) not in (1, 2):
            raise ValueError("only depth-1 and depth-2 dense views")
        W2, b2 = np.asarray(weights[-1], float), np.asarray(biases[-1], float)
        if W2.shape[0] == 1:  # one logit g -> logits (0, g)
            W2 = np.vstack([np.zeros_like(W2), W2])
            b2 = np.concatenate([[0.0], b2])
        if len(weights) == 1:
            return cls(None, None, W2, b2)
        return cls(np.asarray(weights[0], float), np.asarray(biases[0], float), W2, b2)

    def logits(self, x: np.ndarray) -> np.ndarray:
        hidden = x if self.W1 is None else np.maximum(x @ self.W1.T + self.b1, 0.0)
        return hidden @ self.W2.T + self.b2


def first_flip_depth2(net: Depth2, x: np.ndarray, v: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per line, ``inf {t > 0 : predict(x + t v) != y}`` (``inf`` if the ray never flips).

    ``x`` and ``v`` are ``(L, D)`` (``v`` may be ``(D,)``), ``y`` ``(L,)``. Lines whose
    start is already misclassified give 0.
    """
    v = np.broadcast_to(v, x.shape)
    width = 1 if net.W1 is None else net.W1.shape[0] + 1
    per_line = width * max(width - 1, 1) + width * net.W2.shape[0]
    chunk = max(1, _CHUNK_ELEMENTS // per_line)
    return np.concatenate(
        [
            _first_flip_chunk(net, x[s : s + chunk], v[s : s + chunk], y[s : s + chunk])
            for s in range(0, len(x), chunk)
        ]
        or [np.zeros(0)]
    )


def _first_flip_chunk(net: Depth2, x: np.ndarray, v: np.ndarray, y: np.ndarray) -> np.ndarray:
    starts, ends, z0, slope = _pieces(net, x, v)  # (L, S), (L, S), (L, S, K) x2
    rows = np.arange(len(x))
    gap0 = z0 - z0[rows, :, y][:, :, None]  # other logit minus the label's
    gap_slope = slope - slope[rows, :, y][:, :, None]
    lower = np.arange(net.W2.shape[0])[None, None, :] < y[:, None, None]
    wrong_at_start = (gap0 > 0) | ((gap0 >= 0) & lower)
    with np.errstate(divide="ignore", invalid="ignore"):
        root = starts[:, :, None] + np.where(gap_slope > 0, -gap0 / gap_slope, np.inf)
    root = np.where(root <= ends[:, :, None], root, np.inf)
    hit = np.where(wrong_at_start, starts[:, :, None], root)
    hit[rows, :, y] = np.inf
    hit = np.where(np.isfinite(starts)[:, :, None], hit, np.inf)
    return hit.min(axis=(1, 2))


def _pieces(
    net: Depth2, x: np.ndarray, v: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Segments ``[start, end]`` of the line and the logits' value/slope on each."""
    if net.W1 is None:
        starts = np.zeros((len(x), 1))
        ends = np.full((len(x), 1), np.inf)
        z0 = (x @ net.W2.T + net.b2)[:, None, :]
        slope = (v @ net.W2.T)[:, None, :]
        return starts, ends, z0, slope
    a = x @ net.W1.T + net.b1  # (L, m)
    s = v @ net.W1.T
    with np.errstate(divide="ignore", invalid="ignore"):
        breaks = np.where(s != 0, -a / s, np.inf)
    breaks = np.sort(np.where(breaks > 0, breaks, np.inf), axis=1)
    starts = np.concatenate([np.zeros((len(x), 1)), breaks], axis=1)  # (L, m + 1)
    ends = np.concatenate([breaks, np.full((len(x), 1), np.inf)], axis=1)
    finite_end = np.isfinite(ends)
    probe = np.where(finite_end, 0.5 * (starts + ends), starts + 1.0)
    probe = np.where(np.isfinite(starts), probe, 0.0)
    at_start = np.where(np.isfinite(starts), starts, 0.0)
    pre_start = a[:, None, :] + at_start[:, :, None] * s[:, None, :]  # (L, S, m)
    active = (a[:, None, :] + probe[:, :, None] * s[:, None, :]) > 0
    z0 = np.maximum(pre_start, 0.0) @ net.W2.T + net.b2
    slope = (active * s[:, None, :]) @ net.W2.T
    return starts, ends, z0, slope


def first_exit_halfspaces(H: np.ndarray, h: np.ndarray, x: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Per line, ``inf {t > 0 : H (x + t v) + h <= 0 fails}`` (exit from the polyhedron).

    0 where ``x`` is already outside (some row ``> 0``); ``inf`` when ``v`` is in the
    recession cone (no row increases along ``v``).
    """
    v = np.broadcast_to(v, x.shape)
    value = x @ H.T + h
    rate = v @ H.T
    with np.errstate(divide="ignore", invalid="ignore"):
        exit_time = np.where(rate > 0, -value / rate, np.inf)
    exit_time = np.maximum(exit_time, 0.0)
    exit_time = np.where(value > 0, 0.0, exit_time)
    return exit_time.min(axis=1)
