"""What the ``audit`` command and the Python API share: settings merged over a config file,
the plugin host, writing the reports.

Light at import time (no torch, onnx or renderer): the CLI imports it on every start.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit_core.errors import ConfigError, UsageError
from audit_core.settings import Settings, build_settings, read_config

if TYPE_CHECKING:
    from audit_core.plugins import PluginHost
    from audit_core.runner import RunOutcome


def settings_from(
    given: Mapping[str, Any], config_path: Path | None, name: Callable[[str], str]
) -> Settings:
    """``given`` options (keys as the long command-line options) over the config file's;
    the file's own values are checked even where ``given`` wins. ``name(key)`` is how an
    option is called in errors (``--eps`` on the command line). The file's analysis tables
    become ``analysis_options``."""
    file_options, tables = read_config(config_path)
    where = {key: f"{config_path}: {key}" for key in file_options}
    build_settings(file_options, where)
    where.update({key: name(key) for key in given})
    settings = build_settings({**file_options, **given}, where)
    for option, folder in (("out", settings.out), ("export", settings.export)):
        if folder and Path(folder).exists() and not Path(folder).is_dir():
            raise ConfigError(f"{name(option)} {folder}: exists and is not a directory")
    check_formats(settings.format, name("format"))
    return replace(
        settings,
        analysis_options={table: dict(values) for table, values in tables.items()},
        config_file=str(config_path) if config_path else None,
    )


def with_tables(settings: Settings, overrides: Mapping[str, Mapping[str, Any]]) -> Settings:
    """``settings`` with per-analysis values that win over the config file's tables."""
    merged = {name: dict(values) for name, values in settings.analysis_options.items()}
    for analysis, values in overrides.items():
        merged.setdefault(analysis, {}).update(values)
    return replace(settings, analysis_options=merged)


def plugin_host(blocked: Iterable[str] = (), option: str = "blocked_plugins=") -> PluginHost:
    """A host with every installed plugin (``AUDIT_PLUGINS`` honoured) except ``blocked``;
    a blocked name that is not installed is a ``ConfigError`` (a typo must not silently
    leave the plugin loaded). ``option`` names the setting in that error."""
    from audit_core.plugins import EXTRA_PLUGINS, PluginHost, entry_point_names

    blocked = list(blocked)
    known = entry_point_names() | set(EXTRA_PLUGINS)
    unknown = [name for name in blocked if name not in known]
    if unknown:
        raise ConfigError(
            f"{option}{unknown[0]}: no installed plugin of that name "
            f"(installed: {', '.join(sorted(known)) or 'none'})"
        )
    host = PluginHost()
    host.load_entry_points(blocked)
    return host


def check_formats(formats: Sequence[str], option: str) -> None:
    """A ``ConfigError`` naming ``option`` for the first unknown report format."""
    from audit_reports.writer import FORMATS

    unknown = [name for name in formats if name not in FORMATS]
    if unknown:
        raise ConfigError(f"{option}: unknown format {unknown[0]!r} (known: {', '.join(FORMATS)})")


def write_outputs(
    outcome: RunOutcome, out: str | None, formats: Sequence[str], export: str | None
) -> list[Path]:
    """Write the reports (``formats`` into ``out``, unless None) and the per-sample arrays
    (into ``export``, unless None); return the paths written. A file system error is a
    ``UsageError`` naming the path."""
    from audit_core.exports import write_exports
    from audit_reports.writer import write_reports

    written: list[Path] = []
    try:
        if out is not None:
            written += write_reports(outcome.report, out, formats)
        if export:
            written += write_exports(outcome.exports, export)
    except OSError as error:
        raise UsageError(f"cannot write to {error.filename or out}: {error.strerror}") from error
    return written
