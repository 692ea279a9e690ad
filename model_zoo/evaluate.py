"""Evaluation of zoo models from their ONNX files (onnxruntime) and a torch view of MLPs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper
from torch import nn

from .datasets import load_npz
from .onnx_export import META_DATASET


def onnx_logits(model_path: Path, x: np.ndarray) -> np.ndarray:
    """Run the model with onnxruntime (CPU, one thread) on a float32 batch."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)}
    return session.run(None, feed)[0]


def decide(logits: np.ndarray) -> np.ndarray:
    """The project's decision rule: argmax for K >= 2 outputs, ``logit > 0`` for one."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).astype(np.int64)
    return logits.argmax(axis=1).astype(np.int64)


def dataset_of(model_path: Path) -> Path:
    """The dataset named by the model's ``robustness_audit.dataset`` metadata, resolved."""
    props = {p.key: p.value for p in onnx.load(str(model_path)).metadata_props}
    return (model_path.parent / props[META_DATASET]).resolve()


def onnx_accuracy(model_path: Path, dataset_path: Path) -> float:
    """Accuracy of the ONNX model on an audit-data file, computed with onnxruntime."""
    data = load_npz(dataset_path)
    predictions = decide(onnx_logits(model_path, data["x"]))
    return int((predictions == data["y"]).sum()) / len(data["y"])


def mlp_from_onnx(model_path: Path) -> nn.Sequential:
    """A float32 torch copy of a chain of Gemm / MatMul+Add / Relu nodes (for attacks).

    Raises ``ValueError`` on any other op, on Gemm attributes other than transB, or on a
    graph that is not a simple chain in node order.
    """
    model = onnx.load(str(model_path))
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    layers: list[nn.Module] = []
    pending: np.ndarray | None = None  # W^T of a MatMul waiting for its Add
    for node in model.graph.node:
        if node.op_type == "Relu":
            layers.append(nn.ReLU())
        elif node.op_type == "Gemm":
            layers.append(_gemm_layer(node, weights))
        elif node.op_type == "MatMul":
            pending = weights[node.input[1]]
        elif node.op_type == "Add" and pending is not None:
            layers.append(_linear(pending.T, weights[node.input[1]]))
            pending = None
        else:
            raise ValueError(f"mlp_from_onnx: unsupported node {node.op_type} ({node.name})")
    return nn.Sequential(*layers).eval()


def _gemm_layer(node: onnx.NodeProto, weights: dict[str, np.ndarray]) -> nn.Linear:
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if set(attrs) - {"transB"} or attrs.get("transB", 0) != 1:
        raise ValueError(f"mlp_from_onnx: Gemm {node.name} must have only transB=1")
    weight = weights[node.input[1]]
    bias = weights[node.input[2]] if len(node.input) > 2 and node.input[2] else None
    return _linear(weight, bias)


def _linear(weight: np.ndarray, bias: np.ndarray | None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        if bias is not None:
            layer.bias.copy_(torch.tensor(bias))
    return layer
