"""``audit`` end to end, in-process: options, config files, exit codes, bad input."""

from __future__ import annotations

import dataclasses
import html
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import audit_model_zoo as zoo
from audit_core import __version__
from audit_core.attack_budget import MinimalAttackConfig
from audit_core.testing import mlp_onnx, random_mlp, save_dataset, save_model
from helpers import corpus, install_plugin, process_running

PREVIOUS = "previous report, must survive a failed run"


@pytest.fixture(autouse=True)
def only_the_attack_plugin(monkeypatch):
    """These tests exercise the CLI; one fast built-in analysis keeps them quick and stable."""
    monkeypatch.setenv("AUDIT_PLUGINS", "attack-bound")


def _assert_one_line_error(run, code: int, *needles: str) -> None:
    assert run.exit_code == code, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("audit: error: ")
    assert "Traceback" not in run.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def _previous_reports(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    for name in ("report.json", "report.html"):
        (out / name).write_text(PREVIOUS)
    return out


def _assert_untouched(out: Path) -> None:
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json"]
    for name in ("report.json", "report.html"):
        assert (out / name).read_text() == PREVIOUS


# ------------------------------------------------------------------ happy paths


def test_version(run_audit) -> None:
    run = run_audit("--version")
    assert run.exit_code == 0
    assert __version__ in run.stdout


def test_help_documents_exit_codes(capsys) -> None:
    from robustness_audit import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for code in (
        "0  every analysis ran",
        "1  a finding",
        "2  interrupted",
        "3  internal error",
        "4  usage error",
        "5  nothing could be analysed",
    ):
        assert code in text


def test_audit_writes_valid_reports(run_audit, tiny_model, tiny_data) -> None:
    from audit_reports import validate

    run = run_audit(tiny_model, "--data", tiny_data, "--eps", "0.05,0.2", "--samples", "12")
    assert run.exit_code == 0, run.stderr
    report = run.report
    validate(report)
    assert report["data"]["count"] == 12
    assert report["models"][0]["name"] == "tiny"
    assert report["models"][0]["torch_source"] == "onnx2torch"
    ran = {a["analysis"]: a["outcome"] for a in report["analyses"]}
    assert ran["attack-bound"] == "ran"
    finding = next(
        f for f in report["findings"] if f["id"].startswith("attack-bound/robust-accuracy")
    )
    names = {m["name"]: m["value"] for m in finding["metrics"]}
    assert 0.0 <= names["robust_accuracy@0.2"] <= names["robust_accuracy@0.05"] <= 1.0
    assert isinstance(names["robust_accuracy"], float)
    assert "<html" in (run.out_dir / "report.html").read_text().lower()
    assert "Audit summary" in run.stdout


def test_quiet_prints_nothing_on_success(run_audit, tiny_model, tiny_data) -> None:
    run = run_audit(tiny_model, "--data", tiny_data, "--samples", "6", "--quiet")
    assert run.exit_code == 0
    assert run.stdout == ""
    assert run.stderr == ""


def test_fail_on_gates_the_exit_code(run_audit, tiny_model, tiny_data) -> None:
    # a huge eps makes every sample non-robust: the robust-accuracy check fails (severity high)
    run = run_audit(
        tiny_model, "--data", tiny_data, "--eps", "5", "--samples", "6", "--fail-on", "high"
    )
    assert run.exit_code == 1
    assert run.report["verdict"]["passed"] is False
    relaxed = run_audit(
        tiny_model,
        "--data",
        tiny_data,
        "--eps",
        "5",
        "--samples",
        "6",
        "--fail-on",
        "critical",
        out="out2",
    )
    assert relaxed.exit_code == 0


def test_config_file_and_command_line_precedence(
    run_audit, tiny_model, tiny_data, tmp_path
) -> None:
    (tmp_path / "audit.toml").write_text(
        "eps = [0.3]\nsamples = 5\nseed = 3\n[attack-bound]\nworst-examples = 2\n"
        "[attacks]\nrestarts = 1\n"
    )
    run = run_audit(tiny_model, "--data", tiny_data, "--samples", "7")
    assert run.exit_code == 0, run.stderr
    settings = run.report["settings"]
    assert settings["samples"] == 7  # the command line wins
    assert settings["eps"] == [0.3] and settings["seed"] == 3
    config = next(a["config"] for a in run.report["analyses"] if a["analysis"] == "attack-bound")
    assert settings["attacks"]["restarts"] == 1 and config["worst_examples"] == 2


def test_pyproject_table_and_dash_o_override(run_audit, tiny_model, tiny_data, tmp_path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        "[tool.robustness-audit]\nsamples = 4\n[tool.robustness-audit.attacks]\nsteps = 7\n"
        "[tool.robustness-audit.attack-bound]\nworst-examples = 3\n"
    )
    run = run_audit(
        tiny_model,
        "--data",
        tiny_data,
        "-o",
        "attacks.steps=9",
        "-o",
        "attack-bound.worst_examples=1",
    )
    assert run.exit_code == 0, run.stderr
    assert run.report["settings"]["samples"] == 4
    assert run.report["settings"]["attacks"]["steps"] == 9
    config = next(a["config"] for a in run.report["analyses"] if a["analysis"] == "attack-bound")
    assert config["worst_examples"] == 1


def test_fidelity_tolerance_setting_reaches_the_check(
    run_audit, tiny_model, tiny_data, tmp_path
) -> None:
    (tmp_path / "audit.toml").write_text("fidelity-tolerance = 1e-5\n")
    run = run_audit(tiny_model, "--data", tiny_data, "--samples", "3")
    assert run.exit_code == 0, run.stderr
    assert run.report["models"][0]["fidelity"]["tolerance"] == 1e-5
    # float32 onnxruntime vs the float64 graph differ by ~1e-8: far above 1e-15
    (tmp_path / "audit.toml").write_text("fidelity-tolerance = 1e-15\n")
    out = _previous_reports(tmp_path)
    strict = run_audit(tiny_model, "--data", tiny_data, "--samples", "3", out=out.name)
    _assert_one_line_error(strict, 4, "tolerance 1e-15", "first disagreeing layer")
    _assert_untouched(out)


def test_export_writes_per_sample_arrays(run_audit, tiny_model, tiny_data, tmp_path) -> None:
    run = run_audit(tiny_model, "--data", tiny_data, "--samples", "8", "--export", "arrays")
    assert run.exit_code == 0
    arrays = np.load(tmp_path / "arrays" / "attack-bound.npz", allow_pickle=False)
    assert set(arrays.files) == {"index", "label", "attack_distance", "x_adv"}
    assert arrays["x_adv"].shape == (8, 4)
    distance = np.linalg.norm(arrays["x_adv"] - np.load(tiny_data)["x"][arrays["index"]], axis=1)
    found = np.isfinite(arrays["attack_distance"])
    np.testing.assert_allclose(arrays["attack_distance"][found], distance[found], rtol=1e-6)


def test_only_by_tag_and_skip_give_exit_5(run_audit, tiny_model, tiny_data) -> None:
    run = run_audit(tiny_model, "--data", tiny_data, "--skip", "attack")
    assert run.exit_code == 5
    assert run.report["analyses"] == []


def test_nothing_analysed_is_an_error_line_and_no_verdict(run_audit, tiny_model) -> None:
    for quiet in ((), ("--quiet",)):
        run = run_audit(tiny_model, *quiet)  # no data: every analysis is skipped
        _assert_one_line_error(run, 5, "nothing could be analysed", "needs audit data")
        assert run.report["verdict"]["passed"] is False
        assert "NOT ANALYSED" in (run.out_dir / "report.html").read_text()
        assert "PASSED" not in run.stdout


def test_model_zoo_model_finds_its_dataset(run_audit, tmp_path) -> None:
    weights, biases = random_mlp([3, 5, 2], seed=4)
    models = tmp_path / "zoo" / "models"
    models.mkdir(parents=True)
    rng = np.random.default_rng(1)
    save_dataset(tmp_path / "zoo" / "data.npz", rng.random((10, 3)), rng.integers(0, 2, 10))
    model = mlp_onnx(
        models / "m.onnx", weights, biases, metadata={"robustness_audit.dataset": "../data.npz"}
    )
    run = run_audit(model, "--samples", "5")
    assert run.exit_code == 0, run.stderr
    assert run.report["data"]["source"].endswith("data.npz")


def test_plugins_listing(run_audit) -> None:
    run = run_audit("plugins", "--json")
    assert run.exit_code == 0
    listing = json.loads(run.stdout)["plugins"]
    builtin = next(p for p in listing if p["name"] == "attack-bound")
    assert builtin["builtin"] is True
    assert "audit_register_analyses" in builtin["hooks"]
    assert builtin["analyses"][0]["name"] == "attack-bound"
    text = run_audit("plugins")
    assert "attack-bound" in text.stdout and "built-in" in text.stdout


def test_plugins_listing_documents_every_parameter(run_audit, monkeypatch) -> None:
    """``audit plugins`` is where a user finds each analysis's config keys and defaults."""
    monkeypatch.delenv("AUDIT_PLUGINS")
    listing = json.loads(run_audit("plugins", "--json").stdout)
    plugins = listing["plugins"]
    analyses = {a["name"]: a for p in plugins if p["builtin"] for a in p["analyses"]}
    assert len(analyses) == 7
    for name, analysis in analyses.items():
        assert analysis["parameters"], name
        for parameter in analysis["parameters"]:
            assert parameter["doc"], f"{name}.{parameter['name']} has no docstring"
    lower = {p["name"]: p for p in analyses["lower-bounds"]["parameters"]}
    assert lower["max_search_size"]["default"] == 2_000_000
    assert lower["eps_grid"]["default"] == []
    attacks = {p["name"]: p for p in listing["core"]["attacks"]}
    assert set(attacks) == set(dataclasses.asdict(MinimalAttackConfig()))
    assert all(p["doc"] for p in attacks.values()), attacks
    assert attacks["steps"]["default"] == 40 and attacks["search_radius"]["default"] == 0.0
    for name in ("attack-bound", "certificates"):  # the budget is the run's, not theirs
        keys = {p["name"] for p in analyses[name]["parameters"]}
        assert not keys & set(attacks), (name, keys & set(attacks))
    text = run_audit("plugins").stdout
    assert "lower-bounds.max_search_size = 2000000" in text
    assert "model-transfer.norms = linf,l2" in text  # as written in -o A.KEY=VALUE
    assert "attacks.steps = 40  PGD iterations per restart and bisection step." in text
    assert "attacks.bisection_steps = 10" in text


def test_dash_p_blocks_a_plugin(run_audit) -> None:
    listing = json.loads(run_audit("plugins", "--json", "-p", "no:attack-bound").stdout)
    assert "attack-bound" not in [p["name"] for p in listing["plugins"]]
    typo = run_audit("plugins", "-p", "no:atack-bound")
    _assert_one_line_error(typo, 4, "no:atack-bound", "no installed plugin", "attack-bound")


# --------------------------------------------------------------------- bad input


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


BAD_MODELS = {
    "missing": (lambda d: d / "nope.onnx", "no such file"),
    "directory": (lambda d: d, "is a directory"),
    "empty": (lambda d: _write(d / "empty.onnx", b""), "empty"),
    "truncated": (
        lambda d: _write(
            d / "cut.onnx", corpus("mnistfc/mnist-net_256x2.onnx").read_bytes()[:5000]
        ),
        "not an ONNX model",
    ),
    "text": (lambda d: _write(d / "notes.onnx", b"hello, I am not a model\n" * 20), "not an ONNX"),
    # protobuf hands back text fields that are not valid UTF-8 as bytes
    "utf8-producer": (lambda d: _invalid_utf8(d, "producer"), "model.producer_name is not valid"),
    "utf8-node-name": (lambda d: _invalid_utf8(d, "node"), "model.graph.node[0].name"),
    "utf8-metadata": (lambda d: _invalid_utf8(d, "metadata"), "model.metadata_props[0].value"),
}


def _invalid_utf8(folder: Path, field: str) -> Path:
    """A zoo model whose ``field`` holds a byte that is not valid UTF-8."""
    proto = onnx.load(str(zoo.model_path("digits_mlp2")))
    marker = "MARKER-TEXT"
    if field == "producer":
        proto.producer_name = marker
    elif field == "node":
        proto.graph.node[0].name = marker
    else:
        del proto.metadata_props[:]
        proto.metadata_props.add(key="note", value=marker)
    raw = proto.SerializeToString().replace(marker.encode(), b"\xffARKER-TEXT")
    return _write(folder / f"utf8-{field}.onnx", raw)


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_unreadable_models(run_audit, tmp_path, tiny_data, case) -> None:
    out = _previous_reports(tmp_path)
    folder = tmp_path / "models"
    folder.mkdir()
    make, needle = BAD_MODELS[case]
    run = run_audit(make(folder), "--data", tiny_data)
    _assert_one_line_error(run, 4, needle)
    _assert_untouched(out)


def test_model_failing_the_checker(run_audit, tmp_path, tiny_data) -> None:
    node = helper.make_node("Relu", ["undefined"], ["logits"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])],
    )
    path = tmp_path / "broken.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    out = _previous_reports(tmp_path)
    _assert_one_line_error(run_audit(path, "--data", tiny_data), 4, "checker")
    _assert_untouched(out)


