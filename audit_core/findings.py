"""The ``Finding``: what every analysis returns, and what every report renders.

Passing checks are findings too. Plots travel as data (``Plot``); only
``audit_reports`` turns them into SVG.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class Severity(enum.Enum):
    """How much a failing finding matters. Ordered: ``INFO < ... < CRITICAL``."""

    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_ORDER.index(self)

    def __ge__(self, other: Severity) -> bool:
        return self.rank >= other.rank

    def __gt__(self, other: Severity) -> bool:
        return self.rank > other.rank

    def __le__(self, other: Severity) -> bool:
        return self.rank <= other.rank

    def __lt__(self, other: Severity) -> bool:
        return self.rank < other.rank


_SEVERITY_ORDER = list(Severity)


class Status(enum.Enum):
    """Outcome of a check."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    ERROR = "error"
    SKIPPED = "skipped"


class Method(enum.Enum):
    """How a finding was established."""

    CERTIFIED = "certified"
    """A proven bound, computed soundly (float64, with a stated margin)."""
    EMPIRICAL = "empirical"
    """Measured: attacks, sampling, training. An upper bound or an estimate."""
    THEOREM = "theorem"
    """A theorem's conclusion, with the assumptions that were checked listed."""


@dataclass(frozen=True)
class Metric:
    """One named number (or flag/label) with its unit."""

    name: str
    value: float | int | bool | str | None
    unit: str = ""
    description: str = ""


@dataclass(frozen=True)
class Threshold:
    """The rule a metric was judged against, e.g. ``undecided_fraction <= 0.1``."""

    metric: str
    operator: str
    value: float

    def __post_init__(self) -> None:
        if self.operator not in ("<", "<=", ">", ">=", "=="):
            raise ValueError(f"unknown threshold operator {self.operator!r}")

    def holds(self, value: float) -> bool:
        ops = {
            "<": value < self.value,
            "<=": value <= self.value,
            ">": value > self.value,
            ">=": value >= self.value,
            "==": value == self.value,
        }
        return ops[self.operator]


@dataclass(frozen=True)
class Reference:
    """Where a result comes from: a paper (key in ``PAPERS``) and a theorem/section."""

    paper: str
    where: str = ""


PAPERS: dict[str, str] = {
    "singla2019": "Singla & Feizi, Robustness Certificates Against Adversarial Examples "
    "for ReLU Networks (2019)",
    "charles2019": "Charles, Rosenberg & Papailiopoulos, A Geometric Perspective on the "
    "Transferability of Adversarial Directions (2019)",
    "feature-extractor-lower-bounds": "Lower Bounds on Adversarial Robustness for "
    "Fixed Feature Extractors",
    "vardi2022": "Vardi, Yehudai & Shamir, Gradient Methods Provably Converge to "
    "Non-Robust Networks (2022)",
    "madry2018": "Madry et al., Towards Deep Learning Models Resistant to Adversarial "
    "Attacks (2018)",
    "moosavi2016": "Moosavi-Dezfooli, Fawzi & Frossard, DeepFool (2016)",
    "zhang2018crown": "Zhang et al., Efficient Neural Network Robustness Certification "
    "with General Activation Functions (CROWN, 2018)",
    "xu2021alpha": "Xu et al., Fast and Complete: Enabling Complete Neural Network "
    "Verification with Rapid and Massively Parallel Incomplete Verifiers (alpha-CROWN, 2021)",
    "wang2021beta": "Wang et al., Beta-CROWN: Efficient Bound Propagation with Per-neuron "
    "Split Constraints for Complete and Incomplete Neural Network Verification (2021)",
    "bunel2020branch": "Bunel et al., Branch and Bound for Piecewise Linear Neural Network "
    "Verification (2020)",
}


@dataclass(frozen=True)
class Assumption:
    """An assumption of a theorem: checked (``holds`` True/False) or not (``None``)."""

    name: str
    holds: bool | None
    detail: str = ""


@dataclass(frozen=True)
class SampleSummary:
    """A per-sample array, summarised (the full array goes to ``--export``)."""

    name: str
    count: int
    minimum: float | None
    median: float | None
    mean: float | None
    maximum: float | None
    unit: str = ""


