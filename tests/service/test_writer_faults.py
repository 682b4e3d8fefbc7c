"""No command can stop the writer or fail another command's report (faults injected into apply, the
answer look-up and the commit), readers see only what is committed, and batches overlap safely.

Each fault is injected with several PLCs' reports in one batch: the others are answered Good, the
faulty one gets InternalError, its retry gets that same answer at once, the writer keeps serving, and
a restart on the same store succeeds. Both stores run each test: a real SQLite file and the in-memory
store of the storage port.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import select

from gateway.app import build_model
from gateway.config import CellConfig
from gateway.errors import Reason
from gateway.service.feed import Committed, Feed
from gateway.service.replay import replay, replay_rows
from gateway.service.views import CellView
from gateway.service.writer import Overloaded, StoreUnavailable
from gateway.storage import batch as batch_module
from gateway.storage import schema as S
from gateway.storage.batch import BatchRows
from gateway.storage.database import create_engine
from gateway.storage.memory_store import BadRow, MemoryStore, StoreOutage
from gateway.storage.migrate import upgrade
from gateway.storage.sql_store import SqlStore
from gateway.tracking.reports import PalletArrived, PalletDeparted
from gateway.tracking.tracker import CellTracker
from tests.service.harness import Cell, running_cell


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Wait for a condition, turn by turn of the loop, at most ``within`` seconds."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - a condition on the writer's state, no event to wait on
            await asyncio.sleep(0)


@pytest.fixture(params=["sqlite", "memory"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Stores:
    """Makes the store of a test again after a restart: the same file, or the same memory."""

    def __init__(self, kind: str, config: CellConfig) -> None:
        self.kind = kind
        self.config = config
        self.memory = MemoryStore() if kind == "memory" else None
        self.engines: list[Any] = []

    async def make(self) -> Any:
        if self.memory is not None:
            return self.memory
        engine = create_engine(self.config.database.url)
        await upgrade(engine)
        self.engines.append(engine)
        return SqlStore(engine)

    async def log(self) -> list[Any]:
        """The event log as stored, oldest first."""
        if self.memory is not None:
            return sorted((SimpleNamespace(**r) for r in self.memory.rows("cell_events")), key=lambda r: r.counter)
        engine = create_engine(self.config.database.url)
        try:
            async with engine.connect() as conn:
                return list(await conn.execute(select(S.cell_events).order_by(S.cell_events.c.counter)))
        finally:
            await engine.dispose()

    async def replay_mismatches(self) -> list[str]:
        if self.memory is not None:
            _, result = replay_rows(await self.log(), lambda: build_model(self.config))
            return result.mismatches
        engine = create_engine(self.config.database.url)
        try:
            _, result = await replay(engine, lambda: build_model(self.config))
            return result.mismatches
        finally:
            await engine.dispose()

    async def close(self) -> None:
        for engine in self.engines:
            await engine.dispose()


@pytest.fixture
async def stores(store_kind: str, demo_config: CellConfig) -> Any:
    made = Stores(store_kind, demo_config)
    yield made
    await made.close()


async def one_batch(cell: Cell, *commands: Any) -> list[Any]:
    """Submit from several PLCs at once: all are queued before the writer takes the next batch."""
    return await asyncio.gather(*(cell.send(c, "plc") for c in commands), return_exceptions=True)


def pallet_at(cell: Cell, pallet: str) -> str:
    return cell.tracker.pallets[pallet].station


# ------------------------------------------------------------------------------------------- apply


async def test_a_command_that_raises_while_applying_is_undone_and_refused_and_the_others_commit(
    stores: Stores, demo_config: CellConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = CellTracker.apply

    def half_then_raise(self: CellTracker, report: Any, received_at: Any) -> Any:
        outcome = real(self, report, received_at)  # the model is changed ...
        if report.event_id == "boom":
            raise RuntimeError("a defect after the change")  # ... and then the apply fails
        return outcome

    monkeypatch.setattr(CellTracker, "apply", half_then_raise)
    async with running_cell(demo_config, store=await stores.make()) as cell:
        a, boom, c = await one_batch(
            cell,
            PalletArrived("L1", "a", None, "P1"),
            PalletArrived("M1", "boom", None, "P2"),
            PalletArrived("W1", "c", None, "P3"),
        )
        assert cell.writer.stats.last_batch_size == 3  # one batch, committed once without the culprit
        assert a.ok
        assert c.ok
        assert boom.reason is Reason.INTERNAL
        assert "RuntimeError: a defect after the change" in boom.message
        assert (pallet_at(cell, "P1"), pallet_at(cell, "P2"), pallet_at(cell, "P3")) == ("L1", "", "W1")
        retry = await cell.send(PalletArrived("M1", "boom", None, "P2"), "plc")
        assert retry.replayed
        assert retry.reason is Reason.INTERNAL
        assert retry.counter == boom.counter
        assert (await cell.send(PalletDeparted("L1", "d", None, "P1"), "plc")).ok  # still serving
        assert cell.writer.view.stations["L1"].pallet == ""
    log = await stores.log()
    assert [(r.event_id, r.reason) for r in log] == [("a", None), ("boom", "InternalError"), ("c", None), ("d", None)]
    assert await stores.replay_mismatches() == []
    monkeypatch.setattr(CellTracker, "apply", real)
    async with running_cell(demo_config, store=await stores.make()) as cell:  # a restart on that store
        assert (pallet_at(cell, "P2"), pallet_at(cell, "P3")) == ("", "W1")
        assert (await cell.send(PalletArrived("M1", "boom", None, "P2"), "plc")).reason is Reason.INTERNAL


# ------------------------------------------------------------------------------------------- look-up


async def test_a_report_whose_answer_look_up_fails_is_refused_and_the_others_commit(
    stores: Stores, demo_config: CellConfig
) -> None:
    async with running_cell(demo_config, store=await stores.make(), cache_size=2) as cell:
        for i in range(3):  # the log now holds more than the cache: new EventIds are looked up
            await cell.ok(PalletArrived("L2", f"warm{i}", None, "P4"))
        assert not cell.writer.answers.complete
        real = cell.writer.store.find_answers

        async def failing(keys: Any) -> Any:
            if ("M1", "boom") in keys:
                raise ValueError("the look-up cannot handle this key")
            return await real(keys)

        cell.writer.store.find_answers = failing  # type: ignore[method-assign]
        a, boom, c = await one_batch(
            cell,
            PalletArrived("L1", "a", None, "P1"),
            PalletArrived("M1", "boom", None, "P2"),
            PalletArrived("W1", "c", None, "P3"),
        )
        assert a.ok
        assert c.ok
        assert boom.reason is Reason.INTERNAL
        assert "ValueError" in boom.message
        assert pallet_at(cell, "P2") == ""
        retry = await cell.send(PalletArrived("M1", "boom", None, "P2"), "plc")
        assert retry.replayed
        assert retry.reason is Reason.INTERNAL
    assert await stores.replay_mismatches() == []
    async with running_cell(demo_config, store=await stores.make()) as cell:
        assert (pallet_at(cell, "P1"), pallet_at(cell, "P3")) == ("L1", "W1")


# ------------------------------------------------------------------------------------------- commit


def poisoned_pallet(pallet: str) -> Callable[[BatchRows], bool]:
    """Rows a database would refuse: any batch that writes this pallet's row."""

    def poisoned(rows: BatchRows) -> bool:
        return any(op.table == "pallets" and any(r["id"] == pallet for r in op.rows) for op in rows.ops)

    return poisoned