def test_unsupported_ops_listed_together(run_audit, tmp_path, tiny_data) -> None:
    """Ops neither the layer graph nor onnx2torch converts (ops only the layer graph lacks
    load through onnx2torch: tests/test_opaque_models.py)."""
    nodes = [
        helper.make_node("Cosh", ["x"], ["a"], name="cosh"),
        helper.make_node("Sinh", ["a"], ["b"], name="sinh"),
        helper.make_node("Shrink", ["b"], ["logits"], name="shrink"),
    ]
    path = save_model(tmp_path / "hyperbolic.onnx", nodes, [], [None, 4], [None, 4])
    out = _previous_reports(tmp_path)
    run = run_audit(path, "--data", tiny_data)
    _assert_one_line_error(run, 4, "Cosh", "Sinh", "Shrink", "onnx2torch cannot convert")
    _assert_untouched(out)


def test_dynamic_shape_without_data(run_audit, tmp_path) -> None:
    node = helper.make_node("Relu", ["x"], ["logits"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "features"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "features"])],
    )
    path = tmp_path / "dynamic.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    _assert_one_line_error(run_audit(path), 4, "dynamic shape", "--data")


BAD_DATA = {
    "wrong-shape": (lambda r: {"x": r.random((5, 3)), "y": np.zeros(5, int)}, "expects [4]"),
    "wrong-dtype": (lambda r: {"x": np.array([["a"] * 4] * 5), "y": np.zeros(5, int)}, "dtype"),
    "nan": (lambda r: {"x": np.where(np.eye(5, 4) > 0, np.nan, 0.5), "y": np.zeros(5, int)}, "NaN"),
    "label-range": (
        lambda r: {"x": r.random((5, 4)), "y": np.array([0, 1, 2, 7, 0])},
        "out of range",
    ),
    "no-x": (lambda r: {"features": r.random((5, 4))}, "no array named 'x'"),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_data(run_audit, tmp_path, tiny_model, case) -> None:
    make, needle = BAD_DATA[case]
    path = tmp_path / f"{case}.npz"
    np.savez(path, **make(np.random.default_rng(0)))
    out = _previous_reports(tmp_path)
    _assert_one_line_error(run_audit(tiny_model, "--data", path), 4, needle)
    _assert_untouched(out)


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("garbage.npz", bytes(range(7, 107)), "not a .npz (zip) file"),
        ("garbage.npy", b"plain text, not numpy", "not a .npy file"),
        ("pickled.npz", pickle.dumps({"x": [1.0]}), "refusing to unpickle"),
    ],
)
def test_files_that_are_not_numpy_say_so(run_audit, tmp_path, tiny_model, name, content, needle):
    _assert_one_line_error(
        run_audit(tiny_model, "--data", _write(tmp_path / name, content)), 4, needle
    )


