"""The differentiable torch module attacks run on, from onnx2torch.

onnx2torch converts the ONNX file independently of the layer graph, so attacks
(upper bounds) and certificates (lower bounds, computed on the layer graph)
come from two implementations that are each checked against onnxruntime.
The module always returns logits ``(N, K)`` in float64: a trailing
Softmax/Sigmoid is cut off before conversion, exactly as the layer graph does.
"""

from __future__ import annotations

import copy
import sys
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import onnx
import torch
from onnx import helper, version_converter

from audit_core.graph import LayerGraph

Tensor = torch.Tensor
MIN_OPSET_FOR_ONNX2TORCH = 13
TORCHVISION_CONVERTERS = ("onnx2torch.node_converters.nms", "onnx2torch.node_converters.roialign")
"""onnx2torch's converters that import torchvision (NonMaxSuppression, RoiAlign)."""


@dataclass(frozen=True)
class TorchModel:
    """A logits module and where it came from (``onnx2torch`` or ``layer-graph``)."""

    module: torch.nn.Module
    source: str
    note: str = ""


def logits_proto(proto: onnx.ModelProto, graph: LayerGraph) -> onnx.ModelProto:
    """A copy of ``proto`` whose only output is the layer graph's logits tensor."""
    return proto_with_output(proto, graph.nodes[-1].onnx_output)


def proto_with_output(proto: onnx.ModelProto, target: str) -> onnx.ModelProto:
    """A copy of ``proto`` whose only output is tensor ``target`` (``proto`` itself when it
    is the output already)."""
    if not target or target == proto.graph.output[0].name:
        return proto
    copy = onnx.ModelProto.FromString(proto.SerializeToString())
    elem_type = proto.graph.output[0].type.tensor_type.elem_type or onnx.TensorProto.FLOAT
    del copy.graph.output[:]
    copy.graph.output.append(helper.make_tensor_value_info(target, elem_type, None))
    return copy


def build_torch_model(proto: onnx.ModelProto, graph: LayerGraph, has_batch: bool) -> TorchModel:
    """onnx2torch module (float64, logits); the layer graph's own module if conversion fails.

    A graph that is one ``Opaque`` node holds its onnx2torch module already."""
    opaque = getattr(graph.nodes[-1].layer, "module", None)
    if opaque is not None:
        return TorchModel(opaque, "onnx2torch")
    try:
        module = _convert(logits_proto(proto, graph))
    except Exception as error:  # onnx2torch raises many types for unsupported models
        note = f"onnx2torch could not convert the model ({type(error).__name__}: {error})"
        return TorchModel(graph.to_torch(), "layer-graph", note)
    adapter = _BatchAdapter(module.double().eval(), graph.input_shape, has_batch)
    return TorchModel(adapter, "onnx2torch")


def opaque_module(
    proto: onnx.ModelProto, logits: str, shape: tuple[int, ...], has_batch: bool
) -> torch.nn.Module:
    """The float64 onnx2torch logits module of a model the layer graph cannot express
    (raises what onnx2torch raises when it cannot convert it)."""
    module = _convert(proto_with_output(proto, logits))
    return _BatchAdapter(module.double().eval(), shape, has_batch)


def constant_identities_folded(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` with every ``Identity`` of an initializer replaced by a copy of that
    initializer under the output's name (torch.onnx exports shared weights that way, and
    onnx2torch looks weights up among the initializers only)."""
    initializers = {i.name: i for i in proto.graph.initializer}
    folded = [n for n in proto.graph.node if n.op_type == "Identity" and n.input[0] in initializers]
    if not folded:
        return proto
    copy_ = onnx.ModelProto.FromString(proto.SerializeToString())
    for node in folded:
        tensor = onnx.TensorProto.FromString(initializers[node.input[0]].SerializeToString())
        tensor.name = node.output[0]
        copy_.graph.initializer.append(tensor)
    keep = [n for n in copy_.graph.node if not (n.op_type == "Identity" and n.input[0] in
            initializers)]  # fmt: skip
    del copy_.graph.node[:]
    copy_.graph.node.extend(keep)
    return copy_


def _convert(proto: onnx.ModelProto) -> torch.nn.Module:
    proto = constant_identities_folded(proto)
    convert = onnx2torch_convert()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return convert(proto)
        except NotImplementedError:
            upgraded = _upgrade(proto)
            if upgraded is None:
                raise
            return convert(upgraded)


def onnx2torch_convert() -> Callable[[onnx.ModelProto], torch.nn.Module]:
    """``onnx2torch.convert``, imported without torchvision unless torchvision is loaded already.

    onnx2torch imports all its op converters; two of them import torchvision, which imports
    ``torch._dynamo``: about 1.7 s, a third of a small audit. The layer graph rejects both ops
    (NonMaxSuppression, RoiAlign) before any conversion, so empty stand-ins replace those two
    modules while onnx2torch loads and are removed again: an explicit import of them later
    loads (and registers) the real converters.
    """
    if "onnx2torch" in sys.modules or "torchvision" in sys.modules:
        from onnx2torch import convert

        return convert
    stand_ins = {name: types.ModuleType(name) for name in TORCHVISION_CONVERTERS}
    for module in stand_ins.values():
        module.__all__ = []  # type: ignore[attr-defined]
    sys.modules.update(stand_ins)
    try:
        from onnx2torch import convert
    finally:
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
    return convert


def _upgrade(proto: onnx.ModelProto) -> onnx.ModelProto | None:
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset >= MIN_OPSET_FOR_ONNX2TORCH:
        return None
    return version_converter.convert_version(proto, MIN_OPSET_FOR_ONNX2TORCH)


class Float32Logits(torch.nn.Module):
    """A float32 copy of a logits module that takes and returns float64 (the attacks keep
    their state in float64; the forward and backward passes run in float32, 2-3x faster on
    CPU for convolutions). What an attack finds with it is verified in float64 and in
    onnxruntime by the attack service."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = copy.deepcopy(module).float().eval()

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x.to(torch.float32)).to(torch.float64)


class _BatchAdapter(torch.nn.Module):
    """Feeds a batch ``(N, *shape)`` to a module exported for batch 1 or without batch axis.

    The whole batch goes through the module at once when that gives what it gives sample
    by sample (``batched``): a model with a free batch axis, and often one exported for
    batch 1 or without a batch axis (``x @ W`` on a vector input takes a matrix of rows
    as well); otherwise the samples go one at a time (as ``(1, *shape)``, or ``shape``
    without a batch axis)."""

    def __init__(self, module: torch.nn.Module, shape: tuple[int, ...], has_batch: bool) -> None:
        super().__init__()
        self.module = module
        self.shape = shape
        self.has_batch = has_batch
        self.batched = self._accepts_batches()

    def _accepts_batches(self) -> bool:
        """A batch of 2 random samples gives the outputs of the samples one by one."""
        probe = torch.randn((2, *self.shape), dtype=torch.float64)
        try:
            with torch.no_grad():
                together = self.module(probe).reshape(2, -1)
                apart = torch.cat([self.module(self._one(s)).reshape(1, -1) for s in probe])
        except Exception:  # e.g. a batch-1 graph (fixed Reshape) fails on a batch of 2
            return False
        return together.shape == apart.shape and torch.allclose(together, apart, atol=1e-9)

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(x.shape[0], *self.shape)
        if self.batched:
            return self.module(x).reshape(x.shape[0], -1)
        outputs = [self.module(self._one(sample)) for sample in x]
        return torch.stack([out.reshape(-1) for out in outputs])

    def _one(self, sample: Tensor) -> Tensor:
        return sample[None] if self.has_batch else sample
