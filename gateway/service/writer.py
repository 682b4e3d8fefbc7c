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

Where the parts live: the queue and the open commands in :mod:`gateway.service.intake`; batch
preparation (look-ups, applying each command, log and history rows, dirty sets) in
:mod:`gateway.service.prepare`; idempotency in :mod:`gateway.service.answers`; the errors, the commit
outcome and the stats in :mod:`gateway.service.outcomes`. This module keeps the loop, the commit
pipeline and its fault paths (undo, isolation, reload, abandon, shutdown) together, a little over 400
lines: they all turn on the one batch in flight and call one another (a failed commit is isolated by
preparing and committing its halves), so parting them would scatter one state machine. It is the
writer's public face: the errors it raises, what it reports and what its listeners get are
importable from here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.cell.commands import Command
from gateway.cell.model import CellModel
from gateway.clock import Clock
from gateway.logging import get_logger
from gateway.service.answers import AnswerCache
from gateway.service.feed import Answer, Applied, Committed, Feed, Listener
from gateway.service.intake import Intake, Pending
from gateway.service.outcomes import (
    CommitOutcome,
    Overloaded,
    StoreUnavailable,
    WriterStats,
    internal_message,
    store_message,
)
from gateway.service.ports import Store
from gateway.service.prepare import ApplyFailed, Prepared, Preparer
from gateway.service.views import CellView, full_view

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
    "store_message",
]


