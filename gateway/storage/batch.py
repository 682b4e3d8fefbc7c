"""One batch's changes as table operations: built from the model on the event loop, written anywhere.

The writer turns what a batch changed into a :class:`BatchRows` right after applying it, before the
next batch is applied: from then on the rows are plain values, so the store can write them on its own
thread while the model moves on (the next batch is applied while this one commits), and an in-memory
store can apply the very same operations. Nothing here reads the model after :func:`batch_rows`
returns.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Connection, Executable, Table, delete
from sqlalchemy.dialects import postgresql, sqlite

from gateway.cell.model import CellModel
from gateway.orders import AuditEntry, OrderChanges
from gateway.storage import orders_rows as O
from gateway.storage import rows as R
from gateway.storage import schema as S
from gateway.storage.store import LoggedAnswer, chunks

Row = dict[str, Any]

#: insert: append rows; upsert: insert or replace by primary key; delete: rows whose ``column`` is in
#: ``values``; clear: every row of the table.
OpKind = Literal["insert", "upsert", "delete", "clear"]


@dataclass(frozen=True, slots=True)
class Op:
    kind: OpKind
    table: str
    rows: tuple[Row, ...] = ()
    column: str = ""
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BatchRows:
    """Everything one committed batch writes, in the order it must be written."""

    ops: tuple[Op, ...]

    def __bool__(self) -> bool:
        return bool(self.ops)

    @property
    def log_rows(self) -> tuple[Row, ...]:
        return tuple(row for op in self.ops if op.table == "cell_events" for row in op.rows)


@dataclass(frozen=True, slots=True)
class Loaded:
    """What a store's load found beside the model it filled."""

    counter: int  # the last committed log position
    recent: Sequence[tuple[tuple[str, str], LoggedAnswer]]  # the newest logged reports, oldest first
    total: int  # reports and commands in the log


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


@dataclass(slots=True)
class DirtySet:
    """Entities changed over a whole batch: each saved once, in its final state."""

    specs: set[tuple[str, str]] = field(default_factory=set)
    templates: set[str] = field(default_factory=set)
    jobs: set[str] = field(default_factory=set)
    units: set[str] = field(default_factory=set)
    pallets: set[str] = field(default_factory=set)
    stations: set[str] = field(default_factory=set)
    serial_seq: int | None = None
    orders: OrderDirty = field(default_factory=OrderDirty)

    @classmethod
    def empty(cls) -> DirtySet:
        return cls()


def batch_rows(
    model: CellModel, log_rows: Sequence[Row], history: Mapping[str, Sequence[Row]], dirty: DirtySet
) -> BatchRows:
    """The table operations of one batch, read from the model now (it may change right after)."""
    ops: list[Op] = []
    if log_rows:
        ops.append(Op("insert", "cell_events", tuple(log_rows)))
    for name, rows in history.items():
        if rows:
            ops.append(Op("insert", name, tuple(rows)))
    book, tracker = model.book, model.tracker
    _upsert(ops, "part_specs", [R.spec_row(book.specs[k]) for k in sorted(dirty.specs)])
    _upsert(ops, "routing_templates", [R.template_row(book.templates[k]) for k in sorted(dirty.templates)])
    _upsert(ops, "jobs", [R.job_row(book.jobs[k]) for k in sorted(dirty.jobs)])
    _upsert(ops, "units", [R.unit_row(book.units[k]) for k in sorted(dirty.units)])
    _upsert(ops, "pallets", [R.pallet_row(tracker.pallets[k]) for k in sorted(dirty.pallets)])
    _upsert(ops, "stations", [R.station_row(tracker.stations[k]) for k in sorted(dirty.stations)])
    if dirty.serial_seq is not None:
        _upsert(ops, "gateway_meta", [{"key": "serial_seq", "value": str(dirty.serial_seq)}])
    if dirty.orders:
        _order_ops(ops, model, dirty.orders)
    return BatchRows(tuple(ops))


