"""What the user sees while ``audit`` runs: a rich progress display and a summary table.

``QuietUI`` (``--quiet``) shows nothing; errors are printed by the CLI.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from audit_core.analysis import Analysis, SilentProgress
from audit_core.report_model import AnalysisRun, AuditReport

_STATUS_STYLE = {
    "pass": "green",
    "warn": "yellow",
    "fail": "red",
    "error": "magenta",
    "skipped": "dim",
}


class _TaskProgress:
    """Progress of one analysis as one rich task."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress, self._task = progress, task

    def total(self, units: float) -> None:
        self._progress.update(self._task, total=units)

    def advance(self, units: float = 1) -> None:
        self._progress.advance(self._task, units)

    def note(self, text: str) -> None:
        self._progress.update(self._task, note=escape(text))


class ConsoleUI:
    """Live progress: one line per analysis and model, with its own bar."""

    def __init__(self, console: Console | None = None) -> None:
        # the real stderr, fixed now: an analysis's own writes are captured meanwhile
        self.console = console or Console(file=sys.stderr)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            TextColumn("[dim]{task.fields[note]}"),
            console=self.console,
            transient=False,
            # a live display only makes sense on a terminal; piped (CI logs) it would
            # print its last frame, or a blank line before an error
            disable=not self.console.is_terminal,
        )
        self._tasks: dict[tuple[str, str], TaskID] = {}
        self._setup: TaskID | None = None

    def __enter__(self) -> ConsoleUI:
        self.progress.start()
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        if exc_type is not None:  # an error: leave only the CLI's one-line message
            for task in list(self.progress.task_ids):
                self.progress.remove_task(task)
            self.progress.live.transient = True  # no blank line where the display was
        self.progress.stop()

    def status(self, text: str) -> None:
        """Setup steps (loading, fidelity check) on one transient line."""
        if self._setup is None:
            self._setup = self.progress.add_task(escape(text), total=None, note="")
        else:
            self.progress.update(self._setup, description=escape(text))

    def start(self, analysis: Analysis, model: str) -> _TaskProgress:
        if self._setup is not None:
            self.progress.remove_task(self._setup)
            self._setup = None
        task = self.progress.add_task(escape(f"{analysis.name} · {model}"), total=None, note="")
        self._tasks[(analysis.name, model)] = task
        return _TaskProgress(self.progress, task)

    def finish(self, run: AnalysisRun) -> None:
        key = (run.analysis, run.model)
        if key not in self._tasks:
            self._tasks[key] = self.progress.add_task(
                escape(f"{run.analysis} · {run.model}"), note=""
            )
        note = {"ran": f"done in {run.seconds:.1f}s", "skipped": "skipped", "error": "crashed"}
        self.progress.update(self._tasks[key], total=1, completed=1, note=note[run.outcome])


class QuietUI:
    """``--quiet``: no progress, no summary."""

    def __enter__(self) -> QuietUI:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def status(self, text: str) -> None:
        pass

    def start(self, analysis: Analysis, model: str) -> SilentProgress:
        return SilentProgress()

    def finish(self, run: AnalysisRun) -> None:
        pass


def summary_table(report: AuditReport) -> Table:
    """One row per finding that is not a pass: analysis, model, status, severity, title."""
    table = Table(title="Audit summary", show_lines=False)
    for column in ("analysis", "model", "status", "severity", "finding"):
        table.add_column(column)
    for finding in report.findings:
        style = _STATUS_STYLE[finding.status.value]
        table.add_row(
            Text(finding.analysis),
            Text(finding.model),
            Text(finding.status.value, style=style),
            finding.severity.value,
            Text(finding.title),
        )
    return table


def verdict_line(report: AuditReport) -> str:
    """``PASSED``/``FAILED`` against --fail-on, with the counts."""
    counts = report.counts()["status"]
    shown = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    if not report.analysed:
        return f"NOT ANALYSED: every analysis was skipped ({shown}); see the reasons above"
    if report.fail_on == "never":
        return f"Findings: {shown} (no gate: --fail-on never)"
    return f"{report.verdict_word} at --fail-on {report.fail_on}: {shown}"
