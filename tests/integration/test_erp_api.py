"""Every scenario of seed 001 through the HTTP API of a real running gateway (real SQLite, real uvicorn).

Receive, the daily schedule example, filling (at unload and by a supervisor), cost reports, order
updates, replacement bookings, quantity fix-ups, re-machined parts, a rush order filled from stock,
backing out. Finished parts are made by station reports through the writer (tests/service/shop.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from gateway.config import CellConfig
from gateway.jobs.commands import ApproveTemplate, CreateTemplate, SetDefaultTemplate
from gateway.orders.costs import unit_cost
from gateway.storage import rows as R
from gateway.storage import schema as S
from gateway.tracking.reports import (
    CycleEnded,
    CycleResult,
    CycleStarted,
    LoadCompleted,
    PalletArrived,
    PalletDeparted,
    ScanIn,
    ScanOut,
    ScanResult,
)
from tests.integration.erp_support import ERP_CELL, Erp, day, demo_toml, erp_gateway
from tests.support import T0

MakeConfig = Callable[..., CellConfig]


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def _audit(erp: Erp, **params: str) -> list[tuple[str, str, str, str, dict[str, int], dict[str, int]]]:
    return [
        (e["action"], e["subject"], e["actor"], e["reason"], e["before"], e["after"])
        for e in await erp.all("/audit", **params)
    ]


# ------------------------------------------------------------------------------------ receive orders
async def test_receive_an_order_makes_a_booking_and_a_workorder_with_the_same_id(make_config: MakeConfig) -> None:
    async with erp_gateway(make_config) as erp:
        body = await erp.order("XYZ", {"ABC123": 20, "DEF456": 4}, due=day(21), priority=2)
        booking = {
            "id": "XYZ",
            "due": day(21),
            "priority": 2,
            "scheduled": False,
            "parts": {"ABC123": 20, "DEF456": 4},
            "casting": "",
        }
        workorder = {
            "id": "XYZ",
            "due": day(21),
            "priority": 2,
            "filled": False,
            "filled_at": None,
            "parts": {"ABC123": 20, "DEF456": 4},
            "serials": {},
            "remaining": {"ABC123": 20, "DEF456": 4},
        }
        assert body == {"booking": booking, "workorder": workorder}
        assert await erp.ok("GET", "/bookings/XYZ") == booking
        assert await erp.ok("GET", "/workorders/XYZ") == workorder

        again = {"id": "XYZ", "due": day(21), "parts": {"ABC123": 1}}
        problem = await erp.problem("POST", "/orders", 409, "DuplicateId", json=again)
        assert "XYZ" in problem["detail"]
        await erp.problem("POST", "/orders", 422, "InvalidArgument", json={"id": "E", "due": day(1), "parts": {}})
        await erp.problem(
            "POST", "/orders", 422, "InvalidArgument", json={"id": "E", "due": day(1), "parts": {"ABC123": 0}}
        )
        await erp.problem("POST", "/orders", 422, "InvalidArgument", json={"id": "E", "due": "soon", "parts": {"A": 1}})
        await erp.problem("GET", "/bookings/NOPE", 404, "NotFound")
        await erp.problem("GET", "/workorders/NOPE", 404, "NotFound")
        assert [b["id"] for b in await erp.all("/bookings")] == ["XYZ"]


# ------------------------------------------------------------------------------------ daily schedule
async def test_the_daily_schedule_comes_out_exactly_as_the_seed_example(make_config: MakeConfig) -> None:
    """SSS 20 + TTT 15 ABC123, UUU 60 DEF456; 5 and 35 scheduled before; the day fits 25 DEF456, 18 ABC123."""
    async with erp_gateway(make_config, ERP_CELL) as erp:
        # Engineering: DEF456 has its own routing without the lathe (the one resource ABC123 is short of).
        writer = erp.gateway.writer
        created = await writer.submit(CreateTemplate("DEF456", "A", ("OP10", "OP20", "OP40")), "engineer")
        template = created.outputs["TemplateId"]
        assert (await writer.submit(ApproveTemplate(template), "engineer")).ok
        assert (await writer.submit(SetDefaultTemplate("DEF456", "A", template), "engineer")).ok

        await erp.order("SSS", {"ABC123": 20}, due=day(7))
        await erp.order("TTT", {"ABC123": 15}, due=day(7))
        await erp.order("UUU", {"DEF456": 60}, due=day(7))
        for part, quantity in (("ABC123", 5), ("DEF456", 35)):
            body = {"quantity": quantity, "reason": "scheduled on an earlier day without a booking"}
            assert await erp.ok("PUT", f"/scheduled-without-bookings/{part}", json=body) == {
                "part": part,
                "quantity": quantity,
            }

        schedule = await erp.schedule(expected_hours=24)
        assert schedule["id"] == "S-2026-03-02"
        assert _at(schedule["created_at"]) == T0
        assert schedule["expected_hours"] == 24
        assert schedule["demand"] == {"ABC123": 30, "DEF456": 25}
        assert {j["part"]: j["quantity"] for j in schedule["jobs"]} == {"DEF456": 25, "ABC123": 18}
        assert sorted(schedule["bookings_scheduled"]) == ["SSS", "UUU"]
        assert schedule["scheduled_without_bookings"] == {"ABC123": 3}
        assert schedule["parts_without_routing"] == []
        assert await erp.ok("GET", f"/schedules/{schedule['id']}") == schedule

        # What the ERP now holds: SSS and UUU scheduled, TTT not, the table replaced by 3 ABC123.
        bookings = {b["id"]: b["scheduled"] for b in await erp.all("/bookings")}
        assert bookings == {"SSS": True, "TTT": False, "UUU": True}
        assert [b["id"] for b in await erp.all("/bookings", scheduled="false")] == ["TTT"]
        assert await erp.all("/scheduled-without-bookings") == [{"part": "ABC123", "quantity": 3}]
        assert await erp.ok("GET", "/scheduled-without-bookings/DEF456") == {"part": "DEF456", "quantity": 0}

        # The jobs were created and released in the same step, each with its part's routing.
        book = writer.model.book
        for part, quantity, operations in (("ABC123", 18, 4), ("DEF456", 25, 3)):
            job = await erp.ok("GET", f"/jobs/{await erp.job_of(schedule, part)}")
            assert (job["part"], job["quantity"], job["state"]) == (part, quantity, "Released")
            assert len(book.jobs[job["id"]].routing) == operations

        # The next day the 3 left over plus 12 new cover TTT.
        erp.clock.advance(timedelta(days=1))
        tomorrow = await erp.schedule()
        assert tomorrow["id"] == "S-2026-03-03"
        assert tomorrow["demand"] == {"ABC123": 12}
        assert {j["part"]: j["quantity"] for j in tomorrow["jobs"]} == {"ABC123": 12}
        assert tomorrow["bookings_scheduled"] == ["TTT"]
        assert tomorrow["scheduled_without_bookings"] == {}
        assert await erp.all("/scheduled-without-bookings") == []
        assert [s["id"] for s in await erp.all("/schedules")] == ["S-2026-03-02", "S-2026-03-03"]


async def test_a_refused_schedule_creates_no_jobs_and_marks_nothing(make_config: MakeConfig) -> None:
    async with erp_gateway(make_config) as erp:
        await erp.order("A", {"ABC123": 3}, due=day(1))
        await erp.schedule(schedule_id="DAY-1")
        await erp.order("B", {"ABC123": 2}, due=day(2))
        await erp.problem("POST", "/schedules", 409, "DuplicateId", json={"schedule_id": "DAY-1"})
        assert len(await erp.all("/jobs")) == 1
        assert (await erp.ok("GET", "/bookings/B"))["scheduled"] is False
        await erp.problem("POST", "/schedules", 422, "InvalidArgument", json={"expected_hours": 0})
        # Only bookings due before the horizon are read.
        later = await erp.schedule(due_before=day(2))
        assert later["demand"] == {}
        assert later["jobs"] == []
        assert later["due_before"] == day(2)
        assert (await erp.ok("GET", "/bookings/B"))["scheduled"] is False


# ------------------------------------------------------------------------- filling and cost reports
async def test_finished_parts_fill_the_soonest_due_workorder_at_unload(make_config: MakeConfig, tmp_path: Path) -> None:
    async with erp_gateway(make_config, demo_toml(tmp_path, assign_at_unload=True)) as erp:
        await erp.order("LATER", {"ABC123": 1}, due=day(10))
        await erp.order("SOON", {"ABC123": 2}, due=day(3))
        job = await erp.job_of(await erp.schedule(), "ABC123")
        first, second, third = await erp.shop.make(job, 3)

        soon = await erp.ok("GET", "/workorders/SOON")
        assert soon["serials"] == {"ABC123": [first, second]}
        assert soon["filled"] is True
        assert soon["remaining"] == {"ABC123": 0}
        later = await erp.ok("GET", "/workorders/LATER")
        assert later["serials"] == {"ABC123": [third]}
        assert later["filled"] is True
        assert _at(later["filled_at"]) == erp.clock.now()
        assert await erp.all("/finished-serials") == []
        assert [w["id"] for w in await erp.all("/workorders", filled="true", part="ABC123")] == ["LATER", "SOON"]

        # The cost report of a part made alone on its pallet, by hand (seed 001): elapsed labor, the pallet's
        # time at the load station = load 150 + 5 s to its departure + unload 100, against 120 + 90
        # expected; elapsed machining, its time at the machine = 950 against the program's 900; wash
        # (200 against 180) and inspection (280 against 300) apart.
        report = await erp.ok("GET", "/workorders/LATER/cost-report")
        assert report["serials"] == [third]
        assert (report["elapsed_labor_s"], report["expected_labor_s"]) == (255, 210)
        assert (report["elapsed_machining_s"], report["program_cycle_s"]) == (950, 900)
        assert (report["elapsed_wash_s"], report["expected_wash_s"]) == (200, 180)
        assert (report["elapsed_inspection_s"], report["expected_inspection_s"]) == (280, 300)
        assert report["unknown"] == {}
        assert report["by_part"]["ABC123"]["units"] == 1

        # Two parts that shared a pallet: the sums of what the cell measured for each serial.
        report = await erp.ok("GET", "/workorders/SOON/cost-report")
        async with erp.gateway.engine.connect() as conn:  # finished units may have left memory
            rows = {r.serial: R.unit_from(r) for r in await conn.execute(select(S.units))}
        units = [rows[s].cost for s in (first, second)]
        assert report["serials"] == [first, second]
        assert report["elapsed_labor_s"] == sum(u.elapsed_labor for u in units)
        assert report["expected_labor_s"] == sum(u.expected_labor for u in units) == 2 * (120 + 90)
        assert report["elapsed_machining_s"] == sum(u.elapsed_machine for u in units) == 950  # one pallet's visit
        assert report["program_cycle_s"] == sum(u.expected_machine for u in units) == 2 * 900
        assert report["elapsed_wash_s"] == sum(u.elapsed_wash for u in units) == 200


async def test_a_supervisor_fills_workorders_from_the_finished_serials(make_config: MakeConfig) -> None:
    async with erp_gateway(make_config) as erp:
        await erp.order("A1", {"ABC123": 2}, due=day(5))
        await erp.order("A2", {"ABC123": 1}, due=day(6))
        job = await erp.job_of(await erp.schedule(), "ABC123")
        serials = await erp.shop.make(job, 3)
        finished = await erp.all("/finished-serials", part="ABC123")
        assert [f["serial"] for f in finished] == sorted(serials)
        assert {(f["job_id"], f["part"], f["revision"]) for f in finished} == {(job, "ABC123", "A")}

        await erp.problem("POST", "/workorders/A1/serials", 404, "NotFound", json={"serials": ["NOPE"]})
        await erp.problem("POST", "/workorders/A1/serials", 422, "InvalidArgument", json={"serials": serials})
        one = await erp.ok("POST", "/workorders/A1/serials", json={"serials": serials[:2], "reason": "review"})
        assert one["serials"] == {"ABC123": serials[:2]}
        assert one["filled"] is False
        await erp.problem("POST", "/workorders/A2/serials", 409, "DuplicateSerial", json={"serials": [serials[0]]})
        await erp.problem("GET", "/workorders/A1/cost-report", 409, "InvalidTransition")

        # Move one serial to the more urgent workorder, fill both.
        back = await erp.ok("DELETE", f"/workorders/A1/serials/{serials[1]}", params={"reason": "A2 ships first"})
        assert back["serials"] == {"ABC123": serials[:1]}
        await erp.problem("DELETE", f"/workorders/A2/serials/{serials[0]}", 404, "NotFound", params={"reason": "x"})
        await erp.ok("POST", "/workorders/A2/serials", json={"serials": [serials[1]]})
        filled = await erp.ok("POST", "/workorders/A2/fill", json={})
        assert filled["filled"] is True
        await erp.ok("POST", "/workorders/A1/serials", json={"serials": [serials[2]]})
        await erp.ok("POST", "/workorders/A1/fill", json={"reason": "complete"})
        await erp.problem("POST", "/workorders/A1/fill", 409, "OrderFulfilled", json={})
        await erp.problem(
            "PATCH", "/workorders/A1", 409, "OrderFulfilled", json={"part": "ABC123", "quantity": 3, "reason": "x"}
        )
        assert await erp.all("/finished-serials") == []
        report = await erp.ok("GET", "/workorders/A1/cost-report")
        assert sorted(report["serials"]) == sorted([serials[0], serials[2]])
        assert report["expected_labor_s"] == 2 * (120 + 90)

        assert await _audit(erp, subject="A1") == [
            ("SerialsAssigned", "A1", "erp", "review", {}, {"ABC123": 2}),
            ("SerialUnassigned", "A1", "erp", "A2 ships first", {"ABC123": 2}, {"ABC123": 1}),
            ("SerialsAssigned", "A1", "erp", "", {"ABC123": 1}, {"ABC123": 2}),
            ("WorkorderMarkedFilled", "A1", "erp", "complete", {"ABC123": 2}, {"ABC123": 2}),
        ]


async def test_overruns_flag_labor_that_runs_over_consistently_not_once(make_config: MakeConfig) -> None:
    from tests.service.shop import Times

    async with erp_gateway(make_config) as erp:
        for n in range(5):
            await erp.order(f"W{n}", {"ABC123": 1}, due=day(n + 1))
        job = await erp.job_of(await erp.schedule(), "ABC123")
        # Every part: labor 600 + 5 (to the departure) + 150 elapsed against 210 expected; machining on time.
        slow = Times(load=600, mill=900, wash=180, unload=150, inspect=400)
        serials = [s for _ in range(5) for s in await erp.shop.make(job, 1, times=slow)]
        for n, serial in enumerate(serials):
            await erp.ok("POST", f"/workorders/W{n}/serials", json={"serials": [serial]})
            await erp.ok("POST", f"/workorders/W{n}/fill", json={})
        report = await erp.ok("GET", "/reports/overruns")
        assert report["workorders"] == 5
        found = {(f["kind"], f["part"]): f for f in report["findings"]}
        labor = found[("Labor", None)]
        assert labor["consistent"] is True
        assert labor["above_expected"] == 5
        assert abs(labor["median_overrun"] - (755 / 210 - 1)) < 1e-9
        assert found[("Labor", "ABC123")]["consistent"] is True
        assert found[("Machining", None)]["consistent"] is False
        # Fewer workorders than asked for: never a finding.
        few = await erp.ok("GET", "/reports/overruns", params={"min_workorders": 6})
        assert not any(f["consistent"] for f in few["findings"])
        await erp.problem("GET", "/reports/overruns", 422, "InvalidArgument", params={"majority": 0.4})


# ------------------------------------------------------------------------------------- order updates
async def test_order_updates_edit_unscheduled_and_book_the_extra_once_scheduled(make_config: MakeConfig) -> None:
    async with erp_gateway(make_config) as erp:
        # Unscheduled and unfilled: booking and workorder edited in place.
        await erp.order("EDIT", {"ABC123": 20}, due=day(20))
        edited = await erp.ok("PATCH", "/orders/EDIT", json={"parts": {"ABC123": 30}})
        assert [(b["id"], b["parts"], b["scheduled"]) for b in edited["bookings"]] == [("EDIT", {"ABC123": 30}, False)]
        assert edited["workorder"]["parts"] == {"ABC123": 30}
        await erp.ok("PATCH", "/bookings/EDIT", json={"part": "ABC123", "quantity": 0, "reason": "order cancelled"})

        # Scheduled: the XYZ booking stays at 20, XYZ-extra books the 10 more, the workorder takes 30.
        await erp.order("XYZ", {"ABC123": 20}, due=day(10))
        first = await erp.schedule()
        assert first["bookings_scheduled"] == ["XYZ"]
        updated = await erp.ok("PATCH", "/orders/XYZ", json={"parts": {"ABC123": 30}, "reason": "customer +10"})
        assert [(b["id"], b["parts"], b["scheduled"], b["due"]) for b in updated["bookings"]] == [
            ("XYZ-extra", {"ABC123": 10}, False, day(10))
        ]
        assert updated["workorder"]["parts"] == {"ABC123": 30}
        assert (await erp.ok("GET", "/bookings/XYZ"))["parts"] == {"ABC123": 20}

        # Down to 28 before the extra is scheduled: taken off the extra booking.
        down = await erp.ok("PATCH", "/orders/XYZ", json={"parts": {"ABC123": 28}})
        assert [(b["id"], b["parts"]) for b in down["bookings"]] == [("XYZ-extra", {"ABC123": 8})]
        second = await erp.schedule(schedule_id="S-extra", due_before=day(20))
        assert second["bookings_scheduled"] == ["XYZ-extra"]
        assert {j["part"]: j["quantity"] for j in second["jobs"]} == {"ABC123": 8}
        # The cell made 20 + 8 for the one workorder of 28.
        assert (await erp.ok("GET", "/workorders/XYZ"))["remaining"] == {"ABC123": 28}

        await erp.problem("PATCH", "/orders/NOPE", 404, "NotFound", json={"parts": {"ABC123": 1}})
        actions = [(a, s) for a, s, *_ in await _audit(erp)]
        assert actions == [
            ("BookingEdited", "EDIT"),
            ("WorkorderEdited", "EDIT"),
            ("BookingRemoved", "EDIT"),
            ("ExtraBooking", "XYZ-extra"),
            ("WorkorderEdited", "XYZ"),
            ("BookingEdited", "XYZ-extra"),
            ("WorkorderEdited", "XYZ"),
        ]


async def test_an_order_raised_after_its_workorder_filled_books_the_extra_and_fills_again(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    """Seed 001, "Update existing orders": once the booking is scheduled "the ERP creates a new booking
    with the difference in quantity", and the workorder takes the new quantity, so that all the parts
    "can all be filled into the single XYZ workorder": also when its first parts had filled it already.
    """
    async with erp_gateway(make_config, demo_toml(tmp_path, assign_at_unload=True)) as erp:
        await erp.order("XYZ", {"ABC123": 2}, due=day(10))
        job = await erp.job_of(await erp.schedule(), "ABC123")
        first = await erp.shop.make(job, 2)
        filled = await erp.ok("GET", "/workorders/XYZ")
        assert (filled["filled"], filled["serials"]) == (True, {"ABC123": first})
        assert (await erp.ok("GET", "/workorders/XYZ/cost-report"))["serials"] == first
        # Another order comes in meanwhile; by then the finished units have left the writer's memory,
        # so raising XYZ reads them back for their times.
        await erp.order("LATER", {"DEF456": 1}, due=day(30))
        assert not set(first) & set(erp.gateway.writer.model.book.units)

        updated = await erp.ok("PATCH", "/orders/XYZ", json={"parts": {"ABC123": 3}, "reason": "customer +1"})
        assert [(b["id"], b["parts"], b["scheduled"]) for b in updated["bookings"]] == [
            ("XYZ-extra", {"ABC123": 1}, False)
        ]
        workorder = updated["workorder"]
        assert (workorder["parts"], workorder["filled"], workorder["filled_at"]) == ({"ABC123": 3}, False, None)
        assert (workorder["serials"], workorder["remaining"]) == ({"ABC123": first}, {"ABC123": 1})
        assert (await erp.ok("GET", "/bookings/XYZ"))["parts"] == {"ABC123": 2}
        assert [w["id"] for w in await erp.all("/workorders", filled="false", part="ABC123")] == ["XYZ"]
        await erp.problem("GET", "/workorders/XYZ/cost-report", 409, "InvalidTransition")
        assert (await erp.ok("GET", "/reports/overruns"))["workorders"] == 0
        # Down again is refused: a filled-then-raised workorder is unfilled, but not below its serials.
        await erp.problem("PATCH", "/orders/XYZ", 422, "InvalidArgument", json={"parts": {"ABC123": 1}})

        second = await erp.schedule(schedule_id="S-extra", due_before=day(20))
        assert second["bookings_scheduled"] == ["XYZ-extra"]
        assert {j["part"]: j["quantity"] for j in second["jobs"]} == {"ABC123": 1}
        (third,) = await erp.shop.make(await erp.job_of(second, "ABC123"), 1)

        refilled = await erp.ok("GET", "/workorders/XYZ")
        assert (refilled["filled"], refilled["serials"]) == (True, {"ABC123": [*first, third]})
        assert _at(refilled["filled_at"]) == erp.clock.now()
        report = await erp.ok("GET", "/workorders/XYZ/cost-report")
        assert report["serials"] == [*first, third]
        assert _at(report["filled_at"]) == erp.clock.now()
        async with erp.gateway.engine.connect() as conn:
            rows = {r.serial: R.unit_from(r) for r in await conn.execute(select(S.units))}
        times = [unit_cost(s, rows[s].cost) for s in (*first, third)]  # what each serial finished with
        assert report["elapsed_labor_s"] == sum(t.elapsed_labor_s or 0 for t in times) > 0
        assert report["expected_labor_s"] == sum(t.expected_labor_s or 0 for t in times) > 0
        assert report["elapsed_machining_s"] == sum(t.elapsed_machining_s or 0 for t in times) > 0
        assert report["program_cycle_s"] == sum(t.program_cycle_s or 0 for t in times) > 0
        assert (report["unknown"], report["by_part"]["ABC123"]["units"]) == ({}, 3)
        assert (await erp.ok("GET", "/reports/overruns"))["workorders"] == 1

        # Filled again, it still only goes up.
        lowered = await erp.problem("PATCH", "/orders/XYZ", 409, "OrderFulfilled", json={"parts": {"ABC123": 2}})
        assert "not lower it" in lowered["detail"]
        assert [(a, s, before, after) for a, s, _, _, before, after in await _audit(erp, subject="XYZ")] == [
            ("WorkorderEdited", "XYZ", {"ABC123": 2}, {"ABC123": 3})
        ]


# ------------------------------------------------------------------------ replacements and fix-ups
async def test_a_replacement_booking_makes_one_more_part_for_the_same_workorder(make_config: MakeConfig) -> None:
    async with erp_gateway(make_config) as erp:
        await erp.order("XYZ", {"ABC123": 2}, due=day(5))
        job = await erp.job_of(await erp.schedule(), "ABC123")
        good, scrapped = await erp.shop.make(job, 2)
        await erp.ok("POST", "/workorders/XYZ/serials", json={"serials": [good]})

        # The other part failed its final inspection and was scrapped: the operator books one more.
        body = {"part": "ABC123", "due": day(2), "priority": 5, "replaces": "XYZ", "reason": f"{scrapped} scrapped"}
        booking = await erp.ok("POST", "/replacement-bookings", 201, json=body)
        assert booking == {
            "id": "XYZ-repl-1",
            "due": day(2),
            "priority": 5,
            "scheduled": False,
            "parts": {"ABC123": 1},
            "casting": "",
        }
        assert (await erp.ok("GET", "/workorders/XYZ"))["parts"] == {"ABC123": 2}  # workorders unchanged

        erp.clock.advance(timedelta(days=1))
        schedule = await erp.schedule()
        assert schedule["bookings_scheduled"] == ["XYZ-repl-1"]
        (replacement,) = await erp.shop.make(await erp.job_of(schedule, "ABC123"), 1)
        await erp.ok("POST", "/workorders/XYZ/serials", json={"serials": [replacement]})
        filled = await erp.ok("POST", "/workorders/XYZ/fill", json={})
        assert filled["serials"] == {"ABC123": [good, replacement]}
        assert await _audit(erp, action="ReplacementBooking") == [
            ("ReplacementBooking", "XYZ-repl-1", "erp", f"{scrapped} scrapped", {}, {"ABC123": 1})
        ]


async def test_quantity_fix_ups_of_bookings_the_table_and_workorders(make_config: MakeConfig) -> None:
    async with erp_gateway(make_config) as erp:
        await erp.order("XYZ", {"ABC123": 10}, due=day(5))
        # An extra ABC123 is at the outbound, unaccounted for: reduce the booking by one ...
        fix = {"part": "ABC123", "quantity": 9, "reason": "extra part at the outbound"}
        edited = await erp.ok("PATCH", "/bookings/XYZ", json=fix)
        assert edited == {"booking": {**edited["booking"], "parts": {"ABC123": 9}}, "removed": False}
        assert (await erp.ok("GET", "/workorders/XYZ"))["parts"] == {"ABC123": 10}  # filling is unaffected
        # ... or, for a second one, add it to the scheduled parts without bookings.
        table = {"quantity": 1, "reason": "second extra part at the outbound"}
        await erp.ok("PUT", "/scheduled-without-bookings/ABC123", json=table)
        schedule = await erp.schedule()
        assert schedule["demand"] == {"ABC123": 8}
        assert {j["part"]: j["quantity"] for j in schedule["jobs"]} == {"ABC123": 8}
        assert schedule["bookings_scheduled"] == ["XYZ"]
        assert schedule["scheduled_without_bookings"] == {}

        # A scheduled booking is no longer read: fixing it is refused, the table is the place.
        await erp.problem("PATCH", "/bookings/XYZ", 409, "InvalidTransition", json=fix)
        wo = await erp.ok("PATCH", "/workorders/XYZ", json={"part": "ABC123", "quantity": 11, "reason": "recount"})
        assert wo["parts"] == {"ABC123": 11}
        await erp.problem(
            "PATCH", "/workorders/XYZ", 422, "InvalidArgument", json={"part": "ABC123", "quantity": 0, "reason": "x"}
        )
        await erp.problem("PUT", "/scheduled-without-bookings/ABC123", 422, "InvalidArgument", json={"quantity": -1})

        # Removing the last part of an unscheduled booking removes it.
        await erp.order("GONE", {"DEF456": 2}, due=day(9))
        removed = await erp.ok("PATCH", "/bookings/GONE", json={"part": "DEF456", "quantity": 0, "reason": "cancel"})
        assert removed == {"booking": None, "removed": True}
        await erp.problem("GET", "/bookings/GONE", 404, "NotFound")

        assert await _audit(erp) == [
            ("BookingEdited", "XYZ", "erp", "extra part at the outbound", {"ABC123": 10}, {"ABC123": 9}),
            ("ScheduledWithoutBookingSet", "ABC123", "erp", "second extra part at the outbound", {}, {"ABC123": 1}),
            ("WorkorderEdited", "XYZ", "erp", "recount", {"ABC123": 10}, {"ABC123": 11}),
            ("BookingRemoved", "GONE", "erp", "cancel", {"DEF456": 2}, {}),
        ]
        entries = await erp.all("/audit")
        assert all(e["event_counter"] for e in entries)
        assert [e["id"] for e in entries] == sorted(e["id"] for e in entries)


async def test_a_re_machined_part_that_comes_back_is_counted_in_the_table(make_config: MakeConfig) -> None:
    async with erp_gateway(make_config) as erp:
        await erp.order("XYZ", {"ABC123": 3}, due=day(5))
        job = await erp.job_of(await erp.schedule(), "ABC123")
        first, second, remachined = await erp.shop.make(job, 3)
        await erp.ok("POST", "/workorders/XYZ/serials", json={"serials": [first, second]})
        # The third needs a long re-machining: a replacement is booked so XYZ is filled promptly.
        await erp.ok(
            "POST",
            "/replacement-bookings",
            201,
            json={"part": "ABC123", "due": day(1), "replaces": "XYZ", "reason": f"{remachined} to re-machining"},
        )
        schedule = await erp.schedule(schedule_id="D2")
        (replacement,) = await erp.shop.make(await erp.job_of(schedule, "ABC123"), 1)
        await erp.ok("POST", "/workorders/XYZ/serials", json={"serials": [replacement]})
        assert (await erp.ok("POST", "/workorders/XYZ/fill", json={}))["filled"] is True

        # The re-machined part is back: an extra part, added to the scheduled parts without bookings.
        await erp.ok("PUT", "/scheduled-without-bookings/ABC123", json={"quantity": 1, "reason": "re-machined back"})
        await erp.order("NEW", {"ABC123": 2}, due=day(8))
        schedule = await erp.schedule(schedule_id="D3")
        assert schedule["demand"] == {"ABC123": 1}  # one fewer part scheduled
        assert schedule["bookings_scheduled"] == ["NEW"]
        assert schedule["scheduled_without_bookings"] == {}
        (made,) = await erp.shop.make(await erp.job_of(schedule, "ABC123"), 1)
        filled = await erp.ok("POST", "/workorders/NEW/serials", json={"serials": [remachined, made]})
        assert filled["remaining"] == {"ABC123": 0}


async def test_a_rush_order_is_filled_from_stock_without_editing_anything(make_config: MakeConfig) -> None:
    async with erp_gateway(make_config) as erp:
        await erp.order("XYZ", {"ABC123": 20}, due=day(21))
        job = await erp.job_of(await erp.schedule(), "ABC123")
        stock = await erp.shop.make(job, 20)

        await erp.order("JKL", {"ABC123": 15}, due=day(2))
        bookings = {b["id"]: b["scheduled"] for b in await erp.all("/bookings")}
        assert bookings == {"JKL": False, "XYZ": True}
        assert {w["id"] for w in await erp.all("/workorders", filled="false")} == {"JKL", "XYZ"}

        # JKL is due soon: 15 of the 20 parts at the outbound go to it.
        await erp.ok("POST", "/workorders/JKL/serials", json={"serials": stock[:15]})
        await erp.ok("POST", "/workorders/JKL/fill", json={})
        assert len(await erp.all("/finished-serials")) == 5
        assert {w["id"] for w in await erp.all("/workorders", filled="false")} == {"XYZ"}
        assert (await erp.ok("GET", "/bookings/JKL"))["scheduled"] is False

        # The next schedule makes 15 ABC123 for the JKL booking; with the 5 left they fill XYZ.
        erp.clock.advance(timedelta(days=1))
        schedule = await erp.schedule()
        assert schedule["demand"] == {"ABC123": 15}
        assert schedule["bookings_scheduled"] == ["JKL"]
        more = await erp.shop.make(await erp.job_of(schedule, "ABC123"), 15)
        await erp.ok("POST", "/workorders/XYZ/serials", json={"serials": stock[15:] + more})
        assert (await erp.ok("POST", "/workorders/XYZ/fill", json={}))["filled"] is True
        # No booking or workorder was edited by hand.
        assert {a for a, *_ in await _audit(erp)} == {"SerialsAssigned", "WorkorderMarkedFilled"}


# ---------------------------------------------------------------------------------------- backing out
async def test_backing_out_a_job_books_what_it_did_not_make(make_config: MakeConfig, tmp_path: Path) -> None:
    async with erp_gateway(make_config, demo_toml(tmp_path, assign_at_unload=True)) as erp:
        await erp.order("XYZ", {"ABC123": 20}, due=day(3), priority=4)
        job = await erp.job_of(await erp.schedule(), "ABC123")
        await erp.shop.make(job, 8)

        backed = await erp.ok("POST", f"/jobs/{job}/back-out", json={"reason": "M2 down: start the day fresh"})
        assert backed["quantity"] == 12
        assert backed["booking"] == {
            "id": f"{job}-backout-1",
            "due": day(3),
            "priority": 4,
            "scheduled": False,
            "parts": {"ABC123": 12},
            "casting": "",
        }
        assert backed["variance"] == {
            "ordered": 20,
            "started": 8,
            "finished": 8,
            "scrapped": 0,
            "wip": 0,
            "freed": 12,
        }
        assert (await erp.ok("GET", f"/jobs/{job}"))["state"] == "Closed"
        await erp.problem("POST", f"/jobs/{job}/back-out", 409, "JobClosed", json={"reason": "again"})
        await erp.problem("POST", "/jobs/NOPE/back-out", 404, "NotFound", json={"reason": "x"})

        erp.clock.advance(timedelta(days=1))
        schedule = await erp.schedule()
        assert schedule["demand"] == {"ABC123": 12}
        assert schedule["bookings_scheduled"] == [f"{job}-backout-1"]
        await erp.shop.make(await erp.job_of(schedule, "ABC123"), 12)
        workorder = await erp.ok("GET", "/workorders/XYZ")
        assert workorder["parts"] == {"ABC123": 20}  # unchanged all along
        assert workorder["filled"] is True
        assert len(workorder["serials"]["ABC123"]) == 20
        assert await _audit(erp) == [
            ("JobBackedOut", f"{job}-backout-1", "erp", "M2 down: start the day fresh", {}, {"ABC123": 12})
        ]


# -------------------------------------------------------------------------------- the API as an API
async def test_credentials_roles_problems_and_pages(make_config: MakeConfig) -> None:
    async with erp_gateway(make_config) as erp:
        anonymous = await erp.http.get("/bookings", auth=None)
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Basic")
        assert anonymous.json()["reason"] == "AccessDenied"
        await erp.problem("GET", "/bookings", 401, "AccessDenied", auth=("erp", "wrong"))
        await erp.problem("GET", "/bookings", 401, "AccessDenied", auth=("nobody", "nobody"))
        await erp.problem("GET", "/bookings", 403, "AccessDenied", auth=("operator", "operator"))
        await erp.problem("POST", "/orders", 403, "AccessDenied", auth=("plc-load", "plc-load"), json={})
        assert (await erp.http.get("/bookings", auth=("engineer", "engineer"))).status_code == 200

        for n in range(5):
            await erp.order(f"O{n}", {"ABC123": n + 1}, due=day(5 - n))
        first = await erp.ok("GET", "/bookings", params={"limit": 2})
        assert [b["id"] for b in first["items"]] == ["O0", "O1"]
        assert first["next_after"] == "O1"
        assert [b["id"] for b in await erp.all("/bookings")] == ["O0", "O1", "O2", "O3", "O4"]
        assert [b["id"] for b in await erp.all("/bookings", due_before=day(3))] == ["O3", "O4"]
        await erp.problem("GET", "/bookings", 422, "InvalidArgument", params={"limit": 0})
        await erp.problem("GET", "/nowhere", 404, "NotFound")
        bad = await erp.http.post("/orders", content=b"{not json", headers={"content-type": "application/json"})
        assert bad.status_code == 422
        assert bad.json()["reason"] == "InvalidArgument"

        spec = (await erp.http.get("/openapi.json", auth=None)).json()
        assert spec["components"]["securitySchemes"]["HTTPBasic"]["scheme"] == "basic"
        for path in (
            "/orders",
            "/orders/{order_id}",
            "/bookings",
            "/bookings/{booking_id}",
            "/scheduled-without-bookings/{part}",
            "/schedules",
            "/schedules/{schedule_id}",
            "/workorders",
            "/workorders/{workorder_id}",
            "/workorders/{workorder_id}/serials",
            "/workorders/{workorder_id}/fill",
            "/workorders/{workorder_id}/cost-report",
            "/reports/overruns",
            "/jobs/{job_id}/back-out",
            "/replacement-bookings",
            "/audit",
            "/finished-serials",
        ):
            assert path in spec["paths"], path


async def test_orders_survive_a_restart_exactly(make_config: MakeConfig, tmp_path: Path) -> None:
    path = demo_toml(tmp_path, assign_at_unload=True)

    async def everything(erp: Erp) -> dict[str, Any]:
        lists = ("/bookings", "/workorders", "/schedules", "/scheduled-without-bookings", "/audit", "/jobs")
        found: dict[str, Any] = {url: await erp.all(url) for url in lists}
        found["report"] = await erp.ok("GET", "/workorders/A/cost-report")
        found["finished"] = await erp.all("/finished-serials")
        return found

    async with erp_gateway(make_config, path) as erp:
        await erp.order("A", {"ABC123": 2}, due=day(2))
        await erp.order("B", {"ABC123": 1, "DEF456": 1}, due=day(4))
        schedule = await erp.schedule()
        await erp.shop.make(await erp.job_of(schedule, "ABC123"), 3)
        await erp.ok("PATCH", "/orders/B", json={"parts": {"ABC123": 2, "DEF456": 1}})
        await erp.ok("PUT", "/scheduled-without-bookings/DEF456", json={"quantity": 1, "reason": "spare"})
        await erp.ok("POST", f"/jobs/{await erp.job_of(schedule, 'DEF456')}/back-out", json={"reason": "no bars"})
        await erp.ok("POST", "/replacement-bookings", 201, json={"part": "ABC123", "due": day(1), "reason": "drop"})
        before = await everything(erp)
        orders = erp.gateway.writer.model.orders
        state = (orders.bookings, orders.workorders, orders.scheduled_without_bookings, orders.schedules)
    assert before["report"]["serials"]

    async with erp_gateway(make_config, path) as erp:
        assert await everything(erp) == before
        orders = erp.gateway.writer.model.orders
        assert sorted(orders.bookings, key=lambda b: b.id) == sorted(state[0], key=lambda b: b.id)
        assert sorted(orders.workorders, key=lambda w: w.id) == sorted(state[1], key=lambda w: w.id)
        assert (orders.scheduled_without_bookings, orders.schedules) == state[2:]
        # Generated ids carry on where they were.
        again = {"part": "ABC123", "due": day(1), "reason": "drop"}
        assert (await erp.ok("POST", "/replacement-bookings", 201, json=again))["id"] == "ABC123-repl-3"
        assert (await erp.schedule())["id"] == "S-2026-03-02-2"


async def test_a_cost_report_sums_what_was_measured_and_counts_what_was_not(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    """Seed 001: elapsed labor "is the amount of time a pallet spends at the load station", elapsed
    machining "the amount of time a pallet spends at the machine". A pallet whose arrival at the mill
    was never reported has no measurable machining time: the report counts it unknown and still sums
    the part's measured labor, wash and inspection (control: a part whose every move was reported)."""
    async with erp_gateway(make_config, demo_toml(tmp_path, assign_at_unload=True)) as erp:
        await erp.order("FIRST", {"ABC123": 1}, due=day(1))
        await erp.order("SECOND", {"ABC123": 1}, due=day(2))
        job = await erp.job_of(await erp.schedule(), "ABC123")
        (control,) = await erp.shop.make(job, 1)  # fills FIRST, every move reported
        shop, ids = erp.shop, iter(range(10_000, 10_100))

        def eid() -> str:
            return f"x-{next(ids)}"

        await shop.ok(PalletArrived("L1", eid(), None, "P2"))
        (serial,) = (await shop.ok(LoadCompleted("L1", eid(), None, "P2", job, 1), after=150)).outputs["Serials"]
        await shop.ok(PalletDeparted("L1", eid(), None, "P2"), after=5)
        # no PalletArrived at M1: the cycle start places the pallet there, its arrival time unknown
        await shop.ok(CycleStarted("M1", eid(), None, "P2", "PRG-MILL-100"), after=30)
        await shop.ok(CycleEnded("M1", eid(), None, "P2", "PRG-MILL-100", CycleResult.OK), after=950)
        await shop.ok(PalletDeparted("M1", eid(), None, "P2"))
        await shop.ok(PalletArrived("W1", eid(), None, "P2"), after=30)
        await shop.ok(CycleStarted("W1", eid(), None, "P2", "PRG-WASH-1"))
        await shop.ok(CycleEnded("W1", eid(), None, "P2", "PRG-WASH-1", CycleResult.OK), after=200)
        await shop.ok(PalletDeparted("W1", eid(), None, "P2"))
        await shop.ok(PalletArrived("L1", eid(), None, "P2"), after=60)
        await shop.ok(LoadCompleted("L1", eid(), None, "P2", "", 0), after=100)
        await shop.ok(ScanIn("C1", eid(), None, serial), after=10)
        await shop.ok(ScanOut("C1", eid(), None, serial, ScanResult.PASS), after=280)

        first = await erp.ok("GET", "/workorders/FIRST/cost-report")
        assert first["serials"] == [control]
        assert (first["elapsed_labor_s"], first["elapsed_machining_s"], first["unknown"]) == (255, 950, {})
        second = await erp.ok("GET", "/workorders/SECOND/cost-report")
        assert second["serials"] == [serial]
        assert second["unknown"] == {"ElapsedMachining": 1}
        assert second["elapsed_machining_s"] == 0  # nothing of it could be measured
        assert second["program_cycle_s"] == 900  # the plan is known
        assert (second["elapsed_labor_s"], second["expected_labor_s"]) == (150 + 5 + 100, 120 + 90)
        assert (second["elapsed_wash_s"], second["elapsed_inspection_s"]) == (200, 280)
        assert second["by_part"]["ABC123"]["unknown"] == {"ElapsedMachining": 1}
