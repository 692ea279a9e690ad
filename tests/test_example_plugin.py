"""The example third-party plugin (examples/audit-plugin-example), installed with pip.

The package is pip-installed (no dependencies, no build isolation, no index) into
a temporary ``--target`` directory that the subprocesses get on PYTHONPATH, so
the environment is not modified. They must see it in ``audit plugins``, in a
report, and its own test suite (written with the shipped fixtures) must pass.
Soundness: no attack finds an adversarial example within its certified radius.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import audit_model_zoo as zoo
from audit_core.attacks import MinimalAttackConfig, minimal_adversarial
from audit_core.onnx_import import load_onnx

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "audit-plugin-example"
TIMEOUT = 300


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> tuple[Path, Path]:
    """(site, source): the example installed into ``site``; ``source`` is its copied tree."""
    root = tmp_path_factory.mktemp("example-plugin")
    source = root / "audit-plugin-example"
    ignore = shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache")
    shutil.copytree(EXAMPLE, source, ignore=ignore)  # the build writes into its source tree
    site = root / "site"
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    command += ["--no-deps", "--no-build-isolation", "--no-index", "--target", str(site)]
    done = subprocess.run(
        [*command, str(source)], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert done.returncode == 0, done.stderr
    assert (site / "audit_lipschitz" / "__init__.py").is_file()
    return site, source


def _env(site: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "AUDIT_"))}
    env["PYTHONPATH"] = str(site)
    env.update(extra)
    return env


def _audit(site: Path, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("audit")
    module = "import sys; from robustness_audit.cli import main; sys.exit(main())"
    command = [str(script)] if script.is_file() else [sys.executable, "-c", module]
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_env(site, **env),
        timeout=TIMEOUT,
        check=False,
    )


def test_pip_installed_plugin_is_listed(example, tmp_path) -> None:
    site, _ = example
    only = "attack-bound,lipschitz-certificate"
    listing = _audit(site, "plugins", "--json", cwd=tmp_path, AUDIT_PLUGINS=only)
    assert listing.returncode == 0, listing.stderr
    plugins = {p["name"]: p for p in json.loads(listing.stdout)["plugins"]}
    plugin = plugins["lipschitz-certificate"]
    assert plugin["version"] == "0.1.0" and plugin["builtin"] is False
    assert plugin["hooks"] == ["audit_register_analyses"] and plugin["error"] is None
    (analysis,) = plugin["analyses"]
    assert analysis["name"] == "lipschitz-certificate"
    assert analysis["title"] == "Global Lipschitz certificate"
    assert analysis["tags"] == ["certified", "lipschitz"]
    parameters = {p["name"]: p for p in analysis["parameters"]}  # its config table, documented
    assert parameters["compare_with_simplex"]["default"] is True
    assert all(p["doc"] for p in parameters.values())
    assert plugins["attack-bound"]["builtin"] is True  # the built-ins still load beside it


def test_pip_installed_plugin_reaches_the_report(example, tmp_path) -> None:
    site, _ = example
    model = zoo.model_path("digits_cnn")
    run = _audit(
        site,
        str(model),
        "--samples",
        "10",
        "--format",
        "json,html,sarif",
        "--quiet",
        cwd=tmp_path,
        AUDIT_PLUGINS="lipschitz-certificate",
    )
    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / "audit-report" / "report.json").read_text(encoding="utf-8"))
    (analysis,) = report["analyses"]
    assert analysis["analysis"] == "lipschitz-certificate" and analysis["outcome"] == "ran"
    assert analysis["plugin"] == "lipschitz-certificate"
    assert analysis["headline"].startswith("L <= ")
    plugin = next(p for p in report["plugins"] if p["name"] == "lipschitz-certificate")
    assert plugin["version"] == "0.1.0" and plugin["builtin"] is False
    ids = [f["id"] for f in report["findings"]]
    assert ids == [
        "lipschitz-certificate/radius/digits_cnn",
        "lipschitz-certificate/factors/digits_cnn",
    ]
    metrics = {m["name"]: m["value"] for m in report["findings"][0]["metrics"]}
    assert metrics["lipschitz_constant"] > 0 and metrics["samples_compared"] == 10
    assert 0 <= metrics["lipschitz_tighter_fraction"] <= 1
    page = (tmp_path / "audit-report" / "report.html").read_text(encoding="utf-8")
    assert "Global Lipschitz certificate" in page and "Tsuzuku" in page
    sarif = json.loads((tmp_path / "audit-report" / "report.sarif").read_text(encoding="utf-8"))
    rules = sarif["runs"][0]["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == ["lipschitz-certificate"]


def test_example_test_suite_passes_with_the_shipped_fixtures(example) -> None:
    site, source = example
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        capture_output=True,
        text=True,
        cwd=source,
        env=_env(site),
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    tests = (
        (source / "tests" / "test_lipschitz.py").read_text(encoding="utf-8").count("\ndef test_")
    )
    assert f"{tests} passed" in done.stdout


@pytest.fixture
def lipschitz_plugin(monkeypatch, audit_register_plugin):
    """The example plugin imported from its source tree and registered for one test."""
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    import audit_lipschitz

    audit_register_plugin(audit_lipschitz, name="lipschitz-example")
    return audit_lipschitz


@pytest.mark.parametrize("name", ["digits_cnn", "digits_resnet"])
def test_no_attack_beats_the_certified_radius(name, lipschitz_plugin, audit_runner) -> None:
    run = audit_runner(
        zoo.model_path(name), "--samples", "16", "--export", "arrays", "--quiet", plugins=[]
    )
    assert run.exit_code == 0, run.stderr
    arrays = np.load(run.out_dir.parent / "arrays" / "lipschitz-certificate.npz")
    radius, index, label = arrays["radius"], arrays["index"], arrays["label"]
    assert (radius > 0).mean() >= 0.5  # a vacuous certificate would prove nothing here
    data = np.load(zoo.dataset_path(name))
    x = torch.as_tensor(data["x"][index], dtype=torch.float64)
    graph = load_onnx(zoo.model_path(name)).graph
    found = minimal_adversarial(
        graph.to_torch(),
        x,
        torch.as_tensor(label),
        norm="l2",
        config=MinimalAttackConfig(steps=20, restarts=1, bisection_steps=4, deepfool_iter=30),
        lower=0.0,
        upper=1.0,
        generator=torch.Generator().manual_seed(0),
    )
    distance = np.asarray(found.distance, dtype=np.float64)
    assert found.found.any()
    assert np.all(distance[np.asarray(found.found)] >= radius[np.asarray(found.found)])
    bound = lipschitz_plugin.lipschitz_bound(graph)
    assert bound.composed is (name != "digits_resnet")  # the residual net: node by node
