"""The core's grading helper and histogram helper, shared by every analysis."""

from __future__ import annotations

import math

import numpy as np
import pytest

from audit_core.evidence import histogram
from audit_core.findings import Severity, Status, Threshold
from audit_core.grading import PASSED, Grade, grade, worst


@pytest.mark.parametrize(
    ("value", "status", "severity", "limit"),
    [
        (0.2, Status.FAIL, Severity.HIGH, 0.5),
        (0.5, Status.WARN, Severity.MEDIUM, 0.8),  # meets the fail rule exactly
        (0.79, Status.WARN, Severity.MEDIUM, 0.8),
        (0.8, Status.PASS, Severity.INFO, 0.8),  # a pass names the strictest rule it met
        (1.0, Status.PASS, Severity.INFO, 0.8),
        (math.nan, Status.FAIL, Severity.HIGH, 0.5),  # nothing measured never passes
    ],
)
def test_a_value_below_the_limits_of_a_must_stay_above_rule(value, status, severity, limit):
    judged = grade(value, "robust_accuracy", ">=", fail=0.5, warn=0.8)
    assert judged == Grade(status, severity, Threshold("robust_accuracy", ">=", limit))
    assert judged.passed is (status is Status.PASS)


@pytest.mark.parametrize(
    ("value", "status", "limit"),
    [(0.6, Status.FAIL, 0.5), (0.3, Status.WARN, 0.1), (0.1, Status.PASS, 0.1)],
)
def test_a_value_above_the_limits_of_a_must_stay_below_rule(value, status, limit) -> None:
    judged = grade(value, "non_robust_fraction", "<=", fail=0.5, warn=0.1)
    assert judged.status is status
    assert judged.threshold == Threshold("non_robust_fraction", "<=", limit)


def test_one_sided_rules_and_custom_severities() -> None:
    only_warn = grade(0.7, "flip", "<", warn=0.5, warn_severity=Severity.LOW)
    assert (only_warn.status, only_warn.severity) == (Status.WARN, Severity.LOW)
    assert grade(0.2, "flip", "<", warn=0.5).threshold == Threshold("flip", "<", 0.5)
    broken = grade(3, "violations", "==", fail=0, fail_severity=Severity.CRITICAL)
    assert (broken.status, broken.severity) == (Status.FAIL, Severity.CRITICAL)
    assert grade(0, "violations", "==", fail=0).threshold == Threshold("violations", "==", 0)
    with pytest.raises(ValueError, match="fail or a warn limit"):
        grade(1.0, "x", ">=")


def test_worst_prefers_status_then_severity_then_the_first_given() -> None:
    low_warn = Grade(Status.WARN, Severity.LOW, Threshold("a", "<=", 1.0))
    medium_warn = Grade(Status.WARN, Severity.MEDIUM, Threshold("b", "<=", 1.0))
    fail = Grade(Status.FAIL, Severity.LOW, Threshold("c", "==", 0.0))
    first_pass = Grade(Status.PASS, Severity.INFO, Threshold("d", "<", 1.0))
    assert worst(first_pass, low_warn, medium_warn) is medium_warn
    assert worst(medium_warn, fail) is fail
    assert worst(first_pass, PASSED) is first_pass
    with pytest.raises(ValueError):
        worst()


def test_histogram_keeps_only_finite_values() -> None:
    plot = histogram("h", "Radius", np.array([0.5, np.inf, np.nan, 1.5]), x_label="l2")
    assert plot.kind == "histogram" and plot.y_label == "samples" and plot.x_label == "l2"
    (series,) = plot.series
    assert series.name == "Radius" and series.y == (0.5, 1.5)
    named = histogram("h", "Radius", [1.0], x_label="l2", y_label="points", series="bound")
    assert named.series[0].name == "bound" and named.y_label == "points"
