"""What happened to jobs and units: recorded by the JobBook, stored by the writer, published after commit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gateway.jobs.model import JobState


@dataclass(frozen=True, slots=True)
class JobStateChanged:
    job: str
    from_state: JobState | None
    to_state: JobState
    reason: str
    actor: str
    at: datetime


@dataclass(frozen=True, slots=True)
class StepRecorded:
    """A unit scan: a unit left a step of its routing, passed or failed.

    ``elapsed`` is measured (None when it could not be: an end without a start); ``expected`` is planned,
    from the job's routing snapshot. ``flags`` name the messy-reality rules that fired for it.
    """

    serial: str
    job: str
    step_index: int
    operation: str
    station: str
    entered_at: datetime | None
    left_at: datetime
    passed: bool
    elapsed: float | None
    expected: float | None
    labor: bool
    flags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UnitStarted:
    serial: str
    job: str
    station: str
    at: datetime


@dataclass(frozen=True, slots=True)
class UnitFinished:
    serial: str
    job: str
    at: datetime


@dataclass(frozen=True, slots=True)
class UnitScrapped:
    serial: str
    job: str
    reason: str
    at: datetime


@dataclass(frozen=True, slots=True)
class UnitsMoved:
    """Split or merge: units changed job, their cost and history with them."""

    serials: tuple[str, ...]
    from_job: str
    to_job: str
    at: datetime


@dataclass(frozen=True, slots=True)
class LostAuditFlagged:
    serial: str
    job: str
    station: str
    idle_seconds: float
    at: datetime


@dataclass(frozen=True, slots=True)
class LostAuditResolved:
    serial: str
    job: str
    outcome: str
    actor: str
    at: datetime


@dataclass(frozen=True, slots=True)
class LostAuditActivity:
    """Something happened to a unit under an open Lost Audit; the audit stays open until resolved."""

    serial: str
    job: str
    station: str
    at: datetime


@dataclass(frozen=True, slots=True)
class JobTargetReached:
    """The job's finished units reached its ordered quantity: the ERP may close it."""

    job: str
    quantity: int
    finished: int
    at: datetime


JobEvent = (
    JobStateChanged
    | StepRecorded
    | UnitStarted
    | UnitFinished
    | UnitScrapped
    | UnitsMoved
    | LostAuditFlagged
    | LostAuditResolved
    | LostAuditActivity
    | JobTargetReached
)
