"""The runner: load models and data, plan which analyses apply, run them, assemble the report.

A crashing analysis becomes an ``error`` finding and the others still run
(``--strict`` stops instead). The analyses of third-party plugins (``--isolate``: or all,
or none) run in a child process of their own (``audit_core.isolation``), where a segfault,
``os._exit`` or a hang in native code is an ``error`` finding too. Skipped analyses are
recorded with their reason.
Nothing is written here: the caller renders and writes the report.
"""

from __future__ import annotations

import time
import traceback
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from audit_core import __version__
from audit_core.analysis import Analysis, AuditContext, Progress, build_config
from audit_core.attack_budget import ATTACKS_TABLE, MinimalAttackConfig
from audit_core.attack_service import AttackService, attack_config
from audit_core.data import (
    AuditData,
    RawData,
    read_data,
    subsample,
    validate,
    with_label_file,
)
from audit_core.errors import AuditError, ConfigError, DataError, ExitCode, NotApplicable
from audit_core.executor import Executor, executor_for_child, make_executor
from audit_core.findings import (
    RUN_WIDE,
    Finding,
    Method,
    Severity,
    Status,
    error_finding,
    finding_id,
)
from audit_core.isolation import ProcessDied, ProcessStuck, run_forked, supported
from audit_core.memory import MIB
from audit_core.model import AuditedModel, audited, bundled_dataset
from audit_core.onnx_import import LoadedModel, load_onnx
from audit_core.plugin_faults import captured_output, checked_findings
from audit_core.plugins import PluginHost
from audit_core.report_model import AnalysisRun, AuditReport, DataInfo
from audit_core.settings import Settings
from audit_core.time_limit import AnalysisTimeout, time_limit


class AnalysisCrashed(AuditError):
    """``--strict``: an analysis raised; the run stops with exit code 3."""

    exit_code = ExitCode.INTERNAL_ERROR


class RunUI(Protocol):
    """What the runner tells the user while it works (see ``audit_core.console``)."""

    def status(self, text: str) -> None: ...

    def start(self, analysis: Analysis, model: str) -> Progress: ...

    def finish(self, run: AnalysisRun) -> None: ...


@dataclass
class RunOutcome:
    """The report plus the per-analysis arrays for ``--export``."""

    report: AuditReport
    exports: dict[tuple[str, str], dict[str, np.ndarray]] = field(default_factory=dict)

    @property
    def exit_code(self) -> ExitCode:
        if not self.report.analysed:
            return ExitCode.NOTHING_ANALYSED
        if self.report.gate_failures():
            return ExitCode.FINDINGS_FAILED
        return ExitCode.OK


@dataclass
class _Plan:
    analyses: list[Analysis]
    configs: dict[str, Any]
    attacks: MinimalAttackConfig
    """The run's one attack budget (the ``[attacks]`` table)."""


def run_audit(
    settings: Settings,
    host: PluginHost,
    ui: RunUI,
    command: Sequence[str] = (),
    raw_data: RawData | None = None,
) -> RunOutcome:
    """Run every selected analysis on every model; return the report (nothing is written).

    ``raw_data``: audit data already in memory (the Python API), instead of ``settings.data``.
    """
    started, clock = _now(), time.perf_counter()
    plan = _plan(settings, host)
    with make_executor(settings.workers, settings.scheduler, settings.memory_budget) as executor:
        models, data = load_models_and_data(settings, ui, host, raw_data)
        runs, findings, exports = _run_all(plan, models, data, settings, ui, host, executor)
    report = AuditReport(
        tool_version=__version__,
        started_at=started,
        finished_at=_now(),
        seconds=round(time.perf_counter() - clock, 3),
        seed=settings.seed,
        command=tuple(command),
        settings={**settings.as_dict(), ATTACKS_TABLE: _config_dict(plan.attacks)},
        fail_on=settings.fail_on,
        models=tuple(m.info(_accuracy(m, data)) for m in models),
        data=_data_info(data),
        plugins=host.plugin_infos(),
        analyses=tuple(runs),
        findings=tuple(findings),
        execution=executor.info().as_dict(),
    )
    return RunOutcome(report, exports)


