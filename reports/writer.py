"""Writing reports to disk: render everything first, then replace files atomically.

A failure while rendering leaves the previous reports untouched; a failure while
writing never leaves a half-written report (each file goes to a temporary file
in the output directory, then ``os.replace``s into place). Files are UTF-8: a lone
surrogate a renderer leaves in its text (from a file name that is not UTF-8, say)
is written as U+FFFD.

Adding a format is one entry in ``RENDERERS``. A renderer's module is imported when
the format is first rendered: the format list (``FORMATS``, shown by ``audit --help``)
costs no import of matplotlib or jsonschema.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .formatting import encodable

if TYPE_CHECKING:
    from audit_core.report_model import AuditReport


@dataclass(frozen=True)
class OutputFormat:
    """One report format: the file it is written to and the function that renders it."""

    filename: str
    render: Callable[[AuditReport], str]


def _deferred(module: str, function: str) -> Callable[[AuditReport], str]:
    """``audit_reports.<module>.<function>``, imported on the first call."""

    def render(report: AuditReport) -> str:
        renderer = getattr(importlib.import_module(f"audit_reports.{module}"), function)
        return renderer(report)

    render.__name__ = render.__qualname__ = function
    return render


RENDERERS: dict[str, OutputFormat] = {
    "json": OutputFormat("report.json", _deferred("json_report", "render_json")),
    "html": OutputFormat("report.html", _deferred("html_report", "render_html")),
    "sarif": OutputFormat("report.sarif", _deferred("sarif", "render_sarif")),
    "junit": OutputFormat("report.junit.xml", _deferred("junit", "render_junit")),
    "markdown": OutputFormat("report.md", _deferred("markdown", "render_markdown")),
}
"""Format name -> output (``--format``). Adding a format is one line here."""

FORMATS: tuple[str, ...] = tuple(RENDERERS)
"""The format names ``write_reports`` accepts, in registry order."""

_FILE_MODE = 0o644


def write_reports(
    report: AuditReport, out_dir: str | os.PathLike[str], formats: Sequence[str]
) -> list[Path]:
    """Render ``report`` in each of ``formats`` and write the files into ``out_dir``
    (created if needed). Returns the written paths, in the order of ``formats``.

    Report files of the formats not requested, left by an earlier run, are removed
    once the new ones are in place: a directory never mixes two runs' reports.
    Raises ``ValueError`` for an unknown format, before anything is rendered.
    """
    outputs = [_output(name) for name in dict.fromkeys(formats)]
    rendered = {out.filename: encodable(out.render(report)) for out in outputs}
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    written = _write_all(directory, rendered)
    for out in RENDERERS.values():
        if out.filename not in rendered:
            (directory / out.filename).unlink(missing_ok=True)
    return written


def _output(name: str) -> OutputFormat:
    try:
        return RENDERERS[name]
    except KeyError:
        known = ", ".join(RENDERERS)
        raise ValueError(f"unknown report format {name!r} (known: {known})") from None


def _write_all(directory: Path, rendered: dict[str, str]) -> list[Path]:
    """Write every text to a temp file first, then move them all into place."""
    temps: list[tuple[Path, Path]] = []
    try:
        for filename, text in rendered.items():
            temps.append((_write_temp(directory, filename, text), directory / filename))
        for temp, target in temps:
            os.replace(temp, target)
    finally:
        for temp, _ in temps:
            temp.unlink(missing_ok=True)  # only left over if something failed
    return [target for _, target in temps]


def _write_temp(directory: Path, filename: str, text: str) -> Path:
    """``text`` in a new temporary file next to ``directory/filename``, flushed to disk."""
    handle, name = tempfile.mkstemp(prefix=f".{filename}.", suffix=".tmp", dir=directory)
    temp = Path(name)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        with contextlib.suppress(OSError):
            os.chmod(temp, _FILE_MODE)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp
