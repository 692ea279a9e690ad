"""Plugin host: third-party discovery through entry points, isolation, hooks, selection.

Third-party plugins here are real distributions: a module plus a ``.dist-info``
folder with ``entry_points.txt`` on ``sys.path``, found by importlib.metadata
exactly as an installed package would be.
"""

from __future__ import annotations

import json
import sys

import pytest

from audit_core.analysis import Analysis
from audit_core.plugins import PluginHost
from helpers import install_plugin

GOOD_PLUGIN = """
from dataclasses import dataclass
from audit_core.analysis import Analysis, Requirements
from audit_core.findings import Method, Metric, Severity, Status
from audit_core.hookspecs import hookimpl

__version__ = "1.2.3"

@dataclass(frozen=True)
class Config:
    limit: float = 1000.0

class WeightNorm(Analysis):
    name = "weight-norm"
    title = "Largest weight"
    tags = ("structure",)
    requires = Requirements(data=False)
    Config = Config

    def run(self, ctx):
        largest = max(float(abs(n.layer.weight).max()) for n in ctx.model.graph.nodes
                      if getattr(n.layer, "weight", None) is not None)
        ok = largest <= ctx.config.limit
        yield ctx.finding("largest", title="Largest weight", method=Method.EMPIRICAL,
                          status=Status.PASS if ok else Status.FAIL,
                          severity=Severity.INFO if ok else Severity.MEDIUM,
                          summary=f"largest |w| = {largest:.3g}",
                          metrics=[Metric("largest_weight", largest)])

@hookimpl
def audit_register_analyses(register):
    register(WeightNorm())

@hookimpl
def audit_run_finished(report, out_dir):
    (out_dir / "weight-norm-was-here.txt").write_text(str(len(report.findings)))
"""

CRASHING_PLUGIN = """
from audit_core.analysis import Analysis, Requirements
from audit_core.hookspecs import hookimpl

class Boom(Analysis):
    name = "boom"
    title = "Always crashes"
    requires = Requirements(data=False)

    def run(self, ctx):
        raise RuntimeError("kaboom in a third-party analysis")

@hookimpl
def audit_register_analyses(register):
    register(Boom())
"""

BROKEN_IMPORT = "raise ImportError('this plugin cannot be imported')\n"

UNKNOWN_HOOK = """
from audit_core.hookspecs import hookimpl

@hookimpl
def audit_frobnicate(widget):
    return widget
"""

DUPLICATE_AND_INVALID = """
from helpers import install_plugin

from audit_core.analysis import Analysis
from audit_core.hookspecs import hookimpl

class Impostor(Analysis):
    name = "attack-bound"
    title = "Same name as a built-in"
    def run(self, ctx):
        return []

class BadName(Analysis):
    name = "Bad Name!"
    def run(self, ctx):
        return []

@hookimpl
def audit_register_analyses(register):
    register(Impostor())
    register(BadName())
    register("not an analysis")
"""

TXT_LOADER = """
import numpy as np
from audit_core.data import RawData
from audit_core.hookspecs import hookimpl

@hookimpl
def audit_load_data(path):
    if path.suffix != ".txt":
        return None
    rows = [[float(v) for v in line.split()] for line in path.read_text().splitlines()]
    table = np.array(rows)
    return RawData(x=table[:, :-1], y=table[:, -1].astype(int), source=str(path))
"""


@pytest.fixture
def site(tmp_path, monkeypatch):
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    for name in list(sys.modules):
        if name.startswith(
            ("good_plugin", "crashing", "broken", "unknown_hook", "duplicate", "txt")
        ):
            del sys.modules[name]


def test_third_party_plugin_is_listed_runs_and_is_in_the_report(
    site, run_audit, tiny_model, tiny_data
) -> None:
    install_plugin(site, "good-plugin", GOOD_PLUGIN)
    listing = {p["name"]: p for p in json.loads(run_audit("plugins", "--json").stdout)["plugins"]}
    plugin = listing["good-plugin"]
    assert plugin["version"] == "1.2.3" and plugin["builtin"] is False
    assert plugin["hooks"] == ["audit_register_analyses", "audit_run_finished"]
    assert plugin["analyses"][0] == {
        "name": "weight-norm",
        "title": "Largest weight",
        "tags": ["structure"],
        "parameters": [{"name": "limit", "default": 1000.0, "doc": ""}],  # no docstring
    }
    run = run_audit(
        tiny_model,
        "--data",
        tiny_data,
        "--only",
        "structure",
        "-o",
        "weight-norm.limit=0.001",
        "--fail-on",
        "medium",
    )
    assert run.exit_code == 1  # the third-party check failed at medium
    report = run.report
    assert [f["id"] for f in report["findings"]] == ["weight-norm/largest/tiny"]
    assert report["findings"][0]["status"] == "fail"
    assert {"name": "good-plugin", "version": "1.2.3"}.items() <= next(
        p for p in report["plugins"] if p["name"] == "good-plugin"
    ).items()
    assert (run.out_dir / "weight-norm-was-here.txt").read_text() == "1"


