"""Pytest fixtures for plugin authors, shipped with robustness-audit.

Installed as a pytest plugin through the ``pytest11`` entry point, so every
project that has robustness-audit installed gets these fixtures without a
``conftest.py``:

``audit_model_builder``
    Tiny ONNX models and audit datasets in the test's temporary directory:
    ``audit_model_builder.mlp(weights, biases)``, ``.random_mlp([4, 16, 3], seed=0)``,
    ``.dataset(x, y, lower=0.0, upper=1.0)`` and ``.labelled_dataset(model, x)``
    (labels = the model's own predictions). Each returns the file's ``Path``.
``audit_runner``
    Run ``audit ARGS`` in-process (working directory: the test's ``tmp_path``) and
    get an ``AuditResult``: ``exit_code``, ``stdout``, ``stderr``, ``out_dir``,
    ``report`` (the JSON report as a dict), ``findings``, ``finding(id)``.
    ``plugins=[...]`` limits the entry-point plugins that load (``AUDIT_PLUGINS``).
``audit_register_plugin``
    Register a plugin object (a module, or any object with ``@hookimpl``
    functions) for one test: every audit run in the test loads it after the
    installed plugins; it is removed when the test ends.

Heavy imports (torch, onnx, the CLI) happen inside the fixtures, so that merely
having the package installed costs other test suites nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "AuditResult",
    "AuditRunner",
    "ModelBuilder",
    "PluginRegistrar",
    "audit_model_builder",
    "audit_register_plugin",
    "audit_runner",
]


# ---------------------------------------------------------------- models and data


class ModelBuilder:
    """Writes tiny ONNX models and audit datasets into ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def mlp(
        self,
        weights: Sequence[Any],
        biases: Sequence[Any] | None = None,
        *,
        name: str = "model",
        **options: Any,
    ) -> Path:
        """``Gemm -> Relu -> ... -> Gemm`` with ``weights[i]`` of shape ``(out, in)``; options
        as ``audit_core.testing.mlp_onnx`` (``activation``, ``output_activation``,
        ``metadata``, ``opset``)."""
        from audit_core.testing import mlp_onnx

        return mlp_onnx(self.directory / f"{name}.onnx", weights, biases, **options)

    __call__ = mlp

    def random_mlp(
        self, sizes: Sequence[int], *, seed: int = 0, scale: float = 1.0, name: str = "model"
    ) -> Path:
        """A ReLU MLP with layer sizes ``[in, h1, ..., K]`` and seeded random weights."""
        from audit_core.testing import random_mlp

        weights, biases = random_mlp(sizes, seed=seed, scale=scale)
        return self.mlp(weights, biases, name=name)

    def dataset(self, x: Any, y: Any = None, *, name: str = "data", **extra: Any) -> Path:
        """An audit-data ``.npz`` (``x``, ``y``, and e.g. ``lower``, ``upper``, ``class_names``)."""
        from audit_core.testing import save_dataset

        return save_dataset(self.directory / f"{name}.npz", x, y, **extra)

    def labelled_dataset(
        self,
        model: Path,
        x: Any,
        *,
        name: str = "data",
        lower: float = 0.0,
        upper: float = 1.0,
    ) -> Path:
        """A dataset labelled by ``model`` itself: every sample is correctly classified."""
        from audit_core.onnx_import import load_onnx

        labels = load_onnx(model).graph.predict(x)
        return self.dataset(x, labels, name=name, lower=lower, upper=upper)


@pytest.fixture
def audit_model_builder(tmp_path: Path) -> ModelBuilder:
    """Build tiny ONNX models and datasets from weights, in the test's ``tmp_path``."""
    directory = tmp_path / "audit-models"
    directory.mkdir(exist_ok=True)
    return ModelBuilder(directory)


# ---------------------------------------------------------------- running audits


@dataclass
class AuditResult:
    """Exit code and output of one in-process ``audit`` call."""

    exit_code: int
    stdout: str
    stderr: str
    out_dir: Path

    @property
    def report(self) -> dict[str, Any]:
        """The JSON report (``out_dir/report.json``) as a dict."""
        return json.loads((self.out_dir / "report.json").read_text(encoding="utf-8"))

    @property
    def findings(self) -> list[dict[str, Any]]:
        """The report's findings (dicts, as in the JSON report)."""
        return list(self.report["findings"])

    def finding(self, finding_id: str) -> dict[str, Any]:
        """The finding with this id (``analysis/check/model``); KeyError if absent."""
        for finding in self.findings:
            if finding["id"] == finding_id:
                return finding
        known = ", ".join(f["id"] for f in self.findings) or "none"
        raise KeyError(f"no finding {finding_id!r} (findings: {known})")


class AuditRunner:
    """Calls ``robustness_audit.cli.main`` in-process and captures what it prints."""

    def __init__(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, cwd: Path
    ) -> None:
        self._capsys, self._monkeypatch, self.cwd = capsys, monkeypatch, cwd

    def __call__(
        self, *args: str | os.PathLike[str], out: str = "out", plugins: Sequence[str] | None = None
    ) -> AuditResult:
        """Run ``audit ARGS`` (``--out OUT`` added unless given; ``plugins``: the entry-point
        plugins allowed to load, as ``AUDIT_PLUGINS``; None: all installed)."""
        from audit_core.plugins import PLUGINS_ENV
        from robustness_audit import cli

        argv = [os.fspath(a) for a in args]
        if "--out" in argv[:-1]:
            out = argv[argv.index("--out") + 1]
        elif argv[:1] != ["plugins"] and "--version" not in argv:
            argv += ["--out", out]
        if plugins is not None:
            self._monkeypatch.setenv(PLUGINS_ENV, ",".join(plugins))
        self._monkeypatch.chdir(self.cwd)
        self._capsys.readouterr()  # what the test printed before is not the audit's
        code = cli.main(argv)
        captured = self._capsys.readouterr()
        return AuditResult(int(code), captured.out, captured.err, self.cwd / Path(out))


@pytest.fixture
def audit_runner(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AuditRunner:
    """Run ``audit`` in-process in ``tmp_path``: ``result = audit_runner(model, "--data", f)``.

    The test's working directory becomes ``tmp_path`` (config files such as ``audit.toml``
    written there are read; reports go to ``tmp_path/out``)."""
    monkeypatch.chdir(tmp_path)
    return AuditRunner(capsys, monkeypatch, tmp_path)


# ---------------------------------------------------------------- registering plugins


class PluginRegistrar:
    """Registers plugin objects in ``audit_core.plugins.EXTRA_PLUGINS`` until ``close``."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def __call__(self, plugin: object, name: str | None = None) -> str:
        """Register ``plugin`` under ``name`` (default: its ``__name__``) for this test."""
        from audit_core.plugins import EXTRA_PLUGINS, entry_point_names

        name = name or str(getattr(plugin, "__name__", type(plugin).__name__))
        if name in EXTRA_PLUGINS or name in entry_point_names():
            raise ValueError(f"a plugin named {name!r} is already installed or registered")
        EXTRA_PLUGINS[name] = plugin
        self.names.append(name)
        return name

    def close(self) -> None:
        from audit_core.plugins import EXTRA_PLUGINS

        for name in self.names:
            EXTRA_PLUGINS.pop(name, None)
        self.names.clear()


@pytest.fixture
def audit_register_plugin() -> Iterator[PluginRegistrar]:
    """Register a plugin for one test: ``audit_register_plugin(my_plugin_module)``."""
    registrar = PluginRegistrar()
    try:
        yield registrar
    finally:
        registrar.close()
