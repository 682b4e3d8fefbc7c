"""The floor of the simulated cell: the state every station works on, and how units and pallets move.

It holds the simulation's model of the jobs, units and pallets (:mod:`simulators.model`), the queues
in front of the stations, each station's figures, the planner and the operator, and the moves between
stations: a unit passes or fails its step, a pallet travels to the group its units' next step needs (or
back to the load station to be unloaded), an empty pallet waits in the stocker until some job takes
new units again. Every duration is the operation's expected time from the gateway's config, varied by
a seeded draw, and passes on a :class:`SimClock`.

The station kinds (:mod:`simulators.stations`) and the timed faults (:mod:`simulators.faults`) act on
it; :mod:`simulators.simulation` runs the period.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any, Generic, TypeVar

from gateway.config import CellConfig
from simulators.clock import SimClock
from simulators.ledger import Ledger
from simulators.model import OFF_PALLET_KINDS, OpStep, SimJob, SimPallet, SimUnit, StationStats, StepDone
from simulators.planner import Planner
from simulators.plc import Plc
from simulators.scenario import Fault, JobPlan, Scenario

T = TypeVar("T")


class WorkQueue(Generic[T]):
    """Work waiting for a station; ``take`` returns None once the simulation stops."""

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._cond = asyncio.Condition()

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[T]:
        return list(self._items)

    async def put(self, item: T) -> None:
        async with self._cond:
            self._items.append(item)
            self._cond.notify()

    async def take(self, stop: asyncio.Event) -> T | None:
        async with self._cond:
            await self._cond.wait_for(lambda: bool(self._items) or stop.is_set())
            if stop.is_set():
                return None
            return self._items.popleft()

    async def wake_all(self) -> None:
        async with self._cond:
            self._cond.notify_all()


class Floor:
    """The cell's jobs, units, pallets, queues and station figures, shared by every station."""

    def __init__(
        self,
        config: CellConfig,
        scenario: Scenario,
        *,
        clock: SimClock,
        faults: frozenset[Fault],
        run_id: str,
        ledger: Ledger,
        planner: Planner,
        operator: Plc,
    ) -> None:
        self.scenario = scenario
        self.clock = clock
        self.faults = faults
        self.run_id = run_id
        self.ledger = ledger
        self.planner = planner
        self.operator = operator
        self.timing = scenario.timing
        self.rates = scenario.faults

        self.operations = {
            op.code: OpStep(
                op.code,
                op.group,
                op.kind,
                op.program,
                op.expected_seconds if op.expected_seconds is not None else self.timing.default_operation_seconds,
            )
            for op in config.operations
        }
        self.load_group = next((s.groups[0] for s in config.stations if s.kind == "load"), "LOAD")
        self.jobs: dict[str, SimJob] = {}
        self.units: dict[str, SimUnit] = {}
        self.pallets = {p: SimPallet(p) for p in config.pallets}
        self.queues: dict[str, WorkQueue[SimPallet]] = {g: WorkQueue() for g in config.groups()}
        self.inspection: dict[str, WorkQueue[str]] = {}
        self.stats = {s.id: StationStats(s.id, s.kind) for s in config.stations}
        self.fault_log: list[str] = []
        self.reworked = 0  # units sent to rework so far (the first failed inspection always is)
        self._serials = 0

        self.stop = asyncio.Event()  # stations take no new work
        self.background: set[asyncio.Task[Any]] = set()
        self.helpers: set[asyncio.Task[Any]] = set()

    def vary(self, rng: random.Random, nominal: float) -> float:
        v = self.timing.variation
        return max(0.0, nominal * rng.uniform(1 - v, 1 + v))

    # ------------------------------------------------------------------ jobs
    async def create_jobs(self) -> None:
        start = self.clock.now()
        for index, plan in enumerate(self.scenario.jobs, 1):
            job_id = f"J{index}-{self.run_id}"
            due = start + timedelta(hours=plan.due_hours) if plan.due_hours is not None else None
            await self.planner.create_job(
                job_id,
                plan.part,
                plan.revision,
                plan.quantity,
                due,
                plan.priority,
                plan.yield_buffer_percent,
                plan.steps,
            )
            await self.planner.release(job_id)
            await self.learn_job(job_id, plan)

    async def learn_job(self, job_id: str, plan: JobPlan | None = None, parent: str = "") -> SimJob:
        """The job's routing as the gateway holds it (its snapshot), resolved against the config."""
        routing = await self.planner.read_new_job(job_id, "Routing")
        part = plan.part if plan else self.jobs[parent].part
        revision = plan.revision if plan else self.jobs[parent].revision
        supply = plan.supply_serials if plan else self.jobs[parent].supply_serials
        job = SimJob(job_id, part, revision, tuple(self.operations[c] for c in routing), supply, parent)
        self.jobs[job_id] = job
        return job

    # ------------------------------------------------------------------ tasks
    def later(self, coro: Awaitable[Any]) -> None:
        """Simulation-only work (transport, parking, fault timers): cancelled at the end, never mid-report."""
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def helper(self, coro: Awaitable[Any]) -> None:
        """Work that reports (rework splits): awaited at the end, never cancelled."""
        task = asyncio.ensure_future(coro)
        self.helpers.add(task)

    # ------------------------------------------------------------------ units and pallets
    def next_step(self, unit: SimUnit) -> OpStep | None:
        routing = self.jobs[unit.job].routing
        return routing[unit.next_step] if unit.next_step < len(routing) else None

    def pass_step(self, unit: SimUnit, station: str, passed: bool) -> None:
        step = self.next_step(unit)
        if step is None:
            self.ledger.problem(f"{unit.serial} passed a step at {station} after its last one")
            return
        unit.history.append(StepDone(unit.job, step.operation, station, passed))
        if passed:
            unit.next_step += 1
            unit.failures = 0
            if unit.next_step >= len(self.jobs[unit.job].routing):
                unit.status = "finished"
        else:
            unit.failures += 1

    def live_units(self, pallet: SimPallet) -> list[SimUnit]:
        return [self.units[s] for s in pallet.units if self.units[s].live]

    def _destination(self, pallet: SimPallet) -> str | None:
        live = self.live_units(pallet)
        if not live:
            return None
        step = self.next_step(live[0])
        if step is None or step.kind in OFF_PALLET_KINDS:
            return self.load_group  # to be unloaded
        return step.group

    def dispatch(self, pallet: SimPallet, rng: random.Random) -> None:
        pallet.units = [s for s in pallet.units if self.units[s].live]
        group = self._destination(pallet)
        if group is None:
            self.later(self._park(pallet))
        else:
            self.later(self._move(pallet, group, self.vary(rng, self.timing.transport_seconds)))

    async def _move(self, pallet: SimPallet, group: str, seconds: float) -> None:
        await self.clock.sleep(seconds)
        await self.queues[group].put(pallet)

    async def _park(self, pallet: SimPallet) -> None:
        """An empty pallet waits in the stocker until some job takes new units again."""
        while not self.stop.is_set():
            if await self.planner.has_room(list(self.jobs)):
                await self.queues[self.load_group].put(pallet)
                return
            await self.clock.sleep(self.timing.park_recheck_seconds)

    def to_off_pallet_step(self, unit: SimUnit) -> None:
        step = self.next_step(unit)
        if step is None:
            return
        queue = self.inspection.get(step.group)
        if step.kind in OFF_PALLET_KINDS and queue is not None:
            self.later(queue.put(unit.serial))
        else:
            self.ledger.problem(f"{unit.serial} left its pallet needing {step.operation}, which no scan station serves")

    def new_serials(self, job: SimJob, count: int) -> list[str]:
        if not job.supply_serials:
            return []
        serials = []
        for _ in range(count):
            self._serials += 1
            serials.append(f"{job.part}-{self.run_id}-{self._serials:04d}")
        return serials

    async def work(self, station: str, seconds: float) -> None:
        self.stats[station].busy += seconds
        await self.clock.sleep(seconds)

    def delay(self, rng: random.Random) -> float:
        if Fault.DELAY in self.faults and rng.random() < self.rates.delay:
            low, high = self.timing.operator_delay_seconds
            return rng.uniform(low, high)
        return 0.0

    def hhmm(self) -> str:
        seconds = int(self.clock.elapsed())
        return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}"
