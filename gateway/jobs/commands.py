"""Commands of planners, engineers and the ERP on jobs, templates and units (not station reports).

Each is a value with a ``kind`` and its arguments; :func:`handle` applies one to a JobBook. They go
through the same writer and event log as station reports, so replaying the log rebuilds every job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

from gateway.jobs.book import JobBook, NewJob


@dataclass(frozen=True, slots=True)
class JobCommand:
    kind: ClassVar[str] = ""
    source: ClassVar[str] = "jobs"


@dataclass(frozen=True, slots=True)
class CreateJob(JobCommand):
    kind: ClassVar[str] = "CreateJob"
    part: str
    revision: str
    quantity: int
    job_id: str = ""
    due: datetime | None = None
    priority: int = 0
    yield_buffer_percent: float | None = None
    operations: tuple[str, ...] = ()
    pallets: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReplaceRouting(JobCommand):
    kind: ClassVar[str] = "ReplaceRouting"
    job_id: str
    operations: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReleaseJob(JobCommand):
    kind: ClassVar[str] = "Release"
    job_id: str


@dataclass(frozen=True, slots=True)
class HoldJob(JobCommand):
    kind: ClassVar[str] = "Hold"
    job_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class ResumeJob(JobCommand):
    kind: ClassVar[str] = "Resume"
    job_id: str


@dataclass(frozen=True, slots=True)
class CloseJob(JobCommand):
    kind: ClassVar[str] = "Close"
    job_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class SplitJob(JobCommand):
    """Chosen units (``serials``) or an unstarted ``quantity`` of the job go to a child job."""

    kind: ClassVar[str] = "Split"
    job_id: str
    serials: tuple[str, ...]
    operations: tuple[str, ...] = ()
    quantity: int = 0


@dataclass(frozen=True, slots=True)
class MergeJobs(JobCommand):
    kind: ClassVar[str] = "Merge"
    target_job_id: str
    source_job_id: str


@dataclass(frozen=True, slots=True)
class CreateTemplate(JobCommand):
    kind: ClassVar[str] = "CreateTemplate"
    source: ClassVar[str] = "parts"
    part: str
    revision: str
    operations: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EditTemplate(JobCommand):
    kind: ClassVar[str] = "EditTemplate"
    source: ClassVar[str] = "parts"
    template_id: str
    operations: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ApproveTemplate(JobCommand):
    kind: ClassVar[str] = "ApproveTemplate"
    source: ClassVar[str] = "parts"
    template_id: str


@dataclass(frozen=True, slots=True)
class DeprecateTemplate(JobCommand):
    kind: ClassVar[str] = "DeprecateTemplate"
    source: ClassVar[str] = "parts"
    template_id: str


@dataclass(frozen=True, slots=True)
class SetDefaultTemplate(JobCommand):
    kind: ClassVar[str] = "SetDefaultTemplate"
    source: ClassVar[str] = "parts"
    part: str
    revision: str
    template_id: str


@dataclass(frozen=True, slots=True)
class PromoteRouting(JobCommand):
    kind: ClassVar[str] = "PromoteRouting"
    source: ClassVar[str] = "parts"
    job_id: str


@dataclass(frozen=True, slots=True)
class ResolveAudit(JobCommand):
    kind: ClassVar[str] = "ResolveAudit"
    source: ClassVar[str] = "units"
    serial: str
    outcome: str


@dataclass(frozen=True, slots=True)
class FlagStaleUnits(JobCommand):
    """The stale-WIP sweeper's pass, logged like any command so that a replay flags the same units."""

    kind: ClassVar[str] = "FlagStaleUnits"
    source: ClassVar[str] = "sweeper"
    threshold_seconds: float


JOB_COMMAND_TYPES: dict[str, type[JobCommand]] = {
    cls.kind: cls
    for cls in (
        CreateJob, ReplaceRouting, ReleaseJob, HoldJob, ResumeJob, CloseJob, SplitJob, MergeJobs,
        CreateTemplate, EditTemplate, ApproveTemplate, DeprecateTemplate, SetDefaultTemplate,
        PromoteRouting, ResolveAudit, FlagStaleUnits,
    )
}  # fmt: skip


def handle(book: JobBook, command: JobCommand, at: datetime, actor: str) -> dict[str, Any]:
    """Apply one command; returns the method outputs (e.g. ``{"JobId": ...}``). Raises Refused."""
    match command:
        case CreateJob():
            request = NewJob(
                part=command.part,
                revision=command.revision,
                quantity=command.quantity,
                job_id=command.job_id,
                due=command.due,
                priority=command.priority,
                yield_buffer_percent=command.yield_buffer_percent,
                operations=command.operations,
                pallets=command.pallets,
            )
            return {"JobId": book.create_job(request, at, actor).id}
        case ReplaceRouting():
            book.replace_routing(command.job_id, command.operations, actor, at)
        case ReleaseJob():
            book.release(command.job_id, actor, at)
        case HoldJob():
            book.hold(command.job_id, command.reason, actor, at)
        case ResumeJob():
            book.resume(command.job_id, actor, at)
        case CloseJob():
            variance = book.close(command.job_id, command.reason, actor, at)
            return {
                "Variance": {
                    "ordered": variance.ordered,
                    "started": variance.started,
                    "finished": variance.finished,
                    "scrapped": variance.scrapped,
                    "wip": variance.wip,
                    "freed": variance.freed,
                    "shortfall": variance.shortfall,
                }
            }
        case SplitJob():
            child = book.split(command.job_id, command.serials, command.operations, actor, at, command.quantity)
            return {"ChildJobId": child.id}
        case MergeJobs():
            book.merge(command.target_job_id, command.source_job_id, actor, at)
        case CreateTemplate():
            return {"TemplateId": book.create_template(command.part, command.revision, command.operations, at).id}
        case EditTemplate():
            book.edit_template(command.template_id, command.operations)
        case ApproveTemplate():
            book.approve_template(command.template_id)
        case DeprecateTemplate():
            book.deprecate_template(command.template_id)
        case SetDefaultTemplate():
            book.set_default_template(command.part, command.revision, command.template_id)
        case PromoteRouting():
            return {"TemplateId": book.promote_routing(command.job_id, at).id}
        case ResolveAudit():
            book.resolve_audit(command.serial, command.outcome, actor, at)
        case FlagStaleUnits():
            flagged = book.flag_stale(at, timedelta(seconds=command.threshold_seconds))
            return {"Flagged": [f.serial for f in flagged]}
        case _:
            raise TypeError(f"unknown job command {command!r}")
    return {}
