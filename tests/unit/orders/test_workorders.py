"""Filling workorders: at unload by soonest due date, by a supervisor in bulk; the rush order (seed 001)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from gateway.errors import Reason, Refused
from gateway.orders import AuditAction, OrderBook, make_schedule
from gateway.orders.costs import UnitCost

AT = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
LATER = AT + timedelta(hours=3)


def snapshot(book: OrderBook) -> tuple[object, ...]:
    return (book.bookings, book.workorders, book.scheduled_without_bookings, book.audit)


def schedule_all(book: OrderBook, schedule_id: str) -> dict[str, int]:
    bookings = book.unscheduled_bookings()
    parts = {p for b in bookings for p in b.parts}
    schedule = make_schedule(
        schedule_id,
        AT,
        24.0,
        bookings,
        book.scheduled_without_bookings,
        {"MILL": 1e6},
        {p: {"MILL": 1.0} for p in parts},
    )
    book.apply_schedule(schedule)
    return dict(schedule.jobs)


def test_unload_fills_the_soonest_due_unfilled_workorder_for_the_part() -> None:
    book = OrderBook()
    book.receive_order("LATE", date(2026, 2, 1), 9, {"ABC123": 2})
    book.receive_order("SOON", date(2026, 1, 10), 1, {"ABC123": 2})
    book.receive_order("OTHER", date(2026, 1, 1), 1, {"DEF456": 2})
    assert book.assign_serial("s1", "ABC123", AT) == "SOON"
    assert not book.workorder("SOON").filled
    assert book.assign_serial("s2", "ABC123", LATER) == "SOON"
    soon = book.workorder("SOON")
    assert soon.filled
    assert soon.filled_at == LATER
    assert soon.serials == {"ABC123": ("s1", "s2")}
    assert book.assign_serial("s3", "ABC123", LATER) == "LATE"
    assert book.workorder_of("s3") == "LATE"
    assert book.audit == ()  # automatic filling at unload is not a manual edit


def test_unload_ties_go_to_higher_priority_then_id() -> None:
    book = OrderBook()
    due = date(2026, 1, 10)
    book.receive_order("B", due, 1, {"P": 1})
    book.receive_order("C", due, 5, {"P": 1})
    book.receive_order("A", due, 1, {"P": 1})
    assert [book.assign_serial(s, "P", AT) for s in ("s1", "s2", "s3")] == ["C", "A", "B"]


def test_unload_with_no_workorder_needing_the_part_returns_none() -> None:
    book = OrderBook()
    book.receive_order("XYZ", date(2026, 1, 10), 1, {"ABC123": 1})
    assert book.assign_serial("s1", "DEF456", AT) is None
    assert book.workorder_of("s1") is None
    assert book.assign_serial("s1", "ABC123", AT) == "XYZ"  # the serial is still free


def test_a_serial_goes_into_one_workorder_only() -> None:
    book = OrderBook()
    book.receive_order("XYZ", date(2026, 1, 10), 1, {"ABC123": 5})
    book.receive_order("JKL", date(2026, 1, 11), 1, {"ABC123": 5})
    book.assign_serial("s1", "ABC123", AT)
    before = snapshot(book)
    with pytest.raises(Refused) as refused:
        book.assign_serial("s1", "ABC123", AT)
    assert refused.value.reason is Reason.DUPLICATE_SERIAL
    with pytest.raises(Refused) as refused:
        book.assign_serials_bulk("JKL", [("s2", "ABC123"), ("s1", "ABC123")], at=AT, actor="sup")
    assert refused.value.reason is Reason.DUPLICATE_SERIAL
    with pytest.raises(Refused) as refused:
        book.assign_serials_bulk("JKL", [("s2", "ABC123"), ("s2", "ABC123")], at=AT, actor="sup")
    assert refused.value.reason is Reason.DUPLICATE_SERIAL
    assert snapshot(book) == before


def test_supervisor_bulk_assignment_then_explicit_fill() -> None:
    book = OrderBook()
    book.receive_order("XYZ", date(2026, 1, 10), 1, {"ABC123": 2, "DEF456": 1})
    updated = book.assign_serials_bulk(
        "XYZ", [("a1", "ABC123"), ("d1", "DEF456"), ("a2", "ABC123")], at=AT, actor="sup"
    )
    assert updated.serials == {"ABC123": ("a1", "a2"), "DEF456": ("d1",)}
    assert updated.complete
    assert not updated.filled  # filling stays the supervisor's explicit step
    entry = book.audit[-1]
    assert (entry.action, entry.actor, dict(entry.before), dict(entry.after)) == (
        AuditAction.SERIALS_ASSIGNED,
        "sup",
        {},
        {"ABC123": 2, "DEF456": 1},
    )
    filled = book.mark_filled("XYZ", LATER, actor="sup")
    assert filled.filled
    assert filled.filled_at == LATER
    assert book.audit[-1].action is AuditAction.WORKORDER_MARKED_FILLED


def test_bulk_refusals_change_nothing() -> None:
    book = OrderBook()
    book.receive_order("XYZ", date(2026, 1, 10), 1, {"ABC123": 2})
    book.receive_order("DONE", date(2026, 1, 10), 1, {"ABC123": 1})
    book.mark_filled("DONE", AT, actor="sup", reason="short ship agreed")
    before = snapshot(book)
    cases = [
        ("XYZ", [("a1", "ABC123"), ("a2", "ABC123"), ("a3", "ABC123")], Reason.INVALID_ARGUMENT),
        ("XYZ", [("d1", "DEF456")], Reason.INVALID_ARGUMENT),
        ("XYZ", [("", "ABC123")], Reason.INVALID_ARGUMENT),
        ("NOPE", [("a1", "ABC123")], Reason.NOT_FOUND),
        ("DONE", [("a1", "ABC123")], Reason.ORDER_FULFILLED),
    ]
    for workorder_id, pairs, reason in cases:
        with pytest.raises(Refused) as refused:
            book.assign_serials_bulk(workorder_id, pairs, at=AT, actor="sup")
        assert refused.value.reason is reason
    with pytest.raises(Refused):
        book.assign_serials_bulk("XYZ", [("a1", "ABC123")], at=AT, actor="")
    assert snapshot(book) == before


def test_mark_filled_short_is_allowed_once() -> None:
    book = OrderBook()
    book.receive_order("XYZ", date(2026, 1, 10), 1, {"ABC123": 3})
    book.assign_serial("s1", "ABC123", AT)
    filled = book.mark_filled("XYZ", LATER, actor="sup", reason="customer takes 1")
    assert filled.filled
    assert not filled.complete
    before = snapshot(book)
    with pytest.raises(Refused) as refused:
        book.mark_filled("XYZ", LATER, actor="sup")
    assert refused.value.reason is Reason.ORDER_FULFILLED
    with pytest.raises(Refused) as refused:
        book.mark_filled("NOPE", LATER, actor="sup")
    assert refused.value.reason is Reason.NOT_FOUND
    assert snapshot(book) == before
    # A filled workorder takes no more serials at unload.
    assert book.assign_serial("s2", "ABC123", LATER) is None


def test_unassign_a_tentative_serial() -> None:
    book = OrderBook()
    book.receive_order("XYZ", date(2026, 1, 10), 1, {"ABC123": 3})
    book.receive_order("JKL", date(2026, 1, 20), 1, {"ABC123": 1})
    book.assign_serial("s1", "ABC123", AT)
    assert book.unassign_serial("s1", at=AT, actor="sup", reason="belongs to JKL") == "XYZ"
    assert book.workorder("XYZ").serials == {}
    assert book.workorder_of("s1") is None
    book.assign_serials_bulk("JKL", [("s1", "ABC123")], at=AT, actor="sup")
    book.mark_filled("JKL", AT, actor="sup")
    before = snapshot(book)
    with pytest.raises(Refused) as refused:
        book.unassign_serial("s1", at=AT, actor="sup", reason="x")
    assert refused.value.reason is Reason.ORDER_FULFILLED
    with pytest.raises(Refused) as refused:
        book.unassign_serial("nope", at=AT, actor="sup", reason="x")
    assert refused.value.reason is Reason.NOT_FOUND
    assert snapshot(book) == before


def test_rush_order_is_filled_from_stock_and_a_later_job_fills_the_original() -> None:
    book = OrderBook()
    book.receive_order("XYZ", date(2026, 1, 26), 1, {"ABC123": 20})
    assert schedule_all(book, "D1") == {"ABC123": 20}
    made = [f"x{n}" for n in range(20)]  # 20 manufactured ABC123 parts at the outbound
    book.receive_order("JKL", date(2026, 1, 7), 1, {"ABC123": 15})

    # 15 of them go out for JKL; the supervisor assigns them and marks JKL filled.
    book.assign_serials_bulk("JKL", [(s, "ABC123") for s in made[:15]], at=AT, actor="sup")
    book.mark_filled("JKL", AT, actor="sup")
    # The other 5 go to XYZ as they are unloaded (JKL is filled, XYZ is next).
    assert {book.assign_serial(s, "ABC123", AT) for s in made[15:]} == {"XYZ"}
    assert book.booking("XYZ").scheduled
    assert not book.booking("JKL").scheduled
    assert book.audit[-1].action is AuditAction.WORKORDER_MARKED_FILLED
    audited = len(book.audit)

    # No data editing: the JKL booking simply becomes tomorrow's job of 15 ...
    assert schedule_all(book, "D2") == {"ABC123": 15}
    # ... whose parts fill XYZ.
    for n in range(15):
        book.assign_serial(f"y{n}", "ABC123", LATER)
    xyz = book.workorder("XYZ")
    assert xyz.filled
    assert xyz.assigned("ABC123") == 20
    assert xyz.filled_at == LATER
    assert len(book.audit) == audited


# ------------------------------------------------------------------------ order raised after filling
def _cost(serial: str) -> UnitCost:
    """A finished serial's times: labor 100 s elapsed against 90 s expected, machining 500 s on time."""
    return UnitCost(serial, 100.0, 90.0, 500.0, 500.0)


