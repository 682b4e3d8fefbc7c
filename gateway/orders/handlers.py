"""Applying the order commands: :func:`handle` takes one to the :class:`OrderBook` and, where the seed
asks for it, to the :class:`JobBook` in the same step: a daily schedule creates and releases its jobs,
a back-out closes its job. Filling workorders at unload (:func:`assign_finished_unit`) is here too.
The commands go through the same writer and event log as everything else, so the schedule, its jobs
and the bookings it marks are one transaction, and replaying the log rebuilds them.

Every command checks everything that can refuse before it changes anything, so a refusal leaves both
books exactly as they were.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time
from typing import Any

from gateway.errors import Reason, Refused
from gateway.jobs.book import JobBook, NewJob
from gateway.jobs.model import JobState, Routing, UnitStatus
from gateway.orders.book import OrderBook
from gateway.orders.commands import (
    AddReplacementBooking,
    AssignSerials,
    BackOutJob,
    EditBooking,
    EditWorkorder,
    MarkWorkorderFilled,
    OrderCommand,
    ReceiveOrder,
    RunSchedule,
    SetScheduledWithoutBooking,
    UnassignSerial,
    UpdateOrder,
)
from gateway.orders.costs import unit_cost
from gateway.orders.schedule import make_schedule

# Bookings name parts, not revisions. A part whose engineering has a default routing template runs
# that template's revision; any other part runs in automatic mode as this revision.
DEFAULT_REVISION = "A"


def handle(orders: OrderBook, jobs: JobBook, command: OrderCommand, at: datetime, actor: str) -> dict[str, Any]:
    """Apply one command; returns its outputs. Raises Refused having changed nothing."""
    match command:
        case ReceiveOrder():
            booking, workorder = orders.receive_order(
                command.order_id, command.due, command.priority, command.parts, command.casting
            )
            return {"BookingId": booking.id, "WorkorderId": workorder.id}
        case UpdateOrder():
            was_filled = _is_filled(orders, command.order_id)
            written = orders.update_order(command.order_id, command.parts, at, actor, command.reason)
            if was_filled and not orders.workorder(command.order_id).filled:
                _take_costs_again(orders, jobs, command.order_id)
            return {"Bookings": [b.id for b in written]}
        case EditBooking():
            edited = orders.edit_booking(
                command.booking_id, command.part, command.quantity, at=at, actor=actor, reason=command.reason
            )
            return {"BookingId": command.booking_id, "Removed": edited is None}
        case SetScheduledWithoutBooking():
            orders.set_scheduled_without_booking(
                command.part, command.quantity, at=at, actor=actor, reason=command.reason
            )
        case EditWorkorder():
            orders.edit_workorder(
                command.workorder_id, command.part, command.quantity, at=at, actor=actor, reason=command.reason
            )
        case AddReplacementBooking():
            booking = orders.add_replacement_booking(
                command.part,
                due=command.due,
                priority=command.priority,
                at=at,
                actor=actor,
                reason=command.reason,
                quantity=command.quantity,
                replaces=command.replaces,
                casting=command.casting,
            )
            return {"BookingId": booking.id}
        case BackOutJob():
            return _back_out(orders, jobs, command, at, actor)
        case RunSchedule():
            return _run_schedule(orders, jobs, command, at, actor)
        case AssignSerials():
            pairs = [(serial, _finished_part(jobs, serial)) for serial in command.serials]
            costs = {serial: unit_cost(serial, jobs.units[serial].cost) for serial, _ in pairs}
            orders.assign_serials_bulk(
                command.workorder_id, pairs, at=at, actor=actor, reason=command.reason, costs=costs
            )
            return {"Assigned": len(pairs)}
        case UnassignSerial():
            owner = orders.workorder_of(command.serial)
            if command.workorder_id and owner != command.workorder_id:
                orders.workorder(command.workorder_id)  # NotFound for an unknown workorder
                raise Refused(
                    Reason.NOT_FOUND, f"serial {command.serial!r} is not in workorder {command.workorder_id!r}"
                )
            return {"WorkorderId": orders.unassign_serial(command.serial, at=at, actor=actor, reason=command.reason)}
        case MarkWorkorderFilled():
            orders.mark_filled(command.workorder_id, at, actor=actor, reason=command.reason)
        case _:
            raise TypeError(f"unknown order command {command!r}")
    return {}


def assign_finished_unit(orders: OrderBook, jobs: JobBook, serial: str, at: datetime) -> str | None:
    """At unload: a finished serial goes to the soonest-due unfilled workorder of its part, if any needs it.

    Never refuses: it runs after the station report that finished the unit was applied, and a serial
    someone already assigned by hand simply stays where it is.
    """
    unit = jobs.units.get(serial)
    if unit is None or unit.status is not UnitStatus.FINISHED or orders.workorder_of(serial) is not None:
        return None
    return orders.assign_serial(serial, jobs.jobs[unit.job_id].part, at, unit_cost(serial, unit.cost))


def _is_filled(orders: OrderBook, workorder_id: object) -> bool:
    if not isinstance(workorder_id, str):
        return False
    try:
        return orders.workorder(workorder_id).filled
    except Refused:  # no such workorder: the update refuses it
        return False


def _take_costs_again(orders: OrderBook, jobs: JobBook, workorder_id: str) -> None:
    """A raised workorder is no longer filled: its serials' times, let go when it filled, are taken again
    from their units (the writer reads units that left memory back first: CellModel.references), so the
    report it gets when it fills again covers every serial."""
    workorder = orders.workorder(workorder_id)
    costs = {
        serial: unit_cost(serial, unit.cost)
        for serial in workorder.all_serials
        if serial not in workorder.costs and (unit := jobs.units.get(serial)) is not None
    }
    orders.keep_costs(workorder_id, costs)


def _finished_part(jobs: JobBook, serial: str) -> str:
    unit = jobs.unit(serial)
    if unit.status is not UnitStatus.FINISHED:
        raise Refused(
            Reason.INVALID_TRANSITION,
            f"serial {serial!r} is {unit.status.value}; only finished parts are filled into workorders",
        )
    return jobs.jobs[unit.job_id].part


def _check_text(value: object, what: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise Refused(Reason.INVALID_ARGUMENT, f"{what} must be a non-empty string")


def _back_out(orders: OrderBook, jobs: JobBook, command: BackOutJob, at: datetime, actor: str) -> dict[str, Any]:
    job = jobs.job(command.job_id)
    if job.state is JobState.CLOSED:
        raise Refused(Reason.JOB_CLOSED, f"job {job.id} is closed already; there is nothing left to back out")
    jobs.check_close(job.id)  # e.g. on hold with units in WIP: refused before the order side changes
    _check_text(command.reason, "reason")
    _check_text(actor, "actor")
    # What the job still owed: the same "freed" quantity Close reports (scrapped units are owed again).
    owed = max(0, job.quantity - (job.started - job.scrapped))
    due = command.due if command.due is not None else (job.due.date() if job.due is not None else at.date())
    priority = command.priority if command.priority is not None else job.priority
    booking_id = ""
    if owed:
        # The order side checks everything it needs first; the close below cannot refuse any more.
        booking = orders.back_out(
            job.id, job.part, owed, due=due, priority=priority, at=at, actor=actor, reason=command.reason
        )
        booking_id = booking.id
    variance = jobs.close(job.id, f"backed out: {command.reason}", actor, at)
    return {
        "BookingId": booking_id,
        "Quantity": owed,
        "Variance": {
            "ordered": variance.ordered,
            "started": variance.started,
            "finished": variance.finished,
            "scrapped": variance.scrapped,
            "wip": variance.wip,
            "freed": variance.freed,
        },
    }


def _run_schedule(orders: OrderBook, jobs: JobBook, command: RunSchedule, at: datetime, actor: str) -> dict[str, Any]:
    taken = {s.id for s in orders.schedules}
    schedule_id = command.schedule_id or _next_schedule_id(taken, at)
    if schedule_id in taken:
        raise Refused(Reason.DUPLICATE_ID, f"schedule {schedule_id!r} exists already")
    if command.due_before is not None and (
        isinstance(command.due_before, datetime) or not isinstance(command.due_before, date)
    ):
        raise Refused(Reason.INVALID_ARGUMENT, f"due_before must be a date, not {command.due_before!r}")
    bookings = orders.unscheduled_bookings(due_before=command.due_before)
    plans: dict[str, str] = {}  # part -> revision its job runs
    part_load: dict[str, dict[str, float]] = {}
    for part in sorted({p for b in bookings for p in b.parts}):
        revision = _revision_for(jobs, part)
        routing = _routing_for(jobs, part, revision)
        if routing is None or (jobs.require_approved_templates and not jobs.has_usable_template(part, revision)):
            continue  # no job can be released for it: make_schedule lists it in parts_without_routing
        plans[part] = revision
        load: dict[str, float] = {}
        for step in routing:
            if step.expected_seconds:
                load[step.group] = load.get(step.group, 0.0) + step.expected_seconds
        part_load[part] = load
    schedule = make_schedule(
        schedule_id,
        at,
        command.expected_hours,
        bookings,
        orders.scheduled_without_bookings,
        command.capacity,
        part_load,
    )
    # Everything that could refuse has been checked: the jobs are created and released, then the
    # bookings marked, all in this one command.
    job_ids: dict[str, str] = {}
    for part, quantity in schedule.jobs.items():
        mine = [b for b in bookings if part in b.parts]
        due = min(b.due for b in mine)
        request = NewJob(
            part=part,
            revision=plans[part],
            quantity=quantity,
            due=datetime.combine(due, time(0), tzinfo=UTC),
            priority=max(b.priority for b in mine),
        )
        job = jobs.create_job(request, at, actor)
        jobs.release(job.id, actor, at, f"daily schedule {schedule_id}")
        job_ids[part] = job.id
    orders.apply_schedule(replace(schedule, job_ids=job_ids, due_before=command.due_before))
    return {"ScheduleId": schedule_id, "Jobs": job_ids}


def _next_schedule_id(taken: set[str], at: datetime) -> str:
    base = f"S-{at.date().isoformat()}"
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def _revision_for(jobs: JobBook, part: str) -> str:
    revisions = sorted(rev for (p, rev), spec in jobs.specs.items() if p == part and spec.default_template_id)
    return revisions[-1] if revisions else DEFAULT_REVISION


def _routing_for(jobs: JobBook, part: str, revision: str) -> Routing | None:
    """The routing a new job of this part would get (as JobBook.create_job picks it), None if none."""
    spec = jobs.specs.get((part, revision))
    if spec is not None and spec.default_template_id:
        return jobs.templates[spec.default_template_id].steps
    return jobs.layout.process or None
