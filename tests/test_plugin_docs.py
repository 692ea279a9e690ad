"""docs/writing-plugins.md cannot drift from the code, and every hook is exercised by a test.

The "Hooks" section of the guide is generated from ``audit_core/hookspecs.py``
(names, parameters, return types, ``firstresult``, docstrings): the test compares
it with what the guide holds between the ``hooks:start``/``hooks:end`` markers.
After changing a hook, regenerate it with::

    python tests/test_plugin_docs.py --write

The Finding fields, the Requirements fields and the shipped fixtures are checked
to appear in the guide too.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import sys
from pathlib import Path

import numpy as np

from audit_core import hookspecs
from audit_core.analysis import Requirements
from audit_core.findings import Finding
from robustness_audit import pytest_plugin

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "writing-plugins.md"
START, END = "<!-- hooks:start (generated from audit_core/hookspecs.py) -->", "<!-- hooks:end -->"


def hook_names() -> list[str]:
    """Every hook declared in hookspecs.py, in source order (parsed, not imported)."""
    tree = ast.parse((ROOT / "audit_core" / "hookspecs.py").read_text(encoding="utf-8"))
    return [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and any(_is_hookspec(d) for d in node.decorator_list)
    ]


def _is_hookspec(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return isinstance(target, ast.Name) and target.id == "hookspec"


def hooks_section() -> str:
    """The guide's hook reference, generated from hookspecs.py."""
    parts = [START, ""]
    for name in hook_names():
        parts += _hook_entry(getattr(hookspecs, name))
    parts.append(END)
    return "\n".join(parts)


def _hook_entry(function) -> list[str]:
    signature = inspect.signature(function)
    params = ", ".join(f"{p.name}: {p.annotation}" for p in signature.parameters.values())
    spec = getattr(function, f"{hookspecs.PROJECT}_spec", {}) or {}
    lines = [f"### `{function.__name__}({params}) -> {signature.return_annotation}`", ""]
    if spec.get("firstresult"):
        lines += [
            "*firstresult*: the first plugin that returns something other than `None` wins.",
            "",
        ]
    lines += _docstring(inspect.getdoc(function) or "")
    return [*lines, ""]


def _docstring(doc: str) -> list[str]:
    """reST ``:param x:`` / ``:return:`` fields as a Markdown list; the prose as it is."""
    lines: list[str] = []
    for block in re.split(r"\n(?=:(?:param \w+|return):)", doc):
        field = re.match(r":param (\w+):\s*(.*)", block, re.S) or re.match(
            r":(return):\s*(.*)", block, re.S
        )
        if field is None:
            lines += [block.strip(), ""]
            continue
        text = " ".join(field[2].split())
        label = "returns" if field[1] == "return" else f"`{field[1]}`"
        lines.append(f"- {label}: {text}")
    if lines and lines[-1] != "":
        lines.append("")
    return lines[:-1]


def guide_section(text: str) -> str:
    start, end = text.index(START), text.index(END) + len(END)
    return text[start:end]


# ---------------------------------------------------------------- tests


def test_hook_reference_is_generated_from_hookspecs() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    expected = hooks_section()
    assert guide_section(text) == expected, (
        "docs/writing-plugins.md is out of date with audit_core/hookspecs.py: "
        "run `python tests/test_plugin_docs.py --write`"
    )


def test_every_hook_and_parameter_is_documented() -> None:
    """Independent of the generator: each hook, each parameter, each docstring's first line."""
    section = guide_section(GUIDE.read_text(encoding="utf-8"))
    names = hook_names()
    assert names, "no hook found in hookspecs.py"
    assert set(names) == {n for n in vars(hookspecs) if n.startswith("audit_")}
    for name in names:
        function = getattr(hookspecs, name)
        assert f"### `{name}(" in section, name
        for parameter in inspect.signature(function).parameters:
            assert f"- `{parameter}`:" in section, f"{name}: parameter {parameter}"
        first = (inspect.getdoc(function) or "").splitlines()[0]
        assert first and first in section, name
    documented = re.findall(r"^### `(\w+)\(", section, re.M)
    assert documented == names  # nothing documented that does not exist


def test_every_hook_is_exercised_by_a_test() -> None:
    """Each hook has a ``@hookimpl`` implementation in some test (inline plugin sources count)."""
    sources = [*ROOT.joinpath("tests").glob("test_*.py")]
    sources += ROOT.joinpath("examples").glob("*/tests/test_*.py")
    text = "\n".join(path.read_text(encoding="utf-8") for path in sources)
    missing = [
        name
        for name in hook_names()
        if not re.search(rf"@hookimpl(\([^)]*\))?\s*\n\s*def {name}\(", text)
    ]
    assert missing == [], f"hooks without a test that implements them: {missing}"


def test_finding_fields_and_requirements_are_documented() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    for field in dataclasses.fields(Finding):
        assert f"| `{field.name}` |" in text, f"Finding.{field.name}"
    for field in dataclasses.fields(Requirements):
        assert f"`{field.name}" in text, f"Requirements.{field.name}"


def test_shipped_fixtures_are_documented() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    fixtures = [name for name in pytest_plugin.__all__ if name.startswith("audit_")]
    assert fixtures == ["audit_model_builder", "audit_register_plugin", "audit_runner"]
    for name in fixtures:
        assert f"`{name}`" in text, name
    assert "[project.entry-points.pytest11]" in (ROOT / "pyproject.toml").read_text()


def test_guide_links_resolve() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert (GUIDE.parent / target).exists(), target


def python_blocks(text: str) -> list[str]:
    """The guide's runnable blocks (```python); sketches use ```py and are not run."""
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_guide_examples_run(
    tmp_path, monkeypatch, audit_model_builder, audit_runner, audit_register_plugin
) -> None:
    """The guide's plugin (its hook and analysis examples) and its test, executed as written."""
    hooks, analysis, test = python_blocks(GUIDE.read_text(encoding="utf-8"))
    (tmp_path / "my_audit_plugin.py").write_text(f"{hooks}\n{analysis}", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_audit_plugin", raising=False)
    namespace: dict = {}
    exec(compile(test, "docs/writing-plugins.md", "exec"), namespace)
    namespace["test_weight_norm_fails_above_the_limit"](
        audit_model_builder, audit_runner, audit_register_plugin
    )
    out = tmp_path / "out"
    assert (out / "failing.txt").read_text() == "weight-norm/largest/model"  # audit_run_finished
    data = tmp_path / "points.txt"
    data.write_text("0.1 0.2 0.3 0.4 1\n0.5 0.5 0.5 0.5 0\n")
    model = audit_model_builder.mlp([np.eye(2, 4)], [np.zeros(2)], name="m2")
    result = audit_runner(model, "--data", data, "--out", "out2", plugins=[])
    assert result.exit_code == 0, result.stderr
    assert result.report["data"]["count"] == 2  # read by the guide's audit_load_data


def _write() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    GUIDE.write_text(text.replace(guide_section(text), hooks_section()), encoding="utf-8")


if __name__ == "__main__" and "--write" in sys.argv:
    _write()
