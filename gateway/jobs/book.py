"""The JobBook: the one owner of part specs, routing templates, jobs and units.

Every command either raises :class:`~gateway.errors.Refused` having changed nothing, or applies whole.
To keep that promise each method checks everything first and mutates after; the Hypothesis state
machine in tests/unit/jobs checks it after every command. Changes are recorded in ``events`` (what
happened, for logs, storage and OPC UA events) and ``dirty`` (which entities the writer must save).

The book need not hold everything the cell ever made. A Closed job without live units can be retired
from memory with all of its units (:meth:`JobBook.retire`); a job that stays can shed its finished and
scrapped units (:meth:`JobBook.shed`). Both are handed back from storage when a command names them
again (:meth:`JobBook.adopt`). A job held with some of its units only is *incomplete*
(:meth:`JobBook.complete`): whatever reads all units of a job (a merge, :meth:`JobBook.job_cost`) needs
them adopted first. A unit shed in this process keeps its place among the job's units (its position),
so it comes back where it was. Indexes kept by every mutation (units per job, live units, open Lost
Audits, jobs that are not Closed) make the frequent reads cost what is live, not what the cell made
over its history.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gateway.errors import Reason, Refused
from gateway.jobs.events import (
    JobEvent,
    JobStateChanged,
    JobTargetReached,
    LostAuditActivity,
    LostAuditFlagged,
    LostAuditResolved,
    StepRecorded,
    UnitFinished,
    UnitScrapped,
    UnitsMoved,
    UnitStarted,
)
from gateway.jobs.layout import CellLayout
from gateway.jobs.model import (
    Cost,
    CostKind,
    Job,
    JobState,
    PartSpec,
    Routing,
    RoutingSource,
    RoutingSourceKind,
    RoutingTemplate,
    Step,
    StepKind,
    TemplateStatus,
    Transition,
    Unit,
    UnitStatus,
    Variance,
    max_quantity,
)

_JOB_PREFIX = "J-"


@dataclass(slots=True)
class Dirty:
    """Entities changed since the writer last saved; it drains these after each batch."""

    jobs: set[str] = field(default_factory=set)
    units: set[str] = field(default_factory=set)
    templates: set[str] = field(default_factory=set)
    specs: set[tuple[str, str]] = field(default_factory=set)

    def clear(self) -> None:
        self.jobs.clear()
        self.units.clear()
        self.templates.clear()
        self.specs.clear()


@dataclass(frozen=True, slots=True)
class JobChanges:
    """What a :class:`JobBook` changed since its last :meth:`~JobBook.drain`: its events in order and the
    ids of what must be saved."""

    events: tuple[JobEvent, ...] = ()
    jobs: frozenset[str] = frozenset()
    units: frozenset[str] = frozenset()
    templates: frozenset[str] = frozenset()
    specs: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True, slots=True)
class NewJob:
    """What a planner asks for: Jobs.CreateJob's arguments."""

    part: str
    revision: str
    quantity: int
    job_id: str = ""
    due: datetime | None = None
    priority: int = 0
    yield_buffer_percent: float | None = None  # None: the cell's default
    operations: tuple[str, ...] = ()  # empty: default template or automatic mode
    pallets: tuple[str, ...] = ()


