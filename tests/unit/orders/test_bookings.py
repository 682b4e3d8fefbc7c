"""Receiving and updating orders, fix-ups, replacement bookings, backing out (seed 001)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from gateway.errors import Reason, Refused
from gateway.orders import AuditAction, DailySchedule, OrderBook, make_schedule

AT = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
DUE = date(2026, 1, 26)


def snapshot(book: OrderBook) -> tuple[object, ...]:
    return (
        book.bookings,
        book.workorders,
        book.scheduled_without_bookings,
        book.audit,
        book.schedules,
    )


def schedule_all(book: OrderBook, schedule_id: str, capacity_s: float = 1e9) -> None:
    """Make and apply a schedule from the book's current state; every part 1 s on group MILL."""
    bookings = book.unscheduled_bookings()
    parts = {p for b in bookings for p in b.parts} | set(book.scheduled_without_bookings)
    schedule = make_schedule(
        schedule_id,
        AT,
        24.0,
        bookings,
        book.scheduled_without_bookings,
        {"MILL": capacity_s},
        {p: {"MILL": 1.0} for p in parts},
    )
    book.apply_schedule(schedule)


def test_receive_creates_booking_and_workorder_with_the_same_id() -> None:
    book = OrderBook()
    booking, workorder = book.receive_order("XYZ", DUE, 3, {"ABC123": 20}, casting="C-ABC")
    assert booking == book.booking("XYZ")
    assert workorder == book.workorder("XYZ")
    assert (booking.id, booking.due, booking.priority, dict(booking.parts)) == ("XYZ", DUE, 3, {"ABC123": 20})
    assert (workorder.id, workorder.due, workorder.priority, dict(workorder.parts)) == (
        "XYZ",
        DUE,
        3,
        {"ABC123": 20},
    )
    assert booking.casting == "C-ABC"
    assert not booking.scheduled
    assert not workorder.filled
    assert workorder.filled_at is None
    assert book.audit == ()


@pytest.mark.parametrize(
    ("order_id", "due", "priority", "parts", "reason"),
    [
        ("XYZ", DUE, 1, {"ABC123": 5}, Reason.DUPLICATE_ID),
        ("", DUE, 1, {"ABC123": 5}, Reason.INVALID_ARGUMENT),
        ("NEW", DUE, 1, {}, Reason.INVALID_ARGUMENT),
        ("NEW", DUE, 1, {"ABC123": 0}, Reason.INVALID_ARGUMENT),
        ("NEW", DUE, 1, {"ABC123": -2}, Reason.INVALID_ARGUMENT),
        ("NEW", DUE, 1, {"ABC123": True}, Reason.INVALID_ARGUMENT),
        ("NEW", DUE, 1, {"": 2}, Reason.INVALID_ARGUMENT),
        ("NEW", AT, 1, {"ABC123": 2}, Reason.INVALID_ARGUMENT),
    ],
)
def test_receive_refusals_change_nothing(
    order_id: str, due: date, priority: int, parts: dict[str, int], reason: Reason
) -> None:
    book = OrderBook()
    book.receive_order("XYZ", DUE, 1, {"ABC123": 20})
    before = snapshot(book)
    with pytest.raises(Refused) as refused:
        book.receive_order(order_id, due, priority, parts)
    assert refused.value.reason is reason
    assert snapshot(book) == before


def test_receive_refuses_an_id_used_by_a_booking_only() -> None:
    book = OrderBook()
    book.receive_order("XYZ", DUE, 1, {"ABC123": 20})
    schedule_all(book, "S1")
    book.update_order("XYZ", {"ABC123": 30}, AT, "erp")
    with pytest.raises(Refused) as refused:
        book.receive_order("XYZ-extra", DUE, 1, {"ABC123": 1})
    assert refused.value.reason is Reason.DUPLICATE_ID


