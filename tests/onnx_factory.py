"""Builders for small ONNX test models and onnxruntime as the reference (onnx2torch style).

Models are built with ``onnx.helper`` (explicit opset imports, weights as
initializers, float32 weights from a seeded RNG), saved to a directory, loaded
with ``load_onnx`` and compared with onnxruntime sample by sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper, shape_inference

from audit_core.errors import ModelLoadError
from audit_core.layers.opaque import Opaque
from audit_core.onnx_import import LoadedModel, load_onnx

TOLERANCE = 1e-5
"""Largest accepted ``max|ours - ort| / max(1, max|ort|)``."""

ort.set_default_logger_severity(3)

Dims = Sequence[int | str | None]


def weights(
    rng: np.random.Generator, *shape: int, low: float = -1.0, high: float = 1.0
) -> np.ndarray:
    """Random float32 weights."""
    return rng.uniform(low, high, size=shape).astype(np.float32)


def init(
    name: str, array: np.ndarray | float | Sequence[float], dtype: type = np.float32
) -> onnx.TensorProto:
    """An initializer ``name`` holding ``array`` (float32 unless told)."""
    return numpy_helper.from_array(np.asarray(array, dtype=dtype), name)


def ir_version_for(opset: int) -> int:
    """The smallest IR version of ``opset`` (at least 4: initializers need not be inputs)."""
    try:
        return max(helper.find_min_ir_version_for([helper.make_opsetid("", opset)]), 4)
    except ValueError:
        return 4


def make_model(
    nodes: Sequence[onnx.NodeProto],
    input_shape: Dims,
    initializers: Sequence[onnx.TensorProto] = (),
    *,
    opset: int = 13,
    input_name: str = "x",
    output: str = "y",
    extra_inputs: Sequence[onnx.ValueInfoProto] = (),
    ir_version: int | None = None,
    output_shape: Dims | None = None,
) -> onnx.ModelProto:
    """A one-input, one-output float model.

    The output shape is ``output_shape`` or comes from shape inference (the checker
    and onnxruntime require one).
    """
    real_input = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(input_shape))
    graph = helper.make_graph(
        list(nodes),
        "test",
        [real_input, *extra_inputs],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, output_shape)],
        list(initializers),
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        ir_version=ir_version or ir_version_for(opset),
        producer_name="onnx_factory",
    )
    if output_shape is not None:
        return model
    try:
        inferred = shape_inference.infer_shapes(model)
    except Exception:  # unsupported or broken graphs keep an unshaped output
        return model
    out = inferred.graph.output[0]
    if out.type.tensor_type.HasField("shape"):
        model.graph.output[0].CopyFrom(out)
    return model


def save(model: onnx.ModelProto, directory: Path, name: str = "model.onnx") -> Path:
    path = Path(directory) / name
    path.write_bytes(model.SerializeToString())
    return path


def ort_outputs(path: Path, x: np.ndarray, input_name: str, has_batch: bool) -> list[np.ndarray]:
    """onnxruntime's output for each sample of ``x`` (float32 feeds), unflattened."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = []
    for sample in x.astype(np.float32):
        feed = sample[None] if has_batch else sample
        outputs.append(np.asarray(session.run(None, {input_name: feed})[0], dtype=np.float64))
    return outputs


def scaled_error(ours: np.ndarray, reference: np.ndarray) -> float:
    """``max|ours - reference| / max(1, max|reference|)``."""
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    scale = max(1.0, float(np.abs(reference).max(initial=0.0)))
    return float(np.abs(ours - reference).max(initial=0.0) / scale)


def random_inputs(
    loaded: LoadedModel, seed: int = 0, n: int = 4, low: float = -1.0, high: float = 1.0
) -> np.ndarray:
    """``n`` float32-representable float64 inputs of the model's per-sample shape."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(low, high, size=(n, *loaded.graph.input_shape)).astype(np.float32)
    return x.astype(np.float64)


def assert_matches_ort(
    path: Path,
    *,
    sample_shape: tuple[int, ...] | None = None,
    seed: int = 0,
    n: int = 4,
    low: float = -1.0,
    high: float = 1.0,
) -> LoadedModel:
    """Load ``path``; its ``forward(x, activation=True)`` must equal onnxruntime's output."""
    loaded = load_onnx(path, sample_shape)
    x = random_inputs(loaded, seed, n, low, high)
    reference = ort_outputs(path, x, loaded.input_name, loaded.has_batch)
    expected_shape = reference[0].shape[1:] if loaded.has_batch else reference[0].shape
    assert loaded.graph.output_shape == expected_shape
    ours = loaded.graph.forward(x, activation=True)
    assert ours.dtype.is_floating_point and ours.shape == (n, *expected_shape)
    ref = np.stack([r.reshape(-1) for r in reference])
    error = scaled_error(ours.detach().numpy().reshape(n, -1), ref)
    assert error <= TOLERANCE, f"{path.name}: scaled error {error:.3g} vs onnxruntime"
    return loaded


