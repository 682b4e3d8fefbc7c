"""Random days of orders, schedules, production and fills through the writer, checked against the store.

The domain has its own state machine (tests/unit/orders/test_orders_properties.py). This one runs the
same kind of days through the whole service: order commands and station reports go through the one
writer onto a real SQLite file, parts are made by the reports a PLC sends, finished units fill
workorders at unload inside the writer's apply (on some days) or by a supervisor, and the gateway is
restarted from the store now and then. After every step, from the *store*:

- per part, booked = scheduled + unscheduled, and what schedules sent to the cell in jobs plus the
  hand-made fix-ups of the table = the scheduled bookings + the scheduled-parts-without-bookings table;
- no serial is in two workorders, every filled serial is a finished unit of that part, no workorder
  holds more than its quantity;
- the writer's in-memory orders equal what a fresh load of the store gives;
- a refused command changed nothing.

A run is a few days of steps drawn up front (so every example is whole days, and a failure shrinks to
the few steps that matter); a step that names "the n-th" order, job or serial takes it modulo what
exists at that moment. ``ORDERS_DAYS_EXAMPLES=300`` runs more days by hand.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from gateway.app import build_model
from gateway.cell.commands import Command
from gateway.clock import ManualClock
from gateway.config import CellConfig, load_config
from gateway.jobs.model import JobState, UnitStatus
from gateway.orders import OrderBook
from gateway.orders.commands import (
    AddReplacementBooking,
    AssignSerials,
    BackOutJob,
    EditBooking,
    MarkWorkorderFilled,
    ReceiveOrder,
    RunSchedule,
    SetScheduledWithoutBooking,
    UnassignSerial,
    UpdateOrder,
)
from gateway.service.writer import Answer, Writer
from gateway.storage import schema as S
from gateway.storage.database import create_engine
from gateway.storage.migrate import upgrade
from gateway.storage.sql_store import SqlStore
from gateway.storage.store import load_model
from tests.service.shop import Shop
from tests.support import DEMO_CONFIG, T0

PARTS = ("ABC123", "DEF456")
# Seconds per unit per resource group of the demo's automatic routing: capacity for n units is n x this.
LOAD = {"LOAD": 210.0, "MILL": 900.0, "WASH": 180.0, "CMM": 300.0}

quantities = st.dictionaries(st.sampled_from(PARTS), st.integers(1, 4), min_size=1, max_size=2)
n = st.integers(0, 20)
receive = st.tuples(st.just("receive"), st.integers(0, 10), st.integers(0, 3), quantities)
update = st.tuples(st.just("update"), n, quantities)
fix_booking = st.tuples(st.just("fix_booking"), n, st.sampled_from(PARTS), st.integers(0, 4))
fix_table = st.tuples(st.just("fix_table"), st.sampled_from(PARTS), st.integers(0, 3))
replacement = st.tuples(st.just("replacement"), st.sampled_from(PARTS), st.integers(0, 5))
# sampled_from, not integers(): Hypothesis leans integers towards 0, and a day without capacity makes nothing.
schedule = st.tuples(st.just("schedule"), st.sampled_from([0, 2, 4, 6, 10]), st.sampled_from([None, None, 3, 8]))
shift = st.tuples(st.just("shift"), st.sampled_from([1, 2, 3]))
back_out = st.tuples(st.just("back_out"), n)
bulk = st.tuples(st.just("bulk"), n, st.lists(n, min_size=1, max_size=3))
unassign = st.tuples(st.just("unassign"), n)
fill = st.tuples(st.just("fill"), n)
steal = st.tuples(st.just("steal"), n, n)
restart = st.tuples(st.just("restart"))


@st.composite
def one_day(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    """Orders and edits in the morning (a back-out first, sometimes), the schedule, shifts, fills."""
    steps: list[tuple[Any, ...]] = []
    if draw(st.booleans()):
        steps.append(draw(back_out))
    steps += draw(st.lists(receive, max_size=3))
    steps += draw(st.lists(st.one_of(update, fix_booking, fix_table, replacement, restart), max_size=3))
    steps.append(draw(schedule))
    steps += draw(st.lists(shift, min_size=1, max_size=3))
    steps += draw(st.lists(st.one_of(bulk, bulk, fill, unassign, steal, restart), max_size=4))
    return steps


days = st.lists(one_day(), min_size=1, max_size=4).map(lambda ds: [step for d in ds for step in d])


def _config(folder: Path, assign_at_unload: bool) -> CellConfig:
    flag = str(assign_at_unload).lower()
    text = DEMO_CONFIG.read_text().replace("assign_workorder_at_unload = false", f"assign_workorder_at_unload = {flag}")
    path = folder / "cell.toml"
    path.write_text(text)
    env = {"CELL_GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{folder / 'cell.db'}", "CELL_GATEWAY_HTTP_PORT": "0"}
    return load_config(path, env=env)


def orders_state(book: OrderBook) -> tuple[Any, ...]:
    return (
        sorted(book.bookings, key=lambda b: b.id),
        sorted(book.workorders, key=lambda w: w.id),
        book.scheduled_without_bookings,
        sorted(book.schedules, key=lambda s: s.id),
    )


def _pick(items: list[Any], index: int) -> Any:
    return items[index % len(items)] if items else None


class Day:
    def __init__(self, config: CellConfig) -> None:
        self.config = config
        self.clock = ManualClock(T0)
        self.engine = create_engine(config.database.url)
        self.writer: Writer | None = None
        self.task: asyncio.Task[None] | None = None
        self.orders: list[str] = []
        self.shop: Shop | None = None

    async def start(self) -> None:
        self.writer = Writer(SqlStore(self.engine), lambda: build_model(self.config), self.clock)
        await self.writer.load()
        if self.shop is None:
            self.shop = Shop(self.writer, self.clock)
        self.shop.writer = self.writer  # the same shop (and EventIds) across a restart
        self.task = asyncio.create_task(self.writer.run(), name="writer")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None
        if self.writer is not None:
            self.writer.close()

    @property
    def model(self) -> Any:
        assert self.writer is not None
        return self.writer.model

    async def send(self, command: Command, actor: str = "erp") -> Answer:
        assert self.writer is not None
        self.clock.advance(timedelta(minutes=3))
        before = (orders_state(self.model.orders), _jobs_state(self.model))
        answer = await self.writer.submit(command, actor)
        if not answer.ok:
            assert orders_state(self.model.orders) == before[0], answer
            # Which jobs memory holds may change with any batch, a refused one too (a Closed job leaves
            # memory after a later batch): compare every job, as held or else as stored.
            assert await self.every_job(_jobs_state(self.model)) == await self.every_job(before[1]), answer
        return answer

    async def every_job(self, held: tuple[Any, ...]) -> list[Any]:
        """The jobs memory held (``_jobs_state``), and those it did not hold as stored (a refused
        command writes no job rows, so the rows read now serve for "before" too)."""
        jobs = {job[0]: job for job in held}
        async with self.engine.connect() as conn:
            for row in await conn.execute(select(S.jobs)):
                jobs.setdefault(row.id, (row.id, JobState(row.state), row.quantity, row.started))
        return sorted(jobs.values())

    def open_jobs(self) -> list[str]:
        jobs = self.model.book.jobs.values()
        return sorted(j.id for j in jobs if j.state in (JobState.RELEASED, JobState.RUNNING) and j.started < j.quantity)

    def unassigned(self) -> list[str]:
        book, orders = self.model.book, self.model.orders
        return sorted(
            s for s, u in book.units.items() if u.status is UnitStatus.FINISHED and orders.workorder_of(s) is None
        )

    async def make(self, job_id: str, count: int) -> None:
        assert self.shop is not None
        await self.shop.make(job_id, count)
        event("parts made")

    # ------------------------------------------------------------------------------------ one step
    async def step(self, step: tuple[Any, ...]) -> None:
        kind, *args = step
        orders = self.model.orders
        handlers: dict[str, Callable[..., Any]] = {
            "receive": self.receive,
            "update": self.update,
            "fix_booking": self.fix_booking,
            "fix_table": self.fix_table,
            "replacement": self.replacement,
            "schedule": self.schedule,
            "shift": self.shift,
            "back_out": self.back_out,
            "bulk": self.bulk,
            "unassign": self.unassign,
            "fill": self.fill,
            "steal": self.steal,
            "restart": self.restart,
        }
        del orders
        await handlers[kind](*args)

    async def receive(self, days: int, priority: int, parts: dict[str, int]) -> None:
        order_id = f"O{len(self.orders)}"
        assert (await self.send(ReceiveOrder(order_id, T0.date() + timedelta(days=days), priority, parts))).ok
        self.orders.append(order_id)

    async def update(self, index: int, parts: dict[str, int]) -> None:
        if self.orders:
            await self.send(UpdateOrder(_pick(self.orders, index), parts))

    async def fix_booking(self, index: int, part: str, quantity: int) -> None:
        booking = _pick(self.model.orders.unscheduled_bookings(), index)
        if booking is not None:
            await self.send(EditBooking(booking.id, part, quantity, "count"), "supervisor")

    async def fix_table(self, part: str, quantity: int) -> None:
        assert (await self.send(SetScheduledWithoutBooking(part, quantity, "extra at the outbound"), "sup")).ok

    async def replacement(self, part: str, days: int) -> None:
        assert (await self.send(AddReplacementBooking(part, T0.date() + timedelta(days=days), "scrapped"), "op")).ok

    async def schedule(self, units: int, horizon: int | None) -> None:
        due_before = None if horizon is None else T0.date() + timedelta(days=horizon)
        answer = await self.send(RunSchedule({g: units * s for g, s in LOAD.items()}, 24.0, due_before))
        assert answer.ok, answer
        event(f"a schedule made {min(len(answer.outputs['Jobs']), 2)} job(s) (2: or more)")

    async def shift(self, per_job: int) -> None:
        """Every open job makes a few more parts."""
        for job_id in self.open_jobs():
            job = self.model.book.jobs[job_id]
            await self.make(job_id, min(per_job, job.quantity - job.started))

    async def back_out(self, index: int) -> None:
        job_id = _pick(self.open_jobs(), index)
        if job_id is not None:
            assert (await self.send(BackOutJob(job_id, "machine down"))).ok
            event("a job was backed out")

    async def bulk(self, index: int, picks: list[int]) -> None:
        workorder = _pick(self.model.orders.unfilled_workorders(), index)
        spare = self.unassigned()
        if workorder is not None and spare:
            serials = tuple(dict.fromkeys(_pick(spare, p) for p in picks))
            answer = await self.send(AssignSerials(workorder.id, serials, "review"), "supervisor")
            event(f"a supervisor's assignment: {answer.reason or 'ok'}")

    async def unassign(self, index: int) -> None:
        owned = sorted(s for w in self.model.orders.unfilled_workorders() for s in w.all_serials)
        serial = _pick(owned, index)
        if serial is not None:
            assert (await self.send(UnassignSerial(serial, "wrong basket"), "supervisor")).ok

    async def fill(self, index: int) -> None:
        workorder = _pick(self.model.orders.unfilled_workorders(), index)
        if workorder is not None:
            assert (await self.send(MarkWorkorderFilled(workorder.id), "supervisor")).ok

    async def steal(self, index: int, target: int) -> None:
        """A serial already in a workorder cannot go into another one."""
        owned = sorted(s for w in self.model.orders.workorders for s in w.all_serials)
        serial = _pick(owned, index)
        workorder = _pick(self.model.orders.unfilled_workorders(), target)
        if serial is not None and workorder is not None:
            answer = await self.send(AssignSerials(workorder.id, (serial,)), "supervisor")
            assert answer.reason is not None

    async def restart(self) -> None:
        before = orders_state(self.model.orders)
        await self.stop()
        await self.start()
        assert orders_state(self.model.orders) == before

    # ------------------------------------------------------------------------------------ the check
    async def check(self) -> None:
        async with self.engine.connect() as conn:
            booked: Counter[str] = Counter()
            scheduled: Counter[str] = Counter()
            unscheduled: Counter[str] = Counter()
            status = {r.booking_id: r.scheduled for r in await conn.execute(select(S.bookings))}
            for row in await conn.execute(select(S.booking_parts)):
                booked[row.part_name] += row.quantity
                (scheduled if status[row.booking_id] else unscheduled)[row.part_name] += row.quantity
            table = {r.part_name: r.quantity for r in await conn.execute(select(S.scheduled_parts_without_bookings))}
            sent: Counter[str] = Counter()
            jobs = {r.id: r for r in await conn.execute(select(S.jobs))}
            for line in await conn.execute(select(S.schedule_lines)):
                sent[line.part_name] += line.quantity
                if line.quantity:
                    job = jobs[line.job_id]
                    assert (job.part, job.quantity) == (line.part_name, line.quantity)
            fixed: Counter[str] = Counter()
            table_fixes = select(S.order_audit).where(S.order_audit.c.action == "ScheduledWithoutBookingSet")
            for entry in await conn.execute(table_fixes):
                fixed[entry.subject] += entry.after.get(entry.subject, 0) - entry.before.get(entry.subject, 0)
            for part in PARTS:
                assert booked[part] == scheduled[part] + unscheduled[part]
                assert sent[part] + fixed[part] == scheduled[part] + table.get(part, 0), part
            assert all(q > 0 for q in table.values())

            units = {r.serial: r for r in await conn.execute(select(S.units))}
            wanted = {(r.workorder_id, r.part_name): r.quantity for r in await conn.execute(select(S.workorder_parts))}
            held: Counter[tuple[str, str]] = Counter()
            seen: set[str] = set()
            for row in await conn.execute(select(S.workorder_serials)):
                assert row.serial not in seen
                seen.add(row.serial)
                unit = units[row.serial]
                assert unit.status == UnitStatus.FINISHED.value
                assert jobs[unit.job_id].part == row.part_name
                held[(row.workorder_id, row.part_name)] += 1
            for key, count in held.items():
                assert count <= wanted[key], key

            fresh = build_model(self.config)
            await load_model(conn, fresh)
        assert orders_state(fresh.orders) == orders_state(self.model.orders)
        serials = [s for w in self.model.orders.workorders for s in w.all_serials]
        assert len(serials) == len(set(serials)) == len(seen)


def _jobs_state(model: Any) -> tuple[Any, ...]:
    book = model.book
    return tuple((j.id, j.state, j.quantity, j.started) for j in sorted(book.jobs.values(), key=lambda j: j.id))


async def _run(folder: Path, assign_at_unload: bool, day: list[tuple[Any, ...]]) -> None:
    config = _config(folder, assign_at_unload)
    run = Day(config)
    await upgrade(run.engine)
    await run.start()
    try:
        for step in day:
            await run.step(step)
            await run.check()
    finally:
        await run.stop()
        await run.engine.dispose()


@settings(
    max_examples=int(os.environ.get("ORDERS_DAYS_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(assign_at_unload=st.booleans(), day=days)
def test_random_days_keep_the_bookkeeping_exact_in_the_store(
    assign_at_unload: bool, day: list[tuple[Any, ...]]
) -> None:
    with tempfile.TemporaryDirectory(prefix="orders-day-") as folder:
        asyncio.run(_run(Path(folder), assign_at_unload, day))
