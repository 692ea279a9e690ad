"""What an analysis is: requirements, config, and the context it runs in.

An analysis is a subclass of ``Analysis`` registered through the
``audit_register_analyses`` hook. It declares what it needs (``requires``), its
parameters (``Config``, a dataclass with defaults: one config table per
analysis), and implements ``run(ctx)`` returning findings.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from audit_core.errors import ConfigError
from audit_core.findings import (
    Evidence,
    Finding,
    Method,
    Metric,
    Reference,
    Severity,
    Status,
)
from audit_core.settings import Settings

if TYPE_CHECKING:  # type-only: listing plugins (``audit plugins``) must not import torch
    import torch

    from audit_core.data import AuditData
    from audit_core.model import AuditedModel

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


@dataclass(frozen=True)
class Requirements:
    """What an analysis needs from the model(s) and data; the runner skips the rest."""

    data: bool = True
    piecewise_linear: bool = False
    dense_depth: int | None = None
    """Exact number of affine layers of a plain affine/ReLU chain (2 = one hidden layer)."""
    binary: bool = False
    """Two classes (one logit, or two logits)."""
    min_models: int = 1

    def unmet(self, model: AuditedModel, data: AuditData | None, model_count: int) -> str | None:
        """Why the analysis cannot run on ``model``, or None when it can."""
        graph = model.graph
        if self.data and data is None:
            return "needs audit data: pass --data FILE"
        if model_count < self.min_models:
            return f"needs at least {self.min_models} models in one run (got {model_count})"
        if self.piecewise_linear and not graph.is_piecewise_linear:
            ops = sorted({n.layer.op for n in graph.nodes if n.layer.kind.value == "nonlinear"})
            return f"needs a piecewise-linear model ({', '.join(ops)} inside)"
        if self.binary and graph.num_classes != 2:
            return f"needs a binary classifier (the model has {graph.num_classes} classes)"
        if self.dense_depth is not None and model.relu_depth() != self.dense_depth:
            return _depth_reason(self.dense_depth, model)
        return None


def _depth_reason(wanted: int, model: AuditedModel) -> str:
    depth = model.relu_depth()
    if depth is None:
        return f"needs a plain affine/ReLU chain of depth {wanted} (the model is not such a chain)"
    return f"needs a depth-{wanted} affine/ReLU network (the model has depth {depth})"


@dataclass(frozen=True)
class NoConfig:
    """An analysis without parameters."""


class Progress(Protocol):
    """Progress of one analysis, shown by the console UI."""

    def total(self, units: float) -> None: ...

    def advance(self, units: float = 1) -> None: ...

    def note(self, text: str) -> None: ...


class SilentProgress:
    """A progress handle that shows nothing (tests, --quiet)."""

    def total(self, units: float) -> None:
        pass

    def advance(self, units: float = 1) -> None:
        pass

    def note(self, text: str) -> None:
        pass


@dataclass
class AuditContext:
    """Everything one analysis run gets. ``model`` is the model under audit;
    ``models`` all models of the run (for multi-model analyses)."""

    analysis: Analysis
    model: AuditedModel
    models: tuple[AuditedModel, ...]
    data: AuditData | None
    config: Any
    settings: Settings
    rng: np.random.Generator
    generator: torch.Generator
    progress: Progress
    attacks: Any
    exports: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    @property
    def eps(self) -> tuple[float, ...]:
        """The perturbation budgets to report at (``--eps``, or the documented default)."""
        return self.settings.eps_for(self.data, self.model.graph.input_size)

    @property
    def norm(self) -> str:
        return self.settings.norm

    def export(self, name: str, **arrays: np.ndarray) -> None:
        """Arrays for ``--export DIR`` (written to ``DIR/<name>.npz``)."""
        self.exports[name] = {k: np.asarray(v) for k, v in arrays.items()}

    def finding(
        self,
        check: str,
        *,
        title: str,
        status: Status,
        severity: Severity,
        method: Method,
        summary: str,
        metrics: Iterable[Metric] = (),
        evidence: Evidence | None = None,
        **extra: Any,
    ) -> Finding:
        """A ``Finding`` with this analysis, model and references filled in."""
        return Finding(
            id=f"{self.analysis.name}/{check}/{self.model.name}",
            analysis=self.analysis.name,
            title=title,
            severity=severity,
            status=status,
            method=method,
            summary=summary,
            model=self.model.name,
            metrics=tuple(metrics),
            evidence=evidence or Evidence(),
            references=extra.pop("references", self.analysis.references),
            **extra,
        )


class Analysis:
    """Base class of every analysis (built-in or third-party)."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    tags: ClassVar[tuple[str, ...]] = ()
    references: ClassVar[tuple[Reference, ...]] = ()
    requires: ClassVar[Requirements] = Requirements()
    Config: ClassVar[type] = NoConfig
    multi_model: ClassVar[bool] = False
    """Run once over all models (``ctx.models``) instead of once per model."""

    def check(self, model: AuditedModel, data: AuditData | None) -> str | None:
        """Extra applicability test beyond ``requires``: a skip reason, or None."""
        return None

    def run(self, ctx: AuditContext) -> Iterable[Finding]:
        raise NotImplementedError

    def headline(self, findings: tuple[Finding, ...]) -> str:
        """One line for the report's first screen (default: the first finding's summary)."""
        return findings[0].summary if findings else ""


