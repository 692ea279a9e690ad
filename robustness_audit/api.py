"""The Python API: the ``audit`` command as functions, for notebooks and scripts.

    import robustness_audit as ra

    report = ra.audit("model_zoo/models/digits_mlp2.onnx", only=["attack-bound"], samples=20)
    report.passed, report.findings[0].metrics, report.arrays_for("attack-bound")
    ra.render(report, "markdown")

``audit`` takes the settings of the command line as keyword arguments and returns the
report; nothing is written unless ``out=`` (reports) or ``export=`` (arrays) is given.
User mistakes raise the project's exceptions (``audit_core.errors``: ``ConfigError``,
``DataError``, ``ModelLoadError``, ``FidelityError``, all ``UsageError``); nothing is printed
unless ``progress=True``. Heavy libraries load on the first call, not on import.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from audit_core.errors import ConfigError, DataError, ModelLoadError, UsageError
from audit_core.report_model import AuditReport
from audit_core.settings import find_config_file
from robustness_audit.session import plugin_host, settings_from, with_tables, write_outputs

if TYPE_CHECKING:
    import numpy as np
    import onnx
    import torch

    from audit_core.data import RawData
    from audit_core.errors import ExitCode
    from audit_core.findings import Finding
    from audit_core.settings import Settings

PathLike: TypeAlias = "str | os.PathLike[str]"
ModelLike: TypeAlias = "str | os.PathLike[str] | onnx.ModelProto"
"""An ONNX file, or an ONNX model in memory (``onnx.ModelProto``)."""
DataLike: TypeAlias = (
    "str | os.PathLike[str] | np.ndarray | tuple[Any, Any] | Mapping[str, Any] | RawData"
)
"""A data file (.npz, .npy, .csv), samples ``x`` (an array, a list or a torch tensor;
labels: the model's predictions), the tuple ``(x, y)``, or a mapping with the arrays of
an .npz file (``x``, ``y``, ``lower``, ``upper``, ``class_names``, ``image_shape``)."""

IN_MEMORY = "in-memory arrays"
"""The data source the report names for data given as arrays."""


@dataclass(frozen=True)
class ReportWithArrays(AuditReport):
    """The ``AuditReport`` of one run plus each analysis's per-sample arrays (what
    ``--export`` writes). Every renderer takes it like any ``AuditReport``."""

    arrays: dict[tuple[str, str], dict[str, np.ndarray]] = field(
        default_factory=dict, repr=False, compare=False
    )
    """(model, export name) -> arrays; the model is ``""`` for an analysis of all models."""

    @property
    def exit_code(self) -> ExitCode:
        """The exit code ``audit`` would return for this run (0, 1 or 5)."""
        from audit_core.runner import RunOutcome

        return RunOutcome(self).exit_code

    def finding(self, finding_id: str) -> Finding:
        """The finding with this id (``analysis/check/model``); ``KeyError`` if absent."""
        for finding in self.findings:
            if finding.id == finding_id:
                return finding
        known = ", ".join(f.id for f in self.findings) or "none"
        raise KeyError(f"no finding {finding_id!r} (findings: {known})")

    def metrics(self, finding_id: str) -> dict[str, Any]:
        """A finding's metrics as ``{name: value}`` (numbers stay numbers)."""
        return {metric.name: metric.value for metric in self.finding(finding_id).metrics}

    def arrays_for(self, name: str, model: str | None = None) -> dict[str, np.ndarray]:
        """The per-sample arrays an analysis exported under ``name`` (e.g. ``attack-bound``);
        ``model`` may be left out when only one model has them. ``KeyError`` if absent."""
        found = {m: arrays for (m, n), arrays in self.arrays.items() if n == name}
        if model is not None and model in found:
            return found[model]
        if model is None and len(found) == 1:
            return next(iter(found.values()))
        known = ", ".join(f"{n} ({m or 'all models'})" for m, n in self.arrays) or "none"
        wanted = name if model is None else f"{name} for {model}"
        raise KeyError(f"no single export {wanted!r} (exports: {known})")