def test_update_before_scheduling_edits_booking_and_workorder_in_place() -> None:
    book = OrderBook()
    book.receive_order("XYZ", DUE, 1, {"ABC123": 20})
    written = book.update_order("XYZ", {"ABC123": 30}, AT, "erp")
    assert [b.id for b in written] == ["XYZ"]
    assert dict(book.booking("XYZ").parts) == {"ABC123": 30}
    assert dict(book.workorder("XYZ").parts) == {"ABC123": 30}
    assert [b.id for b in book.bookings] == ["XYZ"]
    assert [(e.action, e.subject, dict(e.before), dict(e.after)) for e in book.audit] == [
        (AuditAction.BOOKING_EDITED, "XYZ", {"ABC123": 20}, {"ABC123": 30}),
        (AuditAction.WORKORDER_EDITED, "XYZ", {"ABC123": 20}, {"ABC123": 30}),
    ]


def test_update_after_scheduling_creates_an_extra_booking_for_the_difference() -> None:
    book = OrderBook()
    book.receive_order("XYZ", DUE, 4, {"ABC123": 20}, casting="C1")
    schedule_all(book, "S1")
    assert book.booking("XYZ").scheduled

    book.update_order("XYZ", {"ABC123": 30}, AT, "erp")

    assert dict(book.booking("XYZ").parts) == {"ABC123": 20}
    assert book.booking("XYZ").scheduled
    extra = book.booking("XYZ-extra")
    assert (dict(extra.parts), extra.scheduled, extra.due, extra.priority, extra.casting) == (
        {"ABC123": 10},
        False,
        DUE,
        4,
        "C1",
    )
    assert dict(book.workorder("XYZ").parts) == {"ABC123": 30}
    # The next schedule picks up only the 10.
    schedule_all(book, "S2")
    assert dict(book.schedules[-1].jobs) == {"ABC123": 10}
    assert book.booking("XYZ-extra").scheduled


def test_further_increases_grow_the_unscheduled_extra_then_open_extra2() -> None:
    book = OrderBook()
    book.receive_order("XYZ", DUE, 1, {"ABC123": 20})
    schedule_all(book, "S1")
    book.update_order("XYZ", {"ABC123": 30}, AT, "erp")
    book.update_order("XYZ", {"ABC123": 35}, AT, "erp")
    assert dict(book.booking("XYZ-extra").parts) == {"ABC123": 15}
    schedule_all(book, "S2")
    book.update_order("XYZ", {"ABC123": 40, "DEF456": 2}, AT, "erp")
    assert dict(book.booking("XYZ-extra").parts) == {"ABC123": 15}
    assert dict(book.booking("XYZ-extra2").parts) == {"ABC123": 5, "DEF456": 2}
    assert dict(book.workorder("XYZ").parts) == {"ABC123": 40, "DEF456": 2}


def test_decrease_after_scheduling_comes_out_of_the_unscheduled_extra_only() -> None:
    book = OrderBook()
    book.receive_order("XYZ", DUE, 1, {"ABC123": 20})
    schedule_all(book, "S1")
    book.update_order("XYZ", {"ABC123": 30}, AT, "erp")
    book.update_order("XYZ", {"ABC123": 25}, AT, "erp")
    assert dict(book.booking("XYZ-extra").parts) == {"ABC123": 5}
    # Below what the scheduled booking asked for: the extra goes away, the scheduled booking stays.
    book.update_order("XYZ", {"ABC123": 12}, AT, "erp")
    assert "XYZ-extra" not in {b.id for b in book.bookings}
    assert dict(book.booking("XYZ").parts) == {"ABC123": 20}
    assert dict(book.workorder("XYZ").parts) == {"ABC123": 12}
    assert book.audit[-2].action is AuditAction.BOOKING_REMOVED


def test_update_refusals_change_nothing() -> None:
    book = OrderBook()
    book.receive_order("XYZ", DUE, 1, {"ABC123": 3})
    for serial in ("s1", "s2"):
        book.assign_serial(serial, "ABC123", AT)
    before = snapshot(book)
    cases: list[tuple[str, dict[str, int], Reason]] = [
        ("XYZ", {"ABC123": 1}, Reason.INVALID_ARGUMENT),  # below the 2 serials already assigned
        ("XYZ", {"DEF456": 5}, Reason.INVALID_ARGUMENT),  # would drop a part that has serials
        ("NOPE", {"ABC123": 5}, Reason.NOT_FOUND),
        ("XYZ", {}, Reason.INVALID_ARGUMENT),
    ]
    for order_id, parts, reason in cases:
        with pytest.raises(Refused) as refused:
            book.update_order(order_id, parts, AT, "erp")
        assert refused.value.reason is reason
        assert snapshot(book) == before


