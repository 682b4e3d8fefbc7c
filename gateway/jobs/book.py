"""The JobBook: the one owner of part specs, routing templates, jobs and units.

Every command either raises :class:`~gateway.errors.Refused` having changed nothing, or applies whole.
To keep that promise each command checks everything first and mutates after; the Hypothesis state
machine in tests/unit/jobs checks it after every command. Changes are recorded in ``events`` (what
happened, for logs, storage and OPC UA events) and ``dirty`` (which entities the writer must save),
handed over by :meth:`JobBook.drain`.

The book is the aggregate's public face; the rules live at their seams:

- :mod:`gateway.jobs.templates`: part specs and routing templates (a :class:`TemplateRegistry` the book holds);
- :mod:`gateway.jobs.lifecycle`: creating jobs and the job state machine;
- :mod:`gateway.jobs.split_merge`: split and merge;
- :mod:`gateway.jobs.movement`: units entering and leaving steps, route rules, the stale-WIP audit;
- :mod:`gateway.jobs.memory`: what memory holds (a :class:`JobMemory` with its indexes; retire, shed, adopt);
- :mod:`gateway.jobs.changes`: the events and dirty ids since the last drain (a :class:`ChangeLog`).

This module also stays the public home of :class:`NewJob` and :class:`JobChanges`, what the book's
commands take and hand over.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from gateway.jobs import lifecycle, movement, split_merge
from gateway.jobs.changes import ChangeLog, Dirty, JobChanges
from gateway.jobs.events import JobEvent, LostAuditFlagged, StepRecorded
from gateway.jobs.layout import CellLayout
from gateway.jobs.lifecycle import JobIds, NewJob
from gateway.jobs.memory import JobMemory
from gateway.jobs.model import (
    Cost,
    CostKind,
    Job,
    PartSpec,
    RoutingTemplate,
    Step,
    Unit,
    Variance,
)
from gateway.jobs.templates import TemplateRegistry

__all__ = ["JobBook", "JobChanges", "NewJob"]


class JobBook:
    """The jobs aggregate. It holds the layout and the cell's settings (both may be swapped, as a replay
    does) and its collaborators, and hands each command to the rules of its seam."""

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
        self._log = ChangeLog()
        self._registry = TemplateRegistry(self._log.dirty)
        self._memory = JobMemory(self._log.dirty)
        self._ids = JobIds()

    # ------------------------------------------------------------------ state
    @property
    def specs(self) -> dict[tuple[str, str], PartSpec]:
        return self._registry.specs

    @property
    def templates(self) -> dict[str, RoutingTemplate]:
        return self._registry.templates

    @property
    def jobs(self) -> dict[str, Job]:
        return self._memory.jobs

    @property
    def units(self) -> dict[str, Unit]:
        return self._memory.units

    @property
    def events(self) -> list[JobEvent]:
        """What happened since the last :meth:`drain`, in order."""
        return self._log.events

    @property
    def dirty(self) -> Dirty:
        """Which entities changed since the last :meth:`drain`."""
        return self._log.dirty

    def drain(self) -> JobChanges:
        """Hand over what changed since the last drain (the writer saves it) and start afresh."""
        return self._log.drain()

    # ------------------------------------------------------------------ lookups
    def job(self, job_id: str) -> Job:
        return self._memory.job(job_id)

    def unit(self, serial: str) -> Unit:
        return self._memory.unit(serial)

    def template(self, template_id: str) -> RoutingTemplate:
        return self._registry.template(template_id)

    def units_of(self, job_id: str) -> list[Unit]:
        """The job's units in memory, in the order they came into the book (all of them only for a
        :meth:`complete` job)."""
        return self._memory.units_of(job_id)

    def complete(self, job_id: str) -> bool:
        """Whether memory holds every unit of the job (True for a job the book does not hold)."""
        return self._memory.complete(job_id)

    def mark_incomplete(self, job_ids: Iterable[str]) -> None:
        """These held jobs may have units that only storage holds (used when loading)."""
        self._memory.mark_incomplete(job_ids)

    def live_units(self) -> list[Unit]:
        """Units in WIP (waiting for a step or in one), in the order they came into the book."""
        return self._memory.live_units()

    def open_audits(self) -> list[Unit]:
        """Units with an open Lost Audit, in the order they came into the book."""
        return self._memory.open_audits()

    def open_jobs(self) -> list[Job]:
        """Jobs that are not Closed, in the order they came into the book."""
        return self._memory.open_jobs()

    def wip_by_step(self, job_id: str) -> list[tuple[Step, int]]:
        """Live units per step of the job's routing: waiting for the step or in it."""
        return self._memory.wip_by_step(job_id)

    def job_cost(self, job_id: str) -> Cost:
        """Accumulated time of the job's units (:meth:`JobMemory.job_cost`); only for a :meth:`complete` job."""
        return self._memory.job_cost(job_id)

    def has_usable_template(self, part: str, revision: str) -> bool:
        return self._registry.has_usable_template(part, revision)

    # ------------------------------------------------------------------ memory
    def adopt(self, jobs: Iterable[Job], units: Iterable[Unit]) -> None:
        """Put entities read back from storage into the book, as they were when stored
        (:meth:`JobMemory.adopt`); generated job ids stay ahead of the adopted jobs' ids."""
        for job_id in self._memory.adopt(jobs, units):
            self._ids.note_job_id(job_id)

    def retirable(self, job_id: str) -> bool:
        """A Closed job with no live unit, no open Lost Audit and nothing of it waiting to be saved
        (pallets aside)."""
        return self._memory.retirable(job_id)

    def retire(self, job_id: str) -> list[str]:
        """Drop a job and all of its units from memory (:meth:`JobMemory.retire`); returns the serials dropped."""
        return self._memory.retire(job_id)

    def sheddable(self, serial: str) -> bool:
        """A unit in memory that is finished or scrapped, has no open Lost Audit and has nothing waiting
        to be saved."""
        return self._memory.sheddable(serial)

    def shed(self, serials: Iterable[str]) -> None:
        """Drop units from memory while their job stays (:meth:`JobMemory.shed`)."""
        self._memory.shed(serials)

    # ------------------------------------------------------------------ templates
    def create_template(self, part: str, revision: str, operations: Sequence[str], at: datetime) -> RoutingTemplate:
        return self._registry.create_template(self.layout, part, revision, operations, at)

    def edit_template(self, template_id: str, operations: Sequence[str]) -> RoutingTemplate:
        return self._registry.edit_template(self.layout, template_id, operations)

    def approve_template(self, template_id: str) -> RoutingTemplate:
        return self._registry.approve_template(template_id)

    def set_default_template(self, part: str, revision: str, template_id: str) -> PartSpec:
        return self._registry.set_default_template(part, revision, template_id)

    def deprecate_template(self, template_id: str) -> RoutingTemplate:
        return self._registry.deprecate_template(template_id)

    def promote_routing(self, job_id: str, at: datetime) -> RoutingTemplate:
        """A job's routing becomes a new Draft template of its part revision, ready for approval.

        The job's own snapshot is copied, step for step, even if the process configuration changed since.
        """
        job = self.job(job_id)
        return self._registry.new_template(job.part, job.revision, job.routing, at)

    # ------------------------------------------------------------------ jobs
    def note_job_id(self, job_id: str) -> None:
        """Keep generated ids ahead of every stored one (used when loading)."""
        self._ids.note_job_id(job_id)

    def note_job_seq(self, number: int) -> None:
        """Generated ids continue after ``J-<number>`` (the highest generated-form id stored)."""
        self._ids.note_job_seq(number)

    def create_job(self, request: NewJob, at: datetime, actor: str) -> Job:
        return lifecycle.create_job(
            self._memory,
            self._log,
            self._registry,
            self._ids,
            self.layout,
            request,
            at,
            actor,
            default_yield_buffer_percent=self.default_yield_buffer_percent,
        )

    def replace_routing(self, job_id: str, operations: Sequence[str], actor: str, at: datetime) -> Job:
        return lifecycle.replace_routing(self._memory, self._log, self.layout, job_id, operations)

    def release(self, job_id: str, actor: str, at: datetime, reason: str = "") -> Job:
        return lifecycle.release(
            self._memory,
            self._log,
            self._registry,
            job_id,
            actor,
            at,
            reason,
            require_approved_templates=self.require_approved_templates,
        )

    def hold(self, job_id: str, reason: str, actor: str, at: datetime) -> Job:
        return lifecycle.hold(self._memory, self._log, job_id, reason, actor, at)

    def resume(self, job_id: str, actor: str, at: datetime, reason: str = "") -> Job:
        return lifecycle.resume(self._memory, self._log, job_id, actor, at, reason)

    def close(self, job_id: str, reason: str, actor: str, at: datetime) -> Variance:
        """Technical completion or short-close: frees the unstarted quantity, reports the variance
        (:func:`gateway.jobs.lifecycle.close`)."""
        return lifecycle.close(self._memory, self._log, job_id, reason, actor, at)

    def check_close(self, job_id: str) -> Job:
        """May the job be closed (or backed out)? Changes nothing."""
        return lifecycle.check_close(self._memory, job_id)

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
        """Move chosen units (or a ``quantity`` of unstarted ones) to a child job
        (:func:`gateway.jobs.split_merge.split`)."""
        return split_merge.split(self._memory, self._log, self.layout, job_id, serials, operations, actor, at, quantity)

    def merge(self, target_id: str, source_id: str, actor: str, at: datetime) -> Job:
        """Fold the source job into the target: same part number and revision only."""
        return split_merge.merge(self._memory, self._log, target_id, source_id, actor, at)

    # ------------------------------------------------------------------ unit movement
    def check_new_units(self, job_id: str, station: str, count: int = 1, pallet: str = "") -> Job:
        """May ``count`` new units of the job enter its first step at this station? Changes nothing."""
        return movement.check_new_units(self._memory, self.layout, job_id, station, count, pallet)

    def check_serials_free(self, serials: Iterable[str]) -> None:
        movement.check_serials_free(self._memory, serials)

    def start_unit(self, job_id: str, serial: str, station: str, at: datetime) -> Unit:
        """A new unit enters the job's first step (StartUnit, or the load part of LoadCompleted)."""
        return movement.start_unit(self._memory, self._log, self.layout, job_id, serial, station, at)

    def next_step(self, unit: Unit) -> Step | None:
        return movement.next_step(self._memory, unit)

    def check_entry(self, serial: str, station: str, program: str | None = None) -> tuple[Unit, Job, Step]:
        """May this unit enter its next step at this station (with this program)? Changes nothing."""
        return movement.check_entry(self._memory, self.layout, serial, station, program)

    def enter_step(self, serial: str, station: str, at: datetime, program: str | None = None) -> Unit:
        return movement.enter_step(self._memory, self._log, self.layout, serial, station, at, program)

    def touch(self, serials: Iterable[str], station: str, at: datetime) -> None:
        """A movement of the pallet these units are on (arrival, departure): activity for each live one."""
        movement.touch(self._memory, self._log, serials, station, at)

    def add_pallet_time(self, serial: str, kind: CostKind, seconds: float | None) -> None:
        """A unit's share of its pallet's time at a station (None: not measurable, counted unknown)."""
        movement.add_pallet_time(self._memory, self._log, serial, kind, seconds)

    def step_served_last(self, unit: Unit, groups: frozenset[str]) -> Step | None:
        """The step of the unit's routing done (or being done) at a station of these groups most recently."""
        return movement.step_served_last(self._memory, unit, groups)

    def movement_held(self, unit: Unit) -> bool:
        """Whether the end of a step the unit had not begun must leave it where it is (its job is on hold)."""
        return movement.movement_held(self._memory, unit)

    def leave_step(
        self,
        serial: str,
        station: str,
        passed: bool,
        at: datetime,
        elapsed: float | None,
        flags: Sequence[str] = (),
    ) -> StepRecorded | None:
        """A fact: the unit left its step, passed or failed (:func:`gateway.jobs.movement.leave_step`)."""
        return movement.leave_step(self._memory, self._log, self.layout, serial, station, passed, at, elapsed, flags)

    def scrap(self, serial: str, reason: str, at: datetime) -> Unit:
        return movement.scrap(self._memory, self._log, serial, reason, at)

    # ------------------------------------------------------------------ stale WIP
    def flag_stale(self, now: datetime, threshold: timedelta) -> list[LostAuditFlagged]:
        """Flag live units idle longer than the threshold for a Lost Audit, each once."""
        return movement.flag_stale(self._memory, self._log, now, threshold)

    def resolve_audit(self, serial: str, outcome: str, actor: str, at: datetime) -> Unit:
        return movement.resolve_audit(self._memory, self._log, serial, outcome, actor, at)