@dataclass(slots=True)
class _Flight:
    prepared: Prepared
    task: asyncio.Future[None]
    started: float


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
        self.intake = Intake()
        self.preparer = Preparer(store, self.answers, self.intake, self.stats, self._outcome)
        self._counter = 0
        self._ready = False
        self._flight: _Flight | None = None
        self._broken: str | None = None  # the model could not be reloaded: why
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
        return len(self.intake.queue)

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
        if len(self.intake.queue) >= self.max_queue:
            self.stats.overloaded += 1
            raise Overloaded(f"the gateway is overloaded: {len(self.intake.queue)} commands are waiting; retry later")
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self.intake.add(Pending(command, actor, self.clock.now(), future))
        return await future

    async def wait_idle(self) -> None:
        """Until everything submitted so far is committed, answered and handed to the listeners."""
        await self.intake.idle.wait()
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
        self.preparer.saved_serial_seq = model.tracker.serial_seq
        self.answers.warm(loaded.recent, loaded.total)
        self.view = full_view(model, self._counter)
        self.preparer.retire.clear()
        self.preparer.gone.clear()
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
            if not self.intake.queue:
                self.intake.idle.set()
                await self.intake.woken()
        elif not self.intake.queue:
            if not self._flight.task.done():
                await self.intake.woken()  # by a new command or by the end of the commit in flight
            if not self.intake.queue:
                await self._settle()
                return
        batch = self.intake.take(self.max_batch)
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

    def _launch(self, prepared: Prepared) -> None:
        """Start committing a prepared batch (nothing is in flight now)."""
        self.preparer.retire_done(self.model, exclude=prepared.jobs)
        if prepared.rows:
            task: asyncio.Future[None] = asyncio.ensure_future(self.store.commit(prepared.rows))
        else:
            task = asyncio.get_running_loop().create_future()
            task.set_result(None)
        task.add_done_callback(self.intake.wake)
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
    async def _prepare(self, batch: list[Pending]) -> Prepared | None:
        """Look up what the batch needs, then apply it; a command that fails is undone and refused."""
        while True:
            batch = self.intake.still_waiting(batch)
            if not batch:
                return None
            if self._broken is not None:
                self.intake.fail(batch, StoreUnavailable(f"the store cannot be read: {self._broken}"))
                return None
            if not await self.preparer.lookups(self.model, batch):
                return None
            # Applied on top of the batch in flight, or of the committed state.
            base = self._flight.prepared if self._flight is not None else None
            counter, view = (base.counter, base.view) if base is not None else (self._counter, self.view)
            try:
                return self.preparer.apply_all(self.model, batch, counter, view)
            except ApplyFailed as failed:
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
                self.intake.poisoned[id(failed.pending)] = internal_message(failed.error)
                self.answers.forget(failed.new_keys)
                # Undo: back to the committed state (after the batch in flight, whatever its fate),
                # then apply the batch again with that command refused.
                if self._flight is not None and not await self._settle():
                    continue  # the batch in flight failed, and its recovery reloaded the state
                await self._reload()

    def _committed(self, prepared: Prepared, seconds: float) -> None:
        self._counter = prepared.counter
        self.view = prepared.view
        self.stats.batches += 1
        self.stats.last_batch_size = len(prepared.batch)
        self.stats.last_commit_seconds = seconds
        applied: list[Applied] = []
        for pending, answer, done in zip(prepared.batch, prepared.answers, prepared.events, strict=True):
            self.stats.commands += 1
            if answer.replayed:
                self.stats.replays += 1
            elif answer.reason is not None:
                self.stats.refusals[answer.reason.value] += 1
            self.intake.answer(pending, answer)
            applied.append(Applied(pending.command, pending.actor, answer, done))
        self.preparer.retire |= prepared.jobs
        self.feed.push(
            Committed(
                applied, set(prepared.stations), set(prepared.jobs), prepared.view, [(len(prepared.batch), seconds)]
            )
        )

    # ------------------------------------------------------------------ failures
    async def _commit_failed(self, prepared: Prepared, exc: BaseException) -> None:
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
            self.intake.fail(prepared.batch, StoreUnavailable(f"the store could not commit: {exc}"))
            return
        if outage or not prepared.logged:
            self.intake.fail(prepared.batch, StoreUnavailable(f"the store could not commit: {exc}"))
            return
        await self._isolate(prepared, exc)

    async def _isolate(self, prepared: Prepared, exc: BaseException) -> None:
        """Find the command whose rows cannot be stored: halves committed alone, down to one command."""
        if len(prepared.logged) == 1:
            culprit = prepared.logged[0]
            if id(culprit) in self.intake.poisoned:  # even its refusal cannot be stored
                self.intake.fail(prepared.batch, StoreUnavailable(f"the store could not commit: {exc}"))
                return
            log.error(
                "command_not_storable",
                kind=culprit.command.kind,
                source=culprit.command.source,
                error=f"{type(exc).__name__}: {exc}",
            )
            self.stats.internal_errors += 1
            self.intake.poisoned[id(culprit)] = internal_message(exc, stored=False)
            await self._alone(prepared.batch)
            return
        self.stats.splits += 1
        batch = prepared.batch
        middle = len(batch) // 2
        for half in (batch[:middle], batch[middle:]):
            await self._alone(half)

    async def _alone(self, batch: list[Pending]) -> None:
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

    async def _abandon(self, why: str) -> None:
        """After a defect in the writer's own code: what it had taken is failed, the state reloaded."""
        flight, self._flight = self._flight, None
        if flight is not None:
            await asyncio.wait([flight.task])
            if not flight.task.cancelled() and flight.task.exception() is None:
                self._committed(flight.prepared, 0.0)  # it is stored: its callers hear so
        self.intake.fail(self.intake.taken(), StoreUnavailable(why))
        await self._reload()

    async def _shutdown(self) -> None:
        """Stopping: the batch in flight is waited for, so its callers hear what really happened."""
        flight, self._flight = self._flight, None
        if flight is not None:
            await asyncio.wait([flight.task])
            if not flight.task.cancelled() and flight.task.exception() is None:
                self._committed(flight.prepared, 0.0)
        self.intake.queue.clear()
        self.intake.fail(self.intake.open.values(), StoreUnavailable("the gateway is shutting down"))
        self.intake.idle.set()
