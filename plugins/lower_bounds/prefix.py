"""Layer prefixes of a model as feature extractors (feature-extractor lower bounds, Sec. 3).

For every cut point k of the layer graph below the output, the prefix f_k
(nodes 0..k, ``LayerGraph.prefix``) is a feature extractor. How its collision
distances eps_f(u, v) are found depends on what it is made of:

- ``input``: f = identity, eps(u, v) = ||u - v|| / 2 (Section 2.1);
- ``affine``: only affine layers (dense, convolutions, pooling, sums, ...): the
  closed form of Section 3.1 from the composed map ``L``;
- ``relu``: a plain chain of affine and ReLU layers: the descent of
  Algorithm 2 / Appendix C on the chain of composed affine blocks;
- ``carried``: anything else (MaxPool, LeakyReLU, branches around a ReLU,
  smooth activations), and ReLU chains too large for one cone program per step
  (``search_size`` above the limit: a conv layer with tens of thousands of
  neurons makes each step take minutes): no search of its own; it keeps the collisions of the
  shorter prefixes, re-verified on it (they carry over, see ``collisions``).

Composed affine maps are obtained by pushing the identity basis through the
layers' linear parts (no hand-built Toeplitz matrix), in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from audit_core.graph import LayerGraph
from audit_core.layers import LayerKind, Relu, Reshape, Transpose
from audit_plugins.lower_bounds.chain import Block, one_blas_thread

INPUT, AFFINE, RELU, CARRIED = "input", "affine", "relu", "carried"
SHAPE_ONLY = (Reshape, Transpose)
"""Layers that only permute coordinates: their prefix has the same collisions as the
previous one, so it is not listed separately."""


@dataclass(frozen=True)
class Prefix:
    """The feature extractor made of nodes ``0..node``.

    ``blocks`` is the chain of composed affine maps (``affine``: one block without
    ReLU; ``relu``: one block per ReLU layer, plus a trailing affine block when the
    prefix ends with affine layers). ``note`` says why a prefix is only ``carried``.
    """

    node: int
    name: str
    kind: str
    blocks: tuple[Block, ...] = ()
    note: str = ""

    @property
    def ends_with_relu(self) -> bool:
        return bool(self.blocks) and self.blocks[-1].relu


def prefix_nodes(graph: LayerGraph) -> tuple[int, ...]:
    """Cut points from the input up to the penultimate node, shape-only layers left out."""
    last = len(graph.nodes) - 1
    return tuple(
        k
        for k in graph.cut_points
        if k < last and (k == 0 or not isinstance(graph.nodes[k].layer, SHAPE_ONLY))
    )


def describe_prefix(graph: LayerGraph, k: int) -> str:
    """``"2: Relu"``: the node index and the layer that ends the prefix."""
    return f"{k}: {graph.nodes[k].layer.describe()}"


def build_prefixes(
    graph: LayerGraph, max_entries: int, max_search: float = float("inf")
) -> tuple[Prefix, ...]:
    """Every prefix of ``prefix_nodes(graph)``, classified and (when needed) composed.

    ``max_entries`` bounds the size of a composed dense matrix and ``max_search``
    the ``search_size`` of a ReLU chain; larger prefixes become ``carried``.
    """
    return tuple(_build(graph, k, max_entries, max_search) for k in prefix_nodes(graph))


def search_size(blocks: tuple[Block, ...]) -> int:
    """ReLU chain's neurons times its search dimension (at most the first block's rank).

    A cone program of the descent has about two rows per neuron in twice the search
    dimension. Measured on one core: 0.02-1.6 s a step up to 0.4M (corpus MLPs),
    0.1-32 s around 1-2M (random dense layers), 5.5 minutes at 18M (the corpus's
    Convnet_maxpool, 23,328 ReLUs on 784 inputs).
    """
    neurons = sum(b.weight.shape[0] for b in blocks)
    first = blocks[0].weight
    return neurons * min(first.shape)


def _chain_search_size(graph: LayerGraph, k: int) -> int:
    """``search_size`` of the chain of nodes 1..k from the node shapes alone (before
    composing it): one block per ReLU node, plus a trailing affine block."""
    sizes = [int(np.prod(n.shape)) for n in graph.nodes[1 : k + 1]]
    relus = [i for i, n in enumerate(graph.nodes[1 : k + 1]) if isinstance(n.layer, Relu)]
    rows = [sizes[i] for i in relus] + ([sizes[-1]] if not relus or relus[-1] < k - 1 else [])
    return sum(rows) * min(graph.input_size, rows[0])


def _build(graph: LayerGraph, k: int, max_entries: int, max_search: float) -> Prefix:
    name = describe_prefix(graph, k)
    if k == 0:
        return Prefix(0, name, INPUT)
    nodes = graph.nodes[1 : k + 1]
    if graph.input_size * max(int(np.prod(n.shape)) for n in nodes) > max_entries:
        return Prefix(k, name, CARRIED, note="too large to compose as dense matrices")
    if all(n.layer.kind is LayerKind.AFFINE for n in nodes):
        return Prefix(k, name, AFFINE, (compose_affine_prefix(graph.prefix(k)),))
    reason = _chain_obstacle(graph, k)
    if reason:
        return Prefix(k, name, CARRIED, note=reason)
    size = _chain_search_size(graph, k)
    if size > max_search:  # decided before composing: the matrices can be hundreds of MB
        note = (
            f"search size {size:,} neurons x dimensions is above max_search_size "
            f"{max_search:,.0f}: collisions carried over, not searched"
        )
        return Prefix(k, name, CARRIED, note=note)
    return Prefix(k, name, RELU, _chain_blocks(graph, k))


def _chain_obstacle(graph: LayerGraph, k: int) -> str:
    """Why nodes 1..k are not a plain affine/ReLU chain ('' when they are)."""
    for index, node in enumerate(graph.nodes[1 : k + 1], start=1):
        if node.inputs != (index - 1,):
            return "branches inside the prefix (collision search needs a plain chain)"
        if node.layer.kind is not LayerKind.AFFINE and not isinstance(node.layer, Relu):
            return f"{node.layer.op} inside (the descent handles affine and ReLU layers only)"
    return ""


def compose_affine_prefix(prefix: LayerGraph) -> Block:
    """The affine prefix as one map ``L x + k`` on flat inputs (any DAG of affine layers)."""
    width = prefix.input_size
    with torch.no_grad():
        offset = prefix.forward(torch.zeros((1, width), dtype=torch.float64))
        images = prefix.forward(torch.eye(width, dtype=torch.float64))
    offset = offset.reshape(1, -1)
    weight = (images.reshape(width, -1) - offset).T.numpy().copy()
    return Block(weight, offset[0].numpy().copy(), relu=False)


def _chain_blocks(graph: LayerGraph, k: int) -> tuple[Block, ...]:
    blocks: list[Block] = []
    run: list[int] = []
    width = graph.input_size
    for index in range(1, k + 1):
        if isinstance(graph.nodes[index].layer, Relu):
            blocks.append(_compose_run(graph, run, width, relu=True))
            width, run = blocks[-1].weight.shape[0], []
        else:
            run.append(index)
    if run:
        blocks.append(_compose_run(graph, run, width, relu=False))
    return tuple(blocks)


def _compose_run(graph: LayerGraph, run: list[int], width: int, *, relu: bool) -> Block:
    """Consecutive affine nodes as one matrix (identity when the run is empty)."""
    if not run:
        return Block(np.eye(width), np.zeros(width), relu)
    in_shape = graph.nodes[graph.nodes[run[0]].inputs[0]].shape
    with torch.no_grad():
        images = torch.eye(width, dtype=torch.float64).reshape(width, *in_shape)
        offset = torch.zeros((1, *in_shape), dtype=torch.float64)
        for index in run:
            layer = graph.nodes[index].layer
            images, offset = layer.linear(images), layer.forward(offset)
    weight = images.reshape(width, -1).T.numpy().copy()
    return Block(weight, offset.reshape(-1).numpy().copy(), relu)


def row_space(matrix: np.ndarray, rtol: float = 1e-7) -> np.ndarray:
    """Orthonormal rows ``V^T`` (r x n) spanning the row space of ``matrix`` (m x n).

    Singular values below ``rtol * sigma_max`` count as zero (Section 3.1 keeps
    only the non-zero ones). Computed from the eigendecomposition of the smaller
    Gram matrix, several times cheaper than an SVD of a wide matrix, with one BLAS
    thread (small LAPACK calls only slow down with more). Treating a tiny singular
    value as zero can only make a collision distance smaller by an amount the
    float64 verification of every collision catches; keeping a noisy one only makes
    it larger (conservative).
    """
    m, n = matrix.shape
    if m == 0:
        return np.zeros((0, n))
    with one_blas_thread():
        small_side = matrix @ matrix.T if m <= n else matrix.T @ matrix
        values, vectors = np.linalg.eigh(small_side)
    keep = values > (rtol**2) * max(values[-1], 0.0)
    if not keep.any():
        return np.zeros((0, n))
    if m > n:
        return vectors[:, keep].T.copy()
    return (vectors[:, keep].T @ matrix) / np.sqrt(values[keep])[:, None]
