"""Which decision regions are convex, read off the layer graph (Charles et al. 2019, Sec. 5-6).

Part of ``audit_plugins.transfer`` (convex-region transfer). Structures covered:

- ``linear``: an affine model (dense view of depth 1). Each class region
  ``{x : z_k(x) >= z_j(x) for all j}`` is a polyhedron (Corollary 17; for K > 2,
  Theorem 11 applied to the one-vs-rest view ``h(x) == k``).
- ``lemma-13`` / ``lemma-14`` / ``nonneg-relu``: a depth-2 ReLU net with one logit
  (or the difference of two logits) ``g(x) = u^T relu(W x + b) + c`` with ``u >= 0``.
  ``f = u^T relu(W x + b)`` is convex (a nonnegative sum of convex functions), so
  class 0 = ``{g <= 0} = {f <= -c}`` is convex. The paper's classes: all ``u`` equal
  and ``c = 0`` is class R (Lemma 13, up to a positive scale that does not change the
  decision); ``c = -a < 0`` is class R' (Lemma 14); other thresholds follow from the
  same argument (``nonneg-relu``).
- ``nonpos-relu``: the mirror image, ``u <= 0``: class 1 = ``{-g < 0}`` is a strict
  sublevel set of a convex function, hence convex (Lemma 14 with the labels swapped).
- ``and-of-halfspaces`` / ``or-of-halfspaces``: a logit ``g = c max_j (A x + a)_j + d``
  (an affine map, one global MaxPool, an affine map). With ``c < 0`` class 1 is
  ``{max_j (A x + a)_j < d / |c|}``, an intersection of open halfspaces: the class R''
  of Theorem 16 (``phi(relu(W x + b))`` = "all units positive" is exactly a min of
  affine units, and ``min = -max(-.)`` is how an ONNX graph can express it). With
  ``c > 0`` class 0 is an intersection of closed halfspaces (an OR-of-halfspaces net,
  the form of Lemma 13).

A "region is convex" statement here is exact; the theorems then need only two
correctly classified data points (Theorem 12).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from audit_core.errors import NotApplicable
from audit_core.graph import DenseView, LayerGraph
from audit_core.layers import LayerKind, MaxPool
from audit_plugins.transfer.lines import Depth2, first_exit_halfspaces, first_flip_depth2


@dataclass(frozen=True)
class Structure:
    """A detected structure: which classes have a convex region, why, and an exact
    line search for those classes."""

    kind: str
    convex_classes: tuple[int, ...]
    reason: str
    theorems: tuple[str, ...]
    checks: tuple[tuple[str, bool, str], ...] = ()
    """(assumption, holds, detail) triples checked on the graph."""
    depth2: Depth2 | None = None
    halfspaces: tuple[np.ndarray, np.ndarray] | None = None
    """``(H, h)`` with the convex class = ``{H x + h <= 0}`` (max-affine structures)."""
    extra: dict[str, float] = field(default_factory=dict)

    def first_flip(self, x: np.ndarray, v: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Exact smallest ``t > 0`` (an infimum) with ``h(x + t v) != y``, per line."""
        if self.halfspaces is not None:
            return first_exit_halfspaces(*self.halfspaces, x, v)
        assert self.depth2 is not None
        return first_flip_depth2(self.depth2, x, v, y)


def detect(graph: LayerGraph, view: DenseView | None) -> tuple[Structure | None, str]:
    """The structure of ``graph`` the theorems cover, or ``(None, why not)``."""
    if view is not None and view.depth == 1:
        return _linear(view), ""
    if view is not None and view.depth == 2:
        return _depth2(view)
    if view is not None:
        return None, f"an affine/ReLU chain of depth {view.depth} (the theorems cover depth 2)"
    found = _max_affine(graph)
    if found is not None:
        return found
    return None, "not an affine/ReLU chain of depth <= 2 nor an affine-MaxPool-affine net"


def _linear(view: DenseView) -> Structure:
    net = Depth2.from_dense(view.weights, view.biases)
    classes = tuple(range(net.W2.shape[0]))
    return Structure(
        kind="linear",
        convex_classes=classes,
        reason="the model is affine: every class region {x : z_k(x) >= z_j(x) for all j} is "
        "an intersection of halfspaces, hence convex",
        theorems=("Theorem 11", "Theorem 12", "Corollary 17"),
        checks=(("model is affine (dense view of depth 1)", True, ""),),
        depth2=net,
    )


def output_row(view: DenseView) -> tuple[np.ndarray, float] | None:
    """``(u, c)`` with the decision ``class 1 iff u^T relu(W x + b) + c > 0``, or None."""
    W2, b2 = view.weights[-1], view.biases[-1]
    if W2.shape[0] == 1:
        return np.asarray(W2[0], float), float(b2[0])
    if W2.shape[0] == 2:  # argmax of two logits: class 1 iff z1 - z0 > 0 (ties -> 0)
        return np.asarray(W2[1] - W2[0], float), float(b2[1] - b2[0])
    return None


