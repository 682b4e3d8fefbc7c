"""A JobBook of a small cell for the jobs tests, built like the demo cell, and helpers to look at it.

Not a conftest: the tests import what they need from here, so they run without any fixture.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

import pytest

from gateway.errors import Reason, Refused
from gateway.jobs.book import JobBook, NewJob
from gateway.jobs.layout import CellLayout, StationInfo
from gateway.jobs.model import Job, Step, StepKind, UnitStatus
from tests.support import T0


def at(seconds: float = 0, *, days: float = 0) -> datetime:
    """A fixed aware UTC time, ``seconds`` (and ``days``) after T0."""
    return T0 + timedelta(days=days, seconds=seconds)


OP10 = Step("OP10", "load", "LOAD", StepKind.LOAD, expected_seconds=120.0)
OP20 = Step("OP20", "mill", "MILL", StepKind.MACHINE, program="PRG-MILL-100", expected_seconds=900.0)
OP30 = Step("OP30", "wash", "WASH", StepKind.WASH, program="PRG-WASH-1", expected_seconds=180.0)
OP40 = Step("OP40", "unload", "LOAD", StepKind.UNLOAD, expected_seconds=90.0)
OP50 = Step("OP50", "inspect", "CMM", StepKind.INSPECT, expected_seconds=300.0)
# Catalogue only: not part of the process configuration, available to custom routings and templates.
OP25 = Step("OP25", "rework", "MILL", StepKind.MACHINE, program="PRG-REWORK", expected_seconds=600.0)
OP45 = Step("OP45", "manual check", "CMM", StepKind.MANUAL, expected_seconds=60.0)
# A new operation the shop adds to its process later.
OP35 = Step("OP35", "deburr", "MILL", StepKind.MACHINE, program="PRG-DEBURR-1", expected_seconds=240.0)

PROCESS = (OP10, OP20, OP30, OP40, OP50)
PROCESS_OPS = tuple(s.operation for s in PROCESS)
REWORK_OPS = ("OP25", "OP30", "OP40", "OP50")

STATIONS = (
    StationInfo("L1", "load", frozenset({"LOAD"})),
    StationInfo("L2", "load", frozenset({"LOAD"})),
    StationInfo("M1", "machine", frozenset({"MILL"})),
    StationInfo("M2", "machine", frozenset({"MILL"})),
    StationInfo("M3", "machine", frozenset({"MILL"})),
    StationInfo("M4", "machine", frozenset({"MILL"})),
    StationInfo("W1", "wash", frozenset({"WASH"})),
    StationInfo("C1", "inspection", frozenset({"CMM"})),
)
PALLETS = tuple(f"P{i}" for i in range(1, 9))

# Where each operation of the demo routing is done, and with which program.
STATION_FOR = {
    "OP10": "L1",
    "OP20": "M1",
    "OP25": "M2",
    "OP30": "W1",
    "OP35": "M3",
    "OP40": "L2",
    "OP45": "C1",
    "OP50": "C1",
}


def make_layout(process: tuple[Step, ...] = PROCESS) -> CellLayout:
    layout = CellLayout.build(STATIONS, process, PALLETS)
    for extra in (OP25, OP45, OP35):
        layout.catalogue.setdefault(extra.operation, extra)
    return layout


def make_book(*, require_approved_templates: bool = False, default_yield_buffer_percent: float = 2.0) -> JobBook:
    return JobBook(
        make_layout(),
        require_approved_templates=require_approved_templates,
        default_yield_buffer_percent=default_yield_buffer_percent,
    )


def new_job(
    book: JobBook,
    job_id: str = "",
    *,
    part: str = "PX-1",
    revision: str = "A",
    quantity: int = 10,
    buffer: float | None = 0.0,
    operations: tuple[str, ...] = (),
    when: datetime = T0,
) -> Job:
    request = NewJob(part, revision, quantity, job_id=job_id, yield_buffer_percent=buffer, operations=operations)
    return book.create_job(request, when, "planner")


def released_job(book: JobBook, job_id: str = "", **kwargs: Any) -> Job:
    job = new_job(book, job_id, **kwargs)
    book.release(job.id, "manager", T0)
    return job


def ops(job: Job) -> list[str]:
    return [s.operation for s in job.routing]


def snapshot(book: JobBook) -> Any:
    """Everything a command could change, as a value that can be compared after a refusal.

    All of the book's attributes (specs, templates, jobs, units, transitions, events, dirty sets, the
    id sequence, the layout), with every mutable object turned into an immutable copy of its contents.
    """
    return _frozen(vars(book))


def _frozen(value: Any) -> Any:
    if isinstance(value, str | int | float | bool | datetime | Enum | None):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if type(value).__dataclass_params__.frozen:  # type: ignore[attr-defined]
            # Frozen values of the model (steps, events, transitions) hold only immutable fields.
            return value
        fields = tuple((f.name, _frozen(getattr(value, f.name))) for f in dataclasses.fields(value))
        return (type(value).__name__, fields)
    if isinstance(value, dict):
        return ("dict", tuple((_frozen(k), _frozen(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return (type(value).__name__, tuple(_frozen(v) for v in value))
    if isinstance(value, set | frozenset):
        return frozenset(_frozen(v) for v in value)
    return copy.deepcopy(value)


def refused(book: JobBook, reason: Reason, call: Callable[..., object], *args: Any, **kwargs: Any) -> Refused:
    """Call a command that must be refused with ``reason`` and must leave the book exactly as it was."""
    before = snapshot(book)
    with pytest.raises(Refused) as caught:
        call(*args, **kwargs)
    assert caught.value.reason is reason, caught.value.message
    assert snapshot(book) == before
    return caught.value


def pass_step(book: JobBook, serial: str, when: datetime, elapsed: float | None = None) -> None:
    """The unit enters its next step at the station for it (right program) and passes it."""
    unit = book.unit(serial)
    step = book.jobs[unit.job_id].routing[unit.next_step]
    station = unit.station or STATION_FOR[step.operation]
    if unit.status is UnitStatus.WAITING:
        book.enter_step(serial, station, when, step.program or None)
    record = book.leave_step(serial, station, True, when, elapsed)
    assert record is not None
    assert record.passed


def start(book: JobBook, job_id: str, serial: str, when: datetime = T0, station: str = "L1") -> None:
    book.start_unit(job_id, serial, station, when)