def _run_all(
    plan: _Plan,
    models: list[AuditedModel],
    data: AuditData | None,
    settings: Settings,
    ui: RunUI,
    host: PluginHost,
    executor: Executor,
) -> tuple[list[AnalysisRun], list[Finding], dict[tuple[str, str], dict[str, np.ndarray]]]:
    """Every planned analysis on every model (once on all models for a multi-model one)."""
    runs: list[AnalysisRun] = []
    findings: list[Finding] = []
    exports: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    services = {
        m.name: AttackService(m, data, settings.seed, plan.attacks, executor) for m in models
    }
    for analysis in plan.analyses:
        targets = models[:1] if analysis.multi_model else models
        for model in targets:
            run, found, exported = _run_one(
                analysis,
                model,
                models,
                data,
                plan.configs[analysis.name],
                settings,
                services[model.name],
                ui,
                host,
            )
            units = Counter(run.units) + Counter(executor.take_units())
            run = replace(run, units=dict(units))
            runs.append(run)
            findings.extend(found)
            exports.update({(run.model, name): arrays for name, arrays in exported.items()})
    return runs, findings, exports


# ------------------------------------------------------------------ planning


def _plan(settings: Settings, host: PluginHost) -> _Plan:
    try:
        analyses = host.select(settings.only, settings.skip)
    except KeyError as error:
        known = ", ".join(sorted(host.analyses)) or "none installed"
        raise ConfigError(
            f"unknown analysis or tag {error.args[0]!r} in --only/--skip (known: {known})"
        ) from error
    tables = settings.analysis_options
    unknown_tables = sorted(set(tables) - set(host.analyses) - {ATTACKS_TABLE})
    if unknown_tables:
        raise ConfigError(
            f"{settings.config_file or 'options'}: unknown analysis {unknown_tables[0]!r} "
            f"(known: {', '.join(sorted(host.analyses)) or 'none'}; the run's attack budget "
            f"is the table {ATTACKS_TABLE!r})"
        )
    where = settings.config_file or "-o"
    attacks = attack_config(tables.get(ATTACKS_TABLE, {}), where)
    configs = {a.name: build_config(a, tables.get(a.name, {}), where) for a in analyses}
    return _Plan(analyses, configs, attacks)


# ------------------------------------------------------------ models and data


def load_models_and_data(
    settings: Settings, ui: RunUI, host: PluginHost | None = None, raw: RawData | None = None
) -> tuple[list[AuditedModel], AuditData | None]:
    """Load every model, read (unless ``raw`` is given) and validate the data, run the
    fidelity checks."""
    if not settings.models:
        raise ConfigError("no model given (usage: audit MODEL.onnx [MODEL2.onnx ...])")
    rng = np.random.default_rng(settings.seed)
    if raw is None and settings.data:
        raw = _read(settings, host)
    sample_shape = _sample_shape(raw)
    loaded = []
    for path in settings.models:
        ui.status(f"loading {path}")
        loaded.append(load_onnx(path, sample_shape, settings.memory_budget))
    if raw is None:
        raw = _bundled_data(loaded[0], settings)
    data = _validated(raw, loaded, settings, rng) if raw is not None else None
    names = _unique_names(loaded)
    models = []
    for model, name in zip(loaded, names, strict=True):
        ui.status(f"checking {name} against onnxruntime")
        bounds = (data.lower, data.upper) if data is not None else (0.0, 1.0)
        samples = None if data is None else data.x
        tolerance = settings.fidelity_tolerance
        models.append(audited(model, name, samples, rng, bounds=bounds, tolerance=tolerance))
    return models, data


def _read(settings: Settings, host: PluginHost | None) -> RawData:
    """A plugin's ``audit_load_data`` first (first result wins), then the built-in readers."""
    path = Path(settings.data)
    raw = host.hook.audit_load_data(path=path) if host is not None and path.is_file() else None
    if raw is None:
        return read_data(path, settings.labels)
    if settings.labels is not None:
        raw = with_label_file(raw, path, Path(settings.labels))
    return replace(raw, source=raw.source or str(path))