def _depth2(view: DenseView) -> tuple[Structure | None, str]:
    row = output_row(view)
    if row is None:
        k = view.weights[-1].shape[0]
        return None, f"a depth-2 ReLU net with {k} logits (the theorems cover binary nets)"
    u, c = row
    net = Depth2.from_dense(view.weights, view.biases)
    scalar = "one logit" if view.weights[-1].shape[0] == 1 else "the two-logit difference"
    if (u >= 0).all() and (u > 0).any():
        kind, lemma, why = _nonneg_kind(u, c)
        checks = (
            ("depth-2 ReLU net with a scalar decision", True, scalar),
            ("output weights u >= 0", True, f"min u = {u.min():.4g}"),
            ("threshold a = -c", c < 0 or kind == "lemma-13", f"c = {c:.6g}"),
        )
        return (
            Structure(
                kind=kind,
                convex_classes=(0,),
                reason=why,
                theorems=(lemma, "Theorem 11", "Theorem 12", "Theorem 15", "Corollary 17"),
                checks=checks,
                depth2=net,
                extra={"threshold": -c, "min_output_weight": float(u.min())},
            ),
            "",
        )
    if (u <= 0).all() and (u < 0).any():
        why = (
            "output weights u <= 0: -g(x) = |u|^T relu(Wx + b) - c is convex, so class 1 = "
            "{-g < 0} is a strict sublevel set of a convex function (Lemma 14, labels swapped)"
        )
        checks = (
            ("depth-2 ReLU net with a scalar decision", True, scalar),
            ("output weights u <= 0", True, f"max u = {u.max():.4g}"),
        )
        structure = Structure(
            "nonpos-relu", (1,), why, ("Lemma 14", "Theorem 11", "Theorem 12"), checks, net
        )
        return structure, ""
    negative = int((u < 0).sum())
    return None, (
        f"a depth-2 ReLU net whose output weights have mixed signs ({negative} of {len(u)} "
        "negative): neither decision region need be convex"
    )


def _nonneg_kind(u: np.ndarray, c: float) -> tuple[str, str, str]:
    base = "output weights u >= 0 make f = u^T relu(Wx + b) convex; class 0 = {f <= -c} "
    if np.allclose(u, u[0], rtol=1e-12, atol=0.0) and c == 0.0:
        return (
            "lemma-13",
            "Lemma 13",
            base + "with all u equal and threshold 0: class R (Lemma 13), class 0 = "
            "intersection of the halfspaces {w_i x + b_i <= 0}",
        )
    if c < 0:
        return (
            "lemma-14",
            "Lemma 14",
            base + f"with threshold a = {-c:.6g} > 0: class R' (Lemma 14)",
        )
    return (
        "nonneg-relu",
        "Lemma 14",
        base + f"is a sublevel set of a convex function (threshold {-c:.6g}; outside the "
        "paper's a > 0, same argument as Lemma 14)",
    )


def _max_affine(graph: LayerGraph) -> tuple[Structure, str] | None:
    """``g = c max_j (A x + a)_j + d`` with one global MaxPool between affine maps."""
    nodes = graph.nodes
    if graph.cut_points != tuple(range(len(nodes))) or not graph.is_piecewise_linear:
        return None
    pl = [i for i, n in enumerate(nodes) if n.layer.kind is LayerKind.PIECEWISE_LINEAR]
    if len(pl) != 1 or not isinstance(nodes[pl[0]].layer, MaxPool) or pl[0] < 2:
        return None
    k = pl[0]
    pool: MaxPool = nodes[k].layer
    pooled_shape = nodes[nodes[k].inputs[0]].shape
    global_pool = (
        int(np.prod(nodes[k].shape)) == 1
        and tuple(pool.kernel) == tuple(pooled_shape[1:])
        and not any(pool.pads)
        and all(d == 1 for d in pool.dilations)
    )
    if not global_pool or graph.num_outputs > 2:
        return None
    try:
        inner = graph.prefix(k - 1).dense_view()
    except NotApplicable:
        return None
    A, a = inner.weights[0], inner.biases[0]
    slope, offset = _tail_affine(graph, k)
    if slope == 0:
        return None
    theta = -offset / slope
    H, h = A, a - theta  # max_j (A x + a)_j vs theta
    if slope < 0:
        structure = Structure(
            kind="and-of-halfspaces",
            convex_classes=(1,),
            reason=f"logit = {slope:.4g} * max_j (A x + a)_j + {offset:.4g}: class 1 = "
            f"{{max_j (A x + a)_j < {theta:.4g}}}, an intersection of {len(a)} open "
            "halfspaces (class R'' of Theorem 16: every unit positive)",
            theorems=("Theorem 16", "Theorem 11", "Theorem 12"),
            checks=(("affine -> global MaxPool -> affine, negative slope", True, ""),),
            halfspaces=(H, h),
        )
    else:
        structure = Structure(
            kind="or-of-halfspaces",
            convex_classes=(0,),
            reason=f"logit = {slope:.4g} * max_j (A x + a)_j + {offset:.4g}: class 0 = "
            f"{{max_j (A x + a)_j <= {theta:.4g}}}, an intersection of {len(a)} closed "
            "halfspaces (the OR-of-units form of Lemma 13)",
            theorems=("Lemma 13", "Theorem 11", "Theorem 12"),
            checks=(("affine -> global MaxPool -> affine, positive slope", True, ""),),
            halfspaces=(H, h),
        )
    return structure, ""


def _tail_affine(graph: LayerGraph, k: int) -> tuple[float, float]:
    """``(slope, offset)`` of the decision value ``g`` as a function of the pooled max."""
    value = torch.zeros((2, *graph.nodes[k].shape), dtype=torch.float64)
    value[1] = 1.0
    with torch.no_grad():
        for node in graph.nodes[k + 1 :]:
            value = node.layer.forward(value)
    out = value.reshape(2, -1).numpy()
    g = out[:, 0] if out.shape[1] == 1 else out[:, 1] - out[:, 0]
    return float(g[1] - g[0]), float(g[0])
