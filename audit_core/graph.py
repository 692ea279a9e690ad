"""``LayerGraph``: an ordered DAG of typed layers, evaluated in float64.

Node 0 is the input; every other node applies its layer to the outputs of
earlier nodes (``inputs`` are node indices), so the node order is a topological
order. The last node is the output (logits). A trailing Softmax/Sigmoid is kept
aside as ``output_activation``: it never changes the decision, and every
geometric analysis works on the logits below it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from audit_core import labels
from audit_core.errors import NotApplicable
from audit_core.layers import Dense, Input, Layer, LayerKind, Relu

FORWARD_CHUNK_BYTES = 256 * 2**20
"""Working memory of one chunk of rows of ``LayerGraph.forward`` (the live values of about
three of the widest node, float64)."""

Tensor = torch.Tensor


@dataclass(frozen=True)
class Node:
    """One layer application. ``source`` names the ONNX node(s) it came from."""

    name: str
    layer: Layer
    inputs: tuple[int, ...]
    shape: tuple[int, ...]
    source: tuple[str, ...] = ()
    onnx_output: str = ""


@dataclass(frozen=True)
class DenseView:
    """A chain ``affine -> ReLU -> affine -> ... -> affine`` as explicit matrices.

    ``weights[i]`` has shape ``(out_i, in_i)``; ReLU sits between consecutive
    affine maps. ``weights[0]`` acts on the flattened input.
    """

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]

    @property
    def depth(self) -> int:
        """Number of affine layers (a depth-2 net has one hidden ReLU layer)."""
        return len(self.weights)


@dataclass(frozen=True, eq=False)
class LayerGraph:
    """Immutable DAG of layers with a float64 forward pass."""

    nodes: tuple[Node, ...]
    output_activation: str | None = None
    name: str = ""
    _consumers: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.nodes or not isinstance(self.nodes[0].layer, Input):
            raise ValueError("node 0 must be the Input")
        for index, node in enumerate(self.nodes[1:], start=1):
            if not node.inputs or max(node.inputs) >= index:
                raise ValueError(f"node {index} ({node.name}) breaks the topological order")

    # ------------------------------------------------------------ structure
    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.nodes[0].shape

    @property
    def input_size(self) -> int:
        return int(np.prod(self.input_shape))

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.nodes[-1].shape

    @property
    def num_outputs(self) -> int:
        return int(np.prod(self.output_shape))

    @property
    def num_classes(self) -> int:
        return labels.num_classes(self.num_outputs)

    @cached_property
    def is_piecewise_linear(self) -> bool:
        """True when every layer below the output activation is affine or piecewise linear."""
        return all(node.layer.kind is not LayerKind.NONLINEAR for node in self.nodes)

    @cached_property
    def missing_ops(self) -> tuple[str, ...]:
        """The ops a model loaded as one ``Opaque`` node has that the layer graph lacks
        (empty for a real layer graph)."""
        return tuple(op for node in self.nodes for op in getattr(node.layer, "missing", ()))

    @cached_property
    def parameter_count(self) -> int:
        return sum(node.layer.parameter_count() for node in self.nodes)

    def consumers(self, index: int) -> tuple[int, ...]:
        """Indices of the nodes that read node ``index``."""
        return tuple(i for i, node in enumerate(self.nodes) if index in node.inputs)

    @cached_property
    def last_use(self) -> dict[int, int]:
        """Per node, the last node that reads its output (itself when none does)."""
        last_use = {i: i for i in range(len(self.nodes))}
        for index, node in enumerate(self.nodes):
            for source in node.inputs:
                last_use[source] = max(last_use[source], index)
        return last_use

    @cached_property
    def cut_points(self) -> tuple[int, ...]:
        """Nodes whose output alone determines everything after them (valid prefix ends)."""
        cuts = []
        last_use = self.last_use
        for k in range(len(self.nodes)):
            if all(last_use[i] <= k for i in range(k)):
                cuts.append(k)
        return tuple(cuts)

    def prefix(self, k: int) -> LayerGraph:
        """The feature extractor made of nodes ``0..k`` (``k`` must be a cut point)."""
        if k not in self.cut_points:
            raise NotApplicable(f"node {k} is inside a branch; it does not define a prefix")
        return LayerGraph(self.nodes[: k + 1], None, f"{self.name}[:{k}]")

    def logits_graph(self) -> LayerGraph:
        """This graph without its output activation."""
        return LayerGraph(self.nodes, None, self.name)

    def describe(self) -> tuple[str, ...]:
        return tuple(node.layer.describe() for node in self.nodes)

    # ------------------------------------------------------------ evaluation
    def forward(
        self, x: np.ndarray | Tensor, *, upto: int | None = None, activation: bool = False
    ) -> Tensor:
        """Batched forward pass in float64 (logits unless ``activation``), in chunks of rows
        within ``FORWARD_CHUNK_BYTES``; each value is freed after its last reader."""
        inputs = self.as_input(x)
        rows = self.chunk_rows
        last = len(self.nodes) - 1 if upto is None else upto
        parts = [
            self._forward_rows(inputs[start : start + rows], last)
            for start in range(0, max(1, len(inputs)), rows)
        ]
        out = parts[0] if len(parts) == 1 else torch.cat(parts)
        if activation and upto is None:
            out = self._apply_output_activation(out)
        return out

    def _forward_rows(self, x: Tensor, last: int) -> Tensor:
        values = {0: x}
        for index, node in enumerate(self.nodes[1 : last + 1], start=1):
            values[index] = node.layer.forward(*(values[i] for i in node.inputs))
            for source in set(node.inputs):
                if self.last_use[source] <= index:
                    del values[source]
        return values[last]

    @cached_property
    def widest(self) -> int:
        """Values per sample of the largest node."""
        return max(math.prod(node.shape) for node in self.nodes)

    @cached_property
    def chunk_rows(self) -> int:
        """Rows of a forward pass within ``FORWARD_CHUNK_BYTES`` (float64, about three of
        the widest node alive)."""
        return max(1, FORWARD_CHUNK_BYTES // (3 * 8 * self.widest))

    def forward_all(self, x: np.ndarray | Tensor, *, upto: int | None = None) -> list[Tensor]:
        """Every node's output (float64), ``(N, *node.shape)`` each."""
        last = len(self.nodes) - 1 if upto is None else upto
        values: list[Tensor] = [self.as_input(x)]
        for node in self.nodes[1 : last + 1]:
            values.append(node.layer.forward(*(values[i] for i in node.inputs)))
        return values

    def as_input(self, x: np.ndarray | Tensor) -> Tensor:
        """``x`` as a float64 tensor of shape ``(N, *input_shape)`` (flat rows accepted)."""
        tensor = torch.as_tensor(x, dtype=torch.float64)
        return tensor.reshape(tensor.shape[0], *self.input_shape)

    def predict(self, x: np.ndarray | Tensor) -> np.ndarray:
        """Predicted labels (numpy int64)."""
        with torch.no_grad():
            logits = self.forward(x).reshape(len(x), -1)
        return np.asarray(labels.predict(logits.numpy()), dtype=np.int64)

    def _apply_output_activation(self, logits: Tensor) -> Tensor:
        if self.output_activation == "softmax":
            return torch.softmax(logits.reshape(len(logits), -1), dim=1).reshape(logits.shape)
        if self.output_activation == "log_softmax":
            flat = torch.log_softmax(logits.reshape(len(logits), -1), dim=1)
            return flat.reshape(logits.shape)
        if self.output_activation == "sigmoid":
            return torch.sigmoid(logits)
        return logits

    def to_torch(self) -> torch.nn.Module:
        """A differentiable ``nn.Module`` computing the logits (float64)."""
        return _GraphModule(self)

    # ------------------------------------------------------------ dense view
    def dense_view(self) -> DenseView:
        """The graph as ``affine (-> ReLU -> affine)*`` matrices; NotApplicable otherwise.

        Consecutive affine layers (normalisation, reshapes, convolutions,
        matmuls) are composed into one matrix, from the side of the smaller
        dimension: the identity basis is pushed forward through the block when
        its input is narrower than its output, and pulled back (one batched
        vector-Jacobian product per output) otherwise. Raises when the graph has
        branches, a non-ReLU nonlinearity, or two ReLUs in a row.
        """
        return self._compose_blocks(self._dense_blocks())

    def dense_depth(self) -> int:
        """Number of affine blocks of a plain affine/ReLU chain, without composing any matrix.

        Raises ``NotApplicable`` (with the reason) when the graph is not such a chain.
        """
        return len(self._dense_blocks())

    def _dense_blocks(self) -> list[list[int]]:
        if self.cut_points != tuple(range(len(self.nodes))):
            raise NotApplicable("the model has parallel branches (not a plain chain)")
        blocks: list[list[int]] = [[]]
        for index, node in enumerate(self.nodes[1:], start=1):
            if isinstance(node.layer, Relu):
                if not blocks[-1]:
                    raise NotApplicable("two ReLU layers without an affine layer between them")
                blocks.append([])
            elif node.layer.kind is not LayerKind.AFFINE:
                raise NotApplicable(f"layer {node.name} ({node.layer.op}) is not affine or ReLU")
            else:
                blocks[-1].append(index)
        if not blocks[-1]:
            raise NotApplicable("the model ends with a ReLU (no affine output layer)")
        return blocks

    def _compose_blocks(self, blocks: list[list[int]]) -> DenseView:
        weights, biases = [], []
        for block in blocks:
            weight, bias = self._compose_affine(block)
            weights.append(weight)
            biases.append(bias)
        return DenseView(tuple(weights), tuple(biases))

    def _compose_affine(self, block: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        first = self.nodes[block[0]]
        in_shape = self.nodes[first.inputs[0]].shape
        if len(block) == 1 and isinstance(first.layer, Dense) and len(in_shape) == 1:
            weight = first.layer.weight
            bias = first.layer.bias if first.layer.bias is not None else np.zeros(len(weight))
            return np.array(weight), np.array(bias)
        layers = [self.nodes[index].layer for index in block]
        in_width = int(np.prod(in_shape))
        out_width = int(np.prod(self.nodes[block[-1]].shape))
        with torch.no_grad():
            offset = torch.zeros((1, *in_shape), dtype=torch.float64)
            for layer in layers:
                offset = layer.forward(offset)
        if in_width <= out_width:
            weight = _push_forward(layers, in_shape, in_width)
        else:
            weight = _pull_back(layers, in_shape, out_width)
        return weight, offset.reshape(-1).numpy().copy()


def _push_forward(layers: Sequence[Layer], in_shape: tuple[int, ...], width: int) -> np.ndarray:
    """The matrix of a linear chain, column by column (identity pushed forward)."""
    with torch.no_grad():
        images = torch.eye(width, dtype=torch.float64).reshape(width, *in_shape)
        for layer in layers:
            images = layer.linear(images)
    return images.reshape(width, -1).T.numpy().copy()


def _pull_back(layers: Sequence[Layer], in_shape: tuple[int, ...], width: int) -> np.ndarray:
    """The matrix of a linear chain, row by row (one batched vector-Jacobian product)."""
    point = torch.zeros((1, *in_shape), dtype=torch.float64, requires_grad=True)
    out = point
    for layer in layers:
        out = layer.linear(out)
    (rows,) = torch.autograd.grad(
        out.reshape(-1), point, torch.eye(width, dtype=torch.float64), is_grads_batched=True
    )
    return rows.reshape(width, -1).numpy().copy()


class _GraphModule(torch.nn.Module):
    """``LayerGraph`` as a torch module (logits, float64)."""

    def __init__(self, graph: LayerGraph) -> None:
        super().__init__()
        self.graph = graph

    def forward(self, x: Tensor) -> Tensor:
        out = self.graph.forward(x)
        return out.reshape(out.shape[0], -1)
