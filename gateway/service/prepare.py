"""Batch preparation: a batch of commands applied to the model and turned into rows and a view.

Before a batch is applied, what it names that is not in memory is looked up in the store: the stored
answers of older reports (once the log outgrew the answer cache) and jobs and units that left memory
(:meth:`Preparer.lookups`). Then each command in order is replayed (a retried report), refused with
InternalError (a poisoned one) or applied to the model; each that is not a replay gets a log row, its
history rows and its marks in the batch's dirty set (:meth:`Preparer.apply_all`). The result is a
:class:`Prepared` batch, ready to commit, on top of the batch in flight or the committed state.

A command whose applying raises anything but ``Refused`` stops the batch (:class:`ApplyFailed`): the
writer undoes it and applies the batch again with that command poisoned. Between batches the
preparer keeps the serial sequence last saved and the jobs that may leave memory, or have left it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.cell.codec import encode
from gateway.cell.commands import Command
from gateway.cell.model import CellModel, Changes
from gateway.errors import Reason, Refused
from gateway.jobs.events import JobEvent, UnitsMoved
from gateway.logging import get_logger
from gateway.service.answers import AnswerCache, Key, remember, replay, report_key, safe_text, safe_value
from gateway.service.feed import Answer
from gateway.service.intake import Intake, Pending
from gateway.service.outcomes import StoreUnavailable, WriterStats, internal_message
from gateway.service.ports import Store
from gateway.service.views import CellView, refresh
from gateway.storage import rows as R
from gateway.storage.batch import BatchRows, DirtySet, batch_rows
from gateway.tracking.reports import Report

log = get_logger(__name__)


@dataclass(slots=True)
class Prepared:
    """A batch applied to the model and turned into rows and a view, not yet committed."""

    batch: list[Pending]
    answers: list[Answer]
    events: list[list[JobEvent]]
    logged: list[Pending]  # the commands that have a log row (not replays)
    new_keys: list[Key]
    rows: BatchRows
    counter: int
    view: CellView
    stations: set[str]
    jobs: set[str]


class ApplyFailed(Exception):
    def __init__(self, pending: Pending, error: BaseException, new_keys: list[Key]) -> None:
        super().__init__(str(error))
        self.pending = pending
        self.error = error
        self.new_keys = new_keys


class Preparer:
    """Prepares the writer's batches; ``outcome`` records a failed read of the store (for /healthz)."""

    def __init__(
        self,
        store: Store,
        answers: AnswerCache,
        intake: Intake,
        stats: WriterStats,
        outcome: Callable[[BaseException | None], None],
    ) -> None:
        self.store = store
        self.answers = answers
        self.intake = intake
        self.stats = stats
        self._outcome = outcome
        self.retire: set[str] = set()  # jobs that may leave memory once nothing in flight needs them
        self.gone: set[str] = set()  # jobs that left memory, to drop from the next view
        self.saved_serial_seq = 0

    async def lookups(self, model: CellModel, batch: list[Pending]) -> bool:
        """Stored answers of older reports, and entities that left memory, that the batch names."""
        try:
            await self._look_up(model, batch)
            return True
        except Exception as exc:
            if self._store_failed(exc, batch):
                return False
        # Not the store: one of the commands. Look up each alone; the ones that fail are refused.
        for pending in batch:
            if id(pending) in self.intake.poisoned:
                continue
            try:
                await self._look_up(model, [pending])
            except Exception as exc:
                if self._store_failed(exc, batch):
                    return False
                log.error("lookup_failed", kind=pending.command.kind, source=pending.command.source, exc_info=exc)
                self.stats.internal_errors += 1
                self.intake.poisoned[id(pending)] = internal_message(exc)
        return True

    def _store_failed(self, exc: Exception, batch: list[Pending]) -> bool:
        """If the store could not be read (an outage, not a command's fault): the batch is answered
        StoreUnavailable, and True."""
        if not self.store.is_outage(exc):
            return False
        self._outcome(exc)
        log.error("lookup_failed", error=str(exc), size=len(batch))
        self.intake.fail(batch, StoreUnavailable(f"the store could not be read: {exc}"))
        return True

    async def _look_up(self, model: CellModel, batch: list[Pending]) -> None:
        poisoned = self.intake.poisoned
        keys = [report_key(p.command) for p in batch if isinstance(p.command, Report) and id(p) not in poisoned]
        missing = self.answers.missing(keys)
        if missing:
            self.answers.found(await self.store.find_answers(missing))
        job_ids: set[str] = set()
        serials: set[str] = set()
        for pending in batch:
            if id(pending) not in poisoned:
                jobs, units = model.references(pending.command)
                job_ids |= jobs
                serials |= units
        if job_ids or serials:
            jobs_found, units_found = await self.store.fetch(job_ids, serials)
            if jobs_found or units_found:
                model.adopt(jobs_found, units_found)
                self.retire.update(j.id for j in jobs_found)

    def apply_all(self, model: CellModel, batch: list[Pending], counter: int, view: CellView) -> Prepared:
        """The batch applied on top of ``counter`` and ``view``: the batch in flight's, or the committed ones."""
        answers: list[Answer] = []
        events: list[list[JobEvent]] = []
        logged: list[Pending] = []
        new_keys: list[Key] = []
        log_rows: list[dict[str, Any]] = []
        history: dict[str, list[dict[str, Any]]] = {"unit_scans": [], "job_transitions": [], "unit_events": []}
        dirty = DirtySet()
        for pending in batch:
            replayed = replay(self.answers, pending.command, pending.received_at)
            if replayed is not None:
                answers.append(replayed)
                events.append([])
                continue
            counter += 1
            poison = self.intake.poisoned.get(id(pending))
            if poison is not None:
                answer = Answer(counter, pending.command.kind, Reason.INTERNAL, poison, {}, (), pending.received_at)
            else:
                try:
                    answer = _apply(model, pending, counter)
                except Exception as exc:
                    raise ApplyFailed(pending, exc, new_keys) from exc
            changes = model.drain()
            done = list(changes.jobs.events)
            key = _key(pending.command, counter)
            log_rows.append(_log_row(pending, key, answer, safe=poison is not None))
            remember(self.answers, key, pending.command, answer)
            new_keys.append(key)
            _collect(done, counter, history)
            self._merge_dirty(dirty, changes, counter)
            answers.append(answer)
            events.append(done)
            logged.append(pending)
        rows = batch_rows(model, log_rows, history, dirty)
        units = model.book.units
        jobs = dirty.jobs | {units[s].job_id for s in dirty.units if s in units}
        gone, self.gone = self.gone, set()
        view = refresh(
            view,
            model,
            counter,
            stations=dirty.stations,
            jobs=jobs,
            units=bool(dirty.units),
            gone=gone,
        )
        return Prepared(batch, answers, events, logged, new_keys, rows, counter, view, set(dirty.stations), jobs | gone)

    def retire_done(self, model: CellModel, exclude: set[str]) -> None:
        """Closed jobs with nothing left in the cell leave memory (their history stays in the store)."""
        if not self.retire:
            return
        candidates = self.retire - exclude
        self.retire &= exclude
        self.gone.update(model.retire(candidates))

    def _merge_dirty(self, dirty: DirtySet, changes: Changes, counter: int) -> None:
        dirty.orders.merge(changes.orders, counter)
        jobs, tracking = changes.jobs, changes.tracking
        dirty.specs |= jobs.specs
        dirty.templates |= jobs.templates
        dirty.jobs |= jobs.jobs
        dirty.units |= jobs.units
        dirty.pallets |= tracking.pallets
        dirty.stations |= tracking.stations
        if tracking.serial_seq != self.saved_serial_seq:  # saved only when a serial was generated
            dirty.serial_seq = self.saved_serial_seq = tracking.serial_seq


# ---------------------------------------------------------------------------------------- one command
def _key(command: Command, counter: int) -> Key:
    if isinstance(command, Report):
        return report_key(command)
    return (command.source, f"{command.kind}#{counter}")


def _apply(model: CellModel, pending: Pending, counter: int) -> Answer:
    command = pending.command
    try:
        outcome = model.apply(command, pending.received_at, pending.actor)
    except Refused as refused:
        return Answer(counter, command.kind, refused.reason, refused.message, {}, (), pending.received_at)
    return Answer(counter, command.kind, None, "", outcome.outputs, outcome.flags, outcome.at)


def _log_row(pending: Pending, key: Key, answer: Answer, *, safe: bool) -> dict[str, Any]:
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


def _collect(events: list[JobEvent], counter: int, history: dict[str, list[dict[str, Any]]]) -> None:
    for event in events:
        if isinstance(event, UnitsMoved):
            history["unit_events"].extend(R.moved_rows(event, counter))
            continue
        found = R.event_rows(event, counter)
        if found is not None:
            history[found[0]].append(found[1])
