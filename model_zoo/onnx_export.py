"""Hand-written ONNX graphs (``onnx.helper``) from trained weights.

Every model has one float32 input ``input`` of shape [batch, ...] (symbolic first
dimension named ``batch``), one float32 output ``logits`` of shape [batch, K], float32
initializers, the smallest IR version for its opset, and the zoo's metadata_props.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from .architectures import DigitsCNN, DigitsResNet

META_DATASET = "robustness_audit.dataset"
META_ZOO_NAME = "robustness_audit.zoo_name"
PRODUCER = "robustness-audit model_zoo"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@dataclass
class GraphBuilder:
    """Accumulates nodes and float32 initializers; tensor names are unique by construction."""

    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)

    def const(self, name: str, array: np.ndarray) -> str:
        """Add a float32 initializer and return its name."""
        tensor = numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)
        self.initializers.append(tensor)
        return name

    def op(self, op_type: str, inputs: Sequence[str], name: str, **attrs: object) -> str:
        """Add one node named ``name`` whose single output is also ``name``."""
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], name=name, **attrs))
        return name

    def gemm(self, x: str, weight: np.ndarray, bias: np.ndarray | None, name: str) -> str:
        """y = x W^T + b with W of shape (out, in) as in torch; no C input if bias is None."""
        inputs = [x, self.const(f"{name}.weight", weight)]
        if bias is not None:
            inputs.append(self.const(f"{name}.bias", bias))
        return self.op("Gemm", inputs, name, transB=1)

    def matmul_add(self, x: str, weight: np.ndarray, bias: np.ndarray, name: str) -> str:
        """The same affine map as :meth:`gemm`, written as MatMul(x, W^T) + Add(b)."""
        w_t = self.const(f"{name}.weight_t", np.ascontiguousarray(weight.T))
        product = self.op("MatMul", [x, w_t], f"{name}.matmul")
        return self.op("Add", [product, self.const(f"{name}.bias", bias)], name)

    def conv(self, x: str, conv: nn.Conv2d, name: str) -> str:
        """A 2-D convolution with the module's weights, kernel, stride and symmetric pads."""
        inputs = [x, self.const(f"{name}.weight", _np(conv.weight))]
        if conv.bias is not None:
            inputs.append(self.const(f"{name}.bias", _np(conv.bias)))
        ph, pw = (int(p) for p in conv.padding)
        return self.op(
            "Conv",
            inputs,
            name,
            kernel_shape=list(conv.kernel_size),
            strides=list(conv.stride),
            pads=[ph, pw, ph, pw],
        )

    def batch_norm(self, x: str, bn: nn.BatchNorm2d, name: str) -> str:
        """Inference-mode BatchNormalization with the module's running statistics."""
        if bn.running_mean is None or bn.running_var is None:
            raise ValueError(f"{name}: BatchNorm without running statistics")
        stats = [
            ("scale", bn.weight),
            ("bias", bn.bias),
            ("mean", bn.running_mean),
            ("var", bn.running_var),
        ]
        inputs = [x] + [self.const(f"{name}.{key}", _np(t)) for key, t in stats]
        return self.op("BatchNormalization", inputs, name, epsilon=float(bn.eps))

    def relu(self, x: str, name: str) -> str:
        return self.op("Relu", [x], name)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def rename_output(builder: GraphBuilder) -> None:
    """Make the last node write the graph output ``logits``."""
    builder.nodes[-1].output[0] = OUTPUT_NAME


@dataclass(frozen=True)
class ModelInfo:
    """What the model file says about itself."""

    zoo_name: str
    doc: str
    dataset: str  # relative to the model file's directory, e.g. ../data/digits_test.npz
    input_shape: tuple[int, ...]  # without the batch dimension
    num_outputs: int
    opset: int


