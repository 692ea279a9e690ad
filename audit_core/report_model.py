"""The data a report is rendered from: run metadata plus findings.

The runner produces one ``AuditReport``; ``audit_reports`` renders it (JSON,
HTML, ...). Nothing here renders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from audit_core.findings import Finding, Severity, Status

REPORT_SCHEMA_VERSION = "1.0"


@dataclass(frozen=True)
class ModelInfo:
    """One audited model as the report shows it."""

    name: str
    path: str
    sha256: str
    input_shape: tuple[int, ...]
    num_outputs: int
    num_classes: int
    parameter_count: int
    opset: int
    producer: str
    piecewise_linear: bool
    layers: tuple[str, ...]
    fidelity: dict[str, float] = field(default_factory=dict)
    accuracy: float | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    torch_source: str = "onnx2torch"


@dataclass(frozen=True)
class DataInfo:
    """The audit data."""

    source: str
    count: int
    sample_shape: tuple[int, ...]
    lower: float
    upper: float
    class_names: tuple[str, ...] = ()
    bounds_source: str = "data"
    labels_from: str = "file"
    """``file`` or ``model predictions`` (no labels given: accuracy is not measured)."""
    clipped_values: int = 0
    """Sample values outside the bounds by float noise, clipped to them."""

    @property
    def labels_note(self) -> str:
        """ "" for real labels, else what the labels are."""
        if self.labels_from == "file":
            return ""
        return "labels are the first model's own predictions (no label file given)"


@dataclass(frozen=True)
class PluginInfo:
    """A loaded plugin: distribution name and version, hooks it implements, analyses."""

    name: str
    version: str
    hooks: tuple[str, ...]
    analyses: tuple[str, ...]
    builtin: bool = False
    error: str = ""


@dataclass(frozen=True)
class AnalysisRun:
    """How one analysis went on one model (or on the model set, for multi-model analyses)."""

    analysis: str
    title: str
    plugin: str
    model: str
    """The model's name; ``RUN_WIDE`` ("") for a run over all models together."""
    outcome: str  # "ran" | "skipped" | "error"
    reason: str = ""
    seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    headline: str = ""
    description: str = ""
    """What the analysis checks (``Analysis.description``), shown in its report section."""
    units: dict[str, int] = field(default_factory=dict)
    """Units of independent work (batches of samples, pairs, searches) run per place: the
    main process, a local worker process, or a Dask worker's address."""


@dataclass(frozen=True)
class AuditReport:
    """Everything one ``audit`` run produced."""

    tool_version: str
    started_at: str
    finished_at: str
    seconds: float
    seed: int
    command: tuple[str, ...]
    settings: dict[str, Any]
    fail_on: str
    models: tuple[ModelInfo, ...]
    data: DataInfo | None
    plugins: tuple[PluginInfo, ...]
    analyses: tuple[AnalysisRun, ...]
    findings: tuple[Finding, ...]
    schema_version: str = REPORT_SCHEMA_VERSION
    execution: dict[str, Any] = field(default_factory=dict)
    """Where the analyses' units ran: executor kind (serial, processes, dask), worker count,
    scheduler address, memory budget per batch (MiB)."""

    def gate_failures(self) -> tuple[Finding, ...]:
        """Findings that fail the ``--fail-on`` gate (empty when ``fail_on`` is ``never``):
        failures at or above the level, and every crashed analysis (an incomplete audit
        never passes a gate)."""
        if self.fail_on == "never":
            return ()
        level = Severity(self.fail_on)
        return tuple(
            f
            for f in self.findings
            if f.status is Status.ERROR or (f.is_failing and f.severity >= level)
        )

    @property
    def analysed(self) -> bool:
        """False when every analysis was skipped (exit code 5): there is nothing to pass."""
        return any(run.outcome in ("ran", "error") for run in self.analyses)

    @property
    def passed(self) -> bool:
        """The gate's outcome: something was analysed and nothing fails the gate."""
        return self.analysed and not self.gate_failures()

    @property
    def verdict_word(self) -> str:
        """``PASSED``, ``FAILED`` or ``NOT ANALYSED`` (every analysis skipped)."""
        if not self.analysed:
            return "NOT ANALYSED"
        return "FAILED" if self.gate_failures() else "PASSED"

    def counts(self) -> dict[str, dict[str, int]]:
        """Number of findings by severity and by status."""
        by_severity = {s.value: 0 for s in Severity}
        by_status = {s.value: 0 for s in Status}
        for finding in self.findings:
            by_severity[finding.severity.value] += 1
            by_status[finding.status.value] += 1
        return {"severity": by_severity, "status": by_status}
