"""The OrderBook: bookings, workorders and the scheduled-parts-without-bookings table, the ERP boundary of
the cell.

A *booking* is demand at the cell's input, a *workorder* collects finished serials at its output; an
order arrives as one of each with the same id and from then on they are edited independently (seed
``001``). :class:`OrderBook` is the one aggregate that owns all three plus an audit trail of every
manual edit. It is pure: no I/O, no clock; every time is an argument. The bookings
(:mod:`gateway.orders.bookings`) and the workorders (:mod:`gateway.orders.workorders`) are collections
and so are the table and the applied schedules (:mod:`gateway.orders.scheduled`); the book checks a
command's arguments, has them change together, and records the audit trail (:mod:`gateway.orders.audit`).

Every command validates first and mutates after, so a :class:`~gateway.errors.Refused` leaves the
book exactly as it was. (Somewhat over 400 lines: this is the aggregate's whole interface, each
command a few checks, a change through the collections and an audit entry.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime

from gateway.errors import Reason, Refused
from gateway.orders.audit import AuditAction, AuditEntry, AuditTrail
from gateway.orders.bookings import Booking, Bookings, BookingWrite
from gateway.orders.checks import (
    check_at,
    check_due,
    check_id,
    check_manual,
    check_parts,
    check_priority,
    check_quantity,
)
from gateway.orders.costs import UnitCost
from gateway.orders.schedule import DailySchedule
from gateway.orders.scheduled import ScheduledParts
from gateway.orders.workorders import Workorder, Workorders, serial_counts


@dataclass(frozen=True, slots=True)
class OrderChanges:
    """What an :class:`OrderBook` changed since its last drain. A booking id that is no longer in the
    book was removed; ``table`` says the scheduled-parts-without-bookings table changed.
    """

    bookings: frozenset[str] = frozenset()
    workorders: frozenset[str] = frozenset()
    table: bool = False
    schedules: tuple[str, ...] = ()
    audit: tuple[AuditEntry, ...] = ()
    generated: int = 0

    def __bool__(self) -> bool:
        return bool(self.bookings or self.workorders or self.table or self.schedules or self.audit)


class OrderBook:
    """Bookings, workorders, the scheduled-parts-without-bookings table and the audit trail."""

    def __init__(self) -> None:
        self._bookings = Bookings()
        self._workorders = Workorders()
        self._scheduled = ScheduledParts()
        self._audit = AuditTrail()

    @classmethod
    def restore(
        cls,
        *,
        bookings: Iterable[Booking],
        workorders: Iterable[Workorder],
        scheduled_without_bookings: Mapping[str, int],
        schedules: Iterable[DailySchedule],
        generated: int = 0,
    ) -> OrderBook:
        """A book filled with stored state (the store's ``load_model``); the audit trail stays stored."""
        book = cls()
        book._bookings = Bookings(bookings, generated=generated)
        book._workorders = Workorders(workorders)
        book._scheduled = ScheduledParts(dict(scheduled_without_bookings), tuple(schedules))
        return book

    def drain(self) -> OrderChanges:
        """What changed since the last drain (for the writer to save in the same transaction); the audit
        entries drained are no longer held in memory."""
        table, schedules = self._scheduled.drain()
        return OrderChanges(
            bookings=self._bookings.drain(),
            workorders=self._workorders.drain(),
            table=table,
            schedules=schedules,
            audit=self._audit.drain(),
            generated=self._bookings.generated,
        )

    # ------------------------------------------------------------------ queries

    def booking(self, booking_id: str) -> Booking:
        return self._bookings.get(booking_id)

    def workorder(self, workorder_id: str) -> Workorder:
        return self._workorders.get(workorder_id)

    @property
    def bookings(self) -> tuple[Booking, ...]:
        return self._bookings.all

    @property
    def workorders(self) -> tuple[Workorder, ...]:
        return self._workorders.all

    def unscheduled_bookings(self, due_before: date | None = None) -> list[Booking]:
        """Unscheduled bookings due strictly before ``due_before`` (all if None), most urgent first."""
        return self._bookings.unscheduled(due_before)

    def unfilled_workorders(self, part: str | None = None) -> list[Workorder]:
        """Unfilled workorders (holding ``part`` if given), soonest due first."""
        return self._workorders.unfilled(part)

    @property
    def scheduled_without_bookings(self) -> dict[str, int]:
        return self._scheduled.table

    @property
    def audit(self) -> tuple[AuditEntry, ...]:
        """Audit entries since the last :meth:`drain` (the writer stores them as they are drained)."""
        return self._audit.entries

    def schedule(self, schedule_id: str) -> DailySchedule:
        return self._scheduled.get(schedule_id)

    @property
    def schedules(self) -> tuple[DailySchedule, ...]:
        return self._scheduled.all

    def workorder_of(self, serial: str) -> str | None:
        return self._workorders.owner_of(serial)

    # ------------------------------------------------------------------ orders

    def receive_order(
        self,
        order_id: str,
        due: date,
        priority: int,
        parts: Mapping[str, int],
        casting: str = "",
    ) -> tuple[Booking, Workorder]:
        """A new order becomes a booking and a workorder with the same id, due date, priority, parts."""
        check_id(order_id, "order id")
        check_due(due)
        check_priority(priority)
        clean = check_parts(parts)
        if order_id in self._bookings or order_id in self._workorders:
            raise Refused(Reason.DUPLICATE_ID, f"order {order_id!r} already exists")
        booking = Booking(order_id, due, priority, clean, casting)
        workorder = Workorder(order_id, due, priority, dict(clean))
        self._bookings.put(booking)
        self._workorders.put(workorder)
        return booking, workorder

    def update_order(
        self,
        order_id: str,
        parts: Mapping[str, int],
        at: datetime,
        actor: str,
        reason: str = "order updated",
    ) -> list[Booking]:
        """The order's quantities changed to ``parts`` (the full new set). Returns the bookings written.

        Booking side: an unscheduled booking is edited in place. A scheduled one stays as it is; an
        increase goes to the first ``<id>-extra[n]`` booking that is not yet scheduled (created if
        needed, same due date, priority and casting); a decrease is taken from an unscheduled extra
        booking as far as it goes (what a scheduled booking already asked for cannot be taken back and
        simply ends up as spare finished parts). Workorder side: edited to ``parts``, never below the
        serials already assigned. A filled workorder may only go up: raised, it is no longer filled
        (its cost report is dropped) and fills again from new serials, its report then covering all of
        them; a decrease of a filled workorder is refused.
        """
        check_at(at)
        check_id(actor, "actor")
        new = check_parts(parts)
        main = self.booking(order_id)
        workorder = self.workorder(order_id)
        workorder_changes = dict(workorder.parts) != new
        if workorder_changes:
            self._workorders.check_editable(workorder, new, may_reopen=True)

        writes: list[BookingWrite] = []  # (action, before, after)
        if not main.scheduled:
            if dict(main.parts) != new:
                writes.append((AuditAction.BOOKING_EDITED, main, replace(main, parts=new)))
        else:
            writes = self._bookings.extra_writes(main, new)

        for action, before, after in writes:
            if after.parts:
                self._bookings.put(after)
            else:
                self._bookings.drop(after.id)
                action = AuditAction.BOOKING_REMOVED
            self._audit.record(at, actor, action, after.id, reason, before.parts if before else {}, after.parts)
        if workorder_changes:
            edited = replace(workorder, parts=dict(new))
            if workorder.filled:  # raised: it takes serials again for the difference
                edited = replace(edited, filled=False, filled_at=None, report=None)
            self._workorders.put(edited)
            self._audit.record(at, actor, AuditAction.WORKORDER_EDITED, order_id, reason, workorder.parts, new)
        return [after for _, _, after in writes if after.parts]

    # ------------------------------------------------------------------ fix-ups

    def edit_booking(
        self, booking_id: str, part: str, quantity: int, *, at: datetime, actor: str, reason: str
    ) -> Booking | None:
        """Fix up the demand of an unscheduled booking. 0 drops the part; a booking left without parts
        is removed (returns None). A scheduled booking is no longer read, so editing it is refused.
        """
        check_manual(at, actor, reason)
        check_id(part, "part")
        check_quantity(quantity, allow_zero=True)
        booking = self.booking(booking_id)
        if booking.scheduled:
            raise Refused(
                Reason.INVALID_TRANSITION,
                f"booking {booking_id!r} is already scheduled; fix the count in the scheduled parts "
                "without bookings table instead",
            )
        qtys = dict(booking.parts)
        if quantity == 0:
            qtys.pop(part, None)
        else:
            qtys[part] = quantity
        if qtys == dict(booking.parts):
            return booking
        if not qtys:
            self._bookings.drop(booking_id)
            self._audit.record(at, actor, AuditAction.BOOKING_REMOVED, booking_id, reason, booking.parts, {})
            return None
        edited = replace(booking, parts=qtys)
        self._bookings.put(edited)
        self._audit.record(at, actor, AuditAction.BOOKING_EDITED, booking_id, reason, booking.parts, qtys)
        return edited

    def set_scheduled_without_booking(self, part: str, quantity: int, *, at: datetime, actor: str, reason: str) -> None:
        """Set the scheduled-without-booking count of ``part`` (e.g. +1 for a re-machined extra part)."""
        check_manual(at, actor, reason)
        check_id(part, "part")
        check_quantity(quantity, allow_zero=True)
        before = self._scheduled.count(part)
        if before == quantity:
            return
        self._scheduled.set_count(part, quantity)
        self._audit.record(
            at,
            actor,
            AuditAction.SCHEDULED_WITHOUT_BOOKING_SET,
            part,
            reason,
            {part: before} if before else {},
            {part: quantity} if quantity else {},
        )

    def edit_workorder(
        self, workorder_id: str, part: str, quantity: int, *, at: datetime, actor: str, reason: str
    ) -> Workorder:
        """Fix up the fill quantity of an unfilled workorder; 0 drops a part (not the last one)."""
        check_manual(at, actor, reason)
        check_id(part, "part")
        check_quantity(quantity, allow_zero=True)
        workorder = self.workorder(workorder_id)
        qtys = dict(workorder.parts)
        if quantity == 0:
            qtys.pop(part, None)
        else:
            qtys[part] = quantity
        if not qtys:
            raise Refused(Reason.INVALID_ARGUMENT, f"workorder {workorder_id!r} would be left with no parts")
        if qtys == dict(workorder.parts):
            return workorder
        self._workorders.check_editable(workorder, qtys)
        edited = replace(workorder, parts=qtys)
        self._workorders.put(edited)
        self._audit.record(at, actor, AuditAction.WORKORDER_EDITED, workorder_id, reason, workorder.parts, qtys)
        return edited

    def add_replacement_booking(
        self,
        part: str,
        *,
        due: date,
        priority: int,
        at: datetime,
        actor: str,
        reason: str,
        quantity: int = 1,
        replaces: str = "",
        casting: str = "",
    ) -> Booking:
        """A new booking for a scrapped part (workorders unchanged): id ``<replaces or part>-repl-<n>``."""
        check_manual(at, actor, reason)
        prefix = f"{replaces or part}-repl"
        return self._book_again(
            prefix, AuditAction.REPLACEMENT_BOOKING, part, quantity, due, priority, at, actor, reason, casting
        )

    def back_out(
        self,
        job_id: str,
        part: str,
        quantity: int,
        *,
        due: date,
        priority: int,
        at: datetime,
        actor: str,
        reason: str,
        casting: str = "",
    ) -> Booking:
        """Unstarted quantity of a job was taken out of the cell: book it again, ``<job>-backout-<n>``.

        Closing the job itself happens in the jobs domain; workorders stay as they are.
        """
        check_manual(at, actor, reason)
        check_id(job_id, "job id")
        prefix = f"{job_id}-backout"
        return self._book_again(
            prefix, AuditAction.JOB_BACKED_OUT, part, quantity, due, priority, at, actor, reason, casting
        )

    def _book_again(
        self,
        prefix: str,
        action: AuditAction,
        part: str,
        quantity: int,
        due: date,
        priority: int,
        at: datetime,
        actor: str,
        reason: str,
        casting: str,
    ) -> Booking:
        """A booking of one part, ``<prefix>-<n>``, audited as ``action`` (a replacement, a back-out)."""
        check_id(part, "part")
        check_quantity(quantity)
        check_due(due)
        check_priority(priority)
        booking = Booking(self._bookings.generate_id(prefix), due, priority, {part: quantity}, casting)
        self._bookings.put(booking)
        self._audit.record(at, actor, action, booking.id, reason, {}, booking.parts)
        return booking

    # ------------------------------------------------------------------ schedule

    def apply_schedule(self, schedule: DailySchedule) -> None:
        """Mark the schedule's bookings scheduled and replace the scheduled-parts-without-bookings table."""
        if schedule.id in self._scheduled:
            raise Refused(Reason.DUPLICATE_ID, f"schedule {schedule.id!r} was already applied")
        if len(set(schedule.bookings_scheduled)) != len(schedule.bookings_scheduled):
            raise Refused(Reason.INVALID_ARGUMENT, f"schedule {schedule.id!r} lists a booking twice")
        for booking_id in schedule.bookings_scheduled:
            booking = self.booking(booking_id)
            if booking.scheduled:
                raise Refused(Reason.INVALID_TRANSITION, f"booking {booking_id!r} is already scheduled")
        for booking_id in schedule.bookings_scheduled:
            self._bookings.put(replace(self._bookings.get(booking_id), scheduled=True))
        self._scheduled.apply(schedule)

    # ------------------------------------------------------------------ filling

    def assign_serial(self, serial: str, part: str, at: datetime, cost: UnitCost | None = None) -> str | None:
        """At unload: the serial goes to the most urgent unfilled workorder that needs ``part``
        (:meth:`Workorders.assign_serial <gateway.orders.workorders.Workorders.assign_serial>`)."""
        return self._workorders.assign_serial(serial, part, at, cost)

    def assign_serials_bulk(
        self,
        workorder_id: str,
        serials_with_parts: Iterable[tuple[str, str]],
        *,
        at: datetime,
        actor: str,
        reason: str = "",
        costs: Mapping[str, UnitCost] | None = None,
    ) -> Workorder:
        """A supervisor assigns finished (serial, part) pairs to one workorder; filling stays explicit.

        ``costs``: the serials' times, kept for the workorder's cost report.
        """
        check_at(at)
        check_id(actor, "actor")
        pairs = list(serials_with_parts)
        workorder = self.workorder(workorder_id)
        updated = self._workorders.assign_serials(workorder, pairs, costs)
        if not pairs:
            return updated
        self._audit.record(
            at,
            actor,
            AuditAction.SERIALS_ASSIGNED,
            workorder_id,
            reason,
            serial_counts(workorder),
            serial_counts(updated),
        )
        return updated

    def unassign_serial(self, serial: str, *, at: datetime, actor: str, reason: str) -> str:
        """Take a tentatively assigned serial back out of its (unfilled) workorder; returns its id."""
        check_manual(at, actor, reason)
        workorder, updated = self._workorders.unassign_serial(serial)
        self._audit.record(
            at,
            actor,
            AuditAction.SERIAL_UNASSIGNED,
            workorder.id,
            reason,
            serial_counts(workorder),
            serial_counts(updated),
        )
        return workorder.id

    def keep_costs(self, workorder_id: str, costs: Mapping[str, UnitCost]) -> None:
        """Keep the times of serials an unfilled workorder holds, for its cost report
        (:meth:`Workorders.keep_costs <gateway.orders.workorders.Workorders.keep_costs>`)."""
        self._workorders.keep_costs(workorder_id, costs)

    def mark_filled(self, workorder_id: str, at: datetime, *, actor: str, reason: str = "") -> Workorder:
        """A supervisor marks a workorder filled, even short of its quantities (audited)."""
        check_at(at)
        check_id(actor, "actor")
        workorder = self.workorder(workorder_id)
        updated = self._workorders.mark_filled(workorder, at)
        counts = serial_counts(workorder)
        self._audit.record(at, actor, AuditAction.WORKORDER_MARKED_FILLED, workorder_id, reason, counts, counts)
        return updated
