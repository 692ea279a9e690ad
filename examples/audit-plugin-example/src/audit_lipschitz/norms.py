"""Upper bounds on the l2 -> l2 Lipschitz constant of a ``LayerGraph``'s logit map.

For a chain ``A_L o s o ... o s o A_1`` (affine maps ``A_i``, activations ``s``),
``||f(x) - f(x')||_2 <= prod_i ||A_i||_2 * prod_j Lip(s_j) * ||x - x'||_2``
(Szegedy et al. 2014, Sec. 4.3). Consecutive affine layers (convolution,
reshape, dense, ...) are composed into one block before its norm is taken, which
is never looser and usually much tighter than one norm per layer.

A block's spectral norm is computed exactly: its matrix is materialised by
pushing the identity basis of its input through ``Layer.linear`` (batched, as
``LayerGraph.dense_view`` does), then LAPACK's SVD gives the largest singular
value in float64, inflated by ``RELATIVE_MARGIN`` for rounding. Power iteration
is deliberately not used for the bound: it converges to the norm from below, so
it would overstate certified radii. When a block is too large to materialise
(``max_entries``), each layer gets a closed-form upper bound instead: the exact
norm of a dense weight, ``||B||_2`` with ``B[o, i] = ||K[o, i]||_1`` for a
convolution (Young's inequality per channel pair), ``max |scale|`` for an
elementwise affine map, 1 for reshapes, transposes and zero padding.

Activations: ReLU and tanh are 1-Lipschitz, LeakyReLU ``max(1, |alpha|)``,
sigmoid 1/4; max and average pooling ``sqrt(c)`` where ``c`` is the largest
number of pooling windows that share one input element (1 for non-overlapping
windows). A graph with parallel branches (a residual sum) is bounded node by
node: ``Lip(sum_i c_i g_i) <= sum_i |c_i| Lip(g_i)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from audit_core.errors import NotApplicable
from audit_core.graph import LayerGraph
from audit_core.layers import (
    AvgPool,
    Conv,
    Dense,
    ElementwiseAffine,
    LayerKind,
    LeakyRelu,
    MaxPool,
    Pad,
    Relu,
    Reshape,
    Sigmoid,
    Sum,
    Tanh,
    Transpose,
)

RELATIVE_MARGIN = 1e-9
"""Relative inflation of every computed spectral norm (LAPACK's SVD is accurate to a
small multiple of machine epsilon times the norm)."""

DEFAULT_MAX_ENTRIES = 20_000_000
"""Largest block matrix (entries, float64: 160 MB) materialised for an exact norm."""


@dataclass(frozen=True)
class Factor:
    """One factor of the bound: an affine block, a layer or an activation."""

    label: str
    value: float
    how: str


@dataclass(frozen=True)
class LipschitzBound:
    """``constant`` >= the l2 Lipschitz constant of the logits, and how it was obtained."""

    constant: float
    factors: tuple[Factor, ...]
    composed: bool
    """True when affine blocks were composed (a plain chain), False for a node-by-node
    bound (parallel branches)."""


class _TooLarge(Exception):
    """A block whose matrix would exceed ``max_entries``."""


def lipschitz_bound(graph: LayerGraph, max_entries: int = DEFAULT_MAX_ENTRIES) -> LipschitzBound:
    """An upper bound on the l2 Lipschitz constant of ``graph``'s logits (float64)."""
    if graph.cut_points == tuple(range(len(graph.nodes))):
        return _chain_bound(graph, max_entries)
    return _node_bound(graph, max_entries)


def _chain_bound(graph: LayerGraph, max_entries: int) -> LipschitzBound:
    factors: list[Factor] = []
    block: list[int] = []
    for index, node in enumerate(graph.nodes[1:], start=1):
        if node.layer.kind is LayerKind.AFFINE:
            block.append(index)
            continue
        factors += _block_factors(graph, block, max_entries)
        block = []
        factors.append(activation_factor(graph, index))
    factors += _block_factors(graph, block, max_entries)
    constant = math.prod(f.value for f in factors)
    return LipschitzBound(constant, tuple(factors), composed=True)


def _block_factors(graph: LayerGraph, block: list[int], max_entries: int) -> list[Factor]:
    """One exact factor for the composed block, or one bound per layer if it is too large."""
    if not block:
        return []
    label = " + ".join(graph.nodes[i].layer.describe() for i in block)
    try:
        value = _exact_norm(graph, block, max_entries)
    except _TooLarge:
        return [layer_factor(graph, i, max_entries) for i in block]
    return [Factor(label, value, "exact spectral norm of the composed block")]


def _node_bound(graph: LayerGraph, max_entries: int) -> LipschitzBound:
    """Node by node through a DAG: ``lip[node] = factor * lip[input]``, sums add up."""
    lip = [1.0]
    factors: list[Factor] = []
    for index, node in enumerate(graph.nodes[1:], start=1):
        layer = node.layer
        if isinstance(layer, Sum):
            coefficients = np.abs(np.asarray(layer.coefficients, dtype=np.float64))
            lip.append(
                float(sum(c * lip[i] for c, i in zip(coefficients, node.inputs, strict=True)))
            )
            continue
        factor = (
            layer_factor(graph, index, max_entries)
            if layer.kind is LayerKind.AFFINE
            else activation_factor(graph, index)
        )
        factors.append(factor)
        lip.append(factor.value * lip[node.inputs[0]])
    return LipschitzBound(lip[-1], tuple(factors), composed=False)


