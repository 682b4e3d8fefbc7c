"""After the commit: committed batches handed to the listeners in a task of their own.

The writer pushes each committed batch here and goes on with the next one; it never waits for OPC UA
variables, events, log lines or metrics. When the listeners fall behind, the batches waiting are
merged into one (:meth:`Committed.merge`): variables are published once from the newest view, every
command's events and log line still come, in order. A listener that raises is logged and skipped; the
others still run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gateway.cell.commands import Command
from gateway.errors import Reason
from gateway.jobs.events import JobEvent
from gateway.logging import get_logger
from gateway.service.views import CellView
from gateway.tracking.anomalies import Flag

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Answer:
    """What a caller gets back. ``reason`` None means accepted."""

    counter: int
    kind: str
    reason: Reason | None
    message: str
    outputs: dict[str, Any]
    flags: tuple[Flag, ...]
    at: datetime
    replayed: bool = False

    @property
    def ok(self) -> bool:
        return self.reason is None


@dataclass(slots=True)
class Applied:
    """One command of a committed batch, for the listeners: what it was, its answer, what it did."""

    command: Command
    actor: str
    answer: Answer
    events: list[JobEvent]


@dataclass(slots=True)
class Committed:
    """One or more committed batches, for the listeners: what they did and the view after them."""

    applied: list[Applied]
    stations: set[str]  # stations whose view changed
    jobs: set[str]  # jobs whose view changed (or that left the view)
    view: CellView
    commits: list[tuple[int, float]] = field(default_factory=list)  # (batch size, commit seconds)

    def merge(self, later: Committed) -> None:
        self.applied.extend(later.applied)
        self.stations |= later.stations
        self.jobs |= later.jobs
        self.view = later.view
        self.commits.extend(later.commits)


Listener = Callable[[Committed], Awaitable[None] | None]


class Feed:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._waiting: list[Committed] = []
        self._arrived = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.behind = 0  # batches merged because the listeners were busy (a metric)

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def push(self, committed: Committed) -> None:
        if not self._listeners:
            return
        self._waiting.append(committed)
        self._idle.clear()
        self._arrived.set()

    async def wait_idle(self) -> None:
        """Until every batch pushed so far has been handed to every listener."""
        await self._idle.wait()

    async def run(self) -> None:
        """Hand batches to the listeners until cancelled; a cancel still hands over what waits."""
        try:
            while True:
                await self._arrived.wait()
                await self._deliver()
        finally:
            if self._waiting:
                with contextlib.suppress(asyncio.CancelledError):
                    await self._deliver()

    async def _deliver(self) -> None:
        self._arrived.clear()
        waiting, self._waiting = self._waiting, []
        if not waiting:
            self._idle.set()
            return
        self.behind += len(waiting) - 1
        merged = waiting[0]
        for later in waiting[1:]:
            merged.merge(later)
        await self._hand(merged, self._listeners)
        if not self._waiting:
            self._idle.set()

    @staticmethod
    async def _hand(batch: Committed, listeners: Sequence[Listener]) -> None:
        for listener in listeners:
            try:
                result = listener(batch)
                if result is not None:
                    await result
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # the feed itself is being stopped
                # Something the listener awaited was cancelled, not the feed: the others still run.
                log.error("listener_cancelled", listener=getattr(listener, "__qualname__", repr(listener)))
            except Exception:
                log.exception("listener_failed", listener=getattr(listener, "__qualname__", repr(listener)))
