"""Analyses in a process of their own (audit_core/isolation.py, ``--isolate``): a plugin
that kills its process (``os._exit``, a segfault) or hangs where ``SIGALRM`` cannot reach
it is an error finding and the audit finishes with its report; ``--strict`` stops; progress,
attack searches and reports are those of an in-process run; an interrupted audit leaves
no process behind."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time

import executor_units as units
import pytest

import audit_model_zoo as zoo
from audit_core.analysis import Analysis, Requirements, SilentProgress
from audit_core.attack_service import AttackService
from audit_core.console import QuietUI
from audit_core.executor import DaskExecutor, ProcessExecutor, executor_for_child
from audit_core.findings import Method, Metric, Severity, Status
from audit_core.hookspecs import hookimpl
from audit_core.isolation import ProcessDied, run_forked
from audit_core.plugins import PluginHost
from audit_core.runner import run_audit as run_runner
from audit_core.settings import Settings
from helpers import install_plugin, process_running, report_without_timings


class Crashing:
    """A plugin whose one analysis ends its own process as ``Crashing.kind`` says."""

    kind = "exit"

    @staticmethod
    @hookimpl
    def audit_register_analyses(register):
        register(_Crash())


class _Crash(Analysis):
    name = "crash"
    requires = Requirements(data=False)

    def run(self, ctx):
        kind = Crashing.kind
        if kind == "exit":
            os._exit(3)
        if kind == "segfault":
            ctypes.string_at(0)
        if kind == "hang":  # SIGALRM blocked: the in-process time limit cannot stop it
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            time.sleep(120)
        raise ValueError("a bug in the plugin")


DEATHS = {
    "exit": "process exited with code 3",
    "segfault": "process died (signal SIGSEGV)",
    "hang": "analysis 'crash' ran past its 3 s limit (--analysis-timeout)",
}


@pytest.mark.parametrize("kind", sorted(DEATHS))
def test_a_plugin_that_kills_its_process_or_hangs_is_an_error_finding(
    run_audit, tiny_model, tiny_data, audit_register_plugin, kind
) -> None:
    Crashing.kind = kind
    audit_register_plugin(Crashing, "crashing")
    clock = time.monotonic()
    run = run_audit(
        tiny_model, "--data", tiny_data, "--samples", "8", "--only", "crash,attack-bound",
        "--analysis-timeout", "3",
    )  # fmt: skip
    assert time.monotonic() - clock < 60
    assert run.exit_code == 1, run.stderr
    (finding,) = [f for f in run.report["findings"] if f["analysis"] == "crash"]
    assert finding["status"] == "error" and DEATHS[kind] in finding["summary"], finding
    notes = "\n".join(finding["evidence"]["notes"])
    if kind != "exit":  # the child's Python stack, dumped as it died or before it was killed
        assert "test_isolation.py" in notes and "in run" in notes, notes
    (crash,) = [a for a in run.report["analyses"] if a["analysis"] == "crash"]
    assert crash["outcome"] == "error" and DEATHS[kind] in crash["reason"]
    others = [f for f in run.report["findings"] if f["analysis"] == "attack-bound"]
    assert others and all(f["status"] != "error" for f in others)
    assert (run.out_dir / "report.html").is_file()


@pytest.mark.parametrize("kind", sorted(DEATHS))
def test_strict_stops_at_a_dead_or_stuck_analysis_process(
    run_audit, tiny_model, audit_register_plugin, kind
) -> None:
    Crashing.kind = kind
    audit_register_plugin(Crashing, "crashing")
    run = run_audit(tiny_model, "--only", "crash", "--strict", "--analysis-timeout", "3")
    assert run.exit_code == 3
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "analysis 'crash' crashed on tiny" in lines[0], lines
    assert DEATHS[kind] in lines[0]
    assert not run.out_dir.exists()


def test_a_raising_analysis_gives_the_same_finding_isolated_or_not(
    run_audit, tiny_model, audit_register_plugin
) -> None:
    """The traceback too: it starts where the runner caught the exception."""
    Crashing.kind = "raise"
    audit_register_plugin(Crashing, "crashing")
    findings = []
    for isolate in ("plugins", "none"):
        run = run_audit(tiny_model, "--only", "crash", "--isolate", isolate, out=isolate)
        assert run.exit_code == 1, run.stderr
        (finding,) = run.findings
        findings.append(finding)
    assert findings[0] == findings[1]
    assert "ValueError: a bug in the plugin" in findings[0]["traceback"]


# ------------------------------------------------------------------ progress, settings


class _Recorder(SilentProgress):
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def total(self, units: float) -> None:
        self.events.append(("total", units))

    def advance(self, units: float = 1) -> None:
        self.events.append(("advance", units))

    def note(self, text: str) -> None:
        self.events.append(("note", text))


class _RecordingUI(QuietUI):
    def __init__(self) -> None:
        self.progress = _Recorder()

    def start(self, analysis, model) -> _Recorder:
        return self.progress


class Chatty:
    """A plugin whose analysis reports progress and the process it ran in."""

    @staticmethod
    @hookimpl
    def audit_register_analyses(register):
        register(_Chatty())


class _Chatty(Analysis):
    name = "chatty"
    requires = Requirements(data=False)

    def run(self, ctx):
        ctx.progress.total(3)
        ctx.progress.note("half way")
        for _ in range(3):
            ctx.progress.advance(1)
        yield ctx.finding(
            "pid", title="pid", status=Status.PASS, severity=Severity.INFO,
            method=Method.EMPIRICAL, summary="ran", metrics=[Metric("pid", os.getpid())],
        )  # fmt: skip


PROGRESS = [("total", 3), ("note", "half way"), ("advance", 1), ("advance", 1), ("advance", 1)]


@pytest.mark.parametrize("isolate", ["plugins", "none"])
def test_progress_reaches_the_parent_from_the_child(tiny_model, isolate) -> None:
    host = PluginHost()
    host.register(Chatty, "chatty")
    ui = _RecordingUI()
    settings = Settings(models=(str(tiny_model),), isolate=isolate, workers=1)
    outcome = run_runner(settings, host, ui)
    assert ui.progress.events == PROGRESS
    (finding,) = outcome.report.findings
    assert (finding.metrics[0].value == os.getpid()) == (isolate == "none")


def test_the_isolate_mode_comes_from_the_option_or_the_config_file(
    run_audit, tmp_path, tiny_model, audit_register_plugin
) -> None:
    audit_register_plugin(Chatty, "chatty")

    def pid(run) -> int:
        assert run.exit_code == 0, run.stderr
        return run.finding("chatty/pid/tiny")["metrics"][0]["value"]

    assert pid(run_audit(tiny_model, "--only", "chatty")) != os.getpid()
    (tmp_path / "audit.toml").write_text('isolate = "none"\n')
    assert pid(run_audit(tiny_model, "--only", "chatty")) == os.getpid()
    assert pid(run_audit(tiny_model, "--only", "chatty", "--isolate", "all")) != os.getpid()
    (tmp_path / "audit.toml").write_text('isolate = "some"\n')
    run = run_audit(tiny_model, "--only", "chatty")
    assert run.exit_code == 4 and "isolate must be one of plugins, all, none" in run.stderr


# ------------------------------------------------------------------ torch, executors


class Gradient:
    """A plugin whose analysis runs a forward and backward pass of the model."""

    @staticmethod
    @hookimpl
    def audit_register_analyses(register):
        register(_Gradient())


class _Gradient(Analysis):
    name = "gradient"

    def run(self, ctx):
        import torch

        x = torch.as_tensor(ctx.data.x, dtype=torch.float64).repeat(64, 1).requires_grad_()
        ctx.model.module(x).logsumexp(1).sum().backward()
        norm = float(x.grad.norm())
        yield ctx.finding(
            "norm", title="gradient", status=Status.PASS, severity=Severity.INFO,
            method=Method.EMPIRICAL, summary="ran", metrics=[Metric("norm", norm)],
        )  # fmt: skip


def test_torch_works_in_the_child_after_the_parent_used_several_threads(
    audit_register_plugin,
) -> None:
    """torch's OpenMP pool does not survive ``fork``: a child using two threads after the
    parent did hangs; the child runs torch on one thread (the Python API leaves the
    caller's threads alone, unlike the command line)."""
    import torch

    import robustness_audit as ra

    audit_register_plugin(Gradient, "gradient")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        (torch.rand(600, 600) @ torch.rand(600, 600)).exp().sum()  # the OpenMP pool starts
        model, settings = zoo.model_path("digits_mlp2"), {"samples": 40, "only": ["gradient"]}
        isolated = ra.audit(model, isolate="plugins", analysis_timeout=30, **settings)
        assert torch.get_num_threads() == 2
        here = ra.audit(model, isolate="none", **settings)
    finally:
        torch.set_num_threads(before)
    assert isolated.metrics("gradient/norm/digits_mlp2") == pytest.approx(
        here.metrics("gradient/norm/digits_mlp2"), rel=1e-9
    )


@pytest.fixture(scope="module")
def dask_address():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
    )
    yield cluster.scheduler_address
    cluster.close()