def test_label_file_errors_name_the_label_file(run_audit, tmp_path, tiny_model) -> None:
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((6, 4)))
    (tmp_path / "y.txt").write_text("0\n1\n2\n")
    run = run_audit(tiny_model, "--data", "x.npy", "--labels", "y.txt")
    _assert_one_line_error(run, 4, "y.txt: 3 labels for 6 samples")


def test_labels_option_with_data_that_has_labels_is_refused(
    run_audit, tmp_path, tiny_model, tiny_data
) -> None:
    np.save(tmp_path / "y.npy", np.zeros(24, dtype=np.int64))
    run = run_audit(tiny_model, "--data", tiny_data, "--labels", "y.npy")
    _assert_one_line_error(run, 4, "already holds labels", "--labels y.npy")


def test_unlabelled_data_of_the_wrong_shape_is_a_usage_error(run_audit, tmp_path, tiny_model):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((5, 3)))  # the model takes 4
    _assert_one_line_error(run_audit(tiny_model, "--data", "x.npy"), 4, "the model expects [4]")


def test_data_error_with_several_models_names_the_model(run_audit, tmp_path, tiny_data, tiny_model):
    weights, biases = random_mlp([5, 3, 2], seed=1)
    wide = mlp_onnx(tmp_path / "wide.onnx", weights, biases)
    run = run_audit(tiny_model, wide, "--data", tiny_data)
    _assert_one_line_error(run, 4, "the model expects [5]", "(model ", "wide.onnx")