class JobBook:
    def __init__(
        self,
        layout: CellLayout,
        *,
        require_approved_templates: bool = False,
        default_yield_buffer_percent: float = 2.0,
    ) -> None:
        self.layout = layout
        self.require_approved_templates = require_approved_templates
        self.default_yield_buffer_percent = default_yield_buffer_percent
        self.specs: dict[tuple[str, str], PartSpec] = {}
        self.templates: dict[str, RoutingTemplate] = {}
        self.jobs: dict[str, Job] = {}
        self.units: dict[str, Unit] = {}
        self.transitions: list[Transition] = []
        self.events: list[JobEvent] = []
        self.dirty = Dirty()
        self._job_seq = 0
        # Indexes, kept by every change below. Each dict is an ordered set of keys (values unused), and
        # every one of them lists units in the order of ``units`` (position: order of insertion).
        self._position: dict[str, int] = {}
        self._next_position = 0
        self._by_job: dict[str, dict[str, None]] = {}
        self._live: dict[str, None] = {}
        self._audits: dict[str, None] = {}

        self._open_jobs: dict[str, None] = {}
        # Units of held jobs that are not in memory: the position of each one shed here (job -> serial
        # -> position), and the jobs restored from storage with only some of their units.
        self._shed: dict[str, dict[str, int]] = {}
        self._incomplete: set[str] = set()

    def drain(self) -> JobChanges:
        """Hand over what changed since the last drain (the writer saves it) and start afresh."""
        changes = JobChanges(
            tuple(self.events),
            frozenset(self.dirty.jobs),
            frozenset(self.dirty.units),
            frozenset(self.dirty.templates),
            frozenset(self.dirty.specs),
        )
        self.events = []
        self.transitions.clear()
        self.dirty.clear()
        return changes

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

    def template(self, template_id: str) -> RoutingTemplate:
        try:
            return self.templates[template_id]
        except KeyError:
            raise Refused(Reason.NOT_FOUND, f"routing template {template_id!r} does not exist") from None

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

    def _require_complete(self, job_id: str) -> None:
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

    # ------------------------------------------------------------------ memory
    def _put_job(self, job: Job) -> None:
        self.jobs[job.id] = job
        if job.state is not JobState.CLOSED:
            self._open_jobs[job.id] = None

    def _put_unit(self, unit: Unit, position: int | None = None) -> None:
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

    def _reindex(self, unit: Unit) -> None:
        """After a change of the unit's status or audit flag (the job it belongs to stays)."""
        if not unit.live:
            self._live.pop(unit.serial, None)
        if unit.audit_flagged:
            self._audits[unit.serial] = None
        else:
            self._audits.pop(unit.serial, None)

    def _move_units(self, serials: Sequence[str], from_job: str, to_job: str) -> None:
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

    def adopt(self, jobs: Iterable[Job], units: Iterable[Unit]) -> None:
        """Put entities read back from storage into the book, as they were when stored.

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
            self._put_job(job)
            self.note_job_id(job.id)
        returned: set[str] = set()
        for unit in new_units:
            shed = self._shed.get(unit.job_id)
            position = shed.pop(unit.serial, None) if shed is not None else None
            if position is not None:
                returned.add(unit.job_id)
            self._put_unit(unit, position)
        position_of = self._position.__getitem__
        for job_id in returned:
            self._by_job[job_id] = dict.fromkeys(sorted(self._by_job[job_id], key=position_of))
            if not self._shed[job_id]:
                del self._shed[job_id]
        for job_id in given:
            self._incomplete.discard(job_id)

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
        self._require_complete(job_id)
        total = Cost()
        for unit in self.units_of(job_id):
            total.add(unit.cost)
        return total

    def has_usable_template(self, part: str, revision: str) -> bool:
        return any(t.usable for t in self.templates.values() if t.part == part and t.revision == revision)

    # ------------------------------------------------------------------ templates
    def _spec(self, part: str, revision: str) -> PartSpec:
        spec = self.specs.get((part, revision))
        if spec is None:
            spec = self.specs[(part, revision)] = PartSpec(part, revision)
            self.dirty.specs.add(spec.key)
        return spec

    def create_template(self, part: str, revision: str, operations: Sequence[str], at: datetime) -> RoutingTemplate:
        _require_text(part=part, revision=revision)
        return self._new_template(part, revision, self.layout.resolve(operations), at)

    def _new_template(self, part: str, revision: str, steps: Routing, at: datetime) -> RoutingTemplate:
        spec = self._spec(part, revision)
        spec.template_versions += 1
        template = RoutingTemplate(
            id=f"{part}/{revision}/v{spec.template_versions}",
            part=part,
            revision=revision,
            version=spec.template_versions,
            steps=steps,
            created_at=at,
        )
        self.templates[template.id] = template
        self.dirty.templates.add(template.id)
        self.dirty.specs.add(spec.key)
        return template

    def edit_template(self, template_id: str, operations: Sequence[str]) -> RoutingTemplate:
        template = self.template(template_id)
        if template.status is TemplateStatus.FROZEN:
            raise Refused(
                Reason.TEMPLATE_FROZEN,
                f"template {template_id} is referenced by a job and frozen; deprecate it and create a new version",
            )
        if template.status is not TemplateStatus.DRAFT:
            raise Refused(
                Reason.INVALID_TRANSITION,
                f"template {template_id} is {template.status.value}; only a Draft can be edited, create a new version",
            )
        template.steps = self.layout.resolve(operations)
        self.dirty.templates.add(template_id)
        return template

    def approve_template(self, template_id: str) -> RoutingTemplate:
        template = self.template(template_id)
        if template.status is not TemplateStatus.DRAFT:
            raise Refused(
                Reason.INVALID_TRANSITION,
                f"template {template_id} is {template.status.value}; only a Draft can be approved",
            )
        template.status = TemplateStatus.APPROVED
        self.dirty.templates.add(template_id)
        return template

    def set_default_template(self, part: str, revision: str, template_id: str) -> PartSpec:
        template = self.template(template_id)
        if (template.part, template.revision) != (part, revision):
            raise Refused(
                Reason.INVALID_ARGUMENT,
                f"template {template_id} belongs to {template.part} rev {template.revision}, not {part} rev {revision}",
            )
        if not template.usable:
            raise Refused(
                Reason.TEMPLATE_NOT_APPROVED,
                f"template {template_id} is {template.status.value}; only an approved template can be default",
            )
        spec = self._spec(part, revision)
        spec.default_template_id = template_id
        self.dirty.specs.add(spec.key)
        return spec

    def deprecate_template(self, template_id: str) -> RoutingTemplate:
        template = self.template(template_id)
        if template.status is TemplateStatus.DEPRECATED:
            raise Refused(Reason.INVALID_TRANSITION, f"template {template_id} is already deprecated")
        template.status = TemplateStatus.DEPRECATED
        self.dirty.templates.add(template_id)
        spec = self.specs.get((template.part, template.revision))
        if spec is not None and spec.default_template_id == template_id:
            # The part falls back to automatic mode until another template is made default.
            spec.default_template_id = ""
            self.dirty.specs.add(spec.key)
        return template

    def promote_routing(self, job_id: str, at: datetime) -> RoutingTemplate:
        """A job's routing becomes a new Draft template of its part revision, ready for approval.

        The job's own snapshot is copied, step for step, even if the process configuration changed since.
        """
        job = self.job(job_id)
        return self._new_template(job.part, job.revision, job.routing, at)

    # ------------------------------------------------------------------ jobs
    def _next_job_id(self) -> str:
        while True:
            self._job_seq += 1
            candidate = f"{_JOB_PREFIX}{self._job_seq:04d}"
            if candidate not in self.jobs:
                return candidate

    def note_job_id(self, job_id: str) -> None:
        """Keep generated ids ahead of every stored one (used when loading)."""
        number = job_number(job_id)
        if number is not None:
            self.note_job_seq(number)

    def note_job_seq(self, number: int) -> None:
        """Generated ids continue after ``J-<number>`` (the highest generated-form id stored)."""
        self._job_seq = max(self._job_seq, number)

    def _routing_for(self, request: NewJob) -> tuple[Routing, RoutingSource, RoutingTemplate | None]:
        if request.operations:
            return self.layout.resolve(request.operations), RoutingSource(RoutingSourceKind.CUSTOM), None
        spec = self.specs.get((request.part, request.revision))
        if spec is not None and spec.default_template_id:
            template = self.templates[spec.default_template_id]
            return template.steps, RoutingSource(RoutingSourceKind.TEMPLATE, template.id), template
        if not self.layout.process:
            raise Refused(Reason.NOT_FOUND, "the process configuration has no operations")
        return self.layout.process, RoutingSource(RoutingSourceKind.AUTOMATIC), None

    def create_job(self, request: NewJob, at: datetime, actor: str) -> Job:
        _require_text(part=request.part, revision=request.revision)
        if request.quantity < 1:
            raise Refused(Reason.INVALID_ARGUMENT, f"quantity must be at least 1, not {request.quantity}")
        buffer = (
            self.default_yield_buffer_percent if request.yield_buffer_percent is None else request.yield_buffer_percent
        )
        if not 0 <= buffer <= 100:
            raise Refused(Reason.INVALID_ARGUMENT, f"yield buffer must be 0..100 %, not {buffer}")
        if request.job_id and request.job_id in self.jobs:
            raise Refused(Reason.DUPLICATE_ID, f"job {request.job_id} exists already")
        pallets = self.layout.check_pallets(request.pallets)
        routing, source, template = self._routing_for(request)
        job = Job(
            id=request.job_id or self._next_job_id(),
            part=request.part,
            revision=request.revision,
            quantity=request.quantity,
            yield_buffer_percent=buffer,
            due=request.due,
            priority=request.priority,
            pallets=pallets,
            routing=routing,
            source=source,
            created_at=at,
        )
        self.note_job_id(job.id)
        self.jobs[job.id] = job
        self.dirty.jobs.add(job.id)
        if template is not None and template.status is TemplateStatus.APPROVED:
            template.status = TemplateStatus.FROZEN
            self.dirty.templates.add(template.id)
        self._transition(job, JobState.CREATED, f"created ({source})", actor, at, new=True)
        return job

    def replace_routing(self, job_id: str, operations: Sequence[str], actor: str, at: datetime) -> Job:
        job = self.job(job_id)
        if job.state is not JobState.CREATED:
            raise Refused(
                Reason.INVALID_TRANSITION,
                f"job {job_id} is {job.state.value}; its routing was locked at release",
            )
        job.routing = self.layout.resolve(operations)
        job.source = RoutingSource(RoutingSourceKind.CUSTOM)
        self.dirty.jobs.add(job_id)
        return job

    def release(self, job_id: str, actor: str, at: datetime, reason: str = "") -> Job:
        job = self.job(job_id)
        if job.state is not JobState.CREATED:
            raise _state_refusal(job, "release")
        if self.require_approved_templates and not self.has_usable_template(job.part, job.revision):
            raise Refused(
                Reason.APPROVAL_REQUIRED,
                f"{job.part} rev {job.revision} has no approved routing template, and this cell requires "
                "one for production",
            )
        job.released_at = at
        self._transition(job, JobState.RELEASED, reason or "released", actor, at)
        return job

    def hold(self, job_id: str, reason: str, actor: str, at: datetime) -> Job:
        job = self.job(job_id)
        if job.state not in (JobState.RELEASED, JobState.RUNNING):
            raise _state_refusal(job, "hold")
        job.held_from = job.state
        self._transition(job, JobState.HOLD, reason, actor, at)
        return job

    def resume(self, job_id: str, actor: str, at: datetime, reason: str = "") -> Job:
        job = self.job(job_id)
        if job.state is not JobState.HOLD or job.held_from is None:
            raise _state_refusal(job, "resume")
        target, job.held_from = job.held_from, None
        self._transition(job, target, reason or "resumed", actor, at)
        return job

    def close(self, job_id: str, reason: str, actor: str, at: datetime) -> Variance:
        """Technical completion or short-close: frees the unstarted quantity, reports the variance.

        Nothing new starts in a Closed job; its units still in WIP may finish their routing. So a job
        on hold with units in WIP is not closed (:meth:`check_close`): that would release them.
        """
        job = self.check_close(job_id)
        variance = Variance(
            job_id=job.id,
            ordered=job.quantity,
            started=job.started,
            finished=job.finished,
            scrapped=job.scrapped,
            wip=job.wip,
            freed=max(0, job.quantity - (job.started - job.scrapped)),
        )
        job.held_from = None
        job.closed_at = at
        self._transition(job, JobState.CLOSED, reason or "closed", actor, at)
        return variance

    def check_close(self, job_id: str) -> Job:
        """May the job be closed (or backed out)? Changes nothing."""
        job = self.job(job_id)
        if job.state is JobState.CLOSED:
            raise Refused(Reason.JOB_CLOSED, f"job {job_id} is closed already")
        if job.state is JobState.HOLD and job.wip:
            raise Refused(
                Reason.JOB_ON_HOLD,
                f"job {job_id} is on hold with {job.wip} unit(s) in WIP: closing it would let them move on; "
                "resume it (or scrap them) first, so the hold is released formally",
            )
        return job

    def _transition(self, job: Job, to: JobState, reason: str, actor: str, at: datetime, *, new: bool = False) -> None:
        """Move a job to ``to`` and record it; ``new`` for a job that did not exist before."""
        before = None if new else job.state
        job.state = to
        if to is JobState.CLOSED:
            self._open_jobs.pop(job.id, None)
        else:
            self._open_jobs[job.id] = None
        self.dirty.jobs.add(job.id)
        self.transitions.append(Transition(job.id, at, actor, before, to, reason))
        self.events.append(JobStateChanged(job.id, before, to, reason, actor, at))

    # ------------------------------------------------------------------ split and merge
    def split(
        self,
        job_id: str,
        serials: Sequence[str],
        operations: Sequence[str],
        actor: str,
        at: datetime,
        quantity: int = 0,
    ) -> Job:
        """Move chosen units to a child job ``<id>-R<n>`` with its own routing, their cost with them
        (each unit carries its own accumulated time, so the child's cost is exactly its units'); or,
        given a ``quantity`` instead, move that many of the parent's unstarted units to a child."""
        job = self.job(job_id)
        if job.state is JobState.CLOSED:
            raise Refused(Reason.JOB_CLOSED, f"job {job_id} is closed")
        if quantity and serials:
            raise Refused(Reason.INVALID_ARGUMENT, "name the serials to split off or a quantity, not both")
        if quantity:
            return self._split_quantity(job, quantity, operations, actor, at)
        if not serials:
            raise Refused(Reason.INVALID_ARGUMENT, "name at least one serial to split off, or a quantity")
        if len(set(serials)) != len(serials):
            raise Refused(Reason.INVALID_ARGUMENT, "a serial is named twice")
        units = [self.unit(s) for s in serials]
        for unit in units:
            if unit.job_id != job_id:
                raise Refused(Reason.INVALID_ARGUMENT, f"{unit.serial} belongs to {unit.job_id}, not {job_id}")
            if not unit.live:
                raise Refused(Reason.INVALID_TRANSITION, f"{unit.serial} is {unit.status.value}; only WIP units move")
            if unit.status is UnitStatus.IN_STEP:
                raise Refused(
                    Reason.INVALID_TRANSITION,
                    f"{unit.serial} is in {job.routing[unit.next_step].operation} at {unit.station}; "
                    "split it after it leaves",
                )
        if operations:
            routing = self.layout.resolve(operations)
            positions = [0] * len(units)
        else:
            offset = min(u.next_step for u in units)
            routing = job.routing[offset:]
            positions = [u.next_step - offset for u in units]
        child_id = self._free_child_id(job)
        count = len(units)
        reached = job.target_reached
        child = self._add_child(
            job,
            child_id,
            count,
            routing,
            RoutingSource(RoutingSourceKind.CUSTOM),
            f"split from {job.id}: {count} unit(s)",
            actor,
            at,
        )
        job.quantity = max(0, job.quantity - count)
        job.started -= count
        for unit, position in zip(units, positions, strict=True):
            unit.job_id = child_id
            unit.next_step = position
            unit.failed_attempts = 0
            self.dirty.units.add(unit.serial)
        self._move_units([u.serial for u in units], job.id, child_id)
        self.events.append(UnitsMoved(tuple(serials), job.id, child_id, at))
        self._target_check(job, reached, at)
        return child

    def _split_quantity(self, job: Job, quantity: int, operations: Sequence[str], actor: str, at: datetime) -> Job:
        """A child job for ``quantity`` of the parent's ordered units not started yet (e.g. a batch to
        run on another routing); the parent's order shrinks by as much. The child plans no buffer."""
        if job.state is JobState.CREATED:
            raise Refused(Reason.JOB_NOT_RELEASED, f"job {job.id} is not released; change its quantity instead")
        if quantity < 0:
            raise Refused(Reason.INVALID_ARGUMENT, f"quantity must be at least 1, not {quantity}")
        if quantity > job.unstarted:
            raise Refused(
                Reason.INVALID_ARGUMENT,
                f"job {job.id} has {job.unstarted} ordered unit(s) not started; {quantity} cannot be split off",
            )
        routing = self.layout.resolve(operations) if operations else job.routing
        child_id = self._free_child_id(job)
        reached = job.target_reached
        source = job.source if not operations else RoutingSource(RoutingSourceKind.CUSTOM)
        why = f"split from {job.id}: {quantity} unit(s) not started"
        child = self._add_child(job, child_id, 0, routing, source, why, actor, at, quantity=quantity)
        job.quantity -= quantity
        self._target_check(job, reached, at)
        return child

    def _free_child_id(self, job: Job) -> str:
        child_id = f"{job.id}-R{job.children + 1}"
        if child_id in self.jobs:
            raise Refused(Reason.DUPLICATE_ID, f"job {child_id} exists already")
        return child_id

    def _add_child(
        self,
        parent: Job,
        child_id: str,
        started: int,
        routing: Routing,
        source: RoutingSource,
        why: str,
        actor: str,
        at: datetime,
        *,
        quantity: int | None = None,
    ) -> Job:
        """A child job of ``parent`` (no buffer: extras are never planned), Running with the ``started``
        units about to move to it, else Released. A hold blocks all movement until it is released: the
        child of a held job is held, and resumes to the state it would have had."""
        parent.children += 1
        child = Job(
            id=child_id,
            part=parent.part,
            revision=parent.revision,
            quantity=started if quantity is None else quantity,
            yield_buffer_percent=0.0,
            due=parent.due,
            priority=parent.priority,
            pallets=parent.pallets,
            routing=routing,
            source=source,
            created_at=at,
            parent_id=parent.id,
            started=started,
            released_at=at,
        )
        self.jobs[child_id] = child
        self.dirty.jobs.update((parent.id, child_id))
        state = JobState.RUNNING if started else JobState.RELEASED
        if parent.state is JobState.HOLD:
            child.held_from = state
            self._transition(child, JobState.HOLD, f"{why}, which is on hold", actor, at, new=True)
        else:
            self._transition(child, state, why, actor, at, new=True)
        return child

    def merge(self, target_id: str, source_id: str, actor: str, at: datetime) -> Job:
        """Fold the source job into the target: same part number and revision only."""
        if target_id == source_id:
            raise Refused(Reason.INVALID_ARGUMENT, "a job cannot be merged into itself")
        target, source = self.job(target_id), self.job(source_id)
        for job in (target, source):
            if job.state is JobState.CLOSED:
                raise Refused(Reason.JOB_CLOSED, f"job {job.id} is closed")
            if job.state is JobState.CREATED:
                raise Refused(Reason.JOB_NOT_RELEASED, f"job {job.id} is not released")
        if (target.part, target.revision) != (source.part, source.revision):
            raise Refused(
                Reason.MIXED_MERGE,
                f"cannot merge {source.id} ({source.part} rev {source.revision}) into {target.id} "
                f"({target.part} rev {target.revision}): only the same part number and revision merge",
            )
        if source.state is JobState.HOLD and target.state is not JobState.HOLD:
            raise Refused(
                Reason.JOB_ON_HOLD,
                f"job {source.id} is on hold and {target.id} is {target.state.value}: the merge would release "
                f"its held units; resume {source.id} first, or hold {target.id}",
            )
        cap = max_quantity(target.quantity + source.quantity, target.yield_buffer_percent)
        in_cap = target.started + source.started - target.scrapped - source.scrapped
        if in_cap > cap:
            raise Refused(
                Reason.ORDER_FULFILLED,
                f"merging {source.id} into {target.id} would put {in_cap} started units under a cap of {cap} "
                f"(ordered {target.quantity + source.quantity} + {target.yield_buffer_percent:g} % buffer)",
            )
        # Every unit of the source moves, and the target's units keep the book's order: both are
        # needed whole (CellModel.references names them when they are not).
        self._require_complete(source_id)
        self._require_complete(target_id)
        units = self.units_of(source_id)
        positions: dict[str, int] = {}
        target_ops = [s.operation for s in target.routing]
        for unit in units:
            if not unit.live:
                positions[unit.serial] = len(target.routing)
                continue
            if unit.status is UnitStatus.IN_STEP:
                raise Refused(
                    Reason.INVALID_TRANSITION,
                    f"{unit.serial} is in a step at {unit.station}; merge after it leaves",
                )
            needed = source.routing[unit.next_step].operation
            if needed not in target_ops:
                raise Refused(
                    Reason.INVALID_PROCESS_STEP,
                    f"{unit.serial} needs {needed} next, which {target.id}'s routing does not contain",
                )
            positions[unit.serial] = target_ops.index(needed)
        reached = target.target_reached
        target.quantity += source.quantity
        target.started += source.started
        target.scrapped += source.scrapped
        target.finished += source.finished
        for unit in units:
            unit.job_id = target_id
            unit.next_step = positions[unit.serial]
            self.dirty.units.add(unit.serial)
        self._move_units([u.serial for u in units], source_id, target_id)
        source.quantity = source.started = source.scrapped = source.finished = 0
        if target.state is JobState.RELEASED and target.started:
            self._transition(target, JobState.RUNNING, f"merged running units of {source.id}", actor, at)
        elif target.state is JobState.HOLD and target.held_from is JobState.RELEASED and target.started:
            target.held_from = JobState.RUNNING  # it has started units now: Resume returns it to Running
        self.dirty.jobs.update((target_id, source_id))
        source.closed_at = at
        source.held_from = None
        self._transition(source, JobState.CLOSED, f"merged into {target.id}", actor, at)
        if units:
            self.events.append(UnitsMoved(tuple(u.serial for u in units), source.id, target.id, at))
        self._target_check(target, reached, at)
        return target

    def _target_check(self, job: Job, reached_before: bool, at: datetime) -> None:
        """Raise JobTargetReached when the job's finished units have just reached its ordered quantity."""
        if job.target_reached and not reached_before:
            self.events.append(JobTargetReached(job.id, job.quantity, job.finished, at))

    # ------------------------------------------------------------------ unit movement
    def check_new_units(self, job_id: str, station: str, count: int = 1, pallet: str = "") -> Job:
        """May ``count`` new units of the job enter its first step at this station? Changes nothing."""
        job = self.job(job_id)
        _require_runnable(job)
        if count < 1:
            raise Refused(Reason.INVALID_ARGUMENT, f"a load needs a quantity of at least 1, not {count}")
        self._check_route(job, 0, station, what=f"a new unit of {job.id}")
        if pallet and not job.allows_pallet(pallet):
            raise Refused(
                Reason.WRONG_RESOURCE,
                f"job {job.id} may run only on pallets {', '.join(job.pallets)}, not {pallet}",
            )
        if count > job.room:
            raise Refused(
                Reason.ORDER_FULFILLED,
                f"job {job.id} is fulfilled: {job.started - job.scrapped} of max {job.max_quantity} "
                f"started (ordered {job.quantity} + buffer); {count} more would exceed the cap",
            )
        return job

    def check_serials_free(self, serials: Iterable[str]) -> None:
        seen: set[str] = set()
        for serial in serials:
            if not serial or serial != serial.strip():
                raise Refused(Reason.INVALID_ARGUMENT, f"serial {serial!r} is empty or has spaces around it")
            if serial in self.units or serial in seen:
                raise Refused(Reason.DUPLICATE_SERIAL, f"serial {serial} exists already in this cell")
            seen.add(serial)

    def start_unit(self, job_id: str, serial: str, station: str, at: datetime) -> Unit:
        """A new unit enters the job's first step (StartUnit, or the load part of LoadCompleted)."""
        job = self.check_new_units(job_id, station)
        self.check_serials_free([serial])
        unit = Unit(
            serial=serial,
            job_id=job_id,
            next_step=0,
            status=UnitStatus.IN_STEP,
            started_at=at,
            last_activity=at,
            station=station,
            entered_at=at,
        )
        self._put_unit(unit)
        job.started += 1
        self.dirty.units.add(serial)
        self.dirty.jobs.add(job_id)
        self.events.append(UnitStarted(serial, job_id, station, at))
        if job.state is JobState.RELEASED:
            self._transition(job, JobState.RUNNING, f"first unit {serial} started at {station}", "cell", at)
        return unit

    def next_step(self, unit: Unit) -> Step | None:
        job = self.jobs[unit.job_id]
        return job.routing[unit.next_step] if unit.next_step < len(job.routing) else None

    def check_entry(self, serial: str, station: str, program: str | None = None) -> tuple[Unit, Job, Step]:
        """May this unit enter its next step at this station (with this program)? Changes nothing."""
        unit = self.unit(serial)
        job = self.jobs[unit.job_id]
        _require_movable(job)
        if not unit.live:
            raise Refused(Reason.INVALID_PROCESS_STEP, f"{serial} is {unit.status.value}; it has no step left to enter")
        if unit.status is UnitStatus.IN_STEP:
            raise Refused(
                Reason.INVALID_PROCESS_STEP,
                f"{serial} is in {job.routing[unit.next_step].operation} at {unit.station} already",
            )
        step = self._check_route(job, unit.next_step, station, what=serial, unit=unit)
        if program is not None and step.program and program.casefold() != step.program.casefold():
            raise Refused(
                Reason.WRONG_PROGRAM,
                f"{serial} needs program {step.program} for {step.operation}, not {program}",
            )
        return unit, job, step

    def enter_step(self, serial: str, station: str, at: datetime, program: str | None = None) -> Unit:
        unit, _, _ = self.check_entry(serial, station, program)
        unit.status = UnitStatus.IN_STEP
        unit.station = station
        unit.entered_at = at
        self._active(unit, at, station)
        return unit

    def _active(self, unit: Unit, at: datetime, station: str = "") -> None:
        """Activity on a unit: its idle time restarts. An open Lost Audit stays open until an engineer
        resolves it (found or lost); the activity is reported (LostAuditActivity) so they know."""
        unit.last_activity = at
        self.dirty.units.add(unit.serial)
        if unit.audit_flagged:
            self.events.append(LostAuditActivity(unit.serial, unit.job_id, station or unit.station, at))

    def touch(self, serials: Iterable[str], station: str, at: datetime) -> None:
        """A movement of the pallet these units are on (arrival, departure): activity for each live one."""
        for serial in serials:
            unit = self.units.get(serial)
            if unit is not None and unit.live and unit.last_activity != at:
                self._active(unit, at, station)

    def add_pallet_time(self, serial: str, kind: CostKind, seconds: float | None) -> None:
        """A unit's share of its pallet's time at a station (None: not measurable, counted unknown)."""
        unit = self.units[serial]
        unit.cost.add_elapsed(kind, seconds)
        self.dirty.units.add(serial)

    def step_served_last(self, unit: Unit, groups: frozenset[str]) -> Step | None:
        """The step of the unit's routing done (or being done) at a station of these groups most recently:
        the one it is in or needs, else the last one before it."""
        routing = self.jobs[unit.job_id].routing
        for index in range(min(unit.next_step, len(routing) - 1), -1, -1):
            if routing[index].group in groups:
                return routing[index]
        return None

    def movement_held(self, unit: Unit) -> bool:
        """Whether the end of a step the unit had not begun must leave it where it is: its job is on
        hold, which blocks all movement until released (a step begun before the hold may end)."""
        return unit.status is not UnitStatus.IN_STEP and self.jobs[unit.job_id].state is JobState.HOLD

    def _check_route(self, job: Job, index: int, station: str, *, what: str, unit: Unit | None = None) -> Step:
        info = self.layout.station(station)
        step = job.routing[index]
        if step.group in info.groups:
            return step
        served = [i for i, s in enumerate(job.routing) if s.group in info.groups]
        if served:
            other = job.routing[served[0]]
            if unit is not None and unit.failed_attempts:
                why = f"it failed {step.operation} and must repeat it or be split to rework"
            elif served[0] > index:
                why = f"it must pass {step.operation} {step.name} ({step.group}) first"
            else:
                why = f"it passed {other.operation} already and needs {step.operation} {step.name} next"
            raise Refused(
                Reason.INVALID_PROCESS_STEP,
                f"{what} cannot enter {other.operation} at {station}: {why}",
            )
        raise Refused(
            Reason.WRONG_RESOURCE,
            f"station {station} ({', '.join(sorted(info.groups))}) does not serve {step.operation} "
            f"{step.name}, which {what} needs next (group {step.group})",
        )

    def leave_step(
        self,
        serial: str,
        station: str,
        passed: bool,
        at: datetime,
        elapsed: float | None,
        flags: Sequence[str] = (),
    ) -> StepRecorded | None:
        """A fact: the unit left its step, passed or failed. Always recorded; never refused by job state.

        If the unit was not in the step (an end without a start) the result still counts when the
        station serves the step the unit needs, with the elapsed time unknown; otherwise nothing moves
        and None is returned, for the caller to flag.
        """
        unit = self.unit(serial)
        job = self.jobs[unit.job_id]
        if not unit.live or self.movement_held(unit):
            return None
        step = job.routing[unit.next_step]
        entered_at: datetime | None
        if unit.status is UnitStatus.IN_STEP:
            entered_at = unit.entered_at
        else:
            if step.group not in self.layout.station(station).groups:
                return None
            entered_at = None
        record = StepRecorded(
            serial=serial,
            job=job.id,
            step_index=unit.next_step,
            operation=step.operation,
            station=station,
            entered_at=entered_at,
            left_at=at,
            passed=passed,
            elapsed=elapsed,
            expected=step.expected_seconds,
            labor=step.kind.is_labor,
            flags=tuple(flags),
        )
        _accumulate(unit.cost, record, step.kind)
        unit.status = UnitStatus.WAITING
        unit.station = ""
        unit.entered_at = None
        self._active(unit, at, station)
        if passed:
            unit.next_step += 1
            unit.failed_attempts = 0
        else:
            unit.failed_attempts += 1
        self.events.append(record)
        self.dirty.units.add(serial)
        if unit.next_step >= len(job.routing):
            unit.status = UnitStatus.FINISHED
            self._reindex(unit)
            reached = job.target_reached
            job.finished += 1
            self.dirty.jobs.add(job.id)
            self.events.append(UnitFinished(serial, job.id, at))
            self._target_check(job, reached, at)
        return record

    def scrap(self, serial: str, reason: str, at: datetime) -> Unit:
        unit = self.unit(serial)
        if not unit.live:
            raise Refused(
                Reason.INVALID_TRANSITION,
                f"{serial} is {unit.status.value}; only a unit in WIP can be scrapped",
            )
        job = self.jobs[unit.job_id]
        unit.status = UnitStatus.SCRAPPED
        unit.station = ""
        unit.entered_at = None
        unit.last_activity = at
        unit.audit_flagged = False
        self._reindex(unit)
        job.scrapped += 1
        self.dirty.units.add(serial)
        self.dirty.jobs.add(job.id)
        self.events.append(UnitScrapped(serial, job.id, reason, at))
        return unit

    # ------------------------------------------------------------------ stale WIP
    def flag_stale(self, now: datetime, threshold: timedelta) -> list[LostAuditFlagged]:
        """Flag live units idle longer than the threshold for a Lost Audit, each once."""
        flagged: list[LostAuditFlagged] = []
        for serial in self._live:
            unit = self.units[serial]
            if not unit.audit_flagged and now - unit.last_activity > threshold:
                unit.audit_flagged = True
                self._audits[serial] = None
                self.dirty.units.add(unit.serial)
                event = LostAuditFlagged(
                    unit.serial, unit.job_id, unit.station, (now - unit.last_activity).total_seconds(), now
                )
                flagged.append(event)
                self.events.append(event)
        return flagged

    def resolve_audit(self, serial: str, outcome: str, actor: str, at: datetime) -> Unit:
        unit = self.unit(serial)
        word = outcome.strip().casefold()
        if word not in ("found", "lost"):
            raise Refused(Reason.INVALID_ARGUMENT, f"outcome must be 'found' or 'lost', not {outcome!r}")
        if not unit.audit_flagged:
            raise Refused(Reason.INVALID_TRANSITION, f"{serial} has no open Lost Audit")
        if word == "lost":
            self.scrap(serial, "lost", at)
        else:
            unit.audit_flagged = False
            self._audits.pop(serial, None)
            unit.last_activity = at
            self.dirty.units.add(serial)
        self.events.append(LostAuditResolved(serial, unit.job_id, word, actor, at))
        return unit