def test_an_update_never_lowers_a_filled_workorder_and_a_refusal_changes_nothing() -> None:
    book = OrderBook()
    book.receive_order("XYZ", DUE, 1, {"ABC123": 2, "DEF456": 1})
    for serial, part in (("a1", "ABC123"), ("a2", "ABC123"), ("d1", "DEF456")):
        assert book.assign_serial(serial, part, AT) == "XYZ"
    assert book.workorder("XYZ").filled
    before = snapshot(book)
    for parts in (
        {"ABC123": 1, "DEF456": 1},  # below the serials it holds
        {"ABC123": 5},  # up for one part, but drops another
        {"ABC123": 1, "DEF456": 4},  # up for one part, down for another
    ):
        with pytest.raises(Refused) as refused:
            book.update_order("XYZ", parts, AT, "erp")
        assert refused.value.reason is Reason.ORDER_FULFILLED
        assert "may raise a filled workorder" in refused.value.message
        assert "not lower it" in refused.value.message
        assert snapshot(book) == before
    # A fix-up of a filled workorder stays refused; only the order update raises one.
    with pytest.raises(Refused) as refused:
        book.edit_workorder("XYZ", "ABC123", 3, at=AT, actor="sup", reason="count")
    assert refused.value.reason is Reason.ORDER_FULFILLED
    assert snapshot(book) == before


def test_replacement_booking_for_a_scrapped_part_leaves_workorders_alone() -> None:
    book = OrderBook()
    book.receive_order("XYZ", DUE, 1, {"ABC123": 20})
    schedule_all(book, "S1")
    workorders = book.workorders
    first = book.add_replacement_booking(
        "ABC123", due=DUE, priority=5, at=AT, actor="inspector", reason="failed CMM", replaces="XYZ"
    )
    second = book.add_replacement_booking("ABC123", due=DUE, priority=5, at=AT, actor="op", reason="scrap")
    assert first.id == "XYZ-repl-1"
    assert second.id == "ABC123-repl-2"
    assert dict(first.parts) == {"ABC123": 1}
    assert not first.scheduled
    assert book.workorders == workorders
    entry = book.audit[0]
    assert (entry.action, entry.subject, entry.actor, entry.reason, dict(entry.after)) == (
        AuditAction.REPLACEMENT_BOOKING,
        "XYZ-repl-1",
        "inspector",
        "failed CMM",
        {"ABC123": 1},
    )
    schedule_all(book, "S2")
    assert dict(book.schedules[-1].jobs) == {"ABC123": 2}


def test_replacement_and_back_out_refusals_change_nothing() -> None:
    book = OrderBook()
    before = snapshot(book)
    with pytest.raises(Refused):
        book.add_replacement_booking("ABC123", due=DUE, priority=1, at=AT, actor="op", reason="")
    with pytest.raises(Refused):
        book.add_replacement_booking("ABC123", due=DUE, priority=1, at=AT, actor="", reason="scrap")
    with pytest.raises(Refused):
        book.add_replacement_booking(
            "ABC123", due=DUE, priority=1, at=AT.replace(tzinfo=None), actor="op", reason="scrap"
        )
    with pytest.raises(Refused):
        book.back_out("J1", "ABC123", 0, due=DUE, priority=1, at=AT, actor="op", reason="down")
    assert snapshot(book) == before


