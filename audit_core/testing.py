"""Builders for tiny ONNX models and datasets, for tests (ours and plugin authors')."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def mlp_onnx(
    path: str | Path,
    weights: Sequence[np.ndarray],
    biases: Sequence[np.ndarray | None] | None = None,
    *,
    activation: str = "Relu",
    output_activation: str | None = None,
    opset: int = 17,
    metadata: dict[str, str] | None = None,
    doc_string: str = "",
) -> Path:
    """Write ``Gemm -> activation -> ... -> Gemm`` with ``weights[i]`` of shape ``(out, in)``.

    The input is ``[batch, in]`` named ``x``; the output ``[batch, K]`` named ``logits``
    (after ``output_activation`` such as ``Softmax`` or ``Sigmoid`` if given).
    """
    biases = list(biases) if biases is not None else [None] * len(weights)
    nodes, initializers = [], []
    current = "x"
    for i, (weight, bias) in enumerate(zip(weights, biases, strict=True)):
        inputs = [current, f"W{i}"]
        initializers.append(numpy_helper.from_array(np.asarray(weight, np.float32), f"W{i}"))
        if bias is not None:
            initializers.append(numpy_helper.from_array(np.asarray(bias, np.float32), f"b{i}"))
            inputs.append(f"b{i}")
        out = f"z{i}"
        nodes.append(helper.make_node("Gemm", inputs, [out], name=f"gemm{i}", transB=1))
        current = out
        if i < len(weights) - 1:
            nodes.append(helper.make_node(activation, [current], [f"a{i}"], name=f"act{i}"))
            current = f"a{i}"
    if output_activation:
        nodes.append(helper.make_node(output_activation, [current], ["probs"], name="out_act"))
        current = "probs"
    nodes.append(helper.make_node("Identity", [current], ["logits"], name="output"))
    return save_model(
        path,
        nodes,
        initializers,
        [None, np.shape(weights[0])[1]],
        [None, np.shape(weights[-1])[0]],
        opset=opset,
        metadata=metadata,
        doc_string=doc_string,
    )


def save_model(
    path: str | Path,
    nodes: list[onnx.NodeProto],
    initializers: list[onnx.TensorProto],
    input_shape: Sequence[int | None],
    output_shape: Sequence[int | None],
    *,
    opset: int = 17,
    metadata: dict[str, str] | None = None,
    doc_string: str = "",
) -> Path:
    """Check and write a single-input, single-output float model (``x`` -> ``logits``)."""
    dims = ["batch" if d is None else d for d in input_shape]
    out_dims = ["batch" if d is None else d for d in output_shape]
    graph = helper.make_graph(
        nodes,
        "model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, out_dims)],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 8)
    model.doc_string = doc_string
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=True)
    path = Path(path)
    onnx.save(model, path)
    return path


def random_mlp(
    sizes: Sequence[int], seed: int = 0, scale: float = 1.0
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Random weights ``(out, in)`` and biases for layer sizes ``[in, h1, ..., K]``."""
    rng = np.random.default_rng(seed)
    weights = [
        rng.normal(0, scale / np.sqrt(n_in), size=(n_out, n_in))
        for n_in, n_out in itertools.pairwise(sizes)
    ]
    biases = [rng.normal(0, 0.1 * scale, size=n) for n in sizes[1:]]
    return weights, biases


def save_dataset(
    path: str | Path,
    x: np.ndarray,
    y: np.ndarray | None = None,
    **extra: np.ndarray | Sequence[str] | float,
) -> Path:
    """Write an audit-data ``.npz`` (``x``, ``y`` and optional ``class_names``, ``lower``...)."""
    arrays = {"x": np.asarray(x, dtype=np.float32)}
    if y is not None:
        arrays["y"] = np.asarray(y, dtype=np.int64)
    arrays.update({k: np.asarray(v) for k, v in extra.items()})
    path = Path(path)
    np.savez(path, **arrays)
    return path
