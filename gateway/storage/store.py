"""Saving and loading the cell's state with SQLAlchemy Core.

The writer runs :func:`save_batch` once per batch, inside one transaction, as synchronous code: on the
store's own thread for SQLite, through ``run_sync`` for async drivers (``database.Transactions``).
Upserts use each backend's own ``INSERT ... ON CONFLICT DO UPDATE`` (SQLite and PostgreSQL share the
syntax and SQLAlchemy's API), so no SQLite-only SQL is needed.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Executable, Table, TextualSelect, delete, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.orders.model import AuditEntry, OrderBook, OrderChanges
from gateway.storage import orders_rows as O
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


@functools.cache
def _upsert_statement(dialect: str, table: Table) -> Executable:
    """``INSERT ... ON CONFLICT (key) DO UPDATE`` for every column, built once per dialect and table.

    Building the construct costs more than executing it for a one-row batch; the writer saves a few
    tables per batch, so the statements are made once and reused (SQLAlchemy caches their SQL).
    """
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(table)
    keys = [c.name for c in table.primary_key.columns]
    update = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
    return stmt.on_conflict_do_update(index_elements=keys, set_=update)


def upsert(conn: Connection, table: Table, rows: Sequence[Row]) -> None:
    if not rows:
        return
    conn.execute(_upsert_statement(conn.dialect.name, table), list(rows))


def save_batch(
    conn: Connection,
    log_rows: Sequence[Row],
    history: Mapping[str, Sequence[Row]],
    model: CellModel,
    dirty: DirtySet,
) -> None:
    """Everything one batch changed, in one transaction (the caller commits)."""
    if log_rows:
        conn.execute(S.cell_events.insert(), list(log_rows))
    for name, rows in history.items():
        if rows:
            conn.execute(_HISTORY_TABLES[name].insert(), list(rows))
    book, tracker = model.book, model.tracker
    upsert(conn, S.part_specs, [R.spec_row(book.specs[k]) for k in dirty.specs])
    upsert(conn, S.routing_templates, [R.template_row(book.templates[k]) for k in dirty.templates])
    upsert(conn, S.jobs, [R.job_row(book.jobs[k]) for k in dirty.jobs])
    upsert(conn, S.units, [R.unit_row(book.units[k]) for k in dirty.units])
    upsert(conn, S.pallets, [R.pallet_row(tracker.pallets[k]) for k in dirty.pallets])
    upsert(conn, S.stations, [R.station_row(tracker.stations[k]) for k in dirty.stations])
    if dirty.serial_seq is not None:
        upsert(conn, S.gateway_meta, [{"key": "serial_seq", "value": str(dirty.serial_seq)}])
    if dirty.orders:
        _save_orders(conn, model, dirty.orders)


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
    orders: OrderDirty = field(default_factory=lambda: OrderDirty())

    @classmethod
    def empty(cls) -> DirtySet:
        return cls(set(), set(), set(), set(), set(), set())

    def __bool__(self) -> bool:
        return bool(self.specs or self.templates or self.jobs or self.units or self.pallets or self.stations) or (
            self.serial_seq is not None or bool(self.orders)
        )


@dataclass(slots=True)
class OrderDirty:
    """Orders changed over a whole batch; audit entries with the log position of their command."""

    bookings: set[str] = field(default_factory=set)
    workorders: set[str] = field(default_factory=set)
    table: bool = False
    schedules: list[str] = field(default_factory=list)
    audit: list[tuple[AuditEntry, int | None]] = field(default_factory=list)
    generated: int | None = None

    def merge(self, changes: OrderChanges, counter: int | None = None) -> None:
        if not changes:
            return
        self.bookings |= changes.bookings
        self.workorders |= changes.workorders
        self.table = self.table or changes.table
        self.schedules.extend(changes.schedules)
        self.audit.extend((entry, counter) for entry in changes.audit)
        self.generated = changes.generated

    def __bool__(self) -> bool:
        return bool(self.bookings or self.workorders or self.table or self.schedules or self.audit)


def _save_orders(conn: Connection, model: CellModel, dirty: OrderDirty) -> None:
    """Rows of the changed bookings, workorders and table, new schedules and audit entries.

    A changed booking or workorder has its part (and serial) rows replaced: all deletions run before
    any insert, so a serial that moved between two workorders in one batch never collides with itself.
    """
    orders = model.orders
    bookings = sorted(dirty.bookings)
    workorders = sorted(dirty.workorders)
    for chunk in _chunks(bookings):
        conn.execute(delete(S.booking_parts).where(S.booking_parts.c.booking_id.in_(chunk)))
    for chunk in _chunks(workorders):
        conn.execute(delete(S.workorder_serials).where(S.workorder_serials.c.workorder_id.in_(chunk)))
        conn.execute(delete(S.workorder_parts).where(S.workorder_parts.c.workorder_id.in_(chunk)))
    present = {b.id: b for b in orders.bookings if b.id in dirty.bookings}
    removed = [b for b in bookings if b not in present]
    for chunk in _chunks(removed):
        conn.execute(delete(S.bookings).where(S.bookings.c.booking_id.in_(chunk)))
    upsert(conn, S.bookings, [O.booking_row(b) for b in present.values()])
    part_rows = [row for b in present.values() for row in O.booking_part_rows(b)]
    if part_rows:
        conn.execute(S.booking_parts.insert(), part_rows)
    changed = [orders.workorder(w) for w in workorders]
    upsert(conn, S.workorders, [O.workorder_row(w) for w in changed])
    rows = [row for w in changed for row in O.workorder_part_rows(w)]
    if rows:
        conn.execute(S.workorder_parts.insert(), rows)
    rows = [row for w in changed for row in O.workorder_serial_rows(w)]
    if rows:
        conn.execute(S.workorder_serials.insert(), rows)
    # The cost report is taken when a workorder is filled; a filled workorder never changes again.
    upsert(conn, S.workorder_results, [O.result_row(O.report_for(w, model.book)) for w in changed if w.filled])
    if dirty.table:
        conn.execute(delete(S.scheduled_parts_without_bookings))
        table = orders.scheduled_without_bookings
        if table:
            conn.execute(
                S.scheduled_parts_without_bookings.insert(),
                [{"part_name": p, "quantity": q} for p, q in sorted(table.items())],
            )
    for schedule_id in dirty.schedules:
        schedule = orders.schedule(schedule_id)
        conn.execute(S.schedules.insert(), [O.schedule_row(schedule)])
        lines = O.schedule_line_rows(schedule)
        if lines:
            conn.execute(S.schedule_lines.insert(), lines)
    if dirty.audit:
        conn.execute(S.order_audit.insert(), [O.audit_row(entry, counter) for entry, counter in dirty.audit])
    if dirty.generated is not None:
        upsert(conn, S.gateway_meta, [{"key": "orders_generated", "value": str(dirty.generated)}])


def _chunks(values: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


async def _load_orders(conn: AsyncConnection) -> OrderBook:
    parts: dict[str, list[Any]] = {}
    for row in await conn.execute(select(S.booking_parts).order_by(S.booking_parts.c.part_name)):
        parts.setdefault(row.booking_id, []).append(row)
    bookings = [O.booking_from(row, parts.get(row.booking_id, ())) for row in await conn.execute(select(S.bookings))]
    wo_parts: dict[str, list[Any]] = {}
    for row in await conn.execute(select(S.workorder_parts).order_by(S.workorder_parts.c.part_name)):
        wo_parts.setdefault(row.workorder_id, []).append(row)
    serials: dict[str, list[Any]] = {}
    for row in await conn.execute(select(S.workorder_serials)):
        serials.setdefault(row.workorder_id, []).append(row)
    workorders = [
        O.workorder_from(row, wo_parts.get(row.workorder_id, ()), serials.get(row.workorder_id, ()))
        for row in await conn.execute(select(S.workorders))
    ]
    lines: dict[str, list[Any]] = {}
    for row in await conn.execute(select(S.schedule_lines).order_by(S.schedule_lines.c.part_name)):
        lines.setdefault(row.schedule_id, []).append(row)
    schedules = [
        O.schedule_from(row, lines.get(row.schedule_id, ()))
        for row in await conn.execute(select(S.schedules).order_by(S.schedules.c.created_at))
    ]
    table = {row.part_name: row.quantity for row in await conn.execute(select(S.scheduled_parts_without_bookings))}
    generated = (
        await conn.execute(select(S.gateway_meta.c.value).where(S.gateway_meta.c.key == "orders_generated"))
    ).scalar()
    return OrderBook.restore(
        bookings=bookings,
        workorders=workorders,
        scheduled_without_bookings=table,
        schedules=schedules,
        generated=int(generated) if generated is not None else 0,
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
    model.orders = await _load_orders(conn)
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


def find_answers(conn: Connection, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], LoggedAnswer]:
    """Stored answers for these (source, EventId) keys.

    The keys go in as a ``VALUES`` list joined to the log on its unique (source, event_id) index: both
    backends probe the index once per key. The list is padded to one of three lengths, so the database
    sees three statements, not one per batch size (SQLite keeps prepared statements per connection,
    SQLAlchemy its compiled ones: varying shapes held memory). A row-value ``(source, event_id) IN``
    made SQLite scan the whole log; a query per station cost a round trip per station.
    """
    wanted = list(dict.fromkeys(keys))
    out: dict[tuple[str, str], LoggedAnswer] = {}
    largest = _LOOKUP_SIZES[-1]
    for start in range(0, len(wanted), largest):
        chunk = wanted[start : start + largest]
        size = next(n for n in _LOOKUP_SIZES if n >= len(chunk))
        padded = chunk + [("", "")] * (size - len(chunk))  # no report has an empty EventId
        params = {f"{name}{i}": value for i, key in enumerate(padded) for name, value in zip("se", key, strict=True)}
        for row in conn.execute(_lookup(size), params):
            out[(row.source, row.event_id)] = _logged(row)
    return out


_LOOKUP_SIZES = (16, 64, 256)  # 512 parameters at most: under SQLite's old limit of 999


@functools.cache
def _lookup(size: int) -> TextualSelect:
    keys = ", ".join(f"(CAST(:s{i} AS VARCHAR(64)), CAST(:e{i} AS VARCHAR(128)))" for i in range(size))
    columns = ", ".join(f"cell_events.{c.name}" for c in _LOG_COLUMNS)
    return text(
        f"WITH wanted (source, event_id) AS (VALUES {keys}) SELECT {columns} FROM wanted JOIN cell_events "
        "ON cell_events.source = wanted.source AND cell_events.event_id = wanted.event_id"
    ).columns(*_LOG_COLUMNS)
