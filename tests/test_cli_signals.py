"""Ctrl-C (SIGINT) and SIGTERM during each long built-in analysis, in a real ``audit``
process: exit code 2, an "interrupted" line and no traceback, no report written, the
previous reports intact, no worker process left behind.

The test waits until the analysis is running (its progress line appears on stderr:
``FORCE_COLOR`` makes the console draw progress into the pipe), lets it work for a moment
(inside cone programs, searches, attack batches, worker units), then sends the signal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

import pytest

from helpers import corpus, process_running

PREVIOUS = "previous report"
AUDIT = [sys.executable, "-c", "from robustness_audit.cli import main; raise SystemExit(main())"]
MNIST = ["--data", str(corpus("mnistfc/mnist_samples.npz")), "--bounds", "0,1"]

LONG_RUNS = {
    "attack-bound": ["-o", "attacks.steps=5000", "-o", "attacks.restarts=20"],
    "certificates": [
        "-o", "certificates.effort=thorough", "-o", "certificates.search_seconds=600",
        "-o", "certificates.search_total_seconds=600",
    ],
    "lower-bounds": ["-o", "lower-bounds.max_seconds=600"],
}  # fmt: skip
"""Budgets that keep each analysis busy for minutes on mnist-net_256x4."""


def _reader(stream, seen: list[str]) -> threading.Thread:
    def read() -> None:
        for chunk in iter(lambda: stream.read(256), ""):
            seen.append(chunk)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def _children(pid: int) -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        parent = next((line for line in text.splitlines() if line.startswith("PPid:")), "")
        if parent.split()[-1:] == [str(pid)]:
            found.append(int(status.parent.name))
    return found


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
@pytest.mark.parametrize("analysis", sorted(LONG_RUNS))
def test_signal_during_a_long_analysis(tmp_path: Path, analysis: str, signum: int) -> None:
    out = _previous_reports(tmp_path)
    audit = _audit_busy_in(analysis, out, ["--workers", "2"])
    workers = _children(audit.process.pid)
    _interrupt(audit, signum, out)
    stop = time.monotonic() + 30
    while any(process_running(pid) for pid in workers) and time.monotonic() < stop:
        time.sleep(0.5)
    assert not [pid for pid in workers if process_running(pid)], "worker processes left running"


def test_ctrl_c_cancels_the_work_on_a_dask_cluster(tmp_path: Path) -> None:
    """``--scheduler``: Ctrl-C during the certificates' searches on a Dask cluster (a
    ``LocalCluster`` of this test) keeps the same promises, and the cluster is left with
    no task of the audit (its workers stay up: the cluster is not the audit's)."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, dashboard_address=None
    ) as cluster, distributed.Client(cluster) as client:  # fmt: skip
        out = _previous_reports(tmp_path)
        scheduler = ["--scheduler", cluster.scheduler_address]
        audit = _audit_busy_in("certificates", out, scheduler)
        stop = time.monotonic() + 120
        while not _scheduler_tasks(client) and time.monotonic() < stop:  # units on the cluster
            assert audit.process.poll() is None, "".join(audit.seen)
            time.sleep(0.1)
        assert _scheduler_tasks(client) > 0, "no work reached the cluster"
        _interrupt(audit, signal.SIGINT, out)
        stop = time.monotonic() + 30
        while _scheduler_tasks(client) and time.monotonic() < stop:
            time.sleep(0.5)
        assert _scheduler_tasks(client) == 0, "the audit's tasks are still on the cluster"
        assert len(client.scheduler_info()["workers"]) == 2


def _scheduler_tasks(client) -> int:
    """Tasks the scheduler holds (the test's client holds none)."""
    return client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))


def _previous_reports(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    for name in ("report.json", "report.html"):
        (out / name).write_text(PREVIOUS)
    return out


class Busy(NamedTuple):
    """An audit process, its stderr so far (read by ``reader``)."""

    process: subprocess.Popen
    seen: list[str]
    reader: threading.Thread


def _audit_busy_in(analysis: str, out: Path, executor: list[str]) -> Busy:
    """An audit process a few seconds into ``analysis``'s work."""
    model = str(corpus("mnistfc/mnist-net_256x4.onnx"))
    command = [*AUDIT, model, *MNIST, "--only", analysis, "--out", str(out), *executor,
               *LONG_RUNS[analysis]]  # fmt: skip
    env = {**os.environ, "FORCE_COLOR": "1", "COLUMNS": "200"}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    seen: list[str] = []
    reader = _reader(process.stderr, seen)
    deadline = time.monotonic() + 180
    while f"{analysis} ·" not in "".join(seen) and time.monotonic() < deadline:
        assert process.poll() is None, "".join(seen)
        time.sleep(0.2)
    time.sleep(3.0)  # inside the analysis's work
    assert process.poll() is None, f"{analysis} finished before the signal: {''.join(seen)}"
    return Busy(process, seen, reader)


def _interrupt(audit: Busy, signum: int, out: Path) -> None:
    """Send ``signum``: exit 2, "interrupted" last, no traceback, the previous reports."""
    audit.process.send_signal(signum)
    code = audit.process.wait(timeout=60)
    audit.reader.join(timeout=10)
    stderr = "".join(audit.seen)
    assert code == 2, stderr[-2000:]
    assert "interrupted" in stderr.strip().splitlines()[-1]
    assert "Traceback" not in stderr
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json"]
    assert all((out / name).read_text() == PREVIOUS for name in ("report.json", "report.html"))
