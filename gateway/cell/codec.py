"""Commands to and from the event log's JSON: the one serializer and the one decoder.

:func:`encode` gives a command's arguments as JSON values (tuples as lists, mappings with text keys,
dates and times as ISO text, enums as their value). A report's envelope (station, EventId, SourceTime)
is stored in columns of its own, so it is left out. :func:`decode` rebuilds the command from its kind
and those arguments, converting each by the type its field declares.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from datetime import date, datetime
from enum import Enum
from typing import Any

from gateway.cell.commands import COMMAND_TYPES, Command
from gateway.tracking.reports import Report

# A report's idempotency envelope: stored in the log row's own columns, not among its arguments.
_ENVELOPE = frozenset({"station", "event_id", "source_time"})


def encode(command: Command) -> dict[str, Any]:
    """The command's arguments as JSON for the event log (and for comparing a retry with the original)."""
    skip = _ENVELOPE if isinstance(command, Report) else frozenset()
    return {f.name: _json(getattr(command, f.name)) for f in dataclasses.fields(command) if f.name not in skip}


def _json(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_json(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, date):  # datetime is a date too
        return value.isoformat()
    return value


def decode(kind: str, source: str, event_id: str, args: Mapping[str, Any], source_time: datetime | None) -> Command:
    """Rebuild the command a log row stored (``source`` is a report's station)."""
    cls = COMMAND_TYPES.get(kind)
    if cls is None:
        raise ValueError(f"the log holds a command of unknown kind {kind!r}")
    values = _typed(cls, args)
    if issubclass(cls, Report):
        # Reports are logged under their station ("cell" for Units.Scrap, whose station is its source).
        return typing.cast(Command, cls(station=source, event_id=event_id, source_time=source_time, **values))
    return typing.cast(Command, cls(**values))


def _typed(cls: type[Any], args: Mapping[str, Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: _value(hints[f.name], args[f.name]) for f in dataclasses.fields(cls) if f.name in args}


def _value(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        options = [h for h in typing.get_args(hint) if h is not type(None)]
        return _value(options[0], value) if len(options) == 1 else value
    if origin is tuple:
        return tuple(value)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return hint(value)
    if hint is datetime and isinstance(value, str):
        return datetime.fromisoformat(value)
    return value
