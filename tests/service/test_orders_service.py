"""Order commands through the writer on a real SQLite file: one transaction each, refusals change nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from gateway.bootstrap import build_model
from gateway.config import CellConfig
from gateway.errors import Reason
from gateway.jobs.model import JobState
from gateway.orders.commands import (
    ORDER_COMMAND_TYPES,
    AssignSerials,
    BackOutJob,
    ReceiveOrder,
    RunSchedule,
    SetScheduledWithoutBooking,
)
from gateway.service.replay import command_from_log, replay
from gateway.storage import schema as S
from tests.conftest import DEMO_CONFIG
from tests.service.harness import Cell, running_cell
from tests.service.shop import Shop

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
        assert (result.workorder_id, result.serials, result.expected_labor_s) == ("SOONER", 1, 510)
        assert cell.writer.model.orders.workorder_of(serial) == "SOONER"
        # A serial filled at unload cannot be filled again by hand.
        refused = await cell.send(AssignSerials("A", (serial,)))
        assert refused.reason is Reason.DUPLICATE_SERIAL


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
        rebuilt = command_from_log(command.kind, "orders", f"{command.kind}#1", command.arguments(), None)
        assert rebuilt == command
    assert {cls.source for cls in ORDER_COMMAND_TYPES.values()} == {"orders"}