def _sample_shape(raw: RawData | None) -> tuple[int, ...] | None:
    if raw is None or np.ndim(raw.x) < 2:
        return None
    return tuple(int(d) for d in np.shape(raw.x)[1:])


def _bundled_data(model: LoadedModel, settings: Settings) -> RawData | None:
    path = bundled_dataset(model)
    if path is None:
        return None
    if not path.is_file():
        raise DataError(f"{model.path}: its metadata names dataset {path}, which does not exist")
    return read_data(path, settings.labels)


def _validated(
    raw: RawData, loaded: list[LoadedModel], settings: Settings, rng: np.random.Generator
) -> AuditData:
    """The data checked against every model (labels: the file's, else the first model's
    predictions); with several models an error names the model it is about."""
    data = _validated_for(raw, loaded[0], settings, None, len(loaded) > 1)
    predicted = data.y if raw.y is None else None
    for other in loaded[1:]:
        _validated_for(raw, other, settings, predicted, True)
    return subsample(data, settings.samples, rng)


def _validated_for(
    raw: RawData, model: LoadedModel, settings: Settings, predicted, name_model: bool
) -> AuditData:
    try:
        return validate(raw, model.graph, bounds=settings.bounds, predicted_labels=predicted)
    except DataError as error:
        if not name_model:
            raise
        raise DataError(f"{error} (model {model.path})") from error


def _unique_names(loaded: list[LoadedModel]) -> list[str]:
    names: list[str] = []
    for model in loaded:
        name, suffix = model.name, 2
        while name in names:
            name, suffix = f"{model.name}-{suffix}", suffix + 1
        names.append(name)
    return names


# ------------------------------------------------------------------- running


@dataclass
class _Executed:
    """What running one analysis gave; made in a child process for an isolated analysis
    (so it pickles)."""

    outcome: str  # "ran" | "skipped" | "error"
    findings: list[Finding]
    reason: str = ""
    seconds: float = 0.0
    headline: str = ""
    exports: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    units: dict[str, int] = field(default_factory=dict)
    """Units run by the child's executor (the parent's counts its own)."""
    searches: dict[str, Any] = field(default_factory=dict)
    """Attack searches the analysis ran in its child, for the parent's attack service."""


def _run_one(
    analysis: Analysis,
    model: AuditedModel,
    models: list[AuditedModel],
    data: AuditData | None,
    config: Any,
    settings: Settings,
    attacks: AttackService,
    ui: RunUI,
    host: PluginHost,
) -> tuple[AnalysisRun, list[Finding], dict[str, dict[str, np.ndarray]]]:
    base = {
        "analysis": analysis.name,
        "title": analysis.title or analysis.name,
        "plugin": host.owner.get(analysis.name, ""),
        "model": RUN_WIDE if analysis.multi_model else model.name,
        "config": _config_dict(config),
        "description": analysis.description,
    }
    try:
        reason = (
            analysis.requires.unmet(model, data, len(models))
            or analysis.check(model, data)
            or _memory_reason(analysis, model, data, config, attacks.config, settings)
        )
    except Exception as error:  # a plugin's check or memory estimate: its fault, not the run's
        return _failed_check(analysis, base, error, settings, ui)
    if reason:
        run = AnalysisRun(**base, outcome="skipped", reason=reason)
        ui.finish(run)
        return run, [_skipped_finding(analysis, base["model"], reason)], {}
    context = _context(analysis, model, models, data, config, settings, attacks, ui)
    execute = _execute_isolated if _isolated(analysis, settings, host) else _execute
    done = execute(analysis, context, base["title"])
    run = AnalysisRun(
        **base,
        outcome=done.outcome,
        reason=done.reason,
        seconds=done.seconds,
        headline=done.headline,
        units=done.units,
    )
    ui.finish(run)
    return run, done.findings, done.exports


def _failed_check(
    analysis: Analysis, base: dict[str, Any], error: Exception, settings: Settings, ui: RunUI
) -> tuple[AnalysisRun, list[Finding], dict[str, dict[str, np.ndarray]]]:
    """``check`` or ``memory_need`` raised: an error finding (``--strict``: stop)."""
    if settings.strict:
        raise AnalysisCrashed(
            f"analysis {analysis.name!r} crashed checking {base['model']}: "
            f"{type(error).__name__}: {error}"
        ) from error
    finding = _error_finding(analysis, base["model"], error)
    run = AnalysisRun(**base, outcome="error", reason=finding.summary)
    ui.finish(run)
    return run, [finding], {}


