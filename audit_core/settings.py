"""Run settings: command line merged over ``audit.toml`` / ``[tool.robustness-audit]``.

Global keys have the names of the long command-line options; a table is either
the core's ``[attacks]`` (the run's one attack budget, ``audit_core.attack_budget``)
or one analysis's own parameters (``[attack-bound]`` in audit.toml,
``[tool.robustness-audit.attack-bound]`` in pyproject.toml). ``-o TABLE.KEY=VALUE``
sets a key of either kind; the runner validates every table before anything runs.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit_core.errors import ConfigError
from audit_core.memory import default_budget_mb

if TYPE_CHECKING:
    from audit_core.config import Parameter

SEVERITY_LEVELS = ("info", "low", "medium", "high", "critical", "never")
NORMS = ("l2", "linf")
ISOLATE_MODES = ("plugins", "all", "none")
DEFAULT_L2_FRACTION = 0.05
DEFAULT_LINF_FRACTION = 0.03


@dataclass(frozen=True)
class Settings:
    """Everything that controls one run, after merging config file and command line."""

    models: tuple[str, ...] = ()
    data: str | None = None
    labels: str | None = None
    eps: tuple[float, ...] = ()
    norm: str = "l2"
    only: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()
    samples: int = 100
    seed: int = 0
    out: str = "audit-report"
    format: tuple[str, ...] = ("json", "html")
    fail_on: str = "critical"
    strict: bool = False
    quiet: bool = False
    export: str | None = None
    bounds: tuple[float, float] | None = None
    fidelity_tolerance: float = 1e-4
    workers: int = 0
    """Local worker processes for the analyses' independent units (0: all local cores;
    1: serial, in this process). Ignored with ``scheduler`` (the cluster's workers run)."""
    scheduler: str | None = None
    """Address of an existing Dask distributed scheduler (``tcp://host:8786``)."""
    memory_budget: int = field(default_factory=default_budget_mb)
    """Memory one process of the audit may use, in MiB (default: the smaller of 4 GiB and a
    quarter of the machine's memory): larger models are refused, analyses that would need
    more are skipped up front, batches of units get a quarter (``audit_core.memory``)."""
    analysis_timeout: float = 3600.0
    """Wall-clock seconds one analysis may run on one model (then an error finding)."""
    isolate: str = "plugins"
    """Which analyses run in a child process of their own, where a crash (segfault,
    ``os._exit``) or a hang becomes an error finding: ``plugins`` (those of third-party
    plugins), ``all`` or ``none`` (``audit_core.isolation``)."""
    analysis_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    config_file: str | None = None

    def eps_for(self, data: Any, input_size: int) -> tuple[float, ...]:
        """``--eps``, or the default.

        Default: l2 ``0.05 sqrt(d) (upper - lower)``, linf ``0.03 (upper - lower)``.
        """
        if self.eps:
            return self.eps
        span = 1.0 if data is None else float(data.upper - data.lower)
        if self.norm == "linf":
            return (DEFAULT_LINF_FRACTION * span,)
        return (DEFAULT_L2_FRACTION * math.sqrt(input_size) * span,)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view for the report's run metadata."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


GLOBAL_KEYS = {f.name.replace("_", "-") for f in fields(Settings)} - {
    "analysis-options",
    "config-file",
    "models",
}


def core_tables() -> dict[str, tuple[Parameter, ...]]:
    """The config tables the core owns (not an analysis), with their keys: ``attacks``."""
    from audit_core.attack_budget import ATTACKS_TABLE, MinimalAttackConfig
    from audit_core.config import table_parameters

    return {ATTACKS_TABLE: table_parameters(MinimalAttackConfig)}


def find_config_file(explicit: str | None, cwd: Path) -> Path | None:
    """``--config FILE``, else ``audit.toml``, else a pyproject.toml with our table."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        return path
    if (cwd / "audit.toml").is_file():
        return cwd / "audit.toml"
    pyproject = cwd / "pyproject.toml"
    if pyproject.is_file() and "robustness-audit" in _read_toml(pyproject).get("tool", {}):
        return pyproject
    return None


def read_config(path: Path | None) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(global options, per-analysis tables) from a config file."""
    if path is None:
        return {}, {}
    document = _read_toml(path)
    if path.name == "pyproject.toml":
        document = document.get("tool", {}).get("robustness-audit", {})
    options, tables = {}, {}
    for key, value in document.items():
        if isinstance(value, dict):
            tables[key] = value
        elif key in GLOBAL_KEYS:
            options[key] = value
        else:
            raise ConfigError(f"{path}: unknown config key {key!r}")
    return options, tables


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: invalid TOML ({error})") from error


def parse_eps(value: Any, where: str) -> tuple[float, ...]:
    """``0.5``, ``"0.1,0.3"`` or ``[0.1, 0.3]`` -> positive floats."""
    items = value.split(",") if isinstance(value, str) else value
    items = items if isinstance(items, list | tuple) else [items]
    try:
        result = tuple(float(v) for v in items)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: eps must be numbers, got {value!r}") from error
    if not result or any(not math.isfinite(e) or e <= 0 for e in result):
        raise ConfigError(f"{where}: eps must be positive numbers, got {value!r}")
    return result


def parse_list(value: Any, where: str) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(v, str) for v in items):
        raise ConfigError(f"{where}: expected a list of names, got {value!r}")
    return tuple(v.strip() for v in items if v.strip())


