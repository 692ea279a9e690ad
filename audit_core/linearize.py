"""Local linearisation of a piecewise-linear ``LayerGraph`` at a batch of inputs.

Singla & Feizi (2019), Algorithm 1 and Theorems 1-2, generalised from MLPs to
any DAG of affine and piecewise-linear layers (convolutions, pooling, residual
sums, MaxPool, LeakyReLU): at an input x with activation pattern theta the
network equals the affine map ``C x + d`` on the activation region
``{y : P y + q >= 0}``.

The Jacobian of every node is obtained by pushing the identity basis of the
input space through the graph in forward mode: affine layers apply their linear
part (``Layer.linear``) to the batch of tangents, ReLUs mask them, MaxPool
gathers the winning tangent. No Toeplitz matrix is built by hand; everything is
batched over samples and input coordinates, in float64.

The affine prefix before the first piecewise-linear layer has the same Jacobian
at every input (for an MLP: C = W1 in Algorithm 1's initialisation), so its
tangents are computed once (for all chunks of samples) and shared by all
samples as a broadcast view until a ReLU/MaxPool makes them sample-dependent;
the face norms of such a shared layer are computed once too.

Region rows, one per constraint of the activation region:
- ReLU / LeakyReLU neuron i with pre-activation z_i:
  ``s_i (grad z_i) y + s_i (z_i - grad z_i . x) >= 0`` with ``s_i = +1`` where
  z_i >= 0 (active) and ``-1`` otherwise;
- MaxPool output o with winner w and every other window element e:
  ``z_w(y) - z_e(y) >= 0``.
The distance from x to face i is ``|P_i x + q_i| / ||P_i||``; a zero row is a
vacuous constraint (distance +inf).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from audit_core.errors import NotApplicable
from audit_core.graph import LayerGraph
from audit_core.layers import LayerKind
from audit_core.memory import linearization_need

Tensor = torch.Tensor
DEFAULT_MEMORY_BUDGET = 768 * 2**20  # bytes of tangent storage per chunk of samples


@dataclass(frozen=True)
class LocalLinearization:
    """The local affine model and activation region at each of N inputs (float64).

    ``C`` is ``(N, K, D)`` and ``d`` is ``(N, K)``: the logits near ``x[n]`` are
    ``C[n] @ y + d[n]``. ``P`` ``(N, M, D)`` and ``q`` ``(N, M)`` describe the
    activation region (None unless requested). ``face_distance`` ``(N,)`` is the
    l2 distance from ``x[n]`` to the nearest face of its region (P_min of
    Theorem 3), and ``nearest_face_node`` the node that face comes from.
    ``patterns`` maps node index -> activation pattern: a bool mask (ReLU,
    LeakyReLU: True where active) or the flat winner index (MaxPool).
    """

    x: np.ndarray
    C: np.ndarray
    d: np.ndarray
    face_distance: np.ndarray
    nearest_face_node: np.ndarray
    patterns: dict[int, np.ndarray]
    P: np.ndarray | None = None
    q: np.ndarray | None = None
    row_nodes: np.ndarray | None = None

    def logits(self) -> np.ndarray:
        """``C x + d`` (equals the network's logits at ``x``)."""
        return np.einsum("nkd,nd->nk", self.C, self.x) + self.d


@dataclass
class _Chunk:
    """Per-chunk state: values and tangents of the live nodes, collected rows.

    A tangent is ``(n * dim, *shape)`` (one Jacobian per sample), or ``(dim, *shape)``
    for a node in ``shared``: a sample-independent Jacobian (affine prefix).
    """

    n: int
    dim: int
    values: dict[int, Tensor]
    tangents: dict[int, Tensor]
    face: Tensor
    face_node: Tensor
    rows: list[tuple[int, Tensor, Tensor]]
    keep_region: bool
    shared: set[int]
    cache: dict
    """Sample-independent results kept across chunks: shared tangents, their row norms."""
    last_use: dict[int, int]
    """Node index -> the last node reading it (a tangent read last may be updated in place)."""

    def per_sample(self, index: int) -> Tensor:
        """Node ``index``'s tangent as ``(n * dim, *shape)`` (materialised if shared)."""
        tangent = self.tangents[index]
        if index not in self.shared:
            return tangent
        return tangent.unsqueeze(0).expand(self.n, *tangent.shape).reshape(-1, *tangent.shape[1:])

    def grads(self, index: int) -> Tensor:
        """Node ``index``'s tangent as ``(n, dim, m)``, or ``(1, dim, m)`` when shared."""
        tangent = self.tangents[index]
        if index in self.shared:
            return tangent.reshape(1, self.dim, -1)
        return tangent.reshape(self.n, self.dim, -1)


RowCallback = Callable[[int, Tensor, Tensor], None]


def linearize(
    graph: LayerGraph,
    x: np.ndarray | Tensor,
    *,
    keep_region: bool = False,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> LocalLinearization:
    """Local affine model (and optionally the full activation region) at each row of ``x``.

    Raises ``NotApplicable`` for graphs with non-piecewise-linear layers.
    """
    if not graph.is_piecewise_linear:
        bad = sorted({n.layer.op for n in graph.nodes if n.layer.kind is LayerKind.NONLINEAR})
        raise NotApplicable(f"the model is not piecewise linear ({', '.join(bad)} inside)")
    inputs = graph.as_input(x).reshape(len(x), -1)
    chunk = _chunk_size(graph, memory_budget)
    cache: dict = {}
    parts = [
        _linearize_chunk(graph, inputs[start : start + chunk], keep_region, cache)
        for start in range(0, len(inputs), chunk)
    ]
    return _concatenate(parts, inputs.numpy(), keep_region)


def _chunk_size(graph: LayerGraph, budget: int) -> int:
    """Samples per chunk within ``budget`` bytes (``audit_core.memory``: per-sample
    tangents exist only from the first piecewise-linear node on; the affine prefix is
    shared)."""
    return max(1, budget // linearization_need(graph).bytes)


def _linearize_chunk(graph: LayerGraph, x: Tensor, keep_region: bool, cache: dict) -> dict:
    n, dim = x.shape
    basis = torch.eye(dim, dtype=torch.float64)
    state = _Chunk(
        n=n,
        dim=dim,
        values={0: x.reshape(n, *graph.input_shape)},
        tangents={0: basis.reshape(dim, *graph.input_shape)},
        face=torch.full((n,), float("inf"), dtype=torch.float64),
        face_node=torch.full((n,), -1, dtype=torch.int64),
        rows=[],
        keep_region=keep_region,
        shared={0},
        cache=cache,
        last_use=_last_use(graph),
    )
    last_use = state.last_use
    patterns: dict[int, np.ndarray] = {}
    with torch.no_grad():
        for index, node in enumerate(graph.nodes[1:], start=1):
            value, tangent, pattern = _step(node.layer, node.inputs, index, state)
            state.values[index], state.tangents[index] = value, tangent
            if pattern is not None:
                patterns[index] = pattern
            for source in node.inputs:
                if last_use[source] == index:
                    del state.values[source], state.tangents[source]
                    state.shared.discard(source)
    return _chunk_result(graph, x, state, patterns)


def _last_use(graph: LayerGraph) -> dict[int, int]:
    last = {i: i for i in range(len(graph.nodes))}
    last[len(graph.nodes) - 1] = len(graph.nodes)
    for index, node in enumerate(graph.nodes):
        for source in node.inputs:
            last[source] = max(last[source], index)
    return last


def _step(layer, inputs: tuple[int, ...], index: int, state: _Chunk):
    values = [state.values[i] for i in inputs]
    if layer.kind is LayerKind.AFFINE:
        if all(i in state.shared for i in inputs):
            state.shared.add(index)
            if ("tangent", index) not in state.cache:
                tangent = layer.linear(*(state.tangents[i] for i in inputs))
                state.cache["tangent", index] = tangent
            return layer.forward(*values), state.cache["tangent", index], None
        return layer.forward(*values), layer.linear(*(state.per_sample(i) for i in inputs)), None
    if layer.kind is LayerKind.PIECEWISE_LINEAR:
        (source,) = inputs
        local = layer.linearize(values[0], _Tangents(state, source, index))
        for face in local.faces:
            _add_rows(state, index, face.grads, face.offsets, face.sign, face.shared)
        tangent = local.tangent()
        return local.value, tangent.reshape(-1, *tangent.shape[2:]), local.pattern
    raise NotApplicable(f"no linearisation rule for {layer.op}")


@dataclass
class _Tangents:
    """The ``Tangents`` a piecewise-linear layer's ``linearize`` reads (see layers.base)."""

    state: _Chunk
    source: int
    reader: int

    @property
    def grads(self) -> Tensor:
        return self.state.grads(self.source)

    @property
    def per_sample(self) -> Tensor:
        return self.state.per_sample(self.source)

    @property
    def writable(self) -> bool:
        return _exclusive(self.state, self.source, self.reader)

    @property
    def shared(self) -> bool:
        return self.source in self.state.shared


def _exclusive(state: _Chunk, index: int, reader: int) -> bool:
    """True when node ``index``'s tangent may be overwritten by ``reader``: a per-sample
    tangent read last by ``reader`` whose memory no other live or cached tensor uses
    (Reshape/Flatten tangents are views of their input's)."""
    if index in state.shared or state.last_use[index] != reader:
        return False
    storage = state.tangents[index].untyped_storage().data_ptr()
    others = [t for i, t in state.tangents.items() if i != index]
    others += [t for t in state.cache.values() if isinstance(t, Tensor)]
    return all(t.untyped_storage().data_ptr() != storage for t in others)


def _add_rows(
    state: _Chunk,
    index: int,
    grads: Tensor,
    offsets: Tensor,
    sign: Tensor | None,
    shared: bool,
):
    """Record region rows. ``grads`` (n, D, m), or (1, D, m) when ``shared`` (the same for
    every sample): gradients of the constraint functions (before the sign flip);
    ``offsets`` (n, m): their values at x (after the flip)."""
    key = ("norms", index)
    if shared and key in state.cache:
        norms = state.cache[key]
    else:
        norms = grads.norm(dim=1)  # the sign flip does not change the norm
        if shared:
            state.cache[key] = norms
    distance = torch.where(norms > 0, offsets.abs() / norms.clamp_min(1e-300), float("inf"))
    best = distance.amin(dim=1)
    closer = best < state.face
    state.face = torch.where(closer, best, state.face)
    state.face_node = torch.where(closer, index, state.face_node)
    if state.keep_region:
        rows = grads.transpose(1, 2) if sign is None else grads.transpose(1, 2) * sign[..., None]
        state.rows.append((index, rows.expand(state.n, -1, -1), offsets))


def _chunk_result(graph: LayerGraph, x: Tensor, state: _Chunk, patterns: dict) -> dict:
    n, dim = state.n, state.dim
    last = len(graph.nodes) - 1
    logits = state.values[last].reshape(n, -1)
    C = state.per_sample(last).reshape(n, dim, -1).transpose(1, 2)
    d = logits - torch.einsum("nkd,nd->nk", C, x)
    result = {
        "C": C.numpy(),
        "d": d.numpy(),
        "face": state.face.numpy(),
        "face_node": state.face_node.numpy(),
        "patterns": patterns,
    }
    if state.keep_region:
        result["region"] = _stack_rows(state.rows, x, n, dim)
    return result


def _stack_rows(rows: list[tuple[int, Tensor, Tensor]], x: Tensor, n: int, dim: int):
    if not rows:
        empty = np.zeros((n, 0, dim))
        return empty, np.zeros((n, 0)), np.zeros(0, dtype=np.int64)
    P = torch.cat([r for _, r, _ in rows], dim=1)
    values = torch.cat([v for _, _, v in rows], dim=1)
    q = values - torch.einsum("nmd,nd->nm", P, x)
    nodes = np.concatenate([np.full(r.shape[1], i) for i, r, _ in rows])
    return P.numpy(), q.numpy(), nodes


def _concatenate(parts: list[dict], x: np.ndarray, keep_region: bool) -> LocalLinearization:
    patterns = {
        key: np.concatenate([p["patterns"][key] for p in parts]) for key in parts[0]["patterns"]
    }
    region: dict[str, np.ndarray | None] = {"P": None, "q": None, "row_nodes": None}
    if keep_region:
        region["P"] = np.concatenate([p["region"][0] for p in parts])
        region["q"] = np.concatenate([p["region"][1] for p in parts])
        region["row_nodes"] = parts[0]["region"][2]
    return LocalLinearization(
        x=x,
        C=np.concatenate([p["C"] for p in parts]),
        d=np.concatenate([p["d"] for p in parts]),
        face_distance=np.concatenate([p["face"] for p in parts]),
        nearest_face_node=np.concatenate([p["face_node"] for p in parts]),
        patterns=patterns,
        **region,
    )


def decision_distances(lin: LocalLinearization, labels: np.ndarray) -> np.ndarray:
    """Distance from ``x[n]`` to each decision hyperplane of its local affine model.

    Returns ``(N, K-1)`` (``(N, 1)`` for a single-logit binary model): for every
    other class j, ``|(C_j - C_k) x + d_j - d_k| / ||C_j - C_k||`` with k the
    label (Theorem 3's d_min is the row minimum). Rows with a zero normal are
    +inf (the hyperplane does not exist locally).
    """
    normals, offsets = decision_rows(lin, labels)
    values = np.einsum("njd,nd->nj", normals, lin.x) + offsets
    norms = np.linalg.norm(normals, axis=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(norms > 0, np.abs(values) / norms, np.inf)


def decision_rows(lin: LocalLinearization, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normals ``(N, K-1, D)`` and offsets ``(N, K-1)`` of ``logit_j - logit_k`` for j != k.

    For a single-logit binary model the one row is ``-s * C_0`` with ``s = +1``
    for class 1, so that the row is negative where the label is kept.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n, k, _ = lin.C.shape
    if k == 1:
        sign = (2.0 * labels - 1.0)[:, None]
        return -sign[..., None] * lin.C, -sign * lin.d
    others = np.array([[j for j in range(k) if j != label] for label in labels])
    rows = np.arange(n)[:, None]
    normals = lin.C[rows, others] - lin.C[np.arange(n), labels][:, None, :]
    offsets = lin.d[rows, others] - lin.d[np.arange(n), labels][:, None]
    return normals, offsets
