"""refusals: a partial index of the refused reports, newest first without scanning the log

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_cell_events_refused",
        "cell_events",
        ["counter"],
        unique=False,
        sqlite_where=sa.text("reason IS NOT NULL"),
        postgresql_where=sa.text("reason IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_cell_events_refused", table_name="cell_events")