def parse_bounds(value: Any, where: str) -> tuple[float, float]:
    items = value.split(",") if isinstance(value, str) else value
    try:
        lower, upper = (float(v) for v in items)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: bounds must be two numbers LOW,HIGH, got {value!r}") from error
    if not lower < upper:
        raise ConfigError(f"{where}: bounds must satisfy LOW < HIGH, got {value!r}")
    return lower, upper


MEMORY_UNITS = {"k": 2**-10, "m": 1, "g": 2**10, "t": 2**20}


def parse_memory(value: Any, where: str) -> int:
    """A memory budget in MiB: ``1024``, ``"512M"``, ``"2G"`` (a plain number is MiB)."""
    text = str(value).strip().lower().removesuffix("ib").removesuffix("b")
    scale = MEMORY_UNITS.get(text[-1:]) if text else None
    number = text[:-1] if scale is not None else text
    try:
        mib = float(number) * (scale or 1)
    except ValueError as error:
        raise ConfigError(
            f"{where}: expected a memory size such as 512M or 2G, got {value!r}"
        ) from error
    if isinstance(value, bool) or not math.isfinite(mib) or mib < 16:
        raise ConfigError(f"{where}: the memory budget must be at least 16M, got {value!r}")
    return int(mib)


def build_settings(options: dict[str, Any], where: dict[str, str]) -> Settings:
    """Validate merged options (keys as on the command line) into ``Settings``."""
    values: dict[str, Any] = {}
    for key, value in options.items():
        values[key.replace("-", "_")] = _parse_option(key, value, where.get(key, f"--{key}"))
    return Settings(**values)


def _parse_option(key: str, value: Any, where: str) -> Any:
    parsers = {
        "eps": parse_eps,
        "only": parse_list,
        "skip": parse_list,
        "format": parse_list,
        "bounds": parse_bounds,
        "models": lambda v, _: tuple(v),
    }
    if key in parsers:
        return parsers[key](value, where)
    if key == "norm" and value not in NORMS:
        raise ConfigError(f"{where}: norm must be one of {', '.join(NORMS)}, got {value!r}")
    if key == "fail-on" and value not in SEVERITY_LEVELS:
        raise ConfigError(f"{where}: fail-on must be one of {', '.join(SEVERITY_LEVELS)}")
    if key == "isolate" and value not in ISOLATE_MODES:
        raise ConfigError(f"{where}: isolate must be one of {', '.join(ISOLATE_MODES)}")
    if key in ("samples", "seed", "workers"):
        return _non_negative_int(value, where, minimum=1 if key == "samples" else 0)
    if key == "memory-budget":
        return parse_memory(value, where)
    if key in ("strict", "quiet") and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if key in ("fidelity-tolerance", "analysis-timeout"):
        return _positive_float(value, where)
    if key == "scheduler" and (not isinstance(value, str) or not value.strip()):
        raise ConfigError(f"{where}: expected a scheduler address such as tcp://host:8786")
    if key in ("data", "labels", "out", "export", "norm", "fail-on") and not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _non_negative_int(value: Any, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    try:
        number = int(value)
    except ValueError as error:
        raise ConfigError(f"{where}: expected an integer, got {value!r}") from error
    if number < minimum:
        raise ConfigError(f"{where}: must be at least {minimum}, got {number}")
    return number


def _positive_float(value: Any, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: expected a number, got {value!r}") from error
    if not number > 0:
        raise ConfigError(f"{where}: must be positive, got {value!r}")
    return number
