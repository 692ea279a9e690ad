"""Imports go one way: audit_core <- audit_plugins <- audit_reports <- CLI."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
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


PLUGIN_PACKAGES = sorted(p.parent.name for p in (ROOT / "plugins").glob("*/__init__.py"))


def test_every_built_in_plugin_is_a_package() -> None:
    """plugins/ holds one package per plugin (hook in __init__, computation modules,
    findings.py) and nothing else."""
    loose = sorted(p.name for p in (ROOT / "plugins").glob("*.py") if p.name != "__init__.py")
    assert loose == []
    assert PLUGIN_PACKAGES == ["attack_bound", "certificates", "kkt", "lower_bounds", "transfer"]
    for package in PLUGIN_PACKAGES:
        assert (ROOT / "plugins" / package / "findings.py").is_file(), package


def _family_of_module(module: str) -> str:
    """The plugin an ``audit_plugins.X[.Y]`` import belongs to: X."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_a_plugin_never_imports_another_plugin() -> None:
    """A plugin's modules import the core and their own package, nothing else of plugins/."""
    for path in _modules("plugins"):
        family = path.relative_to(ROOT / "plugins").parts[0]
        imported = {n for n in _imports(path) if n.startswith("audit_plugins")}
        foreign = {n for n in imported if _family_of_module(n) != family}
        assert not foreign, f"{path} imports another plugin: {foreign}"


HEAVY = {"torch", "scipy", "cvxpy", "sklearn", "networkx", "matplotlib", "onnx", "onnxruntime"}
LOADED_BY = """
import json, sys
import audit_core.analysis, audit_core.findings, audit_core.hookspecs
before = set(sys.modules)
import audit_plugins.{package}
print(json.dumps(sorted(set(sys.modules) - before)))
"""


@pytest.mark.parametrize("package", PLUGIN_PACKAGES)
def test_a_plugin_package_loads_only_its_hook_and_config(package) -> None:
    """``audit plugins`` and ``--help`` load every plugin: a package's ``__init__`` (hook,
    Analysis, Config) imports no heavy library and none of its computation modules beyond
    what the core's plugin contract already loads; ``run()`` imports them."""
    done = subprocess.run(
        [sys.executable, "-c", LOADED_BY.format(package=package)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    added = set(json.loads(done.stdout))
    assert {m.split(".")[0] for m in added} & HEAVY == set(), added
    assert added <= {"audit_plugins", f"audit_plugins.{package}"}, added
