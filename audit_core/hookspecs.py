"""The plugin contract: every hook a plugin may implement.

Plugins are modules or objects with functions marked ``@hookimpl`` (import it
from ``audit_core.hookspecs``), exposed through the ``robustness_audit``
entry-point group. Built-in analyses use exactly this contract.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from audit_core.analysis import Analysis
    from audit_core.data import RawData
    from audit_core.report_model import AuditReport

PROJECT = "robustness_audit"
ENTRY_POINT_GROUP = "robustness_audit"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def audit_register_analyses(register: Callable[[Analysis], None]) -> None:
    """Register this plugin's analyses.

    :param register: call it once per analysis with an ``Analysis`` instance
        (a subclass of ``audit_core.analysis.Analysis``). The core validates the
        analysis (name, config dataclass, ``run`` method) and rejects duplicate
        names; a rejected analysis is reported in ``audit plugins``, the others
        still load.
    """


@hookspec(firstresult=True)
def audit_load_data(path: Path) -> RawData | None:
    """Read an audit-data file in a format the core does not know.

    Called before the built-in readers (.npz, .npy, .csv); the first plugin that
    returns a ``RawData`` wins.

    :param path: the file given with ``--data``.
    :return: the arrays, or ``None`` to let other plugins / the core try.
    """


@hookspec
def audit_run_finished(report: AuditReport, out_dir: Path) -> None:
    """Called once after the reports were written (not on usage errors).

    :param report: the complete, immutable report of the run.
    :param out_dir: the directory the reports were written to.
    """