def test_pickled_data_is_refused(run_audit, tmp_path, tiny_model) -> None:
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    _assert_one_line_error(run_audit(tiny_model, "--data", path), 4, "unpickle")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--frobnicate"], "unrecognized arguments"),
        (["--norm", "l7"], "invalid choice"),
        (["--eps", "-1"], "positive"),
        (["--samples", "zero"], "integer"),
        (["--format", "pdf"], "unknown format"),
        (["--only", "no-such-analysis"], "no-such-analysis"),
        (["-o", "attack-bound.nonsense=3"], "nonsense"),
        (["-o", "attacks.steps=many"], "attacks.steps must be int"),
        (["-o", "attacks.nonsense=3"], "unknown option 'nonsense' for table 'attacks'"),
        (["-o", "ghost.steps=3"], "ghost"),
        (["-o", "attacks.restarts=0"], "attacks.restarts must be at least 1"),
        (["-o", "attacks.step_fraction=0"], "attacks.step_fraction must be positive"),
        (["-o", "attack-bound.fail_below=-1"], "attack-bound.fail_below must be at least 0"),
        (["-o", "attack-bound.steps=5"], "the attack budget is one per run, set attacks.steps"),
    ],
)
def test_bad_options(run_audit, tmp_path, tiny_model, tiny_data, args, needle) -> None:
    out = _previous_reports(tmp_path)
    _assert_one_line_error(run_audit(tiny_model, "--data", tiny_data, *args), 4, needle)
    _assert_untouched(out)


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("frobnicate = 1\n", "frobnicate"),
        ("[attack-bound]\nwobble = 2\n", "wobble"),
        ("[attacks]\nwobble = 2\n", "wobble"),
        ("[attacks]\nsteps = 0\n", "audit.toml: attacks.steps must be at least 1"),
        ("[attack-bound]\nbisection-steps = 4\n", "set attacks.bisection_steps"),
        ("eps = 'lots'\n", "eps"),
        ("this is not toml", "invalid TOML"),
    ],
)
def test_bad_config_file(run_audit, tmp_path, tiny_model, tiny_data, toml, needle) -> None:
    (tmp_path / "audit.toml").write_text(toml)
    out = _previous_reports(tmp_path)
    _assert_one_line_error(run_audit(tiny_model, "--data", tiny_data), 4, needle)
    _assert_untouched(out)