def audit(
    models: ModelLike | Sequence[ModelLike],
    data: DataLike | None = None,
    *,
    labels: PathLike | Any | None = None,
    eps: float | Sequence[float] | None = None,
    norm: str | None = None,
    only: str | Sequence[str] | None = None,
    skip: str | Sequence[str] | None = None,
    samples: int | None = None,
    seed: int | None = None,
    bounds: tuple[float, float] | None = None,
    fail_on: str | None = None,
    strict: bool | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    config: PathLike | None = None,
    blocked_plugins: Sequence[str] = (),
    out: PathLike | None = None,
    formats: str | Sequence[str] | None = None,
    export: PathLike | None = None,
    progress: bool = False,
    workers: int | None = None,
    scheduler: str | None = None,
    memory_budget: int | str | None = None,
    analysis_timeout: float | None = None,
    isolate: str | None = None,
) -> ReportWithArrays:
    """Audit ``models`` as ``audit MODEL... [options]`` does and return the report.

    :param models: one model or several (ONNX files or ``onnx.ModelProto``); several models
        share the data, and the multi-model analyses (model-transfer) compare them.
    :param data: the audit data (see ``DataLike``); None: a model-zoo model's own dataset,
        else no data (the analyses that need data are skipped).
    :param labels: labels for data without them (an array, or a file as ``--labels``).
    :param eps: perturbation budget(s) (``--eps``); ``norm``: ``"l2"`` or ``"linf"``.
    :param only: analyses or tags to run (``--only``); ``skip``: to leave out (``--skip``).
    :param samples: audit a seeded random subset of this many samples (default 100).
    :param seed: the seed of every random choice (default 0).
    :param bounds: input bounds ``(low, high)`` (default: the data's own, else its range).
    :param fail_on: the gate of ``report.passed`` and ``report.exit_code`` (``--fail-on``).
    :param strict: raise at the first crashing analysis instead of reporting it.
    :param options: per-analysis parameters, ``{"attack-bound": {"fail-below": 0.6}}`` (as
        ``-o attack-bound.fail-below=0.6``); they win over ``config``'s tables.
    :param config: a config file (``audit.toml`` or ``pyproject.toml``); none is read
        unless given.
    :param blocked_plugins: plugins not to load (``-p no:NAME``).
    :param out: write the reports into this directory (nothing is written without it).
    :param formats: the report formats written to ``out`` (default ``json,html``).
    :param export: write each analysis's per-sample arrays to ``export/<name>.npz``.
    :param progress: show the progress display and nothing else (default: silent).
    :param workers: local worker processes for the independent work (``--workers``;
        default: all local cores; 1: serial, in this process).
    :param scheduler: the address of an existing Dask scheduler (``--scheduler``).
    :param memory_budget: memory one audit process may use (``--memory-budget``: MiB, or
        a size such as ``"512M"``; default min(4 GiB, a quarter of the machine's memory)):
        bigger models are refused, analyses that would need more are skipped up front.
    :param analysis_timeout: wall-clock seconds per analysis and model
        (``--analysis-timeout``; applied in the main thread only, and to every isolated
        analysis).
    :param isolate: which analyses run in a child process of their own, where a crash or a
        hang is an error finding (``--isolate``): ``"plugins"`` (third-party ones; default),
        ``"all"`` or ``"none"``.
    :raises audit_core.errors.UsageError: bad settings, model or data (its subclasses
        ``ConfigError``, ``ModelLoadError``, ``DataError``, ``FidelityError``).
    :raises audit_core.runner.AnalysisCrashed: with ``strict=True``, a crashing analysis.
    """
    given = {
        "eps": eps,
        "norm": norm,
        "only": only,
        "skip": skip,
        "samples": samples,
        "seed": seed,
        "bounds": bounds,
        "fail-on": fail_on,
        "strict": strict,
        "format": formats,
        "out": None if out is None else os.fspath(out),
        "export": None if export is None else os.fspath(export),
        "workers": workers,
        "scheduler": scheduler,
        "memory-budget": memory_budget,
        "analysis-timeout": analysis_timeout,
        "isolate": isolate,
    }
    given = {key: value for key, value in given.items() if value is not None}
    if formats is not None and out is None:
        raise ConfigError("formats= needs out= (the directory the reports are written to)")
    with _model_files(models) as paths:
        data_file, raw = _data(data, labels)
        settings = settings_from(
            {**given, "models": paths, **data_file, "quiet": not progress},
            None if config is None else find_config_file(os.fspath(config), Path.cwd()),
            _keyword,
        )
        settings = with_tables(settings, _tables(options))
        return _run(settings, raw, blocked_plugins, write=out is not None)


