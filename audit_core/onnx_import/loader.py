"""ONNX file -> checked, normalised ``onnx.ModelProto`` -> ``LayerGraph``.

Every problem that stops the import is a ``ModelLoadError`` with one line of
explanation; all unsupported ops are collected and listed together. A model with ops
the layer graph lacks still loads when onnx2torch converts it: as the input and one
``Opaque`` node (``Opaque.missing`` lists those ops), unless one of them makes the
output depend on more than the sample (training mode) or the output is a constant.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
import torch
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import load_external_data_for_model
from onnx.reference import ReferenceEvaluator

from audit_core.errors import ModelLoadError
from audit_core.graph import LayerGraph, Node
from audit_core.layers import Sigmoid, Softmax
from audit_core.layers.opaque import Opaque
from audit_core.memory import MIB, format_bytes, weights_need
from audit_core.onnx_import.builder import GraphBuilder
from audit_core.onnx_import.fusion import fuse_affine, prune
from audit_core.onnx_import.registry import (
    OnnxNode,
    TensorRef,
    TrainingMode,
    Unsupported,
    Value,
    find_converter,
)

_OUTPUT_ACTIVATIONS = {"softmax": Softmax, "sigmoid": Sigmoid}


class _Problem(NamedTuple):
    """One node the layer graph cannot represent: ``label`` (``"HardSwish (opset 17)"``),
    ``detail`` (``"node: why"``); ``opaque``: the model may still load through onnx2torch."""

    label: str
    detail: str
    opaque: bool = True


@dataclass(frozen=True)
class LoadedModel:
    """A checked ONNX model and its layer graph."""

    path: Path
    sha256: str
    proto: onnx.ModelProto
    graph: LayerGraph
    has_batch: bool
    input_name: str
    opset: int
    producer: str
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.stem


def load_onnx(
    path: str | Path,
    sample_shape: tuple[int, ...] | None = None,
    memory_budget_mb: int | None = None,
) -> LoadedModel:
    """Read, check and convert ``path``. ``sample_shape`` fixes dynamic input dims. With
    ``memory_budget_mb``, a model whose weights (the file and its external data) the
    audit could not hold within that budget is refused before they are read."""
    path = Path(path)
    _check_weight_memory(path, [path], memory_budget_mb)
    raw = _read_bytes(path)
    proto = _parse(raw, path)
    _load_external_data(proto, path, memory_budget_mb)
    _check(proto, path)
    proto = normalise(proto)
    input_info = _single_input(proto, path)
    has_batch, shape = _input_shape(input_info, sample_shape, path)
    graph = _convert(proto, input_info.name, shape, has_batch, path)
    return LoadedModel(
        path=path,
        sha256=hashlib.sha256(raw).hexdigest(),
        proto=proto,
        graph=graph,
        has_batch=has_batch,
        input_name=input_info.name,
        opset=_default_opset(proto),
        producer=" ".join(p for p in (proto.producer_name, proto.producer_version) if p),
        metadata={p.key: p.value for p in proto.metadata_props},
    )


# ------------------------------------------------------------------ reading


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file")
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a directory, not an ONNX file")
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ModelLoadError(f"{path}: cannot be read ({error.strerror})") from error
    if not raw:
        raise ModelLoadError(f"{path}: the file is empty")
    return raw


def _parse(raw: bytes, path: Path) -> onnx.ModelProto:
    try:
        proto = onnx.load_model_from_string(raw)
    except (DecodeError, ValueError, RuntimeError) as error:
        raise ModelLoadError(
            f"{path}: not an ONNX model (protobuf parse failed: {error})"
        ) from error
    if proto.ir_version <= 0 or not proto.graph.node or not proto.graph.output:
        raise ModelLoadError(f"{path}: not an ONNX model (no IR version, nodes or outputs)")
    damaged = _invalid_text(proto, "model")
    if damaged:
        raise ModelLoadError(f"{path}: damaged ONNX file: {damaged} is not valid UTF-8 text")
    return proto


def _check_weight_memory(path: Path, files: list[Path], budget_mb: int | None) -> None:
    """Refuse the model when holding the weights in ``files`` (bytes on disk, float32
    at most) would take more than ``budget_mb`` (``audit_core.memory.WEIGHT_COPIES``)."""
    if budget_mb is None:
        return
    size = sum(f.stat().st_size for f in set(files) if f.is_file())
    if weights_need(size) > budget_mb * MIB:
        raise ModelLoadError(
            f"{path}: its weights ({format_bytes(size)}) would take about "
            f"{format_bytes(weights_need(size))} in the audit, over the memory budget of "
            f"{format_bytes(budget_mb * MIB)}: refused (raise --memory-budget)"
        )


def _load_external_data(proto: onnx.ModelProto, path: Path, budget_mb: int | None) -> None:
    """Tensors stored outside the file (ONNX external data) read into ``proto``, only from
    regular files inside the model's folder: a location that is absolute, climbs out
    (``..``) or resolves outside it through a symlink refuses the model before any file
    is opened."""
    tensors = [t for t in _all_tensors(proto.graph) if t.data_location == TensorProto.EXTERNAL]
    if not tensors:
        return
    folder = path.resolve().parent
    for tensor in tensors:
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (folder / location).resolve()
        inside = bool(location) and not Path(location).is_absolute()
        if not inside or not target.is_relative_to(folder) or not target.is_file():
            raise ModelLoadError(
                f"{path}: external data {location!r} of tensor {tensor.name!r} is not a "
                "file inside the model's folder: refused"
            )
    locations = {e.value for t in tensors for e in t.external_data if e.key == "location"}
    _check_weight_memory(path, [path, *(folder / loc for loc in locations)], budget_mb)
    try:
        load_external_data_for_model(proto, str(folder))
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{path}: cannot read its external data ({error})") from error


def _all_tensors(graph: onnx.GraphProto):
    """Every tensor of ``graph``: initializers, node attributes, nested graphs'."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _all_tensors(attribute.g)
            for sub in attribute.graphs:
                yield from _all_tensors(sub)


