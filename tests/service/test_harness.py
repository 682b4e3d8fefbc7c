"""The service harness itself: a writer task killed by a defect fails the test at once, with that defect.

The writer survives any ``Exception`` of a command, a store or its own code; what is not an
``Exception`` (a ``BaseException`` such as the one below) ends its task. Before the harness watched
the task, the next wait on the dead writer hung until pytest's 120 s timeout and the defect was lost.
"""

from __future__ import annotations

import asyncio

import pytest

from gateway.config import CellConfig
from gateway.jobs.commands import CreateJob, ReleaseJob
from gateway.service.writer import StoreUnavailable
from gateway.storage.batch import BatchRows
from gateway.storage.memory_store import MemoryStore
from tests.service.harness import running_cell

# Far below pytest's 120 s timeout, far above what failing at once takes.
AT_ONCE = 10.0


class WriterKilled(BaseException):
    """A defect the writer does not catch: not an ``Exception``, so it ends the writer's task."""


async def test_a_writer_killed_by_a_defect_fails_every_wait_on_it_at_once_with_that_defect(
    demo_config: CellConfig,
) -> None:
    store = MemoryStore()
    defect = WriterKilled("the store's commit failed in a way the writer does not catch")

    def kill(_: BatchRows) -> BaseException:
        return defect

    with pytest.raises(WriterKilled) as at_the_end:  # noqa: PT012 (the whole life of the cell)
        async with asyncio.timeout(AT_ONCE), running_cell(demo_config, store=store) as cell:
            store.fail_next(kill)  # the next commit raises it
            # The command in flight: the stopping writer answers it StoreUnavailable, unless the
            # harness saw the task end first.
            with pytest.raises((StoreUnavailable, WriterKilled)):
                await cell.send(CreateJob(part="ABC123", revision="A", quantity=5))
            with pytest.raises(WriterKilled) as waiting:  # no writer takes it: it fails at once
                await cell.send(ReleaseJob("J-0001"))
            with pytest.raises(WriterKilled) as idle:
                await cell.writer.wait_idle()
    assert waiting.value is defect
    assert idle.value is defect
    assert at_the_end.value is defect  # running_cell ends with it too
