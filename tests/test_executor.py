"""The run's executor (audit_core/executor.py): the same results serially, on local worker
processes and on a Dask cluster; deadlines, failures and dead workers."""

from __future__ import annotations

import time

import executor_units as units
import numpy as np
import pytest

import audit_model_zoo as zoo
from audit_core.errors import UsageError
from audit_core.executor import (
    DaskExecutor,
    Executor,
    ProcessExecutor,
    SchedulerError,
    WorkerLost,
    chunks_of,
    make_executor,
    not_run,
)
from helpers import report_without_timings


@pytest.fixture(scope="module")
def dask_cluster():
    """A Dask ``LocalCluster`` of two one-thread worker processes (no network beyond
    localhost)."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    yield cluster
    cluster.close()


def _executors(dask_cluster) -> list[Executor]:
    return [Executor(1), ProcessExecutor(2), DaskExecutor(dask_cluster.scheduler_address)]


def test_every_executor_returns_the_units_results_in_order(dask_cluster) -> None:
    data = np.arange(40, dtype=np.float64)
    expected = [float(2 * v) for v in data]
    seeded = [units.seeded(7, u) for u in range(40)]
    for executor in _executors(dask_cluster):
        with executor:
            shared = executor.share(data)
            assert executor.map(units.scaled, range(40), shared=shared) == expected
            # seeds per unit: the same numbers wherever the units ran
            assert executor.map(units.seeded, range(40), shared=executor.share(7)) == seeded
            seen: list[int] = []  # progress, in this process, whatever ran the units
            executor.map(units.scaled, range(40), shared=shared, progress=seen.append)
            assert sum(seen) == 40 and len(seen) > 1, seen
            counts = executor.take_units()
        assert sum(counts.values()) == 120, counts


def test_local_workers_are_other_processes_and_progress_counts_every_unit() -> None:
    executor = ProcessExecutor(2)
    seen: list[int] = []
    pids = executor.map(units.where, range(16), progress=seen.append)
    assert sum(seen) == 16
    assert len(set(pids)) >= 1 and set(pids) != {__import__("os").getpid()}
    assert "main process" not in executor.take_units()


def test_units_on_dask_workers_reuse_the_heap_and_leave_the_workers_settings(
    dask_cluster,
) -> None:
    """A Dask nanny fixes glibc's trim threshold (and with it the mmap threshold, 128 KiB):
    inside units, a 4 MiB array comes from the heap; outside them, the worker's own
    setting is back and it is mapped afresh."""
    with DaskExecutor(dask_cluster.scheduler_address) as executor:
        assert set(executor.client.run(units.nanny_trim_threshold).values()) == {"65536"}
        assert executor.map(units.mapped_bytes_for_array, range(4)) == [0, 0, 0, 0]
        outside = executor.client.run(units.mapped_bytes_for_array).values()
    assert all(grown >= 1 << 22 for grown in outside), outside


def test_units_are_cut_into_shrinking_tasks_that_end_with_single_units() -> None:
    for workers in (1, 2, 3, 8):
        for count in range(200):
            parts = chunks_of(count, workers)
            assert [i for part in parts for i in part] == list(range(count))
            sizes = [len(part) for part in parts]
            assert sizes == sorted(sizes, reverse=True)
            assert all(size <= max(1, -(-count // (4 * workers))) for size in sizes)
            if count:  # the last tasks are small enough to even out the workers' finish
                assert sizes[-1] == 1
    assert [len(p) for p in chunks_of(10, 2, size=4)] == [4, 4, 2]


def test_units_after_the_deadline_are_not_run() -> None:
    """Units of 0.2 s with a 0.5 s deadline: a unit runs only if it started in time, so one
    worker runs at most 3 (starting at 0, 0.2 and 0.4 s at the earliest) and the units
    that start at once run (serially the ones at 0 and 0.2 s, on 2 workers one each at 0)."""
    for executor, least, most in ((Executor(1), 2, 3), (ProcessExecutor(2), 2, 6)):
        executor.map(units.where, range(2))  # workers started before the clock
        deadline = time.time() + 0.5
        results = executor.map(
            units.sleeping, range(12), shared=executor.share(0.2), deadline=deadline, chunk=1
        )
        ran = [r for r in results if not not_run(r)]
        assert least <= len(ran) <= most, results
        assert all(started <= deadline for _, started in ran), (deadline, ran)
        if executor.kind == "serial":  # one after the other: the ones run come first
            assert [unit for unit, _ in ran] == list(range(len(ran))), results


def test_an_exception_in_a_unit_reaches_the_caller(dask_cluster) -> None:
    for executor in _executors(dask_cluster):
        with executor, pytest.raises(ValueError, match="unit 3 is broken"):
            executor.map(units.failing, range(6))


def test_a_worker_that_dies_is_an_error_not_a_hang() -> None:
    executor = ProcessExecutor(2)
    with pytest.raises(WorkerLost, match="worker process died"):
        executor.map(units.dying, range(6), chunk=1)
    # the pool recovers for the next map
    assert executor.map(units.scaled, range(3), shared=executor.share(np.ones(3))) == [2.0] * 3


def test_a_dask_worker_that_dies_is_an_error_not_a_hang() -> None:
    """A unit that kills its Dask worker: ``WorkerLost`` once the scheduler gives up on the
    task (here at the first death), not a wait for a worker that never answers."""
    dask = pytest.importorskip("dask")
    distributed = pytest.importorskip("distributed")
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        )
    try:
        with DaskExecutor(cluster.scheduler_address) as executor:
            started = time.monotonic()
            with pytest.raises(WorkerLost, match="worker process died"):
                executor.map(units.dying, range(6), chunk=1)
            assert time.monotonic() - started < 60
    finally:
        cluster.close()


def test_scheduler_and_worker_options_fail_with_one_clear_error(monkeypatch) -> None:
    with pytest.raises(SchedulerError, match="cannot connect to a Dask scheduler"):
        DaskExecutor("tcp://127.0.0.1:9", timeout=2)
    monkeypatch.setenv("AUDIT_WORKERS", "many")
    with pytest.raises(UsageError, match="AUDIT_WORKERS"):
        make_executor()
    monkeypatch.setenv("AUDIT_WORKERS", "1")
    assert make_executor().kind == "serial"
    assert make_executor(workers=2).kind == "processes"


def test_an_audit_gives_the_same_report_serially_on_workers_and_on_dask(
    run_audit, dask_cluster
) -> None:
    """One audit of a zoo model, serially, on 2 local workers and on a Dask LocalCluster:
    the JSON reports agree apart from timings (every analysis's randomness is seeded per
    unit, and the searches' budgets here are branch counts, not seconds)."""
    args = (
        zoo.model_path("digits_mlp2"), "--samples", "24", "--eps", "0.3",
        "-o", "certificates.search_total_seconds=inf",
        "-o", "certificates.search_seconds=inf",
        "-o", "lower-bounds.max_seconds=inf",
    )  # fmt: skip
    serial = run_audit(*args, "--workers", "1", "--out", "serial")
    local = run_audit(*args, "--workers", "2", "--out", "local")
    remote = run_audit(*args, "--scheduler", dask_cluster.scheduler_address, "--out", "dask")
    reports = [run.report for run in (serial, local, remote)]
    for run in (serial, local, remote):
        assert run.exit_code in (0, 1), run.stderr
    assert [r["execution"]["kind"] for r in reports] == ["serial", "processes", "dask"]
    assert report_without_timings(reports[1]) == report_without_timings(reports[0])
    assert report_without_timings(reports[2]) == report_without_timings(reports[0])
    # units ran in the workers (some small maps stay in the main process)
    for report in reports[1:]:
        places = {p for a in report["analyses"] for p in a["units"]}
        assert places - {"main process"}, places