def _invalid_text(message, where: str) -> str | None:
    """The first text field (names, doc strings, metadata, attribute names, nested
    graphs') that is not valid UTF-8, as a dotted path; None when all are. Protobuf
    hands such fields back as bytes instead of refusing the file."""
    for descriptor, value in message.ListFields():
        repeated = descriptor.is_repeated
        items = list(value) if repeated else [value]
        here = f"{where}.{descriptor.name}"
        if descriptor.type == FieldDescriptor.TYPE_STRING:
            if any(isinstance(item, bytes) for item in items):
                return here
        elif descriptor.type == FieldDescriptor.TYPE_MESSAGE:
            for index, item in enumerate(items):
                found = _invalid_text(item, f"{here}[{index}]" if repeated else here)
                if found:
                    return found
    return None


def _check(proto: onnx.ModelProto, path: Path) -> None:
    try:
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, ValueError, RuntimeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(f"{path}: fails the ONNX checker: {first}") from error


def normalise(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy without initializers listed as graph inputs (old exports list weights there)."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    initializers = {i.name for i in proto.graph.initializer}
    real = [i for i in proto.graph.input if i.name not in initializers]
    if len(real) != len(proto.graph.input):
        del proto.graph.input[:]
        proto.graph.input.extend(real)
        proto.ir_version = max(proto.ir_version, 4)
    return proto


def _single_input(proto: onnx.ModelProto, path: Path) -> onnx.ValueInfoProto:
    inputs = list(proto.graph.input)
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs) or "none"
        raise ModelLoadError(
            f"{path}: the model has {len(inputs)} inputs ({names}); audit needs one"
        )
    if len(proto.graph.output) != 1:
        raise ModelLoadError(
            f"{path}: the model has {len(proto.graph.output)} outputs; audit needs one"
        )
    return inputs[0]


MAX_INPUT_VALUES = 10**8
"""Values per input sample beyond which a model is refused (800 MB per float64 sample)."""


def _input_shape(
    info: onnx.ValueInfoProto, sample_shape: tuple[int, ...] | None, path: Path
) -> tuple[bool, tuple[int, ...]]:
    """(has a batch axis, per-sample shape). Rank >= 2 inputs have a leading batch axis.

    A dim is dynamic when it is a ``dim_param``, unset, or not positive (exporters write
    ``-1`` or ``0`` for a free batch axis)."""
    dims = [
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
        for d in info.type.tensor_type.shape.dim
    ]
    if not dims:
        raise ModelLoadError(f"{path}: input {info.name!r} has no static rank")
    has_batch = len(dims) >= 2
    per_sample = dims[1:] if has_batch else dims
    if sample_shape is not None and len(sample_shape) == len(per_sample):
        per_sample = [s if d is None else d for d, s in zip(per_sample, sample_shape, strict=True)]
    if any(d is None for d in per_sample):
        shown = ["?" if d is None else d for d in dims]
        raise ModelLoadError(
            f"{path}: input {info.name!r} has a dynamic shape {shown}; pass --data so the "
            "data fixes it"
        )
    if any(d < 0 for d in per_sample) or math.prod(per_sample) > MAX_INPUT_VALUES:
        raise ModelLoadError(
            f"{path}: input {info.name!r} declares a sample of shape {list(per_sample)} "
            f"({math.prod(per_sample):,} values); the audit takes at most "
            f"{MAX_INPUT_VALUES:,} values per sample"
        )
    return has_batch, tuple(int(d) for d in per_sample)