def test_crashing_analysis_becomes_an_error_finding(
    site, run_audit, tiny_model, tiny_data, monkeypatch
) -> None:
    install_plugin(site, "crashing", CRASHING_PLUGIN)
    monkeypatch.setenv("AUDIT_PLUGINS", "attack-bound,crashing")
    run = run_audit(tiny_model, "--data", tiny_data, "--samples", "4", "--fail-on", "high")
    assert run.exit_code == 1
    findings = {f["analysis"]: f for f in run.report["findings"]}
    assert findings["boom"]["status"] == "error"
    assert "kaboom in a third-party analysis" in findings["boom"]["traceback"]
    assert "Traceback" not in run.stderr
    assert any(f["status"] != "error" for f in run.report["findings"])  # attack-bound still ran
    # an incomplete audit fails the default gate too; only --fail-on never lets it pass
    default = run_audit(tiny_model, "--data", tiny_data, "--samples", "4")
    assert default.exit_code == 1 and default.report["verdict"]["passed"] is False
    assert "FAILED" in default.stdout
    assert run_audit(tiny_model, "--data", tiny_data, "--fail-on", "never").exit_code == 0


def test_strict_stops_at_the_crash_without_a_report(site, run_audit, tiny_model, tiny_data) -> None:
    install_plugin(site, "crashing", CRASHING_PLUGIN)
    run = run_audit(tiny_model, "--data", tiny_data, "--strict", "--only", "boom")
    assert run.exit_code == 3
    assert "kaboom" in run.stderr and "Traceback" not in run.stderr
    assert not (run.out_dir / "report.json").exists()


def test_broken_plugins_are_reported_not_fatal(
    site, run_audit, tiny_model, tiny_data, monkeypatch
) -> None:
    install_plugin(site, "broken", BROKEN_IMPORT)
    install_plugin(site, "unknown-hook", UNKNOWN_HOOK)
    install_plugin(site, "duplicate", DUPLICATE_AND_INVALID)
    monkeypatch.setenv("AUDIT_PLUGINS", "attack-bound,broken,unknown-hook,duplicate")
    listing = {p["name"]: p for p in json.loads(run_audit("plugins", "--json").stdout)["plugins"]}
    assert "cannot be imported" in listing["broken"]["error"]
    assert "audit_frobnicate" in listing["unknown-hook"]["error"]
    errors = listing["duplicate"]["error"]
    assert "already registered by attack-bound" in errors
    assert "Bad Name!" in errors and "not an audit_core.analysis.Analysis" in errors
    assert listing["attack-bound"]["error"] is None
    run = run_audit(tiny_model, "--data", tiny_data, "--samples", "4")
    assert run.exit_code == 0
    assert {a["analysis"] for a in run.report["analyses"]} == {"attack-bound"}


def test_environment_variable_limits_loading(site, run_audit, monkeypatch) -> None:
    install_plugin(site, "good-plugin", GOOD_PLUGIN)
    monkeypatch.setenv("AUDIT_PLUGINS", "good-plugin")
    names = [p["name"] for p in json.loads(run_audit("plugins", "--json").stdout)["plugins"]]
    assert names == ["good-plugin"]
    monkeypatch.setenv("AUDIT_PLUGINS", "")
    assert json.loads(run_audit("plugins", "--json").stdout)["plugins"] == []


def test_data_loader_hook_reads_a_new_format(
    site, run_audit, tiny_model, tmp_path, monkeypatch
) -> None:
    install_plugin(site, "txt-loader", TXT_LOADER)
    monkeypatch.setenv("AUDIT_PLUGINS", "attack-bound,txt-loader")
    data = tmp_path / "points.txt"
    data.write_text("0.1 0.2 0.3 0.4 1\n0.5 0.5 0.5 0.5 0\n0.9 0.1 0.9 0.1 2\n")
    run = run_audit(tiny_model, "--data", data)
    assert run.exit_code == 0, run.stderr
    assert run.report["data"]["count"] == 3


def test_built_in_analyses_are_told_from_third_party_ones(site) -> None:
    """What ``--isolate plugins`` runs in a process of its own: the third-party analyses."""
    install_plugin(site, "good-plugin", GOOD_PLUGIN)
    host = PluginHost()
    host.load_entry_points()
    assert host.is_builtin("attack-bound") and host.is_builtin("kkt")
    assert not host.is_builtin("weight-norm") and not host.is_builtin("unknown")


def test_register_validates_and_unregister_removes() -> None:
    host = PluginHost()

    class Fine(Analysis):
        name = "fine"

        def run(self, ctx):
            return []

    from types import SimpleNamespace

    from audit_core.hookspecs import hookimpl

    @hookimpl
    def audit_register_analyses(register):
        register(Fine)  # a class is instantiated

    plugin = SimpleNamespace(audit_register_analyses=audit_register_analyses)
    host.register(plugin, "inline")
    assert list(host.analyses) == ["fine"]
    assert host.select(["fine"], []) == [host.analyses["fine"]]
    with pytest.raises(KeyError):
        host.select(["unknown"], [])
    host.unregister("inline")
    assert host.analyses == {} and host.plugin_infos() == ()
