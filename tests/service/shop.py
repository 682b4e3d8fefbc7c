"""Finished parts for order tests: units of a released job driven through the demo cell by station reports.

The same reports a PLC sends over OPC UA (PalletArrived, LoadCompleted, CycleStarted/Ended, ScanIn/Out),
submitted to the writer with a manual clock moved by hand, so elapsed times are exact and nothing sleeps.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from gateway.cell.commands import Command
from gateway.clock import ManualClock
from gateway.service.writer import Answer, Writer
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


@dataclass(frozen=True, slots=True)
class Times:
    """Elapsed seconds of each step for one pallet (the demo expects 120, 900, 180, 90, 300)."""

    load: float = 150
    mill: float = 950
    wash: float = 200
    unload: float = 100
    inspect: float = 280


class Shop:
    def __init__(self, writer: Writer, clock: ManualClock, *, first_event_id: int = 1) -> None:
        """``first_event_id``: where the report EventIds count from (after a restart, past the last run's)."""
        self.writer = writer
        self.clock = clock
        self._ids = itertools.count(first_event_id)

    async def ok(self, command: Command, *, after: float = 0) -> Answer:
        if after:
            self.clock.advance(after)
        answer = await self.writer.submit(command, "plc")
        assert answer.ok, f"{command} refused: {answer.reason} {answer.message}"
        return answer

    def _id(self) -> str:
        return f"shop-{next(self._ids)}"

    async def make(
        self, job: str, count: int, *, pallet: str = "P1", per_pallet: int = 2, times: Times = Times()
    ) -> list[str]:
        """Make ``count`` finished units of ``job``: load, mill (M1), wash, unload, inspect (C1)."""
        made: list[str] = []
        while len(made) < count:
            quantity = min(per_pallet, count - len(made))
            await self.ok(PalletArrived("L1", self._id(), None, pallet))
            load = await self.ok(LoadCompleted("L1", self._id(), None, pallet, job, quantity), after=times.load)
            serials: list[str] = list(load.outputs["Serials"])
            await self.ok(PalletDeparted("L1", self._id(), None, pallet), after=5)
            await self.ok(PalletArrived("M1", self._id(), None, pallet), after=30)
            await self.ok(CycleStarted("M1", self._id(), None, pallet, "PRG-MILL-100"))
            await self.ok(CycleEnded("M1", self._id(), None, pallet, "PRG-MILL-100", CycleResult.OK), after=times.mill)
            await self.ok(PalletDeparted("M1", self._id(), None, pallet))
            await self.ok(PalletArrived("W1", self._id(), None, pallet), after=30)
            await self.ok(CycleStarted("W1", self._id(), None, pallet, "PRG-WASH-1"))
            await self.ok(CycleEnded("W1", self._id(), None, pallet, "PRG-WASH-1", CycleResult.OK), after=times.wash)
            await self.ok(PalletDeparted("W1", self._id(), None, pallet))
            await self.ok(PalletArrived("L1", self._id(), None, pallet), after=60)
            await self.ok(LoadCompleted("L1", self._id(), None, pallet, "", 0), after=times.unload)
            await self.ok(PalletDeparted("L1", self._id(), None, pallet), after=5)
            for serial in serials:
                await self.ok(ScanIn("C1", self._id(), None, serial), after=10)
                await self.ok(ScanOut("C1", self._id(), None, serial, ScanResult.PASS), after=times.inspect)
            made.extend(serials)
        return made
