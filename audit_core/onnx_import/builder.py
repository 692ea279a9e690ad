"""``GraphBuilder``: what converters use to add layers while the ONNX graph is walked."""

from __future__ import annotations

import numpy as np
import torch

from audit_core.graph import Node
from audit_core.layers import Input, Layer
from audit_core.onnx_import.registry import TensorRef, Unsupported


class GraphBuilder:
    """Collects nodes; knows whether the ONNX tensors carry a leading batch axis."""

    def __init__(self, input_shape: tuple[int, ...], has_batch: bool, input_name: str) -> None:
        self.has_batch = has_batch
        self.nodes: list[Node] = [
            Node(input_name, Input(input_shape), (), input_shape, (), input_name)
        ]

    @property
    def input(self) -> TensorRef:
        return TensorRef(0, self.nodes[0].shape)

    def add(
        self, layer: Layer, inputs: tuple[TensorRef, ...], name: str, onnx_output: str = ""
    ) -> TensorRef:
        """Append ``layer`` applied to ``inputs``; its shape comes from a dry run."""
        shape = self._output_shape(layer, inputs)
        node = Node(name, layer, tuple(t.index for t in inputs), shape, (name,), onnx_output)
        self.nodes.append(node)
        return TensorRef(len(self.nodes) - 1, shape)

    def full_shape(self, ref: TensorRef) -> tuple[int, ...]:
        """The ONNX shape of ``ref`` (with a batch axis of 1 where the model has one)."""
        return (1, *ref.shape) if self.has_batch else ref.shape

    def per_sample_shape(self, full: tuple[int, ...], op: str) -> tuple[int, ...]:
        """Drop the batch axis from an ONNX shape computed with batch size 1."""
        if not self.has_batch:
            return tuple(full)
        if not full or full[0] != 1:
            raise Unsupported(f"{op} moves or merges the batch axis (output shape {list(full)})")
        return tuple(full[1:])

    def per_sample_constant(self, constant: np.ndarray, tensor: TensorRef) -> np.ndarray:
        """A constant operand broadcast against ``tensor``, without the batch axis."""
        full_rank = len(self.full_shape(tensor))
        if constant.ndim > full_rank:
            shape = list(constant.shape)
            raise Unsupported(f"a constant of shape {shape} adds axes to a rank-{full_rank} tensor")
        if self.has_batch and constant.ndim == full_rank:
            if constant.shape[0] != 1:
                raise Unsupported(
                    f"a constant of shape {list(constant.shape)} varies over the batch"
                )
            constant = constant[0]
        return constant

    def per_sample_axis(self, axis: int, ref: TensorRef, op: str) -> int:
        """An ONNX axis of ``ref`` as a per-sample axis (negative axes allowed)."""
        rank = len(self.full_shape(ref))
        axis = axis + rank if axis < 0 else axis
        if self.has_batch:
            if axis == 0:
                raise Unsupported(f"{op} acts on the batch axis")
            axis -= 1
        return axis

    @staticmethod
    def _output_shape(layer: Layer, inputs: tuple[TensorRef, ...]) -> tuple[int, ...]:
        with torch.no_grad():
            dummies = [torch.zeros((1, *t.shape), dtype=torch.float64) for t in inputs]
            try:
                out = layer.forward(*dummies)
            except RuntimeError as error:
                raise Unsupported(f"{layer.op} cannot be applied: {error}") from error
        return tuple(out.shape[1:])
