"""Unit movement: units entering the cell and their job's steps, leaving steps (passed or failed,
their time accumulated), being scrapped; the route rules that say which station may take a unit next;
and the stale-WIP audit (Lost Audits for live units idle too long, resolved by an engineer)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from gateway.errors import Reason, Refused
from gateway.jobs.changes import ChangeLog
from gateway.jobs.events import (
    LostAuditActivity,
    LostAuditFlagged,
    LostAuditResolved,
    StepRecorded,
    UnitFinished,
    UnitScrapped,
    UnitStarted,
)
from gateway.jobs.layout import CellLayout
from gateway.jobs.lifecycle import require_movable, require_runnable, target_check, transition
from gateway.jobs.memory import JobMemory
from gateway.jobs.model import Cost, CostKind, Job, JobState, Step, StepKind, Unit, UnitStatus


def check_new_units(
    memory: JobMemory, layout: CellLayout, job_id: str, station: str, count: int = 1, pallet: str = ""
) -> Job:
    """May ``count`` new units of the job enter its first step at this station? Changes nothing."""
    job = memory.job(job_id)
    require_runnable(job)
    if count < 1:
        raise Refused(Reason.INVALID_ARGUMENT, f"a load needs a quantity of at least 1, not {count}")
    _check_route(layout, job, 0, station, what=f"a new unit of {job.id}")
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


def check_serials_free(memory: JobMemory, serials: Iterable[str]) -> None:
    seen: set[str] = set()
    for serial in serials:
        if not serial or serial != serial.strip():
            raise Refused(Reason.INVALID_ARGUMENT, f"serial {serial!r} is empty or has spaces around it")
        if serial in memory.units or serial in seen:
            raise Refused(Reason.DUPLICATE_SERIAL, f"serial {serial} exists already in this cell")
        seen.add(serial)


def start_unit(
    memory: JobMemory, log: ChangeLog, layout: CellLayout, job_id: str, serial: str, station: str, at: datetime
) -> Unit:
    """A new unit enters the job's first step (StartUnit, or the load part of LoadCompleted)."""
    job = check_new_units(memory, layout, job_id, station)
    check_serials_free(memory, [serial])
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
    memory.put_unit(unit)
    job.started += 1
    log.dirty.units.add(serial)
    log.dirty.jobs.add(job_id)
    log.events.append(UnitStarted(serial, job_id, station, at))
    if job.state is JobState.RELEASED:
        transition(memory, log, job, JobState.RUNNING, f"first unit {serial} started at {station}", "cell", at)
    return unit


def next_step(memory: JobMemory, unit: Unit) -> Step | None:
    job = memory.jobs[unit.job_id]
    return job.routing[unit.next_step] if unit.next_step < len(job.routing) else None


def check_entry(
    memory: JobMemory, layout: CellLayout, serial: str, station: str, program: str | None = None
) -> tuple[Unit, Job, Step]:
    """May this unit enter its next step at this station (with this program)? Changes nothing."""
    unit = memory.unit(serial)
    job = memory.jobs[unit.job_id]
    require_movable(job)
    if not unit.live:
        raise Refused(Reason.INVALID_PROCESS_STEP, f"{serial} is {unit.status.value}; it has no step left to enter")
    if unit.status is UnitStatus.IN_STEP:
        raise Refused(
            Reason.INVALID_PROCESS_STEP,
            f"{serial} is in {job.routing[unit.next_step].operation} at {unit.station} already",
        )
    step = _check_route(layout, job, unit.next_step, station, what=serial, unit=unit)
    if program is not None and step.program and program.casefold() != step.program.casefold():
        raise Refused(
            Reason.WRONG_PROGRAM,
            f"{serial} needs program {step.program} for {step.operation}, not {program}",
        )
    return unit, job, step


def enter_step(
    memory: JobMemory,
    log: ChangeLog,
    layout: CellLayout,
    serial: str,
    station: str,
    at: datetime,
    program: str | None = None,
) -> Unit:
    unit, _, _ = check_entry(memory, layout, serial, station, program)
    unit.status = UnitStatus.IN_STEP
    unit.station = station
    unit.entered_at = at
    _active(log, unit, at, station)
    return unit


def _active(log: ChangeLog, unit: Unit, at: datetime, station: str = "") -> None:
    """Activity on a unit: its idle time restarts. An open Lost Audit stays open until an engineer
    resolves it (found or lost); the activity is reported (LostAuditActivity) so they know."""
    unit.last_activity = at
    log.dirty.units.add(unit.serial)
    if unit.audit_flagged:
        log.events.append(LostAuditActivity(unit.serial, unit.job_id, station or unit.station, at))


def touch(memory: JobMemory, log: ChangeLog, serials: Iterable[str], station: str, at: datetime) -> None:
    """A movement of the pallet these units are on (arrival, departure): activity for each live one."""
    for serial in serials:
        unit = memory.units.get(serial)
        if unit is not None and unit.live and unit.last_activity != at:
            _active(log, unit, at, station)