def test_an_order_raised_after_its_workorder_filled_books_the_difference_and_fills_again() -> None:
    """Seed 001, "Update existing orders": "If the XYZ booking has been scheduled already, [...] the ERP
    creates a new booking with the difference in quantity", and "the ERP can update the XYZ workorder to
    the new quantity of 30 ABC123 parts irrespective of changes to the bookings. Thus the 30 parts
    produced by the combination of the XYZ and XYZ-extra bookings can all be filled into the single XYZ
    workorder." That holds too when the first parts had already filled the workorder.
    """
    book = OrderBook()
    book.receive_order("XYZ", date(2026, 1, 26), 1, {"ABC123": 2})
    assert schedule_all(book, "S1") == {"ABC123": 2}
    for serial in ("s1", "s2"):
        assert book.assign_serial(serial, "ABC123", AT, _cost(serial)) == "XYZ"
    filled = book.workorder("XYZ")
    assert filled.filled
    assert filled.report is not None
    assert filled.costs == {}  # let go once the report is taken

    written = book.update_order("XYZ", {"ABC123": 3}, LATER, "erp", "customer +1")

    assert [(b.id, dict(b.parts), b.scheduled) for b in written] == [("XYZ-extra", {"ABC123": 1}, False)]
    assert dict(book.booking("XYZ").parts) == {"ABC123": 2}  # the scheduled booking stays as it was
    reopened = book.workorder("XYZ")
    assert dict(reopened.parts) == {"ABC123": 3}
    assert (reopened.filled, reopened.filled_at, reopened.report) == (False, None, None)
    assert reopened.serials == {"ABC123": ("s1", "s2")}
    assert reopened.remaining("ABC123") == 1
    assert [w.id for w in book.unfilled_workorders("ABC123")] == ["XYZ"]
    entry = book.audit[-1]
    assert (entry.action, entry.subject, dict(entry.before), dict(entry.after)) == (
        AuditAction.WORKORDER_EDITED,
        "XYZ",
        {"ABC123": 2},
        {"ABC123": 3},
    )

    # The serials' times come back from their units; the XYZ-extra part fills it again.
    book.keep_costs("XYZ", {s: _cost(s) for s in ("s1", "s2", "not-in-xyz")})
    assert set(book.workorder("XYZ").costs) == {"s1", "s2"}
    assert schedule_all(book, "S2") == {"ABC123": 1}
    refill_at = LATER + timedelta(hours=1)
    assert book.assign_serial("s3", "ABC123", refill_at, _cost("s3")) == "XYZ"
    refilled = book.workorder("XYZ")
    assert (refilled.filled, refilled.filled_at) == (True, refill_at)
    assert refilled.report is not None
    assert refilled.report.serials == ("s1", "s2", "s3")
    assert refilled.report.filled_at == refill_at
    assert (refilled.report.expected_labor_s, refilled.report.program_cycle_s) == (270.0, 1500.0)
    assert refilled.report.unknown == {}


