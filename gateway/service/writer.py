"""The writer: the one task that changes the cell's state.

Handlers (OPC UA, HTTP, the sweeper) ``submit`` a command and await its answer. The writer takes
everything queued, applies each command in order to the in-memory :class:`CellModel`, turns what the
batch changed into rows and a new committed view, and hands the rows to the store (group commit: one
transaction per batch). While batch N commits, batch N+1 is applied; N+1 is committed only after N,
and every caller is answered only once its own batch is committed. Then the batch's view becomes the
one readers see, and the listeners (OPC UA publishing, metrics) get it in a task of their own
(:mod:`gateway.service.feed`).

A report is idempotent by (source, EventId) (:mod:`gateway.service.answers`): a retry gets the stored
answer and changes nothing; the same EventId with other arguments is refused with DuplicateEventId.

No command can stop the writer or fail another command:

* A command whose applying raises anything but ``Refused`` is undone (the model is reloaded from the
  store and the batch applied again without it), refused with reason InternalError, logged with its
  traceback once, and stored in the log like any refusal, so its retry gets the same answer at once.
* A batch whose commit fails because of its data is split in halves and each half committed alone,
  down to the one command whose rows cannot be stored, which is then logged as an InternalError
  refusal; the others are answered as if nothing happened.
* A commit that fails because the store cannot write at all (disk full, read-only, locked,
  unreachable) answers its callers :class:`StoreUnavailable`: nothing of it was acknowledged, and
  they retry with the same EventIds.
* If N fails, N+1 (already applied) is applied again on the recovered state before anyone is answered.

The outcome of the last attempt to write (``last_commit``: ok or the store's message, and since when
it fails) and how long the commit in flight has waited (``commit_waiting``) are what /healthz reports.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gateway.cell.codec import encode
from gateway.cell.commands import Command
from gateway.cell.model import CellModel, Changes
from gateway.clock import Clock
from gateway.errors import Reason, Refused
from gateway.jobs.events import JobEvent, UnitsMoved
from gateway.logging import get_logger
from gateway.service.answers import AnswerCache, Key, safe_text, safe_value
from gateway.service.feed import Answer, Applied, Committed, Feed, Listener
from gateway.service.ports import Store
from gateway.service.views import CellView, full_view, refresh
from gateway.storage import rows as R
from gateway.storage.batch import BatchRows, DirtySet, batch_rows
from gateway.storage.store import LoggedAnswer
from gateway.tracking.anomalies import Flag
from gateway.tracking.reports import Report

log = get_logger(__name__)

__all__ = [
    "Answer",
    "Applied",
    "CommitOutcome",
    "Committed",
    "Listener",
    "Overloaded",
    "StoreUnavailable",
    "Writer",
]


class StoreUnavailable(Exception):
    """The batch holding this command could not be committed: nothing was acknowledged, retry it."""


class Overloaded(StoreUnavailable):
    """The writer's queue is full: the command was not taken; retry it later."""


@dataclass(frozen=True, slots=True)
class CommitOutcome:
    """How the writer's last attempt to write to the store ended (what a PLC's report got).

    ``at`` is ``time.monotonic()`` when it ended; ``error`` is the store's own message ("database or
    disk is full", "attempt to write a readonly database", "database is locked"), empty when it
    succeeded; ``failing_since`` is when the attempts started failing (None while they succeed).
    """

    ok: bool
    at: float
    error: str = ""
    failing_since: float | None = None


@dataclass(slots=True)
class _Pending:
    command: Command
    actor: str
    received_at: datetime
    future: asyncio.Future[Answer]


@dataclass(slots=True)
class _Prepared:
    """A batch applied to the model and turned into rows and a view, not yet committed."""

    batch: list[_Pending]
    answers: list[Answer]
    events: list[list[JobEvent]]
    logged: list[_Pending]  # the commands that have a log row (not replays)
    new_keys: list[Key]
    rows: BatchRows
    counter: int
    view: CellView
    stations: set[str]
    jobs: set[str]


