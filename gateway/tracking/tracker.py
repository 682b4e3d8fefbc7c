"""The CellTracker: pallets, stations and cycles, turned into unit scans through the JobBook.

One method, :meth:`CellTracker.apply`, takes a cell event and either raises ``Refused`` having changed
nothing, or applies it whole and returns its :class:`Outcome` (the method's outputs and the anomalies
that fired). New transactions (LoadCompleted, CycleStarted, StartUnit, ScanIn) are checked in full
before anything changes; facts (pallet movements, CycleEnded, ScanOut) are always recorded, flagged
where they break a rule. The rules are written down in docs/tracking.md.

This module is the tracking package's public face; the work is done in its rooms: the pallets and
stations with their movements and machine cycles (:mod:`~gateway.tracking.floor`), the load station
(:mod:`~gateway.tracking.loading`), manual and scan stations (:mod:`~gateway.tracking.scans`), the
serial counter (:mod:`~gateway.tracking.serials`) and the times (:mod:`~gateway.tracking.timing`).
:class:`TrackingRules` lives in :mod:`gateway.tracking.rules` and is imported from here too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.errors import Reason, Refused
from gateway.jobs.book import JobBook
from gateway.jobs.model import Job
from gateway.tracking import loading, scans
from gateway.tracking.anomalies import Flag
from gateway.tracking.floor import Floor
from gateway.tracking.reports import (
    CycleEnded,
    CycleStarted,
    LoadCompleted,
    PalletArrived,
    PalletDeparted,
    Report,
    ScanIn,
    ScanOut,
    Scrap,
    StartUnit,
)
from gateway.tracking.rules import TrackingRules
from gateway.tracking.serials import SerialCounter
from gateway.tracking.timing import effective_time

__all__ = ["CellTracker", "Outcome", "TrackingChanges", "TrackingRules"]


@dataclass(frozen=True, slots=True)
class Outcome:
    outputs: dict[str, Any]
    flags: tuple[Flag, ...]
    at: datetime  # the time the event was applied at (source time, or receipt time when off)


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
        self.floor = Floor(book, self.rules)
        self.pallets = self.floor.pallets
        self.stations = self.floor.stations
        self.serial_counter = SerialCounter(self.rules)

    @property
    def serial_seq(self) -> int:
        """Where the serial counter stands (stored, and set again when the model is loaded)."""
        return self.serial_counter.seq

    @serial_seq.setter
    def serial_seq(self, seq: int) -> None:
        self.serial_counter.seq = seq

    def drain(self) -> TrackingChanges:
        """Hand over what changed since the last drain (the writer saves it) and start afresh."""
        pallets, stations = self.floor.drain()
        return TrackingChanges(pallets, stations, self.serial_counter.seq)

    # ------------------------------------------------------------------ entry point
    def apply(self, report: Report, received_at: datetime) -> Outcome:
        if report.station not in self.stations and not isinstance(report, Scrap):
            raise Refused(Reason.NOT_FOUND, f"station {report.station!r} is not configured in this cell")
        at, flags = effective_time(report, received_at, self.rules.source_time_tolerance)
        outputs: dict[str, Any] = {}
        match report:
            case PalletArrived():
                self.floor.arrived(report, at, flags)
            case PalletDeparted():
                self.floor.departed(report, at, flags)
            case LoadCompleted():
                outputs["Serials"] = loading.load_completed(self.floor, self.serial_counter, report, at, flags)
            case CycleStarted():
                self.floor.cycle_started(report, at, flags)
            case CycleEnded():
                self.floor.cycle_ended(report, at, flags)
            case StartUnit():
                outputs["Serial"] = scans.start_unit(self.book, self.serial_counter, report, at)
            case ScanIn():
                self.book.enter_step(report.serial, report.station, at)
            case ScanOut():
                scans.scan_out(self.floor, report, at, flags)
            case Scrap():
                scans.scrap(self.floor, report, at)
        return Outcome(outputs, tuple(flags), at)

    # ------------------------------------------------------------------ the serial counter
    def serial_for(self, seq: int) -> str:
        """The serial the cell generates for counter value ``seq``."""
        return self.serial_counter.serial_for(seq)

    def generated_prefix(self) -> str:
        """The text every generated serial starts with (the format's text before the counter)."""
        return self.serial_counter.generated_prefix()

    def may_generate(self, serial: str) -> bool:
        """Whether the counter has yet to pass ``serial`` (:meth:`SerialCounter.may_generate
        <gateway.tracking.serials.SerialCounter.may_generate>`)."""
        return self.serial_counter.may_generate(serial)

    # ------------------------------------------------------------------ what stations should do next
    def load_instruction(self, station_id: str, candidates: Sequence[Job] | None = None) -> dict[str, Any] | None:
        """For the pallet at a load station: what to unload, what stays on, and which job to load next.

        ``candidates``: :meth:`load_candidates`, when the caller has them already (one list serves
        every station of a batch)."""
        return loading.load_instruction(self.floor, station_id, candidates)

    def loadable_jobs(self, station_id: str, pallet_id: str, candidates: Sequence[Job] | None = None) -> list[Job]:
        """Jobs whose next new unit may be loaded here: by priority, then due date, then id."""
        return loading.loadable_jobs(self.floor, station_id, pallet_id, candidates)

    def load_candidates(self, jobs: Iterable[Job] | None = None) -> list[Job]:
        """The jobs (of ``jobs``, or all open ones) a new unit may start in, in the order they are
        offered: by priority, then due date, then id."""
        return loading.load_candidates(self.book, jobs)

    def expected_program(self, station_id: str) -> str:
        """For a machine: the program of the step the units on its pallet need next."""
        return self.floor.expected_program(station_id)

    def instruction_json(self, station_id: str, candidates: Sequence[Job] | None = None) -> str:
        return loading.instruction_json(self.floor, station_id, candidates)