def test_bad_config_value_is_an_error_even_where_the_command_line_wins(
    run_audit, tmp_path, tiny_model, tiny_data
) -> None:
    (tmp_path / "audit.toml").write_text('samples = "ten"\n')
    run = run_audit(tiny_model, "--data", tiny_data, "--samples", "3")
    _assert_one_line_error(run, 4, "audit.toml: samples: expected an integer, got 'ten'")


def test_output_path_is_a_file(run_audit, tmp_path, tiny_model, tiny_data) -> None:
    (tmp_path / "taken").write_text("a file")
    run = run_audit(tiny_model, "--data", tiny_data, "--samples", "3", out="taken")
    _assert_one_line_error(run, 4, "taken")


def test_corpus_model_with_corpus_samples(run_audit, tmp_path) -> None:
    model = shutil.copy(corpus("mnistfc/mnist-net_256x2.onnx"), tmp_path / "net.onnx")
    run = run_audit(
        model,
        "--data",
        corpus("mnistfc/mnist_samples.npz"),
        "--samples",
        "4",
        "--eps",
        "0.5",
        "-o",
        "attacks.bisection-steps=4",
    )
    assert run.exit_code == 0, run.stderr
    assert run.report["models"][0]["accuracy"] == 1.0


SLOW_PLUGIN = """
import time
from pathlib import Path
from audit_core.analysis import Analysis, Requirements
from audit_core.hookspecs import hookimpl

class Slow(Analysis):
    name = "slow"
    requires = Requirements(data=False)

    def run(self, ctx):
        Path(ctx.settings.out).parent.joinpath("started").write_text("yes")
        time.sleep(120)
        return []

@hookimpl
def audit_register_analyses(register):
    register(Slow())
"""


