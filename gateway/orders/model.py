"""Bookings, workorders and the scheduled-parts-without-bookings table: the ERP boundary of the cell.

A *booking* is demand at the cell's input, a *workorder* collects finished serials at its output; an
order arrives as one of each with the same id and from then on they are edited independently (seed
``001``). :class:`OrderBook` is the one aggregate that owns all three plus an audit trail of every
manual edit. It is pure: no I/O, no clock; every time is an argument.

Every command validates first and mutates after, so a :class:`~gateway.errors.Refused` leaves the
book exactly as it was.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from gateway.errors import Reason, Refused

if TYPE_CHECKING:
    from gateway.orders.costs import CostReport, UnitCost
    from gateway.orders.schedule import DailySchedule


@dataclass(frozen=True, slots=True)
class Booking:
    """Demand for the cell: what to make, by when. ``scheduled`` once a daily schedule covered it."""

    id: str
    due: date
    priority: int
    parts: Mapping[str, int]
    casting: str = ""
    scheduled: bool = False

    def quantity(self, part: str) -> int:
        return self.parts.get(part, 0)


@dataclass(frozen=True, slots=True)
class Workorder:
    """Output of the cell: finished serials collected per part until the fill quantities are met."""

    id: str
    due: date
    priority: int
    parts: Mapping[str, int]
    serials: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    filled: bool = False
    filled_at: datetime | None = None
    # Not part of the workorder's value: what its cost report is made of. Each assigned serial's times,
    # taken when it was assigned (a finished unit's times never change again), so that the report
    # needs no unit in memory when the workorder fills; once filled, the report itself, and the
    # serials' times are let go. An order update that raises a filled workorder drops the report, and
    # the times are taken again from the units (OrderBook.keep_costs).
    costs: Mapping[str, UnitCost] = field(default_factory=dict, compare=False, repr=False)
    report: CostReport | None = field(default=None, compare=False, repr=False)

    def assigned(self, part: str) -> int:
        return len(self.serials.get(part, ()))

    def remaining(self, part: str) -> int:
        """How many more serials of ``part`` this workorder takes (0 for a part it does not hold)."""
        return max(0, self.parts.get(part, 0) - self.assigned(part))

    @property
    def complete(self) -> bool:
        return all(self.assigned(part) >= qty for part, qty in self.parts.items())

    @property
    def all_serials(self) -> tuple[str, ...]:
        return tuple(s for part in sorted(self.serials) for s in self.serials[part])


class AuditAction(StrEnum):
    BOOKING_EDITED = "BookingEdited"
    BOOKING_REMOVED = "BookingRemoved"
    EXTRA_BOOKING = "ExtraBooking"
    REPLACEMENT_BOOKING = "ReplacementBooking"
    JOB_BACKED_OUT = "JobBackedOut"
    SCHEDULED_WITHOUT_BOOKING_SET = "ScheduledWithoutBookingSet"
    WORKORDER_EDITED = "WorkorderEdited"
    SERIALS_ASSIGNED = "SerialsAssigned"
    SERIAL_UNASSIGNED = "SerialUnassigned"
    WORKORDER_MARKED_FILLED = "WorkorderMarkedFilled"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One manual change. ``before``/``after`` are part quantities (for serial actions: serial counts)."""

    at: datetime
    actor: str
    action: AuditAction
    subject: str
    reason: str
    before: Mapping[str, int]
    after: Mapping[str, int]


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


_EXTRA_SUFFIX = re.compile(r"-extra(\d*)$")


def extra_booking_id(order_id: str, n: int) -> str:
    """``XYZ-extra``, ``XYZ-extra2``, ``XYZ-extra3``, ... for the n-th extra booking of order ``XYZ``."""
    return f"{order_id}-extra" if n == 1 else f"{order_id}-extra{n}"


