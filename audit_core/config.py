"""Config tables: dataclasses built from a TOML table or ``-o TABLE.KEY=VALUE`` options.

One machinery for every table of a run: each analysis's ``Config`` (``[attack-bound]``,
``[certificates]``, ...) and the core's own tables (``[attacks]``, the attack
service's budget). Values are coerced to the type of the field's default (strings
from ``-o`` are parsed), unknown keys, wrong types and out-of-range values are
usage errors naming the table and key, and ``audit plugins`` lists each field with
its default and the docstring written under it.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any

from audit_core.errors import ConfigError


def build_table(cls: type, values: dict[str, Any], where: str, table: str, owner: str) -> Any:
    """An instance of the dataclass ``cls`` from the table ``values``; dashes in keys become
    underscores. ``where`` names the source (file or ``-o``), ``table`` prefixes the keys in
    messages, ``owner`` names the table's owner (e.g. ``analysis 'kkt'``)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    normalised = {key.replace("-", "_"): value for key, value in values.items()}
    unknown = sorted(set(normalised) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields)) or "none"
        raise ConfigError(f"{where}: unknown option {unknown[0]!r} for {owner} (known: {known})")
    defaults = cls()
    coerced = {
        key: _coerce(value, getattr(defaults, key), f"{where}: {table}.{key}")
        for key, value in normalised.items()
    }
    try:
        return dataclasses.replace(defaults, **coerced)
    except ValueError as error:  # the dataclass's own checks (``check_config``)
        raise ConfigError(f"{where}: {table}.{error}") from error


def check_config(
    config: Any,
    *,
    minimum: dict[str, float] | None = None,
    positive: tuple[str, ...] = (),
    fractions: tuple[str, ...] = (),
    choices: dict[str, tuple[str, ...]] | None = None,
) -> None:
    """Range checks for a ``Config.__post_init__``: ``ValueError("field ...")`` on the
    first bad value (``build_table`` turns it into a usage error naming the key).

    ``minimum``: field -> smallest allowed value (every element for tuples);
    ``positive``: > 0; ``fractions``: in [0, 1]; ``choices``: field -> allowed strings
    (every element for tuples).
    """

    def values(name: str) -> tuple[Any, ...]:
        value = getattr(config, name)
        return tuple(value) if isinstance(value, tuple) else (value,)

    def numbers(name: str) -> tuple[float, ...]:
        try:  # tuples with an empty default keep -o's strings
            return tuple(float(v) for v in values(name))
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be numbers, got {getattr(config, name)!r}") from None

    for name, low in (minimum or {}).items():
        if any(v < low for v in numbers(name)):
            raise ValueError(f"{name} must be at least {low:g}, got {getattr(config, name)!r}")
    for name in positive:
        if any(v <= 0 for v in numbers(name)):
            raise ValueError(f"{name} must be positive, got {getattr(config, name)!r}")
    for name in fractions:
        if any(not 0.0 <= v <= 1.0 for v in numbers(name)):
            raise ValueError(f"{name} must be between 0 and 1, got {getattr(config, name)!r}")
    for name, allowed in (choices or {}).items():
        if any(v not in allowed for v in values(name)):
            raise ValueError(
                f"{name} must be one of {', '.join(allowed)}, got {getattr(config, name)!r}"
            )


def _coerce(value: Any, default: Any, where: str) -> Any:
    """``value`` converted to the type of ``default``; strings (from ``-o``) are parsed."""
    if default is None:
        return value
    converted = _convert_like(value, default)
    if converted is None:
        raise ConfigError(f"{where} must be {type(default).__name__}, got {value!r}")
    return converted


def _convert_like(value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        return None
    if isinstance(default, int | float):
        return _number_like(value, type(default))
    if isinstance(default, str):
        return value if isinstance(value, str) else None
    if isinstance(default, tuple):
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            return None
        converted = [_convert_like(v, default[0]) if default else v for v in items]
        return None if any(v is None for v in converted) else tuple(converted)
    return value if isinstance(value, type(default)) else None


def _number_like(value: Any, kind: type) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, int | float):
        return None
    if kind is int and float(value) != int(value):
        return None
    return kind(value)


@dataclass(frozen=True)
class Parameter:
    """One field of a config table (``audit plugins`` lists them)."""

    name: str
    default: Any
    doc: str


def table_parameters(cls: type) -> tuple[Parameter, ...]:
    """The fields of the dataclass ``cls`` with their defaults and attribute docstrings (the
    string literal written under a field, as in the built-in plugins; "" when there is none)."""
    defaults = cls()
    docs = _attribute_docstrings(cls)
    return tuple(
        Parameter(f.name, getattr(defaults, f.name), docs.get(f.name, ""))
        for f in dataclasses.fields(cls)
    )


def _attribute_docstrings(cls: type) -> dict[str, str]:
    """``{field: docstring}`` from the class source; {} when the source is unavailable."""
    import ast
    import inspect
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for node, after in itertools.pairwise(body):
        documented = isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and documented:
            docs[node.target.id] = " ".join(str(after.value.value).split())
    return docs