def test_quantity_fix_up_by_editing_an_unscheduled_booking() -> None:
    book = OrderBook()
    book.receive_order("KLM", DUE, 1, {"ABC123": 10})
    edited = book.edit_booking("KLM", "ABC123", 9, at=AT, actor="sup", reason="extra part at outbound")
    assert edited is not None
    assert dict(edited.parts) == {"ABC123": 9}
    assert dict(book.workorder("KLM").parts) == {"ABC123": 10}  # no effect on filling
    entry = book.audit[-1]
    assert (entry.action, entry.actor, entry.reason, dict(entry.before), dict(entry.after)) == (
        AuditAction.BOOKING_EDITED,
        "sup",
        "extra part at outbound",
        {"ABC123": 10},
        {"ABC123": 9},
    )


def test_editing_the_last_part_to_zero_removes_the_booking() -> None:
    book = OrderBook()
    book.receive_order("KLM", DUE, 1, {"ABC123": 1})
    assert book.edit_booking("KLM", "ABC123", 0, at=AT, actor="sup", reason="lost demand") is None
    assert book.bookings == ()
    assert book.audit[-1].action is AuditAction.BOOKING_REMOVED
    with pytest.raises(Refused) as refused:
        book.update_order("KLM", {"ABC123": 2}, AT, "erp")
    assert refused.value.reason is Reason.NOT_FOUND


def test_editing_a_scheduled_booking_is_refused_and_changes_nothing() -> None:
    book = OrderBook()
    book.receive_order("XYZ", DUE, 1, {"ABC123": 20})
    schedule_all(book, "S1")
    before = snapshot(book)
    with pytest.raises(Refused) as refused:
        book.edit_booking("XYZ", "ABC123", 19, at=AT, actor="sup", reason="fix")
    assert refused.value.reason is Reason.INVALID_TRANSITION
    with pytest.raises(Refused) as refused:
        book.edit_booking("NOPE", "ABC123", 19, at=AT, actor="sup", reason="fix")
    assert refused.value.reason is Reason.NOT_FOUND
    assert snapshot(book) == before


def test_quantity_fix_up_via_the_scheduled_without_bookings_table() -> None:
    book = OrderBook()
    book.receive_order("KLM", DUE, 1, {"ABC123": 10})
    book.set_scheduled_without_booking("ABC123", 1, at=AT, actor="sup", reason="extra part at outbound")
    assert book.scheduled_without_bookings == {"ABC123": 1}
    entry = book.audit[-1]
    assert (entry.action, entry.subject, dict(entry.before), dict(entry.after)) == (
        AuditAction.SCHEDULED_WITHOUT_BOOKING_SET,
        "ABC123",
        {},
        {"ABC123": 1},
    )
    schedule_all(book, "S1")
    assert dict(book.schedules[-1].jobs) == {"ABC123": 9}
    assert book.booking("KLM").scheduled
    assert book.scheduled_without_bookings == {}
    with pytest.raises(Refused):
        book.set_scheduled_without_booking("ABC123", -1, at=AT, actor="sup", reason="x")
    with pytest.raises(Refused):
        book.set_scheduled_without_booking("ABC123", 2, at=AT, actor="sup", reason=" ")
    assert book.scheduled_without_bookings == {}


def test_re_machined_part_reduces_the_next_demand_by_one() -> None:
    book = OrderBook()
    book.receive_order("XYZ", DUE, 1, {"ABC123": 20})
    schedule_all(book, "S1")
    # A part went out for re-machining; a replacement was booked; then the part came back.
    book.add_replacement_booking("ABC123", due=DUE, priority=1, at=AT, actor="op", reason="re-machine")
    book.receive_order("PQR", DUE, 1, {"ABC123": 10})
    current = book.scheduled_without_bookings.get("ABC123", 0)
    book.set_scheduled_without_booking("ABC123", current + 1, at=AT, actor="sup", reason="re-machined part came back")
    schedule_all(book, "S2")
    assert dict(book.schedules[-1].demand) == {"ABC123": 10}
    assert dict(book.schedules[-1].jobs) == {"ABC123": 10}