def _child_units(parent, progress) -> tuple[str, int, list[int]]:
    with executor_for_child(parent) as executor:
        return executor.kind, os.getpid(), executor.map(units.where, range(8))


@pytest.mark.parametrize("kind", ["processes", "dask"])
def test_a_child_gets_its_own_executor_and_leaves_no_worker(request, kind) -> None:
    """The parent's loky pool or Dask connection is not used through fork; the child's
    own pool is gone with it, and the parent's still works."""
    from functools import partial

    if kind == "dask":
        parent = DaskExecutor(request.getfixturevalue("dask_address"))
    else:
        parent = ProcessExecutor(2)
    with parent:
        before = set(parent.map(units.where, range(8)))
        work = partial(_child_units, parent)
        got, child, pids = run_forked(work, SilentProgress(), 60, "units")
        assert got == kind and child != os.getpid() and child not in pids
        if kind == "processes":  # the child's workers: its own, and gone
            assert not set(pids) & before and not [p for p in pids if process_running(p)]
        assert len(parent.map(units.where, range(8))) == 8


def _unpicklable_result(progress) -> object:
    return lambda: None


def _exits(progress) -> None:
    raise SystemExit(5)


class _Odd(Exception):
    """An exception that does not pickle (it holds a lock)."""

    def __init__(self, a, b) -> None:
        super().__init__(f"{a} and {b}")
        self.lock = threading.Lock()