SLOW_UNITS_PLUGIN = """
import os
import time
from pathlib import Path
from audit_core.analysis import Analysis, Requirements
from audit_core.hookspecs import hookimpl

def unit(folder, index):
    Path(folder, f"unit-{os.getpid()}").write_text("yes")
    time.sleep(120)
    return index

class SlowUnits(Analysis):
    name = "slow-units"
    requires = Requirements(data=False)

    def run(self, ctx):
        folder = str(Path(ctx.settings.out).parent)
        ctx.executor.map(unit, range(4), shared=ctx.executor.share(folder))
        return []

@hookimpl
def audit_register_analyses(register):
    register(SlowUnits())
"""


def _interrupted_audit(tmp_path: Path, model: Path, plugin: str, source: str, *args: str):
    """``audit`` in a real process with ``plugin`` only, SIGTERM once a unit started:
    (return code, stderr, the report folder, the pids that marked a unit started)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    site = tmp_path / "site"
    site.mkdir()
    install_plugin(site, plugin, source)
    out = _previous_reports(tmp_path)
    command = [
        sys.executable,
        "-c",
        "from robustness_audit.cli import main; raise SystemExit(main())",
    ]
    env = {**os.environ, "AUDIT_PLUGINS": plugin, "PYTHONPATH": str(site)}
    process = subprocess.Popen(
        [*command, str(model), "--out", str(out), *args], stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.monotonic() + 120
    marks = lambda: list(tmp_path.glob("started")) + list(out.parent.glob("unit-*"))  # noqa: E731
    while not marks() and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    pids = [int(p.name.split("-")[1]) for p in out.parent.glob("unit-*")]
    return process.returncode, stderr, out, pids


def test_sigterm_exits_2_without_touching_the_reports(tmp_path, tiny_model) -> None:
    """A real process interrupted mid-analysis: exit code 2, previous reports intact."""
    code, stderr, out, _ = _interrupted_audit(tmp_path, tiny_model, "slow", SLOW_PLUGIN)
    assert code == 2, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    _assert_untouched(out)


def test_sigterm_while_workers_run_units_stops_them_too(tmp_path, tiny_model) -> None:
    """Interrupted while two local worker processes run units: exit code 2, one line,
    previous reports intact, and the workers are gone (their units are cancelled)."""
    import os
    import time

    code, stderr, out, pids = _interrupted_audit(
        tmp_path, tiny_model, "slow-units", SLOW_UNITS_PLUGIN, "--workers", "2"
    )
    assert code == 2, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    _assert_untouched(out)
    assert pids and os.getpid() not in pids
    deadline = time.monotonic() + 30
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in pids if process_running(pid)]
        time.sleep(0.5)
    assert not alive, f"worker processes still running: {alive}"


DYING_UNITS_PLUGIN = """
import os
from audit_core.analysis import Analysis, Requirements
from audit_core.hookspecs import hookimpl

def unit(shared, index):
    if index == 1:
        os._exit(9)  # as a segfault or the OOM killer would
    return index

class DyingUnits(Analysis):
    name = "dying-units"
    requires = Requirements(data=False)

    def run(self, ctx):
        ctx.executor.map(unit, range(4))
        return []

@hookimpl
def audit_register_analyses(register):
    register(DyingUnits())
