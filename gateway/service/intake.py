"""The writer's intake: the commands submitted and not answered yet.

A submitted command waits in the queue until the writer takes it into a batch (at most ``max_batch``
at a time); from submission until its caller is answered or failed it is *open*, wherever it is
(queued, being applied, in flight, being isolated). Fault isolation marks a command *poisoned* (it is
refused with InternalError when its batch is applied again); the mark goes with the command's answer.
The writer sleeps in :meth:`Intake.woken` until a command is queued or the commit in flight ends.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from gateway.cell.commands import Command
from gateway.service.feed import Answer


@dataclass(slots=True)
class Pending:
    command: Command
    actor: str
    received_at: datetime
    future: asyncio.Future[Answer]


class Intake:
    def __init__(self) -> None:
        self.queue: deque[Pending] = deque()
        self.open: dict[int, Pending] = {}  # submitted and not answered yet, wherever they are
        self.poisoned: dict[int, str] = {}  # id(pending) -> why it is refused with InternalError
        #: Set while nothing submitted is waiting to be committed and answered.
        self.idle = asyncio.Event()
        self.idle.set()
        self._waiting: asyncio.Future[None] | None = None  # the writer waits for work or a commit

    def add(self, pending: Pending) -> None:
        """Queue a submitted command and wake the writer."""
        self.idle.clear()
        self.open[id(pending)] = pending
        self.queue.append(pending)
        self.wake()

    async def woken(self) -> None:
        """Until :meth:`wake`: a command was queued or the commit in flight ended."""
        self._waiting = asyncio.get_running_loop().create_future()
        try:
            await self._waiting
        finally:
            self._waiting = None

    def wake(self, *_: object) -> None:
        if self._waiting is not None and not self._waiting.done():
            self._waiting.set_result(None)

    def take(self, max_batch: int) -> list[Pending]:
        batch: list[Pending] = []
        while self.queue and len(batch) < max_batch:
            batch.append(self.queue.popleft())
        return batch

    def taken(self) -> list[Pending]:
        """The open commands no longer queued: applied, in flight or being isolated."""
        queued = {id(p) for p in self.queue}
        return [p for k, p in self.open.items() if k not in queued]

    def still_waiting(self, batch: list[Pending]) -> list[Pending]:
        """The commands whose callers still wait; one whose caller gave up (cancelled) is dropped
        unapplied, with its bookkeeping (it was not acknowledged; a retry is a new report)."""
        waiting = []
        for pending in batch:
            if pending.future.done():
                self.open.pop(id(pending), None)
                self.poisoned.pop(id(pending), None)
            else:
                waiting.append(pending)
        return waiting

    def answer(self, pending: Pending, answer: Answer) -> None:
        """Its batch is committed: the caller hears its answer."""
        self.poisoned.pop(id(pending), None)
        self.open.pop(id(pending), None)
        if not pending.future.done():
            pending.future.set_result(answer)

    def fail(self, batch: Iterable[Pending], error: Exception) -> None:
        for pending in list(batch):
            self.poisoned.pop(id(pending), None)
            self.open.pop(id(pending), None)
            if not pending.future.done():
                pending.future.set_exception(error)
