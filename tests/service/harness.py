"""A writer on a real SQLite file with a manual clock: the service ring of the tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from gateway.app import build_model
from gateway.cell.commands import Command
from gateway.clock import ManualClock
from gateway.config import CellConfig
from gateway.service.ports import Store
from gateway.service.writer import Answer, Writer
from gateway.storage import rows as R
from gateway.storage import schema as S
from gateway.storage.database import create_engine
from gateway.storage.migrate import upgrade
from gateway.storage.sql_store import SqlStore

T0 = datetime.fromisoformat("2026-03-02T06:00:00+00:00")


class Cell:
    """Submit commands as a PLC or a planner would, with the time moved by hand."""

    def __init__(self, writer: Writer, clock: ManualClock) -> None:
        self.writer = writer
        self.clock = clock

    async def send(self, command: Command, actor: str = "test", *, after: float = 0.0) -> Answer:
        if after:
            self.clock.advance(timedelta(seconds=after))
        return await self.writer.submit(command, actor)

    async def ok(self, command: Command, actor: str = "test", *, after: float = 0.0) -> Answer:
        answer = await self.send(command, actor, after=after)
        assert answer.ok, f"{command} refused: {answer.reason} {answer.message}"
        return answer

    @property
    def book(self):  # type: ignore[no-untyped-def]
        return self.writer.model.book

    @property
    def tracker(self):  # type: ignore[no-untyped-def]
        return self.writer.model.tracker


async def whole_book(cell: Cell) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every job and unit of the cell: what memory holds, and what left memory as the store holds it
    (closed jobs and finished units leave memory; a replay of the log has them all)."""
    engine = cell.writer.store.engine
    jobs: dict[str, Any] = dict(cell.book.jobs)
    units: dict[str, Any] = dict(cell.book.units)
    async with engine.connect() as conn:
        for row in await conn.execute(select(S.jobs)):
            jobs.setdefault(row.id, R.job_from(row))
        for row in await conn.execute(select(S.units)):
            units.setdefault(row.serial, R.unit_from(row))
    return jobs, units


@asynccontextmanager
async def running_cell(
    config: CellConfig, clock: ManualClock | None = None, *, store: Store | None = None, **writer_options: Any
) -> AsyncIterator[Cell]:
    """A running writer on a real SQLite file (or on ``store``, e.g. a MemoryStore).

    A writer task that ends by itself fails the test at once, with its exception.
    """
    clock = clock or ManualClock(T0)
    engine = None
    if store is None:
        engine = create_engine(config.database.url)
        await upgrade(engine)
        store = SqlStore(engine)
    writer = Writer(store, lambda: build_model(config), clock, **writer_options)
    await writer.load()
    task = asyncio.create_task(writer.run(), name="writer")
    try:
        yield Cell(writer, clock)
        if task.done():
            task.result()  # raises what ended the writer
            raise AssertionError("the writer task ended while the cell was running")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        writer.close()
        if engine is not None:
            await engine.dispose()