"""


def test_a_worker_process_that_dies_is_an_error_finding(tmp_path, tiny_model) -> None:
    import os
    import subprocess
    import sys

    site = tmp_path / "site"
    site.mkdir()
    install_plugin(site, "dying-units", DYING_UNITS_PLUGIN)
    env = {**os.environ, "AUDIT_PLUGINS": "dying-units", "PYTHONPATH": str(site)}
    command = [
        sys.executable,
        "-c",
        "from robustness_audit.cli import main; raise SystemExit(main())",
    ]
    done = subprocess.run(
        [*command, str(tiny_model), "--out", str(tmp_path / "out"), "--workers", "2"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    (finding,) = [f for f in report["findings"] if f["analysis"] == "dying-units"]
    assert finding["status"] == "error"
    assert "worker process died" in json.dumps(finding)


def test_internal_errors_exit_3_with_one_line(
    run_audit, tiny_model, tiny_data, monkeypatch
) -> None:
    from audit_core import runner

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug in the tool")

    monkeypatch.setattr(runner, "_data_info", broken)
    run = run_audit(tiny_model, "--data", tiny_data, "--samples", "3")
    assert run.exit_code == 3
    assert run.stderr.strip().startswith("audit: internal error: ZeroDivisionError: a bug")
    assert "Traceback" not in run.stderr


def test_data_without_labels_is_said_in_every_report(run_audit, tiny_model, tmp_path) -> None:
    np.save(tmp_path / "x.npy", np.random.default_rng(1).random((6, 4)))
    run = run_audit(tiny_model, "--data", "x.npy", "--format", "json,html,markdown")
    assert run.exit_code == 0, run.stderr
    assert run.report["data"]["labels_from"] == "model predictions"
    assert run.report["models"][0]["accuracy"] is None
    note = "labels are the first model's own predictions"
    assert html.escape(note) in (run.out_dir / "report.html").read_text()
    assert note in (run.out_dir / "report.md").read_text().replace("\\", "")
    headline = run.finding("attack-bound/robust-accuracy/tiny")["summary"]
    assert "labels: the model's own predictions" in headline and "clean" not in headline


@pytest.mark.parametrize(
    ("option", "needle"),
    [
        ("linear-transfer.grid_points=0", "linear-transfer.grid_points must be at least 2"),
        ("lower-bounds.solver=gurobi", "lower-bounds.solver must be one of clarabel, cvxpy"),
        ("model-transfer.norms=l3", "model-transfer.norms must be one of l2, linf"),
        ("certificates.runtime_points=-1", "certificates.runtime_points must be at least 0"),
        ("kkt.slack=-0.1", "kkt.slack must be at least 0"),
        ("convex-transfer.max_scale=0", "convex-transfer.max_scale must be positive"),
        ("certificates.restarts=2", "the attack budget is one per run, set attacks.restarts"),
    ],
)
def test_out_of_range_analysis_parameters_are_usage_errors(
    run_audit, tiny_model, tiny_data, option, needle, monkeypatch
) -> None:
    """Every built-in analysis checks its parameters' ranges before anything runs."""
    monkeypatch.delenv("AUDIT_PLUGINS")
    run = run_audit(tiny_model, "--data", tiny_data, "-o", option)
    _assert_one_line_error(run, 4, needle)


def _external_data_model(folder: Path, location: str) -> Path:
    """digits_mlp2 with its tensors in external data at ``location`` (written next to the
    model as weights.bin; ``location`` is then rewritten as given)."""
    from onnx.external_data_helper import convert_model_to_external_data

    proto = onnx.load(str(zoo.model_path("digits_mlp2")))
    convert_model_to_external_data(proto, location="weights.bin", size_threshold=0)
    onnx.save(proto, folder / "model.onnx")
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(proto, folder / "model.onnx")
    return folder / "model.onnx"