def check(
    tmp_path: Path,
    nodes: Sequence[onnx.NodeProto],
    input_shape: Dims,
    initializers: Sequence[onnx.TensorProto] = (),
    *,
    opset: int = 13,
    output_shape: Dims | None = None,
    **kwargs,
) -> LoadedModel:
    """Build, save, load and compare with onnxruntime in one call."""
    model = make_model(nodes, input_shape, initializers, opset=opset, output_shape=output_shape)
    return assert_matches_ort(save(model, tmp_path), **kwargs)


def assert_opaque_matches_ort(
    path: Path,
    *,
    sample_shape: tuple[int, ...] | None = None,
    seed: int = 0,
    n: int = 4,
    low: float = -1.0,
    high: float = 1.0,
) -> LoadedModel:
    """Load ``path``, a model with ops the layer graph lacks that onnx2torch converts: its
    graph must be the input and one ``Opaque`` node listing those ops, whose flat output
    ``(N, K)`` equals onnxruntime's output, flattened per sample, within ``TOLERANCE``
    (scaled error, as for every layer graph)."""
    loaded = load_onnx(path, sample_shape)
    assert layer_ops(loaded) == ["Input", "Opaque"], layer_ops(loaded)
    layer = opaque(loaded)
    assert layer.missing and loaded.graph.missing_ops == layer.missing
    assert len(layer.details) >= len(layer.missing)
    x = random_inputs(loaded, seed, n, low, high)
    ref = np.stack(
        [r.reshape(-1) for r in ort_outputs(path, x, loaded.input_name, loaded.has_batch)]
    )
    assert loaded.graph.output_shape == (ref.shape[1],)
    ours = loaded.graph.forward(x, activation=True).detach().numpy()
    assert ours.shape == ref.shape and ours.dtype == np.float64
    error = scaled_error(ours, ref)
    assert error <= TOLERANCE, f"{path.name}: scaled error {error:.3g} vs onnxruntime"
    return loaded


def opaque_model(
    tmp_path: Path,
    nodes: Sequence[onnx.NodeProto],
    input_shape: Dims,
    initializers: Sequence[onnx.TensorProto] = (),
    *,
    opset: int = 13,
    output_shape: Dims | None = None,
    **kwargs,
) -> Opaque:
    """Build and save a model the layer graph cannot express but onnx2torch converts; its
    ``Opaque`` layer, checked against onnxruntime (``assert_opaque_matches_ort``)."""
    model = make_model(nodes, input_shape, initializers, opset=opset, output_shape=output_shape)
    return opaque(assert_opaque_matches_ort(save(model, tmp_path), **kwargs))


def opaque(loaded: LoadedModel) -> Opaque:
    """The ``Opaque`` layer of a model loaded through onnx2torch."""
    layer = loaded.graph.nodes[-1].layer
    assert isinstance(layer, Opaque), layer_ops(loaded)
    return layer


def load_error(path: Path, sample_shape: tuple[int, ...] | None = None) -> str:
    """The message of the ``ModelLoadError`` that loading ``path`` must raise (one line)."""
    with pytest.raises(ModelLoadError) as info:
        load_onnx(path, sample_shape)
    message = str(info.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    return message


def model_error(
    tmp_path: Path,
    nodes: Sequence[onnx.NodeProto],
    input_shape: Dims,
    initializers: Sequence[onnx.TensorProto] = (),
    *,
    opset: int = 13,
    output_shape: Dims | None = None,
) -> str:
    """Build and save a model that must fail to load; the error message."""
    model = make_model(nodes, input_shape, initializers, opset=opset, output_shape=output_shape)
    return load_error(save(model, tmp_path))


def layer_ops(loaded: LoadedModel) -> list[str]:
    """The layer class names of the loaded graph, input first."""
    return [node.layer.op for node in loaded.graph.nodes]
