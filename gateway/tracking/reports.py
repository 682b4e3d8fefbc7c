"""Cell events: what a PLC, HMI or operator reports, one class per OPC UA station method.

A report is well formed by construction (the adapter validates arguments); the domain decides whether
it is accepted. ``station`` and ``event_id`` make it idempotent; ``source_time`` is the PLC's clock
(None: time of receipt).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import ClassVar

CELL_SOURCE = "cell"  # the idempotency scope of cell-wide reports (Units.Scrap)


class CycleResult(StrEnum):
    OK = "ok"
    FAIL = "fail"
    INTERRUPTED = "interrupted"


class ScanResult(StrEnum):
    PASS = "pass"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Report:
    kind: ClassVar[str] = ""
    # Facts are recorded whatever the job's state (a cycle that ends, a pallet that moves).
    fact: ClassVar[bool] = False

    station: str
    event_id: str
    source_time: datetime | None

    @property
    def source(self) -> str:
        """The idempotency scope of the EventId."""
        return self.station


@dataclass(frozen=True, slots=True)
class PalletArrived(Report):
    kind: ClassVar[str] = "PalletArrived"
    fact: ClassVar[bool] = True
    pallet: str


@dataclass(frozen=True, slots=True)
class PalletDeparted(Report):
    kind: ClassVar[str] = "PalletDeparted"
    fact: ClassVar[bool] = True
    pallet: str


@dataclass(frozen=True, slots=True)
class LoadCompleted(Report):
    kind: ClassVar[str] = "LoadCompleted"
    pallet: str
    job: str
    quantity: int
    serials: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CycleStarted(Report):
    kind: ClassVar[str] = "CycleStarted"
    pallet: str
    program: str


@dataclass(frozen=True, slots=True)
class CycleEnded(Report):
    kind: ClassVar[str] = "CycleEnded"
    fact: ClassVar[bool] = True
    pallet: str
    program: str
    result: CycleResult


@dataclass(frozen=True, slots=True)
class StartUnit(Report):
    kind: ClassVar[str] = "StartUnit"
    job: str
    serial: str = ""


@dataclass(frozen=True, slots=True)
class ScanIn(Report):
    kind: ClassVar[str] = "ScanIn"
    serial: str


@dataclass(frozen=True, slots=True)
class ScanOut(Report):
    kind: ClassVar[str] = "ScanOut"
    fact: ClassVar[bool] = True
    serial: str
    result: ScanResult


@dataclass(frozen=True, slots=True)
class Scrap(Report):
    """Units.Scrap: ``station`` is where it was reported from, if known; EventIds are unique per cell."""

    kind: ClassVar[str] = "Scrap"
    serial: str
    reason: str

    @property
    def source(self) -> str:
        return CELL_SOURCE


CellReport = (
    PalletArrived | PalletDeparted | LoadCompleted | CycleStarted | CycleEnded | StartUnit | ScanIn | ScanOut | Scrap
)

REPORT_TYPES: dict[str, type[Report]] = {
    cls.kind: cls
    for cls in (
        PalletArrived,
        PalletDeparted,
        LoadCompleted,
        CycleStarted,
        CycleEnded,
        StartUnit,
        ScanIn,
        ScanOut,
        Scrap,
    )
}
