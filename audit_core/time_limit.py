"""A wall-clock limit on one analysis (``--analysis-timeout``).

The limit is a ``SIGALRM`` timer: when it expires, ``AnalysisTimeout`` is raised in the
main thread wherever the analysis is (between two Python bytecodes; a long C call, e.g.
one solver call, finishes first). Units the analysis runs on the executor's workers are
cancelled as for any exception. ``AnalysisTimeout`` derives from ``BaseException`` so
that a plugin's own ``except Exception`` cannot swallow it. Outside the main thread (a
notebook's worker thread) or without ``SIGALRM`` (Windows) no limit is applied.
"""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class AnalysisTimeout(BaseException):
    """An analysis ran past its wall-clock limit."""


@contextmanager
def time_limit(seconds: float, name: str) -> Iterator[None]:
    """Raise ``AnalysisTimeout`` in this block after ``seconds`` of wall clock."""
    usable = hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()
    if not usable or not math.isfinite(seconds):
        yield
        return

    def expire(signum, frame) -> None:
        raise AnalysisTimeout(timeout_message(name, seconds))

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def timeout_message(name: str, seconds: float) -> str:
    """What ``AnalysisTimeout`` says about analysis ``name`` past its ``seconds`` limit."""
    return f"analysis {name!r} ran past its {seconds:g} s limit (--analysis-timeout)"
