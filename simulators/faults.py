"""The faults a run injects beyond the station kinds' own (breakdowns, failed cycles and inspections,
operator delays): the rates every PLC draws from (a report sent twice, an answer lost, a tag write
dropped), and the timed ones, drawn from the run's seed: a PLC disconnected, a PLC's clock off, the
gateway restarted or killed.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import timedelta
from typing import Protocol

from simulators.floor import Floor
from simulators.plc import Plc, PlcFaults, TagPlc
from simulators.scenario import Fault, FaultRates


class GatewayControl(Protocol):
    """What the simulation needs to restart the gateway it runs against (fault restart / crash)."""

    async def restart(self, *, kill: bool = False) -> None: ...


def configure_plc_faults(plcs: Iterable[Plc], on: frozenset[Fault], rates: FaultRates) -> None:
    for plc in plcs:
        plc.faults = PlcFaults(
            duplicate=rates.duplicate if Fault.DUPLICATE in on else 0.0,
            retry=rates.retry if Fault.RETRY in on else 0.0,
            tagdrop=rates.tagdrop if Fault.TAGDROP in on else 0.0,
        )


class FaultSchedule:
    """The timed faults of one run: each waits for its moment as background work of the floor."""

    def __init__(
        self,
        floor: Floor,
        plcs: dict[str, Plc],
        *,
        seed: int,
        horizon: float,
        tolerance: float,
        gateway: GatewayControl | None,
    ) -> None:
        self.floor = floor
        self.plcs = plcs
        self.seed = seed
        self.horizon = horizon
        self.tolerance = tolerance
        self.gateway = gateway
        self.faults = floor.faults
        self.rates = floor.rates
        self.clock = floor.clock
        self.fault_log = floor.fault_log
        self.restarts = 0

    def schedule(self) -> None:
        rng = random.Random(f"{self.seed}:faults")
        stations = sorted(self.plcs)
        if Fault.DISCONNECT in self.faults:
            for _ in range(self.rates.disconnects):
                self.floor.later(self._disconnect(rng.uniform(0.05, 0.9) * self.horizon, rng.choice(stations)))
        if Fault.SKEW in self.faults:
            method_plcs = [s for s in stations if not isinstance(self.plcs[s], TagPlc)]
            for _ in range(self.rates.skews):
                self.floor.later(self._skew(rng.uniform(0.05, 0.9) * self.horizon, rng.choice(method_plcs), rng))
        for fault, kill in ((Fault.RESTART, False), (Fault.CRASH, True)):
            if fault in self.faults:
                self.floor.later(self._restart(self.rates.restart_at * self.horizon, kill))

    async def _disconnect(self, at: float, station: str) -> None:
        await self.clock.sleep_until(at)
        plc = self.plcs[station]
        plc.faults.offline_until = at + self.rates.disconnect_seconds
        plc.link.abort()
        self.fault_log.append(
            f"{self.floor.hhmm()} PLC {station} disconnected for {self.rates.disconnect_seconds / 60:.0f} min"
        )

    async def _skew(self, at: float, station: str, rng: random.Random) -> None:
        await self.clock.sleep_until(at)
        off = self.tolerance + 3600
        sign = 1 if rng.random() < 0.5 else -1
        self.plcs[station].faults.skew = timedelta(seconds=sign * off)
        self.fault_log.append(
            f"{self.floor.hhmm()} PLC {station}'s clock off by {sign * off / 3600:+.1f} h for "
            f"{self.rates.skew_seconds / 60:.0f} min"
        )
        await self.clock.sleep(self.rates.skew_seconds)
        self.plcs[station].faults.skew = timedelta(0)

    async def _restart(self, at: float, kill: bool) -> None:
        await self.clock.sleep_until(at)
        what = "killed (SIGKILL) and restarted" if kill else "restarted"
        if self.gateway is None:
            self.fault_log.append(
                f"{self.floor.hhmm()} gateway restart skipped: the simulator did not start the gateway"
            )
            return
        with self.clock.hold():
            await self.gateway.restart(kill=kill)
        self.restarts += 1
        self.fault_log.append(f"{self.floor.hhmm()} gateway {what}")
