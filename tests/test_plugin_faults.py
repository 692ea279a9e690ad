"""A plugin's analysis that misbehaves without raising: it returns objects that are not
its findings, returns nothing, or writes to stdout / stderr. Each is an error finding for
that analysis; the audit finishes with its report and the other analyses' findings."""

from __future__ import annotations

import sys

import pytest

from audit_core.analysis import Analysis, Requirements
from audit_core.findings import Method, Severity, Status
from audit_core.hookspecs import hookimpl


class Faulty:
    """A plugin whose one analysis misbehaves as ``Faulty.kind`` says."""

    kind = "none"

    @staticmethod
    @hookimpl
    def audit_register_analyses(register):
        register(_FaultyAnalysis())


class _FaultyAnalysis(Analysis):
    name = "faulty"
    requires = Requirements(data=False)

    def run(self, ctx):
        kind = Faulty.kind
        real = ctx.finding(
            "ok", title="fine", status=Status.PASS, severity=Severity.INFO,
            method=Method.EMPIRICAL, summary="A real finding.",
        )  # fmt: skip
        if kind == "prints":
            print("debug: hello from the plugin")
            print("and a warning", file=sys.stderr)
            return [real]
        if kind == "none":
            return None
        if kind == "empty":
            return []
        return ["not a finding", {"id": 3}, real]


CASES = {
    "prints": ("wrote to stdout/stderr (2 lines: 'debug: hello from the plugin')", 1),
    "none": ("returned no findings", 0),
    "empty": ("returned no findings", 0),
    "junk": ("returned 2 object(s) that are not findings of 'faulty' (dict, str)", 1),
}


@pytest.mark.parametrize("isolate", ["plugins", "none"])
@pytest.mark.parametrize("kind", sorted(CASES))
def test_a_misbehaving_analysis_is_an_error_finding(
    run_audit, tiny_model, audit_register_plugin, kind, isolate
) -> None:
    """The same in the plugin's own process (the default) and in the audit's."""
    Faulty.kind = kind
    audit_register_plugin(Faulty, "faulty")
    run = run_audit(tiny_model, "--skip", "kkt", "--isolate", isolate)
    assert run.exit_code == 1, run.stderr
    assert "hello" not in run.stdout and "warning" not in run.stderr
    reason, kept = CASES[kind]
    findings = [f for f in run.report["findings"] if f["analysis"] == "faulty"]
    faults = [f for f in findings if f["status"] == "error"]
    assert len(faults) == 1 and reason in faults[0]["summary"], faults
    assert len(findings) == 1 + kept  # the real finding it returned is kept
    (analysis,) = [a for a in run.report["analyses"] if a["analysis"] == "faulty"]
    assert analysis["outcome"] == "error" and reason in analysis["reason"]
    assert any(f["analysis"] == "attack-bound" for f in run.report["findings"])


class _BadCheck(Analysis):
    name = "bad-check"
    requires = Requirements(data=False)
    where = "check"

    def check(self, model, data):
        if self.where == "check":
            raise ValueError("the check broke")
        return None

    def memory_need(self, model, data, config, attacks):
        raise ValueError("the estimate broke")

    def run(self, ctx):
        return []


class BadCheckPlugin:
    @staticmethod
    @hookimpl
    def audit_register_analyses(register):
        register(_BadCheck())


@pytest.mark.parametrize("where", ["check", "memory_need"])
def test_a_raising_check_or_memory_estimate_is_an_error_finding(
    run_audit, tiny_model, audit_register_plugin, where
) -> None:
    """Plugin code the runner calls before ``run`` (in the audit's process): its exception
    is the analysis's error finding; the other analyses run; ``--strict`` stops (exit 3)."""
    _BadCheck.where = where
    audit_register_plugin(BadCheckPlugin, "bad-check")
    run = run_audit(tiny_model, "--only", "bad-check,attack-bound")
    assert run.exit_code == 1, run.stderr
    (analysis,) = [a for a in run.report["analyses"] if a["analysis"] == "bad-check"]
    assert analysis["outcome"] == "error"
    assert "broke" in analysis["reason"]
    assert any(f["analysis"] == "attack-bound" for f in run.report["findings"])
    strict = run_audit(tiny_model, "--only", "bad-check", "--strict", "--out", "strict")
    assert strict.exit_code == 3
    assert "crashed checking" in strict.stderr and "Traceback" not in strict.stderr
