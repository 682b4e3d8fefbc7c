"""Back-out (seed 001: "back out of the 12 non-produced parts ... add a new booking for 12").

The rule the gateway keeps: ordered = finished + rebooked + units in progress, and the units in progress
may still finish (a Closed job's WIP finishes its routing; nothing new starts in it), so no unit is
ever both stranded and not rebooked.
"""

from __future__ import annotations

from datetime import date

from gateway.errors import Reason
from gateway.jobs.model import JobState, UnitStatus
from gateway.orders import OrderBook
from gateway.orders.commands import BackOutJob
from gateway.orders.handlers import assign_finished_unit, handle
from tests.unit.jobs.demo_book import at, make_book, pass_step, refused, released_job, start


def test_a_back_out_rebooks_what_was_not_started_and_lets_units_in_progress_finish() -> None:
    jobs, orders = make_book(), OrderBook()
    orders.receive_order("XYZ", date(2026, 3, 10), 1, {"PX": 20})
    job = released_job(jobs, "WO-1", quantity=20, part="PX")
    for n in range(1, 9):
        start(jobs, "WO-1", f"S{n}", at(n))
    for serial in ("S1", "S2", "S3", "S4", "S5"):
        for _ in range(5):
            pass_step(jobs, serial, at(100))
        assign_finished_unit(orders, jobs, serial, at(100))
    jobs.scrap("S6", "crash", at(110))
    # 20 ordered: 5 finished, 1 scrapped, 2 in progress (S7, S8), 12 never started
    outputs = handle(orders, jobs, BackOutJob("WO-1", "castings short", None, None), at(120), "erp")
    assert outputs["Quantity"] == 20 - 5 - 2 == 13  # the scrapped one is owed again
    assert orders.booking(outputs["BookingId"]).parts == {"PX": 13}
    assert job.state is JobState.CLOSED
    assert job.finished + outputs["Quantity"] + job.wip == job.quantity
    # the units in progress finish their routing and fill the same order's workorder
    for serial in ("S7", "S8"):
        for _ in range(5):
            pass_step(jobs, serial, at(200))
        assert jobs.unit(serial).status is UnitStatus.FINISHED
        assert assign_finished_unit(orders, jobs, serial, at(200)) == "XYZ"
    assert orders.workorder("XYZ").assigned("PX") == 7
    # nothing new starts in the backed-out job
    refused(jobs, Reason.JOB_CLOSED, start, jobs, "WO-1", "S9")


def test_a_back_out_without_units_in_progress_rebooks_all_that_is_not_finished() -> None:
    jobs, orders = make_book(), OrderBook()
    job = released_job(jobs, "WO-1", quantity=10, part="PX")
    for n in (1, 2):
        start(jobs, "WO-1", f"S{n}", at(n))
        for _ in range(5):
            pass_step(jobs, f"S{n}", at(100))
    outputs = handle(orders, jobs, BackOutJob("WO-1", "order cut", date(2026, 3, 20), 4), at(120), "erp")
    assert outputs["Quantity"] == 8
    booking = orders.booking(outputs["BookingId"])
    assert (booking.parts, booking.due, booking.priority) == ({"PX": 8}, date(2026, 3, 20), 4)
    assert (job.state, job.wip) == (JobState.CLOSED, 0)