@dataclass(frozen=True)
class Example:
    """One sample shown as evidence (e.g. a worst case).

    ``images`` maps a caption ("input", "adversarial", "perturbation") to a 2-D
    array, for image-shaped inputs; reports draw them side by side.
    """

    index: int
    label: int | None
    values: dict[str, float | int | str | None] = field(default_factory=dict)
    images: dict[str, tuple[tuple[float, ...], ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Series:
    """One curve (``x``, ``y``), or one set of values for a histogram (``y`` only)."""

    name: str
    y: tuple[float | None, ...]
    x: tuple[float | None, ...] = ()
    style: str = "line"


@dataclass(frozen=True)
class Plot:
    """Plot data. ``kind`` is ``xy``, ``histogram`` or ``heatmap``."""

    id: str
    title: str
    kind: str = "xy"
    x_label: str = ""
    y_label: str = ""
    series: tuple[Series, ...] = ()
    matrix: tuple[tuple[float | None, ...], ...] = ()
    row_labels: tuple[str, ...] = ()
    col_labels: tuple[str, ...] = ()
    log_x: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("xy", "histogram", "heatmap"):
            raise ValueError(f"unknown plot kind {self.kind!r}")


@dataclass(frozen=True)
class Evidence:
    """What backs a finding: summaries, worst examples, plots, artifact files, notes."""

    summaries: tuple[SampleSummary, ...] = ()
    examples: tuple[Example, ...] = ()
    plots: tuple[Plot, ...] = ()
    artifacts: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


RUN_WIDE = ""
"""The model key of a finding, run and export about all models of the run together (a
``multi_model`` analysis such as model-transfer): no one model's name."""

RUN_WIDE_LABEL = "all models"
"""How reports show ``RUN_WIDE``."""


def model_label(model: str) -> str:
    """A finding's or run's model as reports show it: the name, or "all models"."""
    return RUN_WIDE_LABEL if model == RUN_WIDE else model


def finding_id(analysis: str, check: str, model: str) -> str:
    """``analysis/check/model``; ``analysis/check`` for a run-wide finding."""
    return f"{analysis}/{check}" if model == RUN_WIDE else f"{analysis}/{check}/{model}"


@dataclass(frozen=True)
class Finding:
    """One result of one analysis on one model (``model``: its name, or ``RUN_WIDE`` for a
    finding about all models of the run). Passing checks are findings too."""

    id: str
    analysis: str
    title: str
    severity: Severity
    status: Status
    method: Method
    summary: str
    model: str = ""
    metrics: tuple[Metric, ...] = ()
    threshold: Threshold | None = None
    evidence: Evidence = Evidence()
    remediation: str = ""
    references: tuple[Reference, ...] = ()
    assumptions: tuple[Assumption, ...] = ()
    traceback: str = ""

    def __post_init__(self) -> None:
        for name, kind in (("severity", Severity), ("status", Status), ("method", Method)):
            if not isinstance(getattr(self, name), kind):
                raise TypeError(f"Finding.{name} must be a {kind.__name__}")
        if not self.id or not self.analysis:
            raise ValueError("Finding.id and Finding.analysis must not be empty")

    def metric(self, name: str) -> Metric:
        """The metric called ``name`` (KeyError if absent)."""
        for metric in self.metrics:
            if metric.name == name:
                return metric
        raise KeyError(name)

    @property
    def is_failing(self) -> bool:
        """Failing for gating purposes: a failed check, or a check that could not run."""
        return self.status in (Status.FAIL, Status.ERROR)


def as_number(value: Any) -> float | int | bool | str | None:
    """A JSON-safe scalar: numpy scalars become Python numbers, NaN/inf become None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def summarize(name: str, values: Sequence[float] | np.ndarray, unit: str = "") -> SampleSummary:
    """Summarise a per-sample array, ignoring non-finite entries."""
    array = np.asarray(values, dtype=np.float64).ravel()
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        return SampleSummary(name, int(array.size), None, None, None, None, unit)
    return SampleSummary(
        name=name,
        count=int(array.size),
        minimum=float(finite.min()),
        median=float(np.median(finite)),
        mean=float(finite.mean()),
        maximum=float(finite.max()),
        unit=unit,
    )


def floats(values: Iterable[Any]) -> tuple[float | None, ...]:
    """A tuple of JSON-safe floats (NaN/inf become None) for plot series."""
    return tuple(as_number(float(v)) for v in np.asarray(list(values), dtype=np.float64))


def image_rows(image: np.ndarray) -> tuple[tuple[float, ...], ...]:
    """A 2-D array as nested tuples, for ``Example.images``."""
    return tuple(tuple(float(v) for v in row) for row in np.asarray(image, dtype=np.float64))


def error_finding(
    analysis: str,
    model: str,
    check: str,
    *,
    title: str,
    summary: str,
    remediation: str,
    notes: tuple[str, ...] = (),
    traceback: str = "",
) -> Finding:
    """The ``error`` finding the runner records for an analysis that crashed, timed out or
    misbehaved (severity high: an incomplete audit fails every gate but ``never``)."""
    return Finding(
        id=finding_id(analysis, check, model),
        analysis=analysis,
        title=title,
        severity=Severity.HIGH,
        status=Status.ERROR,
        method=Method.EMPIRICAL,
        summary=summary,
        model=model,
        evidence=Evidence(notes=notes),
        remediation=remediation,
        traceback=traceback,
    )
