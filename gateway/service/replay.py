"""Replaying the event log: every stored command, in counter order, at the time it was received.

The log is the history of the cell: applying it again to a fresh model must give the same state and
the same answers. ``cell-gateway`` uses this to check a database (``replay_check``) and tests use it to
prove that the state saved alongside the log never drifts from it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import Reason, Refused
from gateway.jobs.commands import COMMAND_TYPES
from gateway.storage import schema as S
from gateway.tracking.model import CellModel, Command
from gateway.tracking.reports import REPORT_TYPES, Report

# Other packages register their commands here (kind -> class), e.g. the orders commands.
EXTRA_COMMAND_TYPES: dict[str, type[Any]] = {}


@dataclass(frozen=True, slots=True)
class LoggedCommand:
    counter: int
    command: Command
    actor: str
    received_at: datetime
    reason: str | None
    outputs: dict[str, Any]


def command_from_log(
    kind: str, source: str, event_id: str, args: Mapping[str, Any], source_time: datetime | None
) -> Command:
    """Rebuild the command a log row stored."""
    report_type = REPORT_TYPES.get(kind)
    if report_type is not None:
        station = source  # reports are logged under their station ("cell" for Units.Scrap)
        values = _coerce(report_type, dict(args))
        report: Report = report_type(station=station, event_id=event_id, source_time=source_time, **values)
        return typing.cast(Command, report)
    command_type = COMMAND_TYPES.get(kind) or EXTRA_COMMAND_TYPES.get(kind)
    if command_type is None:
        raise ValueError(f"the log holds a command of unknown kind {kind!r}")
    return typing.cast(Command, command_type(**_coerce(command_type, dict(args))))


def _coerce(cls: type[Any], args: dict[str, Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in args:
            continue
        out[f.name] = _value(hints[f.name], args[f.name])
    return out


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


def logged_from_row(row: Any) -> LoggedCommand | None:
    """The command a log row holds; None for one refused with InternalError (it changed nothing, and
    its arguments may be stored escaped)."""
    if row.reason == Reason.INTERNAL.value:
        return None
    return LoggedCommand(
        counter=row.counter,
        command=command_from_log(row.kind, row.source, row.event_id, row.args, row.source_time),
        actor=row.actor,
        received_at=row.received_at,
        reason=row.reason,
        outputs=row.answer,
    )


async def logged_commands(engine: AsyncEngine, after: int = 0) -> AsyncIterator[LoggedCommand]:
    """Every logged command after counter ``after``, oldest first, read in pages."""
    page = 1000
    async with engine.connect() as conn:
        while True:
            rows = (
                await conn.execute(
                    select(S.cell_events)
                    .where(S.cell_events.c.counter > after)
                    .order_by(S.cell_events.c.counter)
                    .limit(page)
                )
            ).all()
            for row in rows:
                logged = logged_from_row(row)
                if logged is not None:
                    yield logged
            if len(rows) < page:
                return
            after = rows[-1].counter


@dataclass(slots=True)
class ReplayResult:
    commands: int = 0
    mismatches: list[str] = dataclasses.field(default_factory=list)


async def replay(engine: AsyncEngine, model_factory: Callable[[], CellModel]) -> tuple[CellModel, ReplayResult]:
    """Apply the whole log to a fresh model; report every answer that comes out differently."""
    model = model_factory()
    result = ReplayResult()
    async for logged in logged_commands(engine):
        replay_one(model, logged, result)
    return model, result


def replay_rows(rows: Iterable[Any], model_factory: Callable[[], CellModel]) -> tuple[CellModel, ReplayResult]:
    """The same, over log rows already read (any objects with the log's columns as attributes)."""
    model = model_factory()
    result = ReplayResult()
    for row in sorted(rows, key=lambda r: r.counter):
        logged = logged_from_row(row)
        if logged is not None:
            replay_one(model, logged, result)
    return model, result


def replay_one(model: CellModel, logged: LoggedCommand, result: ReplayResult) -> None:
    """Apply one logged command again; a different answer is a mismatch."""
    result.commands += 1
    try:
        outcome = model.apply(logged.command, logged.received_at, logged.actor)
        reason, outputs = None, outcome.outputs
    except Refused as refused:
        reason, outputs = refused.reason.value, {}
    model.drain()
    if reason != logged.reason or _json(outputs) != _json(logged.outputs):
        result.mismatches.append(
            f"#{logged.counter} {logged.command.kind}: logged {logged.reason or 'ok'} {logged.outputs}, "
            f"replayed {reason or 'ok'} {outputs}"
        )


def _json(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    return value
