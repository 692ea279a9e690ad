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


def test_a_plugin_never_imports_another_plugin() -> None:
    for path in _modules("plugins"):
        imported = {n for n in _imports(path) if n.startswith("audit_plugins")}
        assert not imported, f"{path} imports {imported}"
