"""The pytest fixtures shipped for plugin authors (robustness_audit/pytest_plugin.py)."""

from __future__ import annotations

import json
from importlib import metadata
from types import SimpleNamespace

import numpy as np
import pytest

from audit_core import plugins as plugin_host
from audit_core.analysis import Analysis, Requirements
from audit_core.findings import Method, Metric, Severity, Status
from audit_core.hookspecs import hookimpl
from audit_core.onnx_import import load_onnx
from robustness_audit.pytest_plugin import PluginRegistrar


class Constant(Analysis):
    """A trivial analysis: one passing finding with the model's parameter count."""

    name = "parameter-count"
    title = "Parameter count"
    requires = Requirements(data=False)

    def run(self, ctx):
        count = ctx.model.graph.parameter_count
        yield ctx.finding(
            "count",
            title="Parameters",
            status=Status.PASS,
            severity=Severity.INFO,
            method=Method.EMPIRICAL,
            summary=f"{count} parameters",
            metrics=[Metric("parameters", count)],
        )


@hookimpl
def audit_register_analyses(register):
    register(Constant())


PLUGIN = SimpleNamespace(audit_register_analyses=audit_register_analyses, __version__="9.9")


def test_fixtures_are_shipped_through_a_pytest11_entry_point() -> None:
    found = [ep for ep in metadata.entry_points(group="pytest11") if ep.name == "robustness-audit"]
    assert [ep.value for ep in found] == ["robustness_audit.pytest_plugin"]
    assert found[0].dist.metadata["Name"] == "robustness-audit"


def test_model_builder_writes_loadable_models_and_datasets(audit_model_builder, tmp_path) -> None:
    weights = [np.eye(3, 4), np.ones((2, 3))]
    path = audit_model_builder.mlp(weights, [np.zeros(3), np.array([0.5, -0.5])], name="two")
    assert path == tmp_path / "audit-models" / "two.onnx"
    graph = load_onnx(path).graph
    assert graph.input_shape == (4,) and graph.num_classes == 2
    x = np.random.default_rng(0).random((10, 4))
    expected = np.maximum(x[:, :3], 0) @ np.ones((3, 2)) + [0.5, -0.5]
    np.testing.assert_allclose(graph.forward(x).numpy(), expected, rtol=1e-6)
    random = audit_model_builder.random_mlp([5, 7, 3], seed=1, name="random")
    assert load_onnx(random).graph.describe() == ("Input[5]", "Dense 5->7", "Relu", "Dense 7->3")
    data = audit_model_builder.labelled_dataset(random, np.random.default_rng(1).random((12, 5)))
    arrays = np.load(data)
    assert arrays["y"].tolist() == load_onnx(random).graph.predict(arrays["x"]).tolist()
    assert float(arrays["lower"]) == 0.0 and float(arrays["upper"]) == 1.0
    plain = audit_model_builder.dataset(np.zeros((2, 5)), [0, 1], name="plain", lower=-1.0)
    assert np.load(plain)["lower"] == -1.0 and "upper" not in np.load(plain)


def test_runner_returns_exit_code_report_and_findings(
    audit_runner, audit_register_plugin, audit_model_builder, tmp_path
) -> None:
    model = audit_model_builder.random_mlp([4, 6, 3], name="tiny")
    audit_register_plugin(PLUGIN, name="counting")
    print("printed by the test, not by the audit")
    result = audit_runner(model, plugins=[])
    assert result.exit_code == 0, result.stderr
    assert result.out_dir == tmp_path / "out" and (result.out_dir / "report.html").is_file()
    assert "printed by the test" not in result.stdout and "wrote" in result.stdout
    assert [f["id"] for f in result.findings] == ["parameter-count/count/tiny"]
    assert result.finding("parameter-count/count/tiny")["metrics"][0]["value"] == 4 * 6 + 6 + 21
    with pytest.raises(KeyError, match=r"no finding 'nope'.*parameter-count/count/tiny"):
        result.finding("nope")
    assert {p["name"] for p in result.report["plugins"]} == {"counting"}
    other = audit_runner(model, "--out", "elsewhere", "--quiet", plugins=[])
    assert other.out_dir == tmp_path / "elsewhere" and other.report["findings"]
    assert other.stdout == ""


def test_runner_reports_usage_errors(audit_runner, audit_model_builder) -> None:
    model = audit_model_builder.random_mlp([4, 6, 3])
    result = audit_runner(model, "--only", "no-such-analysis", plugins=[])
    assert result.exit_code == 4
    assert result.stderr.strip().startswith(
        "audit: error: unknown analysis or tag 'no-such-analysis'"
    )
    assert not (result.out_dir / "report.json").exists()


def test_runner_limits_installed_plugins(audit_runner) -> None:
    names = [p["name"] for p in json.loads(audit_runner("plugins", "--json").stdout)["plugins"]]
    assert "attack-bound" in names
    only = json.loads(audit_runner("plugins", "--json", plugins=["attack-bound"]).stdout)["plugins"]
    assert [p["name"] for p in only] == ["attack-bound"]
    assert json.loads(audit_runner("plugins", "--json", plugins=[]).stdout)["plugins"] == []


def test_registered_plugin_is_listed_and_can_be_blocked(
    audit_runner, audit_register_plugin
) -> None:
    name = audit_register_plugin(PLUGIN, name="counting")
    assert name == "counting" and plugin_host.EXTRA_PLUGINS["counting"] is PLUGIN
    (listed,) = json.loads(audit_runner("plugins", "--json", plugins=[]).stdout)["plugins"]
    assert listed["name"] == "counting" and listed["version"] == "9.9"
    assert listed["analyses"] == [
        {"name": "parameter-count", "title": "Parameter count", "tags": [], "parameters": []}
    ]
    blocked = audit_runner("plugins", "--json", "-p", "no:counting", plugins=[])
    assert json.loads(blocked.stdout)["plugins"] == []


def test_registrar_cleans_up_and_refuses_clashes() -> None:
    registrar = PluginRegistrar()
    assert registrar(PLUGIN, name="temporary") == "temporary"
    with pytest.raises(ValueError, match="already installed or registered"):
        registrar(PLUGIN, name="temporary")
    with pytest.raises(ValueError, match="'attack-bound' is already installed"):
        registrar(PLUGIN, name="attack-bound")
    module_name = registrar(json)  # a module registers under its __name__
    assert module_name == "json"
    registrar.close()
    assert "temporary" not in plugin_host.EXTRA_PLUGINS and "json" not in plugin_host.EXTRA_PLUGINS
    assert registrar.names == []
