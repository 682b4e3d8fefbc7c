"""Split and merge: units (or unstarted quantity) of a job move to a child job ``<id>-R<n>`` with its
own routing, and a job folds into another of the same part revision. Counts, cap and holds move along."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from gateway.errors import Reason, Refused
from gateway.jobs.changes import ChangeLog
from gateway.jobs.events import UnitsMoved
from gateway.jobs.layout import CellLayout
from gateway.jobs.lifecycle import target_check, transition
from gateway.jobs.memory import JobMemory
from gateway.jobs.model import Job, JobState, Routing, RoutingSource, RoutingSourceKind, UnitStatus, max_quantity


def split(
    memory: JobMemory,
    log: ChangeLog,
    layout: CellLayout,
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
    job = memory.job(job_id)
    if job.state is JobState.CLOSED:
        raise Refused(Reason.JOB_CLOSED, f"job {job_id} is closed")
    if quantity and serials:
        raise Refused(Reason.INVALID_ARGUMENT, "name the serials to split off or a quantity, not both")
    if quantity:
        return _split_quantity(memory, log, layout, job, quantity, operations, actor, at)
    if not serials:
        raise Refused(Reason.INVALID_ARGUMENT, "name at least one serial to split off, or a quantity")
    if len(set(serials)) != len(serials):
        raise Refused(Reason.INVALID_ARGUMENT, "a serial is named twice")
    units = [memory.unit(s) for s in serials]
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
        routing = layout.resolve(operations)
        positions = [0] * len(units)
    else:
        offset = min(u.next_step for u in units)
        routing = job.routing[offset:]
        positions = [u.next_step - offset for u in units]
    child_id = _free_child_id(memory, job)
    count = len(units)
    reached = job.target_reached
    child = _add_child(
        memory,
        log,
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
        log.dirty.units.add(unit.serial)
    memory.move_units([u.serial for u in units], job.id, child_id)
    log.events.append(UnitsMoved(tuple(serials), job.id, child_id, at))
    target_check(log, job, reached, at)
    return child


def _split_quantity(
    memory: JobMemory,
    log: ChangeLog,
    layout: CellLayout,
    job: Job,
    quantity: int,
    operations: Sequence[str],
    actor: str,
    at: datetime,
) -> Job:
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
    routing = layout.resolve(operations) if operations else job.routing
    child_id = _free_child_id(memory, job)
    reached = job.target_reached
    source = job.source if not operations else RoutingSource(RoutingSourceKind.CUSTOM)
    why = f"split from {job.id}: {quantity} unit(s) not started"
    child = _add_child(memory, log, job, child_id, 0, routing, source, why, actor, at, quantity=quantity)
    job.quantity -= quantity
    target_check(log, job, reached, at)
    return child


def _free_child_id(memory: JobMemory, job: Job) -> str:
    child_id = f"{job.id}-R{job.children + 1}"
    if child_id in memory.jobs:
        raise Refused(Reason.DUPLICATE_ID, f"job {child_id} exists already")
    return child_id


def _add_child(
    memory: JobMemory,
    log: ChangeLog,
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
    memory.put_job(child)
    log.dirty.jobs.update((parent.id, child_id))
    state = JobState.RUNNING if started else JobState.RELEASED
    if parent.state is JobState.HOLD:
        child.held_from = state
        transition(memory, log, child, JobState.HOLD, f"{why}, which is on hold", actor, at, new=True)
    else:
        transition(memory, log, child, state, why, actor, at, new=True)
    return child


def merge(memory: JobMemory, log: ChangeLog, target_id: str, source_id: str, actor: str, at: datetime) -> Job:
    """Fold the source job into the target: same part number and revision only."""
    if target_id == source_id:
        raise Refused(Reason.INVALID_ARGUMENT, "a job cannot be merged into itself")
    target, source = memory.job(target_id), memory.job(source_id)
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
    memory.require_complete(source_id)
    memory.require_complete(target_id)
    units = memory.units_of(source_id)
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
        log.dirty.units.add(unit.serial)
    memory.move_units([u.serial for u in units], source_id, target_id)
    source.quantity = source.started = source.scrapped = source.finished = 0
    if target.state is JobState.RELEASED and target.started:
        transition(memory, log, target, JobState.RUNNING, f"merged running units of {source.id}", actor, at)
    elif target.state is JobState.HOLD and target.held_from is JobState.RELEASED and target.started:
        target.held_from = JobState.RUNNING  # it has started units now: Resume returns it to Running
    log.dirty.jobs.update((target_id, source_id))
    source.closed_at = at
    source.held_from = None
    transition(memory, log, source, JobState.CLOSED, f"merged into {target.id}", actor, at)
    if units:
        log.events.append(UnitsMoved(tuple(u.serial for u in units), source.id, target.id, at))
    target_check(log, target, reached, at)
    return target
