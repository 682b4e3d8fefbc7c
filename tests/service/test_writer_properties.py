"""Any interleaving of batches, overlapping commits, failed commits and retries leaves the store equal
to a replay of its own log, and nothing answered is lost or counted twice.

Hypothesis draws a run of steps against a writer on the in-memory store: batches of reports from
several PLCs sent at once, a batch held in its commit while the next one is applied, store outages and
rows the store refuses (for the next few commits), and retries of earlier reports. After the run:

- replaying the stored log on a fresh model gives every logged answer again;
- the stored jobs, units, pallets and stations are exactly the replayed model's;
- the writer's own model and its committed view agree with the store;
- every answer a caller received (Good or refused) is in the log under its position with its
  reason, each (station, EventId) is logged once, and a call answered StoreUnavailable left nothing.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.app import build_model
from gateway.cell.model import CellModel
from gateway.clock import ManualClock
from gateway.config import CellConfig, load_config
from gateway.jobs.commands import CreateJob, ReleaseJob
from gateway.service.replay import replay_rows
from gateway.service.views import full_view
from gateway.service.writer import Answer, StoreUnavailable, Writer
from gateway.storage import rows as R
from gateway.storage.batch import BatchRows
from gateway.storage.memory_store import BadRow, MemoryStore, StoreOutage, _stored
from gateway.tracking.reports import CycleEnded, CycleResult, CycleStarted, LoadCompleted, PalletArrived, PalletDeparted
from tests.support import DEMO_CONFIG, T0

PALLETS = ("P1", "P2", "P3")
STATIONS = ("L1", "L2", "M1", "W1")

report = st.one_of(
    st.tuples(st.just("arrive"), st.sampled_from(STATIONS), st.sampled_from(PALLETS)),
    st.tuples(st.just("depart"), st.sampled_from(STATIONS), st.sampled_from(PALLETS)),
    st.tuples(st.just("load"), st.sampled_from(("L1", "L2")), st.sampled_from(PALLETS)),
    st.tuples(st.just("cycle"), st.just("M1"), st.sampled_from(PALLETS)),
)
fault = st.one_of(
    st.none(),
    st.tuples(st.just("outage"), st.integers(1, 2)),
    st.tuples(st.just("bad"), st.sampled_from(PALLETS), st.integers(1, 3)),
)
step = st.one_of(
    st.tuples(st.just("batch"), st.lists(report, min_size=1, max_size=4), fault),
    st.tuples(st.just("overlap"), st.lists(report, min_size=1, max_size=3), st.lists(report, min_size=1, max_size=3)),
    st.tuples(st.just("retry"), st.integers(0, 1000)),
)


def _config() -> CellConfig:
    return load_config(DEMO_CONFIG, env={"CELL_GATEWAY_DATABASE_URL": "sqlite+aiosqlite:///unused.db"})


class Run:
    def __init__(self, config: CellConfig) -> None:
        self.config = config
        self.store = MemoryStore()
        self.clock = ManualClock(T0)
        self.writer = Writer(self.store, lambda: build_model(config), self.clock, cache_size=8)
        self.sent: list[Any] = []  # every report sent, for retries
        self.answers: list[tuple[Any, Answer | BaseException]] = []
        self.ids = 0

    def make(self, spec: tuple[Any, ...]) -> Any:
        self.ids += 1
        kind, station, pallet = spec
        event_id = f"e{self.ids}"
        if kind == "arrive":
            return PalletArrived(station, event_id, None, pallet)
        if kind == "depart":
            return PalletDeparted(station, event_id, None, pallet)
        if kind == "load":
            return LoadCompleted(station, event_id, None, pallet, "J1", 1)
        if self.ids % 2:
            return CycleStarted(station, event_id, None, pallet, "PRG-MILL-100")
        return CycleEnded(station, event_id, None, pallet, "PRG-MILL-100", CycleResult.OK)

    async def send(self, commands: list[Any]) -> None:
        self.clock.advance(7)
        self.sent.extend(commands)
        got = await asyncio.gather(*(self.writer.submit(c, "plc") for c in commands), return_exceptions=True)
        self.answers.extend(zip(commands, got, strict=True))

    def arm(self, spec: tuple[Any, ...] | None) -> None:
        if spec is None:
            return
        if spec[0] == "outage":
            for _ in range(spec[1]):
                self.store.fail_next(lambda _: StoreOutage("disk full"))
            return
        _, pallet, times = spec

        def writes(rows: BatchRows) -> bool:
            return any(op.table == "pallets" and any(r["id"] == pallet for r in op.rows) for op in rows.ops)

        for _ in range(times):
            self.store.fail_next(lambda rows: BadRow(f"{pallet} refused") if writes(rows) else None)

    async def step(self, spec: tuple[Any, ...]) -> None:
        if spec[0] == "batch":
            self.arm(spec[2])
            await self.send([self.make(r) for r in spec[1]])
        elif spec[0] == "overlap":
            first = [self.make(r) for r in spec[1]]
            second = [self.make(r) for r in spec[2]]
            with self.store.hold() as gate:
                a = asyncio.ensure_future(self.send(first))
                async with asyncio.timeout(5):
                    await self.store.committing.wait()
                b = asyncio.ensure_future(self.send(second))
                async with asyncio.timeout(5):
                    while self.writer.queue_depth:  # noqa: ASYNC110 - the writer takes the batch
                        await asyncio.sleep(0)
                gate.set()
                await asyncio.gather(a, b)
        elif self.sent:
            await self.send([self.sent[spec[1] % len(self.sent)]])

    def check(self) -> None:
        log = sorted((SimpleNamespace(**r) for r in self.store.rows("cell_events")), key=lambda r: r.counter)
        replayed, result = replay_rows(log, lambda: build_model(self.config))
        assert result.mismatches == []
        _same_entities(self.store, replayed)
        _same_entities(self.store, self.writer.model)
        view, model = self.writer.view, self.writer.model
        assert view.counter == (log[-1].counter if log else 0)
        # The view, built a batch at a time from what changed, equals one built from scratch.
        fresh = full_view(model, view.counter)
        assert view.loadable == fresh.loadable == {j.id for j in model.tracker.load_candidates()}
        assert (view.working, view.done) == (fresh.working, fresh.done)
        assert dict(view.stations) == dict(fresh.stations)
        assert {k: v for k, v in view.jobs.items() if k in model.book.jobs} == dict(fresh.jobs)
        assert (view.audits, view.oldest_activity) == (fresh.audits, fresh.oldest_activity)
        by_key = {(r.source, r.event_id): r for r in log}
        assert len(by_key) == len(log), "an EventId was logged twice"
        for command, answer in self.answers:
            stored = by_key.get((command.source, command.event_id))
            if isinstance(answer, StoreUnavailable):
                continue  # nothing acknowledged: stored only if a later retry got through
            assert not isinstance(answer, BaseException), answer
            if answer.counter == 0:  # a DuplicateEventId answer is never logged
                continue
            assert stored is not None, f"{command} was answered but is not in the log"
            assert stored.counter == answer.counter
            assert stored.reason == (answer.reason.value if answer.reason else None)


def _same_entities(store: MemoryStore, model: CellModel) -> None:
    """The stored rows are the model's (pallets and stations never stored are at their start)."""
    fresh = build_model(_config())
    tables: dict[str, tuple[dict[str, Any], Callable[[Any], dict[str, Any]], dict[str, Any]]] = {
        "jobs": (model.book.jobs, R.job_row, {}),
        "units": (model.book.units, R.unit_row, {}),
        "pallets": (model.tracker.pallets, R.pallet_row, fresh.tracker.pallets),
        "stations": (model.tracker.stations, R.station_row, fresh.tracker.stations),
    }
    for table, (entities, to_row, start) in tables.items():
        stored = {r[next(iter(r))]: r for r in store.rows(table)}
        for key, entity in entities.items():
            expected = _stored(table, to_row(entity))
            if key in stored:
                assert stored[key] == expected, (table, key)
            else:
                assert key in start, (table, key, "not stored")
                assert _stored(table, to_row(start[key])) == expected, (table, key, "not stored")


async def _run(day: list[tuple[Any, ...]]) -> None:
    run = Run(_config())
    await run.writer.load()
    task = asyncio.create_task(run.writer.run())
    try:
        await run.writer.submit(CreateJob(job_id="J1", part="PN-1", revision="A", quantity=50), "planner")
        await run.writer.submit(ReleaseJob("J1"), "planner")
        for spec in day:
            await run.step(spec)
            await run.writer.wait_idle()
            run.check()
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@settings(
    max_examples=int(os.environ.get("WRITER_INTERLEAVING_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(day=st.lists(step, min_size=1, max_size=12))
def test_any_interleaving_of_commits_failures_and_retries_leaves_the_store_equal_to_a_replay(
    day: list[tuple[Any, ...]],
) -> None:
    asyncio.run(_run(day))
