"""Alembic, driven from the gateway: migrations run at start and by ``cell-gateway db upgrade``.

With ``database.schema`` the engine carries the cell's schema
(:func:`~gateway.storage.database.engine_schema`): the schema is created if missing (or made beforehand
for the gateway's role), and the migrations and their ``alembic_version`` table live in it, so each
cell of a plant is migrated on its own.
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.schema import CreateSchema

from gateway.storage.database import engine_schema

SCRIPT_LOCATION = "gateway.storage:migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def _current(connection: Connection) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table_schema": engine_schema(connection)})
    return context.get_current_revision()


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(_current)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> tuple[str | None, str | None]:
    """Bring the database (the cell's schema, if it has one) to ``revision``; returns (before, after)."""

    def _run(connection: Connection) -> tuple[str | None, str | None]:
        schema = engine_schema(connection)
        if schema is not None and not inspect(connection).has_schema(schema):
            # Only when missing: CREATE SCHEMA needs the CREATE right on the database even with IF NOT
            # EXISTS, and a schema made by the DBA for the gateway's role is enough to run in.
            connection.execute(CreateSchema(schema, if_not_exists=True))
        before = _current(connection)
        command.upgrade(alembic_config(connection), revision)
        return before, _current(connection)

    async with engine.begin() as conn:
        return await conn.run_sync(_run)
