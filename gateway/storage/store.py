"""Saving and loading the cell's state with SQLAlchemy Core.

The writer calls :func:`save_batch` once per batch, inside one transaction. Upserts use each backend's
own ``INSERT ... ON CONFLICT DO UPDATE`` (SQLite and PostgreSQL share the syntax and SQLAlchemy's API),
so no SQLite-only SQL is needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, func, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.storage import rows as R
from gateway.storage import schema as S
from gateway.tracking.model import CellModel

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class LoggedAnswer:
    """A stored report and its answer, as an idempotent retry needs it."""

    counter: int
    kind: str
    args: dict[str, Any]
    reason: str | None
    message: str
    outputs: dict[str, Any]
    flags: list[dict[str, Any]]


_HISTORY_TABLES: Mapping[str, Table] = {
    "unit_scans": S.unit_scans,
    "job_transitions": S.job_transitions,
    "unit_events": S.unit_events,
}


async def upsert(conn: AsyncConnection, table: Table, rows: Sequence[Row]) -> None:
    if not rows:
        return
    dialect = conn.dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(table)
    keys = [c.name for c in table.primary_key.columns]
    update = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
    await conn.execute(stmt.on_conflict_do_update(index_elements=keys, set_=update), list(rows))


async def save_batch(
    conn: AsyncConnection,
    log_rows: Sequence[Row],
    history: Mapping[str, Sequence[Row]],
    model: CellModel,
    dirty: DirtySet,
) -> None:
    """Everything one batch changed, in one transaction (the caller commits)."""
    if log_rows:
        await conn.execute(S.cell_events.insert(), list(log_rows))
    for name, rows in history.items():
        if rows:
            await conn.execute(_HISTORY_TABLES[name].insert(), list(rows))
    book, tracker = model.book, model.tracker
    await upsert(conn, S.part_specs, [R.spec_row(book.specs[k]) for k in dirty.specs])
    await upsert(conn, S.routing_templates, [R.template_row(book.templates[k]) for k in dirty.templates])
    await upsert(conn, S.jobs, [R.job_row(book.jobs[k]) for k in dirty.jobs])
    await upsert(conn, S.units, [R.unit_row(book.units[k]) for k in dirty.units])
    await upsert(conn, S.pallets, [R.pallet_row(tracker.pallets[k]) for k in dirty.pallets])
    await upsert(conn, S.stations, [R.station_row(tracker.stations[k]) for k in dirty.stations])
    if dirty.serial_seq is not None:
        await upsert(conn, S.gateway_meta, [{"key": "serial_seq", "value": str(dirty.serial_seq)}])


@dataclass(slots=True)
class DirtySet:
    """Entities changed over a whole batch: each saved once, in its final state."""

    specs: set[tuple[str, str]]
    templates: set[str]
    jobs: set[str]
    units: set[str]
    pallets: set[str]
    stations: set[str]
    serial_seq: int | None = None

    @classmethod
    def empty(cls) -> DirtySet:
        return cls(set(), set(), set(), set(), set(), set())

    def __bool__(self) -> bool:
        return bool(self.specs or self.templates or self.jobs or self.units or self.pallets or self.stations) or (
            self.serial_seq is not None
        )


async def load_model(conn: AsyncConnection, model: CellModel) -> None:
    """Fill a freshly built model (from config) with everything stored."""
    book, tracker = model.book, model.tracker
    for row in await conn.execute(select(S.part_specs)):
        spec = R.spec_from(row)
        book.specs[spec.key] = spec
    for row in await conn.execute(select(S.routing_templates)):
        template = R.template_from(row)
        book.templates[template.id] = template
    for row in await conn.execute(select(S.jobs)):
        job = R.job_from(row)
        book.jobs[job.id] = job
        book.note_job_id(job.id)
    for row in await conn.execute(select(S.units)):
        unit = R.unit_from(row)
        book.units[unit.serial] = unit
    for row in await conn.execute(select(S.pallets)):
        if row.id in tracker.pallets:  # a pallet removed from config keeps its history, not its place
            tracker.pallets[row.id] = R.pallet_from(row)
    for row in await conn.execute(select(S.stations)):
        if row.id in tracker.stations:
            tracker.stations[row.id] = R.station_from(row)
    seq = (await conn.execute(select(S.gateway_meta.c.value).where(S.gateway_meta.c.key == "serial_seq"))).scalar()
    tracker.serial_seq = int(seq) if seq is not None else 0
    model.drain()


async def last_counter(conn: AsyncConnection) -> int:
    return int((await conn.execute(select(func.coalesce(func.max(S.cell_events.c.counter), 0)))).scalar_one())


async def count_events(conn: AsyncConnection) -> int:
    return int((await conn.execute(select(func.count()).select_from(S.cell_events))).scalar_one())


def _logged(row: Any) -> LoggedAnswer:
    return LoggedAnswer(
        counter=row.counter,
        kind=row.kind,
        args=row.args,
        reason=row.reason,
        message=row.message,
        outputs=row.answer,
        flags=row.flags,
    )


_LOG_COLUMNS = (
    S.cell_events.c.counter,
    S.cell_events.c.source,
    S.cell_events.c.event_id,
    S.cell_events.c.kind,
    S.cell_events.c.args,
    S.cell_events.c.reason,
    S.cell_events.c.message,
    S.cell_events.c.answer,
    S.cell_events.c.flags,
)


async def recent_answers(conn: AsyncConnection, limit: int) -> list[tuple[tuple[str, str], LoggedAnswer]]:
    """The newest ``limit`` logged reports, oldest first, to warm the idempotency cache."""
    query = select(*_LOG_COLUMNS).order_by(S.cell_events.c.counter.desc()).limit(limit)
    found = [((r.source, r.event_id), _logged(r)) for r in await conn.execute(query)]
    found.reverse()
    return found


async def find_answers(conn: AsyncConnection, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], LoggedAnswer]:
    wanted = list(keys)
    out: dict[tuple[str, str], LoggedAnswer] = {}
    for start in range(0, len(wanted), 200):
        chunk = wanted[start : start + 200]
        query = select(*_LOG_COLUMNS).where(tuple_(S.cell_events.c.source, S.cell_events.c.event_id).in_(chunk))
        for row in await conn.execute(query):
            out[(row.source, row.event_id)] = _logged(row)
    return out