def validate_analysis(analysis: Any) -> Analysis:
    """Check an object passed to ``register``; raise ``ValueError`` with the reason."""
    if isinstance(analysis, type) and issubclass(analysis, Analysis):
        analysis = analysis()
    if not isinstance(analysis, Analysis):
        raise ValueError(f"{analysis!r} is not an audit_core.analysis.Analysis")
    if not NAME_PATTERN.match(analysis.name or ""):
        raise ValueError(f"analysis name {analysis.name!r} must be lower-case words joined by '-'")
    if not dataclasses.is_dataclass(analysis.Config):
        raise ValueError(f"{analysis.name}: Config must be a dataclass")
    if type(analysis).run is Analysis.run:
        raise ValueError(f"{analysis.name}: run() is not implemented")
    return analysis


def build_config(analysis: Analysis, values: dict[str, Any], where: str) -> Any:
    """The analysis's ``Config`` from a config table; unknown keys and bad types are errors."""
    fields = {f.name: f for f in dataclasses.fields(analysis.Config)}
    normalised = {key.replace("-", "_"): value for key, value in values.items()}
    unknown = sorted(set(normalised) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields)) or "none"
        raise ConfigError(
            f"{where}: unknown option {unknown[0]!r} for analysis {analysis.name!r} "
            f"(known: {known})"
        )
    defaults = analysis.Config()
    coerced = {
        key: _coerce(value, getattr(defaults, key), f"{where}: {analysis.name}.{key}")
        for key, value in normalised.items()
    }
    try:
        return dataclasses.replace(defaults, **coerced)
    except ValueError as error:  # a Config's own checks (``check_config``)
        raise ConfigError(f"{where}: {analysis.name}.{error}") from error


def check_config(
    config: Any,
    *,
    minimum: dict[str, float] | None = None,
    positive: tuple[str, ...] = (),
    fractions: tuple[str, ...] = (),
    choices: dict[str, tuple[str, ...]] | None = None,
) -> None:
    """Range checks for a ``Config.__post_init__``: ``ValueError("field ...")`` on the
    first bad value (``build_config`` turns it into a usage error naming the key).

    ``minimum``: field -> smallest allowed value (every element for tuples);
    ``positive``: > 0; ``fractions``: in [0, 1]; ``choices``: field -> allowed strings
    (every element for tuples).
    """

    def values(name: str) -> tuple[Any, ...]:
        value = getattr(config, name)
        return tuple(value) if isinstance(value, tuple) else (value,)

    def numbers(name: str) -> tuple[float, ...]:
        try:  # tuples with an empty default keep -o's strings
            return tuple(float(v) for v in values(name))
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be numbers, got {getattr(config, name)!r}") from None

    for name, low in (minimum or {}).items():
        if any(v < low for v in numbers(name)):
            raise ValueError(f"{name} must be at least {low:g}, got {getattr(config, name)!r}")
    for name in positive:
        if any(v <= 0 for v in numbers(name)):
            raise ValueError(f"{name} must be positive, got {getattr(config, name)!r}")
    for name in fractions:
        if any(not 0.0 <= v <= 1.0 for v in numbers(name)):
            raise ValueError(f"{name} must be between 0 and 1, got {getattr(config, name)!r}")
    for name, allowed in (choices or {}).items():
        if any(v not in allowed for v in values(name)):
            raise ValueError(
                f"{name} must be one of {', '.join(allowed)}, got {getattr(config, name)!r}"
            )


def _coerce(value: Any, default: Any, where: str) -> Any:
    """``value`` converted to the type of ``default``; strings (from ``-o``) are parsed."""
    if default is None:
        return value
    converted = _convert_like(value, default)
    if converted is None:
        raise ConfigError(f"{where} must be {type(default).__name__}, got {value!r}")
    return converted


def _convert_like(value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        return None
    if isinstance(default, int | float):
        return _number_like(value, type(default))
    if isinstance(default, str):
        return value if isinstance(value, str) else None
    if isinstance(default, tuple):
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            return None
        converted = [_convert_like(v, default[0]) if default else v for v in items]
        return None if any(v is None for v in converted) else tuple(converted)
    return value if isinstance(value, type(default)) else None


def _number_like(value: Any, kind: type) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, int | float):
        return None
    if kind is int and float(value) != int(value):
        return None
    return kind(value)


@dataclass(frozen=True)
class Parameter:
    """One parameter of an analysis's ``Config`` (``audit plugins`` lists them)."""

    name: str
    default: Any
    doc: str


def config_parameters(analysis: Analysis) -> tuple[Parameter, ...]:
    """The ``Config`` fields with their defaults and attribute docstrings (the string
    literal written under a field, as in the built-in plugins; "" when there is none)."""
    defaults = analysis.Config()
    docs = _attribute_docstrings(analysis.Config)
    return tuple(
        Parameter(f.name, getattr(defaults, f.name), docs.get(f.name, ""))
        for f in dataclasses.fields(analysis.Config)
    )


def _attribute_docstrings(cls: type) -> dict[str, str]:
    """``{field: docstring}`` from the class source; {} when the source is unavailable."""
    import ast
    import inspect
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for node, after in itertools.pairwise(body):
        documented = isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and documented:
            docs[node.target.id] = " ".join(str(after.value.value).split())
    return docs
