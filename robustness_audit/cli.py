"""The ``audit`` command. The one place that turns errors into one line and an exit code.

audit MODEL.onnx [MODEL2.onnx ...] [options]
audit plugins [--json]
audit --version
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from audit_core import __version__
from audit_core.errors import AuditError, ConfigError, ExitCode
from audit_core.settings import ISOLATE_MODES, SEVERITY_LEVELS, Settings, find_config_file
from robustness_audit.session import plugin_host, settings_from, with_tables, write_outputs

if TYPE_CHECKING:  # the rest loads where it is used: --version, --help, `plugins` and
    # usage errors never import torch, onnx or the renderers
    from audit_core.plugins import PluginHost
    from audit_core.runner import RunOutcome

THREADS_ENV = "OMP_NUM_THREADS"
"""Set it to give torch that many intra-op threads (default here: 1; see ``_torch_threads``)."""

EXIT_CODES_HELP = """exit codes:
  0  every analysis ran; nothing failed at or above --fail-on
  1  a finding at or above --fail-on failed, or an analysis crashed
  2  interrupted
  3  internal error (or, with --strict, a crashing analysis)
  4  usage error: bad option or config key, unreadable or unsupported model, bad data
  5  nothing could be analysed (every analysis was skipped)

other commands:
  audit plugins [--json]   list installed plugins, their versions, hooks and analyses, and
                           every config key (analysis tables and the run-wide [attacks])

environment:
  AUDIT_PLUGINS=A,B        load only these plugins (empty: none)
  OMP_NUM_THREADS=N        torch intra-op threads (default 1: small tensors, shared CPUs)
  AUDIT_DEBUG=1            a traceback with internal errors
"""


class _Parser(argparse.ArgumentParser):
    """argparse that raises ``ConfigError`` (exit 4, one line) instead of exiting with 2."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def _audit_parser() -> _Parser:
    from audit_reports.writer import FORMATS  # the format registry only, no renderer

    parser = _Parser(
        prog="audit",
        description="Robustness audit of ONNX models: certificates, attacks, transfer "
        "directions, robust-loss lower bounds and theorem-backed diagnoses.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=None,
    )
    add = parser.add_argument
    add("models", nargs="+", metavar="MODEL.onnx", help="one or more ONNX models")
    add(
        "--data",
        metavar="FILE",
        help=".npz (x, y), .npy (with --labels) or .csv audit data; "
        "a model-zoo model finds its own dataset",
    )
    add("--labels", metavar="FILE", help="labels for .npy data (.npy or one number per line)")
    add(
        "--eps",
        metavar="E[,E...]",
        help="perturbation budget(s) (default: l2 0.05*sqrt(d)*range, linf 0.03*range)",
    )
    add("--norm", choices=["l2", "linf"], help="perturbation norm (default l2)")
    add("--only", metavar="NAMES", help="run only these analyses or tags (comma-separated)")
    add("--skip", metavar="NAMES", help="skip these analyses or tags (comma-separated)")
    add(
        "--samples", metavar="N", help="audit at most N samples (seeded random subset; default 100)"
    )
    add("--seed", metavar="S", help="random seed (default 0)")
    add("--out", metavar="DIR", help="report directory (default ./audit-report)")
    add(
        "--format",
        metavar="FMT[,FMT]",
        help=f"report formats: {', '.join(FORMATS)} (default json,html)",
    )
    add(
        "--fail-on",
        choices=list(SEVERITY_LEVELS),
        help="exit 1 when a finding at or above this severity fails (default critical)",
    )
    add(
        "--config",
        metavar="FILE",
        help="config file (default ./audit.toml or [tool.robustness-audit] in ./pyproject.toml)",
    )
    add("--export", metavar="DIR", help="write each analysis's per-sample arrays to DIR/<name>.npz")
    add(
        "--bounds",
        metavar="LO,HI",
        help="input bounds (default: from the data file, else its range)",
    )
    add(
        "-o",
        "--option",
        dest="options",
        action="append",
        metavar="ANALYSIS.KEY=VALUE",
        help="set one analysis parameter, or one of the run's attack budget (attacks.KEY); "
        "repeatable",
    )
    add(
        "-p",
        dest="plugin_flags",
        action="append",
        metavar="no:NAME",
        help="do not load plugin NAME",
    )
    add(
        "--workers",
        metavar="N",
        help="local worker processes for the analyses' independent work "
        "(default: all local cores; 1: serial)",
    )
    add(
        "--scheduler",
        metavar="ADDRESS",
        help="run that work on an existing Dask distributed cluster (tcp://host:8786)",
    )
    add(
        "--memory-budget",
        metavar="SIZE",
        help="memory one audit process may use: bigger models are refused, analyses that "
        "would need more are skipped (default: min(4G, a quarter of the machine's memory))",
    )
    add(
        "--analysis-timeout",
        metavar="SECONDS",
        help="wall-clock limit of one analysis on one model (default 3600): then an error finding",
    )
    add(
        "--isolate",
        choices=list(ISOLATE_MODES),
        help="analyses that run in a process of their own, where a crash or a hang is an "
        "error finding: plugins (third-party ones; default), all, none",
    )
    add("--strict", action="store_true", default=None, help="stop at the first crashing analysis")
    add("--quiet", action="store_true", default=None, help="print only errors")
    return parser