def _raises_odd(progress) -> None:
    raise _Odd(1, 2)


def test_what_the_child_cannot_send_or_ends_with_is_named() -> None:
    with pytest.raises(ProcessDied, match="could not be sent from its process"):
        run_forked(_unpicklable_result, SilentProgress(), 30, "x")
    with pytest.raises(ProcessDied, match="exited with code 5"):
        run_forked(_exits, SilentProgress(), 30, "x")
    with pytest.raises(RuntimeError, match="_Odd: 1 and 2"):
        run_forked(_raises_odd, SilentProgress(), 30, "x")


# ------------------------------------------------------------------ attack cache, reports


def test_isolating_every_analysis_gives_the_same_report_and_one_search(
    run_audit, monkeypatch, tmp_path
) -> None:
    """attack-bound's search, run in its child, is cached in the parent: certificates (in
    another child) reuses it, as in-process."""
    log = tmp_path / "searches.log"
    search = AttackService._search

    def logged(self, norm, progress):
        with log.open("a") as file:
            file.write(f"{os.getpid()} {norm}\n")
        return search(self, norm, progress)

    monkeypatch.setattr(AttackService, "_search", logged)
    args = (
        zoo.model_path("digits_mlp2"), "--samples", "8", "--only", "attack-bound,certificates",
        "-o", "certificates.search_total_seconds=inf", "-o", "certificates.search_seconds=inf",
    )  # fmt: skip
    reports, searches = [], []
    for isolate in ("all", "none"):
        log.write_text("")
        run = run_audit(*args, "--isolate", isolate, out=isolate)
        assert run.exit_code in (0, 1), run.stderr
        assert {a["outcome"] for a in run.report["analyses"]} == {"ran"}
        reports.append(report_without_timings(run.report))
        searches.append(log.read_text().split())
    assert reports[0] == reports[1]
    assert [s[1::2] for s in searches] == [["l2"], ["l2"]]
    assert int(searches[0][0]) != os.getpid() and int(searches[1][0]) == os.getpid()


# ------------------------------------------------------------------ interruptions

SLEEPY_PLUGIN = """
import os
import time
from pathlib import Path
from audit_core.analysis import Analysis, Requirements
from audit_core.hookspecs import hookimpl

def unit(folder, index):
    Path(folder, f"unit-{os.getpid()}").write_text("yes")
    time.sleep(120)
    return index

class Sleepy(Analysis):
    name = "sleepy"
    requires = Requirements(data=False)

    def run(self, ctx):
        folder = os.environ["MARKS"]
        Path(folder, f"analysis-{os.getpid()}").write_text("yes")
        ctx.executor.map(unit, range(4), shared=ctx.executor.share(folder))
        return []

@hookimpl
def audit_register_analyses(register):
    register(Sleepy())
"""

MAIN = (
    "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "  # as a shell
    "from robustness_audit.cli import main; raise SystemExit(main())"
)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_an_interrupted_audit_kills_the_analysis_process_and_its_workers(
    tmp_path, tiny_model, signum
) -> None:
    """Exit code 2, one line, no report, and neither the analysis's process nor the
    worker processes it started are left running."""
    site, marks = tmp_path / "site", tmp_path / "marks"
    site.mkdir()
    marks.mkdir()
    install_plugin(site, "sleepy", SLEEPY_PLUGIN)
    env = {
        **os.environ, "AUDIT_PLUGINS": "sleepy", "PYTHONPATH": str(site), "MARKS": str(marks)
    }  # fmt: skip
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-c", MAIN, str(tiny_model), "--out", str(out), "--workers", "2"],
        stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while len(list(marks.glob("unit-*"))) < 2 and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        time.sleep(0.2)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert not out.exists()
    pids = [int(p.name.split("-")[1]) for p in marks.iterdir()]
    assert len(pids) == 3 and process.pid not in pids
    deadline = time.monotonic() + 10
    while [p for p in pids if process_running(p)] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in pids if process_running(p)], json.dumps(pids)
