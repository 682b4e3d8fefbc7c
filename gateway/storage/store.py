"""Saving and loading the cell's state with SQLAlchemy Core.

The writer runs :func:`save_batch` once per batch, inside one transaction, as synchronous code: on the
store's own thread for SQLite, through ``run_sync`` for async drivers (``database.Transactions``).
Upserts use each backend's own ``INSERT ... ON CONFLICT DO UPDATE`` (SQLite and PostgreSQL share the
syntax and SQLAlchemy's API), so no SQLite-only SQL is needed.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, Executable, Table, TextualSelect, and_, delete, func, or_, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.jobs.book import job_number
from gateway.jobs.model import Job, JobState, Unit, UnitStatus
from gateway.orders.costs import unit_cost
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


# ---------------------------------------------------------------------------------------- loading
# Memory holds the cell's live state, not its history: jobs that are not Closed, Closed jobs that still
# have a live unit or a unit on a pallet (or a unit whose hand-given serial the counter has yet to
# reach, see CellModel.retire), and all units of those jobs. The rest stays stored; the writer reads
# it back when a command names it (fetch_retired, CellModel.references and CellModel.adopt).

_OPEN_STATES = tuple(s.value for s in JobState if s is not JobState.CLOSED)
_LIVE_STATUSES = (UnitStatus.WAITING.value, UnitStatus.IN_STEP.value)
_JOB_SEQ = "job_seq"  # not stored: load_model derives it from the stored job ids for restore_model
_WHOLE_TABLES: Mapping[str, Table] = {
    "part_specs": S.part_specs,
    "routing_templates": S.routing_templates,
    "pallets": S.pallets,
    "stations": S.stations,
    "gateway_meta": S.gateway_meta,
    "bookings": S.bookings,
    "booking_parts": S.booking_parts,
    "scheduled_parts_without_bookings": S.scheduled_parts_without_bookings,
    "workorders": S.workorders,
    "workorder_parts": S.workorder_parts,
    "workorder_serials": S.workorder_serials,
    "schedules": S.schedules,
    "schedule_lines": S.schedule_lines,
}


async def load_model(conn: AsyncConnection, model: CellModel) -> None:
    """Fill a freshly built model (from config) with the live state stored (see :func:`restore_model`)."""
    tables: dict[str, list[Any]] = {}
    for name, table in _WHOLE_TABLES.items():
        tables[name] = list(await conn.execute(select(table)))
    tracker = model.tracker
    meta = {row.key: row.value for row in tables["gateway_meta"]}
    tracker.serial_seq = int(meta.get("serial_seq", 0))

    units, jobs = S.units, S.jobs
    job_rows = list(await conn.execute(select(jobs).where(jobs.c.state.in_(_OPEN_STATES))))
    kept = {row.id for row in job_rows}
    wanted: set[str] = set()
    live = select(units.c.job_id).where(units.c.status.in_(_LIVE_STATUSES)).distinct()
    wanted.update(row.job_id for row in await conn.execute(live))
    on_pallets = sorted({s for p in tables["pallets"] if p.id in tracker.pallets for s in p.units})
    for chunk in _chunks(on_pallets):
        wanted.update(row.job_id for row in await conn.execute(select(units.c.job_id).where(units.c.serial.in_(chunk))))
    # Serials given by hand that the counter has yet to generate: few, found among the serials that
    # start like a generated one and sort after the counter's (a wider superset, then the exact test).
    current = tracker.serial_for(tracker.serial_seq)
    length = func.length(units.c.serial)
    ahead = select(units.c.serial, units.c.job_id).where(
        units.c.serial.startswith(tracker.generated_prefix(), autoescape=True),
        or_(length > len(current), and_(length == len(current), units.c.serial > current)),
    )
    wanted.update(row.job_id for row in await conn.execute(ahead) if tracker.may_generate(row.serial))
    for chunk in _chunks(sorted(wanted - kept)):
        job_rows.extend(await conn.execute(select(jobs).where(jobs.c.id.in_(chunk))))
    tables["jobs"] = job_rows

    unit_rows: list[Any] = []
    for chunk in _chunks(sorted(row.id for row in job_rows)):
        unit_rows.extend(await conn.execute(select(units).where(units.c.job_id.in_(chunk))))
    # The units of serials in unfilled workorders, for the times their cost reports are made of.
    held = {row.serial for row in unit_rows}
    serials, workorders = S.workorder_serials, S.workorders
    assigned = (
        select(units)
        .join(serials, serials.c.serial == units.c.serial)
        .join(workorders, workorders.c.workorder_id == serials.c.workorder_id)
        .where(workorders.c.filled.is_(False))
    )
    unit_rows.extend(row for row in await conn.execute(assigned) if row.serial not in held)
    tables["units"] = unit_rows

    # Generated job ids continue after every stored one, retired or not.
    highest = 0
    stream = await conn.stream(select(jobs.c.id).where(jobs.c.id.startswith("J-")))
    async for row in stream:
        highest = max(highest, job_number(row.id) or 0)
    tables["gateway_meta"].append(SimpleNamespace(key=_JOB_SEQ, value=str(highest)))
    restore_model(model, tables)


def restore_model(model: CellModel, tables: Mapping[str, Sequence[Any]]) -> None:
    """Fill a freshly built model (from config) with stored rows: each table's rows by its name in
    :mod:`gateway.storage.schema` (tables not given are empty), rows with attribute access.

    Pure: the rows may be a whole store's, or the part :func:`load_model` reads. Jobs kept in memory
    are the ones that are not Closed, and Closed ones with a live unit, a unit on a (configured) pallet
    or a unit whose hand-given serial the counter has yet to generate; with all of their units. Every
    unit row given still counts for the cost report of an unfilled workorder that holds its serial.
    A ``job_seq`` row in ``gateway_meta`` keeps generated job ids after ``J-<job_seq>``.
    """
    book, tracker = model.book, model.tracker
    for row in tables.get("part_specs", ()):
        spec = R.spec_from(row)
        book.specs[spec.key] = spec
    for row in tables.get("routing_templates", ()):
        template = R.template_from(row)
        book.templates[template.id] = template
    for row in tables.get("pallets", ()):
        if row.id in tracker.pallets:  # a pallet removed from config keeps its history, not its place
            tracker.pallets[row.id] = R.pallet_from(row)
    for row in tables.get("stations", ()):
        if row.id in tracker.stations:
            tracker.stations[row.id] = R.station_from(row)
    meta = {row.key: row.value for row in tables.get("gateway_meta", ())}
    tracker.serial_seq = int(meta.get("serial_seq", 0))
    book.note_job_seq(int(meta.get(_JOB_SEQ, 0)))

    job_rows = tables.get("jobs", ())
    unit_rows = tables.get("units", ())
    on_pallets = {serial for pallet in tracker.pallets.values() for serial in pallet.units}
    stored = set()
    kept = set()
    for row in job_rows:
        stored.add(row.id)
        book.note_job_id(row.id)
        if row.state != JobState.CLOSED.value:
            kept.add(row.id)
    for row in unit_rows:
        if row.job_id not in kept and (
            row.status in _LIVE_STATUSES or row.serial in on_pallets or tracker.may_generate(row.serial)
        ):
            kept.add(row.job_id)
    kept &= stored
    book.adopt(
        [R.job_from(row) for row in job_rows if row.id in kept],
        [R.unit_from(row) for row in unit_rows if row.job_id in kept],
    )
    model.orders = _restore_orders(tables, unit_rows, meta)
    model.drain()


def _restore_orders(
    tables: Mapping[str, Sequence[Any]], unit_rows: Sequence[Any], meta: Mapping[str, str]
) -> OrderBook:
    def by(name: str, key: str, order: str | None = None) -> dict[str, list[Any]]:
        found: dict[str, list[Any]] = {}
        rows = tables.get(name, ())
        for row in sorted(rows, key=lambda r: getattr(r, order)) if order else rows:
            found.setdefault(getattr(row, key), []).append(row)
        return found

    parts = by("booking_parts", "booking_id", "part_name")
    bookings = [O.booking_from(row, parts.get(row.booking_id, ())) for row in tables.get("bookings", ())]
    wo_parts = by("workorder_parts", "workorder_id", "part_name")
    serials = by("workorder_serials", "workorder_id")
    units = {row.serial: row for row in unit_rows}
    workorders = []
    for row in tables.get("workorders", ()):
        workorder = O.workorder_from(row, wo_parts.get(row.workorder_id, ()), serials.get(row.workorder_id, ()))
        if not workorder.filled:
            # Each serial's times, as kept when it was assigned (a finished unit's never change again).
            found = [(s, units[s]) for s in workorder.all_serials if s in units]
            costs = {s: unit_cost(s, R.unit_from(u).cost) for s, u in found}
            workorder = replace(workorder, costs=costs)
        workorders.append(workorder)
    lines = by("schedule_lines", "schedule_id", "part_name")
    schedules = [
        O.schedule_from(row, lines.get(row.schedule_id, ()))
        for row in sorted(tables.get("schedules", ()), key=lambda r: r.created_at)
    ]
    table = {row.part_name: row.quantity for row in tables.get("scheduled_parts_without_bookings", ())}
    return OrderBook.restore(
        bookings=bookings,
        workorders=workorders,
        scheduled_without_bookings=table,
        schedules=schedules,
        generated=int(meta.get("orders_generated", 0)),
    )


def fetch_retired(conn: Connection, job_ids: Iterable[str], serials: Iterable[str]) -> tuple[list[Job], list[Unit]]:
    """Stored jobs and units the model does not hold (:meth:`CellModel.references`), for
    :meth:`CellModel.adopt`: the jobs named, the jobs of the serials named, and all units of those jobs.

    Ids that are not stored are left out. Synchronous (the store's thread); every query goes through
    an index (the primary keys, units.job_id) with at most 500 parameters.
    """
    units, jobs = S.units, S.jobs
    wanted = dict.fromkeys(job_ids)
    for chunk in _chunks(sorted(set(serials))):
        wanted.update(
            dict.fromkeys(row.job_id for row in conn.execute(select(units.c.job_id).where(units.c.serial.in_(chunk))))
        )
    found: list[Job] = []
    for chunk in _chunks(list(wanted)):
        found.extend(R.job_from(row) for row in conn.execute(select(jobs).where(jobs.c.id.in_(chunk))))
    their_units: list[Unit] = []
    for chunk in _chunks([job.id for job in found]):
        their_units.extend(R.unit_from(row) for row in conn.execute(select(units).where(units.c.job_id.in_(chunk))))
    return found, their_units


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
