"""The job lifecycle: creating a job (its id and its routing), the state machine Created -> Released ->
Running -> Closed with Hold between, and the guards other commands take from a job's state.

Every state change goes through :func:`transition`, which records it as a JobStateChanged event.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass
from datetime import datetime

from gateway.errors import Reason, Refused
from gateway.jobs.changes import ChangeLog
from gateway.jobs.events import JobStateChanged, JobTargetReached
from gateway.jobs.layout import CellLayout
from gateway.jobs.memory import JobMemory
from gateway.jobs.model import (
    Job,
    JobState,
    Routing,
    RoutingSource,
    RoutingSourceKind,
    RoutingTemplate,
    TemplateStatus,
    Variance,
)
from gateway.jobs.templates import TemplateRegistry, require_text

_JOB_PREFIX = "J-"


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


@dataclass(slots=True)
class JobIds:
    """Generated job ids ``J-<n>``, continuing after the highest ``n`` generated or stored."""

    seq: int = 0

    def next_id(self, taken: Container[str]) -> str:
        while True:
            self.seq += 1
            candidate = f"{_JOB_PREFIX}{self.seq:04d}"
            if candidate not in taken:
                return candidate

    def note_job_id(self, job_id: str) -> None:
        """Keep generated ids ahead of every stored one (used when loading)."""
        number = job_number(job_id)
        if number is not None:
            self.note_job_seq(number)

    def note_job_seq(self, number: int) -> None:
        """Generated ids continue after ``J-<number>`` (the highest generated-form id stored)."""
        self.seq = max(self.seq, number)


def job_number(job_id: str) -> int | None:
    """``n`` for a job id of the generated form ``J-<digits>``, None for any other id."""
    digits = job_id[len(_JOB_PREFIX) :]
    if job_id.startswith(_JOB_PREFIX) and digits.isdigit():
        return int(digits)
    return None


def _routing_for(
    registry: TemplateRegistry, layout: CellLayout, request: NewJob
) -> tuple[Routing, RoutingSource, RoutingTemplate | None]:
    if request.operations:
        return layout.resolve(request.operations), RoutingSource(RoutingSourceKind.CUSTOM), None
    spec = registry.specs.get((request.part, request.revision))
    if spec is not None and spec.default_template_id:
        template = registry.templates[spec.default_template_id]
        return template.steps, RoutingSource(RoutingSourceKind.TEMPLATE, template.id), template
    if not layout.process:
        raise Refused(Reason.NOT_FOUND, "the process configuration has no operations")
    return layout.process, RoutingSource(RoutingSourceKind.AUTOMATIC), None


def create_job(
    memory: JobMemory,
    log: ChangeLog,
    registry: TemplateRegistry,
    ids: JobIds,
    layout: CellLayout,
    request: NewJob,
    at: datetime,
    actor: str,
    *,
    default_yield_buffer_percent: float,
) -> Job:
    require_text(part=request.part, revision=request.revision)
    if request.quantity < 1:
        raise Refused(Reason.INVALID_ARGUMENT, f"quantity must be at least 1, not {request.quantity}")
    buffer = default_yield_buffer_percent if request.yield_buffer_percent is None else request.yield_buffer_percent
    if not 0 <= buffer <= 100:
        raise Refused(Reason.INVALID_ARGUMENT, f"yield buffer must be 0..100 %, not {buffer}")
    if request.job_id and request.job_id in memory.jobs:
        raise Refused(Reason.DUPLICATE_ID, f"job {request.job_id} exists already")
    pallets = layout.check_pallets(request.pallets)
    routing, source, template = _routing_for(registry, layout, request)
    job = Job(
        id=request.job_id or ids.next_id(memory.jobs),
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
    ids.note_job_id(job.id)
    memory.put_job(job)
    log.dirty.jobs.add(job.id)
    if template is not None and template.status is TemplateStatus.APPROVED:
        template.status = TemplateStatus.FROZEN
        log.dirty.templates.add(template.id)
    transition(memory, log, job, JobState.CREATED, f"created ({source})", actor, at, new=True)
    return job


def replace_routing(
    memory: JobMemory, log: ChangeLog, layout: CellLayout, job_id: str, operations: Sequence[str]
) -> Job:
    job = memory.job(job_id)
    if job.state is not JobState.CREATED:
        raise Refused(
            Reason.INVALID_TRANSITION,
            f"job {job_id} is {job.state.value}; its routing was locked at release",
        )
    job.routing = layout.resolve(operations)
    job.source = RoutingSource(RoutingSourceKind.CUSTOM)
    log.dirty.jobs.add(job_id)
    return job


def release(
    memory: JobMemory,
    log: ChangeLog,
    registry: TemplateRegistry,
    job_id: str,
    actor: str,
    at: datetime,
    reason: str,
    *,
    require_approved_templates: bool,
) -> Job:
    job = memory.job(job_id)
    if job.state is not JobState.CREATED:
        raise _state_refusal(job, "release")
    if require_approved_templates and not registry.has_usable_template(job.part, job.revision):
        raise Refused(
            Reason.APPROVAL_REQUIRED,
            f"{job.part} rev {job.revision} has no approved routing template, and this cell requires "
            "one for production",
        )
    job.released_at = at
    transition(memory, log, job, JobState.RELEASED, reason or "released", actor, at)
    return job


def hold(memory: JobMemory, log: ChangeLog, job_id: str, reason: str, actor: str, at: datetime) -> Job:
    job = memory.job(job_id)
    if job.state not in (JobState.RELEASED, JobState.RUNNING):
        raise _state_refusal(job, "hold")
    job.held_from = job.state
    transition(memory, log, job, JobState.HOLD, reason, actor, at)
    return job


def resume(memory: JobMemory, log: ChangeLog, job_id: str, actor: str, at: datetime, reason: str) -> Job:
    job = memory.job(job_id)
    if job.state is not JobState.HOLD or job.held_from is None:
        raise _state_refusal(job, "resume")
    target, job.held_from = job.held_from, None
    transition(memory, log, job, target, reason or "resumed", actor, at)
    return job


def close(memory: JobMemory, log: ChangeLog, job_id: str, reason: str, actor: str, at: datetime) -> Variance:
    """Technical completion or short-close: frees the unstarted quantity, reports the variance.

    Nothing new starts in a Closed job; its units still in WIP may finish their routing. So a job
    on hold with units in WIP is not closed (:func:`check_close`): that would release them.
    """
    job = check_close(memory, job_id)
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
    transition(memory, log, job, JobState.CLOSED, reason or "closed", actor, at)
    return variance


def check_close(memory: JobMemory, job_id: str) -> Job:
    """May the job be closed (or backed out)? Changes nothing."""
    job = memory.job(job_id)
    if job.state is JobState.CLOSED:
        raise Refused(Reason.JOB_CLOSED, f"job {job_id} is closed already")
    if job.state is JobState.HOLD and job.wip:
        raise Refused(
            Reason.JOB_ON_HOLD,
            f"job {job_id} is on hold with {job.wip} unit(s) in WIP: closing it would let them move on; "
            "resume it (or scrap them) first, so the hold is released formally",
        )
    return job


def transition(
    memory: JobMemory,
    log: ChangeLog,
    job: Job,
    to: JobState,
    reason: str,
    actor: str,
    at: datetime,
    *,
    new: bool = False,
) -> None:
    """Move a job to ``to`` and record it; ``new`` for a job that did not exist before."""
    before = None if new else job.state
    job.state = to
    memory.reindex_job(job)
    log.dirty.jobs.add(job.id)
    log.events.append(JobStateChanged(job.id, before, to, reason, actor, at))


def target_check(log: ChangeLog, job: Job, reached_before: bool, at: datetime) -> None:
    """Raise JobTargetReached when the job's finished units have just reached its ordered quantity."""
    if job.target_reached and not reached_before:
        log.events.append(JobTargetReached(job.id, job.quantity, job.finished, at))


def require_runnable(job: Job) -> None:
    """New transactions need a released, running job: not Created, not on Hold, not Closed."""
    if job.state is JobState.CREATED:
        raise Refused(Reason.JOB_NOT_RELEASED, f"job {job.id} is not released yet")
    if job.state is JobState.HOLD:
        raise Refused(Reason.JOB_ON_HOLD, f"job {job.id} is on hold; nothing new starts until it is resumed")
    if job.state is JobState.CLOSED:
        raise Refused(Reason.JOB_CLOSED, f"job {job.id} is closed")


def require_movable(job: Job) -> None:
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
