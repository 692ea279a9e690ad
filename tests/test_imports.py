"""Imports go one way: audit_core <- audit_plugins <- audit_reports <- robustness_audit (CLI, API).

Relative imports count too: ``from .x import y`` in ``reports/`` is ``audit_reports.x``."""

from __future__ import annotations

import ast
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
