"""Imports go one way: audit_core <- audit_plugins <- audit_reports <- CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"audit_core": "audit_core", "audit_plugins": "plugins", "audit_reports": "reports"}
FORBIDDEN = {
    "audit_core": {"audit_plugins", "audit_reports", "audit_model_zoo"},
    "audit_plugins": {"audit_reports", "audit_model_zoo"},
    "audit_reports": {"audit_plugins", "audit_model_zoo"},
}
ENTRY_POINT = "audit_core/cli.py"  # the CLI entry ties reports in


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_import_against_the_direction(package) -> None:
    for path in _modules(PACKAGES[package]):
        if path.relative_to(ROOT).as_posix() == ENTRY_POINT:
            continue
        roots = {name.split(".")[0] for name in _imports(path)}
        assert not roots & FORBIDDEN[package], f"{path} imports {roots & FORBIDDEN[package]}"


PLUGIN_MODULES = sorted(
    (p.stem for p in (ROOT / "plugins").glob("*.py") if not p.stem.startswith("_")),
    key=len,
    reverse=True,
)


def _family(module: str) -> str:
    """The plugin a module belongs to: ``lower_bounds`` for ``_lower_bounds_graph``."""
    name = module.rsplit(".", 1)[-1]
    if not name.startswith("_"):
        return name
    owner = next((p for p in PLUGIN_MODULES if name[1:].startswith(p + "_")), None)
    return owner or name


def test_a_plugin_never_imports_another_plugin() -> None:
    """A plugin may import its own private helpers (``_<plugin>_*.py``), nothing else."""
    for path in _modules("plugins"):
        family = _family(path.stem)
        imported = {n for n in _imports(path) if n.startswith("audit_plugins")}
        foreign = {n for n in imported if _family(n) != family}
        assert not foreign, f"{path} imports another plugin: {foreign}"