def _run(
    settings: Settings, raw: RawData | None, blocked: Sequence[str], write: bool
) -> ReportWithArrays:
    """Run the audit of ``settings``, write what was asked, return the report with arrays."""
    from audit_core.console import ConsoleUI, QuietUI
    from audit_core.runner import run_audit

    host = plugin_host(blocked)
    ui = QuietUI() if settings.quiet else ConsoleUI()
    with ui:
        outcome = run_audit(settings, host, ui, ("robustness_audit.audit",), raw)
    if write or settings.export:
        write_outputs(outcome, settings.out if write else None, settings.format, settings.export)
        if write:
            host.hook.audit_run_finished(report=outcome.report, out_dir=Path(settings.out))
    values = {f.name: getattr(outcome.report, f.name) for f in fields(AuditReport)}
    return ReportWithArrays(**values, arrays=dict(outcome.exports))


def _keyword(key: str) -> str:
    """How a setting is named in errors: ``fail_on=`` (``formats=`` for ``--format``)."""
    return f"{KEYWORDS.get(key, key.replace('-', '_'))}="


KEYWORDS = {"format": "formats"}
"""Command-line option -> keyword argument, where the name is not the option's own."""


def _tables(options: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    if options is None:
        return {}
    if not isinstance(options, Mapping) or not all(
        isinstance(v, Mapping) for v in options.values()
    ):
        raise ConfigError(
            f"options= must map analysis names to parameter dicts, got {options!r} "
            '(e.g. {"attack-bound": {"restarts": 3}})'
        )
    return {str(name): dict(values) for name, values in options.items()}


# ------------------------------------------------------------------ models


@contextmanager
def _model_files(models: ModelLike | Sequence[ModelLike]) -> Iterator[list[str]]:
    """The models as file paths; models in memory are saved to a temporary directory that
    is removed after the run."""
    if _is_single_model(models):
        items = [models]
    elif isinstance(models, Sequence):
        items = list(models)
    else:
        raise ConfigError(f"models=: expected ONNX files or models, got {type(models).__name__}")
    if not items:
        raise ConfigError("models=: no model given")
    with tempfile.TemporaryDirectory(prefix="robustness-audit-") as folder:
        yield [_model_file(item, Path(folder), index) for index, item in enumerate(items)]


def _is_single_model(models: Any) -> bool:
    return isinstance(models, str | os.PathLike) or hasattr(models, "SerializeToString")


def _model_file(model: Any, folder: Path, index: int) -> str:
    if isinstance(model, str | os.PathLike):
        return os.fspath(model)
    if not hasattr(model, "SerializeToString"):
        raise ConfigError(
            f"models=: expected ONNX files or onnx.ModelProto, got {type(model).__name__}"
        )
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", model.graph.name or "") or "model"
    path = folder / str(index) / f"{name}.onnx"
    path.parent.mkdir()
    path.write_bytes(model.SerializeToString())
    return os.fspath(path)


# -------------------------------------------------------------------- data


def _data(data: DataLike | None, labels: Any) -> tuple[dict[str, str], RawData | None]:
    """(``data``/``labels`` settings for a file, or arrays as ``RawData``)."""
    if data is not None and not isinstance(data, str | os.PathLike):
        return {}, _with_labels(_raw(data), labels)
    options = {} if data is None else {"data": os.fspath(data)}
    if labels is not None and not isinstance(labels, str | os.PathLike):
        raise ConfigError("labels=: labels as an array go with data as arrays, not a data file")
    if labels is not None:
        options["labels"] = os.fspath(labels)
    return options, None


def _raw(data: Any) -> RawData:
    from audit_core.data import DATA_KEYS, RawData, raw_from_arrays

    if isinstance(data, RawData):
        return data
    if isinstance(data, Mapping):
        unknown = sorted(set(data) - set(DATA_KEYS))
        if unknown:
            raise DataError(f"data=: unknown array {unknown[0]!r} (known: {', '.join(DATA_KEYS)})")
        return raw_from_arrays(data, IN_MEMORY)
    if isinstance(data, tuple):
        if len(data) != 2:
            raise DataError(f"data=: expected (x, y), got a sequence of {len(data)} items")
        return raw_from_arrays({"x": _array(data[0]), "y": _array(data[1])}, IN_MEMORY)
    return raw_from_arrays({"x": _array(data)}, IN_MEMORY)


def _array(values: Any) -> np.ndarray:
    """``values`` as a numpy array (a torch tensor is detached and moved to the CPU)."""
    import numpy as np

    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def _with_labels(raw: RawData, labels: Any) -> RawData:
    from dataclasses import replace

    from audit_core.data import read_data_labels

    if labels is None:
        return raw
    if raw.y is not None:
        raise DataError("labels=: the data holds labels already (y)")
    if isinstance(labels, str | os.PathLike):
        return replace(raw, y=read_data_labels(Path(labels)), labels_source=os.fspath(labels))
    return replace(raw, y=_array(labels), labels_source="labels=")


# ------------------------------------------------------------------ render


def render(
    report: AuditReport | Mapping[str, Any] | PathLike,
    fmt: str = "html",
    path: PathLike | None = None,
) -> str:
    """The report as text in ``fmt`` (json, html, sarif, junit, markdown), also written to
    ``path`` when given. ``report``: an ``AuditReport``, or a JSON report (its dict, or the
    path of a ``report.json``) to render in another format."""
    from audit_reports.writer import FORMATS, RENDERERS

    if fmt not in FORMATS:
        raise ConfigError(f"fmt=: unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    text = RENDERERS[fmt].render(_as_report(report))
    if path is not None:
        try:
            Path(path).write_text(text, encoding="utf-8")
        except OSError as error:
            raise UsageError(f"cannot write to {os.fspath(path)}: {error.strerror}") from error
    return text


def _as_report(report: Any) -> AuditReport:
    if isinstance(report, AuditReport):
        return report
    import json

    from jsonschema import ValidationError

    from audit_reports.json_report import from_dict

    document = report
    if isinstance(report, str | os.PathLike):
        try:
            document = json.loads(Path(report).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise DataError(f"{os.fspath(report)}: not a readable JSON report ({error})") from error
    try:
        return from_dict(document)
    except ValidationError as error:
        raise DataError(f"report=: not a valid JSON report ({error.message})") from error


# ------------------------------------------------------------------- torch


def export_onnx(
    module: torch.nn.Module, example_input: torch.Tensor, path: PathLike, opset: int = 17
) -> Path:
    """Export ``module`` (in eval mode) to ONNX at ``path`` with ``torch.onnx.export``: one
    input ``input`` whose first axis is the batch (``example_input`` holds a batch, e.g.
    ``torch.zeros(1, 64)``), one output ``logits``. Uses the TorchScript exporter
    (``dynamo=False``): the dynamo exporter needs ``onnxscript``, not a dependency."""
    import torch

    if not isinstance(module, torch.nn.Module) or not isinstance(example_input, torch.Tensor):
        raise ConfigError("export_onnx: expected a torch.nn.Module and one example input tensor")
    path = Path(path)
    was_training = module.training
    module.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                module,
                (example_input,),
                os.fspath(path),
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=opset,
                dynamo=False,
            )
    except Exception as error:  # torch raises many types (shape mismatch, unsupported op)
        first = (str(error).strip().splitlines() or [""])[0]
        raise ModelLoadError(
            f"torch.onnx.export of {type(module).__name__} failed: {type(error).__name__}: {first}"
        ) from error
    finally:
        module.train(was_training)
    return path


def audit_torch(
    module: torch.nn.Module,
    example_input: torch.Tensor,
    data: DataLike | None = None,
    *,
    name: str | None = None,
    **settings: Any,
) -> ReportWithArrays:
    """Export ``module`` to ONNX in a temporary directory (``export_onnx``) and ``audit``
    it; the model is called ``name`` in the report (default: the module's class name).
    ``settings``: the keyword arguments of ``audit``."""
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", name or type(module).__name__) or "model"
    with tempfile.TemporaryDirectory(prefix="robustness-audit-torch-") as folder:
        path = export_onnx(module, example_input, Path(folder) / f"{label}.onnx")
        return audit(path, data, **settings)