def make_model(builder: GraphBuilder, info: ModelInfo) -> onnx.ModelProto:
    """Wrap the builder's graph into a checked model with the zoo's metadata."""
    rename_output(builder)
    graph = helper.make_graph(
        builder.nodes,
        info.zoo_name,
        [
            helper.make_tensor_value_info(
                INPUT_NAME, TensorProto.FLOAT, ["batch", *info.input_shape]
            )
        ],
        [
            helper.make_tensor_value_info(
                OUTPUT_NAME, TensorProto.FLOAT, ["batch", info.num_outputs]
            )
        ],
        initializer=builder.initializers,
    )
    opsets = [helper.make_opsetid("", info.opset)]
    model = helper.make_model(
        graph,
        opset_imports=opsets,
        producer_name=PRODUCER,
        doc_string=info.doc,
        ir_version=helper.find_min_ir_version_for(opsets),
    )
    helper.set_model_props(model, {META_DATASET: info.dataset, META_ZOO_NAME: info.zoo_name})
    onnx.checker.check_model(model, full_check=True)
    return model


def save_model(model: onnx.ModelProto, path: Path) -> None:
    """Serialise deterministically (same proto, same bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString(deterministic=True))


# --- graphs of the zoo's architectures --------------------------------------------------


def mlp_graph(
    layers: Sequence[tuple[np.ndarray, np.ndarray]], matmul_layers: frozenset[int] = frozenset()
) -> GraphBuilder:
    """Affine layers (W (out, in), b) with Relu between them; layer i is written as
    MatMul + Add if i is in ``matmul_layers``, else as one Gemm."""
    builder = GraphBuilder()
    h = INPUT_NAME
    for i, (weight, bias) in enumerate(layers):
        if i > 0:
            h = builder.relu(h, f"relu{i}")
        write = builder.matmul_add if i in matmul_layers else builder.gemm
        h = write(h, weight, bias, f"fc{i + 1}")
    return builder


def mlp_layers(model: nn.Sequential) -> list[tuple[np.ndarray, np.ndarray]]:
    """(W, b) of every ``nn.Linear`` of a sequential MLP, as numpy arrays."""
    return [(_np(m.weight), _np(m.bias)) for m in model if isinstance(m, nn.Linear)]


def cnn_graph(model: DigitsCNN) -> GraphBuilder:
    """Conv -> Relu -> MaxPool 2x2/2 -> Flatten -> Gemm."""
    builder = GraphBuilder()
    h = builder.relu(builder.conv(INPUT_NAME, model.conv, "conv1"), "relu1")
    h = builder.op("MaxPool", [h], "maxpool1", kernel_shape=[2, 2], strides=[2, 2])
    h = builder.op("Flatten", [h], "flatten", axis=1)
    builder.gemm(h, _np(model.fc.weight), _np(model.fc.bias), "fc")
    return builder


def resnet_graph(model: DigitsResNet) -> GraphBuilder:
    """Stem Conv-BN-Relu, residual block Conv-BN-Relu-Conv-BN + Add(skip), Relu,
    AveragePool 2x2/2, Flatten, Gemm."""
    builder = GraphBuilder()
    stem = builder.batch_norm(
        builder.conv(INPUT_NAME, model.stem, "stem.conv"), model.stem_bn, "stem.bn"
    )
    stem = builder.relu(stem, "stem.relu")
    r = builder.batch_norm(builder.conv(stem, model.conv1, "block.conv1"), model.bn1, "block.bn1")
    r = builder.relu(r, "block.relu1")
    r = builder.batch_norm(builder.conv(r, model.conv2, "block.conv2"), model.bn2, "block.bn2")
    h = builder.relu(builder.op("Add", [stem, r], "block.add"), "block.relu_out")
    h = builder.op("AveragePool", [h], "avgpool", kernel_shape=[2, 2], strides=[2, 2])
    h = builder.op("Flatten", [h], "flatten", axis=1)
    builder.gemm(h, _np(model.fc.weight), _np(model.fc.bias), "fc")
    return builder


def depth2_graph(
    W: np.ndarray, b: np.ndarray, v: np.ndarray, output_bias: float | None
) -> GraphBuilder:
    """One-logit depth-2 net v^T relu(W x + b) (+ output_bias): Gemm -> Relu -> Gemm.

    With ``output_bias=None`` the last Gemm has no C input at all.
    """
    builder = GraphBuilder()
    h = builder.relu(builder.gemm(INPUT_NAME, W, b, "hidden"), "relu")
    bias = None if output_bias is None else np.array([output_bias])
    builder.gemm(h, np.asarray(v).reshape(1, -1), bias, "output")
    return builder
