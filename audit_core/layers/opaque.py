"""``Opaque``: a whole model the layer graph cannot express, run by its onnx2torch module.

A model with ops the layer graph lacks (HardSwish, Erf, ...) still loads when onnx2torch
converts it: its ``LayerGraph`` is the input and one ``Opaque`` node whose forward pass is
the float64 onnx2torch module (checked against onnxruntime like every model). Analyses
that only need forward and backward passes (attacks, transfer) run on it; those that
need the layers (certificates, bound propagation, linearisation, collisions, KKT) are
skipped with ``missing`` as the reason. Its output is the flat logits vector ``(N, K)``
whatever the ONNX output's shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from audit_core.errors import NotApplicable
from audit_core.layers.base import Bounds, Layer, LayerKind

Tensor = torch.Tensor


@dataclass(frozen=True, eq=False)
class Opaque(Layer):
    """The model's logits as one differentiable black box (no layer rules)."""

    kind: ClassVar[LayerKind] = LayerKind.NONLINEAR
    module: torch.nn.Module | None = None
    """float64 logits module ``(N, *input_shape) -> (N, K)``."""
    missing: tuple[str, ...] = ()
    """The ops the layer graph lacks, as ``"HardSwish (opset 17) x19"`` labels."""
    details: tuple[str, ...] = ()
    """Why, node by node (``"/act/HardSwish: no converter for this op"``)."""
    parameters: int = 0

    def forward(self, x: Tensor) -> Tensor:
        """Differentiable (``graph.to_torch()`` takes gradients through it)."""
        return self.module(x.to(torch.float64))

    def interval(self, bounds: Bounds) -> Bounds:
        raise NotApplicable(f"no layer graph: {', '.join(self.missing)} unsupported")

    def parameter_count(self) -> int:
        return self.parameters

    def describe(self) -> str:
        return f"Opaque[onnx2torch; layer graph lacks {', '.join(self.missing)}]"
