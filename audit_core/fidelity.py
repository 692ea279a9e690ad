"""Fidelity check: the layer graph and the torch module against onnxruntime.

No analysis runs on a model whose layer graph (float64) or torch module
disagrees with onnxruntime beyond tolerance on the audit samples plus random
inputs. On disagreement the error names the first layer whose output differs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import helper, shape_inference

from audit_core.errors import FidelityError, ModelLoadError
from audit_core.graph import LayerGraph
from audit_core.onnx_import import LoadedModel
from audit_core.torch_module import TorchModel

DEFAULT_TOLERANCE = 1e-4


@dataclass(frozen=True)
class FidelityReport:
    """Largest scaled error ``max_j|ours - ort| / max(1, max_j|ort|)`` over the checked
    inputs (per input; the graph's on both its output and its logits)."""

    graph_error: float
    torch_error: float
    inputs_checked: int
    tolerance: float

    def as_dict(self) -> dict[str, float]:
        return {
            "layer_graph_vs_onnxruntime": self.graph_error,
            "torch_vs_onnxruntime": self.torch_error,
            "inputs_checked": float(self.inputs_checked),
            "tolerance": self.tolerance,
        }


def check_fidelity(
    loaded: LoadedModel,
    torch_model: TorchModel,
    samples: np.ndarray | None,
    rng: np.random.Generator,
    *,
    bounds: tuple[float, float] = (0.0, 1.0),
    random_inputs: int = 8,
    tolerance: float = DEFAULT_TOLERANCE,
    runner: OrtRunner | None = None,
) -> FidelityReport:
    """Compare on ``samples`` (may be None) plus ``random_inputs`` uniform points in ``bounds``
    (``runner``: the model's onnxruntime session, made here when not given)."""
    graph = loaded.graph
    x = _inputs(graph, samples, rng, bounds, random_inputs)
    runner = runner or OrtRunner(loaded)
    rows = graph.chunk_rows
    chunks = [_outputs(graph, torch_model, runner, x[s : s + rows]) for s in range(0, len(x), rows)]
    reference_out, reference_logits, ours_out, ours_logits, torch_logits = (
        np.concatenate(part) for part in zip(*chunks, strict=True)
    )
    # the output (probabilities after a Softmax) and the logits the certificates reason on
    graph_error = max(
        scaled_error(ours_out, reference_out), scaled_error(ours_logits, reference_logits)
    )
    torch_error = scaled_error(torch_logits, reference_logits)
    if graph_error > tolerance:
        layer = _first_bad_layer(loaded, runner, x, tolerance)
        raise FidelityError(
            f"{loaded.path}: the layer graph disagrees with onnxruntime (error {graph_error:.3g} "
            f"> tolerance {tolerance:g}); first disagreeing layer: {layer}"
        )
    if torch_error > tolerance:
        raise FidelityError(
            f"{loaded.path}: the {torch_model.source} torch module disagrees with onnxruntime "
            f"(error {torch_error:.3g} > tolerance {tolerance:g})"
        )
    return FidelityReport(graph_error, torch_error, len(x), tolerance)


def scaled_error(ours: np.ndarray, reference: np.ndarray) -> float:
    """Largest per-sample ``max_j|ours - reference| / max(1, max_j|reference|)``.

    Per sample, as the certificates' logit slack is: one input with large outputs
    must not hide a large absolute error at another.
    """
    return float(np.max(sample_errors(ours, reference), initial=0.0))


def sample_errors(ours: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``(N,)`` scaled errors of rows ``(N, ...)`` (see ``scaled_error``)."""
    reference = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    ours = np.asarray(ours, dtype=np.float64).reshape(reference.shape)
    scale = np.maximum(1.0, np.abs(reference).max(axis=1, initial=0.0))
    return np.abs(ours - reference).max(axis=1, initial=0.0) / scale


def onnxruntime_logits(loaded: LoadedModel, x: np.ndarray) -> np.ndarray:
    """The deployed model's logits (onnxruntime, float32 inputs) at ``x``, ``(N, K)``, from a
    new session (an ``AuditedModel`` keeps one: ``AuditedModel.deployed_logits``)."""
    return OrtRunner(loaded).logits(x)


def _outputs(
    graph: LayerGraph, torch_model: TorchModel, runner: OrtRunner, x: np.ndarray
) -> tuple[np.ndarray, ...]:
    """onnxruntime's output and logits, the layer graph's, the torch module's logits."""
    reference_out, reference_logits = runner.outputs(x)
    with torch.no_grad():
        ours_out = graph.forward(x, activation=True).reshape(len(x), -1).numpy()
        ours_logits = graph.forward(x).reshape(len(x), -1).numpy()
        torch_logits = torch_model.module(torch.as_tensor(x)).reshape(len(x), -1).numpy()
    return reference_out, reference_logits, ours_out, ours_logits, torch_logits


def _inputs(
    graph: LayerGraph,
    samples: np.ndarray | None,
    rng: np.random.Generator,
    bounds: tuple[float, float],
    count: int,
) -> np.ndarray:
    random = rng.uniform(bounds[0], bounds[1], size=(count, *graph.input_shape))
    if samples is None or len(samples) == 0:
        return random
    return np.concatenate(
        [np.asarray(samples, dtype=np.float64).reshape(-1, *graph.input_shape), random]
    )


class OrtRunner:
    """The deployed model: the normalised ONNX model in one onnxruntime session, batched
    when the model takes any batch size, else sample by sample."""

    def __init__(self, loaded: LoadedModel, extra_outputs: tuple[str, ...] = ()) -> None:
        self.loaded = loaded
        proto = onnx.ModelProto.FromString(loaded.proto.SerializeToString())
        self.output_names = [proto.graph.output[0].name]
        logits = loaded.graph.nodes[-1].onnx_output
        wanted = [
            n for n in dict.fromkeys((logits, *extra_outputs)) if n and n not in self.output_names
        ]
        _add_outputs(proto, wanted)
        self.output_names += wanted
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: no warnings of a damaged model on stderr
        try:
            self.session = ort.InferenceSession(
                proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own exception types
            first = (
                str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            )
            raise ModelLoadError(
                f"{loaded.path}: onnxruntime cannot run the model: {first}"
            ) from error
        self.input_type = _numpy_type(proto.graph.input[0])

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """All outputs for a batch ``x``, each ``(N, ...)`` float64: one batched call when
        the model takes a batch of any size, else sample by sample."""
        loaded = self.loaded
        if loaded.has_batch and len(x) > 1:
            try:
                outs = self.session.run(
                    self.output_names, {loaded.input_name: x.astype(self.input_type)}
                )
                return [np.asarray(o, dtype=np.float64).reshape(len(x), -1) for o in outs]
            except Exception:  # a fixed batch size of 1: onnxruntime refuses the batch
                pass
        per_sample = []
        for sample in x:
            feed = (sample[None] if loaded.has_batch else sample).astype(self.input_type)
            per_sample.append(self.session.run(self.output_names, {loaded.input_name: feed}))
        return [
            np.stack([np.asarray(outs[i], dtype=np.float64).reshape(-1) for outs in per_sample])
            for i in range(len(self.output_names))
        ]

    def logits(self, x: np.ndarray) -> np.ndarray:
        """The logits ``(N, K)`` (before a final Softmax/Sigmoid) at ``x``."""
        return self.outputs(np.asarray(x))[1]

    def outputs(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(model output, logits) for ``x``."""
        results = self.run(x)
        logits_name = self.loaded.graph.nodes[-1].onnx_output
        logits_index = self.output_names.index(logits_name) if logits_name else 0
        return results[0], results[logits_index]


def _first_bad_layer(loaded: LoadedModel, runner: OrtRunner, x: np.ndarray, tol: float) -> str:
    graph = loaded.graph
    names = tuple(node.onnx_output for node in graph.nodes[1:] if node.onnx_output)
    detailed = OrtRunner(loaded, names)
    reference = dict(zip(detailed.output_names, detailed.run(x), strict=True))
    ours = graph.forward_all(x)
    for index, node in enumerate(graph.nodes[1:], start=1):
        if node.onnx_output not in reference:
            continue
        error = scaled_error(ours[index].reshape(len(x), -1).numpy(), reference[node.onnx_output])
        if error > tol:
            return f"{node.name} ({node.layer.describe()}), error {error:.3g}"
    return "none of the intermediate layers (the output activation differs)"


def _add_outputs(proto: onnx.ModelProto, names: list[str]) -> None:
    if not names:
        return
    inferred = {v.name: v for v in shape_inference.infer_shapes(proto).graph.value_info}
    for name in names:
        info = inferred.get(name)
        if info is None:
            info = helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        proto.graph.output.append(info)


def _numpy_type(info: onnx.ValueInfoProto) -> type:
    elem = info.type.tensor_type.elem_type
    return helper.tensor_dtype_to_np_dtype(elem).type if elem else np.float32
