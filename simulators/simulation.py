"""The simulated cell run against a gateway: pallets, stations and operators, each station driven by
its own virtual PLC, for a simulated period.

Pallets go load -> machine -> wash -> unload (each job's own routing decides), units go to the
inspection station after they leave the pallet. Load stations do what the gateway's LoadInstruction
says; machines run the program of ExpectedProgram (:mod:`simulators.stations`). The floor they share
(:mod:`simulators.floor`) keeps the simulation's own model of every unit, and :class:`SimResult`
hands it over at the end, to be compared with what the gateway derived (:mod:`simulators.reconcile`).

A run: the planner creates and releases the scenario's jobs, every PLC connects, the day starts, every
station works until the period is over (or :meth:`CellSimulation.finish`), the timed faults
(:mod:`simulators.faults`) strike on the way; at the end the jobs' counts are read as the gateway
publishes them.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from gateway.clock import Clock, SystemClock
from gateway.config import CellConfig, Station
from simulators.clock import SimClock
from simulators.faults import FaultSchedule, GatewayControl, configure_plc_faults
from simulators.floor import Floor, WorkQueue
from simulators.ledger import Ledger
from simulators.link import Link
from simulators.model import SimResult
from simulators.planner import Monitor, Planner
from simulators.plc import Plc, TagPlc
from simulators.scenario import Fault, Scenario
from simulators.stations import station_worker


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
        self.stations: dict[str, Station] = {s.id: s for s in config.stations}

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
        self.floor = Floor(
            config,
            scenario,
            clock=clock,
            faults=faults,
            run_id=self.run_id,
            ledger=self.ledger,
            planner=self.planner,
            operator=self.operator,
        )
        configure_plc_faults([*self.plcs.values(), self.operator], faults, scenario.faults)
        self.fault_schedule = FaultSchedule(
            self.floor,
            self.plcs,
            seed=seed,
            horizon=self.horizon,
            tolerance=config.cell.source_time_tolerance_seconds,
            gateway=gateway,
        )
        self.gateway_jobs: dict[str, dict[str, Any]] = {}
        self.wall_seconds = 0.0

    # ------------------------------------------------------------------ run
    async def run(self, progress: Callable[[CellSimulation], None] | None = None) -> SimResult:
        floor = self.floor
        loop = asyncio.get_running_loop()
        began = loop.time()
        if self.monitor is not None:
            self.monitor.start()
        try:
            await floor.create_jobs()
            links = [p.link for p in self.plcs.values()] + [self.operator.link]
            await asyncio.gather(*(link.client() for link in links))
            self.clock.restart()  # the day starts when every PLC is connected and the jobs are released
            for station in self.config.stations:
                if station.kind == "inspection" or station.kind == "manual":
                    floor.inspection.setdefault(station.groups[0], WorkQueue())
            for pallet in floor.pallets.values():
                await floor.queues[floor.load_group].put(pallet)
            workers = [self._spawn_worker(s) for s in self.config.stations]
            self.fault_schedule.schedule()
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
            floor.stop.set()
            for queue in floor.queues.values():
                await queue.wake_all()
            for scans in floor.inspection.values():
                await scans.wake_all()
            for task in list(floor.background):
                task.cancel()
            await asyncio.gather(*floor.background, return_exceptions=True)
            results = await asyncio.gather(*workers, *floor.helpers, return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise errors[0]
            if progress is not None:
                progress(self)
            for job_id in floor.jobs:
                counts = await self.planner.job_counts(job_id)
                if counts is not None:  # a job that left the address space is reconciled from the database
                    self.gateway_jobs[job_id] = counts
        finally:
            floor.stop.set()
            for task in [*floor.background, *floor.helpers]:
                task.cancel()
            await asyncio.gather(*floor.background, *floor.helpers, return_exceptions=True)
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
            jobs=floor.jobs,
            units=floor.units,
            stations=floor.stats,
            gateway_jobs=self.gateway_jobs,
            monitor_rejections=events.rejection_reasons if events else Counter(),
            monitor_anomalies=events.anomalies if events else Counter(),
            fault_log=floor.fault_log,
            restarts=self.fault_schedule.restarts,
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
        coro = station_worker(self.floor, station, self.plcs[station.id])
        return asyncio.create_task(coro, name=f"sim-{station.id}")

    # ------------------------------------------------------------------ figures for the progress bar
    def figures(self) -> dict[str, int]:
        units = self.floor.units
        started = len(units)
        finished = sum(1 for u in units.values() if u.status == "finished")
        scrapped = sum(1 for u in units.values() if u.status == "scrapped")
        return {
            "reports": len(self.ledger.acks),
            "started": started,
            "finished": finished,
            "scrapped": scrapped,
            "wip": started - finished - scrapped,
        }
