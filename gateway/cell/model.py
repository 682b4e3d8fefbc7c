"""The whole cell's state in one object: the JobBook, the CellTracker and the OrderBook, behind one ``apply``.

The writer owns exactly one CellModel and is the only caller of ``apply``; that is what makes
"commands are applied in order" true. Filling workorders at unload happens here too, in the same
step as the report that finished the unit, so it is saved in the same transaction.

Memory holds what is live, not the cell's whole history. Once stored, a Closed job whose units are
neither live nor on a pallet can be retired, and the finished and scrapped units of any job that are
not on a pallet can leave memory (:meth:`CellModel.retire`); before applying a command the writer asks
which jobs and serials it names that memory does not hold (:meth:`CellModel.references`),
reads those from storage and hands them back (:meth:`CellModel.adopt`), so that every command is
answered exactly as if nothing had ever been retired.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.cell.commands import Command
from gateway.errors import Refused
from gateway.jobs.book import JobBook, JobChanges
from gateway.jobs.commands import (
    CloseJob,
    CreateJob,
    HoldJob,
    MergeJobs,
    PromoteRouting,
    ReleaseJob,
    ReplaceRouting,
    ResolveAudit,
    ResumeJob,
    SplitJob,
    handle,
)
from gateway.jobs.events import UnitFinished
from gateway.jobs.model import Job, Unit
from gateway.orders import OrderBook, OrderChanges, Workorder
from gateway.orders.commands import (
    AssignSerials,
    BackOutJob,
    MarkWorkorderFilled,
    OrderCommand,
    UpdateOrder,
)
from gateway.orders.handlers import assign_finished_unit
from gateway.orders.handlers import handle as handle_order
from gateway.tracking.anomalies import Flag
from gateway.tracking.reports import LoadCompleted, Report, ScanIn, ScanOut, Scrap, StartUnit
from gateway.tracking.tracker import CellTracker, Outcome, TrackingChanges


@dataclass(frozen=True, slots=True)
class Changes:
    """What the cell changed since the last drain, as each of its three books handed it over.

    Every book has the same ``drain()``: it returns a frozen value of its own changes and starts afresh;
    nothing outside a book clears its bookkeeping.
    """

    jobs: JobChanges
    tracking: TrackingChanges
    orders: OrderChanges


class CellModel:
    def __init__(
        self,
        book: JobBook,
        tracker: CellTracker,
        orders: OrderBook | None = None,
        *,
        assign_workorder_at_unload: bool = False,
    ) -> None:
        self.book = book
        self.tracker = tracker
        self.orders = orders if orders is not None else OrderBook()
        self.assign_workorder_at_unload = assign_workorder_at_unload

    def apply(self, command: Command, received_at: datetime, actor: str) -> Outcome:
        """Apply one command; raises ``Refused`` having changed nothing."""
        if isinstance(command, Report):
            seen = len(self.book.events)
            outcome = self.tracker.apply(command, received_at)
            if self.assign_workorder_at_unload:
                for event in self.book.events[seen:]:
                    if isinstance(event, UnitFinished):
                        assign_finished_unit(self.orders, self.book, event.serial, event.at)
            return outcome
        outputs: dict[str, Any]
        if isinstance(command, OrderCommand):
            outputs = handle_order(self.orders, self.book, command, received_at, actor)
        else:
            outputs = handle(self.book, command, received_at, actor)
        return Outcome(outputs, (), received_at)

    # ------------------------------------------------------------------ what memory holds
    def retire(self, candidates: Iterable[str]) -> list[str]:
        """Drop from memory what of the candidate jobs the live cell no longer needs; returns the ids of
        the jobs dropped whole.

        A candidate job that is Closed, has no live unit and none of whose units is on a pallet leaves
        with all of its units. Of a candidate job that stays, the units that are finished or scrapped
        and not on a pallet leave (:meth:`JobBook.shed`); the job, its counts and its other units stay.
        Their rows stay stored, and nothing is marked dirty: call it only for state that has been
        turned into rows already (a job or unit changed since the last :meth:`drain` is kept).
        Unknown ids are passed over. So is a unit whose serial, given by hand, has the form the serial
        counter has yet to generate (and a job with such a unit): the counter skips a serial the book
        holds, so such a unit stays until the counter has passed it.
        """
        book, tracker = self.book, self.tracker
        wanted = [j for j in dict.fromkeys(candidates) if j in book.jobs]
        if not wanted:
            return []
        on_pallets = {serial for pallet in tracker.pallets.values() for serial in pallet.units}
        retired: list[str] = []
        for job_id in wanted:
            units = book.units_of(job_id)
            stays = [u.serial in on_pallets or tracker.may_generate(u.serial) for u in units]
            if book.retirable(job_id) and not any(stays):
                book.retire(job_id)
                retired.append(job_id)
                continue
            shed = [u.serial for u, kept in zip(units, stays, strict=True) if not kept and book.sheddable(u.serial)]
            if shed:
                book.shed(shed)
        return retired

    def references(self, command: Command) -> tuple[frozenset[str], frozenset[str]]:
        """The job ids and serials ``command`` names (or would create) that memory does not hold, and
        the held jobs it needs with all of their units when memory holds only some (a merge's).

        The writer reads those from storage (a job with all of its units, a serial with its job and all
        of that job's units) and hands what it found to :meth:`adopt` before applying the command; what
        storage does not have either is simply new. Ids the command would generate need no look-up:
        generated job ids stay ahead of every stored one, and a stored serial the serial counter has
        yet to reach is always held (see :meth:`retire`).
        """
        book = self.book
        jobs: list[str] = []
        serials: list[str] = []
        whole: list[str] = []  # held or not, needed with every unit
        match command:
            case LoadCompleted():
                jobs.append(command.job)
                serials.extend(command.serials)
            case StartUnit():
                jobs.append(command.job)
                serials.append(command.serial)
            case ScanIn() | ScanOut() | Scrap() | ResolveAudit():
                serials.append(command.serial)
            case Report():
                pass  # pallet reports: every unit on a pallet is held
            case CreateJob():
                jobs.append(command.job_id)
            case ReplaceRouting() | ReleaseJob() | HoldJob() | ResumeJob() | CloseJob() | PromoteRouting():
                jobs.append(command.job_id)
            case SplitJob():
                jobs.append(command.job_id)
                serials.extend(command.serials)
                parent = book.jobs.get(command.job_id)
                if parent is not None:
                    jobs.append(f"{parent.id}-R{parent.children + 1}")
            case MergeJobs():
                # The source's units all move, finished ones too, and join the target's in order.
                jobs.extend((command.target_job_id, command.source_job_id))
                whole.extend((command.target_job_id, command.source_job_id))
            case BackOutJob():
                jobs.append(command.job_id)
            case AssignSerials():
                serials.extend(command.serials)
            case MarkWorkorderFilled():
                # Each serial's times were kept when it was assigned; a serial without them (none, as
                # stored state is restored) would be read from its unit.
                workorder = self._workorder(command.workorder_id)
                if workorder is not None and not workorder.filled:
                    serials.extend(s for s in workorder.all_serials if s not in workorder.costs)
            case UpdateOrder():
                # Raising a filled workorder reopens it: the times of the serials it holds, let go
                # when it filled, are taken again from their units. (Lowering it is refused: no look-up.)
                workorder = self._workorder(command.order_id)
                if workorder is not None and workorder.filled and isinstance(command.parts, dict):
                    try:
                        raises = command.parts != dict(workorder.parts) and all(
                            command.parts.get(p, 0) >= q for p, q in workorder.parts.items()
                        )
                    except TypeError:  # not quantities: the update refuses them
                        raises = False
                    if raises:
                        serials.extend(s for s in workorder.all_serials if s not in workorder.costs)
            case _:
                pass
        return (
            frozenset(j for j in jobs if isinstance(j, str) and j and j not in book.jobs)
            | frozenset(j for j in whole if isinstance(j, str) and j in book.jobs and not book.complete(j)),
            frozenset(s for s in serials if isinstance(s, str) and s and s not in book.units),
        )

    def _workorder(self, workorder_id: object) -> Workorder | None:
        if not isinstance(workorder_id, str):
            return None
        try:
            return self.orders.workorder(workorder_id)
        except Refused:  # no such workorder: the command will be refused for it
            return None

    def adopt(self, jobs: Sequence[Job], units: Sequence[Unit]) -> None:
        """Hand back retired jobs and units read from storage (each job with all of its units).

        What memory holds already is kept (units shed from a held job come back in their places);
        nothing is marked dirty; they may be retired again later.
        """
        self.book.adopt(jobs, units)

    def drain(self) -> Changes:
        return Changes(self.book.drain(), self.tracker.drain(), self.orders.drain())


__all__ = ["CellModel", "Changes", "Command", "Flag", "Outcome"]
