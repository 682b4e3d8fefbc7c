"""The SQL store: the writer's storage port on SQLAlchemy (SQLite by default, PostgreSQL by URL).

Loading uses the async engine; commits and the writer's look-ups run as synchronous Core code through
:class:`~gateway.storage.database.Transactions` (one hand-off to the store's thread per call on SQLite).

A SQLite connection opened while the file was read-only stays read-only, and so do the ``-wal`` and
``-shm`` files SQLite made then (it gives them the database file's mode). After a commit refused
because the database cannot be written, the next commit first closes every connection of the process
(the file is then opened afresh) and, once the file is writable, gives those two files its mode
again: the gateway writes again without a restart as soon as the file (or its folder) is writable.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection
from pathlib import Path

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.cell.model import CellModel
from gateway.jobs.model import Job, Unit
from gateway.logging import get_logger
from gateway.storage import store
from gateway.storage.batch import BatchRows, Loaded, write_batch
from gateway.storage.database import Transactions, sqlite_path

log = get_logger(__name__)

Key = tuple[str, str]

# SQLite's primary result codes that mean "this connection cannot write the file" (read-only file or
# folder, a -shm it cannot open); a new connection may succeed where this one cannot.
_SQLITE_READONLY = 8
_SQLITE_CANTOPEN = 14


class SqlStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.transactions = Transactions(engine)
        # Open the file afresh before the next commit: at the first one (the gateway may have started on
        # a read-only file), and after one that could not write.
        self._reopen_first = True

    async def load(self, model: CellModel, answers: int) -> Loaded:
        async with self.engine.connect() as conn:
            await store.load_model(conn, model)
            counter = await store.last_counter(conn)
            recent = await store.recent_answers(conn, answers)
            total = await store.count_events(conn)
        return Loaded(counter, recent, total)

    async def commit(self, batch: BatchRows) -> None:
        if self._reopen_first:
            self._reopen_first = False
            await self._reopen()
        try:
            await self.transactions.run(write_batch, batch)
        except sa_exc.OperationalError as exc:
            self._reopen_first = _cannot_write(exc)
            raise

    async def _reopen(self) -> None:
        """Close every connection to the database, so that the next one opens it as it is now."""
        await self.transactions.reset()
        await self.engine.dispose()
        path = sqlite_path(self.engine.url)
        if path is not None:
            repair_side_files(path)

    async def find_answers(self, keys: Collection[Key]) -> dict[Key, store.LoggedAnswer]:
        return await self.transactions.run(store.find_answers, keys)

    async def fetch(self, job_ids: Collection[str], serials: Collection[str]) -> tuple[list[Job], list[Unit]]:
        return await self.transactions.run(store.fetch_retired, job_ids, serials)

    def is_outage(self, exc: BaseException) -> bool:
        # OperationalError is the database's own trouble (disk full, read-only file, lock timeout, I/O,
        # a lost connection); DataError, IntegrityError and encoding errors are about the rows.
        if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
            return True
        return isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError, OSError))

    def close(self) -> None:
        self.transactions.dispose()


def _cannot_write(exc: sa_exc.OperationalError) -> bool:
    code = getattr(exc.orig, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (_SQLITE_READONLY, _SQLITE_CANTOPEN)
    message = str(exc.orig)
    return "readonly" in message or "read-only transaction" in message  # SQLite; PostgreSQL on a standby


def repair_side_files(path: Path) -> None:
    """Give ``-wal`` and ``-shm`` the database file's mode when the file is writable and they are not.

    SQLite creates them with the file's mode: made while the file was read-only, they stay read-only
    after the file is writable again, and every connection opened then is read-only too.
    """
    try:
        if not os.access(path, os.W_OK):
            return
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        try:
            if side.is_symlink() or not side.exists() or os.access(side, os.W_OK):
                continue  # a link is someone's deliberate set-up: its target is not changed
            os.chmod(side, mode)
        except OSError as exc:
            log.error("database_file_not_writable", file=str(side), error=exc.strerror or str(exc))
            continue
        log.warning("database_file_mode_restored", file=str(side), mode=oct(mode))
