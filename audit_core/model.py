"""``AuditedModel``: a loaded, fidelity-checked model with everything analyses need."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from audit_core.cost import ForwardCost, forward_cost
from audit_core.errors import NotApplicable
from audit_core.fidelity import DEFAULT_TOLERANCE, FidelityReport, OrtRunner, check_fidelity
from audit_core.graph import DenseView, LayerGraph
from audit_core.onnx_import import LoadedModel, load_onnx
from audit_core.report_model import ModelInfo
from audit_core.torch_module import TorchModel, build_torch_model

DATASET_METADATA_KEY = "robustness_audit.dataset"


@dataclass(frozen=True, eq=False)
class AuditedModel:
    """A model under audit: ONNX file, layer graph, torch module, fidelity numbers."""

    name: str
    loaded: LoadedModel
    torch_model: TorchModel
    fidelity: FidelityReport
    runtime: OrtRunner
    """The deployed model's onnxruntime session (one per model and run)."""

    @property
    def graph(self) -> LayerGraph:
        return self.loaded.graph

    @property
    def module(self) -> torch.nn.Module:
        """Differentiable logits module (float64) for attacks."""
        return self.torch_model.module

    @property
    def path(self) -> Path:
        return self.loaded.path

    @cached_property
    def dense_view(self) -> DenseView | None:
        """The model as explicit affine/ReLU matrices, or None when it is not such a chain."""
        try:
            return self.graph.dense_view()
        except NotApplicable:
            return None

    @cached_property
    def forward_cost(self) -> ForwardCost:
        """One sample's forward pass: multiply-adds and intermediate values (from the ONNX
        file, by shape inference)."""
        return forward_cost(self.loaded.proto, self.loaded.input_name, self.graph.input_shape)

    @property
    def forward_macs(self) -> int:
        """Multiply-adds of one sample's forward pass (from the ONNX file: weighted ops)."""
        return self.forward_cost.macs

    def relu_depth(self) -> int | None:
        """Number of affine layers of a plain affine/ReLU chain (2 for a one-hidden-layer net).

        Structural: no matrix is composed (cheap even for wide convolutional nets).
        """
        try:
            return self.graph.dense_depth()
        except NotApplicable:
            return None

    def __reduce__(self) -> tuple:
        """Pickled as the model bytes and layer graph (``loaded``) with the fidelity numbers:
        a worker process rebuilds the torch module and the onnxruntime session, once per
        process and model (``audit_core.executor``), and does not repeat the check."""
        return _rebuilt, (self.name, self.loaded, self.fidelity)

    def info(self, accuracy: float | None = None) -> ModelInfo:
        return ModelInfo(
            name=self.name,
            path=str(self.path),
            sha256=self.loaded.sha256,
            input_shape=self.graph.input_shape,
            num_outputs=self.graph.num_outputs,
            num_classes=self.graph.num_classes,
            parameter_count=self.graph.parameter_count,
            opset=self.loaded.opset,
            producer=self.loaded.producer,
            piecewise_linear=self.graph.is_piecewise_linear,
            layers=self.graph.describe(),
            fidelity=self.fidelity.as_dict(),
            accuracy=accuracy,
            metadata={str(k): str(v) for k, v in self.loaded.metadata.items()},
            torch_source=self.torch_model.source,
        )


def _rebuilt(name: str, loaded: LoadedModel, fidelity: FidelityReport) -> AuditedModel:
    """An unpickled ``AuditedModel``: its module and session built again (cached)."""
    from audit_core.executor import worker_cache

    def build() -> AuditedModel:
        torch_model = build_torch_model(loaded.proto, loaded.graph, loaded.has_batch)
        return AuditedModel(name, loaded, torch_model, fidelity, OrtRunner(loaded))

    return worker_cache(("model", loaded.sha256, name), build)


def bundled_dataset(loaded: LoadedModel) -> Path | None:
    """The dataset a model-zoo model names in its metadata (relative to the model file)."""
    relative = loaded.metadata.get(DATASET_METADATA_KEY)
    if not relative:
        return None
    return (loaded.path.parent / relative).resolve()


def open_model(
    path: str | Path,
    name: str,
    samples: np.ndarray | None,
    rng: np.random.Generator,
    *,
    sample_shape: tuple[int, ...] | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    tolerance: float = DEFAULT_TOLERANCE,
) -> AuditedModel:
    """Load, convert and fidelity-check one model."""
    loaded = load_onnx(path, sample_shape)
    return audited(loaded, name, samples, rng, bounds=bounds, tolerance=tolerance)


def audited(
    loaded: LoadedModel,
    name: str,
    samples: np.ndarray | None,
    rng: np.random.Generator,
    *,
    bounds: tuple[float, float] = (0.0, 1.0),
    tolerance: float = DEFAULT_TOLERANCE,
) -> AuditedModel:
    """Build the torch module for ``loaded`` and run the fidelity check at ``tolerance``."""
    torch_model = build_torch_model(loaded.proto, loaded.graph, loaded.has_batch)
    runtime = OrtRunner(loaded)
    fidelity = check_fidelity(
        loaded, torch_model, samples, rng, bounds=bounds, tolerance=tolerance, runner=runtime
    )
    return AuditedModel(name, loaded, torch_model, fidelity, runtime)
