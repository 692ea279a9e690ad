"""Grading: a measured value against fail/warn limits gives status, severity and threshold.

Every analysis that turns a number into a verdict uses this one rule, so that the
status, the severity and the ``Threshold`` a report shows always agree::

    grade(accuracy, "robust_accuracy", ">=", fail=0.5, warn=0.8)

reads "``robust_accuracy >= limit`` must hold": below 0.5 it fails (severity high),
below 0.8 it warns (medium), otherwise it passes. The finding's threshold is the
rule the value broke, or for a pass the strictest rule it met (the warn rule when
there is one). A NaN breaks every rule (fail-closed): an analysis that has nothing
to judge says so and passes explicitly (``PASSED``).
"""

from __future__ import annotations

from dataclasses import dataclass

from audit_core.findings import Severity, Status, Threshold

_STATUS_ORDER = (Status.PASS, Status.WARN, Status.FAIL)


@dataclass(frozen=True)
class Grade:
    """The verdict on one value: ``status``, ``severity`` and the ``threshold`` it came from."""

    status: Status
    severity: Severity
    threshold: Threshold | None = None

    @property
    def passed(self) -> bool:
        return self.status is Status.PASS


PASSED = Grade(Status.PASS, Severity.INFO)
"""A pass with no threshold (nothing was judged)."""


def grade(
    value: float,
    metric: str,
    operator: str,
    *,
    fail: float | None = None,
    warn: float | None = None,
    fail_severity: Severity = Severity.HIGH,
    warn_severity: Severity = Severity.MEDIUM,
) -> Grade:
    """Judge ``value`` by the rule ``metric operator limit`` (the condition that must hold).

    The rule broken at ``fail`` gives ``FAIL`` with ``fail_severity``; else the rule broken
    at ``warn`` gives ``WARN`` with ``warn_severity``; else ``PASS`` (severity info). Either
    limit may be None (not checked); at least one must be given.
    """
    if fail is None and warn is None:
        raise ValueError("grade() needs a fail or a warn limit")
    rules = (
        (fail, Status.FAIL, fail_severity),
        (warn, Status.WARN, warn_severity),
    )
    for limit, status, severity in rules:
        if limit is not None and not Threshold(metric, operator, limit).holds(value):
            return Grade(status, severity, Threshold(metric, operator, limit))
    strictest = warn if warn is not None else fail
    return Grade(Status.PASS, Severity.INFO, Threshold(metric, operator, strictest))


def worst(*grades: Grade) -> Grade:
    """The grade that matters most: the highest status, then the highest severity; on a tie
    (and when everything passed) the first one given."""
    if not grades:
        raise ValueError("worst() needs at least one grade")
    return max(grades, key=lambda g: (_STATUS_ORDER.index(g.status), g.severity.rank))