def refuse_rows(stores: Stores, monkeypatch: pytest.MonkeyPatch, poisoned: Callable[[BatchRows], bool]) -> None:
    """Make the store refuse, as bad data, every batch ``poisoned`` picks (not a store outage)."""
    if stores.memory is not None:
        memory = stores.memory

        def fault(rows: BatchRows) -> BaseException | None:
            memory.fail_next(fault)  # every commit, not only the next one
            return BadRow("pallets: value too long") if poisoned(rows) else None

        memory.fail_next(fault)
        return
    real = batch_module.write_batch

    def write(conn: Any, rows: BatchRows) -> None:
        real(conn, rows)
        if poisoned(rows):
            raise sa_exc.DataError("INSERT INTO pallets ...", {}, ValueError("value too long for the column"))

    monkeypatch.setattr("gateway.storage.sql_store.write_batch", write)


async def test_a_batch_whose_commit_fails_on_one_report_is_split_and_only_that_report_is_refused(
    stores: Stores, demo_config: CellConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_cell(demo_config, store=await stores.make()) as cell:
        refuse_rows(stores, monkeypatch, poisoned_pallet("P2"))
        answers = await one_batch(
            cell,
            PalletArrived("L1", "a", None, "P1"),
            PalletArrived("L2", "b", None, "P4"),
            PalletArrived("M1", "poison", None, "P2"),
            PalletArrived("W1", "c", None, "P3"),
            PalletArrived("M2", "d", None, "P5"),
        )
        poison = answers[2]
        assert [a.ok for a in answers] == [True, True, False, True, True]
        assert poison.reason is Reason.INTERNAL
        assert "could not be stored" in poison.message
        assert cell.writer.stats.splits >= 1
        assert pallet_at(cell, "P2") == ""
        assert pallet_at(cell, "P5") == "M2"
        retry = await cell.send(PalletArrived("M1", "poison", None, "P2"), "plc")
        assert retry.replayed
        assert retry.reason is Reason.INTERNAL
        assert retry.counter == poison.counter
        assert (await cell.send(PalletArrived("M3", "e", None, "P6"), "plc")).ok
    log = await stores.log()
    assert sorted(r.event_id for r in log) == ["a", "b", "c", "d", "e", "poison"]
    assert len({r.counter for r in log}) == 6
    assert await stores.replay_mismatches() == []
    monkeypatch.undo()
    async with running_cell(demo_config, store=await stores.make()) as cell:
        assert [pallet_at(cell, p) for p in ("P1", "P2", "P3", "P4", "P5", "P6")] == ["L1", "", "W1", "L2", "M2", "M3"]


async def test_an_event_id_with_invalid_utf8_is_stored_escaped_and_its_retry_is_answered_from_the_log(
    stores: Stores, demo_config: CellConfig
) -> None:
    """asyncua hands invalid UTF-8 over as lone surrogates; no database can store them as they are."""
    event_id = "bad-\udcff-\x00"
    async with running_cell(demo_config, store=await stores.make(), cache_size=1) as cell:
        first, other = await one_batch(
            cell, PalletArrived("L1", event_id, None, "P1"), PalletArrived("L2", "fine", None, "P2")
        )
        assert first.ok
        assert other.ok
        await cell.ok(PalletArrived("W1", "push-it-out-of-the-cache", None, "P3"))
        retry = await cell.send(PalletArrived("L1", event_id, None, "P1"), "plc")
        assert retry.replayed
        assert retry.counter == first.counter
    assert next(r.event_id for r in await stores.log()) == "bad-\\udcff-\\x00"


async def test_a_store_outage_answers_store_unavailable_and_the_retries_commit(
    demo_config: CellConfig,
) -> None:
    store = MemoryStore()
    async with running_cell(demo_config, store=store) as cell:
        store.fail_next(lambda _: StoreOutage("database or disk is full"))
        answers = await one_batch(cell, PalletArrived("L1", "a", None, "P1"), PalletArrived("L2", "b", None, "P2"))
        assert all(isinstance(a, StoreUnavailable) for a in answers)
        assert cell.writer.stats.splits == 0  # an outage is not split: nothing of it could be stored
        assert store.rows("cell_events") == []
        assert pallet_at(cell, "P1") == ""
        again = await one_batch(cell, PalletArrived("L1", "a", None, "P1"), PalletArrived("L2", "b", None, "P2"))
        assert all(a.ok and not a.replayed for a in again)


# ------------------------------------------------------------------------------------------- overlap


async def test_the_next_batch_is_applied_while_one_commits_and_answered_only_after_its_own_commit(
    demo_config: CellConfig,
) -> None:
    store = MemoryStore()
    async with running_cell(demo_config, store=store) as cell:
        with store.hold() as gate:
            first = asyncio.ensure_future(cell.send(PalletArrived("L1", "a", None, "P1"), "plc"))
            await until(store.committing.is_set)
            second = asyncio.ensure_future(cell.send(PalletDeparted("L1", "b", None, "P1"), "plc"))
            await until(lambda: cell.writer.model.tracker.pallets["P1"].station == "" and cell.writer.queue_depth == 0)
            # Applied (the model moved on), but nothing answered and nothing visible to readers.
            assert cell.writer.model.tracker.stations["L1"].pallet == ""
            assert not first.done()
            assert not second.done()
            assert cell.writer.view.counter == 0
            assert cell.writer.view.stations["L1"].pallet == ""
            gate.set()
            a = await first
            assert cell.writer.view.counter >= 1
        b = await second
        assert a.ok
        assert b.ok
        assert (a.counter, b.counter) == (1, 2)
        assert cell.writer.view.counter == 2
        assert cell.writer.view.stations["L1"].pallet == ""


async def test_when_a_batch_fails_the_next_is_applied_again_on_the_recovered_state(demo_config: CellConfig) -> None:
    store = MemoryStore()
    async with running_cell(demo_config, store=store) as cell:
        store.fail_next(lambda _: StoreOutage("disk full"))
        with store.hold() as gate:
            first = asyncio.ensure_future(cell.send(PalletArrived("L1", "a", None, "P1"), "plc"))
            await until(store.committing.is_set)
            # Applied on top of the arrival, which will not commit.
            second = asyncio.ensure_future(cell.send(PalletArrived("M1", "b", None, "P1"), "plc"))
            await until(lambda: cell.writer.queue_depth == 0 and pallet_at(cell, "P1") == "M1")
            gate.set()
            with pytest.raises(StoreUnavailable):
                await first
        b = await second
        assert b.ok
        assert b.counter == 1
        # Without the arrival at L1, the pallet came to M1 from nowhere: no departure from L1 was made up.
        assert [r["event_id"] for r in store.rows("cell_events")] == ["b"]
        assert pallet_at(cell, "P1") == "M1"
        assert cell.writer.view.stations["L1"].pallet == ""
    _, result = replay_rows([SimpleNamespace(**r) for r in store.rows("cell_events")], lambda: build_model(demo_config))
    assert result.mismatches == []


async def test_a_full_queue_turns_calls_away_at_once_and_takes_them_again_when_it_drains(
    demo_config: CellConfig,
) -> None:
    store = MemoryStore()
    async with running_cell(demo_config, store=store, max_queue=3) as cell:
        with store.hold() as gate:
            calls = [
                asyncio.ensure_future(cell.send(PalletArrived("L1", f"a{i}", None, "P1"), "plc")) for i in range(10)
            ]
            await until(lambda: any(c.done() for c in calls))
            turned_away = [c for c in calls if c.done()]
            assert turned_away
            assert all(isinstance(c.exception(), Overloaded) for c in turned_away)
            gate.set()
            done = await asyncio.gather(*calls, return_exceptions=True)
        taken = [a for a in done if not isinstance(a, BaseException)]
        assert len(taken) == 10 - len(turned_away)
        assert all(a.ok for a in taken)
        assert cell.writer.stats.overloaded == len(turned_away)
        assert (await cell.send(PalletArrived("L2", "later", None, "P2"), "plc")).ok


# ------------------------------------------------------------------------------------------- the writer itself


async def test_a_defect_in_the_writer_itself_fails_only_the_batch_at_hand(
    demo_config: CellConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = MemoryStore()
    real = batch_module.batch_rows
    calls: list[int] = []

    def broken_once(*args: Any, **kwargs: Any) -> BatchRows:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a defect in the writer's own code")
        return real(*args, **kwargs)

    monkeypatch.setattr("gateway.service.prepare.batch_rows", broken_once)
    async with running_cell(demo_config, store=store) as cell:
        failed = await one_batch(cell, PalletArrived("L1", "a", None, "P1"), PalletArrived("L2", "b", None, "P2"))
        assert all(isinstance(a, StoreUnavailable) for a in failed)  # not acknowledged: the PLCs retry
        assert pallet_at(cell, "P1") == ""  # the state was reloaded
        assert store.rows("cell_events") == []
        again = await one_batch(cell, PalletArrived("L1", "a", None, "P1"), PalletArrived("L2", "b", None, "P2"))
        assert all(a.ok for a in again)
        assert pallet_at(cell, "P1") == "L1"


async def test_a_caller_that_gives_up_leaves_no_bookkeeping_behind(demo_config: CellConfig) -> None:
    """A PLC whose call is cancelled (its session dropped): its report is stored or not, never half;
    nothing of it stays in the writer's memory, and the next reports are served."""
    store = MemoryStore()
    async with running_cell(demo_config, store=store) as cell:
        for i in range(20):
            gone = asyncio.ensure_future(cell.send(PalletArrived("L1", f"gone{i}", None, "P1"), "plc"))
            for _ in range(i % 4):  # cancelled before, while or after the writer takes it
                await asyncio.sleep(0)
            gone.cancel()
            assert (await cell.send(PalletArrived("L2", f"next{i}", None, "P2"), "plc")).ok
        await cell.writer.wait_idle()
        assert cell.writer.intake.open == {}
        assert cell.writer.intake.poisoned == {}
    stored = {r["event_id"] for r in store.rows("cell_events")}
    assert {f"next{i}" for i in range(20)} <= stored
    _, result = replay_rows([SimpleNamespace(**r) for r in store.rows("cell_events")], lambda: build_model(demo_config))
    assert result.mismatches == []


# ------------------------------------------------------------------------------------------- review regressions


async def test_a_shutdown_while_a_split_batch_commits_answers_what_was_stored(demo_config: CellConfig) -> None:
    """A batch whose commit failed on its data is committed in halves; a stop during one of those
    commits waits for it, so its callers hear that it was stored (not "shutting down")."""
    store = MemoryStore()
    async with running_cell(demo_config, store=store) as cell:
        store.fail_next(lambda _: BadRow("bad data"))  # the whole batch once, then its halves commit
        with store.hold() as gate:
            calls = [
                asyncio.ensure_future(cell.send(PalletArrived("L1", "a", None, "P1"), "plc")),
                asyncio.ensure_future(cell.send(PalletArrived("L2", "b", None, "P2"), "plc")),
            ]
            await until(store.committing.is_set)  # the batch, held: it will fail on its data
            store.committing.clear()
            gate.set()
            await until(lambda: cell.writer.stats.reloads >= 1)
            gate.clear()
            await until(store.committing.is_set)  # the first half, held
            writer = next(t for t in asyncio.all_tasks() if t.get_name() == "writer")
            writer.cancel()  # the gateway stops meanwhile
            await asyncio.sleep(0)
            gate.set()
            answers = await asyncio.gather(*calls, return_exceptions=True)
    stored = {r["event_id"] for r in store.rows("cell_events")}
    for event_id, answer in zip(("a", "b"), answers, strict=True):
        if isinstance(answer, StoreUnavailable):
            assert event_id not in stored, f"{event_id} was stored but answered {answer}"
        else:
            assert event_id in stored


async def test_a_defect_while_the_next_batch_is_applied_still_answers_the_committed_one(
    demo_config: CellConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = batch_module.batch_rows
    calls: list[int] = []

    def broken_second(*args: Any, **kwargs: Any) -> BatchRows:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("a defect while the next batch is applied")
        return real(*args, **kwargs)

    monkeypatch.setattr("gateway.service.prepare.batch_rows", broken_second)
    store = MemoryStore()
    async with running_cell(demo_config, store=store) as cell:
        with store.hold() as gate:
            first = asyncio.ensure_future(cell.send(PalletArrived("L1", "a", None, "P1"), "plc"))
            await until(store.committing.is_set)
            second = asyncio.ensure_future(cell.send(PalletArrived("L2", "b", None, "P2"), "plc"))
            await until(lambda: len(calls) == 2)
            gate.set()
            a, b = await asyncio.gather(first, second, return_exceptions=True)
        assert not isinstance(a, BaseException)
        assert a.ok  # it was committed: its caller hears so
        assert isinstance(b, StoreUnavailable)  # the batch at hand failed, nothing of it stored
        assert [r["event_id"] for r in store.rows("cell_events")] == ["a"]


async def test_an_outage_while_each_report_is_looked_up_alone_is_not_a_refusal(demo_config: CellConfig) -> None:
    store = MemoryStore()
    real = store.find_answers
    looked: list[int] = []

    async def odd_then_down(keys: Any) -> Any:
        looked.append(1)
        if len(looked) == 1:
            raise ValueError("a key the look-up cannot handle")
        raise StoreOutage("the disk is gone")

    async with running_cell(demo_config, store=store, cache_size=1) as cell:
        await cell.ok(PalletArrived("L1", "x", None, "P1"))
        await cell.ok(PalletArrived("L2", "y", None, "P2"))  # the log is larger than the cache now
        store.find_answers = odd_then_down  # type: ignore[method-assign]
        (answer,) = await one_batch(cell, PalletArrived("M1", "z", None, "P3"))
        assert isinstance(answer, StoreUnavailable)  # not acknowledged: the PLC retries
        store.find_answers = real  # type: ignore[method-assign]
        assert (await cell.send(PalletArrived("M1", "z", None, "P3"), "plc")).ok  # and the retry is stored


async def test_a_listener_whose_awaited_work_is_cancelled_does_not_stop_the_feed() -> None:
    feed = Feed()
    initial = asyncio.ensure_future(asyncio.Event().wait())
    seen: list[int] = []

    async def listener(batch: Committed) -> None:
        if not initial.done():
            await asyncio.shield(initial)
        seen.append(len(batch.applied))

    feed.subscribe(listener)
    runner = asyncio.create_task(feed.run())
    try:
        feed.push(Committed([], set(), set(), CellView()))
        await asyncio.sleep(0)
        initial.cancel()  # e.g. the OPC UA server stops its first publication
        feed.push(Committed([], set(), set(), CellView()))
        async with asyncio.timeout(5):
            await feed.wait_idle()
        assert not runner.done()
        assert seen  # the second batch was handed over
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
