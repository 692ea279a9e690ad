"""Exit codes and the user-facing error types.

One place (``robustness_audit.cli``) translates these into one line on stderr and an
exit code, in the spirit of pytest's ``ExitCode`` and ``UsageError``.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Documented exit codes of the ``audit`` command."""

    OK = 0
    """Every selected analysis ran and nothing failed at or above ``--fail-on``."""
    FINDINGS_FAILED = 1
    """A finding at or above ``--fail-on`` failed (or errored)."""
    INTERRUPTED = 2
    """The run was interrupted (Ctrl-C / SIGTERM)."""
    INTERNAL_ERROR = 3
    """A bug in the tool or, with ``--strict``, a crashing analysis."""
    USAGE_ERROR = 4
    """Bad option, unreadable or unsupported model, bad data."""
    NOTHING_ANALYSED = 5
    """No analysis applied to the given models and data."""


class AuditError(Exception):
    """Base class of the errors the CLI reports as one line."""

    exit_code: ExitCode = ExitCode.INTERNAL_ERROR


class UsageError(AuditError):
    """The user asked for something that cannot be done: bad option, bad file, bad data."""

    exit_code = ExitCode.USAGE_ERROR


class ModelLoadError(UsageError):
    """The ONNX file cannot be read, fails the checker, or uses unsupported ops."""


class DataError(UsageError):
    """The audit data is unreadable or does not fit the model."""


class FidelityError(UsageError):
    """The layer graph or the torch module disagrees with onnxruntime."""


class ConfigError(UsageError):
    """Unknown option, unknown config key, or a value of the wrong type."""


class NotApplicable(Exception):
    """Raised by a geometric primitive when the model does not have the structure it needs.

    Analyses turn it into a ``skipped`` finding with the message as the reason.
    """
