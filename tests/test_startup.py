"""The CLI starts at once: ``--version``, ``--help``, ``plugins`` and usage errors import no
heavy library (torch, onnx, onnxruntime, scipy, cvxpy, matplotlib, ...).

Checked through ``sys.modules`` in a fresh interpreter, not with a timer: machines are
noisy, imports are not. ``benchmarks/cli_startup.py`` measures the times.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import audit_reports
from audit_core.analysis import Analysis, Requirements
from audit_core.findings import Method, Metric, Severity, Status
from audit_core.hookspecs import hookimpl

HEAVY = (
    "torch",
    "torchvision",
    "onnx",
    "onnxruntime",
    "onnx2torch",
    "scipy",
    "cvxpy",
    "matplotlib",
    "sklearn",
    "networkx",
    "jsonschema",
)
LISTING_PATH = (
    "robustness_audit",
    "robustness_audit.cli",
    "robustness_audit.session",
    "audit_core.errors",
    "audit_core.settings",
    "audit_core.findings",
    "audit_core.report_model",
    "audit_core.hookspecs",
    "audit_core.analysis",
    "audit_core.data",
    "audit_core.plugins",
    "audit_reports",
    "audit_reports.writer",
)


def _heavy_after(code: str, env: dict[str, str] | None = None) -> list[str]:
    """The heavy top-level packages in ``sys.modules`` after running ``code`` afresh."""
    probe = textwrap.dedent(code) + textwrap.dedent(
        f"""
        import json, sys
        loaded = {{name.split(".")[0] for name in sys.modules}}
        print(json.dumps(sorted(loaded & set({list(HEAVY)!r}))))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_modules_on_the_listing_path_import_nothing_heavy() -> None:
    assert _heavy_after("\n".join(f"import {name}" for name in LISTING_PATH)) == []


def test_the_probe_sees_a_heavy_import() -> None:
    """The check above can fail: the runner does import torch and onnx."""
    assert {"torch", "onnx"} <= set(_heavy_after("import audit_core.runner"))


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["--version"], 0),
        (["--help"], 0),
        (["plugins"], 0),
        (["plugins", "--json"], 0),
        (["model.onnx", "--no-such-option"], 4),
        (["model.onnx", "--format", "pdf"], 4),
        (["model.onnx", "--eps", "-1"], 4),
        (["model.onnx", "-p", "no:no-such-plugin"], 4),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else str(v),
)
def test_quick_commands_import_nothing_heavy(argv: list[str], code: int, tmp_path) -> None:
    """``AUDIT_PLUGINS=`` (no plugin): the plugins' own imports are theirs to keep light."""
    env = {**os.environ, "AUDIT_PLUGINS": ""}
    heavy = _heavy_after(
        f"""
        import contextlib, io, os
        os.chdir({str(tmp_path)!r})
        from robustness_audit.cli import main
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                code = main({argv!r})
            except SystemExit as stop:  # argparse's --help
                code = stop.code
        assert code == {code}, code
        """,
        env,
    )
    assert heavy == []


def test_renderers_load_on_first_use() -> None:
    assert audit_reports.render_html.__module__ == "audit_reports.html_report"
    assert {"render_json", "write_reports", "FORMATS"} <= set(dir(audit_reports))
    with pytest.raises(AttributeError, match="no attribute 'render_pdf'"):
        _ = audit_reports.render_pdf


def test_the_torch_module_is_built_without_torchvision(tiny_model) -> None:
    """onnx2torch's torchvision converters (NonMaxSuppression, RoiAlign: ops the layer graph
    rejects) are left out while it loads, and stay importable afterwards."""
    code = f"""
        import sys
        from audit_core.onnx_import import load_onnx
        from audit_core.torch_module import build_torch_model
        loaded = load_onnx({str(tiny_model)!r})
        built = build_torch_model(loaded.proto, loaded.graph, loaded.has_batch)
        assert built.source == "onnx2torch", built.note
        assert "torchvision" not in sys.modules and "torch._dynamo" not in sys.modules
        import onnx2torch.node_converters.nms as nms
        from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY
        assert hasattr(nms, "OnnxNonMaxSuppression")
        assert any(d.operation_type == "NonMaxSuppression" for d in _CONVERTER_REGISTRY)
        """
    assert "torchvision" in _heavy_after(code)  # loaded by the explicit import at the end


def test_attack_bounds_are_checked_without_sympy() -> None:
    """``torch.broadcast_shapes`` imports sympy (0.7 s): the attacks check shapes themselves."""
    code = """
        import sys
        import torch
        from audit_core.attacks import pgd
        model = torch.nn.Linear(3, 2).double()
        x, y = torch.rand(4, 3, dtype=torch.float64), torch.zeros(4, dtype=torch.long)
        for shape in ((), (3,), (1, 3), (4, 3)):
            pgd(model, x, y, 0.1, norm="l2", lower=torch.zeros(shape), upper=torch.ones(shape))
        for bad in (torch.zeros(2), torch.zeros(4, 1, 3), torch.zeros(3, 3)):
            try:
                pgd(model, x, y, 0.1, norm="l2", lower=bad, upper=None)
            except ValueError as error:
                assert "does not broadcast" in str(error), error
            else:
                raise AssertionError(f"bound {tuple(bad.shape)} accepted")
        assert "sympy" not in sys.modules
        """
    assert "torch" in _heavy_after(code)


class _Threads(Analysis):
    """Records how many intra-op threads torch has while the analyses run."""

    name = "torch-threads"
    requires = Requirements(data=False)

    def run(self, ctx):
        import torch

        count = torch.get_num_threads()
        yield ctx.finding(
            "count",
            title="torch threads",
            status=Status.PASS,
            severity=Severity.INFO,
            method=Method.EMPIRICAL,
            summary=f"{count} threads",
            metrics=[Metric("threads", count)],
        )


class _ThreadsPlugin:
    @hookimpl
    def audit_register_analyses(self, register):
        register(_Threads())


@pytest.mark.parametrize(
    ("env", "isolate", "during"), [(None, "none", 1), ("3", "none", 2), ("3", "plugins", 1)]
)
def test_the_audit_runs_torch_on_one_thread_unless_told(
    env, isolate, during, audit_runner, audit_register_plugin, tiny_model, monkeypatch
) -> None:
    """One intra-op thread while the analyses run (``OMP_NUM_THREADS`` set: left alone, but
    an isolated analysis has one: torch's OpenMP pool does not survive ``fork``), and the
    caller's setting afterwards."""
    import torch

    before = torch.get_num_threads()
    audit_register_plugin(_ThreadsPlugin(), name="threads-probe")
    if env is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", env)
    torch.set_num_threads(2)
    try:
        result = audit_runner(
            tiny_model, "--only", "torch-threads", "--isolate", isolate, plugins=[]
        )
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert result.exit_code == 0, result.stderr
    metrics = result.finding(f"torch-threads/count/{tiny_model.stem}")["metrics"]
    assert metrics[0]["value"] == during
