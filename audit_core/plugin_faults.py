"""What a plugin's analysis may get wrong besides raising: returning objects that are not
its findings, returning nothing, or writing to stdout / stderr (which belong to the
CLI: its summary, and errors as one line). Each becomes one error finding for the
analysis; the findings it did return correctly are kept.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from audit_core.findings import Finding, error_finding


@dataclass
class CapturedOutput:
    """What an analysis wrote to ``sys.stdout`` and ``sys.stderr``."""

    stdout: io.StringIO = field(default_factory=io.StringIO)
    stderr: io.StringIO = field(default_factory=io.StringIO)

    def text(self) -> str:
        return (self.stdout.getvalue() + self.stderr.getvalue()).strip()


@contextlib.contextmanager
def captured_output() -> Iterator[CapturedOutput]:
    """Python-level writes to stdout and stderr inside the block, kept off the terminal."""
    output = CapturedOutput()
    with contextlib.redirect_stdout(output.stdout), contextlib.redirect_stderr(output.stderr):
        yield output


def checked_findings(
    analysis: str, title: str, model: str, returned: Iterable[object] | None, output: str
) -> tuple[list[Finding], str]:
    """The analysis's own findings among ``returned``, plus one error finding naming what
    was wrong (and that reason; "" when nothing was)."""
    items = list(returned) if returned is not None else []
    valid = [f for f in items if isinstance(f, Finding) and f.analysis == analysis]
    problems = []
    if len(valid) < len(items):
        kinds = sorted({type(f).__name__ for f in items if f not in valid})
        problems.append(
            f"returned {len(items) - len(valid)} object(s) that are not findings of "
            f"{analysis!r} ({', '.join(kinds)})"
        )
    if not items:
        problems.append("returned no findings")
    if output:
        first = output.splitlines()[0][:120]
        problems.append(f"wrote to stdout/stderr ({len(output.splitlines())} lines: {first!r})")
    if not problems:
        return valid, ""
    reason = "; ".join(problems)
    return [*valid, _fault_finding(analysis, title, model, reason, output)], reason


def _fault_finding(analysis: str, title: str, model: str, reason: str, output: str) -> Finding:
    return error_finding(
        analysis, model, "plugin-fault",
        title=f"{title} misbehaved",
        summary=f"The analysis {reason}.",
        notes=("What it wrote:\n" + output[:2000],) if output else (),
        remediation="Report this to the plugin's author: an analysis returns its findings "
        "and writes nothing to stdout or stderr.",
    )  # fmt: skip
