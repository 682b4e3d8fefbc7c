"""The CellTracker: pallets, stations and cycles, turned into unit scans through the JobBook.

One method, :meth:`CellTracker.apply`, takes a cell event and either raises ``Refused`` having changed
nothing, or applies it whole and returns its :class:`Outcome` (the method's outputs and the anomalies
that fired). New transactions (LoadCompleted, CycleStarted, StartUnit, ScanIn) are checked in full
before anything changes; facts (pallet movements, CycleEnded, ScanOut) are always recorded, flagged
where they break a rule. The rules are written down in docs/tracking.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.errors import Reason, Refused
from gateway.jobs.book import JobBook
from gateway.jobs.model import CostKind, Job, JobState, Unit, UnitStatus
from gateway.tracking.anomalies import Anomaly, Flag
from gateway.tracking.reports import (
    CycleEnded,
    CycleResult,
    CycleStarted,
    LoadCompleted,
    PalletArrived,
    PalletDeparted,
    Report,
    ScanIn,
    ScanOut,
    ScanResult,
    Scrap,
    StartUnit,
)

INTERRUPTED = "interrupted"
# Which stations' pallet time is a cost, and in which category (station kind -> cost kind).
_VISIT_COST = {"load": CostKind.LABOR, "machine": CostKind.MACHINING, "wash": CostKind.WASH}
_PALLET_KINDS = (CostKind.MACHINING, CostKind.WASH)  # measured by the pallet's visit, not by the step
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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


@dataclass(frozen=True, slots=True)
class Outcome:
    outputs: dict[str, Any]
    flags: tuple[Flag, ...]
    at: datetime  # the time the event was applied at (source time, or receipt time when off)


@dataclass(frozen=True, slots=True)
class TrackingRules:
    cell_name: str = "cell"
    serial_format: str = "{cell}-{seq:06d}"
    source_time_tolerance: timedelta = timedelta(minutes=5)
    # Longer than this, a step or cycle is taken for a missed report rather than real work.
    max_plausible: timedelta = timedelta(hours=24)
    units_per_pallet: int = 1


def _counter_values(serial: str) -> set[int]:
    """Every number a run of digits (or letters and digits, for other bases) in ``serial`` could spell."""
    values: set[int] = set()
    for run in _ALNUM_RUN.findall(serial):
        for start in range(len(run)):
            for end in range(start + 1, len(run) + 1):
                for base in (10, 16, 8, 2):
                    try:
                        values.add(int(run[start:end], base))
                    except ValueError:
                        continue
    return values


_ALNUM_RUN = re.compile(r"[0-9A-Za-z]+")


def pallet_overfilled(pallet: str, staying: int, loading: int, capacity: int) -> str | None:
    """Why a load would put more units on a pallet than it holds (``cell.units_per_pallet``), or None.

    ``staying``: the units that stay on the pallet through the unload; ``loading``: the new ones."""
    if staying + loading <= capacity:
        return None
    already = f" with {staying} staying on it" if staying else ""
    return (
        f"loading {loading} unit{'s' if loading != 1 else ''} onto pallet {pallet}{already} would put "
        f"{staying + loading} on it; a pallet holds at most {capacity} (cell.units_per_pallet)"
    )


def is_load_candidate(job: Job) -> bool:
    """Released or running, with ordered units still to start: the load instructions offer it.

    The yield buffer is never offered (extras are unauthorized inventory); it stays the ceiling of an
    operator's deliberate load (:meth:`JobBook.check_new_units`)."""
    return job.state in (JobState.RELEASED, JobState.RUNNING) and job.unstarted > 0


def _load_order(job: Job) -> tuple[int, bool, datetime, str]:
    return (-job.priority, job.due is None, job.due or _EPOCH, job.id)


