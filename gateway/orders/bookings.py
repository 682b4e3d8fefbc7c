"""Bookings: the demand at the cell's input, and the order book's collection of them.

A booking says what to make by when; it is ``scheduled`` once a daily schedule covered it, and from
then on it is no longer read: more demand for its order goes to an ``<id>-extra[n]`` booking (see
:meth:`Bookings.extra_writes`). Ids the book makes up (replacement and back-out bookings) come from
one counter, which is stored with the bookings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date

from gateway.errors import Reason, Refused
from gateway.orders.audit import AuditAction
from gateway.orders.checks import urgency


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


_EXTRA_SUFFIX = re.compile(r"-extra(\d*)$")


def extra_booking_id(order_id: str, n: int) -> str:
    """``XYZ-extra``, ``XYZ-extra2``, ``XYZ-extra3``, ... for the n-th extra booking of order ``XYZ``."""
    return f"{order_id}-extra" if n == 1 else f"{order_id}-extra{n}"


def parts_total(bookings: Sequence[Booking]) -> dict[str, int]:
    """Sum of booked quantities per part."""
    total: dict[str, int] = {}
    for booking in bookings:
        for part, qty in booking.parts.items():
            total[part] = total.get(part, 0) + qty
    return total


# A booking write of an order update: (action, the booking before or None if new, the booking after).
BookingWrite = tuple[AuditAction, Booking | None, Booking]


class Bookings:
    """The bookings by id, the counter for the ids the book makes up, and the ids changed since the last
    :meth:`drain`."""

    def __init__(self, bookings: Iterable[Booking] = (), *, generated: int = 0) -> None:
        self._bookings: dict[str, Booking] = {b.id: b for b in bookings}
        self._generated = generated
        self._dirty: set[str] = set()

    def drain(self) -> frozenset[str]:
        """The ids of the bookings written or removed since the last drain."""
        changed = frozenset(self._dirty)
        self._dirty.clear()
        return changed

    @property
    def generated(self) -> int:
        """Where the counter of made-up booking ids stands."""
        return self._generated

    def __contains__(self, booking_id: object) -> bool:
        return booking_id in self._bookings

    def get(self, booking_id: str) -> Booking:
        try:
            return self._bookings[booking_id]
        except KeyError:
            raise Refused(Reason.NOT_FOUND, f"no booking {booking_id!r}") from None

    @property
    def all(self) -> tuple[Booking, ...]:
        return tuple(self._bookings.values())

    def unscheduled(self, due_before: date | None = None) -> list[Booking]:
        """Unscheduled bookings due strictly before ``due_before`` (all if None), most urgent first."""
        found = [b for b in self._bookings.values() if not b.scheduled and (due_before is None or b.due < due_before)]
        return sorted(found, key=urgency)

    def put(self, booking: Booking) -> None:
        self._bookings[booking.id] = booking
        self._dirty.add(booking.id)

    def drop(self, booking_id: str) -> None:
        del self._bookings[booking_id]
        self._dirty.add(booking_id)

    def generate_id(self, prefix: str) -> str:
        while True:
            self._generated += 1
            candidate = f"{prefix}-{self._generated}"
            if candidate not in self._bookings:
                return candidate

    def extra_writes(self, main: Booking, new: Mapping[str, int]) -> list[BookingWrite]:
        """The booking side of an order update whose ``main`` booking is scheduled already (see
        :meth:`~gateway.orders.book.OrderBook.update_order`): the extra bookings to write."""
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

        writes: list[BookingWrite] = []
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
