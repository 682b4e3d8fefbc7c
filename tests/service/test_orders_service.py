"""Order commands through the writer on a real SQLite file: one transaction each, refusals change nothing."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gateway.app import build_model
from gateway.cell.codec import decode, encode
from gateway.clock import ManualClock
from gateway.config import CellConfig
from gateway.errors import Reason, Refused
from gateway.jobs.commands import CreateJob, ReleaseJob
from gateway.jobs.model import JobState, UnitStatus
from gateway.orders.commands import (
    ORDER_COMMAND_TYPES,
    AssignSerials,
    BackOutJob,
    ReceiveOrder,
    RunSchedule,
    SetScheduledWithoutBooking,
    UpdateOrder,
)
from gateway.orders.costs import unit_cost
from gateway.service.replay import replay
from gateway.storage import erp_queries as erp
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
from tests.service.harness import Cell, running_cell
from tests.service.shop import Shop
from tests.support import DEMO_CONFIG, T0

DUE = date(2026, 3, 10)
PLENTY = {"LOAD": 1e6, "MILL": 1e6, "WASH": 1e6, "CMM": 1e6}


async def _state(cell: Cell) -> tuple[Any, ...]:
    """The orders in memory and every job as stored (a closed job may have left memory)."""
    orders = cell.writer.model.orders
    async with cell.writer.store.engine.connect() as conn:
        jobs = sorted((r.id, r.state, r.quantity) for r in await conn.execute(select(S.jobs)))
    return (
        sorted(orders.bookings, key=lambda b: b.id),
        sorted(orders.workorders, key=lambda w: w.id),
        orders.scheduled_without_bookings,
        orders.schedules,
        jobs,
    )


def _config(make_config: Callable[..., CellConfig], tmp_path: Path, **changes: str) -> CellConfig:
    text = DEMO_CONFIG.read_text()
    for old, new in changes.items():
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "cell.toml"
    path.write_text(text)
    return make_config(path)


async def test_a_schedule_creates_releases_and_marks_in_one_transaction(demo_config: CellConfig) -> None:
    async with running_cell(demo_config) as cell:
        await cell.ok(ReceiveOrder("A", DUE, 1, {"ABC123": 3, "DEF456": 2}))
        answer = await cell.ok(RunSchedule(PLENTY, 24.0, None, "DAY-1"))
        jobs = answer.outputs["Jobs"]
        assert sorted(jobs) == ["ABC123", "DEF456"]
        assert all(cell.book.jobs[j].state is JobState.RELEASED for j in jobs.values())
        async with cell.writer.store.engine.connect() as conn:
            # Created and released by the schedule's own log entry.
            counters = {r.job_id: r.event_counter for r in await conn.execute(select(S.job_transitions))}
            lines = {r.part_name: (r.quantity, r.job_id) for r in await conn.execute(select(S.schedule_lines))}
            booking = (await conn.execute(select(S.bookings))).one()
        assert set(counters.values()) == {answer.counter}
        assert lines == {"ABC123": (3, jobs["ABC123"]), "DEF456": (2, jobs["DEF456"])}
        assert booking.scheduled is True

        await cell.ok(ReceiveOrder("B", DUE, 1, {"ABC123": 1}))
        before = await _state(cell)
        refused = await cell.send(RunSchedule(PLENTY, 24.0, None, "DAY-1"))
        assert refused.reason is Reason.DUPLICATE_ID
        refused = await cell.send(RunSchedule({"MILL": -1.0}, 24.0))
        assert refused.reason is Reason.INVALID_ARGUMENT
        assert await _state(cell) == before


async def test_parts_without_an_approved_routing_get_no_job(
    make_config: Callable[..., CellConfig], tmp_path: Path
) -> None:
    config = _config(
        make_config, tmp_path, **{"require_approved_templates = false": "require_approved_templates = true"}
    )
    async with running_cell(config) as cell:
        await cell.ok(ReceiveOrder("A", DUE, 1, {"ABC123": 3}))
        answer = await cell.ok(RunSchedule(PLENTY))
        assert answer.outputs["Jobs"] == {}
        schedule = cell.writer.model.orders.schedules[-1]
        assert schedule.parts_without_routing == ("ABC123",)
        assert schedule.bookings_scheduled == ()
        assert cell.book.jobs == {}


async def test_a_finished_unit_is_filled_at_unload_in_the_same_transaction(
    make_config: Callable[..., CellConfig], tmp_path: Path
) -> None:
    config = _config(
        make_config, tmp_path, **{"assign_workorder_at_unload = false": "assign_workorder_at_unload = true"}
    )
    async with running_cell(config) as cell:
        await cell.ok(ReceiveOrder("A", DUE, 1, {"ABC123": 1}))
        await cell.ok(ReceiveOrder("SOONER", DUE - timedelta(days=1), 0, {"ABC123": 1}))
        job = (await cell.ok(RunSchedule(PLENTY))).outputs["Jobs"]["ABC123"]
        shop = Shop(cell.writer, cell.clock)
        (serial,) = await shop.make(job, 1)
        finished_at = cell.clock.now()
        async with cell.writer.store.engine.connect() as conn:
            row = (await conn.execute(select(S.workorder_serials))).one()
            result = (await conn.execute(select(S.workorder_results))).one()
            wo = (await conn.execute(select(S.workorders).where(S.workorders.c.workorder_id == "SOONER"))).one()
        assert (row.serial, row.workorder_id) == (serial, "SOONER")
        assert (wo.filled, wo.filled_at) == (True, finished_at)
        assert (result.workorder_id, result.serials, result.expected_labor_s) == ("SOONER", 1, 120 + 90)
        assert result.expected_inspection_s == 300
        assert cell.writer.model.orders.workorder_of(serial) == "SOONER"
        # A serial filled at unload cannot be filled again by hand.
        refused = await cell.send(AssignSerials("A", (serial,)))
        assert refused.reason is Reason.DUPLICATE_SERIAL


async def test_a_serial_is_filled_by_the_report_that_passes_the_last_step_of_its_routing(
    make_config: Callable[..., CellConfig], tmp_path: Path
) -> None:
    """docs/erp.md, "Filling workorders": with filling at unload on, a serial goes into a workorder when
    its unit finishes, i.e. in the same step as the report that passes the last step of its job's
    routing, at that report's time. In the demo process (load, mill, wash, unload, inspect) that is the
    passed inspection scan-out, not the unload; for a routing that ends with the unload, the unload."""
    config = _config(
        make_config, tmp_path, **{"assign_workorder_at_unload = false": "assign_workorder_at_unload = true"}
    )
    async with running_cell(config) as cell:
        ids = (f"r{n}" for n in itertools.count(1))
        orders, units = cell.writer.model.orders, cell.book.units
        await cell.ok(ReceiveOrder("A", DUE, 1, {"ABC123": 2}))
        inspected = (await cell.ok(CreateJob("ABC123", "A", 1))).outputs["JobId"]
        unloaded = (await cell.ok(CreateJob("ABC123", "A", 1, operations=("OP10", "OP20", "OP30", "OP40")))).outputs[
            "JobId"
        ]
        for job in (inspected, unloaded):
            await cell.ok(ReleaseJob(job))

        async def up_to_the_unload(job: str) -> str:
            await cell.ok(PalletArrived("L1", next(ids), None, "P1"))
            (serial,) = (await cell.ok(LoadCompleted("L1", next(ids), None, "P1", job, 1), after=120)).outputs[
                "Serials"
            ]
            await cell.ok(PalletDeparted("L1", next(ids), None, "P1"))
            for station, program in (("M1", "PRG-MILL-100"), ("W1", "PRG-WASH-1")):
                await cell.ok(PalletArrived(station, next(ids), None, "P1"), after=30)
                await cell.ok(CycleStarted(station, next(ids), None, "P1", program))
                await cell.ok(CycleEnded(station, next(ids), None, "P1", program, CycleResult.OK), after=600)
                await cell.ok(PalletDeparted(station, next(ids), None, "P1"))
            await cell.ok(PalletArrived("L1", next(ids), None, "P1"), after=30)
            assert orders.workorder_of(serial) is None
            return serial

        # Load, mill, wash, unload, inspect: the unload leaves it waiting for the inspection.
        first = await up_to_the_unload(inspected)
        await cell.ok(LoadCompleted("L1", next(ids), None, "P1", "", 0), after=90)
        await cell.ok(PalletDeparted("L1", next(ids), None, "P1"))
        assert units[first].status is UnitStatus.WAITING
        assert orders.workorder_of(first) is None
        await cell.ok(ScanIn("C1", next(ids), None, first), after=60)
        await cell.ok(ScanOut("C1", next(ids), None, first, ScanResult.FAIL), after=300)
        assert orders.workorder_of(first) is None  # a failed inspection finishes nothing
        await cell.ok(ScanIn("C1", next(ids), None, first), after=60)
        passed_at = cell.clock.now() + timedelta(seconds=290)  # the scan station's own clock
        await cell.ok(ScanOut("C1", next(ids), passed_at, first, ScanResult.PASS), after=300)
        assert units[first].status is UnitStatus.FINISHED
        assert orders.workorder_of(first) == "A"
        assert orders.workorder("A").serials == {"ABC123": (first,)}

        # A routing that ends with the unload: the unload finishes the unit and fills the workorder.
        second = await up_to_the_unload(unloaded)
        await cell.ok(LoadCompleted("L1", next(ids), None, "P1", "", 0), after=90)
        unloaded_at = cell.clock.now()
        assert units[second].status is UnitStatus.FINISHED
        workorder = orders.workorder("A")
        assert workorder.serials == {"ABC123": (first, second)}
        assert (workorder.filled, workorder.filled_at) == (True, unloaded_at)
        async with cell.writer.store.engine.connect() as conn:
            stored = (await conn.execute(select(S.workorders))).one()
        assert (stored.filled, stored.filled_at) == (True, unloaded_at)


async def test_a_workorder_raised_after_it_filled_fills_again_across_a_restart(
    make_config: Callable[..., CellConfig], tmp_path: Path
) -> None:
    """Seed 001's order update on a filled workorder, stored: it is saved unfilled, its old cost report
    is no longer answered, and after a restart it fills again with a report over every serial."""
    config = _config(
        make_config, tmp_path, **{"assign_workorder_at_unload = false": "assign_workorder_at_unload = true"}
    )
    async with running_cell(config) as cell:
        await cell.ok(ReceiveOrder("A", DUE, 1, {"ABC123": 1}))
        job = (await cell.ok(RunSchedule(PLENTY))).outputs["Jobs"]["ABC123"]
        (first,) = await Shop(cell.writer, cell.clock).make(job, 1)
        assert cell.writer.model.orders.workorder("A").filled
        answer = await cell.ok(UpdateOrder("A", {"ABC123": 2}, "customer +1"))
        assert answer.outputs == {"Bookings": ["A-extra"]}
        async with cell.writer.store.engine.connect() as conn:
            stored = (await conn.execute(select(S.workorders))).one()
            assert (stored.filled, stored.filled_at) == (False, None)
            with pytest.raises(Refused) as refused:
                await erp.cost_report(conn, "A")
            assert refused.value.reason is Reason.INVALID_TRANSITION

    async with running_cell(config, ManualClock(T0 + timedelta(days=1))) as cell:
        restored = cell.writer.model.orders.workorder("A")
        assert (restored.filled, restored.serials) == (False, {"ABC123": (first,)})
        job = (await cell.ok(RunSchedule(PLENTY))).outputs["Jobs"]["ABC123"]
        (second,) = await Shop(cell.writer, cell.clock, first_event_id=1000).make(job, 1)
        async with cell.writer.store.engine.connect() as conn:
            report = await erp.cost_report(conn, "A")
            stored = (await conn.execute(select(S.workorders))).one()
            units = {r.serial: R.unit_from(r) for r in await conn.execute(select(S.units))}
        assert (stored.filled, stored.filled_at) == (True, cell.clock.now())
        assert report["serials"] == [first, second]
        times = [unit_cost(s, units[s].cost) for s in (first, second)]
        assert report["expected_labor_s"] == sum(t.expected_labor_s or 0 for t in times) > 0
        assert report["program_cycle_s"] == sum(t.program_cycle_s or 0 for t in times) > 0
        assert report["unknown"] == {}


async def test_a_scheduled_job_plans_no_extras_its_yield_buffer_is_only_a_ceiling(demo_config: CellConfig) -> None:
    """Seed 002: "Operators often build 'extras' to cover potential fallout. This is unauthorized
    inventory." and "Max_Qty = Ordered_Qty + Yield_Buffer (e.g. 2%)". A job of the daily schedule gets
    the cell's buffer as the cap of what an operator may start deliberately; the gateway itself offers
    only the ordered quantity."""
    async with running_cell(demo_config) as cell:
        ids = (f"b{n}" for n in itertools.count(1))
        await cell.ok(ReceiveOrder("A", DUE, 1, {"ABC123": 3}))
        job_id = (await cell.ok(RunSchedule(PLENTY))).outputs["Jobs"]["ABC123"]
        job = cell.book.jobs[job_id]
        assert job.yield_buffer_percent == demo_config.cell.default_yield_buffer_percent == 2.0
        assert (job.quantity, job.max_quantity) == (3, 4)

        offered: list[int] = []
        for pallet in ("P1", "P2", "P3"):
            await cell.ok(PalletArrived("L1", next(ids), None, pallet))
            load = cell.tracker.load_instruction("L1")["load"]
            offered.append(0 if load is None else load["quantity"])
            if load is not None:
                await cell.ok(LoadCompleted("L1", next(ids), None, pallet, job_id, load["quantity"]), after=60)
            else:  # the operator builds one more on purpose: within the cap
                await cell.ok(LoadCompleted("L1", next(ids), None, pallet, job_id, 1), after=60)
            await cell.ok(PalletDeparted("L1", next(ids), None, pallet))
        assert offered == [2, 1, 0]
        assert job.started == 4
        await cell.ok(PalletArrived("L1", next(ids), None, "P4"))
        refused = await cell.send(LoadCompleted("L1", next(ids), None, "P4", job_id, 1))
        assert refused.reason is Reason.ORDER_FULFILLED


async def test_back_out_closes_the_job_and_books_the_rest_together(demo_config: CellConfig) -> None:
    async with running_cell(demo_config) as cell:
        await cell.ok(ReceiveOrder("A", DUE, 3, {"ABC123": 5}))
        job = (await cell.ok(RunSchedule(PLENTY))).outputs["Jobs"]["ABC123"]
        await Shop(cell.writer, cell.clock).make(job, 2)
        answer = await cell.ok(BackOutJob(job, "mill down"))
        assert answer.outputs["Quantity"] == 3
        booking = cell.writer.model.orders.booking(answer.outputs["BookingId"])
        assert (dict(booking.parts), booking.due, booking.priority) == ({"ABC123": 3}, DUE, 3)
        assert cell.book.jobs[job].state is JobState.CLOSED
        before = await _state(cell)
        assert (await cell.send(BackOutJob(job, "again"))).reason is Reason.JOB_CLOSED
        assert (await cell.send(BackOutJob("J-9999", "none"))).reason is Reason.NOT_FOUND
        assert await _state(cell) == before


async def test_the_log_replays_to_the_same_orders(demo_config: CellConfig) -> None:
    async with running_cell(demo_config) as cell:
        await cell.ok(ReceiveOrder("A", DUE, 1, {"ABC123": 2}))
        await cell.ok(SetScheduledWithoutBooking("ABC123", 1, "spare"))
        job = (await cell.ok(RunSchedule(PLENTY))).outputs["Jobs"]["ABC123"]
        serials = await Shop(cell.writer, cell.clock).make(job, 1)
        await cell.ok(AssignSerials("A", tuple(serials), "review"))
        await cell.ok(BackOutJob(job, "end of day"))
        cell.clock.advance(timedelta(days=1))
        await cell.ok(RunSchedule(PLENTY))
        model, result = await replay(cell.writer.store.engine, lambda: build_model(demo_config))
        assert result.mismatches == []
        expected = cell.writer.model.orders
        assert sorted(model.orders.bookings, key=lambda b: b.id) == sorted(expected.bookings, key=lambda b: b.id)
        assert model.orders.workorders == expected.workorders
        assert model.orders.scheduled_without_bookings == expected.scheduled_without_bookings
        assert [s.id for s in model.orders.schedules] == ["S-2026-03-02", "S-2026-03-03"]


def test_every_order_command_round_trips_through_the_log() -> None:
    commands = [
        ReceiveOrder("A", DUE, 1, {"ABC123": 2}, "C-1"),
        RunSchedule({"MILL": 3600.0}, 12.0, DUE, "S-1"),
        BackOutJob("J-0001", "down", DUE, 2),
        AssignSerials("A", ("S1", "S2"), "r"),
    ]
    for command in commands:
        rebuilt = decode(command.kind, "orders", f"{command.kind}#1", encode(command), None)
        assert rebuilt == command
    assert {cls.source for cls in ORDER_COMMAND_TYPES.values()} == {"orders"}
