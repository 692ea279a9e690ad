"""One executor for every analysis's independent units (samples in batches, pairs, models).

    results = ctx.executor.map(function, units, shared=ctx.executor.share(state),
                               progress=ctx.progress.advance, deadline=time.time() + 60)

``function(state, unit)`` runs once per unit and must be a module-level function (or a
``functools.partial`` of one): it is pickled by reference. ``map`` returns the results in
unit order, whatever ran where. Three kinds of executor run the units:

* ``serial`` (``--workers 1``): in this process, one after the other;
* ``processes`` (``--workers N``, default all local cores): local worker processes
  (joblib's loky pool, reused from one ``map`` to the next);
* ``dask`` (``--scheduler ADDRESS``): the workers of an existing Dask distributed cluster
  (``distributed.Client``; the workers need this package installed, nothing else).

**Shared state** (model, layer graph, data arrays, settings) is wrapped once in a
``Shared``: it is pickled once into one byte array, and reaches every worker once per
``map`` at most: loky memory-maps the array (joblib's automatic memmapping of large
arrays: one file in shared memory, not one copy per task), Dask broadcasts it to every
worker (``Client.scatter``). A worker unpickles it once and caches it by its token;
what cannot be pickled (the onnxruntime session, the torch module of an
``AuditedModel``) is rebuilt there from the model bytes, once per worker process. No
unit ever reads a file of the client: remote workers need not share its file system.

**Determinism**: a unit's result must depend on the unit and the shared state only
(seed per unit, never per worker), so the results are the same under every executor and
worker count. Workers run torch and BLAS on one thread.

**Deadlines**: ``deadline`` (``time.time()``, wall clock) is checked before each unit; a
unit not started in time gives ``NOT_RUN``. A whole analysis can thus share one budget:
more workers run more units within it.

**Failures**: an exception in a unit is raised by ``map`` (the runner turns it into an
error finding); a worker process that dies raises ``WorkerLost``; Ctrl-C or SIGTERM in
the client cancels the outstanding work (loky workers are terminated, Dask futures
cancelled) before the interruption propagates.

Nothing here imports Dask unless a scheduler address is given.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import os
import pickle
import socket
import sys
import threading
import time
import uuid
import weakref
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from audit_core.errors import UsageError
from audit_core.memory import DEFAULT_CAP_MB, batch_bytes

SERIAL, PROCESSES, DASK = "serial", "processes", "dask"
MAIN_PROCESS = "main process"
DEFAULT_MEMORY_MB = DEFAULT_CAP_MB
"""Memory budget of one process when none is given, in MiB (a batch of units gets a
quarter: ``audit_core.memory.batch_bytes``)."""
TARGET_BATCHES = 8
"""Batches a few items are cut into (``batches``), so that several workers share them."""
TASKS_PER_WORKER = 4
"""Tasks per worker the first, largest tasks of a ``map`` are sized for (``chunks_of``)."""
CACHE_SIZE = 6
"""Shared states a worker process keeps unpickled (the latest ones)."""


def batches(count: int, largest: int, smallest: int = 1) -> list[range]:
    """``count`` items cut into batches of at most ``largest``, and into about
    ``TARGET_BATCHES`` of at least ``smallest`` items when they are few. From the count and
    budgets only, never from the workers: the batches (and their seeds) are the same
    whatever runs them."""
    size = max(1, min(largest, max(smallest, math.ceil(count / TARGET_BATCHES))))
    return [range(s, min(s + size, count)) for s in range(0, count, size)]


class WorkerLost(RuntimeError):
    """A worker process died (killed, out of memory, crashed) while it ran units."""


class SchedulerError(UsageError):
    """The Dask scheduler given with ``--scheduler`` cannot be reached."""


class NotRun:
    """The result of a unit that was not started because the deadline had passed."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NotRun)

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "NOT_RUN"


NOT_RUN = NotRun()


def not_run(result: Any) -> bool:
    """True for the result of a unit skipped at the deadline."""
    return isinstance(result, NotRun)


# ------------------------------------------------------------------ shared state


_CACHE: OrderedDict[str, Any] = OrderedDict()
_CACHE_LOCK = threading.Lock()


