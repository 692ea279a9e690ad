"""Converter registry keyed by (domain, op_type, opset range).

Each op family lives in its own module of ``audit_core.onnx_import.ops`` and registers
its converters with ``@converter``; ``load_converters`` imports every such module once.
A converter receives the ONNX node (``OnnxNode``) and the ``GraphBuilder`` and returns
one ``Value`` per node output it defines. Two converters for the same op whose opset
ranges overlap are an error at registration.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from audit_core.onnx_import.builder import GraphBuilder

MAX_OPSET = 10_000


@dataclass(frozen=True)
class TensorRef:
    """A runtime tensor: the output of builder node ``index``, per-sample ``shape``."""

    index: int
    shape: tuple[int, ...]


Value = TensorRef | np.ndarray
"""A converter input/output: a runtime tensor or a constant array."""


class Unsupported(Exception):
    """A node the importer cannot represent; collected, then reported all together."""


class TrainingMode(Unsupported):
    """A training-mode node (BatchNormalization over batch statistics, random Dropout): the
    model's output is not a function of one sample. Such a model is refused even when
    onnx2torch converts it, since onnx2torch ignores the training flag (it would compute
    the inference-mode model, not what onnxruntime runs)."""


@dataclass(frozen=True)
class OnnxNode:
    """An ONNX node with its inputs resolved to ``Value``s (``None`` for empty inputs)."""

    name: str
    op_type: str
    domain: str
    opset: int
    inputs: tuple[Value | None, ...]
    input_names: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any]

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def tensor(self, position: int) -> TensorRef:
        value = self.inputs[position] if position < len(self.inputs) else None
        if not isinstance(value, TensorRef):
            raise Unsupported(f"{self.op_type} needs a runtime tensor as input {position}")
        return value

    def constant(self, position: int, default: np.ndarray | None = None) -> np.ndarray | None:
        value = self.inputs[position] if position < len(self.inputs) else None
        if value is None:
            return default
        if isinstance(value, TensorRef):
            raise Unsupported(
                f"{self.op_type} input {position} ({self.input_names[position]}) must be a "
                "constant (initializer or Constant), not a runtime tensor"
            )
        return value


Converter = Callable[[OnnxNode, "GraphBuilder"], list[Value]]


@dataclass(frozen=True)
class _Entry:
    since: int
    until: int
    function: Converter


_REGISTRY: dict[tuple[str, str], list[_Entry]] = {}


def converter(
    *op_types: str, domain: str = "", opsets: tuple[int, int] = (1, MAX_OPSET)
) -> Callable[[Converter], Converter]:
    """Register ``function`` for ``op_types`` in ``domain`` for opsets ``since..until``."""

    since, until = opsets
    if since > until:
        raise ValueError(f"opset range {opsets} is empty")

    def register(function: Converter) -> Converter:
        for op_type in op_types:
            entries = _REGISTRY.setdefault((domain, op_type), [])
            for entry in entries:
                if entry.since <= until and since <= entry.until and entry.function is not function:
                    raise ValueError(
                        f"two converters for {domain or 'ai.onnx'}::{op_type} at opsets "
                        f"{max(since, entry.since)}-{min(until, entry.until)}: "
                        f"{entry.function.__module__}.{entry.function.__name__} and "
                        f"{function.__module__}.{function.__name__}"
                    )
            if not any(e.function is function for e in entries):
                entries.append(_Entry(since, until, function))
        return function

    return register


_LOADED: list[bool] = []


def load_converters() -> None:
    """Import every op-family module of ``audit_core.onnx_import.ops`` (once)."""
    if _LOADED:
        return
    from audit_core.onnx_import import ops

    for module in pkgutil.iter_modules(ops.__path__):
        importlib.import_module(f"{ops.__name__}.{module.name}")
    _LOADED.append(True)


def find_converter(domain: str, op_type: str, opset: int) -> Converter | None:
    """The converter for this op at this opset, or None."""
    load_converters()
    domain = "" if domain == "ai.onnx" else domain
    for entry in _REGISTRY.get((domain, op_type), []):
        if entry.since <= opset <= entry.until:
            return entry.function
    return None


def supported_ops() -> list[str]:
    """Sorted op types with at least one converter (for docs and error messages)."""
    load_converters()
    return sorted({op for (_, op) in _REGISTRY})
