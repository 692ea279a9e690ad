"""Shared fixtures: tiny models and datasets, the in-process ``audit`` runner.

The plugin-author fixtures (``audit_runner``, ``audit_model_builder``,
``audit_register_plugin``) come from ``robustness_audit.pytest_plugin`` through its
``pytest11`` entry point.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from audit_core.testing import mlp_onnx, random_mlp, save_dataset
from robustness_audit.pytest_plugin import AuditRunner

# pytest-xdist already runs one test per core: audits run their units serially here (and in
# the subprocesses tests start), unless a test asks for workers (tests/test_executor.py).
os.environ.setdefault("AUDIT_WORKERS", "1")


@pytest.fixture
def run_audit(audit_runner: AuditRunner) -> AuditRunner:
    """Run ``audit ARGS`` in-process with ``tmp_path`` as working directory.

    The shipped plugin-author fixture (``robustness_audit.pytest_plugin``): ``run.exit_code``,
    ``run.stdout``, ``run.stderr``, ``run.out_dir``, ``run.report`` (dict), ``run.findings``.
    """
    return audit_runner


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


@pytest.fixture
def one_torch_thread():
    """Torch on one thread for the test (timed searches behave the same with or without
    pytest-xdist)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_configure(config) -> None:
    """One torch thread per test process: ``pytest -n 2`` already uses both cores, and
    two workers with two intra-op threads each oversubscribe them (torch's reductions
    then slow down by orders of magnitude)."""
    import os

    import torch

    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