def test_external_data_inside_the_model_folder_is_read(run_audit, tmp_path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    model = _external_data_model(folder, "weights.bin")
    data = zoo.dataset_path("digits_mlp2")
    run = run_audit(model, "--data", data, "--samples", "5", "--only", "attack-bound")
    assert run.exit_code == 0, run.stderr


@pytest.mark.parametrize("where", ["parent", "absolute", "symlink"])
def test_external_data_outside_the_model_folder_is_refused_unread(tmp_path, where) -> None:
    """The planted file outside is a FIFO: opening it to read would block, so an audit
    that finishes (exit 4, one line) never opened it."""
    import os
    import subprocess
    import sys

    secret = tmp_path / "secret.bin"
    os.mkfifo(secret)
    folder = tmp_path / "models"
    folder.mkdir()
    location = {"parent": "../secret.bin", "absolute": str(secret), "symlink": "link.bin"}[where]
    if where == "symlink":
        (folder / "link.bin").symlink_to(secret)
    model = _external_data_model(folder, location)
    command = [
        sys.executable,
        "-c",
        "from robustness_audit.cli import main; raise SystemExit(main())",
    ]
    done = subprocess.run(
        [*command, str(model), "--data", str(zoo.dataset_path("digits_mlp2")),
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 4, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "not a file inside the model's folder" in lines[0], lines
    assert not (tmp_path / "out").exists()


class _Stubborn:
    """A plugin whose analysis swallows exceptions, then spins forever."""

    @staticmethod
    def analysis():
        import contextlib
        import time

        from audit_core.analysis import Analysis, Requirements

        class Stubborn(Analysis):
            name = "stubborn"
            requires = Requirements(data=False)

            def run(self, ctx):
                with contextlib.suppress(Exception):  # must not swallow the timeout
                    time.sleep(120)
                while True:
                    pass

        return Stubborn()

    from audit_core.hookspecs import hookimpl

    @staticmethod
    @hookimpl
    def audit_register_analyses(register):
        register(_Stubborn.analysis())


def test_an_analysis_past_its_timeout_is_an_error_finding(
    run_audit, tiny_model, audit_register_plugin
) -> None:
    import time

    audit_register_plugin(_Stubborn, "stubborn")
    clock = time.perf_counter()
    run = run_audit(tiny_model, "--analysis-timeout", "1.5")
    assert time.perf_counter() - clock < 60
    findings = {f["analysis"]: f for f in run.report["findings"]}
    assert findings["stubborn"]["status"] == "error"
    assert "ran past its 1.5 s limit" in findings["stubborn"]["summary"]
    assert run.exit_code == 1
    # the other analyses ran
    assert any(f["status"] != "error" for a, f in findings.items() if a != "stubborn")


def test_analysis_timeout_must_be_positive(run_audit, tiny_model) -> None:
    _assert_one_line_error(run_audit(tiny_model, "--analysis-timeout", "0"), 4, "positive")


def _audit_with_file_limit(tmp_path: Path, model: Path, data: Path, out: Path, limit: int):
    """``audit`` in a real process whose files may not grow past ``limit`` bytes (as on a
    full disk, the write system call fails: EFBIG, SIGXFSZ ignored)."""
    import resource
    import signal
    import subprocess
    import sys

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    command = [
        sys.executable,
        "-c",
        "from robustness_audit.cli import main; raise SystemExit(main())",
    ]
    return subprocess.run(
        [*command, str(model), "--data", str(data), "--only", "attack-bound",
         "--out", str(out), "--quiet"],
        capture_output=True, text=True, preexec_fn=limited, cwd=tmp_path, timeout=300,
    )  # fmt: skip


def test_a_full_disk_while_writing_keeps_the_previous_reports(
    tmp_path, tiny_model, tiny_data
) -> None:
    """The report's write fails half way (the file size limit): exit 4, one line naming
    the file, the previous reports intact and no partial file left behind."""
    out = _previous_reports(tmp_path)
    done = _audit_with_file_limit(tmp_path, tiny_model, tiny_data, out, limit=20_000)
    assert done.returncode == 4, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot write to" in lines[0] and "File too large" in lines[0]
    _assert_untouched(out)


def test_an_output_folder_that_cannot_be_made_is_one_error_line(
    tmp_path, tiny_model, tiny_data
) -> None:
    """``--out`` below a regular file (no permission bits stop root, this does)."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    done = _audit_with_file_limit(tmp_path, tiny_model, tiny_data, blocker / "out", limit=2**30)
    assert done.returncode == 4, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot write to" in lines[0], done.stderr
    assert blocker.read_text() == "a file, not a folder"
