"""Shared fixtures: corpus paths, tiny models and datasets, an in-process ``audit`` runner."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from audit_core import cli
from audit_core.testing import mlp_onnx, random_mlp, save_dataset


@dataclass
class AuditRun:
    """Exit code and output of one in-process ``audit`` call."""

    exit_code: int
    stdout: str
    stderr: str
    out_dir: Path

    @property
    def report(self) -> dict:
        return json.loads((self.out_dir / "report.json").read_text())


@pytest.fixture
def run_audit(capsys, monkeypatch, tmp_path):
    """Run ``audit ARGS`` in-process with ``tmp_path`` as working directory."""
    monkeypatch.chdir(tmp_path)

    def run(*args: str, out: str = "out") -> AuditRun:
        argv = [str(a) for a in args]
        if argv[:1] != ["plugins"] and "--out" not in argv and "--version" not in argv:
            argv += ["--out", out]
        code = cli.main(argv)
        captured = capsys.readouterr()
        return AuditRun(code, captured.out, captured.err, tmp_path / out)

    return run


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 4-16-3 ReLU MLP with random weights."""
    weights, biases = random_mlp([4, 16, 3], seed=4)  # predicts all 3 classes on [0,1]^4
    return mlp_onnx(tmp_path_factory.mktemp("models") / "tiny.onnx", weights, biases)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, tiny_model) -> Path:
    """24 samples in [0, 1]^4 labelled by the tiny model itself (all correctly classified)."""
    from audit_core.onnx_import import load_onnx

    rng = np.random.default_rng(0)
    x = rng.random((24, 4))
    y = load_onnx(tiny_model).graph.predict(x)
    return save_dataset(tmp_path_factory.mktemp("data") / "tiny.npz", x, y, lower=0.0, upper=1.0)
