"""The daily schedule: turn unscheduled bookings into part jobs that fit the cell's capacity.

A pure function of its arguments (seed ``001``, "Daily Schedule Tracking"):

1. Demand per part = its unscheduled booking quantities - the scheduled parts without bookings
   (floored at 0; a surplus stays in the table).
2. Parts are filled in the order of their most urgent booking (earliest due date, then higher priority,
   then booking id). Each part takes as many units as its demand and every resource group it consumes
   allow, in one step per part.
3. Per part, *available* = newly scheduled + previously scheduled without bookings. Bookings are walked
   most urgent first and each is marked scheduled when its full quantity fits in what remains; the walk
   for a part stops at the first booking that does not fit (no skipping ahead, so older bookings keep
   their claim on the units).
4. Whatever remains of *available* is the new scheduled-parts-without-bookings table, for all parts.

Bookings with several parts: one walk over all bookings in urgency order. A booking is marked only
when every one of its parts fits; if any part does not fit, the booking is left unscheduled and *all*
its parts stop being walked (the units stay in the table for that booking). For single-part bookings
this is exactly the per-part walk above.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

from gateway.errors import Reason, Refused
from gateway.orders.bookings import Booking

# Capacity and loads are float seconds; absorb rounding so 0.3 s / 0.1 s counts as 3 units, not 2.
_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class DailySchedule:
    """What the daily schedule sends to the ERP, plus the demand it was computed from."""

    id: str
    created_at: datetime
    expected_hours: float
    bookings_scheduled: tuple[str, ...]
    jobs: Mapping[str, int]
    scheduled_without_bookings: Mapping[str, int]
    demand: Mapping[str, int]
    parts_without_routing: tuple[str, ...] = ()
    # Filled in by whoever creates the jobs (gateway/orders/commands.py): part -> job id, and the
    # horizon the bookings were read with (None: every unscheduled booking).
    job_ids: Mapping[str, str] = field(default_factory=dict)
    due_before: date | None = None


def make_schedule(
    schedule_id: str,
    created_at: datetime,
    expected_hours: float,
    bookings: Sequence[Booking],
    scheduled_without_bookings: Mapping[str, int],
    capacity: Mapping[str, float],
    part_load: Mapping[str, Mapping[str, float]],
) -> DailySchedule:
    """The schedule for one period.

    ``bookings`` are the unscheduled bookings due before the horizon; ``capacity`` is seconds per
    resource group for the period; ``part_load`` is seconds per unit per group from each part's routing
    (expected times). A part with demand but no ``part_load`` entry gets no job and is listed in
    ``parts_without_routing``; an empty entry means the part consumes no tracked capacity.
    """
    _validate(schedule_id, created_at, expected_hours, bookings, scheduled_without_bookings)
    _check_seconds(capacity, "capacity")
    for part, seconds_per_group in part_load.items():
        _check_seconds(seconds_per_group, f"load of {part}")

    ordered = sorted(bookings, key=lambda b: (b.due, -b.priority, b.id))
    booked: dict[str, int] = {}
    for booking in ordered:
        for part, qty in booking.parts.items():
            booked[part] = booked.get(part, 0) + qty
    demand = {p: max(0, q - scheduled_without_bookings.get(p, 0)) for p, q in booked.items()}

    # Parts in order of their most urgent booking; a multi-part booking ranks its parts by name.
    fill_order: dict[str, None] = {}
    for booking in ordered:
        for part in sorted(booking.parts):
            fill_order.setdefault(part, None)

    remaining = {group: float(seconds) for group, seconds in capacity.items()}
    jobs: dict[str, int] = {}
    unrouted: list[str] = []
    for part in fill_order:
        if demand[part] == 0:
            continue
        load = part_load.get(part)
        if load is None:
            unrouted.append(part)
            continue
        units = demand[part]
        for group, seconds in load.items():
            if seconds > 0:
                units = min(units, math.floor(remaining.get(group, 0.0) / seconds + _EPSILON))
        if units <= 0:
            continue
        jobs[part] = units
        for group, seconds in load.items():
            if seconds > 0:
                remaining[group] = max(0.0, remaining.get(group, 0.0) - units * seconds)

    available: dict[str, int] = dict(scheduled_without_bookings)
    for part, qty in jobs.items():
        available[part] = available.get(part, 0) + qty
    blocked: set[str] = set()
    marked: list[str] = []
    for booking in ordered:
        fits = all(p not in blocked and q <= available.get(p, 0) for p, q in booking.parts.items())
        if not fits:
            blocked.update(booking.parts)
            continue
        for part, qty in booking.parts.items():
            available[part] -= qty
        marked.append(booking.id)

    return DailySchedule(
        id=schedule_id,
        created_at=created_at,
        expected_hours=expected_hours,
        bookings_scheduled=tuple(marked),
        jobs=jobs,
        scheduled_without_bookings={p: q for p, q in sorted(available.items()) if q > 0},
        demand=demand,
        parts_without_routing=tuple(unrouted),
    )


def _validate(
    schedule_id: str,
    created_at: datetime,
    expected_hours: float,
    bookings: Sequence[Booking],
    scheduled_without_bookings: Mapping[str, int],
) -> None:
    if not isinstance(schedule_id, str) or not schedule_id.strip():
        raise Refused(Reason.INVALID_ARGUMENT, "a schedule needs an id")
    if not isinstance(created_at, datetime) or created_at.tzinfo is None:
        raise Refused(Reason.INVALID_ARGUMENT, "created_at must be a timezone-aware datetime")
    hours_ok = isinstance(expected_hours, int | float) and not isinstance(expected_hours, bool)
    if not (hours_ok and expected_hours > 0):
        raise Refused(Reason.INVALID_ARGUMENT, f"expected hours must be positive, not {expected_hours!r}")
    seen: set[str] = set()
    for booking in bookings:
        if booking.id in seen:
            raise Refused(Reason.DUPLICATE_ID, f"booking {booking.id!r} is listed twice")
        seen.add(booking.id)
        if booking.scheduled:
            raise Refused(Reason.INVALID_ARGUMENT, f"booking {booking.id!r} is already scheduled")
        if not booking.parts or any(_bad_count(q) or q == 0 for q in booking.parts.values()):
            raise Refused(Reason.INVALID_ARGUMENT, f"booking {booking.id!r} has no valid part quantities")
        if isinstance(booking.due, datetime) or not isinstance(booking.due, date):
            raise Refused(Reason.INVALID_ARGUMENT, f"booking {booking.id!r} due must be a date")
    for part, qty in scheduled_without_bookings.items():
        if _bad_count(qty):
            raise Refused(Reason.INVALID_ARGUMENT, f"scheduled without bookings {part}: {qty!r}")


def _bad_count(qty: object) -> bool:
    return isinstance(qty, bool) or not isinstance(qty, int) or qty < 0


def _check_seconds(values: Mapping[str, float], what: str) -> None:
    for group, seconds in values.items():
        ok = (
            not isinstance(seconds, bool)
            and isinstance(seconds, int | float)
            and math.isfinite(seconds)
            and seconds >= 0
        )
        if not ok:
            raise Refused(Reason.INVALID_ARGUMENT, f"{what} for {group}: {seconds!r} is not >= 0 seconds")