class Shared:
    """Read-only state every unit of a ``map`` gets: pickled once, unpickled once per worker.

    Units must not modify it (in the serial executor they see the client's own objects).
    """

    def __init__(self, value: Any) -> None:
        self.value = value
        self.token = uuid.uuid4().hex
        self._blob: np.ndarray | None = None

    def blob(self) -> np.ndarray:
        """The pickled value as a byte array (computed once)."""
        if self._blob is None:
            data = pickle.dumps(self.value, protocol=pickle.HIGHEST_PROTOCOL)
            self._blob = np.frombuffer(data, dtype=np.uint8)
        return self._blob

    @property
    def nbytes(self) -> int:
        return int(self.blob().nbytes)

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str, np.ndarray]]:
        return _restore, (self.token, self.blob())


def _restore(token: str, blob: np.ndarray) -> Any:
    """The value of a ``Shared`` in a worker: unpickled the first time, then from the cache."""
    with _CACHE_LOCK:
        if token in _CACHE:
            _CACHE.move_to_end(token)
            return _CACHE[token]
    value = pickle.loads(memoryview(np.ascontiguousarray(blob)))
    with _CACHE_LOCK:
        _CACHE[token] = value
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return value


def worker_cache(key: Any, build: Callable[[], Any]) -> Any:
    """``build()`` once per worker process and ``key`` (e.g. an onnxruntime session)."""
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    value = build()
    with _CACHE_LOCK:
        _CACHE[key] = value
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return value


# ------------------------------------------------------------------ running units


def _run_chunk(
    index: int,
    function: Callable[[Any, Any], Any],
    state: Any,
    units: Sequence[Any],
    deadline: float | None,
) -> tuple[int, list[Any], str]:
    """Run ``units`` one after the other; (chunk index, results, where it ran)."""
    _one_thread()
    results = []
    with _unit_heap():
        for unit in units:
            if deadline is not None and time.time() >= deadline:
                results.append(NOT_RUN)
            else:
                results.append(function(state, unit))
    return index, results, _where()


_CLIENTS: set[int] = set()
"""Processes that created an executor (the audit's own); every other one is a worker."""


def _where() -> str:
    """Where this code runs: the Dask worker's address, a local process, or the client."""
    if "distributed" in sys.modules:
        from distributed import get_worker

        try:
            return get_worker().address
        except ValueError:  # not inside a Dask worker
            pass
    if os.getpid() in _CLIENTS:
        return MAIN_PROCESS
    return f"{socket.gethostname()} process {os.getpid()}"


def _one_thread() -> None:
    """Torch on one thread in worker processes (units are small, the cores busy)."""
    if os.getpid() in _CLIENTS:
        return
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


UNIT_MMAP_THRESHOLD = 32 << 20
"""glibc's mmap threshold while units run in a process with a fixed small heap trim
threshold (``_unit_heap``): 32 MiB, glibc's own upper limit for it."""
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc malloc.h)
_HEAP = {"running": 0}
_HEAP_LOCK = threading.Lock()


@contextlib.contextmanager
def _unit_heap() -> Iterator[None]:
    """glibc's heap reused by units while they run, and trimmed after them.

    A Dask nanny starts its workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also fixes
    glibc's mmap threshold at 128 KiB: every array over 128 KiB is then a fresh ``mmap``
    whose pages the kernel zeroes on first touch, and the bound-propagation units (which
    allocate and free arrays of megabytes thousands of times) ran 1.5-2x slower on Dask
    workers than on loky's. While units run, the thresholds are those glibc would reach by
    itself (mmap 32 MiB, trim 64 MiB); when the last running chunk ends, the process's
    own settings come back and the freed memory is returned to the system (``malloc_trim``),
    which is what the small trim threshold is for. Elsewhere (no such setting, not glibc,
    the client process) it does nothing.
    """
    libc = _glibc() if "MALLOC_TRIM_THRESHOLD_" in os.environ else None
    if libc is None or os.getpid() in _CLIENTS:
        yield
        return
    with _HEAP_LOCK:
        _HEAP["running"] += 1
        if _HEAP["running"] == 1:
            libc.mallopt(_M_MMAP_THRESHOLD, UNIT_MMAP_THRESHOLD)
            libc.mallopt(_M_TRIM_THRESHOLD, 2 * UNIT_MMAP_THRESHOLD)
    try:
        yield
    finally:
        with _HEAP_LOCK:
            _HEAP["running"] -= 1
            if _HEAP["running"] == 0:
                libc.mallopt(_M_MMAP_THRESHOLD, _environ_bytes("MALLOC_MMAP_THRESHOLD_", 128 << 10))
                libc.mallopt(_M_TRIM_THRESHOLD, _environ_bytes("MALLOC_TRIM_THRESHOLD_", 128 << 10))
                libc.malloc_trim(0)