def split_elapsed(elapsed: float | None, expected: Sequence[float | None]) -> list[float | None]:
    """Share one cycle's elapsed time among its units by expected-time share, by count if any is missing."""
    n = len(expected)
    if elapsed is None or n == 0:
        return [None] * n
    known = [e for e in expected if e is not None]
    total = sum(known)
    if len(known) == n and total > 0:
        return [elapsed * (e or 0.0) / total for e in expected]
    return [elapsed / n] * n


@dataclass(frozen=True, slots=True)
class TrackingChanges:
    """What a :class:`CellTracker` changed since its last :meth:`~CellTracker.drain`: the pallets and
    stations to save, and the serial counter as it stands."""

    pallets: frozenset[str] = frozenset()
    stations: frozenset[str] = frozenset()
    serial_seq: int = 0


class CellTracker:
    def __init__(self, book: JobBook, rules: TrackingRules | None = None) -> None:
        self.book = book
        self.rules = rules or TrackingRules()
        layout = book.layout
        self.pallets = {p: PalletState(p) for p in sorted(layout.pallets)}
        self.stations = {s: StationState(s) for s in layout.stations}
        self.serial_seq = 0
        self.dirty_pallets: set[str] = set()
        self.dirty_stations: set[str] = set()

    def drain(self) -> TrackingChanges:
        """Hand over what changed since the last drain (the writer saves it) and start afresh."""
        changes = TrackingChanges(frozenset(self.dirty_pallets), frozenset(self.dirty_stations), self.serial_seq)
        self.dirty_pallets.clear()
        self.dirty_stations.clear()
        return changes

    # ------------------------------------------------------------------ entry point
    def apply(self, report: Report, received_at: datetime) -> Outcome:
        if report.station not in self.stations and not isinstance(report, Scrap):
            raise Refused(Reason.NOT_FOUND, f"station {report.station!r} is not configured in this cell")
        at, flags = self._effective_time(report, received_at)
        outputs: dict[str, Any] = {}
        match report:
            case PalletArrived():
                self._arrived(report, at, flags)
            case PalletDeparted():
                self._departed(report, at, flags)
            case LoadCompleted():
                outputs["Serials"] = self._load_completed(report, at, flags)
            case CycleStarted():
                self._cycle_started(report, at, flags)
            case CycleEnded():
                self._cycle_ended(report, at, flags)
            case StartUnit():
                outputs["Serial"] = self._start_unit(report, at)
            case ScanIn():
                self.book.enter_step(report.serial, report.station, at)
            case ScanOut():
                self._scan_out(report, at, flags)
            case Scrap():
                self._scrap(report, at)
        return Outcome(outputs, tuple(flags), at)

    def _effective_time(self, report: Report, received_at: datetime) -> tuple[datetime, list[Flag]]:
        if report.source_time is None:
            return received_at, []
        skew = report.source_time - received_at
        if abs(skew) > self.rules.source_time_tolerance:
            return received_at, [
                Flag(
                    Anomaly.CLOCK_SKEW,
                    f"{report.station}'s clock is {skew.total_seconds():+.0f} s off the gateway's "
                    f"(tolerance {self.rules.source_time_tolerance.total_seconds():.0f} s): receipt time used",
                )
            ]
        return report.source_time, []

    # ------------------------------------------------------------------ helpers
    def _pallet(self, pallet_id: str) -> PalletState:
        try:
            return self.pallets[pallet_id]
        except KeyError:
            raise Refused(Reason.NOT_FOUND, f"pallet {pallet_id!r} is not configured in this cell") from None

    def _touch(self, *, pallets: Sequence[str] = (), stations: Sequence[str] = ()) -> None:
        self.dirty_pallets.update(p for p in pallets if p)
        self.dirty_stations.update(s for s in stations if s)

    def _duration(self, start: datetime | None, end: datetime, what: str, flags: list[Flag]) -> float | None:
        if start is None:
            return None
        seconds = (end - start).total_seconds()
        if seconds < 0 or seconds > self.rules.max_plausible.total_seconds():
            flags.append(
                Flag(
                    Anomaly.IMPLAUSIBLE_DURATION,
                    f"{what} lasted {seconds:.0f} s by the reported times: not counted as elapsed time",
                )
            )
            return None
        return seconds

    def _place(self, pallet: PalletState, station: str, at: datetime, flags: list[Flag], *, arriving: bool) -> None:
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
        self._touch(pallets=[pallet.id], stations=[station])

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
            self._touch(stations=[station.id])
        self.book.touch(pallet.units, pallet.station, at)
        pallet.station = ""
        pallet.arrived_at = None
        pallet.window_start = None
        self._touch(pallets=[pallet.id])

    def _charge_visit(
        self, pallet: PalletState, station_id: str, at: datetime, flags: list[Flag], *, reported: bool = True
    ) -> None:
        """The pallet leaves: its time at a load station (since the last load report), a machine or a
        washer (since its arrival) is shared among its units by the expected time of the step each had
        there (seed 001: elapsed labor "is the amount of time a pallet spends at the load station",
        elapsed machining "the amount of time a pallet spends at the machine"). A time that cannot be
        measured (its arrival or its departure not reported) is counted unknown for each unit, never
        invented. A unit that finished during the visit had its share when it finished."""
        self._charge(pallet, station_id, at, flags, self._live_units_on(pallet), reported=reported)

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
        elapsed = self._duration(start, at, what, flags) if reported else None
        weights = [step.expected_seconds if (step := steps[u.serial]) else None for u in sharing]
        for unit, share in zip(sharing, split_elapsed(elapsed, weights), strict=True):
            if unit.serial in serials:
                self.book.add_pallet_time(unit.serial, kind, share)

    def _live_units_on(self, pallet: PalletState) -> list[Unit]:
        units = []
        for serial in pallet.units:
            unit = self.book.units.get(serial)
            if unit is not None and unit.live:
                units.append(unit)
        return units

    def _new_serial(self, taken: set[str]) -> str:
        while True:
            self.serial_seq += 1
            serial = self.serial_for(self.serial_seq)
            if serial not in self.book.units and serial not in taken:
                return serial

    def serial_for(self, seq: int) -> str:
        """The serial the cell generates for counter value ``seq``."""
        return self.rules.serial_format.format(cell=self.rules.cell_name, seq=seq)

    def generated_prefix(self) -> str:
        """The text every generated serial starts with (the format's text before the counter)."""
        first, *others = (self.serial_for(n) for n in (0, 1, 2**31 - 1, 10**15 + 1))
        length = len(first)
        for other in others:
            length = next((i for i, (a, b) in enumerate(zip(first, other, strict=False)) if a != b), length)
            length = min(length, len(other))
        return first[:length]

    def may_generate(self, serial: str) -> bool:
        """Whether the counter has yet to pass ``serial``: it has the generated form for a value above
        the counter. Such a serial (given by hand) is skipped when the counter reaches it, so a unit
        carrying it stays in memory until then (see :meth:`CellModel.retire`).

        A cheap test first: a counter value rendered in any base grows in length, and among renderings
        of one length in text order (for the formats this cell accepts); then the exact one.
        """
        current = self.serial_for(self.serial_seq)
        if not serial.startswith(self.generated_prefix()):
            return False
        if len(serial) < len(current) or (len(serial) == len(current) and serial <= current):
            return False
        return any(value > self.serial_seq and self.serial_for(value) == serial for value in _counter_values(serial))

    # ------------------------------------------------------------------ pallet movements (facts)
    def _arrived(self, report: PalletArrived, at: datetime, flags: list[Flag]) -> None:
        pallet = self._pallet(report.pallet)
        if pallet.station == report.station:
            flags.append(
                Flag(
                    Anomaly.REPEATED_ARRIVAL,
                    f"pallet {pallet.id} reported arriving at {report.station}, where it is already",
                    pallet=pallet.id,
                )
            )
            return
        self._place(pallet, report.station, at, flags, arriving=True)

    def _departed(self, report: PalletDeparted, at: datetime, flags: list[Flag]) -> None:
        pallet = self._pallet(report.pallet)
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

    # ------------------------------------------------------------------ load station
    def _load_completed(self, report: LoadCompleted, at: datetime, flags: list[Flag]) -> list[str]:
        station = self.book.layout.station(report.station)
        pallet = self._pallet(report.pallet)
        if station.kind != "load":
            raise Refused(
                Reason.WRONG_RESOURCE,
                f"{report.station} is a {station.kind} station; loads are reported at load stations",
            )
        # The load part is checked whole before anything (the unload included) is applied.
        serials: list[str] = []
        job: Job | None = None
        if report.job:
            if report.quantity < 1:
                raise Refused(Reason.INVALID_ARGUMENT, "a load of a job needs a quantity of at least 1")
            if report.serials and len(report.serials) != report.quantity:
                raise Refused(
                    Reason.INVALID_ARGUMENT,
                    f"{len(report.serials)} serials given for a quantity of {report.quantity}",
                )
            job = self.book.check_new_units(report.job, report.station, report.quantity, pallet.id)
            blocked = [u for u in self._live_units_on(pallet) if self.book.movement_held(u)]
            if blocked:
                raise Refused(
                    Reason.JOB_ON_HOLD,
                    f"pallet {pallet.id} carries {blocked[0].serial} of {blocked[0].job_id}, which is on hold: "
                    "nothing is loaded onto it until the hold is released (report the unload alone, with no job)",
                )
            # After the unload only the units of held jobs stay on (and a load onto them is refused above).
            overfilled = pallet_overfilled(pallet.id, len(blocked), report.quantity, self.rules.units_per_pallet)
            if overfilled:
                raise Refused(Reason.INVALID_ARGUMENT, overfilled)
            if report.serials:
                self.book.check_serials_free(report.serials)
                serials = list(report.serials)
        elif report.quantity or report.serials:
            raise Refused(Reason.INVALID_ARGUMENT, "a load without a job must have quantity 0 and no serials")

        if pallet.station != report.station:
            self._place(pallet, report.station, at, flags, arriving=False)
        elapsed = self._duration(pallet.window_start, at, f"the load/unload of pallet {pallet.id}", flags)

        # Unload: each unit on the pallet passes the step this station serves, or comes off flagged;
        # a unit of a held job stays on the pallet, unmoved.
        passing: list[Unit] = []
        held: list[str] = []
        for unit in self._live_units_on(pallet):
            step = self.book.next_step(unit)
            if self.book.movement_held(unit):
                held.append(unit.serial)
                flags.append(self._held_flag(unit, f"unloaded from {pallet.id} at {report.station}"))
            elif unit.status is UnitStatus.WAITING and step is not None and step.group in station.groups:
                passing.append(unit)
            else:
                need = step.operation if step is not None else "nothing"
                flags.append(
                    Flag(
                        Anomaly.UNIT_OFF_ROUTE,
                        f"{unit.serial} unloaded from {pallet.id} at {report.station} while it needs {need} next",
                        serial=unit.serial,
                        pallet=pallet.id,
                        job=unit.job_id,
                    )
                )
        new_count = report.quantity if job is not None else 0
        expected: list[float | None] = [s.expected_seconds for u in passing if (s := self.book.next_step(u))]
        if job is not None:
            expected += [job.routing[0].expected_seconds] * new_count
        shares = split_elapsed(elapsed, expected)
        unknown = () if elapsed is not None else (Anomaly.END_WITHOUT_START.value,)
        for unit, share in zip(passing, shares, strict=False):
            self.book.leave_step(unit.serial, report.station, True, at, share, unknown)
        pallet.units = held

        if job is not None:
            taken: set[str] = set()
            if not serials:
                for _ in range(new_count):
                    serial = self._new_serial(taken)
                    taken.add(serial)
                    serials.append(serial)
            for serial, share in zip(serials, shares[len(passing) :], strict=True):
                self.book.start_unit(job.id, serial, report.station, at)
                self.book.leave_step(serial, report.station, True, at, share, unknown)
                unit = self.book.units[serial]
                if unit.live:
                    pallet.units.append(serial)
        pallet.window_start = at
        self._touch(pallets=[pallet.id], stations=[report.station])
        return serials

    # ------------------------------------------------------------------ machine cycles
    def _cycle_started(self, report: CycleStarted, at: datetime, flags: list[Flag]) -> None:
        pallet = self._pallet(report.pallet)
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
        units = self._live_units_on(pallet)
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
        self._place(pallet, station.id, at, flags, arriving=False)
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
        self._touch(pallets=[pallet.id], stations=[station.id])

    def _cycle_ended(self, report: CycleEnded, at: datetime, flags: list[Flag]) -> None:
        pallet = self._pallet(report.pallet)
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
        self._place(pallet, station.id, at, flags, arriving=False)
        passed = report.result is CycleResult.OK
        extra = (Anomaly.END_WITHOUT_START.value,) + (
            (INTERRUPTED,) if report.result is CycleResult.INTERRUPTED else ()
        )
        finished: list[Unit] = []
        for unit in self._live_units_on(pallet):
            step = self.book.next_step(unit)
            if unit.status is UnitStatus.WAITING and step is not None and step.group in self._groups(station.id):
                if self.book.movement_held(unit):
                    flags.append(self._held_flag(unit, f"cycle end at {station.id}"))
                else:
                    self.book.leave_step(unit.serial, station.id, passed, at, None, extra)
                    if not unit.live:  # it passed its last step here
                        finished.append(unit)
        self._charge(pallet, station.id, at, flags, finished)
        station.down = report.result is CycleResult.INTERRUPTED
        self._touch(stations=[station.id])

    def _held_flag(self, unit: Unit, what: str) -> Flag:
        return Flag(
            Anomaly.HELD_NOT_MOVED,
            f"{what} for {unit.serial}, whose job {unit.job_id} is on hold and which had not begun the "
            "step: recorded, the unit does not move until the hold is released",
            serial=unit.serial,
            job=unit.job_id,
        )

    def _groups(self, station: str) -> frozenset[str]:
        return self.book.layout.station(station).groups

    def _end_cycle(
        self, station: StationState, cycle: OpenCycle, at: datetime, result: CycleResult, flags: list[Flag]
    ) -> None:
        elapsed = self._duration(cycle.started_at, at, f"the cycle of pallet {cycle.pallet} at {station.id}", flags)
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
        self._touch(stations=[station.id])

    # ------------------------------------------------------------------ manual and scan stations
    def _start_unit(self, report: StartUnit, at: datetime) -> str:
        self.book.check_new_units(report.job, report.station)
        serial = report.serial
        if serial:
            self.book.check_serials_free([serial])
        else:
            serial = self._new_serial(set())
        self.book.start_unit(report.job, serial, report.station, at)
        return serial

    def _scan_out(self, report: ScanOut, at: datetime, flags: list[Flag]) -> None:
        unit = self.book.unit(report.serial)
        passed = report.result is ScanResult.PASS
        if not unit.live:
            flags.append(
                Flag(
                    Anomaly.UNIT_NOT_IN_WIP,
                    f"scan out of {unit.serial}, which is {unit.status.value}: recorded, nothing changed",
                    serial=unit.serial,
                    job=unit.job_id,
                )
            )
            return
        extra: tuple[str, ...] = ()
        if unit.status is UnitStatus.IN_STEP:
            elapsed = self._duration(unit.entered_at, at, f"{unit.serial}'s step at {unit.station}", flags)
            if unit.station != report.station:
                flags.append(
                    Flag(
                        Anomaly.STATION_MISMATCH,
                        f"scan out of {unit.serial} at {report.station}, scanned in at {unit.station}: "
                        "the step is closed where it was opened",
                        serial=unit.serial,
                        job=unit.job_id,
                    )
                )
        else:
            elapsed = None
            extra = (Anomaly.END_WITHOUT_START.value,)
            flags.append(
                Flag(
                    Anomaly.END_WITHOUT_START,
                    f"scan out of {unit.serial} at {report.station} without a scan in: elapsed time unknown",
                    serial=unit.serial,
                    job=unit.job_id,
                )
            )
            if self.book.movement_held(unit):
                flags.append(self._held_flag(unit, f"scan out at {report.station}"))
                return
        step = self.book.next_step(unit)
        record = self.book.leave_step(unit.serial, report.station, passed, at, elapsed, extra)
        if record is not None and step is not None and step.kind.cost_kind in _PALLET_KINDS:
            # A machine or wash step done by scans, off a pallet: the unit's own time there counts.
            self.book.add_pallet_time(unit.serial, step.kind.cost_kind, record.elapsed)
        if record is None:
            step = self.book.next_step(unit)
            flags.append(
                Flag(
                    Anomaly.UNIT_OFF_ROUTE,
                    f"scan out of {unit.serial} at {report.station}, which does not serve "
                    f"{step.operation if step else 'its next step'}: recorded, unit not moved",
                    serial=unit.serial,
                    job=unit.job_id,
                )
            )

    def _scrap(self, report: Scrap, at: datetime) -> None:
        unit = self.book.scrap(report.serial, report.reason, at)
        for pallet in self.pallets.values():
            if unit.serial in pallet.units:
                pallet.units.remove(unit.serial)
                self._touch(pallets=[pallet.id])

    # ------------------------------------------------------------------ what stations should do next
    def load_instruction(self, station_id: str, candidates: Sequence[Job] | None = None) -> dict[str, Any] | None:
        """For the pallet at a load station: what to unload, what stays on, and which job to load next.

        ``candidates``: :meth:`load_candidates`, when the caller has them already (one list serves
        every station of a batch)."""
        station = self.stations[station_id]
        if not station.pallet:
            return None
        groups = self._groups(station_id)
        pallet = self.pallets[station.pallet]
        unload: list[dict[str, Any]] = []
        stay: list[dict[str, Any]] = []
        for unit in self._live_units_on(pallet):
            step = self.book.next_step(unit)
            entry: dict[str, Any] = {"serial": unit.serial, "job": unit.job_id, "next": step.operation if step else ""}
            if self.book.movement_held(unit):
                entry["hold"] = True  # its job is on hold: it stays on the pallet until released
                stay.append(entry)
            else:
                (unload if step is not None and step.group in groups else stay).append(entry)
        load = None
        free = self.rules.units_per_pallet - len(stay)
        if any(entry.get("hold") for entry in stay):
            free = 0  # a pallet carrying held units is blocked: nothing new is loaded onto it
        for job in self.loadable_jobs(station_id, pallet.id, candidates) if free > 0 else []:
            load = {
                "job": job.id,
                "part": job.part,
                "revision": job.revision,
                "quantity": min(job.unstarted, free),
                "operation": job.routing[0].operation,
            }
            break
        return {"pallet": pallet.id, "unload": unload, "stay": stay, "load": load}

    def loadable_jobs(self, station_id: str, pallet_id: str, candidates: Sequence[Job] | None = None) -> list[Job]:
        """Jobs whose next new unit may be loaded here: by priority, then due date, then id."""
        groups = self._groups(station_id)
        ordered = self.load_candidates() if candidates is None else candidates
        return [job for job in ordered if job.allows_pallet(pallet_id) and job.routing[0].group in groups]

    def load_candidates(self, jobs: Iterable[Job] | None = None) -> list[Job]:
        """The jobs (of ``jobs``, or all open ones) a new unit may start in, in the order they are
        offered: by priority, then due date, then id."""
        pool = self.book.open_jobs() if jobs is None else jobs
        return sorted((j for j in pool if is_load_candidate(j)), key=_load_order)

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

    def instruction_json(self, station_id: str, candidates: Sequence[Job] | None = None) -> str:
        instruction = self.load_instruction(station_id, candidates)
        return "" if instruction is None else json.dumps(instruction, separators=(",", ":"))