def add_pallet_time(memory: JobMemory, log: ChangeLog, serial: str, kind: CostKind, seconds: float | None) -> None:
    """A unit's share of its pallet's time at a station (None: not measurable, counted unknown)."""
    unit = memory.units[serial]
    unit.cost.add_elapsed(kind, seconds)
    log.dirty.units.add(serial)


def step_served_last(memory: JobMemory, unit: Unit, groups: frozenset[str]) -> Step | None:
    """The step of the unit's routing done (or being done) at a station of these groups most recently:
    the one it is in or needs, else the last one before it."""
    routing = memory.jobs[unit.job_id].routing
    for index in range(min(unit.next_step, len(routing) - 1), -1, -1):
        if routing[index].group in groups:
            return routing[index]
    return None


def movement_held(memory: JobMemory, unit: Unit) -> bool:
    """Whether the end of a step the unit had not begun must leave it where it is: its job is on
    hold, which blocks all movement until released (a step begun before the hold may end)."""
    return unit.status is not UnitStatus.IN_STEP and memory.jobs[unit.job_id].state is JobState.HOLD


def _check_route(
    layout: CellLayout, job: Job, index: int, station: str, *, what: str, unit: Unit | None = None
) -> Step:
    info = layout.station(station)
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
    memory: JobMemory,
    log: ChangeLog,
    layout: CellLayout,
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
    unit = memory.unit(serial)
    job = memory.jobs[unit.job_id]
    if not unit.live or movement_held(memory, unit):
        return None
    step = job.routing[unit.next_step]
    entered_at: datetime | None
    if unit.status is UnitStatus.IN_STEP:
        entered_at = unit.entered_at
    else:
        if step.group not in layout.station(station).groups:
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
    _active(log, unit, at, station)
    if passed:
        unit.next_step += 1
        unit.failed_attempts = 0
    else:
        unit.failed_attempts += 1
    log.events.append(record)
    log.dirty.units.add(serial)
    if unit.next_step >= len(job.routing):
        unit.status = UnitStatus.FINISHED
        memory.reindex(unit)
        reached = job.target_reached
        job.finished += 1
        log.dirty.jobs.add(job.id)
        log.events.append(UnitFinished(serial, job.id, at))
        target_check(log, job, reached, at)
    return record


def scrap(memory: JobMemory, log: ChangeLog, serial: str, reason: str, at: datetime) -> Unit:
    unit = memory.unit(serial)
    if not unit.live:
        raise Refused(
            Reason.INVALID_TRANSITION,
            f"{serial} is {unit.status.value}; only a unit in WIP can be scrapped",
        )
    job = memory.jobs[unit.job_id]
    unit.status = UnitStatus.SCRAPPED
    unit.station = ""
    unit.entered_at = None
    unit.last_activity = at
    unit.audit_flagged = False
    memory.reindex(unit)
    job.scrapped += 1
    log.dirty.units.add(serial)
    log.dirty.jobs.add(job.id)
    log.events.append(UnitScrapped(serial, job.id, reason, at))
    return unit


def flag_stale(memory: JobMemory, log: ChangeLog, now: datetime, threshold: timedelta) -> list[LostAuditFlagged]:
    """Flag live units idle longer than the threshold for a Lost Audit, each once."""
    flagged: list[LostAuditFlagged] = []
    for unit in memory.live_units():
        if not unit.audit_flagged and now - unit.last_activity > threshold:
            unit.audit_flagged = True
            memory.reindex(unit)
            log.dirty.units.add(unit.serial)
            event = LostAuditFlagged(
                unit.serial, unit.job_id, unit.station, (now - unit.last_activity).total_seconds(), now
            )
            flagged.append(event)
            log.events.append(event)
    return flagged


def resolve_audit(memory: JobMemory, log: ChangeLog, serial: str, outcome: str, actor: str, at: datetime) -> Unit:
    unit = memory.unit(serial)
    word = outcome.strip().casefold()
    if word not in ("found", "lost"):
        raise Refused(Reason.INVALID_ARGUMENT, f"outcome must be 'found' or 'lost', not {outcome!r}")
    if not unit.audit_flagged:
        raise Refused(Reason.INVALID_TRANSITION, f"{serial} has no open Lost Audit")
    if word == "lost":
        scrap(memory, log, serial, "lost", at)
    else:
        unit.audit_flagged = False
        memory.reindex(unit)
        unit.last_activity = at
        log.dirty.units.add(serial)
    log.events.append(LostAuditResolved(serial, unit.job_id, word, actor, at))
    return unit


def _accumulate(cost: Cost, record: StepRecorded, kind: StepKind) -> None:
    """A step's planned time counts in its category. Its measured time counts for labor and
    inspection steps (at a load station: the pallet's time there up to the report, shared); a machine
    or wash step's elapsed time is the pallet's time at the station instead, added when the pallet
    leaves (:func:`add_pallet_time`), as is the rest of its time at a load station."""
    category = kind.cost_kind
    cost.add_expected(category, record.expected)
    if category in (CostKind.LABOR, CostKind.INSPECTION):
        cost.add_elapsed(category, record.elapsed)
