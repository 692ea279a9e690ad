"""``.ci/run`` installs from scratch and runs exactly the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    block = re.search(
        r"## The two commands.*?```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S
    )
    assert block, "README.md has no '## The two commands' sh block"
    return [line for line in block[1].splitlines() if line and not line.startswith("#")]


def test_ci_runs_the_readmes_test_command_after_a_clean_install() -> None:
    setup_and_audit, setup_and_test = _readme_commands()
    assert "pytest" in setup_and_test and "audit " in setup_and_audit
    lines = [
        line
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert "rm -rf .venv" in lines  # a fresh environment every run
    assert lines[-1] == setup_and_test  # verbatim, and nothing installed outside it
    assert lines.index("rm -rf .venv") < len(lines) - 1
    for command in (setup_and_audit, setup_and_test):
        assert "python3 -m venv .venv" in command and "pip install" in command


def test_the_browser_install_step_targets_the_paths_the_browser_test_uses() -> None:
    script = (ROOT / "tools" / "install-test-browser.sh").read_text()
    browser_test = (ROOT / "tests" / "test_report_browser.py").read_text()
    for path in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        assert path in script and path in browser_test
    assert "apt-get install" in script and "chromium-driver" in script


def test_every_package_folder_is_shipped() -> None:
    """``[tool.setuptools] packages`` lists every folder with an ``__init__.py`` (an
    editable install finds unlisted subpackages; a wheel would not)."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for name, folder in config["package-dir"].items():
        for init in (root / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(root / folder)
            found.add(".".join((name, *relative.parts)))
    assert found == listed