def _upsert(ops: list[Op], table: str, rows: Sequence[Row]) -> None:
    if rows:
        ops.append(Op("upsert", table, tuple(rows)))


def _delete(ops: list[Op], table: str, column: str, values: Sequence[str]) -> None:
    if values:
        ops.append(Op("delete", table, column=column, values=tuple(values)))


def _order_ops(ops: list[Op], model: CellModel, dirty: OrderDirty) -> None:
    """Rows of the changed bookings, workorders and table, new schedules and audit entries.

    A changed booking or workorder has its part (and serial) rows replaced: all deletions come before
    any insert, so a serial that moved between two workorders in one batch never collides with itself.
    """
    orders = model.orders
    bookings = sorted(dirty.bookings)
    workorders = sorted(dirty.workorders)
    _delete(ops, "booking_parts", "booking_id", bookings)
    _delete(ops, "workorder_serials", "workorder_id", workorders)
    _delete(ops, "workorder_parts", "workorder_id", workorders)
    present = {b.id: b for b in orders.bookings if b.id in dirty.bookings}
    _delete(ops, "bookings", "booking_id", [b for b in bookings if b not in present])
    _upsert(ops, "bookings", [O.booking_row(b) for b in present.values()])
    parts = [row for b in present.values() for row in O.booking_part_rows(b)]
    if parts:
        ops.append(Op("insert", "booking_parts", tuple(parts)))
    changed = [orders.workorder(w) for w in workorders]
    _upsert(ops, "workorders", [O.workorder_row(w) for w in changed])
    rows = [row for w in changed for row in O.workorder_part_rows(w)]
    if rows:
        ops.append(Op("insert", "workorder_parts", tuple(rows)))
    rows = [row for w in changed for row in O.workorder_serial_rows(w)]
    if rows:
        ops.append(Op("insert", "workorder_serials", tuple(rows)))
    # The cost report is taken when a workorder is filled; an order raised after that unfills it, and its
    # report goes until it fills again.
    _upsert(ops, "workorder_results", [O.result_row(O.report_for(w, model.book)) for w in changed if w.filled])
    _delete(ops, "workorder_results", "workorder_id", [w.id for w in changed if not w.filled])
    if dirty.table:
        ops.append(Op("clear", "scheduled_parts_without_bookings"))
        table = orders.scheduled_without_bookings
        if table:
            rows = [{"part_name": p, "quantity": q} for p, q in sorted(table.items())]
            ops.append(Op("insert", "scheduled_parts_without_bookings", tuple(rows)))
    for schedule_id in dirty.schedules:
        schedule = orders.schedule(schedule_id)
        ops.append(Op("insert", "schedules", (O.schedule_row(schedule),)))
        lines = O.schedule_line_rows(schedule)
        if lines:
            ops.append(Op("insert", "schedule_lines", tuple(lines)))
    if dirty.audit:
        ops.append(Op("insert", "order_audit", tuple(O.audit_row(entry, c) for entry, c in dirty.audit)))
    if dirty.generated is not None:
        _upsert(ops, "gateway_meta", [{"key": "orders_generated", "value": str(dirty.generated)}])


# ---------------------------------------------------------------------------------------------- SQL


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


def write_batch(conn: Connection, batch: BatchRows) -> None:
    """Write one batch's operations in order, inside the caller's transaction (the caller commits)."""
    tables = S.metadata.tables
    for op in batch.ops:
        table = tables[op.table]
        if op.kind == "insert":
            conn.execute(table.insert(), list(op.rows))
        elif op.kind == "upsert":
            conn.execute(_upsert_statement(conn.dialect.name, table), list(op.rows))
        elif op.kind == "delete":
            for chunk in chunks(op.values):
                conn.execute(delete(table).where(table.c[op.column].in_(chunk)))
        else:
            conn.execute(delete(table))