def _isolated(analysis: Analysis, settings: Settings, host: PluginHost) -> bool:
    """Whether the analysis runs in a child process of its own (``--isolate``)."""
    if settings.isolate == "none" or not supported():
        return False
    return settings.isolate == "all" or not host.is_builtin(analysis.name)


def _execute(analysis: Analysis, context: AuditContext, title: str) -> _Executed:
    """Run the analysis in this process: within its time limit, its output captured, its
    findings checked; a crash is an error finding (``--strict``: ``AnalysisCrashed``)."""
    clock = time.perf_counter()
    try:
        with (
            time_limit(context.settings.analysis_timeout, analysis.name),
            captured_output() as output,
        ):
            returned = analysis.run(context)
            returned = tuple(returned) if returned is not None else None
    except NotApplicable as error:
        return _Executed(
            "skipped", [_skipped_finding(analysis, context.scope, str(error))], str(error)
        )
    except (KeyboardInterrupt, AuditError):
        raise
    except (Exception, AnalysisTimeout) as error:  # a crashing analysis must not stop the audit
        return _crashed(analysis, context, error, clock)
    seconds = round(time.perf_counter() - clock, 3)
    findings, fault = checked_findings(analysis.name, title, context.scope, returned, output.text())
    headline = "" if fault else analysis.headline(tuple(findings))
    outcome = "error" if fault else "ran"
    return _Executed(outcome, findings, fault, seconds, headline, context.exports)


def _execute_isolated(analysis: Analysis, context: AuditContext, title: str) -> _Executed:
    """``_execute`` in a forked child (``audit_core.isolation``): its death or a hang past
    the time limit is an error finding too; the attack searches it ran are cached here."""
    clock = time.perf_counter()
    work = partial(_execute_in_child, analysis, context, title)
    timeout = context.settings.analysis_timeout
    try:
        done = run_forked(work, context.progress, timeout, analysis.name)
    except (ProcessDied, ProcessStuck) as error:
        return _crashed(analysis, context, error, clock)
    context.attacks.adopt(done.searches)
    return done


def _execute_in_child(
    analysis: Analysis, context: AuditContext, title: str, progress: Progress
) -> _Executed:
    """In the child: ``_execute`` with an executor of its own (the parent's pool does not
    survive ``fork``) and the progress that reaches the parent."""
    attacks = context.attacks
    before = set(attacks.results())
    with executor_for_child(context.executor) as executor:
        attacks.executor = executor
        done = _execute(analysis, replace(context, progress=progress, executor=executor), title)
        done.units = executor.take_units()
    done.searches = {norm: r for norm, r in attacks.results().items() if norm not in before}
    return done


def _crashed(
    analysis: Analysis, context: AuditContext, error: BaseException, clock: float
) -> _Executed:
    """The error finding of a crashed or timed-out analysis (``--strict``: raise instead)."""
    if context.settings.strict:
        kind = AnalysisTimeout.__name__ if isinstance(error, AnalysisTimeout) else None
        raise AnalysisCrashed(
            f"analysis {analysis.name!r} crashed on {context.model.name}: "
            f"{kind or type(error).__name__}: {error}"
        ) from error
    seconds = round(time.perf_counter() - clock, 3)
    finding = _error_finding(analysis, context.scope, error)
    return _Executed("error", [finding], finding.summary, seconds)


def _memory_reason(
    analysis: Analysis,
    model: AuditedModel,
    data: AuditData | None,
    config: Any,
    attacks: MinimalAttackConfig,
    settings: Settings,
) -> str | None:
    """Why the analysis is skipped up front: it would need more than the memory budget."""
    need = analysis.memory_need(model, data, config, attacks)
    if need is None or need.bytes <= settings.memory_budget * MIB:
        return None
    return need.reason(settings.memory_budget)


