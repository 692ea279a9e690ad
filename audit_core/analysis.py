"""What an analysis is: requirements, config, and the context it runs in.

An analysis is a subclass of ``Analysis`` registered through the
``audit_register_analyses`` hook. It declares what it needs (``requires``), its
parameters (``Config``, a dataclass with defaults: one config table per
analysis), and implements ``run(ctx)`` returning findings.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from audit_core.attack_budget import ATTACK_KEYS, ATTACKS_TABLE, MinimalAttackConfig
from audit_core.config import Parameter, build_table, table_parameters
from audit_core.config import check_config as check_config  # re-exported for plugins
from audit_core.errors import ConfigError
from audit_core.findings import (
    RUN_WIDE,
    Evidence,
    Finding,
    Method,
    Metric,
    Reference,
    Severity,
    Status,
    finding_id,
)
from audit_core.memory import MemoryNeed
from audit_core.settings import Settings

if TYPE_CHECKING:  # type-only: listing plugins (``audit plugins``) must not import torch
    import torch

    from audit_core.attack_service import AttackService
    from audit_core.data import AuditData
    from audit_core.executor import Executor
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
    layer_graph: bool = True
    """Needs the model's layers (linearisation, bounds, weights); ``False`` for analyses
    that only use forward and backward passes (``ctx.model.module``, ``graph.forward``), which
    also run on models with ops the layer graph lacks (loaded through onnx2torch)."""

    def unmet(self, model: AuditedModel, data: AuditData | None, model_count: int) -> str | None:
        """Why the analysis cannot run on ``model``, or None when it can."""
        graph = model.graph
        if self.data and data is None:
            return "needs audit data: pass --data FILE"
        if model_count < self.min_models:
            return f"needs at least {self.min_models} models in one run (got {model_count})"
        if self.layer_graph and graph.missing_ops:
            return (
                f"needs the layer graph, which lacks {', '.join(graph.missing_ops)} "
                "(the model runs through onnx2torch only)"
            )
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


class ProgressCallback:
    """Turns the cumulative "units done" a long computation reports (the attack service's
    search, ``progress=`` of the core's algorithms) into ``Progress.advance`` steps."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.done: float = 0

    def __call__(self, units: float) -> None:
        if units > self.done:
            self.progress.advance(units - self.done)
            self.done = units


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
    attacks: AttackService
    """The run's attack service for this model: ``attacks.minimal(norm, progress)`` is the
    one cached minimal-norm search per norm, with the run's ``[attacks]`` budget."""
    executor: Executor = field(default_factory=lambda: _serial())
    """The run's executor (``--workers``, ``--scheduler``): ``executor.map(function, units,
    shared=executor.share(state), progress=..., deadline=...)`` runs independent units
    (batches of samples, pairs) in worker processes or on a Dask cluster, results in unit
    order (see ``audit_core.executor``)."""
    exports: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    @property
    def eps(self) -> tuple[float, ...]:
        """The perturbation budgets to report at (``--eps``, or the documented default)."""
        return self.settings.eps_for(self.data, self.model.graph.input_size)

    @property
    def norm(self) -> str:
        return self.settings.norm

    @property
    def scope(self) -> str:
        """The model key of this run's findings and exports: the model's name, or
        ``RUN_WIDE`` for a ``multi_model`` analysis (its findings are about the model set)."""
        return RUN_WIDE if self.analysis.multi_model else self.model.name

    def progress_callback(self) -> ProgressCallback:
        """A callback for cumulative work units (e.g. ``ctx.attacks.minimal(norm, cb)``)
        that advances ``ctx.progress``."""
        return ProgressCallback(self.progress)

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
        """A ``Finding`` with this analysis, model (``scope``) and references filled in."""
        return Finding(
            id=finding_id(self.analysis.name, check, self.scope),
            analysis=self.analysis.name,
            title=title,
            severity=severity,
            status=status,
            method=method,
            summary=summary,
            model=self.scope,
            metrics=tuple(metrics),
            evidence=evidence or Evidence(),
            references=extra.pop("references", self.analysis.references),
            **extra,
        )


def _serial() -> Executor:
    from audit_core.executor import Executor

    return Executor(1)


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

    def memory_need(
        self,
        model: AuditedModel,
        data: AuditData | None,
        config: Any,
        attacks: MinimalAttackConfig,
    ) -> MemoryNeed | None:
        """The peak memory ``run`` would need on ``model`` with ``config`` (and the run's
        attack budget ``attacks``, for analyses that ask the attack service), estimated
        from shapes before anything is allocated (``audit_core.memory`` has the common
        estimates); the runner skips the analysis up front when it exceeds the memory
        budget. None: nothing large (the default)."""
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
    if analysis.name == ATTACKS_TABLE:
        raise ValueError(f"analysis name {analysis.name!r} is the run's attack budget table")
    if not dataclasses.is_dataclass(analysis.Config):
        raise ValueError(f"{analysis.name}: Config must be a dataclass")
    if type(analysis).run is Analysis.run:
        raise ValueError(f"{analysis.name}: run() is not implemented")
    return analysis


def build_config(analysis: Analysis, values: dict[str, Any], where: str) -> Any:
    """The analysis's ``Config`` from its config table; unknown keys, bad types and
    out-of-range values are usage errors. A key of the run-wide attack budget (``steps``,
    ``restarts``, ...) that the analysis does not have names its new home, ``attacks.KEY``."""
    fields = {f.name for f in dataclasses.fields(analysis.Config)}
    for key in values:
        name = key.replace("-", "_")
        if name not in fields and name in ATTACK_KEYS:
            raise ConfigError(
                f"{where}: {analysis.name}.{key} is not an option of analysis "
                f"{analysis.name!r}: the attack budget is one per run, set {ATTACKS_TABLE}.{name}"
            )
    return build_table(analysis.Config, values, where, analysis.name, f"analysis {analysis.name!r}")


def config_parameters(analysis: Analysis) -> tuple[Parameter, ...]:
    """The ``Config`` fields with their defaults and attribute docstrings."""
    return table_parameters(analysis.Config)
