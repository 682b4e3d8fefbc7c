"""Opening the store: one async engine for any SQLAlchemy async URL.

SQLite (aiosqlite) is the embedded default: WAL so that readers (the CLI, the HTTP API) never block the
writer, foreign keys on, a busy timeout instead of "database is locked", and ``synchronous`` from config
(NORMAL survives a killed process; FULL also survives power loss, at a cost: docs/architecture.md).
PostgreSQL (asyncpg) works by changing the URL; nothing below is SQLite-only SQL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.logging import get_logger

log = get_logger(__name__)

BUSY_TIMEOUT_MS = 5000


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or None for memory databases and other backends."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def create_engine(url: str, *, synchronous: str = "NORMAL", **kwargs: Any) -> AsyncEngine:
    """An async engine with the pragmas this gateway relies on."""
    if synchronous not in ("NORMAL", "FULL"):
        raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    if is_sqlite(url):
        # pysqlite opens a transaction only for a write, and every write here runs in engine.begin(),
        # which commits or rolls back itself: the pool's rollback on return would be one more trip to
        # aiosqlite's thread per batch (about a tenth of a small batch's cost) for nothing.
        kwargs.setdefault("pool_reset_on_return", None)
    engine = create_async_engine(url, **kwargs)
    if is_sqlite(url):

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.close()

    return engine


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
