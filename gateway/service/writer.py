"""The writer: the one task that changes the cell's state.

Handlers (OPC UA, HTTP, the sweeper) ``submit`` a command and await its answer. The writer takes
everything queued, applies each command in order to the in-memory :class:`CellModel`, saves the whole
batch in one transaction (group commit: one commit per batch, not per report, because a commit costs
several times what the OPC UA call itself costs), and only then answers every caller and tells the
listeners. A report is idempotent by (source, EventId): a retry gets the stored answer and changes
nothing; the same EventId with other arguments is refused with DuplicateEventId.

If a commit fails, nothing of the batch was acknowledged: every caller gets :class:`StoreUnavailable`,
and the writer reloads its state from the database before taking the next batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.clock import Clock
from gateway.errors import Reason, Refused
from gateway.jobs.events import JobEvent, UnitsMoved
from gateway.logging import get_logger
from gateway.storage import rows as R
from gateway.storage.database import Transactions
from gateway.storage.store import (
    DirtySet,
    LoggedAnswer,
    count_events,
    find_answers,
    last_counter,
    load_model,
    recent_answers,
    save_batch,
)
from gateway.tracking.anomalies import Flag
from gateway.tracking.model import CellModel, Command
from gateway.tracking.reports import Report

log = get_logger(__name__)


class StoreUnavailable(Exception):
    """The batch holding this command could not be committed: nothing was acknowledged, retry it."""


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
    """A committed batch. Listeners publish from it (OPC UA variables and events, metrics)."""

    applied: list[Applied]
    dirty: DirtySet
    model: CellModel


Listener = Callable[[Committed], Awaitable[None] | None]


@dataclass(slots=True)
class _Pending:
    command: Command
    actor: str
    received_at: datetime
    future: asyncio.Future[Answer]


@dataclass(slots=True)
class WriterStats:
    batches: int = 0
    commands: int = 0
    replays: int = 0
    refusals: Counter[str] = field(default_factory=Counter)
    last_batch_size: int = 0
    last_commit_seconds: float = 0.0


class Writer:
    def __init__(
        self,
        engine: AsyncEngine,
        model_factory: Callable[[], CellModel],
        clock: Clock,
        *,
        cache_size: int = 100_000,
        max_batch: int = 1000,
    ) -> None:
        self.engine = engine
        self.transactions = Transactions(engine)
        self.model_factory = model_factory
        self.model = model_factory()
        self.clock = clock
        self.cache_size = cache_size
        self.max_batch = max_batch
        self.stats = WriterStats()
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._listeners: list[Listener] = []
        self._answers: OrderedDict[tuple[str, str], LoggedAnswer] = OrderedDict()
        self._cache_complete = True  # every logged key is in _answers: a miss is a new report
        self._counter = 0
        self._ids = itertools.count(1)
        self._ready = False
        self._saved_serial_seq = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # ------------------------------------------------------------------ public face
    def close(self) -> None:
        """Release the store's writing thread and connection (after run() has ended)."""
        self.transactions.dispose()

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    @property
    def counter(self) -> int:
        """The log position of the last committed command."""
        return self._counter

    async def submit(self, command: Command, actor: str = "") -> Answer:
        """Queue a command and wait until it is committed (or refused and logged). Never raises Refused."""
        if not self._ready:
            raise RuntimeError("the writer is not loaded yet")
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._idle.clear()
        self._queue.put_nowait(_Pending(command, actor, self.clock.now(), future))
        return await future

    async def wait_idle(self) -> None:
        """Until everything submitted so far is committed and answered."""
        await self._idle.wait()

    async def load(self) -> None:
        """Build the model from config and fill it from the store; warm the idempotency cache."""
        model = self.model_factory()
        async with self.engine.connect() as conn:
            await load_model(conn, model)
            self._counter = await last_counter(conn)
            recent = await recent_answers(conn, self.cache_size)
            total = await count_events(conn)
        self.model = model
        self._saved_serial_seq = model.tracker.serial_seq
        self._answers = OrderedDict(recent)
        self._cache_complete = total <= self.cache_size
        self._ready = True
        log.info(
            "state_loaded",
            jobs=len(model.book.jobs),
            units=len(model.book.units),
            counter=self._counter,
            cached_answers=len(self._answers),
        )

    async def run(self) -> None:
        """Take batches until cancelled. Cancelling fails whatever is still queued, uncommitted."""
        try:
            while True:
                first = await self._queue.get()
                batch = [first]
                while len(batch) < self.max_batch and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                await self._process(batch)
                if self._queue.empty():
                    self._idle.set()
        finally:
            while not self._queue.empty():
                pending = self._queue.get_nowait()
                if not pending.future.done():
                    pending.future.set_exception(StoreUnavailable("the gateway is shutting down"))

    # ------------------------------------------------------------------ one batch
    async def _process(self, batch: Sequence[_Pending]) -> None:
        if not self._cache_complete:
            await self._fetch_older_answers(batch)
        applied: list[tuple[_Pending, Applied]] = []
        log_rows: list[dict[str, Any]] = []
        history: dict[str, list[dict[str, Any]]] = {"unit_scans": [], "job_transitions": [], "unit_events": []}
        dirty = DirtySet.empty()
        new_keys: list[tuple[str, str]] = []
        counter = self._counter
        for pending in batch:
            answer = self._replay(pending)
            if answer is not None:
                applied.append((pending, Applied(pending.command, pending.actor, answer, [])))
                continue
            counter += 1
            answer, events = self._apply(pending, counter)
            key = self._key(pending.command, counter)
            log_rows.append(self._log_row(pending, key, answer))
            self._remember(key, pending.command, answer)
            new_keys.append(key)
            self._collect(events, counter, history)
            self._merge_dirty(dirty, counter)
            applied.append((pending, Applied(pending.command, pending.actor, answer, events)))
        started = asyncio.get_running_loop().time()
        try:
            if log_rows:
                await self._save(log_rows, history, dirty)
        except Exception as exc:
            log.exception("batch_commit_failed", size=len(batch), error=str(exc))
            try:
                # The model goes back to the committed state before anyone is told of the failure.
                await self._recover(new_keys)
            finally:
                for pending, _ in applied:
                    if not pending.future.done():
                        pending.future.set_exception(StoreUnavailable(f"the store could not commit: {exc}"))
            _stop_if_cancelled()
            return
        self._counter = counter
        self.stats.batches += 1
        self.stats.last_batch_size = len(batch)
        self.stats.last_commit_seconds = asyncio.get_running_loop().time() - started
        for pending, item in applied:
            self.stats.commands += 1
            if item.answer.replayed:
                self.stats.replays += 1
            elif item.answer.reason is not None:
                self.stats.refusals[item.answer.reason.value] += 1
            if not pending.future.done():
                pending.future.set_result(item.answer)
        committed = Committed([item for _, item in applied], dirty, self.model)
        if self._listeners and not _cancelled():
            # One turn of the loop: the callers' handlers send their answers before the listeners
            # publish variables and events and write the log lines (all of it after the commit).
            with contextlib.suppress(asyncio.CancelledError):  # then stop, after the listeners below
                await asyncio.sleep(0)
        for listener in self._listeners:
            try:
                result = listener(committed)
                if result is not None:
                    await result
            except Exception:
                log.exception("listener_failed", listener=getattr(listener, "__qualname__", repr(listener)))
        _stop_if_cancelled()

    async def _save(
        self, log_rows: list[dict[str, Any]], history: dict[str, list[dict[str, Any]]], dirty: DirtySet
    ) -> None:
        """Commit the batch. Stopped meanwhile, it still waits for the store's thread to finish the
        transaction, so every caller in the batch hears what really happened; the caller then stops."""
        commit = asyncio.ensure_future(self.transactions.run(save_batch, log_rows, history, self.model, dirty))
        try:
            await asyncio.shield(commit)
        except asyncio.CancelledError:
            await asyncio.wait([commit])
            commit.result()

    def _key(self, command: Command, counter: int) -> tuple[str, str]:
        if isinstance(command, Report):
            return (command.source, command.event_id)
        return (command.source, f"{command.kind}#{counter}")

    def _replay(self, pending: _Pending) -> Answer | None:
        """The stored answer for a retried report, a DuplicateEventId refusal, or None for a new report."""
        command = pending.command
        if not isinstance(command, Report):
            return None
        stored = self._answers.get((command.source, command.event_id))
        if stored is None:
            return None
        self._answers.move_to_end((command.source, command.event_id))
        if stored.kind == command.kind and stored.args == command.arguments():
            answer = Answer(
                counter=stored.counter,
                kind=stored.kind,
                reason=Reason(stored.reason) if stored.reason else None,
                message=stored.message,
                outputs=stored.outputs,
                flags=tuple(Flag.from_json(f) for f in stored.flags),
                at=pending.received_at,
                replayed=True,
            )
            return answer
        return Answer(
            counter=0,
            kind=command.kind,
            reason=Reason.DUPLICATE_EVENT_ID,
            message=(
                f"EventId {command.event_id!r} of {command.source} was used at log position {stored.counter} "
                f"for another report ({stored.kind} {stored.args}); a new report needs a new EventId"
            ),
            outputs={},
            flags=(),
            at=pending.received_at,
        )

    def _apply(self, pending: _Pending, counter: int) -> tuple[Answer, list[JobEvent]]:
        command = pending.command
        try:
            outcome = self.model.apply(command, pending.received_at, pending.actor)
        except Refused as refused:
            return (
                Answer(counter, command.kind, refused.reason, refused.message, {}, (), pending.received_at),
                [],
            )
        events = self.model.book.events
        self.model.book.events = []
        return Answer(counter, command.kind, None, "", outcome.outputs, outcome.flags, outcome.at), events

    def _log_row(self, pending: _Pending, key: tuple[str, str], answer: Answer) -> dict[str, Any]:
        command = pending.command
        source_time = command.source_time if isinstance(command, Report) else None
        return {
            "counter": answer.counter,
            "source": key[0],
            "event_id": key[1],
            "kind": command.kind,
            "args": command.arguments(),
            "source_time": source_time,
            "received_at": pending.received_at,
            "actor": pending.actor,
            "reason": answer.reason.value if answer.reason else None,
            "message": answer.message,
            "answer": answer.outputs,
            "flags": [f.to_json() for f in answer.flags],
        }

    def _remember(self, key: tuple[str, str], command: Command, answer: Answer) -> None:
        if not isinstance(command, Report):
            return
        self._answers[key] = LoggedAnswer(
            counter=answer.counter,
            kind=command.kind,
            args=command.arguments(),
            reason=answer.reason.value if answer.reason else None,
            message=answer.message,
            outputs=answer.outputs,
            flags=[f.to_json() for f in answer.flags],
        )
        while len(self._answers) > self.cache_size:
            self._answers.popitem(last=False)
            self._cache_complete = False

    async def _fetch_older_answers(self, batch: Sequence[_Pending]) -> None:
        missing = {
            (p.command.source, p.command.event_id)
            for p in batch
            if isinstance(p.command, Report) and (p.command.source, p.command.event_id) not in self._answers
        }
        if not missing:
            return
        found = await self.transactions.run(find_answers, missing)
        for key, stored in found.items():
            self._answers[key] = stored

    def _collect(self, events: list[JobEvent], counter: int, history: dict[str, list[dict[str, Any]]]) -> None:
        for event in events:
            if isinstance(event, UnitsMoved):
                history["unit_events"].extend(R.moved_rows(event, counter))
                continue
            found = R.event_rows(event, counter)
            if found is not None:
                history[found[0]].append(found[1])

    def _merge_dirty(self, dirty: DirtySet, counter: int) -> None:
        changes = self.model.drain()
        dirty.orders.merge(changes.orders, counter)
        dirty.specs |= changes.specs
        dirty.templates |= changes.templates
        dirty.jobs |= changes.jobs
        dirty.units |= changes.units
        dirty.pallets |= changes.pallets
        dirty.stations |= changes.stations
        if changes.serial_seq != self._saved_serial_seq:  # saved only when a serial was generated
            dirty.serial_seq = self._saved_serial_seq = changes.serial_seq

    async def _recover(self, new_keys: Sequence[tuple[str, str]]) -> None:
        for key in new_keys:
            self._answers.pop(key, None)
        try:
            await self.load()
        except Exception:
            log.exception("state_reload_failed")
            raise


def _cancelled() -> bool:
    """Whether the running task has been asked to stop (a cancellation caught to finish a batch)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _stop_if_cancelled() -> None:
    if _cancelled():
        raise asyncio.CancelledError