def test_edit_workorder_fix_up_is_audited_and_checked() -> None:
    book = OrderBook()
    book.receive_order("XYZ", DUE, 1, {"ABC123": 3, "DEF456": 1})
    book.assign_serial("s1", "ABC123", AT)
    edited = book.edit_workorder("XYZ", "ABC123", 2, at=AT, actor="sup", reason="customer count")
    assert dict(edited.parts) == {"ABC123": 2, "DEF456": 1}
    assert book.audit[-1].action is AuditAction.WORKORDER_EDITED
    before = snapshot(book)
    for part, qty, reason in [
        ("ABC123", 0, Reason.INVALID_ARGUMENT),  # holds a serial of it
        ("ABC123", -1, Reason.INVALID_ARGUMENT),
    ]:
        with pytest.raises(Refused) as refused:
            book.edit_workorder("XYZ", part, qty, at=AT, actor="sup", reason="x")
        assert refused.value.reason is reason
    book2 = OrderBook()
    book2.receive_order("ONE", DUE, 1, {"ABC123": 1})
    with pytest.raises(Refused) as refused:
        book2.edit_workorder("ONE", "ABC123", 0, at=AT, actor="sup", reason="x")
    assert refused.value.reason is Reason.INVALID_ARGUMENT
    assert snapshot(book) == before


def test_backing_out_a_job_books_the_unproduced_quantity_again() -> None:
    book = OrderBook()
    book.receive_order("XYZ", DUE, 1, {"ABC123": 20})
    schedule_all(book, "S1")
    assert dict(book.schedules[-1].jobs) == {"ABC123": 20}
    for n in range(8):
        book.assign_serial(f"s{n}", "ABC123", AT)

    booking = book.back_out(
        "S1-ABC123", "ABC123", 12, due=DUE, priority=1, at=AT, actor="gateway", reason="machine down"
    )

    assert booking.id == "S1-ABC123-backout-1"
    assert dict(booking.parts) == {"ABC123": 12}
    assert not booking.scheduled
    assert dict(book.workorder("XYZ").parts) == {"ABC123": 20}  # unchanged the entire time
    entry = book.audit[-1]
    assert (entry.action, entry.subject, entry.actor, entry.reason) == (
        AuditAction.JOB_BACKED_OUT,
        "S1-ABC123-backout-1",
        "gateway",
        "machine down",
    )
    schedule_all(book, "S2")
    assert dict(book.schedules[-1].jobs) == {"ABC123": 12}
    assert book.schedules[-1].bookings_scheduled == ("S1-ABC123-backout-1",)
    for n in range(8, 20):
        book.assign_serial(f"s{n}", "ABC123", AT)
    assert book.workorder("XYZ").filled
    assert book.workorder("XYZ").assigned("ABC123") == 20


def test_apply_schedule_refusals_change_nothing() -> None:
    book = OrderBook()
    book.receive_order("XYZ", DUE, 1, {"ABC123": 20})
    schedule = make_schedule(
        "S1", AT, 24.0, book.unscheduled_bookings(), {}, {"MILL": 100.0}, {"ABC123": {"MILL": 1.0}}
    )
    book.apply_schedule(schedule)
    before = snapshot(book)
    with pytest.raises(Refused) as refused:
        book.apply_schedule(schedule)
    assert refused.value.reason is Reason.DUPLICATE_ID
    # Nothing is left unscheduled: an empty schedule, applied at the end.
    again = make_schedule("S2", AT, 24.0, book.unscheduled_bookings(), {}, {}, {})
    replay = DailySchedule(
        id="S3",
        created_at=AT,
        expected_hours=24.0,
        bookings_scheduled=("XYZ",),
        jobs={},
        scheduled_without_bookings={},
        demand={},
    )
    with pytest.raises(Refused) as refused:
        book.apply_schedule(replay)
    assert refused.value.reason is Reason.INVALID_TRANSITION
    unknown = DailySchedule(
        id="S4",
        created_at=AT,
        expected_hours=24.0,
        bookings_scheduled=("NOPE",),
        jobs={},
        scheduled_without_bookings={"ABC123": 4},
        demand={},
    )
    with pytest.raises(Refused) as refused:
        book.apply_schedule(unknown)
    assert refused.value.reason is Reason.NOT_FOUND
    assert snapshot(book) == before
    book.apply_schedule(again)
    assert again.bookings_scheduled == ()
