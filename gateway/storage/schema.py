"""The database schema, in SQLAlchemy Core.

Core rather than the ORM: every cell event passes through the writer, and Core's ``executemany`` inserts
are 5-10x cheaper than ORM unit-of-work flushes (see docs/architecture.md). The Alembic migrations in
``migrations/versions`` must produce exactly this metadata; a test compares them.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
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
    UniqueConstraint("source", "event_id"),
)
Index("ix_cell_events_reason_received_at", cell_events.c.reason, cell_events.c.received_at)
