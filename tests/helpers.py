"""Plain helpers for the tests (importable as ``helpers``; fixtures live in conftest.py)."""

from __future__ import annotations

import json
import os
import re
import textwrap
from pathlib import Path


def _find_corpus() -> Path:
    """``AUDIT_CORPUS``, else ``shared/corpus`` next to the checkout, else /work/shared/corpus."""
    if "AUDIT_CORPUS" in os.environ:
        return Path(os.environ["AUDIT_CORPUS"])
    beside = Path(__file__).resolve().parents[2] / "shared" / "corpus"
    return beside if beside.is_dir() else Path("/work/shared/corpus")


CORPUS = _find_corpus()
"""The public test corpus in ../shared/corpus (override with AUDIT_CORPUS)."""


def corpus(relative: str) -> Path:
    """A file of the corpus; fails loudly when the corpus is missing."""
    path = CORPUS / relative
    assert path.is_file(), f"corpus file missing: {path}"
    return path


def install_plugin(site: Path, name: str, source: str, version: str = "1.2.3") -> None:
    """A distribution on ``site`` exposing ``name`` in the robustness_audit group."""
    module = name.replace("-", "_")
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{module}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[robustness_audit]\n{name} = {module}\n")


VARYING = {"seconds", "started_at", "finished_at", "execution", "command", "units"}


def report_without_timings(report: dict) -> str:
    """The report without what may differ between runs: timings, timestamps, the
    executor's description and the places units ran."""

    def strip(value):
        if isinstance(value, dict):
            return {
                k: strip(v) for k, v in value.items() if k not in VARYING and "seconds" not in k
            }
        if isinstance(value, list):
            return [strip(v) for v in value]
        if isinstance(value, str):  # times quoted in prose: "0.00035 s per search"
            value = re.sub(r"seconds [0-9.e-]+", "seconds <time>", value)
            return re.sub(r"[0-9.]+(e-?[0-9]+)? s\b", "<time> s", value)
        return value

    findings = strip(report["findings"])
    for finding in findings:
        finding["metrics"] = [m for m in finding["metrics"] if "seconds" not in m["name"]]
    return json.dumps({"findings": findings, "analyses": strip(report["analyses"])}, indent=1)


def process_running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (Linux ``/proc``)."""
    status = Path(f"/proc/{pid}/status")
    try:
        return "zombie" not in status.read_text()
    except OSError:
        return False