def _default_opset(proto: onnx.ModelProto) -> int:
    for opset in proto.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return int(opset.version)
    return 1


# --------------------------------------------------------------- conversion


def _initializer_value(tensor: onnx.TensorProto, path: Path) -> np.ndarray:
    """The tensor's values; a tensor whose data disagrees with its shape or type (which
    ``onnx.checker`` lets through) refuses the model."""
    try:
        return numpy_helper.to_array(tensor)
    except (ValueError, TypeError) as error:
        raise ModelLoadError(f"{path}: initializer {tensor.name!r} is damaged ({error})") from error


def _convert(
    proto: onnx.ModelProto, input_name: str, shape: tuple[int, ...], has_batch: bool, path: Path
) -> LayerGraph:
    builder = GraphBuilder(shape, has_batch, input_name)
    values: dict[str, Value] = {input_name: builder.input}
    for init in proto.graph.initializer:
        values[init.name] = _initializer_value(init, path)
    opsets = {o.domain or "": int(o.version) for o in proto.opset_import}
    problems: list[_Problem] = []
    for node_proto in proto.graph.node:
        _convert_node(node_proto, opsets, builder, values, problems)
    output = values.get(proto.graph.output[0].name)
    graph_output = _output_index(output, problems)
    refused = [p.detail for p in problems if not p.opaque]
    if refused:
        raise ModelLoadError(
            f"{path}: {_problems_text(problems)}; the model cannot be audited as a function "
            f"of one input ({'; '.join(refused)}): export it in inference mode"
        )
    if problems:
        return _opaque_graph(proto, builder.nodes[0], has_batch, problems, path)
    return _finish(builder.nodes, graph_output, path)


def _convert_node(
    node_proto: onnx.NodeProto,
    opsets: dict[str, int],
    builder: GraphBuilder,
    values: dict[str, Value],
    problems: list[_Problem],
) -> None:
    domain = "" if node_proto.domain in ("", "ai.onnx") else node_proto.domain
    opset = opsets.get(domain, 1)
    if any(name and name not in values for name in node_proto.input):
        # downstream of a reported problem: still list this op if it is unsupported too
        if find_converter(domain, node_proto.op_type, opset) is None:
            label = f"{domain + '.' if domain else ''}{node_proto.op_type} (opset {opset})"
            name = node_proto.name or node_proto.output[0]
            problems.append(_Problem(label, f"{name}: no converter for this op"))
        return
    node = OnnxNode(
        name=node_proto.name or node_proto.output[0],
        op_type=node_proto.op_type,
        domain=domain,
        opset=opset,
        inputs=tuple(values[name] if name else None for name in node_proto.input),
        input_names=tuple(node_proto.input),
        outputs=tuple(node_proto.output),
        attrs={a.name: helper.get_attribute_value(a) for a in node_proto.attribute},
    )
    try:
        outputs = _run_converter(node, node_proto, builder)
    except Unsupported as reason:
        opaque = not isinstance(reason, TrainingMode)
        problems.append(_Problem(_op_label(node), f"{node.name}: {reason}", opaque))
        return
    except (ValueError, IndexError, TypeError, KeyError) as error:
        problems.append(_Problem(_op_label(node), f"{node.name}: malformed node ({error})"))
        return
    for name, value in zip(node.outputs, outputs, strict=False):
        values[name] = value


def _run_converter(
    node: OnnxNode, node_proto: onnx.NodeProto, builder: GraphBuilder
) -> list[Value]:
    runtime = [v for v in node.inputs if isinstance(v, TensorRef)]
    converter = find_converter(node.domain, node.op_type, node.opset)
    if not runtime and node.op_type not in ("Constant", "Shape"):
        return _fold_constant(node, node_proto)
    if converter is None:
        raise Unsupported("no converter for this op")
    return converter(node, builder)


def _fold_constant(node: OnnxNode, node_proto: onnx.NodeProto) -> list[Value]:
    """Evaluate a node whose inputs are all constants with ONNX's reference evaluator."""
    names = [n for n in node.input_names if n]
    graph = helper.make_graph(
        [node_proto],
        "fold",
        [helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in names],
        [helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in node.outputs],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(node.domain, node.opset)])
    feeds = {n: v for n, v in zip(node.input_names, node.inputs, strict=True) if n}
    try:
        return [np.asarray(v) for v in ReferenceEvaluator(model).run(None, feeds)]
    except Exception as error:  # the reference evaluator raises many types
        raise Unsupported(f"cannot fold this constant expression ({error})") from error


def _op_label(node: OnnxNode) -> str:
    domain = f"{node.domain}." if node.domain else ""
    return f"{domain}{node.op_type} (opset {node.opset})"


def _output_index(output: Value | None, problems: list[_Problem]) -> int:
    if output is None:
        return -1
    if not isinstance(output, TensorRef):
        detail = "the model output is a constant (it ignores its input)"
        problems.append(_Problem("output", detail, opaque=False))
        return -1
    return output.index


def _problem_labels(problems: list[_Problem]) -> tuple[str, ...]:
    """``("HardSwish (opset 17) x19", ...)``: each unsupported op once, with its count."""
    counts = Counter(p.label for p in problems)
    return tuple(f"{label} x{n}" if n > 1 else label for label, n in counts.items())


def _problems_text(problems: list[_Problem]) -> str:
    details = "; ".join(p.detail for p in problems[:6])
    more = f"; and {len(problems) - 6} more" if len(problems) > 6 else ""
    return f"unsupported ops: {', '.join(_problem_labels(problems))} [{details}{more}]"


def _opaque_graph(
    proto: onnx.ModelProto,
    input_node: Node,
    has_batch: bool,
    problems: list[_Problem],
    path: Path,
) -> LayerGraph:
    """The model as one ``Opaque`` node run by onnx2torch, when the layer graph lacks ops.

    A trailing Softmax/Sigmoid/LogSoftmax is kept aside as for every model. Refused (with
    every unsupported op listed) when onnx2torch cannot convert the model either.
    """
    from audit_core.torch_module import opaque_module

    logits_name, activation = _logits_output(proto)
    try:
        module = opaque_module(proto, logits_name, input_node.shape, has_batch)
        with torch.no_grad():
            classes = module(torch.zeros((2, *input_node.shape), dtype=torch.float64)).shape[1]
    except Exception as error:  # onnx2torch raises many types for models it cannot convert
        first = (str(error).strip().splitlines() or [""])[0]
        raise ModelLoadError(
            f"{path}: {_problems_text(problems)}; onnx2torch cannot convert the model either "
            f"({type(error).__name__}: {first})"
        ) from error
    params = sum(int(np.prod(i.dims)) for i in proto.graph.initializer)
    layer = Opaque(
        module=module,
        missing=_problem_labels(problems),
        details=tuple(p.detail for p in problems),
        parameters=params,
    )
    node = Node("onnx2torch", layer, (0,), (int(classes),), (), logits_name)
    return LayerGraph((input_node, node), activation, path.stem)


_ACTIVATION_OPS = {"Softmax": "softmax", "LogSoftmax": "log_softmax", "Sigmoid": "sigmoid"}


def _logits_output(proto: onnx.ModelProto) -> tuple[str, str | None]:
    """The tensor holding the logits: the graph output, or the input of a final
    Softmax/LogSoftmax/Sigmoid (then also that activation's name)."""
    output = proto.graph.output[0].name
    last = next((n for n in proto.graph.node if output in n.output), None)
    if last is not None and last.op_type in _ACTIVATION_OPS and len(proto.graph.node) > 1:
        return last.input[0], _ACTIVATION_OPS[last.op_type]
    return output, None


def _finish(nodes: list[Node], output: int, path: Path) -> LayerGraph:
    nodes = prune(nodes, output)
    last = nodes[-1]
    if isinstance(last.layer, Softmax) and int(np.prod(last.shape)) != last.shape[last.layer.axis]:
        # the output activation is a softmax over all the logits; this one is per row
        raise ModelLoadError(
            f"{path}: unsupported ops: Softmax over axis {last.layer.axis} of an output of "
            f"per-sample shape {list(last.shape)} [{last.name}]"
        )
    activation = None
    for name, layer_type in _OUTPUT_ACTIVATIONS.items():
        if isinstance(nodes[-1].layer, layer_type) and len(nodes) > 2:
            activation = "log_softmax" if getattr(nodes[-1].layer, "log", False) else name
            nodes = nodes[:-1]
            break
    misplaced = [n.name for n in nodes if isinstance(n.layer, Softmax)]
    if misplaced:
        raise ModelLoadError(
            f"{path}: unsupported ops: Softmax is only supported as the model's last op "
            f"[{', '.join(misplaced)}]"
        )
    return LayerGraph(tuple(fuse_affine(nodes)), activation, path.stem)
