"""What the writer needs of a store: the storage port.

The writer is given a :class:`Store`, never an engine. ``gateway.storage.sql_store.SqlStore`` is the
real one (SQLite or PostgreSQL through SQLAlchemy); ``gateway.storage.memory_store.MemoryStore`` keeps
the same rows in dictionaries, for service tests and for injecting faults.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from gateway.cell.model import CellModel
from gateway.jobs.model import Job, Unit
from gateway.storage.batch import BatchRows, Loaded
from gateway.storage.store import LoggedAnswer

#: (source, EventId): the idempotency key of a report.
Key = tuple[str, str]


class Store(Protocol):
    async def load(self, model: CellModel, answers: int) -> Loaded:
        """Fill a freshly built model with the live state; the newest ``answers`` logged reports."""
        ...

    async def commit(self, batch: BatchRows) -> None:
        """Write one batch in one transaction: all of it, or (raising) nothing."""
        ...

    async def find_answers(self, keys: Collection[Key]) -> dict[Key, LoggedAnswer]:
        """Stored answers of these reports (those never logged are simply absent)."""
        ...

    async def fetch(self, job_ids: Collection[str], serials: Collection[str]) -> tuple[list[Job], list[Unit]]:
        """Jobs and units that left memory (and the jobs of those units), as stored."""
        ...

    def is_outage(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the store cannot write at all now (disk full, read-only, locked,
        unreachable), rather than that this batch's data cannot be written."""
        ...

    def close(self) -> None:
        """Release threads and connections (after the writer has stopped)."""
        ...
