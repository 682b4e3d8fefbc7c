"""The database schema, in SQLAlchemy Core.

Core rather than the ORM: every cell event passes through the writer, and Core's ``executemany`` inserts
are 5-10x cheaper than ORM unit-of-work flushes (see docs/architecture.md). The Alembic migrations in
``migrations/versions`` must produce exactly this metadata; a test compares them.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    true,
)

from gateway.storage.types import UtcDateTime

# Named constraints so that migrations are the same on every backend.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# A 64-bit counter on PostgreSQL; SQLite only auto-increments an INTEGER PRIMARY KEY.
Counter = BigInteger().with_variant(Integer(), "sqlite")

gateway_meta = Table(
    "gateway_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# The append-only log of every well-formed report, accepted or refused, in the order it was applied.
# ``counter`` is the monotonic position clients catch up from; (source, event_id) makes reports
# idempotent: ``source`` is the station id, or "cell" for cell-wide reports such as Units.Scrap.
cell_events = Table(
    "cell_events",
    metadata,
    Column("counter", Counter, primary_key=True, autoincrement=True),
    Column("source", String(64), nullable=False),
    Column("event_id", String(128), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("args", JSON, nullable=False),
    Column("source_time", UtcDateTime, nullable=True),
    Column("received_at", UtcDateTime, nullable=False),
    Column("actor", String(64), nullable=False, default=""),
    Column("reason", String(40), nullable=True),  # None = accepted
    Column("message", Text, nullable=False, default=""),
    Column("answer", JSON, nullable=False),
    Column("flags", JSON, nullable=False, default=list),  # anomalies that fired: [{anomaly, message, ...}]
    UniqueConstraint("source", "event_id"),
)
Index("ix_cell_events_reason_received_at", cell_events.c.reason, cell_events.c.received_at)
# The newest refusals (status page, CLI) without reading the log backwards past every accepted report:
# a partial index holds the refusals alone (a few in a thousand reports).
Index(
    "ix_cell_events_refused",
    cell_events.c.counter,
    sqlite_where=cell_events.c.reason.is_not(None),
    postgresql_where=cell_events.c.reason.is_not(None),
)

# ---------------------------------------------------------------------------------------------- jobs

part_specs = Table(
    "part_specs",
    metadata,
    Column("part", String(64), nullable=False),
    Column("revision", String(32), nullable=False),
    Column("default_template_id", String(128), nullable=False),
    Column("template_versions", Integer, nullable=False),
    PrimaryKeyConstraint("part", "revision"),
)

routing_templates = Table(
    "routing_templates",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("part", String(64), nullable=False),
    Column("revision", String(32), nullable=False),
    Column("version", Integer, nullable=False),
    Column("steps", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", UtcDateTime, nullable=True),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("part", String(64), nullable=False),
    Column("revision", String(32), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("yield_buffer_percent", Float, nullable=False),
    Column("due", UtcDateTime, nullable=True),
    Column("priority", Integer, nullable=False),
    Column("pallets", JSON, nullable=False),
    Column("routing", JSON, nullable=False),
    Column("source", String(160), nullable=False),
    Column("state", String(16), nullable=False),
    Column("held_from", String(16), nullable=True),
    Column("parent_id", String(64), nullable=False),
    Column("children", Integer, nullable=False),
    Column("started", Integer, nullable=False),
    Column("scrapped", Integer, nullable=False),
    Column("finished", Integer, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("released_at", UtcDateTime, nullable=True),
    Column("closed_at", UtcDateTime, nullable=True),
)
Index("ix_jobs_state", jobs.c.state)

job_transitions = Table(
    "job_transitions",
    metadata,
    Column("id", Counter, primary_key=True, autoincrement=True),
    Column("event_counter", Counter, nullable=True),  # the log entry that caused it
    Column("job_id", String(64), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("from_state", String(16), nullable=True),
    Column("to_state", String(16), nullable=False),
    Column("reason", Text, nullable=False),
)
Index("ix_job_transitions_job_id", job_transitions.c.job_id)

units = Table(
    "units",
    metadata,
    Column("serial", String(64), primary_key=True),
    Column("job_id", String(64), nullable=False),
    Column("next_step", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("last_activity", UtcDateTime, nullable=False),
    Column("station", String(64), nullable=False),
    Column("entered_at", UtcDateTime, nullable=True),
    Column("failed_attempts", Integer, nullable=False),
    Column("audit_flagged", Boolean, nullable=False),
    Column("elapsed_labor", Float, nullable=False),
    Column("expected_labor", Float, nullable=False),
    Column("elapsed_machine", Float, nullable=False),
    Column("expected_machine", Float, nullable=False),
    Column("unknown_elapsed", Integer, nullable=False),
    Column("unknown_expected", Integer, nullable=False),
    # Wash and inspection apart from labor and machining; unknown contributions per category (NULL for
    # a unit stored before they were counted so).
    Column("elapsed_wash", Float, nullable=False, server_default="0"),
    Column("expected_wash", Float, nullable=False, server_default="0"),
    Column("elapsed_inspection", Float, nullable=False, server_default="0"),
    Column("expected_inspection", Float, nullable=False, server_default="0"),
    Column("unknown", JSON, nullable=True),
)
Index("ix_units_job_id", units.c.job_id)
# Units under an open Lost Audit stay in memory, finished ones too: a partial index finds the few.
Index(
    "ix_units_audit_flagged",
    units.c.serial,
    sqlite_where=units.c.audit_flagged == true(),
    postgresql_where=units.c.audit_flagged == true(),
)
Index("ix_units_status", units.c.status)

# Unit scans: one row per step a unit left, passed or failed, with elapsed and expected kept apart.
unit_scans = Table(
    "unit_scans",
    metadata,
    Column("id", Counter, primary_key=True, autoincrement=True),
    Column("event_counter", Counter, nullable=True),
    Column("serial", String(64), nullable=False),
    Column("job_id", String(64), nullable=False),
    Column("step_index", Integer, nullable=False),
    Column("operation", String(32), nullable=False),
    Column("station", String(64), nullable=False),
    Column("entered_at", UtcDateTime, nullable=True),
    Column("left_at", UtcDateTime, nullable=False),
    Column("passed", Boolean, nullable=False),
    Column("elapsed", Float, nullable=True),
    Column("expected", Float, nullable=True),
    Column("labor", Boolean, nullable=False),
    Column("flags", JSON, nullable=False),
)
Index("ix_unit_scans_serial", unit_scans.c.serial)
Index("ix_unit_scans_job_id", unit_scans.c.job_id)

# Other things that happened to units (started, finished, scrapped, moved, audits), for the trace.
unit_events = Table(
    "unit_events",
    metadata,
    Column("id", Counter, primary_key=True, autoincrement=True),
    Column("event_counter", Counter, nullable=True),
    Column("serial", String(64), nullable=False),
    Column("job_id", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("detail", JSON, nullable=False),
)
Index("ix_unit_events_serial", unit_events.c.serial)

# ------------------------------------------------------------------------------------------ tracking

pallets = Table(
    "pallets",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("station", String(64), nullable=False),
    Column("arrived_at", UtcDateTime, nullable=True),
    Column("window_start", UtcDateTime, nullable=True),
    Column("units", JSON, nullable=False),
)

stations = Table(
    "stations",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("pallet", String(64), nullable=False),
    Column("down", Boolean, nullable=False),
    Column("cycle_pallet", String(64), nullable=True),
    Column("cycle_program", String(64), nullable=True),
    Column("cycle_started_at", UtcDateTime, nullable=True),
    Column("cycle_serials", JSON, nullable=True),
)

# ============================================================================================ orders
# The ERP boundary (seed 001, "Appendix: ERP Tables"): bookings and their parts, the scheduled parts
# without bookings, workorders and their parts, then the result tables: daily schedules with their
# lines, the serials filled into workorders, the cost report of each filled workorder, and the audit
# trail of every manual edit. Written by the writer in the same transaction as the command.

bookings = Table(
    "bookings",
    metadata,
    Column("booking_id", String(128), primary_key=True),
    Column("due_date", Date, nullable=False),
    Column("priority", Integer, nullable=False),  # larger = more urgent
    Column("scheduled", Boolean, nullable=False),
)
# The main query: unscheduled bookings due before a date.
Index("ix_bookings_scheduled_due_date", bookings.c.scheduled, bookings.c.due_date)

booking_parts = Table(
    "booking_parts",
    metadata,
    Column("booking_id", String(128), ForeignKey("bookings.booking_id", ondelete="CASCADE"), nullable=False),
    Column("part_name", String(64), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("casting", String(64), nullable=False),
    PrimaryKeyConstraint("booking_id", "part_name"),
)

scheduled_parts_without_bookings = Table(
    "scheduled_parts_without_bookings",
    metadata,
    Column("part_name", String(64), primary_key=True),
    Column("quantity", Integer, nullable=False),
)

workorders = Table(
    "workorders",
    metadata,
    Column("workorder_id", String(64), primary_key=True),
    Column("due_date", Date, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("filled", Boolean, nullable=False),
    Column("filled_at", UtcDateTime, nullable=True),
)
Index("ix_workorders_filled_due_date", workorders.c.filled, workorders.c.due_date)

# ``filled`` repeats the workorder's flag so that "unfilled workorders for a part" is one index lookup
# (the appendix's (Filled, PartName) index); the writer keeps the two in step.
workorder_parts = Table(
    "workorder_parts",
    metadata,
    Column("workorder_id", String(64), ForeignKey("workorders.workorder_id", ondelete="CASCADE"), nullable=False),
    Column("part_name", String(64), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("filled", Boolean, nullable=False),
    PrimaryKeyConstraint("workorder_id", "part_name"),
)
Index("ix_workorder_parts_filled_part_name", workorder_parts.c.filled, workorder_parts.c.part_name)

# A serial is in at most one workorder: the primary key says so.
workorder_serials = Table(
    "workorder_serials",
    metadata,
    Column("serial", String(64), primary_key=True),
    Column("workorder_id", String(64), ForeignKey("workorders.workorder_id", ondelete="CASCADE"), nullable=False),
    Column("part_name", String(64), nullable=False),
    Column("position", Integer, nullable=False),  # order of assignment within the workorder's part
)
Index("ix_workorder_serials_workorder_id", workorder_serials.c.workorder_id)

# The cost report of a filled workorder, as sent to the ERP: elapsed and expected kept apart.
workorder_results = Table(
    "workorder_results",
    metadata,
    Column("workorder_id", String(64), ForeignKey("workorders.workorder_id"), primary_key=True),
    Column("filled_at", UtcDateTime, nullable=False),
    Column("serials", Integer, nullable=False),
    Column("elapsed_labor_s", Float, nullable=False),
    Column("expected_labor_s", Float, nullable=False),
    Column("elapsed_machining_s", Float, nullable=False),
    Column("program_cycle_s", Float, nullable=False),
    Column("elapsed_wash_s", Float, nullable=False, server_default="0"),
    Column("expected_wash_s", Float, nullable=False, server_default="0"),
    Column("elapsed_inspection_s", Float, nullable=False, server_default="0"),
    Column("expected_inspection_s", Float, nullable=False, server_default="0"),
    Column("unknown", JSON, nullable=False),  # time kind -> units with a time that could not be known
    Column("by_part", JSON, nullable=False),  # part -> the same sums
)
Index("ix_workorder_results_filled_at", workorder_results.c.filled_at)

schedules = Table(
    "schedules",
    metadata,
    Column("schedule_id", String(64), primary_key=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expected_hours", Float, nullable=False),
    Column("due_before", Date, nullable=True),
    Column("bookings_scheduled", JSON, nullable=False),  # booking ids marked scheduled, in order
    Column("scheduled_without_bookings", JSON, nullable=False),  # the new table: part -> quantity
    Column("parts_without_routing", JSON, nullable=False),
)
Index("ix_schedules_created_at", schedules.c.created_at)

schedule_lines = Table(
    "schedule_lines",
    metadata,
    Column("schedule_id", String(64), ForeignKey("schedules.schedule_id"), nullable=False),
    Column("part_name", String(64), nullable=False),
    Column("demand", Integer, nullable=False),
    Column("quantity", Integer, nullable=False),  # the job's quantity; 0 = demand, but nothing fit
    Column("job_id", String(64), nullable=True),
    PrimaryKeyConstraint("schedule_id", "part_name"),
)

order_audit = Table(
    "order_audit",
    metadata,
    Column("id", Counter, primary_key=True, autoincrement=True),
    Column("event_counter", Counter, nullable=True),  # the log entry that caused it
    Column("at", UtcDateTime, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("action", String(40), nullable=False),
    Column("subject", String(128), nullable=False),
    Column("reason", Text, nullable=False),
    Column("before", JSON, nullable=False),
    Column("after", JSON, nullable=False),
)
Index("ix_order_audit_subject", order_audit.c.subject)
