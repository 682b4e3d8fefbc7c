"""The simulated cell: pallets, stations and operators, each station driven by its own virtual PLC.

Pallets go load -> machine -> wash -> unload (each job's own routing decides), units go to the
inspection station after they leave the pallet. Load stations do what the gateway's LoadInstruction
says; machines run the program of ExpectedProgram. Every duration is the operation's expected time
from the gateway's config, varied by a seeded draw, and passes on a :class:`SimClock`.

The simulation keeps its own model of every unit (job, next step, the steps it passed and failed at
which station) from the reports it made, so that afterwards it can be compared with what the gateway
derived (:mod:`simulators.reconcile`).

Stopping: at the end of the simulated period stations finish the visit they are in (every report they
began is answered) and take no new work; what is on pallets and in queues stays WIP.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Generic, Protocol, TypeVar

from gateway.clock import Clock, SystemClock
from gateway.config import CellConfig, Station
from simulators.clock import SimClock
from simulators.ledger import Ack, Ledger
from simulators.planner import Monitor, Planner
from simulators.plc import Link, Plc, PlcFaults, SimulationError, TagPlc
from simulators.scenario import Fault, JobPlan, Scenario

T = TypeVar("T")

CYCLE_KINDS = ("machine", "wash")
OFF_PALLET_KINDS = ("inspect", "manual")


class GatewayControl(Protocol):
    """What the simulation needs to restart the gateway it runs against (fault restart / crash)."""

    async def restart(self, *, kill: bool = False) -> None: ...


# ---------------------------------------------------------------------------------------------- model


@dataclass(frozen=True, slots=True)
class OpStep:
    operation: str
    group: str
    kind: str
    program: str
    seconds: float


@dataclass(slots=True)
class SimJob:
    id: str
    part: str
    revision: str
    routing: tuple[OpStep, ...]
    supply_serials: bool = False
    parent: str = ""


@dataclass(frozen=True, slots=True)
class StepDone:
    job: str
    operation: str
    station: str
    passed: bool


@dataclass(slots=True)
class SimUnit:
    serial: str
    job: str
    next_step: int
    status: str = "live"  # live | finished | scrapped
    history: list[StepDone] = field(default_factory=list)
    failures: int = 0

    @property
    def live(self) -> bool:
        return self.status == "live"


@dataclass(slots=True)
class SimPallet:
    id: str
    units: list[str] = field(default_factory=list)


@dataclass(slots=True)
class StationStats:
    id: str
    kind: str
    busy: float = 0.0  # simulated seconds working (cycle, labor)
    down: float = 0.0  # simulated seconds under repair
    visits: int = 0
    results: Counter[str] = field(default_factory=Counter)  # ok / fail / interrupted / pass


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


@dataclass(slots=True)
class SimResult:
    """Everything the simulation knows at the end, for the summary and the reconciliation."""

    run_id: str
    seed: int
    faults: frozenset[Fault]
    hours: float
    simulated_seconds: float
    wall_seconds: float
    ledger: Ledger
    jobs: dict[str, SimJob]
    units: dict[str, SimUnit]
    stations: dict[str, StationStats]
    gateway_jobs: dict[str, dict[str, Any]]  # job -> counts read from the gateway at the end
    monitor_rejections: Counter[str]
    monitor_anomalies: Counter[str]
    fault_log: list[str]
    restarts: int
    held_seconds: float = 0.0  # wall seconds simulated time stood still (gateway restarts, PLC logins)
    reconnects: int = 0  # PLC connections opened again after the first


# ---------------------------------------------------------------------------------------------- the cell


class CellSimulation:
    def __init__(
        self,
        config: CellConfig,
        scenario: Scenario,
        *,
        endpoint: str | None = None,
        clock: SimClock,
        hours: float,
        faults: frozenset[Fault] = frozenset(),
        seed: int = 1,
        run_id: str | None = None,
        gateway: GatewayControl | None = None,
        gateway_clock: Clock | None = None,
        monitor: bool = True,
    ) -> None:
        self.config = config
        self.scenario = scenario
        self.endpoint = endpoint or config.server.endpoint
        self.clock = clock
        self.horizon = hours * 3600.0
        self.hours = hours
        self.faults = faults
        self.seed = seed
        self.run_id = run_id or secrets.token_hex(3)
        self.gateway = gateway
        self.ledger = Ledger()
        self.timing = scenario.timing
        self.rates = scenario.faults
        self.tolerance = config.cell.source_time_tolerance_seconds

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
        self.stations: dict[str, Station] = {s.id: s for s in config.stations}
        self.load_group = next((s.groups[0] for s in config.stations if s.kind == "load"), "LOAD")
        self.jobs: dict[str, SimJob] = {}
        self.units: dict[str, SimUnit] = {}
        self.pallets = {p: SimPallet(p) for p in config.pallets}
        self.queues: dict[str, WorkQueue[SimPallet]] = {g: WorkQueue() for g in config.groups()}
        self.inspection: dict[str, WorkQueue[str]] = {}
        self.stats = {s.id: StationStats(s.id, s.kind) for s in config.stations}
        self.fault_log: list[str] = []
        self.restarts = 0
        self._serials = 0
        self._reworked = 0

        self.stop = asyncio.Event()  # stations take no new work
        self._finish = asyncio.Event()  # end the run before the horizon
        self.plcs: dict[str, Plc] = {}
        for station in config.stations:
            account = scenario.account(station.id)
            link = Link(self.endpoint, station.id, account, scenario.plc, hold=clock.hold)
            cls = TagPlc if scenario.mode(station.id) == "tags" and station.kind in ("machine", "wash") else Plc
            rng = random.Random(f"{seed}:plc:{station.id}")
            self.plcs[station.id] = cls(station.id, link, self.ledger, clock, self.run_id, rng)
        self.operator = Plc(
            "cell",
            Link(self.endpoint, "operator", scenario.operator, scenario.plc, hold=clock.hold),
            self.ledger,
            clock,
            f"{self.run_id}-op",
            random.Random(f"{seed}:operator"),
            object_path="Cell/Units",
        )
        self.planner = Planner(Link(self.endpoint, "planner", scenario.planner, scenario.plc, hold=clock.hold))
        # The gateway's clock (its process runs on the system clock unless it shares this one): a
        # skewed PLC clock is off against it by more than the tolerance.
        reference = (gateway_clock or SystemClock()).now
        for plc in [*self.plcs.values(), self.operator]:
            plc.reference_now = reference
        self.monitor = Monitor(self.endpoint, scenario.plc, scenario.planner, hold=clock.hold) if monitor else None
        self._configure_plc_faults()
        self._background: set[asyncio.Task[Any]] = set()
        self._helpers: set[asyncio.Task[Any]] = set()
        self.gateway_jobs: dict[str, dict[str, Any]] = {}
        self.wall_seconds = 0.0

    # ------------------------------------------------------------------ set-up
    def _configure_plc_faults(self) -> None:
        on = self.faults
        for plc in [*self.plcs.values(), self.operator]:
            plc.faults = PlcFaults(
                duplicate=self.rates.duplicate if Fault.DUPLICATE in on else 0.0,
                retry=self.rates.retry if Fault.RETRY in on else 0.0,
                tagdrop=self.rates.tagdrop if Fault.TAGDROP in on else 0.0,
            )

    def _station_rng(self, station: str) -> random.Random:
        return self.plcs[station].rng

    def vary(self, rng: random.Random, nominal: float) -> float:
        v = self.timing.variation
        return max(0.0, nominal * rng.uniform(1 - v, 1 + v))

    async def _create_jobs(self) -> None:
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
            await self._learn_job(job_id, plan)

    async def _learn_job(self, job_id: str, plan: JobPlan | None = None, parent: str = "") -> SimJob:
        """The job's routing as the gateway holds it (its snapshot), resolved against the config."""
        routing = await self.planner.read_new_job(job_id, "Routing")
        part = plan.part if plan else self.jobs[parent].part
        revision = plan.revision if plan else self.jobs[parent].revision
        supply = plan.supply_serials if plan else self.jobs[parent].supply_serials
        job = SimJob(job_id, part, revision, tuple(self.operations[c] for c in routing), supply, parent)
        self.jobs[job_id] = job
        return job

    # ------------------------------------------------------------------ run
    async def run(self, progress: Callable[[CellSimulation], None] | None = None) -> SimResult:
        loop = asyncio.get_running_loop()
        began = loop.time()
        if self.monitor is not None:
            self.monitor.start()
        try:
            await self._create_jobs()
            links = [p.link for p in self.plcs.values()] + [self.operator.link]
            await asyncio.gather(*(link.client() for link in links))
            self.clock.restart()  # the day starts when every PLC is connected and the jobs are released
            for station in self.config.stations:
                if station.kind == "inspection" or station.kind == "manual":
                    self.inspection.setdefault(station.groups[0], WorkQueue())
            for pallet in self.pallets.values():
                await self.queues[self.load_group].put(pallet)
            workers = [self._spawn_worker(s) for s in self.config.stations]
            self._schedule_faults()
            end = self.horizon
            while self.clock.elapsed() < end and not self._finish.is_set():
                failed = [w for w in workers if w.done() and w.exception() is not None]
                if failed:
                    raise failed[0].exception()  # type: ignore[misc]
                if progress is not None:
                    progress(self)
                with suppress(TimeoutError):
                    async with asyncio.timeout(min(0.2, max(0.0, self.clock.wall_seconds(end - self.clock.elapsed())))):
                        await self._finish.wait()
            self.stop.set()
            for queue in self.queues.values():
                await queue.wake_all()
            for scans in self.inspection.values():
                await scans.wake_all()
            for task in list(self._background):
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)
            results = await asyncio.gather(*workers, *self._helpers, return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise errors[0]
            if progress is not None:
                progress(self)
            for job_id in self.jobs:
                counts = await self.planner.job_counts(job_id)
                if counts is not None:  # a job that left the address space is reconciled from the database
                    self.gateway_jobs[job_id] = counts
        finally:
            self.stop.set()
            for task in [*self._background, *self._helpers]:
                task.cancel()
            await asyncio.gather(*self._background, *self._helpers, return_exceptions=True)
            if self.monitor is not None:
                await self.monitor.stop()
            await self._close_links()
        self.wall_seconds = loop.time() - began
        events = self.monitor.events if self.monitor is not None else None
        if events is not None:
            for ack in self.ledger.acks:
                if not ack.ok:
                    ack.reason = events.rejections.get(ack.key, "")
        return SimResult(
            run_id=self.run_id,
            seed=self.seed,
            faults=self.faults,
            hours=self.hours,
            simulated_seconds=self.clock.elapsed(),
            wall_seconds=self.wall_seconds,
            ledger=self.ledger,
            jobs=self.jobs,
            units=self.units,
            stations=self.stats,
            gateway_jobs=self.gateway_jobs,
            monitor_rejections=events.rejection_reasons if events else Counter(),
            monitor_anomalies=events.anomalies if events else Counter(),
            fault_log=self.fault_log,
            restarts=self.restarts,
            held_seconds=self.clock.held_seconds,
            reconnects=sum(max(0, p.link.connects - 1) for p in [*self.plcs.values(), self.operator]),
        )

    def finish(self) -> None:
        """End the run now (as if the period were over): stations finish their visit and stop."""
        self._finish.set()

    @property
    def acknowledged(self) -> int:
        return len(self.ledger.acks)

    async def _close_links(self) -> None:
        links = [p.link for p in self.plcs.values()] + [self.operator.link, self.planner.link]
        await asyncio.gather(*(link.drop() for link in links), return_exceptions=True)

    def _spawn_worker(self, station: Station) -> asyncio.Task[None]:
        match station.kind:
            case "load":
                coro = self._load_station(station)
            case "machine" | "wash":
                coro = self._cycle_station(station)
            case _:
                coro = self._scan_station(station)
        return asyncio.create_task(coro, name=f"sim-{station.id}")

    def _later(self, coro: Awaitable[Any]) -> None:
        """Simulation-only work (transport, parking, fault timers): cancelled at the end, never mid-report."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _helper(self, coro: Awaitable[Any]) -> None:
        """Work that reports (rework splits): awaited at the end, never cancelled."""
        task = asyncio.ensure_future(coro)
        self._helpers.add(task)

    # ------------------------------------------------------------------ units and pallets
    def next_step(self, unit: SimUnit) -> OpStep | None:
        routing = self.jobs[unit.job].routing
        return routing[unit.next_step] if unit.next_step < len(routing) else None

    def _pass(self, unit: SimUnit, station: str, passed: bool) -> None:
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

    def _live(self, pallet: SimPallet) -> list[SimUnit]:
        return [self.units[s] for s in pallet.units if self.units[s].live]

    def _destination(self, pallet: SimPallet) -> str | None:
        live = self._live(pallet)
        if not live:
            return None
        step = self.next_step(live[0])
        if step is None or step.kind in OFF_PALLET_KINDS:
            return self.load_group  # to be unloaded
        return step.group

    def _dispatch(self, pallet: SimPallet, rng: random.Random) -> None:
        pallet.units = [s for s in pallet.units if self.units[s].live]
        group = self._destination(pallet)
        if group is None:
            self._later(self._park(pallet))
        else:
            self._later(self._move(pallet, group, self.vary(rng, self.timing.transport_seconds)))

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

    def _to_off_pallet_step(self, unit: SimUnit) -> None:
        step = self.next_step(unit)
        if step is None:
            return
        queue = self.inspection.get(step.group)
        if step.kind in OFF_PALLET_KINDS and queue is not None:
            self._later(queue.put(unit.serial))
        else:
            self.ledger.problem(f"{unit.serial} left its pallet needing {step.operation}, which no scan station serves")

    def _new_serials(self, job: SimJob, count: int) -> list[str]:
        if not job.supply_serials:
            return []
        serials = []
        for _ in range(count):
            self._serials += 1
            serials.append(f"{job.part}-{self.run_id}-{self._serials:04d}")
        return serials

    async def _work(self, station: str, seconds: float) -> None:
        self.stats[station].busy += seconds
        await self.clock.sleep(seconds)

    def _delay(self, rng: random.Random) -> float:
        if Fault.DELAY in self.faults and rng.random() < self.rates.delay:
            low, high = self.timing.operator_delay_seconds
            return rng.uniform(low, high)
        return 0.0

    # ------------------------------------------------------------------ load stations
    async def _arrivals(self, station: Station) -> AsyncIterator[SimPallet]:
        """The pallets that come to this station, one visit each, until the simulation stops."""
        queue = self.queues[station.groups[0]]
        while (pallet := await queue.take(self.stop)) is not None:
            self.stats[station.id].visits += 1
            yield pallet

    async def _load_station(self, station: Station) -> None:
        plc = self.plcs[station.id]
        rng = self._station_rng(station.id)
        async for pallet in self._arrivals(station):
            await self._load_visit(station, plc, pallet, rng)

    async def _instruction(self, plc: Plc, station: str, pallet: str, done: set[str]) -> dict[str, Any]:
        """The LoadInstruction for this pallet, once it no longer lists units already unloaded."""

        def fits(value: Any) -> bool:
            if not value:
                return False
            data = json.loads(value)
            return bool(data.get("pallet") == pallet and not done & {u["serial"] for u in data["unload"]})

        value = await plc.wait_for(f"Cell/Stations/{station}/LoadInstruction", fits)
        if not fits(value):
            raise SimulationError(f"{station}: no LoadInstruction for {pallet} (last: {value!r})")
        found: dict[str, Any] = json.loads(value)
        return found

    async def _load_visit(self, station: Station, plc: Plc, pallet: SimPallet, rng: random.Random) -> None:
        await plc.report("PalletArrived", pallet=pallet.id)
        instruction = await self._instruction(plc, station.id, pallet.id, set())
        unload = [u["serial"] for u in instruction["unload"]]
        expected = sorted(
            u.serial for u in self._live(pallet) if (s := self.next_step(u)) and s.group in station.groups
        )
        if sorted(unload) != expected:
            self.ledger.problem(
                f"{station.id}: instruction unloads {sorted(unload)} from {pallet.id}, expected {expected}"
            )
        load = instruction["load"]
        labor = sum(s.seconds for u in unload if u in self.units and (s := self.next_step(self.units[u])) is not None)
        if load is not None:
            job = self.jobs.get(load["job"])
            labor += (job.routing[0].seconds if job else self.timing.default_operation_seconds) * load["quantity"]
        await self._work(station.id, self.vary(rng, labor) + self._delay(rng))

        if load is not None and load["job"] in self.jobs:
            loaded = await self._load_completed(station, plc, pallet, unload, load)
            if not loaded and unload:  # the load part was refused: report the unload alone (new EventId)
                await self._load_completed(station, plc, pallet, unload, None)
            if not loaded:  # the offer went to someone else: ask again for what the pallet may take now
                again = await self._instruction(plc, station.id, pallet.id, set(unload))
                if again["load"] is not None and again["load"]["job"] in self.jobs:
                    await self._load_completed(station, plc, pallet, [], again["load"])
        elif load is not None:
            self.ledger.problem(f"{station.id}: instruction offers unknown job {load['job']}")
            if unload:
                await self._load_completed(station, plc, pallet, unload, None)
        elif unload:
            await self._load_completed(station, plc, pallet, unload, None)
        await plc.report("PalletDeparted", pallet=pallet.id)
        self._dispatch(pallet, rng)

    async def _load_completed(
        self, station: Station, plc: Plc, pallet: SimPallet, unload: list[str], load: dict[str, Any] | None
    ) -> bool:
        job = self.jobs[load["job"]] if load else None
        quantity = int(load["quantity"]) if load else 0
        supplied = self._new_serials(job, quantity) if job else []
        ack = await plc.report(
            "LoadCompleted",
            pallet=pallet.id,
            job=job.id if job else "",
            quantity=quantity,
            serials=supplied,
        )
        if not ack.ok:
            if job is None:
                self.ledger.problem(f"{station.id}: unload of {pallet.id} refused ({ack.status})")
            return False
        for serial in unload:
            unit = self.units.get(serial)
            if unit is None or not unit.live:
                continue
            self._pass(unit, station.id, True)
            pallet.units.remove(serial)
            if unit.live:
                self._to_off_pallet_step(unit)
        if job is not None:
            serials = list(ack.outputs[0]) if ack.outputs else []
            if len(serials) != quantity:
                self.ledger.problem(f"{station.id}: load of {quantity} answered with serials {serials}")
            for serial in serials:
                unit = SimUnit(serial, job.id, next_step=0)
                self.units[serial] = unit
                self._pass(unit, station.id, True)
                pallet.units.append(serial)
        return True

    # ------------------------------------------------------------------ machines and wash
    async def _cycle_station(self, station: Station) -> None:
        plc = self.plcs[station.id]
        rng = self._station_rng(station.id)
        async for pallet in self._arrivals(station):
            # Tag stations keep working across a gateway restart: it restores their tag state.
            repair = await self._cycle_visit(station, plc, pallet, rng)
            if repair:
                self.stats[station.id].down += repair
                await self.clock.sleep(repair)

    async def _cycle_visit(self, station: Station, plc: Plc, pallet: SimPallet, rng: random.Random) -> float:
        """One pallet at a machine or washer; returns the repair time if it broke down."""
        tags = isinstance(plc, TagPlc)
        stats = self.stats[station.id]
        if isinstance(plc, TagPlc):
            await plc.set_tags(("PalletArrived",), PalletPresent=pallet.id)
        else:
            await plc.report("PalletArrived", pallet=pallet.id)
        units = self._live(pallet)
        steps = [self.next_step(u) for u in units]
        nominal = sum(s.seconds for s in steps if s is not None)
        planned = steps[0].program if steps and steps[0] is not None else ""
        program = await plc.wait_for(f"Cell/Stations/{station.id}/ExpectedProgram", bool, within=5.0)
        if program != planned:
            self.ledger.problem(f"{station.id}: ExpectedProgram {program!r} for {pallet.id}, routing says {planned!r}")
            program = program or planned

        if isinstance(plc, TagPlc):
            await plc.set_tags(("CycleStarted",), Program=program, CycleActive=True)
            state = await plc.wait_for(f"Cell/Stations/{station.id}/State", lambda v: v == "running", within=5.0)
            started = state == "running"
        else:
            started = (await plc.report("CycleStarted", pallet=pallet.id, program=program)).ok
        if not started:
            self.ledger.problem(f"{station.id}: cycle start of {pallet.id} ({program}) refused")
            await self._depart(plc, pallet)
            self._later(self._retry_later(pallet, station.groups[0]))
            return 0.0

        duration = self.vary(rng, nominal)
        breakdown = not tags and Fault.BREAKDOWN in self.faults and rng.random() < self.rates.breakdown
        fail = not tags and not breakdown and Fault.SCRAP in self.faults and rng.random() < self.rates.cycle_fail
        repair = 0.0
        if breakdown:
            await self._work(station.id, duration * rng.uniform(0.2, 0.8))
            await plc.report("CycleEnded", pallet=pallet.id, program=program, result="interrupted")
            result = "interrupted"
            repair = rng.uniform(*self.timing.repair_seconds)
            self.fault_log.append(
                f"{self._hhmm()} {station.id} broke down mid-cycle ({pallet.id}), repair {repair / 60:.0f} min"
            )
        else:
            await self._work(station.id, duration)
            result = "fail" if fail else "ok"
            if isinstance(plc, TagPlc):
                await plc.set_tags(("CycleEnded",), droppable=True, CycleActive=False)
            else:
                await plc.report("CycleEnded", pallet=pallet.id, program=program, result=result)
        stats.results[result] += 1
        for unit in units:
            self._pass(unit, station.id, result == "ok")
        if fail:
            for unit in units:  # the operator takes the bad parts off the pallet
                if (await self.operator.report("Scrap", method="Scrap", serial=unit.serial, reason="machining")).ok:
                    unit.status = "scrapped"
            self.fault_log.append(
                f"{self._hhmm()} {station.id} cycle failed on {pallet.id}: {len(units)} unit(s) scrapped"
            )
        await self._depart(plc, pallet)
        self._dispatch(pallet, rng)
        return repair

    async def _depart(self, plc: Plc, pallet: SimPallet) -> None:
        if isinstance(plc, TagPlc):
            await plc.set_tags(("PalletDeparted",), PalletPresent="")
        else:
            await plc.report("PalletDeparted", pallet=pallet.id)

    async def _retry_later(self, pallet: SimPallet, group: str) -> None:
        await self.clock.sleep(3600)
        await self.queues[group].put(pallet)

    # ------------------------------------------------------------------ inspection
    async def _scan_station(self, station: Station) -> None:
        plc = self.plcs[station.id]
        rng = self._station_rng(station.id)
        queue = self.inspection.setdefault(station.groups[0], WorkQueue())
        while True:
            serial = await queue.take(self.stop)
            if serial is None:
                return
            self.stats[station.id].visits += 1
            await self._inspect(station, plc, serial, rng, queue)

    async def _inspect(
        self, station: Station, plc: Plc, serial: str, rng: random.Random, queue: WorkQueue[str]
    ) -> None:
        unit = self.units[serial]
        step = self.next_step(unit)
        if not unit.live or step is None:
            return
        if not (await plc.report("ScanIn", serial=serial)).ok:
            self.ledger.problem(f"{station.id}: ScanIn of {serial} refused")
            return
        await self._work(station.id, self.vary(rng, step.seconds) + self._delay(rng))
        failed = Fault.INSPECTION in self.faults and rng.random() < self.rates.inspection_fail
        await plc.report("ScanOut", serial=serial, result="fail" if failed else "pass")
        self.stats[station.id].results["fail" if failed else "pass"] += 1
        self._pass(unit, station.id, not failed)
        if not failed:
            if unit.live:
                self._to_off_pallet_step(unit)
            return
        # The first failed inspection of a run always goes to rework, so that a run with this fault
        # always shows a split; after that the operator decides at random.
        choice = 0.5 if not self._reworked else rng.random()
        if unit.failures >= 2 or self.jobs[unit.job].parent or choice < 0.3:
            if (await self.operator.report("Scrap", method="Scrap", serial=serial, reason="inspection")).ok:
                unit.status = "scrapped"
            self.fault_log.append(f"{self._hhmm()} {serial} failed inspection: scrapped")
        elif choice < 0.7:
            self._reworked += 1
            self._helper(self._rework(unit, queue, rng))
        else:
            self.fault_log.append(f"{self._hhmm()} {serial} failed inspection: inspected again")
            self._later(self._requeue(queue, serial, self.vary(rng, self.timing.transport_seconds)))

    async def _rework(self, unit: SimUnit, queue: WorkQueue[str], rng: random.Random) -> None:
        """Split the unit off to a rework job with the remaining steps, rework it, inspect it again."""
        parent = unit.job
        child = await self.planner.split(parent, [unit.serial])
        if child not in self.jobs:
            await self._learn_job(child, parent=parent)
        unit.job = child
        unit.next_step = 0
        unit.failures = 0
        self.fault_log.append(
            f"{self._hhmm()} {unit.serial} failed inspection: split from {parent} to rework job {child}"
        )
        self._later(self._requeue(queue, unit.serial, rng.uniform(*self.timing.rework_seconds)))

    async def _requeue(self, queue: WorkQueue[str], serial: str, seconds: float) -> None:
        await self.clock.sleep(seconds)
        await queue.put(serial)

    # ------------------------------------------------------------------ faults in time
    def _hhmm(self) -> str:
        seconds = int(self.clock.elapsed())
        return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}"

    def _schedule_faults(self) -> None:
        rng = random.Random(f"{self.seed}:faults")
        stations = sorted(self.plcs)
        if Fault.DISCONNECT in self.faults:
            for _ in range(self.rates.disconnects):
                self._later(self._disconnect(rng.uniform(0.05, 0.9) * self.horizon, rng.choice(stations)))
        if Fault.SKEW in self.faults:
            method_plcs = [s for s in stations if not isinstance(self.plcs[s], TagPlc)]
            for _ in range(self.rates.skews):
                self._later(self._skew(rng.uniform(0.05, 0.9) * self.horizon, rng.choice(method_plcs), rng))
        for fault, kill in ((Fault.RESTART, False), (Fault.CRASH, True)):
            if fault in self.faults:
                self._later(self._restart(self.rates.restart_at * self.horizon, kill))

    async def _disconnect(self, at: float, station: str) -> None:
        await self.clock.sleep_until(at)
        plc = self.plcs[station]
        plc.faults.offline_until = at + self.rates.disconnect_seconds
        plc.link.abort()
        self.fault_log.append(
            f"{self._hhmm()} PLC {station} disconnected for {self.rates.disconnect_seconds / 60:.0f} min"
        )

    async def _skew(self, at: float, station: str, rng: random.Random) -> None:
        await self.clock.sleep_until(at)
        off = self.tolerance + 3600
        sign = 1 if rng.random() < 0.5 else -1
        self.plcs[station].faults.skew = timedelta(seconds=sign * off)
        self.fault_log.append(
            f"{self._hhmm()} PLC {station}'s clock off by {sign * off / 3600:+.1f} h for "
            f"{self.rates.skew_seconds / 60:.0f} min"
        )
        await self.clock.sleep(self.rates.skew_seconds)
        self.plcs[station].faults.skew = timedelta(0)

    async def _restart(self, at: float, kill: bool) -> None:
        await self.clock.sleep_until(at)
        what = "killed (SIGKILL) and restarted" if kill else "restarted"
        if self.gateway is None:
            self.fault_log.append(f"{self._hhmm()} gateway restart skipped: the simulator did not start the gateway")
            return
        with self.clock.hold():
            await self.gateway.restart(kill=kill)
        self.restarts += 1
        self.fault_log.append(f"{self._hhmm()} gateway {what}")

    # ------------------------------------------------------------------ figures for the progress bar
    def figures(self) -> dict[str, int]:
        started = len(self.units)
        finished = sum(1 for u in self.units.values() if u.status == "finished")
        scrapped = sum(1 for u in self.units.values() if u.status == "scrapped")
        return {
            "reports": len(self.ledger.acks),
            "started": started,
            "finished": finished,
            "scrapped": scrapped,
            "wip": started - finished - scrapped,
        }


def ack_summary(acks: list[Ack]) -> Counter[str]:
    return Counter(a.kind for a in acks)