def _quiet_warnings() -> None:
    """Library warnings (numpy overflow on a damaged model's weights, deprecations) stay
    off stderr, where errors are one line; worker processes inherit the setting.
    ``AUDIT_DEBUG=1`` shows them."""
    if os.environ.get("AUDIT_DEBUG"):
        return
    warnings.filterwarnings("ignore")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``audit`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _interrupt)
    _quiet_warnings()
    try:
        return int(_dispatch(argv))
    except AuditError as error:
        _error_line(str(error))
        return int(error.exit_code)
    except KeyboardInterrupt:
        _error_line("interrupted; no report was written")
        return int(ExitCode.INTERRUPTED)
    except Exception as error:  # the one place that catches bugs
        if os.environ.get("AUDIT_DEBUG"):
            traceback.print_exc()
        _error_line(
            f"internal error: {type(error).__name__}: {error} (set AUDIT_DEBUG=1 for a traceback)",
            prefix="audit: ",
        )
        return int(ExitCode.INTERNAL_ERROR)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _error_line(message: str, prefix: str = "audit: error: ") -> None:
    text = " ".join(message.split())
    print(f"{prefix}{text}", file=sys.stderr)


def _dispatch(argv: list[str]) -> ExitCode:
    if argv[:1] in (["--version"], ["-V"]):
        print(f"audit (robustness-audit) {__version__}")
        return ExitCode.OK
    if argv[:1] == ["plugins"]:
        return _plugins_command(argv[1:])
    return _audit_command(argv)


# ---------------------------------------------------------------- plugins


def _plugins_command(argv: list[str]) -> ExitCode:
    parser = _Parser(prog="audit plugins", description="List installed plugins.")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("-p", dest="plugin_flags", action="append", metavar="no:NAME")
    args = parser.parse_args(argv)
    host = _host(args.plugin_flags)
    infos = host.plugin_infos()
    from audit_core.settings import core_tables

    tables = core_tables()
    if args.json:
        core = {t: [_parameter_dict(p) for p in params] for t, params in tables.items()}
        plugins = [_plugin_dict(info, host) for info in infos]
        print(json.dumps({"core": core, "plugins": plugins}, indent=2))
        return ExitCode.OK
    from rich.console import Console

    from audit_core.analysis import config_parameters

    console = Console()
    console.print(f"[bold]core[/] {__version__} (run-wide tables)", highlight=False)
    for table, params in tables.items():
        for p in params:
            line = f"    {table}.{p.name} = {_shown(p.default)}  {p.doc}"
            console.print(line.rstrip(), highlight=False, markup=False, overflow="fold")
    for info in infos:
        kind = "built-in" if info.builtin else "third-party"
        console.print(f"[bold]{info.name}[/] {info.version} ({kind})", highlight=False)
        console.print(f"  hooks: {', '.join(info.hooks) or 'none'}", highlight=False, markup=False)
        for name in info.analyses:
            analysis = host.analyses[name]
            console.print(f"  analysis {name}: {analysis.title}", highlight=False, markup=False)
            for p in config_parameters(analysis):
                line = f"    {name}.{p.name} = {_shown(p.default)}  {p.doc}"
                console.print(line.rstrip(), highlight=False, markup=False, overflow="fold")
        if info.error:
            console.print(f"  [red]error:[/] {info.error}", highlight=False)
    return ExitCode.OK


def _plugin_dict(info: Any, host: PluginHost) -> dict[str, Any]:
    return {
        "name": info.name,
        "version": info.version,
        "builtin": info.builtin,
        "hooks": list(info.hooks),
        "analyses": [_analysis_dict(host.analyses[n]) for n in info.analyses],
        "error": info.error or None,
    }


def _analysis_dict(analysis: Any) -> dict[str, Any]:
    from audit_core.analysis import config_parameters

    return {
        "name": analysis.name,
        "title": analysis.title,
        "tags": list(analysis.tags),
        "parameters": [_parameter_dict(p) for p in config_parameters(analysis)],
    }


def _parameter_dict(p: Any) -> dict[str, Any]:
    return {"name": p.name, "default": _jsonable(p.default), "doc": p.doc}


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _shown(value: Any) -> str:
    """A default as it would be written in ``-o ANALYSIS.KEY=VALUE``."""
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) or '""'
    if isinstance(value, bool):
        return str(value).lower()
    return str(value) if value != "" else '""'


def _host(plugin_flags: list[str] | None) -> PluginHost:
    """The plugin host, without the plugins ``-p no:NAME`` blocks."""
    blocked = []
    for flag in plugin_flags or []:
        if not flag.startswith("no:") or len(flag) <= 3:
            raise ConfigError(f"-p expects no:NAME, got {flag!r}")
        blocked.append(flag[3:])
    return plugin_host(blocked, option="-p no:")


# ------------------------------------------------------------------ audit


def _audit_command(argv: list[str]) -> ExitCode:
    args = _audit_parser().parse_args(argv)
    settings = resolve_settings(args, Path.cwd())
    host = _host(args.plugin_flags)
    from audit_core.console import ConsoleUI, QuietUI
    from audit_core.runner import run_audit

    ui = QuietUI() if settings.quiet else ConsoleUI()
    with ui, _torch_threads():
        outcome = run_audit(settings, host, ui, ("audit", *argv))
    written = write_outputs(outcome, settings.out, settings.format, settings.export)
    host.hook.audit_run_finished(report=outcome.report, out_dir=Path(settings.out))
    if not settings.quiet:
        _print_summary(outcome, written)
    if outcome.exit_code is ExitCode.NOTHING_ANALYSED:
        _error_line(_nothing_analysed(outcome))
    return outcome.exit_code


@contextmanager
def _torch_threads() -> Iterator[None]:
    """torch on one intra-op thread during the run, unless ``OMP_NUM_THREADS`` is set.

    The audit's tensors are small batches of small models: extra intra-op threads save
    nothing, and on a CPU shared with other work they wait for each other at every op (the
    README audit's attacks took 8-18 s instead of about 1 s at a load of 5 on 2 cores).
    """
    if os.environ.get(THREADS_ENV):
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _nothing_analysed(outcome: RunOutcome) -> str:
    """The one error line of exit code 5: the distinct reasons the analyses were skipped."""
    reasons = list(dict.fromkeys(run.reason for run in outcome.report.analyses if run.reason))
    shown = "; ".join(reasons[:3]) + ("; ..." if len(reasons) > 3 else "")
    return f"nothing could be analysed ({shown or 'no analysis selected'}); see the report"


def resolve_settings(args: argparse.Namespace, cwd: Path) -> Settings:
    """Merge the config file and the command line (the command line wins)."""
    config_path = find_config_file(args.config, cwd)
    cli_options = {
        key.replace("_", "-"): value
        for key, value in vars(args).items()
        if value is not None and key not in ("config", "options", "plugin_flags")
    }
    settings = settings_from(cli_options, config_path, lambda key: f"--{key}")
    return with_tables(settings, _analysis_options(args.options or []))


def _analysis_options(overrides: list[str]) -> dict[str, dict[str, str]]:
    """``-o ANALYSIS.KEY=VALUE`` items as tables (values stay strings, typed by the core)."""
    tables: dict[str, dict[str, str]] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        analysis, dot, option = key.partition(".")
        if not sep or not dot or not analysis or not option:
            raise ConfigError(f"-o expects ANALYSIS.KEY=VALUE, got {item!r}")
        tables.setdefault(analysis, {})[option] = value
    return tables


def _print_summary(outcome: RunOutcome, written: list[Path]) -> None:
    from rich.console import Console

    from audit_core.console import summary_table, verdict_line

    console = Console()
    report = outcome.report
    if report.findings:
        console.print(summary_table(report))
    console.print(verdict_line(report), highlight=False, markup=False)
    for path in written:
        console.print(f"wrote {path}", highlight=False, markup=False)
