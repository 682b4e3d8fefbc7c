"""Event log and gateway metadata.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gateway.storage.types

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Counter = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "gateway_meta",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_gateway_meta"),
    )
    op.create_table(
        "cell_events",
        sa.Column("counter", Counter, autoincrement=True, nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("source_time", gateway.storage.types.UtcDateTime(), nullable=True),
        sa.Column("received_at", gateway.storage.types.UtcDateTime(), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(40), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("answer", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("counter", name="pk_cell_events"),
        sa.UniqueConstraint("source", "event_id", name="uq_cell_events_source_event_id"),
    )
    op.create_index("ix_cell_events_reason_received_at", "cell_events", ["reason", "received_at"])


def downgrade() -> None:
    op.drop_index("ix_cell_events_reason_received_at", table_name="cell_events")
    op.drop_table("cell_events")
    op.drop_table("gateway_meta")
