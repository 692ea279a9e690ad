"""audit-plugin-example: a third-party robustness-audit plugin.

It adds one analysis, ``lipschitz-certificate``: a global Lipschitz certificate
(certified l2 radius = logit margin / (sqrt(2) L), with L the product of the
spectral norms of the network's affine blocks), compared in its finding with the
local simplex certificate of Singla & Feizi (2019, Theorem 3).

The plugin is found through its entry point (``pyproject.toml``)::

    [project.entry-points.robustness_audit]
    lipschitz-certificate = "audit_lipschitz"

and implements one hook of ``audit_core.hookspecs``, ``audit_register_analyses``.
It imports ``audit_core`` only, never a built-in plugin.
"""

from __future__ import annotations

from collections.abc import Callable

from audit_core.analysis import Analysis
from audit_core.hookspecs import hookimpl

from .analysis import LipschitzCertificate, LipschitzConfig
from .norms import LipschitzBound, lipschitz_bound

__version__ = "0.1.0"

__all__ = [
    "LipschitzBound",
    "LipschitzCertificate",
    "LipschitzConfig",
    "audit_register_analyses",
    "lipschitz_bound",
]


@hookimpl
def audit_register_analyses(register: Callable[[Analysis], None]) -> None:
    """Register the ``lipschitz-certificate`` analysis."""
    register(LipschitzCertificate())