# ---------------------------------------------------------------- affine maps


def _exact_norm(graph: LayerGraph, block: list[int], max_entries: int) -> float:
    """Spectral norm of the composed linear part of ``block`` (consecutive nodes)."""
    in_shape = graph.nodes[graph.nodes[block[0]].inputs[0]].shape
    width = int(np.prod(in_shape))
    height = int(np.prod(graph.nodes[block[-1]].shape))
    if width * height > max_entries:
        raise _TooLarge
    with torch.no_grad():
        images = torch.eye(width, dtype=torch.float64).reshape(width, *in_shape)
        for index in block:
            images = graph.nodes[index].layer.linear(images)
    return spectral_norm(images.reshape(width, -1).numpy())


def spectral_norm(matrix: np.ndarray) -> float:
    """Largest singular value (float64 SVD), inflated by ``RELATIVE_MARGIN``."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.size == 0:
        return 0.0
    sigma = float(np.linalg.svd(matrix, compute_uv=False)[0])
    return sigma * (1.0 + RELATIVE_MARGIN)


def layer_factor(graph: LayerGraph, index: int, max_entries: int) -> Factor:
    """A bound for one affine layer: exact when small enough, else closed form."""
    layer = graph.nodes[index].layer
    try:
        return Factor(layer.describe(), _exact_norm(graph, [index], max_entries), "exact")
    except _TooLarge:
        pass
    if isinstance(layer, Dense):
        return Factor(layer.describe(), spectral_norm(layer.weight), "exact (dense weight)")
    if isinstance(layer, Conv):
        return Factor(layer.describe(), conv_young_bound(layer), "Young bound per channel pair")
    if isinstance(layer, ElementwiseAffine):
        return Factor(layer.describe(), float(np.abs(layer.scale).max()), "max |scale|")
    if isinstance(layer, Reshape | Transpose | Pad):
        return Factor(layer.describe(), 1.0, "isometry or zero padding")
    if isinstance(layer, AvgPool):
        return Factor(layer.describe(), _pool_factor(layer.kernel, layer.strides), "pool overlap")
    raise NotApplicable(f"no Lipschitz bound for a large {layer.op} layer")


def conv_young_bound(layer: Conv) -> float:
    """``||B||_2`` with ``B[o, i] = ||K[o, i]||_1``: an upper bound on the convolution's
    operator norm (any stride, padding, dilation and groups)."""
    weight = np.asarray(layer.weight, dtype=np.float64)
    out_channels, per_group = weight.shape[:2]
    l1 = np.abs(weight).reshape(out_channels, per_group, -1).sum(axis=2)
    groups = layer.groups
    blocks = np.zeros((out_channels, per_group * groups))
    out_per_group = out_channels // groups
    for group in range(groups):
        rows = slice(group * out_per_group, (group + 1) * out_per_group)
        blocks[rows, group * per_group : (group + 1) * per_group] = l1[rows]
    return spectral_norm(blocks)


# ---------------------------------------------------------------- activations


def activation_factor(graph: LayerGraph, index: int) -> Factor:
    """The Lipschitz constant of one activation or pooling layer."""
    layer = graph.nodes[index].layer
    if isinstance(layer, Relu | Tanh):
        return Factor(layer.describe(), 1.0, "1-Lipschitz")
    if isinstance(layer, LeakyRelu):
        return Factor(layer.describe(), max(1.0, abs(layer.alpha)), "max(1, |alpha|)")
    if isinstance(layer, Sigmoid):
        return Factor(layer.describe(), 0.25, "sigmoid' <= 1/4")
    if isinstance(layer, MaxPool):
        value = _pool_factor(layer.kernel, layer.strides, layer.dilations)
        return Factor(layer.describe(), value, "sqrt(windows sharing an element)")
    raise NotApplicable(f"no Lipschitz bound for layer {layer.op}")


def _pool_factor(
    kernel: tuple[int, ...], strides: tuple[int, ...], dilations: tuple[int, ...] = ()
) -> float:
    """``sqrt(c)``, ``c`` = the most windows one element can belong to.

    Along one axis, element p is in window w iff ``p = w s + j d`` for some
    ``0 <= j < k``, i.e. ``j d = p (mod s)``: at most ``ceil(k gcd(d, s) / s)`` of the
    k offsets qualify. Each window's max (or mean) moves by at most the l2 norm of the
    change inside it, and summing over windows counts each element at most c times.
    """
    count = 1
    for axis, k in enumerate(kernel):
        s = strides[axis] if axis < len(strides) else 1
        d = dilations[axis] if axis < len(dilations) else 1
        count *= min(k, math.ceil(k * math.gcd(d, s) / s))
    return math.sqrt(count)