def _context(
    analysis: Analysis,
    model: AuditedModel,
    models: list[AuditedModel],
    data: AuditData | None,
    config: Any,
    settings: Settings,
    attacks: AttackService,
    ui: RunUI,
) -> AuditContext:
    # a model named after a file whose name is not UTF-8 holds lone surrogates (os.fsdecode)
    names = (analysis.name, model.name)
    seed = [settings.seed, *(zlib.crc32(n.encode("utf-8", "surrogatepass")) for n in names)]
    return AuditContext(
        analysis=analysis,
        model=model,
        models=tuple(models),
        data=data,
        config=config,
        settings=settings,
        rng=np.random.default_rng(seed),
        generator=torch.Generator().manual_seed(int(np.random.default_rng(seed).integers(2**62))),
        progress=ui.start(analysis, RUN_WIDE if analysis.multi_model else model.name),
        attacks=attacks,
        executor=attacks.executor,
    )


def _skipped_finding(analysis: Analysis, model: str, reason: str) -> Finding:
    return Finding(
        id=finding_id(analysis.name, "skipped", model),
        analysis=analysis.name,
        title=f"{analysis.title or analysis.name}: not applicable",
        severity=Severity.INFO,
        status=Status.SKIPPED,
        method=Method.EMPIRICAL,
        summary=f"Skipped: {reason}",
        model=model,
        references=analysis.references,
    )


def _error_finding(analysis: Analysis, model: str, error: BaseException) -> Finding:
    name = analysis.title or analysis.name
    if isinstance(error, AnalysisTimeout):
        return error_finding(
            analysis.name, model, "error",
            title=f"{name} timed out",
            summary=f"The {error}; its checks did not finish.",
            notes=("Raise --analysis-timeout or lower the analysis's budgets.", *_stuck(error)),
            remediation="Give the analysis more time, or smaller budgets (see `audit plugins`).",
        )  # fmt: skip
    if isinstance(error, ProcessDied):
        return error_finding(
            analysis.name, model, "error",
            title=f"{name} crashed",
            summary=f"{str(error)[:1].upper()}{str(error)[1:]}; no findings came back.",
            notes=(ISOLATED_NOTE, *_last_words(error.output)),
            remediation="Report this to the plugin's author: the analysis ended its process "
            "(a crash in native code, os._exit, or the out-of-memory killer).",
        )  # fmt: skip
    return error_finding(
        analysis.name, model, "error",
        title=f"{name} crashed",
        summary=f"The analysis raised {type(error).__name__}: {error}; its checks did not run.",
        notes=("Re-run with --strict to stop at the first crash.",),
        remediation="Report the traceback to the plugin's author.",
        traceback="".join(traceback.format_exception(error)),
    )  # fmt: skip


ISOLATED_NOTE = (
    "The analysis ran in a process of its own (--isolate), so the audit went on. "
    "Re-run with --strict to stop at the first crash."
)


def _stuck(error: AnalysisTimeout) -> tuple[str, ...]:
    """A note on where an isolated analysis that did not stop at its limit was stuck."""
    if not isinstance(error, ProcessStuck):
        return ()
    where = f":\n{error.output}" if error.output else "."
    return (f"It did not stop at the limit (a long native call?); its process was killed{where}",)


def _last_words(output: str) -> tuple[str, ...]:
    return (f"What the process wrote last:\n{output}",) if output else ()


def _config_dict(config: Any) -> dict[str, Any]:
    from dataclasses import asdict, is_dataclass

    if not is_dataclass(config):
        return {}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}


def _accuracy(model: AuditedModel, data: AuditData | None) -> float | None:
    if data is None or data.labels_from != "file":
        return None
    return float(np.mean(model.graph.predict(data.x) == data.y))


def _data_info(data: AuditData | None) -> DataInfo | None:
    if data is None:
        return None
    return DataInfo(
        source=str(Path(data.source)),
        count=len(data),
        sample_shape=tuple(data.x.shape[1:]),
        lower=data.lower,
        upper=data.upper,
        class_names=data.class_names,
        bounds_source=data.bounds_source,
        labels_from=data.labels_from,
        clipped_values=data.clipped,
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def flatten_findings(findings: Iterable[Finding]) -> list[Finding]:
    return list(findings)
