"""Unit functions for tests/test_executor.py: module-level, so that worker processes
import them by reference (``function(shared, unit)``)."""

from __future__ import annotations

import os
import time

import numpy as np


def scaled(shared: np.ndarray, unit: int) -> float:
    """A unit that reads the shared array: ``shared[unit] * 2``."""
    return float(shared[unit] * 2)


def seeded(shared: int, unit: int) -> float:
    """A unit whose randomness depends on the unit (never on the worker)."""
    return float(np.random.default_rng([shared, unit]).normal())


def where(shared: object, unit: int) -> int:
    """The process id the unit ran in."""
    return os.getpid()


def failing(shared: object, unit: int) -> int:
    if unit == 3:
        raise ValueError(f"unit {unit} is broken")
    return unit


def dying(shared: object, unit: int) -> int:
    """Unit 2 kills its worker process outright (as a segfault would)."""
    if unit == 2:
        os._exit(9)
    return unit


def sleeping(shared: float, unit: int) -> tuple[int, float]:
    """Sleeps ``shared`` seconds; returns the unit and the wall-clock time it started."""
    started = time.time()
    time.sleep(shared)
    return unit, started


def mapped_bytes_for_array(shared: object = None, unit: object = None) -> int:
    """How many bytes glibc's ``mmap``-ed blocks grow by while a 4 MiB array is alive:
    about 4 MiB when large arrays are mapped afresh, 0 when they come from the heap."""
    before = _mapped_bytes()
    array = np.ones(1 << 19)  # 4 MiB of float64
    grown = _mapped_bytes() - before
    del array
    return grown


def nanny_trim_threshold(shared: object = None, unit: object = None) -> str | None:
    """The process's ``MALLOC_TRIM_THRESHOLD_`` (a Dask nanny sets it)."""
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def _mapped_bytes() -> int:
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]  # fmt: skip

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    return int(libc.mallinfo2().hblkhd)
