"""Imports go one way: audit_core <- audit_plugins <- audit_reports <- robustness_audit (CLI, API).

Relative imports count too: ``from .x import y`` in ``reports/`` is ``audit_reports.x``."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "audit_core": "audit_core",
    "audit_plugins": "plugins",
    "audit_reports": "reports",
    "robustness_audit": "robustness_audit",
}
ENTRY = "robustness_audit"
FORBIDDEN = {
    "audit_core": {"audit_plugins", "audit_reports", "audit_model_zoo", ENTRY},
    "audit_plugins": {"audit_reports", "audit_model_zoo", ENTRY},
    "audit_reports": {"audit_plugins", "audit_model_zoo", ENTRY},
    ENTRY: set(),
}


def _module_name(path: Path) -> str:
    """The import name of a file in one of PACKAGES: ``audit_reports.html_report``."""
    relative = path.relative_to(ROOT)
    package = next(name for name, folder in PACKAGES.items() if relative.parts[0] == folder)
    parts = [package, *relative.with_suffix("").parts[1:]]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(module: str, is_package: bool, level: int, target: str | None) -> str:
    """``from <level dots><target> import ...`` in ``module``, as an absolute name."""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (level - 1)]
    if level - 1 >= len(parts) or not base:
        raise ValueError(f"relative import beyond the top-level package in {module}")
    return ".".join([*base, *([target] if target else [])])


def _imports(path: Path, module: str | None = None) -> set[str]:
    """Every module ``path`` imports (anywhere in the file), relative imports resolved
    against ``module``, its import name (default: from its place in PACKAGES)."""
    module = module or _module_name(path)
    is_package = path.name == "__init__.py"
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            base = _absolute(module, is_package, node.level, node.module)
            names |= {base} if node.module else {f"{base}.{a.name}" for a in node.names}
    return names


def _modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_import_against_the_direction(package) -> None:
    for path in _modules(PACKAGES[package]):
        roots = {name.split(".")[0] for name in _imports(path)}
        assert not roots & FORBIDDEN[package], f"{path} imports {roots & FORBIDDEN[package]}"


def test_relative_imports_are_resolved(tmp_path: Path) -> None:
    """The direction check sees ``from .x``, ``from ..x`` and ``from . import x``."""
    source = tmp_path / "writer.py"
    source.write_text(
        "from .html_report import render_html\n"
        "from .. import audit_plugins\n"
        "from . import plots, sarif\n"
        "def late():\n    from ..robustness_audit.cli import main\n"
    )
    assert _imports(source, "audit_reports.formats.writer") == {
        "audit_reports.formats.html_report",
        "audit_reports.audit_plugins",
        "audit_reports.formats.plots",
        "audit_reports.formats.sarif",
        "audit_reports.robustness_audit.cli",
    }
    package = tmp_path / "__init__.py"
    package.write_text("from .json_report import render_json\nfrom ..x import y\n")
    with pytest.raises(ValueError, match="beyond the top-level package"):
        _imports(package, "audit_reports")
    package.write_text("from .json_report import render_json\n")
    assert _imports(package, "audit_reports") == {"audit_reports.json_report"}


def test_the_cli_and_the_api_live_above_the_reports() -> None:
    """The entry package imports the renderers; nothing below it imports the entry."""
    entry_imports = set().union(*(_imports(p) for p in _modules(PACKAGES[ENTRY])))
    assert "audit_reports.writer" in {n for n in entry_imports if n.startswith("audit_reports")}
    assert not (ROOT / "audit_core" / "cli.py").exists()


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