def _environ_bytes(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value.isdigit() else default


@functools.cache
def _glibc() -> Any:
    """glibc's ``mallopt`` and ``malloc_trim`` (None where the C library is not glibc)."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


def chunks_of(count: int, workers: int, size: int | None = None) -> list[range]:
    """Unit positions cut into tasks of ``size`` units, or by default "guided": tasks of
    ``count / (TASKS_PER_WORKER x workers)`` units while many are left, then of half the
    remainder per worker, down to single units. Units of one ``map`` differ in cost (a
    descent or search may take 10x another's time); the small tasks at the end fill the
    workers that finish first, where equal tasks leave one worker alone with the last."""
    if count == 0:
        return []
    if size:
        return [range(s, min(s + size, count)) for s in range(0, count, size)]
    workers = max(1, workers)
    largest = math.ceil(count / (TASKS_PER_WORKER * workers))
    parts, start = [], 0
    while start < count:
        size = max(1, min(largest, (count - start) // (2 * workers)))
        parts.append(range(start, min(start + size, count)))
        start += size
    return parts


@dataclass(frozen=True)
class ExecutorInfo:
    """What the report says about the executor of a run."""

    kind: str
    workers: int
    scheduler: str | None
    memory_mb: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "workers": self.workers,
            "scheduler": self.scheduler,
            "memory_budget_mb": self.memory_mb,
        }


class Executor:
    """Runs independent units; subclasses say where. See the module docstring."""

    kind = SERIAL

    def __init__(self, workers: int = 1, memory_mb: int = DEFAULT_MEMORY_MB) -> None:
        self.workers = max(1, workers)
        self.memory_mb = memory_mb
        _CLIENTS.add(os.getpid())
        self.units: Counter[str] = Counter()
        """Units run per place since the last ``take_units`` (``NOT_RUN`` ones excluded)."""

    @property
    def scheduler(self) -> str | None:
        return None

    def info(self) -> ExecutorInfo:
        return ExecutorInfo(self.kind, self.workers, self.scheduler, self.memory_mb)

    @property
    def memory_bytes(self) -> int:
        """The working memory one batch of units may use (per worker process): a quarter
        of the memory budget."""
        return batch_bytes(self.memory_mb)

    def batch_items(self, bytes_per_item: float, minimum: int = 1, maximum: int = 0) -> int:
        """How many items (samples, pairs) one batch holds within the memory budget;
        independent of the worker count, so batches (and their seeds) are too."""
        items = int(self.memory_bytes // max(1.0, bytes_per_item))
        items = max(minimum, items)
        return min(items, maximum) if maximum else items

    def share(self, value: Any) -> Shared:
        """Wrap read-only state for ``map(shared=...)``."""
        return value if isinstance(value, Shared) else Shared(value)

    def map(
        self,
        function: Callable[[Any, Any], Any],
        units: Sequence[Any],
        *,
        shared: Shared | None = None,
        progress: Callable[[int], None] | None = None,
        deadline: float | None = None,
        inline: bool = False,
        chunk: int | None = None,
        weights: Sequence[float] | None = None,
    ) -> list[Any]:
        """``[function(shared.value, unit) for unit in units]``, run by this executor.

        ``progress(w)`` is called in this process as each task finishes, ``w`` the sum of
        its units' ``weights`` (default 1 per unit); units not started by ``deadline``
        (``time.time()``) give ``NOT_RUN``; ``inline``: run here, in this process (work too
        small to ship); ``chunk``: units per task (default: ``chunks_of``'s guided sizes).
        """
        units = list(units)
        here = inline or self.kind == SERIAL or len(units) <= 1
        parts = chunks_of(len(units), self.workers, chunk or (1 if here else None))
        tasks = [[units[i] for i in part] for part in parts]
        results: list[list[Any]] = [[] for _ in tasks]
        runner = _serial_tasks if here else self._tasks
        for index, out, where in runner(function, shared, tasks, deadline):
            results[index] = out
            self.units[where] += sum(not not_run(r) for r in out)
            if progress is not None:
                part = parts[index]
                progress(len(part) if weights is None else sum(weights[i] for i in part))
        return [r for part in results for r in part]

    def take_units(self) -> dict[str, int]:
        """Units run per place since the last call (for the report), and reset."""
        counts, self.units = dict(self.units), Counter()
        return counts

    def _tasks(
        self,
        function: Callable[[Any, Any], Any],
        shared: Shared | None,
        tasks: list[list[Any]],
        deadline: float | None,
    ) -> Iterator[tuple[int, list[Any], str]]:
        return _serial_tasks(function, shared, tasks, deadline)

    def close(self) -> None:
        """Release the workers (a no-op for local executors: the loky pool is reused)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serial_tasks(
    function: Callable[[Any, Any], Any],
    shared: Shared | None,
    tasks: list[list[Any]],
    deadline: float | None,
) -> Iterator[tuple[int, list[Any], str]]:
    state = None if shared is None else shared.value
    for index, task in enumerate(tasks):
        yield _run_chunk(index, function, state, task, deadline)


class ProcessExecutor(Executor):
    """Local worker processes: joblib's loky pool (reused between maps and runs).

    ``owns_pool``: ``close`` shuts the pool down (the executor of a forked child process,
    see ``executor_for_child``, which must leave no worker behind when it exits).
    """

    kind = PROCESSES

    def __init__(
        self, workers: int = 1, memory_mb: int = DEFAULT_MEMORY_MB, owns_pool: bool = False
    ) -> None:
        super().__init__(workers, memory_mb)
        self.owns_pool = owns_pool

    def close(self) -> None:
        if self.owns_pool:
            _shut_down_local_pool()

    def _tasks(
        self,
        function: Callable[[Any, Any], Any],
        shared: Shared | None,
        tasks: list[list[Any]],
        deadline: float | None,
    ) -> Iterator[tuple[int, list[Any], str]]:
        from joblib import Parallel, delayed
        from joblib.externals.loky.process_executor import BrokenProcessPool

        parallel = Parallel(n_jobs=self.workers, backend="loky", return_as="generator_unordered")
        jobs = parallel(
            delayed(_run_chunk)(i, function, shared, task, deadline) for i, task in enumerate(tasks)
        )
        try:
            yield from jobs
        except BrokenProcessPool as error:
            raise WorkerLost(_lost_message(function, error)) from None
        finally:
            jobs.close()  # an interruption or error: joblib terminates the workers


def _lost_message(function: Callable[..., Any], error: BaseException) -> str:
    name = getattr(function, "__qualname__", None) or getattr(
        getattr(function, "func", None), "__qualname__", repr(function)
    )
    detail = " ".join(str(error).split())[:300]
    return f"a worker process died while running {name} ({detail})"


class DaskExecutor(Executor):
    """The workers of an existing Dask distributed cluster (``--scheduler ADDRESS``)."""

    kind = DASK

    def __init__(self, address: str, memory_mb: int = DEFAULT_MEMORY_MB, timeout: float = 20):
        try:
            from distributed import Client
        except ImportError as error:  # a broken install: dask is a dependency
            raise SchedulerError(f"--scheduler needs dask distributed: {error}") from error
        try:
            self.client = Client(address, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as error:
            message = " ".join(str(error).split()) or type(error).__name__
            raise SchedulerError(
                f"--scheduler {address}: cannot connect to a Dask scheduler ({message})"
            ) from error
        self.address = address
        self._scattered: dict[str, Any] = {}
        workers = self.client.scheduler_info()["workers"].values()
        threads = sum(w.get("nthreads", 1) for w in workers)
        super().__init__(max(1, threads), memory_mb)

    @property
    def scheduler(self) -> str | None:
        return self.address

    def _future_of(self, shared: Shared | None) -> Any:
        """The shared state broadcast to every worker, once per ``Shared``."""
        if shared is None:
            return None
        if shared.token not in self._scattered:
            future = self.client.scatter(shared, broadcast=True, hash=False)
            self._scattered[shared.token] = future
            weakref.finalize(shared, self._scattered.pop, shared.token, None)
        return self._scattered[shared.token]

    def _tasks(
        self,
        function: Callable[[Any, Any], Any],
        shared: Shared | None,
        tasks: list[list[Any]],
        deadline: float | None,
    ) -> Iterator[tuple[int, list[Any], str]]:
        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        state = self._future_of(shared)
        name = f"audit-{uuid.uuid4().hex[:8]}"
        futures = [
            self.client.submit(
                _run_chunk, i, function, state, task, deadline, key=f"{name}-{i}", pure=False
            )
            for i, task in enumerate(tasks)
        ]
        try:
            for future in as_completed(futures, loop=self.client.loop):
                yield future.result()
        except KilledWorker as error:
            self.client.cancel(futures, force=True)
            raise WorkerLost(_lost_message(function, error)) from None
        except BaseException:
            self.client.cancel(futures, force=True)
            raise

    def close(self) -> None:
        self._scattered.clear()
        self.client.close()


def local_workers() -> int:
    """All local cores (the CPUs this process may run on)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


WORKERS_ENV = "AUDIT_WORKERS"
"""The default of ``--workers`` when set (e.g. 1 on a CI runner that runs audits side by
side); ``--workers`` and the config file win over it."""


def default_workers() -> int:
    """``AUDIT_WORKERS`` when set, else all local cores."""
    value = os.environ.get(WORKERS_ENV, "").strip()
    if not value:
        return local_workers()
    if not value.isdigit():
        raise UsageError(f"{WORKERS_ENV}={value!r}: expected a number of workers")
    return int(value) or local_workers()


def executor_for_child(parent: Executor) -> Executor:
    """An executor of ``parent``'s kind and size for a forked child process (an isolated
    analysis, ``audit_core.isolation``), whose ``close`` releases its workers.

    ``parent``'s loky pool and Dask connection do not survive ``fork`` (their threads stay
    in the parent; the pool's workers are the parent's children): the child forgets the
    inherited pool and starts its own, or connects to the scheduler again.
    """
    _forget_inherited_pool()
    if parent.kind == DASK and parent.scheduler:
        return DaskExecutor(parent.scheduler, parent.memory_mb)
    if parent.kind == PROCESSES:
        return ProcessExecutor(parent.workers, parent.memory_mb, owns_pool=True)
    return Executor(1, parent.memory_mb)


def _forget_inherited_pool() -> None:
    """In a forked child: drop joblib's module-level reference to the parent's reusable
    loky pool, so that the next ``Parallel`` starts a pool of this process."""
    if "joblib" not in sys.modules:
        return
    from joblib import executor as joblib_executor
    from joblib.externals.loky import reusable_executor

    reusable_executor._executor_lock = threading.RLock()  # may have been held at fork
    reusable_executor._executor = None
    reusable_executor._executor_kwargs = None
    joblib_executor._executor_args = None


def _shut_down_local_pool() -> None:
    """Stop this process's reusable loky pool and its workers (if it has one)."""
    if "joblib" not in sys.modules:
        return
    from joblib.externals.loky import reusable_executor

    pool = reusable_executor._executor
    if pool is not None:  # joblib's terminate also removes the pool's memmapping folder
        getattr(pool, "terminate", pool.shutdown)(kill_workers=True)
        reusable_executor._executor = None


def make_executor(
    workers: int = 0, scheduler: str | None = None, memory_mb: int = DEFAULT_MEMORY_MB
) -> Executor:
    """The run's executor: Dask with a scheduler address, else ``workers`` local processes
    (0: ``AUDIT_WORKERS``, else all local cores; 1: serial, in this process)."""
    if scheduler:
        return DaskExecutor(scheduler, memory_mb)
    count = workers or default_workers()
    if count == 1:
        return Executor(1, memory_mb)
    return ProcessExecutor(count, memory_mb)
