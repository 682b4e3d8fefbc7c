"""Turning pydantic's validation errors into :class:`ConfigProblem` values a cell integrator can read.

Each error becomes its key path (``operations[2].group``) and a short message (``must be >= 0``,
``unknown key "grup" (did you mean "group"?)``), naming the environment variable a bad value came from.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from gateway.config.problems import ConfigProblem
from gateway.config.schema import CellConfig


def convert_errors(
    exc: ValidationError, prefix: str, model: type[BaseModel] | None, overridden: Mapping[str, str]
) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    errors = exc.errors()
    # pydantic counts an array's length after dropping its invalid items: ["boss"] is then both a bad
    # role and "too short". Only the item is the mistake.
    with_item_errors = {e["loc"][:-1] for e in errors if e["loc"] and isinstance(e["loc"][-1], int)}
    for error in errors:
        if error["type"] == "too_short" and error["loc"] in with_item_errors:
            continue
        path = _path(prefix, error["loc"])
        message = _message(error, model)
        if path in overridden:
            message += f" (from environment variable {overridden[path]})"
        problems.append(ConfigProblem(path, message))
    return problems


def _path(prefix: str, loc: tuple[int | str, ...]) -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else part
    return path


_BOUNDS: Mapping[str, tuple[str, str]] = {
    "greater_than_equal": (">=", "ge"),
    "greater_than": (">", "gt"),
    "less_than_equal": ("<=", "le"),
    "less_than": ("<", "lt"),
}


def _message(error: ErrorDetails, model: type[BaseModel] | None) -> str:
    kind = error["type"]
    ctx = error.get("ctx", {})
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "extra_forbidden":
        key = str(error["loc"][-1])
        keys = model.model_fields.items() if model is not None and len(error["loc"]) == 1 else ()
        fields = tuple(field.alias or name for name, field in keys)  # the file's key: `schema` for schema_name
        return unknown_key(key, fields)
    if kind == "missing":
        return "is required"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "must be a table"
    if kind == "tuple_type":
        return "must be an array"
    if kind in _BOUNDS:
        symbol, limit = _BOUNDS[kind]
        bound = ctx.get(limit)
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)  # "must be >= 0", not "must be >= 0.0"
        return f"must be {symbol} {bound}"
    if kind in ("too_short", "string_too_short") and ctx.get("min_length") == 1:
        return "must not be empty"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')} (got {error['input']!r})"
    return str(error["msg"])


def unknown_key(key: str, allowed: Sequence[str]) -> str:
    if allowed and key in CellConfig.model_fields and key not in allowed:
        # The classic TOML slip: a top-level key written after a [table] belongs to that table.
        return f'unknown key "{key}" (a top-level key must come before the first [table] in the file)'
    if not allowed:
        return f'unknown key "{key}"'
    close = difflib.get_close_matches(key, allowed, n=1)
    if close:
        return f'unknown key "{key}" (did you mean "{close[0]}"?)'
    return f'unknown key "{key}" (allowed: {", ".join(allowed)})'