def test_an_order_raised_before_its_workorder_filled_keeps_it_filling() -> None:
    """The control case of the seed's order update: the workorder is not filled yet, so it simply takes
    the new quantity and keeps the serials (and their times) it holds."""
    book = OrderBook()
    book.receive_order("XYZ", date(2026, 1, 26), 1, {"ABC123": 2})
    schedule_all(book, "S1")
    book.assign_serial("s1", "ABC123", AT, _cost("s1"))

    written = book.update_order("XYZ", {"ABC123": 3}, LATER, "erp")

    assert [(b.id, dict(b.parts)) for b in written] == [("XYZ-extra", {"ABC123": 1})]
    workorder = book.workorder("XYZ")
    assert (dict(workorder.parts), workorder.filled, workorder.serials) == ({"ABC123": 3}, False, {"ABC123": ("s1",)})
    assert set(workorder.costs) == {"s1"}
    assert workorder.remaining("ABC123") == 2


def test_keep_costs_leaves_a_filled_workorder_and_known_times_alone() -> None:
    book = OrderBook()
    book.receive_order("XYZ", date(2026, 1, 26), 1, {"ABC123": 2})
    book.assign_serial("s1", "ABC123", AT, _cost("s1"))
    other = UnitCost("s1", 1.0, 1.0, 1.0, 1.0)
    book.keep_costs("XYZ", {"s1": other})
    assert book.workorder("XYZ").costs["s1"] == _cost("s1")
    book.assign_serial("s2", "ABC123", AT, _cost("s2"))
    filled = book.workorder("XYZ")
    book.keep_costs("XYZ", {"s1": other})
    assert book.workorder("XYZ").costs == filled.costs == {}
    assert book.drain().workorders == frozenset({"XYZ"})
    book.keep_costs("XYZ", {"s1": other})
    assert not book.drain()  # times are not stored: nothing to save
