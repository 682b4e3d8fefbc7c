"""Replaying the event log: every stored command, in counter order, at the time it was received.

The log is the history of the cell: applying it again to a fresh model must give the same state and
the same answers. Tests use it to prove that the state saved alongside the log never drifts from it
(the recorded production days, the writer's property tests).

The model is built from today's config, but a job's routing is a snapshot of the day it was created
(seed ``000``): a command that created a job (or a template, or replaced a job's routing) is replayed
with the routing stored for it, so that an edit of the process configuration since then changes
nothing that was already made. Everything else runs on today's config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.cell.codec import decode
from gateway.cell.commands import Command
from gateway.cell.model import CellModel
from gateway.errors import Reason, Refused
from gateway.jobs.book import JobBook
from gateway.jobs.commands import (
    CreateJob,
    CreateTemplate,
    EditTemplate,
    ReplaceRouting,
    SplitJob,
)
from gateway.jobs.layout import CellLayout
from gateway.jobs.model import Routing, RoutingSource, RoutingSourceKind
from gateway.orders.commands import RunSchedule
from gateway.storage import rows as R
from gateway.storage import schema as S
from gateway.storage.store import chunks

# Other packages register their commands here (kind -> class), e.g. the orders commands.


@dataclass(frozen=True, slots=True)
class LoggedCommand:
    counter: int
    command: Command
    actor: str
    received_at: datetime
    reason: str | None
    outputs: dict[str, Any]


def logged_from_row(row: Any) -> LoggedCommand | None:
    """The command a log row holds; None for one refused with InternalError (it changed nothing, and
    its arguments may be stored escaped)."""
    if row.reason == Reason.INTERNAL.value:
        return None
    return LoggedCommand(
        counter=row.counter,
        command=decode(row.kind, row.source, row.event_id, row.args, row.source_time),
        actor=row.actor,
        received_at=row.received_at,
        reason=row.reason,
        outputs=row.answer,
    )


async def _log_pages(conn: AsyncConnection, after: int = 0, page: int = 1000) -> AsyncIterator[list[LoggedCommand]]:
    """The logged commands after counter ``after``, oldest first, a page at a time."""
    while True:
        rows = (
            await conn.execute(
                select(S.cell_events)
                .where(S.cell_events.c.counter > after)
                .order_by(S.cell_events.c.counter)
                .limit(page)
            )
        ).all()
        yield [logged for row in rows if (logged := logged_from_row(row)) is not None]
        if len(rows) < page:
            return
        after = rows[-1].counter


async def logged_commands(engine: AsyncEngine, after: int = 0) -> AsyncIterator[LoggedCommand]:
    """Every logged command after counter ``after``, oldest first, read in pages."""
    async with engine.connect() as conn:
        async for page in _log_pages(conn, after):
            for logged in page:
                yield logged


# ------------------------------------------------------------------------------- stored routings
@dataclass(frozen=True, slots=True)
class StoredJob:
    """What the jobs table kept of how a job was made: its routing snapshot and its yield buffer."""

    source: RoutingSource
    routing: Routing
    yield_buffer_percent: float


@dataclass(frozen=True, slots=True)
class StoredRoutings:
    """The routings the store kept, of the jobs and templates some logged commands made."""

    jobs: Mapping[str, StoredJob] = dataclasses.field(default_factory=dict)
    templates: Mapping[str, Routing] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_rows(cls, jobs: Iterable[Any] = (), templates: Iterable[Any] = ()) -> StoredRoutings:
        """From rows of the jobs table (id, source, routing, yield_buffer_percent) and of the
        routing_templates table (id, steps)."""
        return cls(
            {
                r.id: StoredJob(RoutingSource.parse(r.source), R.steps_from_json(r.routing), r.yield_buffer_percent)
                for r in jobs
            },
            {r.id: R.steps_from_json(r.steps) for r in templates},
        )


def _made(logged: LoggedCommand) -> tuple[list[str], list[str]]:
    """The jobs and templates whose routing ``logged`` resolved from the config when it was applied."""
    if logged.reason is not None:
        return [], []  # refused: it made nothing
    command, outputs = logged.command, logged.outputs
    jobs: list[object] = []
    templates: list[object] = []
    match command:
        case CreateJob():
            jobs.append(outputs.get("JobId"))
        case RunSchedule():
            found = outputs.get("Jobs")
            jobs.extend(found.values() if isinstance(found, Mapping) else ())
        case SplitJob():
            jobs.append(outputs.get("ChildJobId"))
        case ReplaceRouting():
            jobs.append(command.job_id)
        case CreateTemplate():
            templates.append(outputs.get("TemplateId"))
        case EditTemplate():
            templates.append(command.template_id)
        case _:
            pass
    return [j for j in jobs if isinstance(j, str)], [t for t in templates if isinstance(t, str)]


async def _stored_routings(conn: AsyncConnection, page: Sequence[LoggedCommand]) -> StoredRoutings:
    """The stored routings of what the commands of one page made (read per page: memory stays flat)."""
    job_ids: set[str] = set()
    template_ids: set[str] = set()
    for logged in page:
        jobs, templates = _made(logged)
        job_ids.update(jobs)
        template_ids.update(templates)
    job_rows: list[Any] = []
    j = S.jobs.c
    for chunk in chunks(sorted(job_ids)):
        query = select(j.id, j.source, j.routing, j.yield_buffer_percent).where(j.id.in_(chunk))
        job_rows.extend(await conn.execute(query))
    template_rows: list[Any] = []
    t = S.routing_templates.c
    for chunk in chunks(sorted(template_ids)):
        template_rows.extend(await conn.execute(select(t.id, t.steps).where(t.id.in_(chunk))))
    return StoredRoutings.from_rows(job_rows, template_rows)


@contextmanager
def _as_made(book: JobBook, logged: LoggedCommand, stored: StoredRoutings | None) -> Iterator[None]:
    """While ``logged`` is applied, the book's config is the one its jobs and templates were made with.

    Automatic mode takes the process configuration whole, so an automatic job's stored routing *is*
    the process of that moment (for every part of a daily schedule alike); an operation code resolves
    to its step as stored in the routings made; new jobs take the yield buffer stored for them. What
    the store does not know (a refused command; a log replayed without its tables) runs on today's.
    """
    job_ids, template_ids = _made(logged) if stored is not None else ([], [])
    jobs = [stored.jobs[j] for j in job_ids if j in stored.jobs] if stored is not None else []
    steps = [stored.templates[t] for t in template_ids if t in stored.templates] if stored is not None else []
    if not jobs and not steps:
        yield
        return
    layout, buffer = book.layout, book.default_yield_buffer_percent
    automatic = next((job.routing for job in jobs if job.source.kind is RoutingSourceKind.AUTOMATIC), None)
    catalogue = dict(layout.catalogue)
    for routing in [*(job.routing for job in jobs), *steps]:
        catalogue.update((step.operation, step) for step in routing)
    book.layout = CellLayout(
        layout.stations, layout.process if automatic is None else automatic, layout.pallets, catalogue
    )
    if jobs:
        book.default_yield_buffer_percent = jobs[0].yield_buffer_percent
    try:
        yield
    finally:
        book.layout, book.default_yield_buffer_percent = layout, buffer


# ------------------------------------------------------------------------------------------ replay
@dataclass(slots=True)
class ReplayResult:
    commands: int = 0
    mismatches: list[str] = dataclasses.field(default_factory=list)


async def replay(engine: AsyncEngine, model_factory: Callable[[], CellModel]) -> tuple[CellModel, ReplayResult]:
    """Apply the whole log to a fresh model; report every answer that comes out differently. Jobs and
    templates are made with the routings stored for them, whatever the model's config says today."""
    model = model_factory()
    result = ReplayResult()
    async with engine.connect() as conn:
        async for page in _log_pages(conn):
            stored = await _stored_routings(conn, page)
            for logged in page:
                replay_one(model, logged, result, stored)
    return model, result


def replay_rows(
    rows: Iterable[Any],
    model_factory: Callable[[], CellModel],
    *,
    jobs: Iterable[Any] = (),
    templates: Iterable[Any] = (),
) -> tuple[CellModel, ReplayResult]:
    """The same, over log rows already read (any objects with the log's columns as attributes).

    ``jobs`` and ``templates``: rows of the jobs and routing_templates tables, for the routings stored
    for them (see :meth:`StoredRoutings.from_rows`); without them, jobs are made from today's config.
    """
    model = model_factory()
    result = ReplayResult()
    stored = StoredRoutings.from_rows(jobs, templates)
    for row in sorted(rows, key=lambda r: r.counter):
        logged = logged_from_row(row)
        if logged is not None:
            replay_one(model, logged, result, stored)
    return model, result


def replay_one(
    model: CellModel, logged: LoggedCommand, result: ReplayResult, stored: StoredRoutings | None = None
) -> None:
    """Apply one logged command again; a different answer is a mismatch. ``stored``: the routings kept
    for the jobs and templates it made (None: made from today's config)."""
    result.commands += 1
    try:
        with _as_made(model.book, logged, stored):
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
