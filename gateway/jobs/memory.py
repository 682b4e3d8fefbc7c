"""What memory holds of the cell's jobs and units, and the indexes over them.

The book need not hold everything the cell ever made. A Closed job without live units can be retired
from memory with all of its units (:meth:`JobMemory.retire`); a job that stays can shed its finished and
scrapped units (:meth:`JobMemory.shed`). Both are handed back from storage when a command names them
again (:meth:`JobMemory.adopt`). A job held with some of its units only is *incomplete*
(:meth:`JobMemory.complete`): whatever reads all units of a job (a merge, :meth:`JobMemory.job_cost`) needs
them adopted first. A unit shed in this process keeps its place among the job's units (its position),
so it comes back where it was. Indexes kept by every mutation (units per job, live units, open Lost
Audits, jobs that are not Closed) make the frequent reads cost what is live, not what the cell made
over its history.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from gateway.errors import Reason, Refused
from gateway.jobs.changes import Dirty
from gateway.jobs.model import Cost, Job, JobState, Step, Unit


@dataclass(slots=True)
class JobMemory:
    """The jobs and units in memory. Every change of what it holds, of a unit's status or audit flag, of
    a unit's job or of a job's state goes through its methods, which keep the indexes."""

    dirty: Dirty  # the book's unsaved changes: what is waiting to be saved stays in memory
    jobs: dict[str, Job] = field(default_factory=dict)
    units: dict[str, Unit] = field(default_factory=dict)
    # Indexes, kept by every change below. Each dict is an ordered set of keys (values unused), and
    # every one of them lists units in the order of ``units`` (position: order of insertion).
    _position: dict[str, int] = field(default_factory=dict, init=False)
    _next_position: int = field(default=0, init=False)
    _by_job: dict[str, dict[str, None]] = field(default_factory=dict, init=False)
    _live: dict[str, None] = field(default_factory=dict, init=False)
    _audits: dict[str, None] = field(default_factory=dict, init=False)

    _open_jobs: dict[str, None] = field(default_factory=dict, init=False)
    # Units of held jobs that are not in memory: the position of each one shed here (job -> serial
    # -> position), and the jobs restored from storage with only some of their units.
    _shed: dict[str, dict[str, int]] = field(default_factory=dict, init=False)
    _incomplete: set[str] = field(default_factory=set, init=False)

    # ------------------------------------------------------------------ lookups
    def job(self, job_id: str) -> Job:
        try:
            return self.jobs[job_id]
        except KeyError:
            raise Refused(Reason.NOT_FOUND, f"job {job_id!r} does not exist") from None

    def unit(self, serial: str) -> Unit:
        try:
            return self.units[serial]
        except KeyError:
            raise Refused(Reason.NOT_FOUND, f"serial {serial!r} is not known in this cell") from None

    def units_of(self, job_id: str) -> list[Unit]:
        """The job's units in memory, in the order they came into the book (all of them only for a
        :meth:`complete` job)."""
        return [self.units[s] for s in self._by_job.get(job_id, ())]

    def complete(self, job_id: str) -> bool:
        """Whether memory holds every unit of the job (True for a job the book does not hold)."""
        return job_id not in self._shed and job_id not in self._incomplete

    def mark_incomplete(self, job_ids: Iterable[str]) -> None:
        """These held jobs may have units that only storage holds (used when loading)."""
        self._incomplete.update(j for j in job_ids if j in self.jobs)

    def require_complete(self, job_id: str) -> None:
        if not self.complete(job_id):
            raise ValueError(f"units of job {job_id} are not in memory: adopt them from storage first")

    def live_units(self) -> list[Unit]:
        """Units in WIP (waiting for a step or in one), in the order they came into the book."""
        return [self.units[s] for s in self._live]

    def open_audits(self) -> list[Unit]:
        """Units with an open Lost Audit, in the order they came into the book."""
        return sorted((self.units[s] for s in self._audits), key=lambda u: self._position[u.serial])

    def open_jobs(self) -> list[Job]:
        """Jobs that are not Closed, in the order they came into the book."""
        return [self.jobs[j] for j in self._open_jobs]

    def wip_by_step(self, job_id: str) -> list[tuple[Step, int]]:
        """Live units per step of the job's routing: waiting for the step or in it."""
        job = self.job(job_id)
        counts = [0] * len(job.routing)
        for unit in self.units_of(job_id):
            if unit.live:
                counts[unit.next_step] += 1
        return list(zip(job.routing, counts, strict=True))

    def job_cost(self, job_id: str) -> Cost:
        """Accumulated time of the job's units, scrapped ones included: their time was spent.

        Only for a :meth:`complete` job (ValueError otherwise): adopt its units from storage first.
        """
        self.require_complete(job_id)
        total = Cost()
        for unit in self.units_of(job_id):
            total.add(unit.cost)
        return total

    # ------------------------------------------------------------------ changes
    def put_job(self, job: Job) -> None:
        self.jobs[job.id] = job
        if job.state is not JobState.CLOSED:
            self._open_jobs[job.id] = None

    def reindex_job(self, job: Job) -> None:
        """After a change of the job's state."""
        if job.state is JobState.CLOSED:
            self._open_jobs.pop(job.id, None)
        else:
            self._open_jobs[job.id] = None

    def put_unit(self, unit: Unit, position: int | None = None) -> None:
        """Into memory, at the end of the book's order or back at a ``position`` it had (the caller
        then restores the order of the job's units)."""
        self.units[unit.serial] = unit
        if position is None:
            position = self._next_position
            self._next_position += 1
        self._position[unit.serial] = position
        self._by_job.setdefault(unit.job_id, {})[unit.serial] = None
        if unit.live:
            self._live[unit.serial] = None
        if unit.audit_flagged:
            self._audits[unit.serial] = None

    def reindex(self, unit: Unit) -> None:
        """After a change of the unit's status or audit flag (the job it belongs to stays)."""
        if not unit.live:
            self._live.pop(unit.serial, None)
        if unit.audit_flagged:
            self._audits[unit.serial] = None
        else:
            self._audits.pop(unit.serial, None)

    def move_units(self, serials: Sequence[str], from_job: str, to_job: str) -> None:
        """Re-file units moved between jobs; the target keeps the book's order of its units."""
        source = self._by_job.get(from_job, {})
        for serial in serials:
            source.pop(serial, None)
        if not source:
            self._by_job.pop(from_job, None)
        position = self._position.__getitem__
        target = self._by_job.get(to_job, {})
        merged = heapq.merge(target, sorted(serials, key=position), key=position)
        self._by_job[to_job] = dict.fromkeys(merged)

    # ------------------------------------------------------------------ in and out of memory
    def adopt(self, jobs: Iterable[Job], units: Iterable[Unit]) -> list[str]:
        """Put entities read back from storage into the book, as they were when stored; returns the ids
        of the jobs it took in.

        Entities the book holds already are kept as they are (the book is never older than storage).
        Nothing is marked dirty. A job comes with all of its units, so a job given is :meth:`complete`
        afterwards, whether it was held or not; a unit needs its job, given here or held already.
        A unit shed by this book comes back at its place among the units of its job; any other goes
        after the units the book holds. Raises ValueError (changing nothing) for a unit whose job is
        neither given nor held.
        """
        given = dict((j.id, j) for j in jobs)
        new_jobs = [j for j in given.values() if j.id not in self.jobs]
        new_units = [u for u in dict((u.serial, u) for u in units).values() if u.serial not in self.units]
        known = set(self.jobs).union(given)
        for unit in new_units:
            if unit.job_id not in known:
                raise ValueError(f"unit {unit.serial} comes without its job {unit.job_id}")
        for job in new_jobs:
            self.put_job(job)
        returned: set[str] = set()
        for unit in new_units:
            shed = self._shed.get(unit.job_id)
            position = shed.pop(unit.serial, None) if shed is not None else None
            if position is not None:
                returned.add(unit.job_id)
            self.put_unit(unit, position)
        position_of = self._position.__getitem__
        for job_id in returned:
            self._by_job[job_id] = dict.fromkeys(sorted(self._by_job[job_id], key=position_of))
            if not self._shed[job_id]:
                del self._shed[job_id]
        for job_id in given:
            self._incomplete.discard(job_id)
        return [job.id for job in new_jobs]

    def retirable(self, job_id: str) -> bool:
        """A Closed job with no live unit, no open Lost Audit and nothing of it waiting to be saved
        (pallets aside)."""
        job = self.jobs.get(job_id)
        if job is None or job.state is not JobState.CLOSED or job_id in self.dirty.jobs:
            return False
        serials = self._by_job.get(job_id, {})
        return not any(s in self._live or s in self._audits or s in self.dirty.units for s in serials)

    def retire(self, job_id: str) -> list[str]:
        """Drop a job and all of its units from memory (they stay stored); returns the serials dropped.

        Only for a job :meth:`retirable` says yes to; nothing is marked dirty.
        """
        if not self.retirable(job_id):
            raise ValueError(f"job {job_id} is not retirable")
        serials = list(self._by_job.pop(job_id, {}))
        for serial in serials:
            del self.units[serial]
            del self._position[serial]
            self._audits.pop(serial, None)
        del self.jobs[job_id]
        self._open_jobs.pop(job_id, None)
        self._shed.pop(job_id, None)
        self._incomplete.discard(job_id)
        return serials

    def sheddable(self, serial: str) -> bool:
        """A unit in memory that is finished or scrapped, has no open Lost Audit (a unit that finished
        under one keeps it until an engineer resolves it) and has nothing waiting to be saved."""
        unit = self.units.get(serial)
        return unit is not None and not unit.live and not unit.audit_flagged and serial not in self.dirty.units

    def shed(self, serials: Iterable[str]) -> None:
        """Drop units from memory while their job stays (their rows stay stored); nothing is marked
        dirty. Each keeps its position, so :meth:`adopt` puts it back where it was.

        Only for units :meth:`sheddable` says yes to; raises ValueError (changing nothing) otherwise.
        """
        wanted = list(dict.fromkeys(serials))
        for serial in wanted:
            if not self.sheddable(serial):
                raise ValueError(f"unit {serial} cannot leave memory")
        for serial in wanted:
            unit = self.units.pop(serial)
            held = self._by_job[unit.job_id]
            del held[serial]
            if not held:
                del self._by_job[unit.job_id]
            self._shed.setdefault(unit.job_id, {})[serial] = self._position.pop(serial)
            self._audits.pop(serial, None)
