"""The SQL store: the writer's storage port on SQLAlchemy (SQLite by default, PostgreSQL by URL).

Loading uses the async engine; commits and the writer's look-ups run as synchronous Core code through
:class:`~gateway.storage.database.Transactions` (one hand-off to the store's thread per call on SQLite).
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.jobs.model import Job, Unit
from gateway.storage import store
from gateway.storage.batch import BatchRows, Loaded, write_batch
from gateway.storage.database import Transactions
from gateway.tracking.model import CellModel

Key = tuple[str, str]


class SqlStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.transactions = Transactions(engine)

    async def load(self, model: CellModel, answers: int) -> Loaded:
        async with self.engine.connect() as conn:
            await store.load_model(conn, model)
            counter = await store.last_counter(conn)
            recent = await store.recent_answers(conn, answers)
            total = await store.count_events(conn)
        return Loaded(counter, recent, total)

    async def commit(self, batch: BatchRows) -> None:
        await self.transactions.run(write_batch, batch)

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
