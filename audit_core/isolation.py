"""Run work (one analysis) in a forked child process, so that a crash or a hang cannot take
the audit with it.

    result = run_forked(work, progress, timeout, name)

``work(progress)`` runs in a child made with ``os.fork()``: it inherits everything (model,
data, context, attack service), so nothing is pickled on the way in. The child sends back
over a pipe its progress events (``total``/``advance``/``note``, replayed on the parent's
``progress``) and then ``work``'s return value, which must pickle. In the parent:

* the child returns: its value is returned; an exception ``work`` raised is raised
  (pickled; a ``RuntimeError`` naming it when it does not pickle); ``SystemExit`` and
  ``KeyboardInterrupt`` in the child end it as a process exit would;
* the child ends without a result (``os._exit``, a segfault, the OOM killer, a result that
  does not pickle): ``ProcessDied`` with the exit code or signal name and the tail of what
  the child wrote to its file descriptors 1 and 2 (a Python traceback for a fatal signal);
* no result ``MARGIN`` seconds past ``timeout`` (the child's own ``SIGALRM`` limit,
  ``audit_core.time_limit``, did not stop it: a hang in C code, signals blocked):
  ``ProcessStuck`` (an ``AnalysisTimeout``), with where the child was stuck (its stack,
  dumped by ``faulthandler`` just before);
* an interruption (Ctrl-C, SIGTERM) while it waits propagates.

In every case the child's process group (the child, its loky workers, any process it
started) is killed with ``SIGKILL`` and the child reaped before ``run_forked`` returns or
raises: no process is left behind. The child also dies with the parent (Linux
``PR_SET_PDEATHSIG``).

The child runs torch on one intra-op thread: torch's OpenMP pool does not survive
``fork``, and a child that uses more threads after the parent used several hangs.
Its executor must not be the parent's (``audit_core.executor.executor_for_child``).
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import math
import os
import pickle
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, Pipe
from typing import IO, Any, NoReturn, TypeVar

from audit_core.analysis import Progress
from audit_core.time_limit import AnalysisTimeout, timeout_message

T = TypeVar("T")

MARGIN = 2.0
"""Seconds past the timeout the parent waits for the child's own ``SIGALRM`` to stop it."""
OUTPUT_TAIL = 3000
"""Characters of the child's output kept for a dead or stuck child."""
READ_BACK = 2**16
"""Bytes at the end of the child's output searched for the last stack dump."""
DUMP_HEADERS = ("Fatal Python error", "Timeout (")
"""How ``faulthandler`` starts a stack dump (fatal signal; ``dump_traceback_later``)."""
PR_SET_PDEATHSIG = 1


class ProcessDied(Exception):
    """The child ended without sending its result; ``output``: the end of what it wrote."""

    def __init__(self, reason: str, output: str = "") -> None:
        super().__init__(reason)
        self.output = output


class ProcessStuck(AnalysisTimeout):
    """The child overran its time and was killed; ``output``: the end of what it wrote,
    its Python stack dumped just before."""

    def __init__(self, message: str, output: str) -> None:
        super().__init__(message)
        self.output = output


def supported() -> bool:
    """Whether analyses can be isolated here: Linux (``fork`` without ``exec``, ``waitid``,
    ``PR_SET_PDEATHSIG``); elsewhere they run in the audit's process."""
    return sys.platform.startswith("linux")


def run_forked(work: Callable[[Progress], T], progress: Progress, timeout: float, name: str) -> T:
    """``work(progress)`` in a forked child; see the module docstring."""
    reader, writer = Pipe(duplex=False)
    parent = os.getpid()
    with tempfile.TemporaryFile() as output:
        pid = os.fork()
        if pid == 0:
            _child(work, reader, writer, output, timeout, parent)
        with contextlib.suppress(OSError):  # the child does the same: whichever runs first
            os.setpgid(pid, pid)
        writer.close()
        try:
            return _wait(pid, reader, progress, timeout, name, output)
        finally:
            reader.close()
            _kill(pid)


# ------------------------------------------------------------------ the parent


def _wait(
    pid: int,
    reader: Connection,
    progress: Progress,
    timeout: float,
    name: str,
    output: IO[bytes],
) -> Any:
    """Replay the child's progress until its result; raise when it dies or overruns."""
    deadline = time.monotonic() + timeout + MARGIN
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ProcessStuck(timeout_message(name, timeout), _tail(output))
        if not reader.poll(min(remaining, 1.0)):
            if _ended(pid, block=False):  # a process it forked holds the pipe open
                raise ProcessDied(_death(pid), _tail(output))
            continue
        try:
            kind, value = reader.recv()
        except (EOFError, OSError):
            raise ProcessDied(_death(pid), _tail(output)) from None
        if kind == "result":
            return value
        if kind == "raise":
            raise value
        if kind == "died":
            raise ProcessDied(value, _tail(output))
        getattr(progress, kind)(value)


