"""Loading the cell's state and looking up stored answers with SQLAlchemy Core.

What a batch writes is built in :mod:`gateway.storage.batch` and written by
:func:`gateway.storage.batch.write_batch`; :mod:`gateway.storage.sql_store` puts both behind the
writer's storage port. Nothing here is SQLite-only SQL.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, Table, TextualSelect, and_, func, or_, select, text, true
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.cell.model import CellModel
from gateway.jobs.lifecycle import job_number
from gateway.jobs.model import Job, JobState, Unit, UnitStatus
from gateway.orders import OrderBook
from gateway.orders.costs import unit_cost
from gateway.storage import orders_rows as O
from gateway.storage import rows as R
from gateway.storage import schema as S

Row = dict[str, Any]


def chunks(values: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    """``values`` in slices of at most ``size``: the parameters of one ``IN (...)`` each."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


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


# ---------------------------------------------------------------------------------------- loading
# Memory holds the cell's live state, not its history: jobs that are not Closed, Closed jobs that still
# have a live unit, a unit under an open Lost Audit or a unit on a pallet (or a unit whose hand-given
# serial the counter has yet to reach, see CellModel.retire), and of their units the live ones, the
# audited ones, the ones on pallets and the ones with such a serial. The rest stays stored; the writer
# reads it back when a command names it (fetch_retired, CellModel.references and CellModel.adopt).

_OPEN_STATES = tuple(s.value for s in JobState if s is not JobState.CLOSED)
_LIVE_STATUSES = (UnitStatus.WAITING.value, UnitStatus.IN_STEP.value)
# The units under an open Lost Audit: the same predicate as the partial index ix_units_audit_flagged,
# so the database finds the few through it.
AUDITED_UNITS = select(S.units).where(S.units.c.audit_flagged == true())
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
    extra: list[Any] = []  # units held for what they are, not for being live
    for chunk in chunks(on_pallets):
        extra.extend(await conn.execute(select(units).where(units.c.serial.in_(chunk))))
    # Serials given by hand that the counter has yet to generate: few, found among the serials that
    # start like a generated one and sort after the counter's (a wider superset, then the exact test).
    current = tracker.serial_for(tracker.serial_seq)
    length = func.length(units.c.serial)
    ahead = select(units).where(
        units.c.serial.startswith(tracker.generated_prefix(), autoescape=True),
        or_(length > len(current), and_(length == len(current), units.c.serial > current)),
    )
    extra.extend(row for row in await conn.execute(ahead) if tracker.may_generate(row.serial))
    # Units under an open Lost Audit (a finished one keeps it until an engineer resolves it).
    extra.extend(await conn.execute(AUDITED_UNITS))
    wanted.update(row.job_id for row in extra)
    for chunk in chunks(sorted(wanted - kept)):
        job_rows.extend(await conn.execute(select(jobs).where(jobs.c.id.in_(chunk))))
    tables["jobs"] = job_rows

    # Of the kept jobs' units, the live ones (through units.job_id or units.status) and those above,
    # job by job; finished and scrapped units stay stored until a command needs them.
    unit_rows: list[Any] = []
    for chunk in chunks(sorted(row.id for row in job_rows)):
        unit_rows.extend(
            await conn.execute(select(units).where(units.c.job_id.in_(chunk), units.c.status.in_(_LIVE_STATUSES)))
        )
    held = {row.serial for row in unit_rows}
    for row in extra:
        if row.serial not in held:
            held.add(row.serial)
            unit_rows.append(row)
    unit_rows.sort(key=lambda row: row.job_id)  # stable: each job's units in the order read

    # The units of serials in unfilled workorders, for the times their cost reports are made of.
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

    Pure: the rows may be a whole store's, or the part :func:`load_model` reads. Units kept in memory are the live
    ones, the ones under an open Lost Audit, the ones on a (configured) pallet and the ones whose hand-given serial
    the counter has yet to generate; jobs kept are the ones that are not Closed and the ones of those units. Every
    kept job counts as incomplete (:meth:`JobBook.complete`): storage may hold more of its units, read back when a
    command needs them all. Every unit row given still counts for the cost report of an unfilled workorder that
    holds its serial. A ``job_seq`` row in ``gateway_meta`` keeps generated job ids after ``J-<job_seq>``.
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
    held = [
        row
        for row in unit_rows
        if row.status in _LIVE_STATUSES
        or row.audit_flagged
        or row.serial in on_pallets
        or tracker.may_generate(row.serial)
    ]
    kept.update(row.job_id for row in held)
    kept &= stored
    book.adopt(
        [R.job_from(row) for row in job_rows if row.id in kept],
        [R.unit_from(row) for row in held if row.job_id in kept],
    )
    book.mark_incomplete(kept)
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
    for chunk in chunks(sorted(set(serials))):
        wanted.update(
            dict.fromkeys(row.job_id for row in conn.execute(select(units.c.job_id).where(units.c.serial.in_(chunk))))
        )
    found: list[Job] = []
    for chunk in chunks(list(wanted)):
        found.extend(R.job_from(row) for row in conn.execute(select(jobs).where(jobs.c.id.in_(chunk))))
    their_units: list[Unit] = []
    for chunk in chunks([job.id for job in found]):
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
