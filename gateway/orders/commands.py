"""Commands of the ERP and of supervisors on bookings, the daily schedule and workorders.

Each is a value with a ``kind`` and its arguments, like :mod:`gateway.jobs.commands`; :func:`handle`
applies one to the :class:`OrderBook` and, where the seed asks for it, to the :class:`JobBook` in the
same step: a daily schedule creates and releases its jobs, a back-out closes its job. They go through
the same writer and event log as everything else, so the schedule, its jobs and the bookings it marks
are one transaction, and replaying the log rebuilds them.

Every command checks everything that can refuse before it changes anything, so a refusal leaves both
books exactly as they were.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time
from typing import Any, ClassVar

from gateway.errors import Reason, Refused
from gateway.jobs.book import JobBook, NewJob
from gateway.jobs.model import JobState, Routing, UnitStatus
from gateway.orders.book import OrderBook
from gateway.orders.costs import unit_cost
from gateway.orders.schedule import make_schedule

# Bookings name parts, not revisions. A part whose engineering has a default routing template runs
# that template's revision; any other part runs in automatic mode as this revision.
DEFAULT_REVISION = "A"


@dataclass(frozen=True, slots=True)
class OrderCommand:
    kind: ClassVar[str] = ""
    source: ClassVar[str] = "orders"


def _as_date(command: OrderCommand, name: str) -> None:
    """Dates come back from the event log as ISO text; anything else is left for the domain to refuse."""
    value = getattr(command, name)
    if isinstance(value, str):
        with suppress(ValueError):
            object.__setattr__(command, name, date.fromisoformat(value))


def _as_dict(command: OrderCommand, name: str) -> None:
    # A command is a value: keep a copy, so the caller's dict can change without changing it.
    value = getattr(command, name)
    if isinstance(value, Mapping):
        object.__setattr__(command, name, dict(value))


@dataclass(frozen=True, slots=True)
class ReceiveOrder(OrderCommand):
    """A new order: a booking and a workorder with the same id, due date, priority and quantities."""

    kind: ClassVar[str] = "ReceiveOrder"
    order_id: str
    due: date
    priority: int
    parts: Mapping[str, int]
    casting: str = ""

    def __post_init__(self) -> None:
        _as_date(self, "due")
        _as_dict(self, "parts")


@dataclass(frozen=True, slots=True)
class UpdateOrder(OrderCommand):
    """The order's quantities changed to ``parts`` (the whole new set): the seed's order-update rules."""

    kind: ClassVar[str] = "UpdateOrder"
    order_id: str
    parts: Mapping[str, int]
    reason: str = "order updated"

    def __post_init__(self) -> None:
        _as_dict(self, "parts")


@dataclass(frozen=True, slots=True)
class EditBooking(OrderCommand):
    """Quantity fix-up of an unscheduled booking; 0 drops the part."""

    kind: ClassVar[str] = "EditBooking"
    booking_id: str
    part: str
    quantity: int
    reason: str


@dataclass(frozen=True, slots=True)
class SetScheduledWithoutBooking(OrderCommand):
    """Quantity fix-up of the scheduled-parts-without-bookings table (e.g. a re-machined extra part)."""

    kind: ClassVar[str] = "SetScheduledWithoutBooking"
    part: str
    quantity: int
    reason: str


@dataclass(frozen=True, slots=True)
class EditWorkorder(OrderCommand):
    """Quantity fix-up of an unfilled workorder; 0 drops a part (not the last one)."""

    kind: ClassVar[str] = "EditWorkorder"
    workorder_id: str
    part: str
    quantity: int
    reason: str


@dataclass(frozen=True, slots=True)
class AddReplacementBooking(OrderCommand):
    """A new booking for scrapped parts; workorders stay as they are."""

    kind: ClassVar[str] = "AddReplacementBooking"
    part: str
    due: date
    reason: str
    quantity: int = 1
    priority: int = 0
    replaces: str = ""
    casting: str = ""

    def __post_init__(self) -> None:
        _as_date(self, "due")


@dataclass(frozen=True, slots=True)
class BackOutJob(OrderCommand):
    """Close a job and book its unstarted quantity again (due date and priority: the job's, unless given)."""

    kind: ClassVar[str] = "BackOutJob"
    job_id: str
    reason: str
    due: date | None = None
    priority: int | None = None

    def __post_init__(self) -> None:
        _as_date(self, "due")


@dataclass(frozen=True, slots=True)
class RunSchedule(OrderCommand):
    """The daily schedule. ``capacity``: seconds of work per resource group for the period.

    ``due_before``: only bookings due before this date are read (None: all unscheduled bookings).
    ``schedule_id`` "" = ``S-<date>`` (``S-<date>-2``, ... when that is taken).
    """

    kind: ClassVar[str] = "RunSchedule"
    capacity: Mapping[str, float]
    expected_hours: float = 24.0
    due_before: date | None = None
    schedule_id: str = ""

    def __post_init__(self) -> None:
        _as_date(self, "due_before")
        _as_dict(self, "capacity")


@dataclass(frozen=True, slots=True)
class AssignSerials(OrderCommand):
    """A supervisor assigns finished serials to one workorder (filling stays a separate step)."""

    kind: ClassVar[str] = "AssignSerials"
    workorder_id: str
    serials: tuple[str, ...]
    reason: str = ""


@dataclass(frozen=True, slots=True)
class UnassignSerial(OrderCommand):
    """Take a tentatively assigned serial back out of its unfilled workorder."""

    kind: ClassVar[str] = "UnassignSerial"
    serial: str
    reason: str
    workorder_id: str = ""  # if given, the serial must be in this workorder


@dataclass(frozen=True, slots=True)
class MarkWorkorderFilled(OrderCommand):
    kind: ClassVar[str] = "MarkWorkorderFilled"
    workorder_id: str
    reason: str = ""


ORDER_COMMAND_TYPES: dict[str, type[OrderCommand]] = {
    cls.kind: cls
    for cls in (
        ReceiveOrder, UpdateOrder, EditBooking, SetScheduledWithoutBooking, EditWorkorder, AddReplacementBooking,
        BackOutJob, RunSchedule, AssignSerials, UnassignSerial, MarkWorkorderFilled,
    )
}  # fmt: skip


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