@dataclass(slots=True)
class _Flight:
    prepared: _Prepared
    task: asyncio.Future[None]
    started: float


class _ApplyFailed(Exception):
    def __init__(self, pending: _Pending, error: BaseException, new_keys: list[Key]) -> None:
        super().__init__(str(error))
        self.pending = pending
        self.error = error
        self.new_keys = new_keys


@dataclass(slots=True)
class WriterStats:
    batches: int = 0
    commands: int = 0
    replays: int = 0
    refusals: Counter[str] = field(default_factory=Counter)
    internal_errors: int = 0  # commands refused because the gateway failed on them
    splits: int = 0  # batches split to find a command whose rows could not be stored
    overloaded: int = 0  # commands turned away because the queue was full
    reloads: int = 0
    last_batch_size: int = 0
    last_commit_seconds: float = 0.0


class Writer:
    def __init__(
        self,
        store: Store,
        model_factory: Callable[[], CellModel],
        clock: Clock,
        *,
        cache_size: int = 10_000,
        max_batch: int = 1000,
        max_queue: int = 20_000,
    ) -> None:
        self.store = store
        self.model_factory = model_factory
        self.model = model_factory()
        self.clock = clock
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.stats = WriterStats()
        self.answers = AnswerCache(cache_size)
        self.feed = Feed()
        #: What readers see: the cell as of the last committed batch. Never changed in place.
        self.view = CellView()
        self._queue: deque[_Pending] = deque()
        self._open: dict[int, _Pending] = {}  # submitted and not answered yet, wherever they are
        self._waiting: asyncio.Future[None] | None = None  # the writer waits for work or a commit
        self._idle = asyncio.Event()
        self._idle.set()
        self._counter = 0
        self._ready = False
        self._flight: _Flight | None = None
        self._poisoned: dict[int, str] = {}  # id(pending) -> why it is refused with InternalError
        self._broken: str | None = None  # the model could not be reloaded: why
        self._retire: set[str] = set()  # jobs that may leave memory once nothing in flight needs them
        self._gone: set[str] = set()  # jobs that left memory, to drop from the next view
        self._saved_serial_seq = 0
        #: The outcome of the last attempt to write (a commit, or the look-ups before it); None before any.
        self.last_commit: CommitOutcome | None = None
        #: The last failure of the store, even after it recovered: (``time.monotonic()``, its message).
        self.last_error: tuple[float, str] | None = None

    # ------------------------------------------------------------------ public face
    def close(self) -> None:
        """Release the store's thread and connections (after run() has ended)."""
        self.store.close()

    def subscribe(self, listener: Listener) -> None:
        """Called after each commit, in the feed's own task (merged batches when it falls behind)."""
        self.feed.subscribe(listener)

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def commit_waiting(self) -> float:
        """Seconds the batch being committed has waited for the store so far (0 when none is)."""
        flight = self._flight
        if flight is None or flight.task.done():
            return 0.0
        return asyncio.get_running_loop().time() - flight.started

    @property
    def writes_failing(self) -> str | None:
        """Why reports cannot be stored now (the store's message), or None while the last write succeeded."""
        last = self.last_commit
        return None if last is None or last.ok else last.error

    def _outcome(self, error: BaseException | None) -> None:
        now = time.monotonic()
        if error is None:
            self.last_commit = CommitOutcome(True, now)
            return
        previous = self.last_commit
        since = previous.failing_since if previous is not None and not previous.ok else None
        self.last_commit = CommitOutcome(False, now, store_message(error), since if since is not None else now)
        self.last_error = (now, self.last_commit.error)

    @property
    def counter(self) -> int:
        """The log position of the last committed command."""
        return self._counter

    async def submit(self, command: Command, actor: str = "") -> Answer:
        """Queue a command and wait until it is committed (or refused and logged). Never raises Refused.

        Raises :class:`Overloaded` at once when the queue is full, :class:`StoreUnavailable` when the
        batch could not be committed.
        """
        if not self._ready:
            raise RuntimeError("the writer is not loaded yet")
        if len(self._queue) >= self.max_queue:
            self.stats.overloaded += 1
            raise Overloaded(f"the gateway is overloaded: {len(self._queue)} commands are waiting; retry later")
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._idle.clear()
        pending = _Pending(command, actor, self.clock.now(), future)
        self._open[id(pending)] = pending
        self._queue.append(pending)
        self._wake()
        return await future

    async def wait_idle(self) -> None:
        """Until everything submitted so far is committed, answered and handed to the listeners."""
        await self._idle.wait()
        await self.feed.wait_idle()

    async def load(self) -> None:
        """Build the model from config and fill it with the live state; warm the idempotency cache."""
        await self._load()
        self._ready = True
        log.info(
            "state_loaded",
            jobs=len(self.model.book.jobs),
            units=len(self.model.book.units),
            counter=self._counter,
            cached_answers=len(self.answers),
        )

    async def _load(self) -> None:
        model = self.model_factory()
        loaded = await self.store.load(model, self.answers.size)
        self.model = model
        self._counter = loaded.counter
        self._saved_serial_seq = model.tracker.serial_seq
        self.answers.warm(loaded.recent, loaded.total)
        self.view = full_view(model, self._counter)
        self._retire.clear()
        self._gone.clear()
        self._broken = None

    async def run(self) -> None:
        """Take batches until cancelled. Cancelling commits what is in flight and fails what is queued."""
        feed = asyncio.create_task(self.feed.run(), name="writer-feed")
        try:
            while True:
                try:
                    await self._cycle()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a defect of the writer itself: fail its callers, never stop
                    log.exception("writer_cycle_failed", error=str(exc))
                    await self._abandon(f"the gateway failed while committing: {exc}")
        finally:
            await self._shutdown()
            feed.cancel()
            await asyncio.gather(feed, return_exceptions=True)

    # ------------------------------------------------------------------ the loop
    async def _cycle(self) -> None:
        if self._flight is None:
            if not self._queue:
                self._idle.set()
                await self._woken()
        elif not self._queue:
            if not self._flight.task.done():
                await self._woken()  # by a new command or by the end of the commit in flight
            if not self._queue:
                await self._settle()
                return
        batch = self._take()
        if self._broken is not None:
            await self._reload()
        prepared = await self._prepare(batch)
        if self._flight is not None and not await self._settle():
            # The batch in flight failed and the state was recovered; this one had been applied on
            # top of it: apply it again (nobody of it was answered yet).
            if prepared is not None:
                self.answers.forget(prepared.new_keys)
            prepared = await self._prepare(batch)
        if prepared is not None:
            self._launch(prepared)

    async def _woken(self) -> None:
        """Until :meth:`_wake`: a command was queued or the commit in flight ended."""
        self._waiting = asyncio.get_running_loop().create_future()
        try:
            await self._waiting
        finally:
            self._waiting = None

    def _wake(self, *_: object) -> None:
        if self._waiting is not None and not self._waiting.done():
            self._waiting.set_result(None)

    def _take(self) -> list[_Pending]:
        batch: list[_Pending] = []
        while self._queue and len(batch) < self.max_batch:
            batch.append(self._queue.popleft())
        return batch

    def _launch(self, prepared: _Prepared) -> None:
        """Start committing a prepared batch (nothing is in flight now)."""
        self._retire_done(exclude=prepared.jobs)
        if prepared.rows:
            task: asyncio.Future[None] = asyncio.ensure_future(self.store.commit(prepared.rows))
        else:
            task = asyncio.get_running_loop().create_future()
            task.set_result(None)
        task.add_done_callback(self._wake)
        self._flight = _Flight(prepared, task, asyncio.get_running_loop().time())

    async def _settle(self) -> bool:
        """Wait for the batch in flight; answer it if committed. False if it failed (state recovered)."""
        flight = self._flight
        assert flight is not None
        try:
            await asyncio.shield(flight.task)
        except asyncio.CancelledError:
            raise  # _shutdown settles it
        except Exception as exc:
            self._flight = None
            if self.store.is_outage(exc):  # rows that cannot be stored are no fault of the store
                self._outcome(exc)
            await self._commit_failed(flight.prepared, exc)
            return False
        self._flight = None
        if flight.prepared.rows:  # a batch of replays only wrote nothing: it proves nothing
            self._outcome(None)
        self._committed(flight.prepared, asyncio.get_running_loop().time() - flight.started)
        return True

    # ------------------------------------------------------------------ one batch
    async def _prepare(self, batch: list[_Pending]) -> _Prepared | None:
        """Look up what the batch needs, then apply it; a command that fails is undone and refused."""
        while True:
            batch = self._still_waiting(batch)
            if not batch:
                return None
            if self._broken is not None:
                self._fail(batch, StoreUnavailable(f"the store cannot be read: {self._broken}"))
                return None
            if not await self._lookups(batch):
                return None
            try:
                return self._apply_all(batch)
            except _ApplyFailed as failed:
                command = failed.pending.command
                log.error(
                    "command_failed",
                    kind=command.kind,
                    source=command.source,
                    actor=failed.pending.actor,
                    error=f"{type(failed.error).__name__}: {failed.error}",
                    exc_info=failed.error,
                )
                self.stats.internal_errors += 1
                self._poisoned[id(failed.pending)] = _internal_message(failed.error)
                self.answers.forget(failed.new_keys)
                # Undo: back to the committed state (after the batch in flight, whatever its fate),
                # then apply the batch again with that command refused.
                if self._flight is not None and not await self._settle():
                    continue  # the batch in flight failed, and its recovery reloaded the state
                await self._reload()

    def _still_waiting(self, batch: list[_Pending]) -> list[_Pending]:
        """The commands whose callers still wait; one whose caller gave up (cancelled) is dropped
        unapplied, with its bookkeeping (it was not acknowledged; a retry is a new report)."""
        waiting = []
        for pending in batch:
            if pending.future.done():
                self._open.pop(id(pending), None)
                self._poisoned.pop(id(pending), None)
            else:
                waiting.append(pending)
        return waiting

    async def _lookups(self, batch: list[_Pending]) -> bool:
        """Stored answers of older reports, and entities that left memory, that the batch names."""
        try:
            await self._look_up(batch)
            return True
        except Exception as exc:
            if self.store.is_outage(exc):
                self._outcome(exc)
                log.error("lookup_failed", error=str(exc), size=len(batch))
                self._fail(batch, StoreUnavailable(f"the store could not be read: {exc}"))
                return False
        # Not the store: one of the commands. Look up each alone; the ones that fail are refused.
        for pending in batch:
            if id(pending) in self._poisoned:
                continue
            try:
                await self._look_up([pending])
            except Exception as exc:
                if self.store.is_outage(exc):
                    self._outcome(exc)
                    log.error("lookup_failed", error=str(exc), size=len(batch))
                    self._fail(batch, StoreUnavailable(f"the store could not be read: {exc}"))
                    return False
                log.error("lookup_failed", kind=pending.command.kind, source=pending.command.source, exc_info=exc)
                self.stats.internal_errors += 1
                self._poisoned[id(pending)] = _internal_message(exc)
        return True

    async def _look_up(self, batch: list[_Pending]) -> None:
        keys = [_report_key(p.command) for p in batch if isinstance(p.command, Report) and id(p) not in self._poisoned]
        missing = self.answers.missing(keys)
        if missing:
            self.answers.found(await self.store.find_answers(missing))
        job_ids: set[str] = set()
        serials: set[str] = set()
        for pending in batch:
            if id(pending) not in self._poisoned:
                jobs, units = self.model.references(pending.command)
                job_ids |= jobs
                serials |= units
        if job_ids or serials:
            jobs_found, units_found = await self.store.fetch(job_ids, serials)
            if jobs_found or units_found:
                self.model.adopt(jobs_found, units_found)
                self._retire.update(j.id for j in jobs_found)

    def _apply_all(self, batch: list[_Pending]) -> _Prepared:
        base = self._flight.prepared if self._flight is not None else None
        counter = base.counter if base is not None else self._counter
        answers: list[Answer] = []
        events: list[list[JobEvent]] = []
        logged: list[_Pending] = []
        new_keys: list[Key] = []
        log_rows: list[dict[str, Any]] = []
        history: dict[str, list[dict[str, Any]]] = {"unit_scans": [], "job_transitions": [], "unit_events": []}
        dirty = DirtySet()
        for pending in batch:
            replayed = self._replay(pending)
            if replayed is not None:
                answers.append(replayed)
                events.append([])
                continue
            counter += 1
            poison = self._poisoned.get(id(pending))
            if poison is not None:
                answer = Answer(counter, pending.command.kind, Reason.INTERNAL, poison, {}, (), pending.received_at)
            else:
                try:
                    answer = self._apply(pending, counter)
                except Exception as exc:
                    raise _ApplyFailed(pending, exc, new_keys) from exc
            changes = self.model.drain()
            done = list(changes.jobs.events)
            key = self._key(pending.command, counter)
            log_rows.append(self._log_row(pending, key, answer, safe=poison is not None))
            self._remember(key, pending.command, answer)
            new_keys.append(key)
            self._collect(done, counter, history)
            self._merge_dirty(dirty, changes, counter)
            answers.append(answer)
            events.append(done)
            logged.append(pending)
        rows = batch_rows(self.model, log_rows, history, dirty)
        units = self.model.book.units
        jobs = dirty.jobs | {units[s].job_id for s in dirty.units if s in units}
        gone, self._gone = self._gone, set()
        view = refresh(
            base.view if base is not None else self.view,
            self.model,
            counter,
            stations=dirty.stations,
            jobs=jobs,
            units=bool(dirty.units),
            gone=gone,
        )
        return _Prepared(
            batch, answers, events, logged, new_keys, rows, counter, view, set(dirty.stations), jobs | gone
        )

    def _committed(self, prepared: _Prepared, seconds: float) -> None:
        self._counter = prepared.counter
        self.view = prepared.view
        self.stats.batches += 1
        self.stats.last_batch_size = len(prepared.batch)
        self.stats.last_commit_seconds = seconds
        applied: list[Applied] = []
        for pending, answer, done in zip(prepared.batch, prepared.answers, prepared.events, strict=True):
            self._poisoned.pop(id(pending), None)
            self.stats.commands += 1
            if answer.replayed:
                self.stats.replays += 1
            elif answer.reason is not None:
                self.stats.refusals[answer.reason.value] += 1
            self._open.pop(id(pending), None)
            if not pending.future.done():
                pending.future.set_result(answer)
            applied.append(Applied(pending.command, pending.actor, answer, done))
        self._retire |= prepared.jobs
        self.feed.push(
            Committed(
                applied, set(prepared.stations), set(prepared.jobs), prepared.view, [(len(prepared.batch), seconds)]
            )
        )

    def _retire_done(self, exclude: set[str]) -> None:
        """Closed jobs with nothing left in the cell leave memory (their history stays in the store)."""
        if not self._retire:
            return
        candidates = self._retire - exclude
        self._retire &= exclude
        self._gone.update(self.model.retire(candidates))

    # ------------------------------------------------------------------ failures
    async def _commit_failed(self, prepared: _Prepared, exc: BaseException) -> None:
        """The model goes back to the committed state before anyone hears of the failure."""
        self.answers.forget(prepared.new_keys)
        outage = self.store.is_outage(exc)
        log.error(
            "batch_commit_failed",
            size=len(prepared.batch),
            error=f"{type(exc).__name__}: {exc}",
            outage=outage,
            exc_info=None if outage else exc,
        )
        if not await self._reload():
            self._fail(prepared.batch, StoreUnavailable(f"the store could not commit: {exc}"))
            return
        if outage or not prepared.logged:
            self._fail(prepared.batch, StoreUnavailable(f"the store could not commit: {exc}"))
            return
        await self._isolate(prepared, exc)

    async def _isolate(self, prepared: _Prepared, exc: BaseException) -> None:
        """Find the command whose rows cannot be stored: halves committed alone, down to one command."""
        if len(prepared.logged) == 1:
            culprit = prepared.logged[0]
            if id(culprit) in self._poisoned:  # even its refusal cannot be stored
                self._fail(prepared.batch, StoreUnavailable(f"the store could not commit: {exc}"))
                return
            log.error(
                "command_not_storable",
                kind=culprit.command.kind,
                source=culprit.command.source,
                error=f"{type(exc).__name__}: {exc}",
            )
            self.stats.internal_errors += 1
            self._poisoned[id(culprit)] = _internal_message(exc, stored=False)
            await self._alone(prepared.batch)
            return
        self.stats.splits += 1
        batch = prepared.batch
        middle = len(batch) // 2
        for half in (batch[:middle], batch[middle:]):
            await self._alone(half)

    async def _alone(self, batch: list[_Pending]) -> None:
        """Apply and commit a batch with nothing else in flight (isolating a failure)."""
        prepared = await self._prepare(batch)
        if prepared is None:
            return
        self._launch(prepared)  # in flight like any batch: a shutdown meanwhile waits for it
        await self._settle()

    async def _reload(self) -> bool:
        """The model again from the store. False (and the writer refuses to apply) if it cannot be read."""
        self.stats.reloads += 1
        try:
            await self._load()
            return True
        except Exception as exc:
            self._broken = f"{type(exc).__name__}: {exc}"
            log.exception("state_reload_failed", error=self._broken)
            return False

    def _fail(self, batch: Iterable[_Pending], error: Exception) -> None:
        for pending in list(batch):
            self._poisoned.pop(id(pending), None)
            self._open.pop(id(pending), None)
            if not pending.future.done():
                pending.future.set_exception(error)

    async def _abandon(self, why: str) -> None:
        """After a defect in the writer's own code: what it had taken is failed, the state reloaded."""
        flight, self._flight = self._flight, None
        if flight is not None:
            await asyncio.wait([flight.task])
            if not flight.task.cancelled() and flight.task.exception() is None:
                self._committed(flight.prepared, 0.0)  # it is stored: its callers hear so
        queued = {id(p) for p in self._queue}
        self._fail([p for k, p in self._open.items() if k not in queued], StoreUnavailable(why))
        await self._reload()

    async def _shutdown(self) -> None:
        """Stopping: the batch in flight is waited for, so its callers hear what really happened."""
        flight, self._flight = self._flight, None
        if flight is not None:
            await asyncio.wait([flight.task])
            if not flight.task.cancelled() and flight.task.exception() is None:
                self._committed(flight.prepared, 0.0)
        self._queue.clear()
        self._fail(self._open.values(), StoreUnavailable("the gateway is shutting down"))
        self._idle.set()

    # ------------------------------------------------------------------ one command
    def _key(self, command: Command, counter: int) -> Key:
        if isinstance(command, Report):
            return _report_key(command)
        return (command.source, f"{command.kind}#{counter}")

    def _replay(self, pending: _Pending) -> Answer | None:
        """The stored answer for a retried report, a DuplicateEventId refusal, or None for a new report."""
        command = pending.command
        if not isinstance(command, Report):
            return None
        stored = self.answers.get(_report_key(command))
        if stored is None:
            return None
        if stored.kind == command.kind and _same_arguments(stored.args, encode(command)):
            return Answer(
                counter=stored.counter,
                kind=stored.kind,
                reason=Reason(stored.reason) if stored.reason else None,
                message=stored.message,
                outputs=stored.outputs,
                flags=tuple(Flag.from_json(f) for f in stored.flags),
                at=pending.received_at,
                replayed=True,
            )
        return Answer(
            counter=0,
            kind=command.kind,
            reason=Reason.DUPLICATE_EVENT_ID,
            message=(
                f"EventId {safe_text(command.event_id)!r} of {safe_text(command.source)} was used at log position "
                f"{stored.counter} for another report ({stored.kind} {stored.args}); a new report needs a new EventId"
            ),
            outputs={},
            flags=(),
            at=pending.received_at,
        )

    def _apply(self, pending: _Pending, counter: int) -> Answer:
        command = pending.command
        try:
            outcome = self.model.apply(command, pending.received_at, pending.actor)
        except Refused as refused:
            return Answer(counter, command.kind, refused.reason, refused.message, {}, (), pending.received_at)
        return Answer(counter, command.kind, None, "", outcome.outputs, outcome.flags, outcome.at)

    def _log_row(self, pending: _Pending, key: Key, answer: Answer, *, safe: bool) -> dict[str, Any]:
        command = pending.command
        source_time = command.source_time if isinstance(command, Report) else None
        args = encode(command)
        return {
            "counter": answer.counter,
            "source": key[0],
            "event_id": key[1],
            "kind": command.kind,
            "args": safe_value(args) if safe else args,
            "source_time": source_time,
            "received_at": pending.received_at,
            "actor": safe_text(pending.actor) if safe else pending.actor,
            "reason": answer.reason.value if answer.reason else None,
            "message": answer.message,
            "answer": answer.outputs,
            "flags": [f.to_json() for f in answer.flags],
        }

    def _remember(self, key: Key, command: Command, answer: Answer) -> None:
        if not isinstance(command, Report):
            return
        self.answers.add(
            key,
            LoggedAnswer(
                counter=answer.counter,
                kind=command.kind,
                args=encode(command),
                reason=answer.reason.value if answer.reason else None,
                message=answer.message,
                outputs=answer.outputs,
                flags=[f.to_json() for f in answer.flags],
            ),
        )

    def _collect(self, events: list[JobEvent], counter: int, history: dict[str, list[dict[str, Any]]]) -> None:
        for event in events:
            if isinstance(event, UnitsMoved):
                history["unit_events"].extend(R.moved_rows(event, counter))
                continue
            found = R.event_rows(event, counter)
            if found is not None:
                history[found[0]].append(found[1])

    def _merge_dirty(self, dirty: DirtySet, changes: Changes, counter: int) -> None:
        dirty.orders.merge(changes.orders, counter)
        jobs, tracking = changes.jobs, changes.tracking
        dirty.specs |= jobs.specs
        dirty.templates |= jobs.templates
        dirty.jobs |= jobs.jobs
        dirty.units |= jobs.units
        dirty.pallets |= tracking.pallets
        dirty.stations |= tracking.stations
        if tracking.serial_seq != self._saved_serial_seq:  # saved only when a serial was generated
            dirty.serial_seq = self._saved_serial_seq = tracking.serial_seq


def store_message(error: BaseException) -> str:
    """The store's own words for a failure: the database driver's message, without SQLAlchemy's wrapping."""
    cause = getattr(error, "orig", None) or error
    return safe_text(str(cause).strip() or type(cause).__name__)[:500]


def _report_key(command: Report) -> Key:
    return (safe_text(command.source), safe_text(command.event_id))


def _same_arguments(stored: dict[str, Any], given: dict[str, Any]) -> bool:
    return stored == given or stored == safe_value(given)


def _internal_message(error: BaseException, *, stored: bool = True) -> str:
    what = "could not be processed" if stored else "could not be stored"
    return safe_text(
        f"the gateway failed on this command ({type(error).__name__}: {error}); it {what}, nothing of it "
        "changed the cell, and it is logged as refused (retrying it gets this same answer)"
    )[:2000]
