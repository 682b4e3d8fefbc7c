"""The daily schedule: the seed's SSS/TTT/UUU example exactly, the next day, urgency, capacity."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from gateway.errors import Reason, Refused
from gateway.orders import Booking, OrderBook, make_schedule

AT = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
DUE = date(2026, 1, 20)

# MILL is shared by both parts, LATHE only by ABC123: ABC123 (booking SSS, most urgent by id) is
# filled first and stopped at 18 by LATHE, leaving MILL exactly 25 DEF456.
CAPACITY = {"MILL": 43 * 60.0, "LATHE": 18 * 120.0}
LOAD = {"ABC123": {"MILL": 60.0, "LATHE": 120.0}, "DEF456": {"MILL": 60.0}}


def seed_book() -> OrderBook:
    book = OrderBook()
    book.receive_order("SSS", DUE, 1, {"ABC123": 20})
    book.receive_order("TTT", DUE, 1, {"ABC123": 15})
    book.receive_order("UUU", DUE, 1, {"DEF456": 60})
    # Scheduled on an earlier day without a booking being marked.
    book.set_scheduled_without_booking("ABC123", 5, at=AT, actor="setup", reason="earlier day")
    book.set_scheduled_without_booking("DEF456", 35, at=AT, actor="setup", reason="earlier day")
    return book


def test_seed_example_comes_out_exactly_as_written() -> None:
    book = seed_book()
    schedule = make_schedule(
        "2026-01-05",
        AT,
        24.0,
        book.unscheduled_bookings(due_before=date(2026, 2, 1)),
        book.scheduled_without_bookings,
        CAPACITY,
        LOAD,
    )
    assert dict(schedule.demand) == {"ABC123": 30, "DEF456": 25}
    assert dict(schedule.jobs) == {"DEF456": 25, "ABC123": 18}
    assert sorted(schedule.bookings_scheduled) == ["SSS", "UUU"]
    assert dict(schedule.scheduled_without_bookings) == {"ABC123": 3}
    assert (schedule.id, schedule.created_at, schedule.expected_hours) == ("2026-01-05", AT, 24.0)

    book.apply_schedule(schedule)
    assert book.booking("SSS").scheduled
    assert book.booking("UUU").scheduled
    assert not book.booking("TTT").scheduled
    assert book.scheduled_without_bookings == {"ABC123": 3}
    assert book.schedules == (schedule,)


def test_next_day_schedules_twelve_more_and_marks_ttt() -> None:
    book = seed_book()
    book.apply_schedule(
        make_schedule("D1", AT, 24.0, book.unscheduled_bookings(), book.scheduled_without_bookings, CAPACITY, LOAD)
    )
    schedule = make_schedule(
        "D2", AT, 24.0, book.unscheduled_bookings(), book.scheduled_without_bookings, CAPACITY, LOAD
    )
    assert dict(schedule.demand) == {"ABC123": 12}
    assert dict(schedule.jobs) == {"ABC123": 12}
    assert schedule.bookings_scheduled == ("TTT",)
    assert dict(schedule.scheduled_without_bookings) == {}
    book.apply_schedule(schedule)
    assert all(b.scheduled for b in book.bookings)
    assert book.scheduled_without_bookings == {}


def test_earlier_due_date_is_filled_first() -> None:
    late = Booking("A", date(2026, 1, 30), 9, {"P1": 10})
    soon = Booking("B", date(2026, 1, 10), 0, {"P2": 10})
    schedule = make_schedule(
        "S", AT, 24.0, [late, soon], {}, {"MILL": 12.0}, {"P1": {"MILL": 1.0}, "P2": {"MILL": 1.0}}
    )
    assert dict(schedule.jobs) == {"P2": 10, "P1": 2}
    assert schedule.bookings_scheduled == ("B",)
    assert dict(schedule.scheduled_without_bookings) == {"P1": 2}


def test_same_due_date_higher_priority_first() -> None:
    low = Booking("A", DUE, 1, {"P1": 10})
    high = Booking("B", DUE, 5, {"P2": 10})
    schedule = make_schedule("S", AT, 24.0, [low, high], {}, {"MILL": 10.0}, {"P1": {"MILL": 1.0}, "P2": {"MILL": 1.0}})
    assert dict(schedule.jobs) == {"P2": 10}
    assert schedule.bookings_scheduled == ("B",)


def test_marking_stops_at_the_first_booking_that_does_not_fit() -> None:
    big_first = Booking("A", date(2026, 1, 10), 1, {"P": 10})
    small_later = Booking("B", date(2026, 1, 11), 1, {"P": 2})
    schedule = make_schedule("S", AT, 24.0, [big_first, small_later], {}, {"MILL": 8.0}, {"P": {"MILL": 1.0}})
    assert dict(schedule.jobs) == {"P": 8}
    assert schedule.bookings_scheduled == ()  # B would fit in 8 but does not jump ahead of A
    assert dict(schedule.scheduled_without_bookings) == {"P": 8}


def test_surplus_without_bookings_stays_in_the_table() -> None:
    booking = Booking("A", DUE, 1, {"P": 4})
    schedule = make_schedule("S", AT, 24.0, [booking], {"P": 10, "Q": 3}, {"MILL": 100.0}, {"P": {"MILL": 1.0}})
    assert dict(schedule.demand) == {"P": 0}
    assert dict(schedule.jobs) == {}
    assert schedule.bookings_scheduled == ("A",)
    assert dict(schedule.scheduled_without_bookings) == {"P": 6, "Q": 3}


def test_a_group_the_part_needs_but_the_cell_lacks_gives_no_job() -> None:
    booking = Booking("A", DUE, 1, {"P": 4})
    schedule = make_schedule("S", AT, 24.0, [booking], {}, {"MILL": 100.0}, {"P": {"MILL": 1.0, "GRIND": 5.0}})
    assert dict(schedule.jobs) == {}
    assert schedule.bookings_scheduled == ()


def test_part_without_routing_is_reported_and_gets_no_job() -> None:
    a = Booking("A", DUE, 1, {"P": 4})
    b = Booking("B", DUE, 1, {"NEW": 2})
    schedule = make_schedule("S", AT, 24.0, [a, b], {}, {"MILL": 100.0}, {"P": {"MILL": 1.0}})
    assert dict(schedule.jobs) == {"P": 4}
    assert schedule.parts_without_routing == ("NEW",)
    assert schedule.bookings_scheduled == ("A",)


def test_fractional_seconds_do_not_lose_a_unit_to_rounding() -> None:
    booking = Booking("A", DUE, 1, {"P": 10})
    schedule = make_schedule("S", AT, 24.0, [booking], {}, {"MILL": 0.3}, {"P": {"MILL": 0.1}})
    assert dict(schedule.jobs) == {"P": 3}


def test_multi_part_booking_is_marked_only_when_every_part_is_covered() -> None:
    both = Booking("A", date(2026, 1, 10), 1, {"P": 5, "Q": 5})
    later_p = Booking("B", date(2026, 1, 11), 1, {"P": 3})
    load = {"P": {"MILL": 1.0}, "Q": {"LATHE": 1.0}}
    short_q = make_schedule("S1", AT, 24.0, [both, later_p], {}, {"MILL": 100.0, "LATHE": 2.0}, load)
    assert dict(short_q.jobs) == {"P": 8, "Q": 2}
    # A is not covered (Q short), so P's units stay held for A: B does not jump ahead on P.
    assert short_q.bookings_scheduled == ()
    assert dict(short_q.scheduled_without_bookings) == {"P": 8, "Q": 2}

    next_day = make_schedule(
        "S2", AT, 24.0, [both, later_p], short_q.scheduled_without_bookings, {"MILL": 100.0, "LATHE": 3.0}, load
    )
    assert dict(next_day.demand) == {"P": 0, "Q": 3}
    assert dict(next_day.jobs) == {"Q": 3}
    assert next_day.bookings_scheduled == ("A", "B")
    assert dict(next_day.scheduled_without_bookings) == {}


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"schedule_id": ""}, Reason.INVALID_ARGUMENT),
        ({"created_at": datetime(2026, 1, 5)}, Reason.INVALID_ARGUMENT),
        ({"expected_hours": 0.0}, Reason.INVALID_ARGUMENT),
        ({"bookings": [Booking("A", DUE, 1, {"P": 1}, scheduled=True)]}, Reason.INVALID_ARGUMENT),
        ({"bookings": [Booking("A", DUE, 1, {"P": 1}), Booking("A", DUE, 1, {"P": 1})]}, Reason.DUPLICATE_ID),
        ({"bookings": [Booking("A", DUE, 1, {"P": 0})]}, Reason.INVALID_ARGUMENT),
        ({"scheduled_without_bookings": {"P": -1}}, Reason.INVALID_ARGUMENT),
        ({"capacity": {"MILL": -1.0}}, Reason.INVALID_ARGUMENT),
        ({"capacity": {"MILL": float("nan")}}, Reason.INVALID_ARGUMENT),
        ({"part_load": {"P": {"MILL": -1.0}}}, Reason.INVALID_ARGUMENT),
    ],
)
def test_bad_inputs_are_refused(kwargs: dict[str, object], reason: Reason) -> None:
    args: dict[str, object] = {
        "schedule_id": "S",
        "created_at": AT,
        "expected_hours": 24.0,
        "bookings": [Booking("B", DUE, 1, {"P": 1})],
        "scheduled_without_bookings": {},
        "capacity": {"MILL": 10.0},
        "part_load": {"P": {"MILL": 1.0}},
    }
    args.update(kwargs)
    with pytest.raises(Refused) as refused:
        make_schedule(**args)  # type: ignore[arg-type]
    assert refused.value.reason is reason
