"""The cell floor: where each pallet is and what each station is doing, moved by pallet movements and
machine cycles, with each pallet's time at a station charged to its units.

Pallet movements and cycle ends are facts: always recorded, flagged where they break a rule
(docs/tracking.md). A cycle start is a transaction: checked for every unit on the pallet first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from gateway.errors import Reason, Refused
from gateway.jobs.book import JobBook
from gateway.jobs.model import CostKind, Unit, UnitStatus
from gateway.tracking.anomalies import Anomaly, Flag, held_flag
from gateway.tracking.reports import CycleEnded, CycleResult, CycleStarted, PalletArrived, PalletDeparted
from gateway.tracking.rules import TrackingRules
from gateway.tracking.timing import duration, split_elapsed

INTERRUPTED = "interrupted"
# Which stations' pallet time is a cost, and in which category (station kind -> cost kind).
_VISIT_COST = {"load": CostKind.LABOR, "machine": CostKind.MACHINING, "wash": CostKind.WASH}


@dataclass(slots=True)
class PalletState:
    id: str
    station: str = ""
    arrived_at: datetime | None = None
    # Start of the current labor window at a load station: the arrival, or the previous load report.
    window_start: datetime | None = None
    units: list[str] = field(default_factory=list)


@dataclass(slots=True)
class OpenCycle:
    pallet: str
    program: str
    started_at: datetime
    serials: tuple[str, ...]


@dataclass(slots=True)
class StationState:
    id: str
    pallet: str = ""
    cycle: OpenCycle | None = None
    down: bool = False

    @property
    def state(self) -> str:
        if self.cycle is not None:
            return "running"
        if self.down:
            return "down"
        return "occupied" if self.pallet else "idle"


class Floor:
    """The pallets and stations of the cell, and the ids of those changed since the last :meth:`drain`."""

    def __init__(self, book: JobBook, rules: TrackingRules) -> None:
        self.book = book
        self.rules = rules
        layout = book.layout
        self.pallets = {p: PalletState(p) for p in sorted(layout.pallets)}
        self.stations = {s: StationState(s) for s in layout.stations}
        self._dirty_pallets: set[str] = set()
        self._dirty_stations: set[str] = set()

    def drain(self) -> tuple[frozenset[str], frozenset[str]]:
        """The pallets and the stations changed since the last drain."""
        changes = frozenset(self._dirty_pallets), frozenset(self._dirty_stations)
        self._dirty_pallets.clear()
        self._dirty_stations.clear()
        return changes

    # ------------------------------------------------------------------ helpers
    def pallet(self, pallet_id: str) -> PalletState:
        try:
            return self.pallets[pallet_id]
        except KeyError:
            raise Refused(Reason.NOT_FOUND, f"pallet {pallet_id!r} is not configured in this cell") from None

    def touch(self, *, pallets: Sequence[str] = (), stations: Sequence[str] = ()) -> None:
        self._dirty_pallets.update(p for p in pallets if p)
        self._dirty_stations.update(s for s in stations if s)

    def duration(self, start: datetime | None, end: datetime, what: str, flags: list[Flag]) -> float | None:
        return duration(start, end, what, flags, self.rules.max_plausible)

    def groups(self, station: str) -> frozenset[str]:
        return self.book.layout.station(station).groups

    def live_units_on(self, pallet: PalletState) -> list[Unit]:
        units = []
        for serial in pallet.units:
            unit = self.book.units.get(serial)
            if unit is not None and unit.live:
                units.append(unit)
        return units

    def place(self, pallet: PalletState, station: str, at: datetime, flags: list[Flag], *, arriving: bool) -> None:
        """Record the pallet at the station, reconciling wherever it was recorded before."""
        if pallet.station == station:
            return
        if pallet.station:
            flags.append(
                Flag(
                    Anomaly.PALLET_MOVED,
                    f"pallet {pallet.id} reported at {station} while recorded at {pallet.station}: "
                    f"it moved without a departure report",
                    pallet=pallet.id,
                )
            )
            self._leave(pallet, at, flags, reported=False)
        elif not arriving:
            flags.append(
                Flag(
                    Anomaly.PALLET_MOVED,
                    f"pallet {pallet.id} reported at {station} without an arrival report",
                    pallet=pallet.id,
                )
            )
        here = self.stations[station]
        if here.pallet and here.pallet != pallet.id:
            other = self.pallets[here.pallet]
            flags.append(
                Flag(
                    Anomaly.STATION_OCCUPIED,
                    f"pallet {pallet.id} at {station} where {other.id} was recorded: {other.id} taken as departed",
                    pallet=other.id,
                )
            )
            self._leave(other, at, flags, reported=False)
        pallet.station = station
        pallet.arrived_at = at if arriving else None
        pallet.window_start = at if arriving else None
        here.pallet = pallet.id
        here.down = False
        self.book.touch(pallet.units, station, at)
        self.touch(pallets=[pallet.id], stations=[station])

    def _leave(self, pallet: PalletState, at: datetime, flags: list[Flag], *, reported: bool = True) -> None:
        """The pallet leaves its station; ``reported``: by a departure report (else it was found
        elsewhere, so when it left is not known)."""
        station = self.stations.get(pallet.station)
        if station is not None:
            if station.cycle is not None and station.cycle.pallet == pallet.id:
                flags.append(
                    Flag(
                        Anomaly.CYCLE_OPEN_AT_DEPARTURE,
                        f"pallet {pallet.id} left {station.id} during a cycle: the cycle is ended as interrupted",
                        pallet=pallet.id,
                    )
                )
                self._end_cycle(station, station.cycle, at, CycleResult.INTERRUPTED, flags)
            self._charge_visit(pallet, station.id, at, flags, reported=reported)
            if station.pallet == pallet.id:
                station.pallet = ""
            self.touch(stations=[station.id])
        self.book.touch(pallet.units, pallet.station, at)
        pallet.station = ""
        pallet.arrived_at = None
        pallet.window_start = None
        self.touch(pallets=[pallet.id])

    def _charge_visit(
        self, pallet: PalletState, station_id: str, at: datetime, flags: list[Flag], *, reported: bool = True
    ) -> None:
        """The pallet leaves: its time at a load station (since the last load report), a machine or a
        washer (since its arrival) is shared among its units by the expected time of the step each had
        there (seed 001: elapsed labor "is the amount of time a pallet spends at the load station",
        elapsed machining "the amount of time a pallet spends at the machine"). A time that cannot be
        measured (its arrival or its departure not reported) is counted unknown for each unit, never
        invented. A unit that finished during the visit had its share when it finished."""
        self._charge(pallet, station_id, at, flags, self.live_units_on(pallet), reported=reported)

    def _charge(
        self,
        pallet: PalletState,
        station_id: str,
        at: datetime,
        flags: list[Flag],
        charged: Sequence[Unit],
        *,
        reported: bool = True,
    ) -> None:
        """Charge ``charged`` (units on the pallet) their shares of its time at the station until ``at``.

        The shares are taken among the pallet's units the station served (or all of them, if it served
        none): by the expected time of the step each had there."""
        info = self.book.layout.station(station_id)
        kind = _VISIT_COST.get(info.kind)
        if kind is None or not charged:
            return
        serials = {u.serial for u in charged}
        on_pallet = [u for s in pallet.units if (u := self.book.units.get(s)) is not None]
        sharing = [u for u in on_pallet if u.live or u.serial in serials]
        steps = {u.serial: self.book.step_served_last(u, info.groups) for u in sharing}
        if any(steps.values()):
            sharing = [u for u in sharing if steps[u.serial] is not None]
        start = pallet.window_start if kind is CostKind.LABOR else pallet.arrived_at
        what = f"the visit of pallet {pallet.id} at {station_id}"
        elapsed = self.duration(start, at, what, flags) if reported else None
        weights = [step.expected_seconds if (step := steps[u.serial]) else None for u in sharing]
        for unit, share in zip(sharing, split_elapsed(elapsed, weights), strict=True):
            if unit.serial in serials:
                self.book.add_pallet_time(unit.serial, kind, share)

    # ------------------------------------------------------------------ pallet movements (facts)
    def arrived(self, report: PalletArrived, at: datetime, flags: list[Flag]) -> None:
        pallet = self.pallet(report.pallet)
        if pallet.station == report.station:
            flags.append(
                Flag(
                    Anomaly.REPEATED_ARRIVAL,
                    f"pallet {pallet.id} reported arriving at {report.station}, where it is already",
                    pallet=pallet.id,
                )
            )
            return
        self.place(pallet, report.station, at, flags, arriving=True)

    def departed(self, report: PalletDeparted, at: datetime, flags: list[Flag]) -> None:
        pallet = self.pallet(report.pallet)
        if pallet.station != report.station:
            where = f"recorded at {pallet.station}" if pallet.station else "not recorded at any station"
            flags.append(
                Flag(
                    Anomaly.DEPARTURE_WITHOUT_ARRIVAL,
                    f"pallet {pallet.id} reported leaving {report.station} but was {where}",
                    pallet=pallet.id,
                )
            )
        if pallet.station:
            self._leave(pallet, at, flags)

    # ------------------------------------------------------------------ machine cycles
    def cycle_started(self, report: CycleStarted, at: datetime, flags: list[Flag]) -> None:
        pallet = self.pallet(report.pallet)
        station = self.stations[report.station]
        if station.cycle is not None and station.cycle.pallet == pallet.id:
            flags.append(
                Flag(
                    Anomaly.REPEATED_START,
                    f"cycle start for pallet {pallet.id} at {station.id}, which is in a cycle since "
                    f"{station.cycle.started_at.isoformat()}: the first start stands",
                    pallet=pallet.id,
                )
            )
            return
        units = self.live_units_on(pallet)
        for unit in units:  # all or nothing: one refused unit refuses the cycle start
            self.book.check_entry(unit.serial, station.id, report.program)
        if station.cycle is not None:
            flags.append(
                Flag(
                    Anomaly.REPEATED_START,
                    f"cycle start for pallet {pallet.id} at {station.id} while pallet {station.cycle.pallet}'s cycle "
                    "was open: that cycle is ended as interrupted",
                    pallet=station.cycle.pallet,
                )
            )
            self._end_cycle(station, station.cycle, at, CycleResult.INTERRUPTED, flags)
        self.place(pallet, station.id, at, flags, arriving=False)
        if not units:
            flags.append(
                Flag(
                    Anomaly.EMPTY_CYCLE, f"cycle {report.program} started at {station.id} for empty pallet {pallet.id}"
                )
            )
        for unit in units:
            self.book.enter_step(unit.serial, station.id, at, report.program)
        station.cycle = OpenCycle(pallet.id, report.program, at, tuple(u.serial for u in units))
        station.down = False
        self.touch(pallets=[pallet.id], stations=[station.id])

    def cycle_ended(self, report: CycleEnded, at: datetime, flags: list[Flag]) -> None:
        pallet = self.pallet(report.pallet)
        station = self.stations[report.station]
        cycle = station.cycle
        if cycle is not None and cycle.pallet == pallet.id:
            if cycle.program.casefold() != report.program.casefold():
                flags.append(
                    Flag(
                        Anomaly.PROGRAM_MISMATCH,
                        f"cycle at {station.id} started with {cycle.program} and ended with {report.program}",
                        pallet=pallet.id,
                    )
                )
            self._end_cycle(station, cycle, at, report.result, flags)
            return
        flags.append(
            Flag(
                Anomaly.END_WITHOUT_START,
                f"cycle end for pallet {pallet.id} at {station.id} without a recorded start: elapsed time unknown",
                pallet=pallet.id,
            )
        )
        self.place(pallet, station.id, at, flags, arriving=False)
        passed = report.result is CycleResult.OK
        extra = (Anomaly.END_WITHOUT_START.value,) + (
            (INTERRUPTED,) if report.result is CycleResult.INTERRUPTED else ()
        )
        finished: list[Unit] = []
        for unit in self.live_units_on(pallet):
            step = self.book.next_step(unit)
            if unit.status is UnitStatus.WAITING and step is not None and step.group in self.groups(station.id):
                if self.book.movement_held(unit):
                    flags.append(held_flag(unit, f"cycle end at {station.id}"))
                else:
                    self.book.leave_step(unit.serial, station.id, passed, at, None, extra)
                    if not unit.live:  # it passed its last step here
                        finished.append(unit)
        self._charge(pallet, station.id, at, flags, finished)
        station.down = report.result is CycleResult.INTERRUPTED
        self.touch(stations=[station.id])

    def _end_cycle(
        self, station: StationState, cycle: OpenCycle, at: datetime, result: CycleResult, flags: list[Flag]
    ) -> None:
        elapsed = self.duration(cycle.started_at, at, f"the cycle of pallet {cycle.pallet} at {station.id}", flags)
        units = [u for s in cycle.serials if (u := self.book.units.get(s)) is not None]
        units = [u for u in units if u.status is UnitStatus.IN_STEP and u.station == station.id]
        expected = [s.expected_seconds if (s := self.book.next_step(u)) else None for u in units]
        extra = (INTERRUPTED,) if result is CycleResult.INTERRUPTED else ()
        for unit, share in zip(units, split_elapsed(elapsed, expected), strict=True):
            self.book.leave_step(unit.serial, station.id, result is CycleResult.OK, at, share, extra)
        # A unit whose routing ends here is done: its share of the pallet's time so far is its own.
        pallet = self.pallets.get(cycle.pallet)
        if pallet is not None:
            self._charge(pallet, station.id, at, flags, [u for u in units if u.status is UnitStatus.FINISHED])
        station.cycle = None
        station.down = result is CycleResult.INTERRUPTED
        self.touch(stations=[station.id])

    # ------------------------------------------------------------------ what machines should do next
    def expected_program(self, station_id: str) -> str:
        """For a machine: the program of the step the units on its pallet need next."""
        station = self.stations[station_id]
        if not station.pallet:
            return ""
        for serial in self.pallets[station.pallet].units:
            unit = self.book.units.get(serial)
            step = self.book.next_step(unit) if unit is not None and unit.live else None
            if step is not None and step.program:
                return step.program
        return ""
