"""Plugin host: entry-point discovery with per-plugin isolation, analysis registry.

Every plugin, built-in or third-party, is an entry point in the
``robustness_audit`` group. Each loads in its own try/except; a plugin that
fails to import, implements an unknown hook, or registers an invalid analysis
is reported (``audit plugins``, report header), not fatal.

``AUDIT_PLUGINS`` (comma-separated entry-point names; empty = none) limits
which plugins load; ``-p no:NAME`` blocks one.

``EXTRA_PLUGINS`` is the one in-process extension point: plugin objects put there
(by the ``audit_register_plugin`` pytest fixture, for one test) are registered
after the entry points by every ``PluginHost``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from audit_core import hookspecs
from audit_core.analysis import Analysis, validate_analysis
from audit_core.report_model import PluginInfo

PLUGINS_ENV = "AUDIT_PLUGINS"
BUILTIN_DISTRIBUTION = "robustness-audit"

EXTRA_PLUGINS: dict[str, object] = {}
"""Plugins registered in-process, name -> plugin object (a module or any object with
``@hookimpl`` functions). ``PluginHost.load_entry_points`` registers them after the
entry points; ``-p no:NAME`` blocks them, ``AUDIT_PLUGINS`` does not (they were asked
for explicitly). Tests use it through the ``audit_register_plugin`` fixture
(``robustness_audit.pytest_plugin``), which removes the plugin again after the test."""


@dataclass
class _PluginRecord:
    name: str
    version: str
    builtin: bool
    hooks: tuple[str, ...] = ()
    analyses: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class PluginHost:
    """A pluggy manager plus the registry of analyses the plugins registered."""

    def __init__(self) -> None:
        self.manager = pluggy.PluginManager(hookspecs.PROJECT)
        self.manager.add_hookspecs(hookspecs)
        self.analyses: dict[str, Analysis] = {}
        self.owner: dict[str, str] = {}
        self._records: dict[str, _PluginRecord] = {}

    # ------------------------------------------------------------- loading
    def load_entry_points(self, blocked: Iterable[str] = ()) -> None:
        """Load every entry point of the group, honouring ``AUDIT_PLUGINS`` and ``blocked``,
        then the in-process ``EXTRA_PLUGINS`` (honouring ``blocked``)."""
        allowed = _allowed_from_env()
        blocked = set(blocked)
        for entry_point in _entry_points():
            if entry_point.name in blocked or (
                allowed is not None and entry_point.name not in allowed
            ):
                continue
            self._load_entry_point(entry_point)
        for name, plugin in list(EXTRA_PLUGINS.items()):
            if name not in blocked:
                self.register(plugin, name)

    def _load_entry_point(self, entry_point: metadata.EntryPoint) -> None:
        dist = entry_point.dist
        record = _PluginRecord(
            name=entry_point.name,
            version=dist.version if dist else "unknown",
            builtin=bool(dist) and dist.metadata["Name"] == BUILTIN_DISTRIBUTION,
        )
        self._records[entry_point.name] = record
        try:
            plugin = entry_point.load()
        except Exception as error:  # any import-time failure of third-party code
            record.errors.append(f"failed to load: {type(error).__name__}: {error}")
            return
        self.register(plugin, entry_point.name, record)

    def register(
        self, plugin: ModuleType | object, name: str, record: _PluginRecord | None = None
    ) -> None:
        """Register one plugin object (also used by tests and the plugin-author fixtures)."""
        if record is None:
            record = _PluginRecord(name, _version_of(plugin), builtin=False)
            self._records[name] = record
        try:
            self.manager.register(plugin, name=name)
            self.manager.check_pending()
        except (pluggy.PluginValidationError, ValueError) as error:
            if self.manager.is_registered(plugin):
                self.manager.unregister(plugin)
            record.errors.append(f"invalid plugin: {error}")
            return
        record.hooks = tuple(
            sorted(caller.name for caller in self.manager.get_hookcallers(plugin) or ())
        )
        self._collect_analyses(plugin, record)

    def unregister(self, name: str) -> None:
        """Remove a plugin and its analyses (test helper)."""
        plugin = self.manager.get_plugin(name)
        if plugin is not None:
            self.manager.unregister(plugin)
        for analysis in [a for a, owner in self.owner.items() if owner == name]:
            del self.analyses[analysis], self.owner[analysis]
        self._records.pop(name, None)

    def _collect_analyses(self, plugin: object, record: _PluginRecord) -> None:
        impl = getattr(plugin, "audit_register_analyses", None)
        if impl is None:
            return

        def register(analysis: Any) -> None:
            try:
                valid = validate_analysis(analysis)
            except ValueError as error:
                record.errors.append(f"rejected analysis: {error}")
                return
            if valid.name in self.analyses:
                record.errors.append(
                    f"rejected analysis {valid.name!r}: "
                    f"already registered by {self.owner[valid.name]}"
                )
                return
            self.analyses[valid.name] = valid
            self.owner[valid.name] = record.name
            record.analyses.append(valid.name)

        try:
            impl(register=register)
        except Exception as error:  # third-party registration code
            record.errors.append(f"audit_register_analyses failed: {type(error).__name__}: {error}")

    # ------------------------------------------------------------- queries
    @property
    def hook(self) -> Any:
        return self.manager.hook

    def is_builtin(self, analysis: str) -> bool:
        """Whether ``analysis`` comes from a plugin of this distribution (not a third party's)."""
        record = self._records.get(self.owner.get(analysis, ""))
        return record is not None and record.builtin

    def plugin_infos(self) -> tuple[PluginInfo, ...]:
        return tuple(
            PluginInfo(
                name=r.name,
                version=r.version,
                hooks=r.hooks,
                analyses=tuple(r.analyses),
                builtin=r.builtin,
                error="; ".join(r.errors),
            )
            for r in self._records.values()
        )

    def select(self, only: Iterable[str], skip: Iterable[str]) -> list[Analysis]:
        """Analyses matching ``only`` (names or tags; all if empty) minus ``skip``.

        Raises ``KeyError`` naming the first unknown name or tag.
        """
        only, skip = list(only), list(skip)
        known = set(self.analyses) | {t for a in self.analyses.values() for t in a.tags}
        for name in only + skip:
            if name not in known:
                raise KeyError(name)
        chosen = [a for a in self.analyses.values() if not only or _matches(a, only)]
        return [a for a in chosen if not _matches(a, skip)]


def _matches(analysis: Analysis, names: list[str]) -> bool:
    return analysis.name in names or any(tag in names for tag in analysis.tags)


def _allowed_from_env() -> set[str] | None:
    value = os.environ.get(PLUGINS_ENV)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def entry_point_names() -> set[str]:
    """Names of the installed plugins (entry points of the ``robustness_audit`` group)."""
    return {entry_point.name for entry_point in _entry_points()}


def _entry_points() -> list[metadata.EntryPoint]:
    found = metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP)
    unique = {ep.name: ep for ep in found}
    return sorted(unique.values(), key=lambda ep: (ep.dist is None, ep.name))


def _version_of(plugin: object) -> str:
    return str(getattr(plugin, "__version__", "unknown"))