def _ended(pid: int, block: bool) -> Any:
    """The child's exit status (``os.waitid_result``) once it ended, without reaping it
    (its process group stays valid for ``_kill``); None while it runs."""
    options = os.WEXITED | os.WNOWAIT | (0 if block else os.WNOHANG)
    return os.waitid(os.P_PID, pid, options)


def _death(pid: int) -> str:
    """How the child ended (its end of the pipe is closed): exit code or signal."""
    status, waited = _ended(pid, block=False), time.monotonic()
    while status is None and time.monotonic() - waited < 1:
        time.sleep(0.01)
        status = _ended(pid, block=False)
    if status is None:  # alive: it closed its file descriptors (then ``_kill`` kills it)
        return "the analysis's process closed its connection to the audit"
    if status.si_code == os.CLD_EXITED:
        return f"the analysis's process exited with code {status.si_status}"
    try:
        name = signal.Signals(status.si_status).name
    except ValueError:
        name = str(status.si_status)
    return f"the analysis's process died (signal {name})"


def _kill(pid: int) -> None:
    """Kill the child's process group (the child, its workers, whatever it started) and
    reap the child."""
    for kill, target in ((os.killpg, pid), (os.kill, pid)):
        try:
            kill(target, signal.SIGKILL)
            break
        except (ProcessLookupError, PermissionError):
            continue
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _tail(output: IO[bytes]) -> str:
    """The end of what the child wrote to its stdout and stderr; from the start of the last
    stack ``faulthandler`` dumped there (innermost call first) when there is one."""
    output.seek(0, os.SEEK_END)
    output.seek(max(0, output.tell() - READ_BACK))
    text = output.read().decode("utf-8", "replace").strip()
    dump = max(text.rfind(header) for header in DUMP_HEADERS)
    return text[dump : dump + OUTPUT_TAIL] if dump >= 0 else text[-OUTPUT_TAIL:]


# ------------------------------------------------------------------- the child


def _child(
    work: Callable[[Progress], Any],
    reader: Connection,
    writer: Connection,
    output: IO[bytes],
    timeout: float,
    parent: int,
) -> NoReturn:
    """Run ``work`` and send its result; the process ends here, whatever happens."""
    code = 70  # EX_SOFTWARE: sending the result failed (the parent sees a death)
    try:
        reader.close()
        _prepare(output, timeout, parent)
        code = _serve(work, writer)
    finally:
        os._exit(code)


def _serve(work: Callable[[Progress], Any], writer: Connection) -> int:
    """Send ``work``'s result or exception; the exit code of the child."""
    progress = _PipeProgress(writer)
    try:
        message: tuple[str, Any] = ("result", work(progress))
    except SystemExit as error:
        return error.code if isinstance(error.code, int) else 1
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except BaseException as error:  # the caller's: raised again in the parent
        message = ("raise", _portable(error))
    faulthandler.cancel_dump_traceback_later()
    try:
        progress.send(message)
    except Exception as error:  # the result does not pickle (a plugin's odd object)
        reason = (
            "the analysis's findings could not be sent from its process "
            f"({type(error).__name__}: {error})"
        )
        progress.send(("died", reason))
    return 0


def _prepare(output: IO[bytes], timeout: float, parent: int) -> None:
    """Own process group, death with the parent, output to ``output``, one torch thread."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    _die_with_parent(parent)
    os.dup2(output.fileno(), 1)
    os.dup2(output.fileno(), 2)
    faulthandler.enable(file=output)  # a fatal signal leaves the Python stack in the output
    if math.isfinite(timeout):  # and so does a hang the parent will kill
        faulthandler.dump_traceback_later(timeout + MARGIN / 2, file=output)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def _die_with_parent(parent: int) -> None:
    """Linux: ``SIGKILL`` when the parent dies (a killed audit leaves no child behind)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(1)


def _portable(error: BaseException) -> BaseException:
    """``error``, or a ``RuntimeError`` naming it when it does not survive pickling."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # any failure of a third-party exception's pickling
        return RuntimeError(f"{type(error).__name__}: {error}")


class _PipeProgress:
    """The child's ``Progress``: every call is sent to the parent (from any thread)."""

    def __init__(self, writer: Connection) -> None:
        self._writer = writer
        self._lock = threading.Lock()

    def send(self, message: tuple[str, Any]) -> None:
        with self._lock:
            self._writer.send(message)

    def total(self, units: float) -> None:
        self.send(("total", units))

    def advance(self, units: float = 1) -> None:
        self.send(("advance", units))

    def note(self, text: str) -> None:
        self.send(("note", str(text)))
