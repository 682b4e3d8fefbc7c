"""The named rules for messy reality. Each fires on a fact that is recorded anyway, flagged."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gateway.jobs.model import Unit


class Anomaly(StrEnum):
    END_WITHOUT_START = "EndWithoutStart"  # a cycle/scan end with no recorded start: elapsed unknown
    REPEATED_START = "RepeatedStart"  # a cycle start for the pallet already in a cycle there
    REPEATED_ARRIVAL = "RepeatedArrival"  # a pallet reported at the station it is already at
    PALLET_MOVED = "PalletMoved"  # a pallet reported where it was not recorded: it moved unseen
    STATION_OCCUPIED = "StationOccupied"  # a pallet arrived where another one was recorded
    DEPARTURE_WITHOUT_ARRIVAL = "DepartureWithoutArrival"
    CYCLE_OPEN_AT_DEPARTURE = "CycleOpenAtDeparture"  # the pallet left mid-cycle: ended as interrupted
    CLOCK_SKEW = "ClockSkew"  # source time outside the tolerance: receipt time used
    IMPLAUSIBLE_DURATION = "ImplausibleDuration"  # negative or absurd elapsed time: not counted
    EMPTY_CYCLE = "EmptyCycle"  # a cycle for a pallet with no units
    UNIT_OFF_ROUTE = "UnitOffRoute"  # a unit taken off a pallet before the step that station serves
    PROGRAM_MISMATCH = "ProgramMismatch"  # a cycle ended with another program than it started with
    UNIT_NOT_IN_WIP = "UnitNotInWip"  # a fact about a unit that is finished or scrapped
    STATION_MISMATCH = "StationMismatch"  # a scan out at another station than the scan in
    HELD_NOT_MOVED = "HeldNotMoved"  # a step's end for a unit of a held job that had not begun it


@dataclass(frozen=True, slots=True)
class Flag:
    """One anomaly that fired, with a sentence for the person reading the log or the event."""

    anomaly: Anomaly
    message: str
    serial: str = ""
    pallet: str = ""
    job: str = ""

    def to_json(self) -> dict[str, str]:
        return {
            "anomaly": self.anomaly.value,
            "message": self.message,
            "serial": self.serial,
            "pallet": self.pallet,
            "job": self.job,
        }

    @classmethod
    def from_json(cls, data: dict[str, str]) -> Flag:
        return cls(
            Anomaly(data["anomaly"]),
            data["message"],
            data.get("serial", ""),
            data.get("pallet", ""),
            data.get("job", ""),
        )


def held_flag(unit: Unit, what: str) -> Flag:
    """``what`` happened to a unit whose job is on hold and which had not begun the step: it stays put."""
    return Flag(
        Anomaly.HELD_NOT_MOVED,
        f"{what} for {unit.serial}, whose job {unit.job_id} is on hold and which had not begun the "
        "step: recorded, the unit does not move until the hold is released",
        serial=unit.serial,
        job=unit.job_id,
    )
