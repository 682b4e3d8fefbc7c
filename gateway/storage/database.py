"""Opening the store: one async engine for any SQLAlchemy async URL.

SQLite (aiosqlite) is the embedded default: WAL so that readers (the CLI, the HTTP API) never block the
writer, foreign keys on, a busy timeout instead of "database is locked", and ``synchronous`` from config
(NORMAL survives a killed process; FULL also survives power loss, at a cost: docs/architecture.md).
PostgreSQL (asyncpg) works by changing the URL; nothing below is SQLite-only SQL.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Engine, event, text
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.logging import get_logger

log = get_logger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

BUSY_TIMEOUT_MS = 5000


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_path(url: str | URL) -> Path | None:
    """The file behind a SQLite URL, or None for memory databases and other backends."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def create_engine(url: str, *, synchronous: str = "NORMAL", schema: str | None = None, **kwargs: Any) -> AsyncEngine:
    """An async engine with the pragmas this gateway relies on.

    ``schema`` (PostgreSQL only) puts the cell in a schema of its own: the tables of ``schema.py``
    have none, and the engine's ``schema_translate_map`` names it in every statement SQLAlchemy
    compiles (queries, DDL of the migrations); the connections' ``search_path`` is that schema alone,
    for the few textual statements, so none of them reaches another cell's tables.
    """
    if synchronous not in ("NORMAL", "FULL"):
        raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    if not is_sqlite(url):
        if schema is not None:
            kwargs["execution_options"] = {
                **kwargs.get("execution_options", {}),
                "schema_translate_map": {None: schema},
            }
            connect_args = dict(kwargs.get("connect_args", {}))
            connect_args["server_settings"] = {**connect_args.get("server_settings", {}), "search_path": f'"{schema}"'}
            kwargs["connect_args"] = connect_args
        return create_async_engine(url, **kwargs)
    if schema is not None:
        raise ValueError("a schema is for PostgreSQL only: one SQLite file holds one cell")
    # pysqlite opens a transaction only for a write, and every write here runs in engine.begin(), which
    # commits or rolls back itself: the pool's rollback on return would be a trip to aiosqlite's thread
    # for nothing.
    kwargs.setdefault("pool_reset_on_return", None)
    engine = create_async_engine(url, **kwargs)
    _use_pragmas(engine.sync_engine, synchronous)
    _SYNCHRONOUS[engine] = synchronous
    return engine


_SYNCHRONOUS: WeakKeyDictionary[AsyncEngine, str] = WeakKeyDictionary()


def _use_pragmas(engine: Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.close()


class Transactions:
    """Runs a synchronous function in one transaction: how the writer commits a batch.

    On a SQLite file the function runs on a thread of its own, with a synchronous (pysqlite) engine on
    the same file and the same pragmas: the whole batch is one trip off the event loop. Through
    aiosqlite every statement costs three trips to its thread (cursor, execute, close) and the commit
    one more, about ten for a small batch, each a thread hand-off; that bounded the gateway's speed
    with few PLCs. Other backends (asyncpg) run the same function through the async engine's
    ``run_sync``. Readers keep using the async engine; in WAL they never wait for this writer.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._local: tuple[Engine, ThreadPoolExecutor] | None = None
        if sqlite_path(engine.url) is not None:
            local = create_sync_engine(
                engine.url.set(drivername="sqlite+pysqlite"),
                connect_args={"check_same_thread": False},  # made on the thread, closed by dispose()
                pool_reset_on_return=None,  # as for the async engine: every write commits or rolls back
            )
            _use_pragmas(local, _SYNCHRONOUS.get(engine, "NORMAL"))
            self._local = (local, ThreadPoolExecutor(1, thread_name_prefix="store-writer"))

    async def run(self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(connection, ...)`` in a transaction that commits when it returns, rolls back if it raises."""
        if self._local is None:
            async with self.engine.begin() as conn:
                return await conn.run_sync(fn, *args, **kwargs)
        local, thread = self._local
        call = functools.partial(self._in_transaction, local, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(thread, call)

    @staticmethod
    def _in_transaction(engine: Engine, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with engine.begin() as conn:
            return fn(conn, *args, **kwargs)

    @property
    def sync_engine(self) -> Engine | None:
        """The synchronous engine the store's thread writes through (a SQLite file), else None."""
        return self._local[0] if self._local is not None else None

    async def reset(self) -> None:
        """Close the connection (on the store's thread, after a transaction in progress); the next
        transaction opens a new one."""
        if self._local is not None:
            local, thread = self._local
            await asyncio.get_running_loop().run_in_executor(thread, local.dispose)

    def dispose(self) -> None:
        """Wait for a transaction in progress, then close the thread and the connection."""
        if self._local is not None:
            local, thread = self._local
            self._local = None
            thread.shutdown(wait=True)
            local.dispose()


def engine_schema(bind: AsyncEngine | Engine | Connection) -> str | None:
    """The schema ``create_engine`` put the cell in, or None for the default one."""
    translate = bind.get_execution_options().get("schema_translate_map") or {}
    schema: str | None = translate.get(None)
    return schema


def unwritable(url: str | URL) -> str | None:
    """Why this process cannot write the SQLite file behind ``url``, judged by file permissions alone
    (the database is not touched); None when it can, or for other backends.

    A ``-wal`` or ``-shm`` file this process owns does not count: the store gives it the database
    file's mode again before its next commit (:mod:`gateway.storage.sql_store`).
    """
    path = sqlite_path(url)
    if path is None or not path.exists():
        return None
    if not os.access(path, os.W_OK):
        return f"the database file {path} is read-only"
    sides = [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm")]
    for side in sides:
        try:
            if side.exists() and not os.access(side, os.W_OK) and side.stat().st_uid != os.geteuid():
                return f"{side} is read-only"
        except OSError:
            continue
    if not all(side.exists() for side in sides) and not os.access(path.parent, os.W_OK | os.X_OK):
        return f"the database folder {path.parent} is read-only (SQLite makes {path.name}-wal and -shm there)"
    return None


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
