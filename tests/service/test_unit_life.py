"""A unit's whole life through the writer, on a real SQLite file: scans, times, counts, restart, retries."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import pytest
from sqlalchemy import select

from gateway.app import build_model
from gateway.clock import ManualClock
from gateway.config import CellConfig
from gateway.errors import Reason
from gateway.jobs.commands import CreateJob, HoldJob, ReleaseJob, ResumeJob
from gateway.jobs.model import JobState, UnitStatus
from gateway.service.writer import Writer
from gateway.storage import schema as S
from gateway.storage.database import create_engine
from gateway.storage.migrate import upgrade
from gateway.storage.sql_store import SqlStore
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


def _state(cell: Cell) -> tuple[str, ...]:
    parts = (cell.book.jobs, cell.book.units, cell.tracker.pallets, cell.tracker.stations)
    return tuple(repr(sorted(d.items())) for d in parts)


async def _one_unit_through_the_cell(cell: Cell) -> str:
    job = (await cell.ok(CreateJob(part="ABC123", revision="A", quantity=2))).outputs["JobId"]
    await cell.ok(ReleaseJob(job))
    await cell.ok(PalletArrived("L1", "l1-1", None, "P1"))
    load = await cell.ok(LoadCompleted("L1", "l1-2", None, "P1", job, 1), after=150)
    (serial,) = load.outputs["Serials"]
    await cell.ok(PalletDeparted("L1", "l1-3", None, "P1"), after=5)
    await cell.ok(PalletArrived("M1", "m1-1", None, "P1"), after=30)
    await cell.ok(CycleStarted("M1", "m1-2", None, "P1", "PRG-MILL-100"), after=10)
    await cell.ok(CycleEnded("M1", "m1-3", None, "P1", "PRG-MILL-100", CycleResult.OK), after=950)
    await cell.ok(PalletDeparted("M1", "m1-4", None, "P1"), after=5)
    await cell.ok(PalletArrived("W1", "w1-1", None, "P1"), after=30)
    await cell.ok(CycleStarted("W1", "w1-2", None, "P1", "PRG-WASH-1"))
    await cell.ok(CycleEnded("W1", "w1-3", None, "P1", "PRG-WASH-1", CycleResult.OK), after=200)
    await cell.ok(PalletDeparted("W1", "w1-4", None, "P1"))
    await cell.ok(PalletArrived("L1", "l1-4", None, "P1"), after=60)
    await cell.ok(LoadCompleted("L1", "l1-5", None, "P1", "", 0), after=100)
    await cell.ok(ScanIn("C1", "c1-1", None, serial), after=600)
    await cell.ok(ScanOut("C1", "c1-2", None, serial, ScanResult.PASS), after=280)
    return serial


async def test_a_unit_passes_every_step_with_elapsed_and_expected_times(demo_config: CellConfig) -> None:
    async with running_cell(demo_config) as cell:
        serial = await _one_unit_through_the_cell(cell)
        unit = cell.book.units[serial]
        job = cell.book.jobs[unit.job_id]
        assert unit.status is UnitStatus.FINISHED
        assert (job.started, job.finished, job.scrapped, job.wip) == (1, 1, 0, 0)
        assert job.state is JobState.RUNNING
        assert serial == "DEMO-000001"
        cost = unit.cost
        # Seed 001: elapsed labor "is the amount of time a pallet spends at the load station" (arrival to
        # departure: 150 + 5 s, then the unload's 100 s), elapsed machining "the amount of time a pallet
        # spends at the machine" (10 + 950 + 5 s); wash and inspection apart, never inside those.
        assert cost.elapsed_labor == 150 + 5 + 100
        assert cost.expected_labor == 120 + 90
        assert cost.elapsed_machine == 10 + 950 + 5
        assert cost.expected_machine == 900
        assert (cost.elapsed_wash, cost.expected_wash) == (200, 180)
        assert (cost.elapsed_inspection, cost.expected_inspection) == (280, 300)
        assert cost.unknown == {}
        async with cell.writer.store.engine.connect() as conn:
            scans = (await conn.execute(select(S.unit_scans).order_by(S.unit_scans.c.id))).all()
        assert [(s.operation, s.station, s.passed, s.elapsed, s.expected) for s in scans] == [
            ("OP10", "L1", True, 150.0, 120.0),
            ("OP20", "M1", True, 950.0, 900.0),
            ("OP30", "W1", True, 200.0, 180.0),
            ("OP40", "L1", True, 100.0, 90.0),
            ("OP50", "C1", True, 280.0, 300.0),
        ]


async def test_restart_continues_exactly_where_it_left_off(demo_config: CellConfig) -> None:
    async with running_cell(demo_config) as cell:
        job = (await cell.ok(CreateJob(part="ABC123", revision="A", quantity=5))).outputs["JobId"]
        await cell.ok(ReleaseJob(job))
        await cell.ok(PalletArrived("L1", "a", None, "P2"))
        serials = (await cell.ok(LoadCompleted("L1", "b", None, "P2", job, 1), after=100)).outputs["Serials"]
        await cell.ok(PalletDeparted("L1", "c", None, "P2"))
        await cell.ok(PalletArrived("M2", "d", None, "P2"), after=20)
        await cell.ok(CycleStarted("M2", "e", None, "P2", "PRG-MILL-100"), after=5)
        before = _state(cell)
        clock = cell.clock
        counter = cell.writer.counter
    async with running_cell(demo_config, clock) as again:
        after = (
            dict(again.book.jobs),
            dict(again.book.units),
            dict(again.tracker.pallets),
            dict(again.tracker.stations),
        )
        assert tuple(repr(sorted(d.items())) for d in after) == before
        assert again.writer.counter == counter
        # the cycle started before the restart ends after it, and the pallet's whole visit counts
        await again.ok(CycleEnded("M2", "f", None, "P2", "PRG-MILL-100", CycleResult.OK), after=900)
        await again.ok(PalletDeparted("M2", "f2", None, "P2"), after=10)
        assert again.book.units[serials[0]].cost.elapsed_machine == 5 + 900 + 10
        # the next generated serial continues the sequence
        await again.ok(PalletArrived("L2", "g", None, "P3"))
        more = (await again.ok(LoadCompleted("L2", "h", None, "P3", job, 1), after=60)).outputs["Serials"]
        assert more == ["DEMO-000002"]


async def test_a_retried_report_gets_the_original_answer_and_counts_once(demo_config: CellConfig) -> None:
    async with running_cell(demo_config) as cell:
        job = (await cell.ok(CreateJob(part="ABC123", revision="A", quantity=5))).outputs["JobId"]
        await cell.ok(ReleaseJob(job))
        await cell.ok(PalletArrived("L1", "e1", None, "P1"))
        first = await cell.ok(LoadCompleted("L1", "e2", None, "P1", job, 2), after=100)
        retry = await cell.ok(LoadCompleted("L1", "e2", None, "P1", job, 2), after=30)
        assert retry.replayed
        assert retry.outputs == first.outputs
        assert retry.counter == first.counter
        assert cell.book.jobs[job].started == 2
        other = await cell.send(LoadCompleted("L1", "e2", None, "P1", job, 3))
        assert other.reason is Reason.DUPLICATE_EVENT_ID
        assert "new EventId" in other.message
        assert cell.book.jobs[job].started == 2
        # a refusal is stored too, and its retry gets the same refusal
        await cell.ok(HoldJob(job, "material check"))
        held = await cell.send(CycleStarted("M1", "x1", None, "P1", "PRG-MILL-100"))
        assert held.reason is Reason.JOB_ON_HOLD
        await cell.ok(ResumeJob(job))
        again = await cell.send(CycleStarted("M1", "x1", None, "P1", "PRG-MILL-100"))
        assert again.replayed
        assert again.reason is Reason.JOB_ON_HOLD


async def test_retries_beyond_the_cache_are_answered_from_the_log(demo_config: CellConfig) -> None:
    async with running_cell(demo_config) as cell:
        cell.writer.answers.size = 3
        for i in range(6):
            await cell.ok(PalletArrived("L1" if i % 2 == 0 else "L2", f"a{i}", None, "P1"))
        assert len(cell.writer.answers) == 3
        retry = await cell.ok(PalletArrived("L1", "a0", None, "P1"))
        assert retry.replayed
        assert retry.counter == 1
        clash = await cell.send(PalletArrived("L1", "a0", None, "P2"))
        assert clash.reason is Reason.DUPLICATE_EVENT_ID


async def test_a_writer_stopped_mid_commit_answers_the_batch_with_what_was_stored(
    demo_config: CellConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shutdown cancels the writer while the store's thread commits: the thread finishes the commit,
    and the caller is answered with the stored answer (not left waiting, not told it failed)."""
    monkeypatch.setattr("gateway.storage.database.BUSY_TIMEOUT_MS", 3000)
    engine = create_engine(demo_config.database.url)
    await upgrade(engine)
    writer = Writer(SqlStore(engine), lambda: build_model(demo_config), ManualClock())
    await writer.load()
    task = asyncio.create_task(writer.run())
    path = demo_config.database.url.removeprefix("sqlite+aiosqlite:///")
    locker = sqlite3.connect(path, isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")  # the commit waits for this lock
        committing = asyncio.Event()
        run = writer.store.commit

        async def observed(*args: Any, **kwargs: Any) -> Any:
            committing.set()  # the batch goes to the store's thread, which will wait for the lock
            return await run(*args, **kwargs)

        monkeypatch.setattr(writer.store, "commit", observed)
        answer = asyncio.ensure_future(writer.submit(PalletArrived("L1", "a1", None, "P1"), "plc"))
        async with asyncio.timeout(5):
            await committing.wait()
        assert not answer.done()
        task.cancel()
        locker.execute("ROLLBACK")  # the lock is released while the writer is being stopped
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await answer).ok
    finally:
        locker.close()
        writer.close()
        await engine.dispose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT kind, event_id FROM cell_events").fetchall() == [("PalletArrived", "a1")]
