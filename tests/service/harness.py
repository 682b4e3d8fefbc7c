"""A writer on a real SQLite file with a manual clock: the service ring of the tests.

The writer runs in a task of its own. Should that task end by itself (a defect the writer does not
catch kills it), every wait on it fails at once with what ended it, instead of waiting for a writer
that is gone until pytest's timeout: :class:`WatchedWriter`. The command in flight when it died is
answered by the writer itself as it stops (StoreUnavailable); the next wait, and the end of
:func:`running_cell`, raise the writer's own exception.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import select

from gateway.app import build_model
from gateway.cell.commands import Command
from gateway.cell.model import CellModel
from gateway.clock import ManualClock
from gateway.config import CellConfig
from gateway.service.ports import Store
from gateway.service.writer import Answer, Writer
from gateway.storage import rows as R
from gateway.storage import schema as S
from gateway.storage.database import create_engine
from gateway.storage.migrate import upgrade
from gateway.storage.sql_store import SqlStore
from tests.support import T0, ModelParts

T = TypeVar("T")


def ended_by_itself(task: asyncio.Task[None]) -> BaseException | None:
    """What ended the writer task, if it ended by itself: its exception, or an AssertionError if it
    returned. None while it runs, and once it was stopped (cancelled, as a test may do on purpose)."""
    if not task.done() or task.cancelled():
        return None
    return task.exception() or AssertionError("the writer task ended while the cell was running")


class WatchedWriter(Writer):
    """A writer whose callers hear at once when its task (``task``, once it runs) ends by itself."""

    task: asyncio.Task[None] | None = None

    async def submit(self, command: Command, actor: str = "") -> Answer:
        return await self._unless_ended(super().submit(command, actor))

    async def wait_idle(self) -> None:
        await self._unless_ended(super().wait_idle())

    async def _unless_ended(self, waiting: Awaitable[T]) -> T:
        task = self.task
        if task is None:
            return await waiting
        waiter = asyncio.ensure_future(waiting)
        try:
            await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
            died = ended_by_itself(task)
            failed = not waiter.done() or waiter.cancelled() or waiter.exception() is not None
            if died is not None and failed:
                raise died from (waiter.exception() if waiter.done() and not waiter.cancelled() else None)
            return await waiter  # answered, or the writer was stopped: stopping, it answers every caller
        finally:  # the caller was cancelled, or the writer is gone: the wait goes too
            if not waiter.done():
                waiter.cancel()
                await asyncio.gather(waiter, return_exceptions=True)


class Cell(ModelParts):
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
    def model(self) -> CellModel:  # type: ignore[override]
        """The writer's model of the moment (a reload after a failed commit replaces it)."""
        return self.writer.model


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
    writer = WatchedWriter(store, lambda: build_model(config), clock, **writer_options)
    await writer.load()
    task = writer.task = asyncio.create_task(writer.run(), name="writer")
    try:
        yield Cell(writer, clock)
    except BaseException as error:
        died = ended_by_itself(task)
        if died is not None and died is not error:  # the body failed because the writer died
            raise died from error
        raise
    else:
        died = ended_by_itself(task)
        if died is not None:
            raise died
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        writer.close()
        if engine is not None:
            await engine.dispose()
