"""Alembic environment: always handed a live connection by gateway.storage.migrate."""

from __future__ import annotations

from alembic import context

from gateway.storage.database import engine_schema
from gateway.storage.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `cell-gateway db upgrade`, which supplies the connection")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    # A cell's own schema (database.schema) keeps its alembic_version too; the tables get there by the
    # connection's schema_translate_map.
    version_table_schema=engine_schema(connection),
)
with context.begin_transaction():
    context.run_migrations()
