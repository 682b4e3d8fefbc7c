"""cost categories: wash and inspection apart from labor and machining, unknown times per category;
a partial index of the units under an open Lost Audit

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

Units and cost reports stored before this revision keep their figures: their wash time stays inside
machining and their inspection time inside labor (the stored totals cannot be split after the fact),
and a unit's unknown counts, kept then only as totals, are read as unknown for labor and machining.
A pallet at a machine or washer during the upgrade has that visit counted unknown.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_UNIT_TIMES = ("elapsed_wash", "expected_wash", "elapsed_inspection", "expected_inspection")
_REPORT_TIMES = ("elapsed_wash_s", "expected_wash_s", "elapsed_inspection_s", "expected_inspection_s")


def upgrade() -> None:
    with op.batch_alter_table("units") as batch:
        for name in _UNIT_TIMES:
            batch.add_column(sa.Column(name, sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("unknown", sa.JSON(), nullable=True))
    op.create_index(
        "ix_units_audit_flagged",
        "units",
        ["serial"],
        unique=False,
        sqlite_where=sa.text("audit_flagged = 1"),
        postgresql_where=sa.text("audit_flagged = true"),
    )
    with op.batch_alter_table("workorder_results") as batch:
        for name in _REPORT_TIMES:
            batch.add_column(sa.Column(name, sa.Float(), nullable=False, server_default="0"))
    # A pallet at a station now: the old rules may have counted part of this visit already (a cycle that
    # ended), the new ones count the whole visit at its departure. Its arrival is forgotten, so the
    # visit is counted unknown, never twice. (Load stations' labor windows are kept: they did not change.)
    op.execute(sa.text("UPDATE pallets SET arrived_at = NULL WHERE station <> ''"))


def downgrade() -> None:
    op.drop_index("ix_units_audit_flagged", table_name="units")
    with op.batch_alter_table("workorder_results") as batch:
        for name in _REPORT_TIMES:
            batch.drop_column(name)
    with op.batch_alter_table("units") as batch:
        batch.drop_column("unknown")
        for name in _UNIT_TIMES:
            batch.drop_column(name)
