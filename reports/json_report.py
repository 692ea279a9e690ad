"""The JSON report: an ``AuditReport`` as plain JSON, versioned by a JSON Schema.

Numbers stay numbers; a NaN or infinite float is written as ``null`` (the
document is strict JSON, ``allow_nan=False``); a lone surrogate in a string, which
UTF-8 cannot carry, is written as U+FFFD. Keys keep the order of the dataclass fields,
so documents diff well.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import math
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np

from audit_core.findings import PAPERS, Finding, Reference
from audit_core.report_model import AuditReport

from .formatting import encodable

SCHEMA_PATH: Path = Path(__file__).resolve().parent / "schema" / "report-1.0.schema.json"
"""The JSON Schema (draft 2020-12) of the document ``to_dict`` produces."""

JsonValue = None | bool | int | float | str | list[Any] | dict[str, Any]


def to_dict(report: AuditReport) -> dict[str, Any]:
    """The report as a JSON-ready dict (see ``SCHEMA_PATH``), verdict included."""
    return {
        "schema_version": report.schema_version,
        "tool_version": report.tool_version,
        "started_at": report.started_at,
        "finished_at": report.finished_at,
        "seconds": plain(report.seconds),
        "seed": plain(report.seed),
        "command": plain(report.command),
        "fail_on": report.fail_on,
        "verdict": verdict(report),
        "models": plain(report.models),
        "data": plain(report.data),
        "plugins": plain(report.plugins),
        "analyses": plain(report.analyses),
        "findings": [finding_dict(f) for f in report.findings],
        "settings": plain(report.settings),
        "execution": plain(report.execution),
    }


def verdict(report: AuditReport) -> dict[str, Any]:
    """The ``--fail-on`` gate: threshold, outcome, failing finding ids, counts."""
    failures = report.gate_failures()
    return {
        "fail_on": report.fail_on,
        "passed": report.passed,
        "gate_failures": [f.id for f in failures],
        "counts": report.counts(),
    }


def finding_dict(finding: Finding) -> dict[str, Any]:
    """One finding as a dict; references carry the paper's full title."""
    document = plain(finding)
    document["references"] = [reference_dict(r) for r in finding.references]
    return document


def reference_dict(reference: Reference) -> dict[str, Any]:
    """A reference with its paper's title (``None`` for an unknown paper key)."""
    title = PAPERS.get(reference.paper)
    return {"paper": reference.paper, "where": reference.where, "title": title}


def plain(value: Any) -> Any:
    """``value`` as JSON data: dataclasses -> dicts, enums -> values, tuples -> lists,
    numpy scalars/arrays -> Python numbers/lists, NaN/inf -> None; anything else -> str."""
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, set | frozenset):
        return [plain(item) for item in sorted(value, key=repr)]
    return _scalar(value)


def _scalar(value: Any) -> JsonValue:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def render_json(report: AuditReport) -> str:
    """The JSON report as text (indent 2, strict JSON, UTF-8 characters kept; a lone
    surrogate, which UTF-8 cannot carry, becomes U+FFFD)."""
    text = json.dumps(to_dict(report), indent=2, allow_nan=False, ensure_ascii=False)
    return encodable(text) + "\n"


def from_dict(document: Mapping[str, Any]) -> AuditReport:
    """Rebuild the ``AuditReport`` of a JSON report (validated first), e.g. to render another
    format from a saved ``report.json``. Lossy only where JSON is: NaN/inf come back as None,
    and the derived ``verdict`` and reference titles are dropped."""
    validate(document)
    return _build(AuditReport, {k: v for k, v in document.items() if k != "verdict"})


def _build(kind: Any, value: Any) -> Any:
    """``value`` (JSON data) as an instance of the annotated type ``kind``."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (types.UnionType, typing.Union):
        if value is None:
            return None
        classes = [a for a in args if dataclasses.is_dataclass(a)]
        return _build(classes[0], value) if classes else value
    if origin is tuple:
        return tuple(_build(args[0], item) for item in value)
    if origin is dict:
        return {key: _build(args[1], item) for key, item in value.items()}
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return kind(value)
    if dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        return kind(
            **{
                f.name: _build(hints[f.name], value[f.name])
                for f in dataclasses.fields(kind)
                if f.init and f.name in value
            }
        )
    return value


def load_schema() -> dict[str, Any]:
    """The report's JSON Schema, freshly parsed (callers may modify it)."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validate(document: Mapping[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` (the most relevant error) if ``document``
    does not conform to the report schema."""
    error = jsonschema.exceptions.best_match(_validator().iter_errors(document))
    if error is not None:
        raise error


def validation_errors(document: Mapping[str, Any]) -> list[str]:
    """Every schema violation in ``document``, as ``path: message`` lines (empty if valid)."""
    errors = sorted(_validator().iter_errors(document), key=lambda e: e.json_path)
    return [f"{e.json_path}: {e.message}" for e in errors]
