"""Committed views: what readers see of the cell, immutable, with the log position they reflect.

The writer builds a new :class:`CellView` right after applying a batch (before the next batch is
applied) and makes it current only when that batch has committed. Only what the batch changed is
rebuilt; everything else is shared with the previous view. Readers (the OPC UA publisher and tag
reconciliation, the status page, /api/status, metrics, the sweeper) take ``writer.view`` once and read
that object: it never changes under them and never shows what is not committed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from gateway.cell.model import CellModel
from gateway.jobs.model import Job, JobState, target_reached
from gateway.tracking.loading import is_load_candidate

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class StationView:
    id: str
    kind: str
    state: str  # idle, occupied, running, down
    pallet: str
    cycle_pallet: str  # the pallet of the open cycle, "" when none
    cycle_program: str
    expected_program: str
    load_instruction: str  # JSON, "" when no pallet is at a load station
    jobs: tuple[str, ...]  # jobs of the live units on the pallet here


@dataclass(frozen=True, slots=True)
class StepWip:
    operation: str
    wip: int


@dataclass(frozen=True, slots=True)
class JobView:
    id: str
    part: str
    revision: str
    state: JobState
    quantity: int
    max_quantity: int
    started: int
    scrapped: int
    finished: int
    due: datetime | None
    priority: int
    routing: tuple[str, ...]
    routing_source: str
    closed_at: datetime | None
    wip_by_step: tuple[StepWip, ...]

    @property
    def wip(self) -> int:
        return self.started - self.scrapped - self.finished

    @property
    def shop_floor_visible(self) -> bool:
        return self.state is not JobState.CREATED

    @property
    def target_reached(self) -> bool:
        return target_reached(self.finished, self.quantity)

    @property
    def done(self) -> bool:
        """Its ordered quantity is finished and nothing of it is in WIP: waiting to be closed."""
        return is_done(self.state, self.wip, self.finished, self.quantity)


@dataclass(frozen=True, slots=True)
class AuditView:
    serial: str
    job: str
    last_activity: datetime


@dataclass(frozen=True, slots=True)
class CellView:
    """The cell as of log position ``counter``: stations, jobs in memory, open Lost Audits."""

    counter: int = 0
    stations: Mapping[str, StationView] = field(default_factory=lambda: _EMPTY)
    jobs: Mapping[str, JobView] = field(default_factory=lambda: _EMPTY)
    audits: tuple[AuditView, ...] = ()
    # The oldest last activity of a live unit without an open audit: when the sweeper has work.
    oldest_activity: datetime | None = None
    # Jobs a new unit may start in (released or running, with room): kept from batch to batch, so the
    # load instructions never look at every open job.
    loadable: frozenset[str] = frozenset()
    # Jobs with work (listed on the status page) and jobs done but not closed (counted there): kept
    # from batch to batch, so a reader never walks a year of jobs nobody closed.
    working: frozenset[str] = frozenset()
    done: frozenset[str] = frozenset()

    @property
    def wip(self) -> int:
        return sum(j.wip for j in self.jobs.values())


def station_view(model: CellModel, station_id: str, candidates: Sequence[Job] | None = None) -> StationView:
    tracker, book = model.tracker, model.book
    state = tracker.stations[station_id]
    jobs: set[str] = set()
    if state.pallet:
        for serial in tracker.pallets[state.pallet].units:
            unit = book.units.get(serial)
            if unit is not None and unit.live:
                jobs.add(unit.job_id)
    cycle = state.cycle
    return StationView(
        id=station_id,
        kind=book.layout.stations[station_id].kind,
        state=state.state,
        pallet=state.pallet,
        cycle_pallet=cycle.pallet if cycle is not None else "",
        cycle_program=cycle.program if cycle is not None else "",
        expected_program=tracker.expected_program(station_id),
        load_instruction=tracker.instruction_json(station_id, candidates),
        jobs=tuple(sorted(jobs)),
    )


def job_view(model: CellModel, job: Job) -> JobView:
    return JobView(
        id=job.id,
        part=job.part,
        revision=job.revision,
        state=job.state,
        quantity=job.quantity,
        max_quantity=job.max_quantity,
        started=job.started,
        scrapped=job.scrapped,
        finished=job.finished,
        due=job.due,
        priority=job.priority,
        routing=tuple(s.operation for s in job.routing),
        routing_source=str(job.source),
        closed_at=job.closed_at,
        wip_by_step=tuple(StepWip(s.operation, n) for s, n in model.book.wip_by_step(job.id)),
    )


def is_done(state: JobState, wip: int, finished: int, quantity: int) -> bool:
    """Not closed, its ordered quantity finished and nothing in WIP: it waits to be closed."""
    return state not in (JobState.CREATED, JobState.CLOSED) and wip == 0 and finished >= quantity


def job_view_of(job: Job) -> str:
    """How the status page shows a job: "done" (counted), "" (closed with nothing left in WIP: not
    at all) or "working" (listed)."""
    if is_done(job.state, job.wip, job.finished, job.quantity):
        return "done"
    return "" if job.state is JobState.CLOSED and not job.wip else "working"


def full_view(model: CellModel, counter: int) -> CellView:
    """The whole view of a freshly loaded model (start-up, and after a reload)."""
    return refresh(CellView(), model, counter, stations=model.tracker.stations, jobs=model.book.jobs, units=True)


def refresh(
    base: CellView,
    model: CellModel,
    counter: int,
    *,
    stations: Iterable[str] = (),
    jobs: Iterable[str] = (),
    units: bool = False,
    gone: Iterable[str] = (),
) -> CellView:
    """``base`` with the named stations and jobs rebuilt from the model (and ``gone`` jobs dropped).

    ``units``: units changed, so audits and the sweeper's hint are rebuilt, and the stations holding
    a pallet (their load instruction and expected program follow the units and jobs).
    """
    book = model.book
    station_ids = set(stations)
    job_ids = set(jobs)
    dropped = [j for j in gone if j in base.jobs]
    if units or job_ids:
        station_ids |= {s for s, st in model.tracker.stations.items() if st.pallet}
    loadable, working, done = base.loadable, base.working, base.done
    if job_ids or dropped:
        kept, busy, finished = set(loadable), set(working), set(done)
        for job_id in job_ids | set(dropped):
            job = book.jobs.get(job_id)
            for group in (kept, busy, finished):
                group.discard(job_id)
            if job is None:
                continue
            if is_load_candidate(job):
                kept.add(job_id)
            shown = job_view_of(job)
            if shown == "working":
                busy.add(job_id)
            elif shown == "done":
                finished.add(job_id)
        loadable, working, done = frozenset(kept), frozenset(busy), frozenset(finished)
    new_stations = base.stations
    if station_ids:
        candidates = model.tracker.load_candidates(book.jobs[j] for j in loadable if j in book.jobs)
        changed = dict(base.stations)
        for station_id in station_ids:
            if station_id in model.tracker.stations:
                changed[station_id] = station_view(model, station_id, candidates)
        new_stations = MappingProxyType(changed)
    new_jobs = base.jobs
    if job_ids or dropped:
        changed_jobs = dict(base.jobs)
        for job_id in dropped:
            del changed_jobs[job_id]
        for job_id in job_ids:
            job = book.jobs.get(job_id)
            if job is not None:
                changed_jobs[job_id] = job_view(model, job)
            else:
                changed_jobs.pop(job_id, None)
        new_jobs = MappingProxyType(changed_jobs)
    audits, oldest = base.audits, base.oldest_activity
    if units:
        audits = tuple(
            AuditView(u.serial, u.job_id, u.last_activity) for u in sorted(book.open_audits(), key=lambda u: u.serial)
        )
        oldest = min((u.last_activity for u in book.live_units() if not u.audit_flagged), default=None)
    return CellView(counter, new_stations, new_jobs, audits, oldest, loadable, working, done)