def job_number(job_id: str) -> int | None:
    """``n`` for a job id of the generated form ``J-<digits>``, None for any other id."""
    digits = job_id[len(_JOB_PREFIX) :]
    if job_id.startswith(_JOB_PREFIX) and digits.isdigit():
        return int(digits)
    return None


def _accumulate(cost: Cost, record: StepRecorded, kind: StepKind) -> None:
    """A step's planned time counts in its category. Its measured time counts for labor and
    inspection steps (at a load station: the pallet's time there up to the report, shared); a machine
    or wash step's elapsed time is the pallet's time at the station instead, added when the pallet
    leaves (:meth:`JobBook.add_pallet_time`), as is the rest of its time at a load station."""
    category = kind.cost_kind
    cost.add_expected(category, record.expected)
    if category in (CostKind.LABOR, CostKind.INSPECTION):
        cost.add_elapsed(category, record.elapsed)


def _require_text(**values: str) -> None:
    for name, value in values.items():
        if not value or not value.strip():
            raise Refused(Reason.INVALID_ARGUMENT, f"{name} must not be empty")


def _require_runnable(job: Job) -> None:
    """New transactions need a released, running job: not Created, not on Hold, not Closed."""
    if job.state is JobState.CREATED:
        raise Refused(Reason.JOB_NOT_RELEASED, f"job {job.id} is not released yet")
    if job.state is JobState.HOLD:
        raise Refused(Reason.JOB_ON_HOLD, f"job {job.id} is on hold; nothing new starts until it is resumed")
    if job.state is JobState.CLOSED:
        raise Refused(Reason.JOB_CLOSED, f"job {job.id} is closed")


def _require_movable(job: Job) -> None:
    """May a unit already in WIP enter its next step? Not while its job is on hold; a Closed job's
    units in WIP may finish their routing (nothing new starts in it, but nothing is stranded)."""
    if job.state is JobState.CREATED:
        raise Refused(Reason.JOB_NOT_RELEASED, f"job {job.id} is not released yet")
    if job.state is JobState.HOLD:
        raise Refused(Reason.JOB_ON_HOLD, f"job {job.id} is on hold; its units do not move until it is resumed")


def _state_refusal(job: Job, action: str) -> Refused:
    reason = {
        JobState.CLOSED: Reason.JOB_CLOSED,
        JobState.HOLD: Reason.JOB_ON_HOLD,
        JobState.CREATED: Reason.JOB_NOT_RELEASED,
    }.get(job.state, Reason.INVALID_TRANSITION)
    return Refused(reason, f"job {job.id} is {job.state.value}; it cannot be {_past(action)}")


def _past(action: str) -> str:
    return {"release": "released", "hold": "put on hold", "resume": "resumed"}.get(action, action + "d")
