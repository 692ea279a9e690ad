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