class OrderBook:
    """Bookings, workorders, the scheduled-parts-without-bookings table and the audit trail."""

    def __init__(self) -> None:
        self._bookings: dict[str, Booking] = {}
        self._workorders: dict[str, Workorder] = {}
        self._without_bookings: dict[str, int] = {}
        self._serial_owner: dict[str, str] = {}
        self._schedules: dict[str, DailySchedule] = {}
        self._audit: list[AuditEntry] = []
        self._generated = 0
        # What changed since the last drain(), for the writer to save in the same transaction.
        self._dirty_bookings: set[str] = set()
        self._dirty_workorders: set[str] = set()
        self._dirty_table = False
        self._new_schedules: list[str] = []

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
        book._bookings = {b.id: b for b in bookings}
        book._workorders = {w.id: w for w in workorders}
        book._without_bookings = {p: q for p, q in scheduled_without_bookings.items() if q > 0}
        book._schedules = {s.id: s for s in schedules}
        book._serial_owner = {s: w.id for w in book._workorders.values() for s in w.all_serials}
        book._generated = generated
        return book

    def drain(self) -> OrderChanges:
        """What changed since the last drain; the audit entries drained are no longer held in memory."""
        changes = OrderChanges(
            bookings=frozenset(self._dirty_bookings),
            workorders=frozenset(self._dirty_workorders),
            table=self._dirty_table,
            schedules=tuple(self._new_schedules),
            audit=tuple(self._audit),
            generated=self._generated,
        )
        self._dirty_bookings.clear()
        self._dirty_workorders.clear()
        self._dirty_table = False
        self._new_schedules.clear()
        self._audit.clear()
        return changes

    # ------------------------------------------------------------------ queries

    def booking(self, booking_id: str) -> Booking:
        try:
            return self._bookings[booking_id]
        except KeyError:
            raise Refused(Reason.NOT_FOUND, f"no booking {booking_id!r}") from None

    def workorder(self, workorder_id: str) -> Workorder:
        try:
            return self._workorders[workorder_id]
        except KeyError:
            raise Refused(Reason.NOT_FOUND, f"no workorder {workorder_id!r}") from None

    @property
    def bookings(self) -> tuple[Booking, ...]:
        return tuple(self._bookings.values())

    @property
    def workorders(self) -> tuple[Workorder, ...]:
        return tuple(self._workorders.values())

    def unscheduled_bookings(self, due_before: date | None = None) -> list[Booking]:
        """Unscheduled bookings due strictly before ``due_before`` (all if None), most urgent first."""
        found = [b for b in self._bookings.values() if not b.scheduled and (due_before is None or b.due < due_before)]
        return sorted(found, key=_urgency)

    def unfilled_workorders(self, part: str | None = None) -> list[Workorder]:
        """Unfilled workorders (holding ``part`` if given), soonest due first."""
        found = [w for w in self._workorders.values() if not w.filled and (part is None or part in w.parts)]
        return sorted(found, key=_urgency)

    @property
    def scheduled_without_bookings(self) -> dict[str, int]:
        return dict(self._without_bookings)

    @property
    def audit(self) -> tuple[AuditEntry, ...]:
        """Audit entries since the last :meth:`drain` (the writer stores them as they are drained)."""
        return tuple(self._audit)

    def schedule(self, schedule_id: str) -> DailySchedule:
        try:
            return self._schedules[schedule_id]
        except KeyError:
            raise Refused(Reason.NOT_FOUND, f"no schedule {schedule_id!r}") from None

    @property
    def schedules(self) -> tuple[DailySchedule, ...]:
        return tuple(self._schedules.values())

    def workorder_of(self, serial: str) -> str | None:
        return self._serial_owner.get(serial)

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
        _check_id(order_id, "order id")
        _check_due(due)
        _check_priority(priority)
        clean = _check_parts(parts)
        if order_id in self._bookings or order_id in self._workorders:
            raise Refused(Reason.DUPLICATE_ID, f"order {order_id!r} already exists")
        booking = Booking(order_id, due, priority, clean, casting)
        workorder = Workorder(order_id, due, priority, dict(clean))
        self._put_booking(booking)
        self._put_workorder(workorder)
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
        _check_at(at)
        _check_id(actor, "actor")
        new = _check_parts(parts)
        main = self.booking(order_id)
        workorder = self.workorder(order_id)
        workorder_changes = dict(workorder.parts) != new
        if workorder_changes:
            self._check_workorder_editable(workorder, new, may_reopen=True)

        writes: list[tuple[AuditAction, Booking | None, Booking]] = []  # (action, before, after)
        if not main.scheduled:
            if dict(main.parts) != new:
                writes.append((AuditAction.BOOKING_EDITED, main, replace(main, parts=new)))
        else:
            writes = self._extra_booking_writes(main, new)

        for action, before, after in writes:
            if after.parts:
                self._put_booking(after)
            else:
                self._drop_booking(after.id)
                action = AuditAction.BOOKING_REMOVED
            self._record(at, actor, action, after.id, reason, before.parts if before else {}, after.parts)
        if workorder_changes:
            edited = replace(workorder, parts=dict(new))
            if workorder.filled:  # raised: it takes serials again for the difference
                edited = replace(edited, filled=False, filled_at=None, report=None)
            self._put_workorder(edited)
            self._record(at, actor, AuditAction.WORKORDER_EDITED, order_id, reason, workorder.parts, new)
        return [after for _, _, after in writes if after.parts]

    def _extra_booking_writes(
        self, main: Booking, new: Mapping[str, int]
    ) -> list[tuple[AuditAction, Booking | None, Booking]]:
        extras = self._extra_bookings(main.id)
        booked: dict[str, int] = dict(main.parts)
        for extra in extras:
            for part, qty in extra.parts.items():
                booked[part] = booked.get(part, 0) + qty
        deltas = {p: new.get(p, 0) - booked.get(p, 0) for p in sorted(set(new) | set(booked))}

        # Decreases come out of unscheduled extras, newest first.
        edited: dict[str, dict[str, int]] = {}
        for extra in reversed(extras):
            if extra.scheduled:
                continue
            qtys = edited.setdefault(extra.id, dict(extra.parts))
            for part, delta in deltas.items():
                if delta < 0 and qtys.get(part, 0) > 0:
                    take = min(-delta, qtys[part])
                    qtys[part] -= take
                    deltas[part] += take
                    if qtys[part] == 0:
                        del qtys[part]

        increases = {p: d for p, d in deltas.items() if d > 0}
        target: Booking | None = None
        if increases:
            n = 1
            while True:
                existing = self._bookings.get(extra_booking_id(main.id, n))
                if existing is None or not existing.scheduled:
                    target = existing
                    break
                n += 1
            if target is None:
                target = Booking(extra_booking_id(main.id, n), main.due, main.priority, {}, main.casting)
            qtys = edited.setdefault(target.id, dict(target.parts))
            for part, delta in increases.items():
                qtys[part] = qtys.get(part, 0) + delta

        writes: list[tuple[AuditAction, Booking | None, Booking]] = []
        for booking_id, qtys in edited.items():
            before = self._bookings.get(booking_id)
            if before is None and target is not None:  # a new extra booking is always the target
                writes.append((AuditAction.EXTRA_BOOKING, None, replace(target, parts=qtys)))
            elif before is not None and dict(before.parts) != qtys:
                writes.append((AuditAction.BOOKING_EDITED, before, replace(before, parts=qtys)))
        return writes

    def _extra_bookings(self, order_id: str) -> list[Booking]:
        found: list[tuple[int, Booking]] = []
        prefix = f"{order_id}-extra"
        for booking_id, booking in self._bookings.items():
            if not booking_id.startswith(prefix):
                continue
            match = _EXTRA_SUFFIX.fullmatch(booking_id, len(order_id))
            if match is None:
                continue
            digits = match.group(1)
            if digits == "":
                found.append((1, booking))
            elif digits[0] != "0" and int(digits) >= 2:
                found.append((int(digits), booking))
        return [b for _, b in sorted(found, key=lambda nb: nb[0])]

    # ------------------------------------------------------------------ fix-ups

    def edit_booking(
        self, booking_id: str, part: str, quantity: int, *, at: datetime, actor: str, reason: str
    ) -> Booking | None:
        """Fix up the demand of an unscheduled booking. 0 drops the part; a booking left without parts
        is removed (returns None). A scheduled booking is no longer read, so editing it is refused.
        """
        _check_manual(at, actor, reason)
        _check_id(part, "part")
        _check_quantity(quantity, allow_zero=True)
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
            self._drop_booking(booking_id)
            self._record(at, actor, AuditAction.BOOKING_REMOVED, booking_id, reason, booking.parts, {})
            return None
        edited = replace(booking, parts=qtys)
        self._put_booking(edited)
        self._record(at, actor, AuditAction.BOOKING_EDITED, booking_id, reason, booking.parts, qtys)
        return edited

    def set_scheduled_without_booking(self, part: str, quantity: int, *, at: datetime, actor: str, reason: str) -> None:
        """Set the scheduled-without-booking count of ``part`` (e.g. +1 for a re-machined extra part)."""
        _check_manual(at, actor, reason)
        _check_id(part, "part")
        _check_quantity(quantity, allow_zero=True)
        before = self._without_bookings.get(part, 0)
        if before == quantity:
            return
        if quantity == 0:
            del self._without_bookings[part]
        else:
            self._without_bookings[part] = quantity
        self._dirty_table = True
        self._record(
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
        _check_manual(at, actor, reason)
        _check_id(part, "part")
        _check_quantity(quantity, allow_zero=True)
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
        self._check_workorder_editable(workorder, qtys)
        edited = replace(workorder, parts=qtys)
        self._put_workorder(edited)
        self._record(at, actor, AuditAction.WORKORDER_EDITED, workorder_id, reason, workorder.parts, qtys)
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
        _check_manual(at, actor, reason)
        _check_id(part, "part")
        _check_quantity(quantity)
        _check_due(due)
        _check_priority(priority)
        booking_id = self._generate_id(f"{replaces or part}-repl")
        booking = Booking(booking_id, due, priority, {part: quantity}, casting)
        self._put_booking(booking)
        self._record(at, actor, AuditAction.REPLACEMENT_BOOKING, booking_id, reason, {}, booking.parts)
        return booking

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
        _check_manual(at, actor, reason)
        _check_id(job_id, "job id")
        _check_id(part, "part")
        _check_quantity(quantity)
        _check_due(due)
        _check_priority(priority)
        booking_id = self._generate_id(f"{job_id}-backout")
        booking = Booking(booking_id, due, priority, {part: quantity}, casting)
        self._put_booking(booking)
        self._record(at, actor, AuditAction.JOB_BACKED_OUT, booking_id, reason, {}, booking.parts)
        return booking

    # ------------------------------------------------------------------ schedule

    def apply_schedule(self, schedule: DailySchedule) -> None:
        """Mark the schedule's bookings scheduled and replace the scheduled-parts-without-bookings table."""
        if schedule.id in self._schedules:
            raise Refused(Reason.DUPLICATE_ID, f"schedule {schedule.id!r} was already applied")
        if len(set(schedule.bookings_scheduled)) != len(schedule.bookings_scheduled):
            raise Refused(Reason.INVALID_ARGUMENT, f"schedule {schedule.id!r} lists a booking twice")
        for booking_id in schedule.bookings_scheduled:
            booking = self.booking(booking_id)
            if booking.scheduled:
                raise Refused(Reason.INVALID_TRANSITION, f"booking {booking_id!r} is already scheduled")
        for booking_id in schedule.bookings_scheduled:
            self._put_booking(replace(self._bookings[booking_id], scheduled=True))
        self._without_bookings = {p: q for p, q in schedule.scheduled_without_bookings.items() if q > 0}
        self._schedules[schedule.id] = schedule
        self._dirty_table = True
        self._new_schedules.append(schedule.id)

    # ------------------------------------------------------------------ filling

    def assign_serial(self, serial: str, part: str, at: datetime, cost: UnitCost | None = None) -> str | None:
        """At unload: the serial goes to the unfilled workorder with the soonest due date (then higher
        priority, then id) that still needs ``part``; filled when all its quantities are met.
        Returns the workorder id, or None when no workorder needs the part. ``cost``: the serial's
        times, kept for the workorder's cost report.
        """
        _check_at(at)
        _check_id(serial, "serial")
        _check_id(part, "part")
        self._check_serial_free(serial)
        candidates = [w for w in self._workorders.values() if not w.filled and w.remaining(part) > 0]
        if not candidates:
            return None
        workorder = min(candidates, key=_urgency)
        serials = dict(workorder.serials)
        serials[part] = (*serials.get(part, ()), serial)
        updated = replace(workorder, serials=serials, costs=_with_costs(workorder.costs, {serial: cost}))
        if updated.complete:
            updated = _filled(updated, at)
        self._put_workorder(updated)
        self._serial_owner[serial] = workorder.id
        return workorder.id

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
        _check_at(at)
        _check_id(actor, "actor")
        pairs = list(serials_with_parts)
        workorder = self.workorder(workorder_id)
        if workorder.filled:
            raise Refused(Reason.ORDER_FULFILLED, f"workorder {workorder_id!r} is already filled")
        seen: set[str] = set()
        added: dict[str, int] = {}
        for serial, part in pairs:
            _check_id(serial, "serial")
            _check_id(part, "part")
            if serial in seen:
                raise Refused(Reason.DUPLICATE_SERIAL, f"serial {serial!r} is listed twice")
            seen.add(serial)
            self._check_serial_free(serial)
            if part not in workorder.parts:
                raise Refused(Reason.INVALID_ARGUMENT, f"workorder {workorder_id!r} holds no part {part!r}")
            added[part] = added.get(part, 0) + 1
        for part, count in added.items():
            if count > workorder.remaining(part):
                raise Refused(
                    Reason.INVALID_ARGUMENT,
                    f"workorder {workorder_id!r} takes {workorder.remaining(part)} more {part}, not {count}",
                )
        if not pairs:
            return workorder
        serials = {p: list(s) for p, s in workorder.serials.items()}
        for serial, part in pairs:
            serials.setdefault(part, []).append(serial)
            self._serial_owner[serial] = workorder_id
        updated = replace(
            workorder,
            serials={p: tuple(s) for p, s in serials.items()},
            costs=_with_costs(workorder.costs, {s: (costs or {}).get(s) for s, _ in pairs}),
        )
        self._put_workorder(updated)
        self._record(
            at,
            actor,
            AuditAction.SERIALS_ASSIGNED,
            workorder_id,
            reason,
            _serial_counts(workorder),
            _serial_counts(updated),
        )
        return updated

    def unassign_serial(self, serial: str, *, at: datetime, actor: str, reason: str) -> str:
        """Take a tentatively assigned serial back out of its (unfilled) workorder; returns its id."""
        _check_manual(at, actor, reason)
        workorder_id = self._serial_owner.get(serial)
        if workorder_id is None:
            raise Refused(Reason.NOT_FOUND, f"serial {serial!r} is not in any workorder")
        workorder = self._workorders[workorder_id]
        if workorder.filled:
            raise Refused(Reason.ORDER_FULFILLED, f"workorder {workorder_id!r} is already filled")
        serials = {p: tuple(s for s in ss if s != serial) for p, ss in workorder.serials.items()}
        kept = {s: c for s, c in workorder.costs.items() if s != serial}
        updated = replace(workorder, serials={p: ss for p, ss in serials.items() if ss}, costs=kept)
        self._put_workorder(updated)
        del self._serial_owner[serial]
        self._record(
            at,
            actor,
            AuditAction.SERIAL_UNASSIGNED,
            workorder_id,
            reason,
            _serial_counts(workorder),
            _serial_counts(updated),
        )
        return workorder_id

    def keep_costs(self, workorder_id: str, costs: Mapping[str, UnitCost]) -> None:
        """Keep the times of serials an unfilled workorder holds, for its cost report.

        A workorder lets its serials' times go when it fills; one that an order update raised again
        takes them back here from its units. Times it keeps already stay as they are; serials it does
        not hold are passed over. The times are not stored, so nothing is marked changed.
        """
        workorder = self.workorder(workorder_id)
        if workorder.filled:
            return
        held = set(workorder.all_serials)
        taken = {s: c for s, c in costs.items() if s in held and s not in workorder.costs}
        if taken:
            self._workorders[workorder_id] = replace(workorder, costs=_with_costs(workorder.costs, taken))

    def mark_filled(self, workorder_id: str, at: datetime, *, actor: str, reason: str = "") -> Workorder:
        """A supervisor marks a workorder filled, even short of its quantities (audited)."""
        _check_at(at)
        _check_id(actor, "actor")
        workorder = self.workorder(workorder_id)
        if workorder.filled:
            raise Refused(Reason.ORDER_FULFILLED, f"workorder {workorder_id!r} is already filled")
        updated = _filled(workorder, at)
        self._put_workorder(updated)
        counts = _serial_counts(workorder)
        self._record(at, actor, AuditAction.WORKORDER_MARKED_FILLED, workorder_id, reason, counts, counts)
        return updated

    # ------------------------------------------------------------------ internals

    def _check_workorder_editable(
        self, workorder: Workorder, new: Mapping[str, int], *, may_reopen: bool = False
    ) -> None:
        """``may_reopen``: an order update, which may raise a filled workorder (never lower it)."""
        if workorder.filled and not may_reopen:
            raise Refused(Reason.ORDER_FULFILLED, f"workorder {workorder.id!r} is already filled")
        if workorder.filled:
            for part, quantity in sorted(workorder.parts.items()):
                if new.get(part, 0) < quantity:
                    raise Refused(
                        Reason.ORDER_FULFILLED,
                        f"workorder {workorder.id!r} is already filled with {workorder.assigned(part)} {part} "
                        f"of {quantity}: an order update may raise a filled workorder (it then fills again "
                        f"from new serials) but not lower it to {new.get(part, 0)}, nor below the serials "
                        "assigned to it",
                    )
        for part in workorder.serials:
            if workorder.assigned(part) > new.get(part, 0):
                raise Refused(
                    Reason.INVALID_ARGUMENT,
                    f"workorder {workorder.id!r} already holds {workorder.assigned(part)} {part}; "
                    f"cannot go down to {new.get(part, 0)}",
                )

    def _check_serial_free(self, serial: str) -> None:
        owner = self._serial_owner.get(serial)
        if owner is not None:
            raise Refused(Reason.DUPLICATE_SERIAL, f"serial {serial!r} is already in workorder {owner!r}")

    def _put_booking(self, booking: Booking) -> None:
        self._bookings[booking.id] = booking
        self._dirty_bookings.add(booking.id)

    def _drop_booking(self, booking_id: str) -> None:
        del self._bookings[booking_id]
        self._dirty_bookings.add(booking_id)

    def _put_workorder(self, workorder: Workorder) -> None:
        self._workorders[workorder.id] = workorder
        self._dirty_workorders.add(workorder.id)

    def _generate_id(self, prefix: str) -> str:
        while True:
            self._generated += 1
            candidate = f"{prefix}-{self._generated}"
            if candidate not in self._bookings:
                return candidate

    def _record(
        self,
        at: datetime,
        actor: str,
        action: AuditAction,
        subject: str,
        reason: str,
        before: Mapping[str, int],
        after: Mapping[str, int],
    ) -> None:
        self._audit.append(AuditEntry(at, actor, action, subject, reason, dict(before), dict(after)))


def _with_costs(costs: Mapping[str, UnitCost], new: Mapping[str, UnitCost | None]) -> dict[str, UnitCost]:
    out = dict(costs)
    out.update((serial, cost) for serial, cost in new.items() if cost is not None)
    return out


def _filled(workorder: Workorder, at: datetime) -> Workorder:
    """The workorder filled at ``at``, with its cost report taken now when every serial's times are
    known here; otherwise the times stay for the report to be completed from the units."""
    from gateway.orders.costs import cost_report  # costs builds on this module

    filled = replace(workorder, filled=True, filled_at=at)
    if any(s not in workorder.costs for s in workorder.all_serials):
        return filled
    try:
        report = cost_report(filled, {s: workorder.costs[s] for s in workorder.all_serials})
    except Refused:
        return filled  # left for whoever asks for the report, who gets the same refusal
    return replace(filled, costs={}, report=report)


def _urgency(item: Booking | Workorder) -> tuple[date, int, str]:
    return (item.due, -item.priority, item.id)


def _serial_counts(workorder: Workorder) -> dict[str, int]:
    return {part: len(s) for part, s in sorted(workorder.serials.items()) if s}


def _check_id(value: str, what: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise Refused(Reason.INVALID_ARGUMENT, f"{what} must be a non-empty string")


def _check_quantity(quantity: int, *, allow_zero: bool = False) -> None:
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise Refused(Reason.INVALID_ARGUMENT, f"quantity must be an integer, not {quantity!r}")
    if quantity < 0 or (quantity == 0 and not allow_zero):
        raise Refused(Reason.INVALID_ARGUMENT, f"quantity {quantity} is out of range")


def _check_parts(parts: Mapping[str, int]) -> dict[str, int]:
    if not isinstance(parts, Mapping) or not parts:
        raise Refused(Reason.INVALID_ARGUMENT, "an order needs at least one part")
    for part, quantity in parts.items():
        _check_id(part, "part")
        _check_quantity(quantity)
    return dict(parts)


def _check_due(due: date) -> None:
    # A datetime is a date too, but the two do not compare: keep due dates plain dates.
    if isinstance(due, datetime) or not isinstance(due, date):
        raise Refused(Reason.INVALID_ARGUMENT, f"due must be a date, not {due!r}")


def _check_priority(priority: int) -> None:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise Refused(Reason.INVALID_ARGUMENT, f"priority must be an integer, not {priority!r}")


def _check_at(at: datetime) -> None:
    if not isinstance(at, datetime) or at.tzinfo is None:
        raise Refused(Reason.INVALID_ARGUMENT, "times must be timezone-aware datetimes")


def _check_manual(at: datetime, actor: str, reason: str) -> None:
    _check_at(at)
    _check_id(actor, "actor")
    _check_id(reason, "reason")


def parts_total(bookings: Sequence[Booking]) -> dict[str, int]:
    """Sum of booked quantities per part."""
    total: dict[str, int] = {}
    for booking in bookings:
        for part, qty in booking.parts.items():
            total[part] = total.get(part, 0) + qty
    return total
