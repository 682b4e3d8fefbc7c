"""The simulation's own model of the cell: jobs with their routing, units with the steps they
passed and failed at which station, pallets, each station's figures, and the result of a run.

The simulation keeps it from the reports it made, so that afterwards it can be compared with what the
gateway derived (:mod:`simulators.reconcile`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from simulators.ledger import Ledger
from simulators.scenario import Fault

CYCLE_KINDS = ("machine", "wash")
OFF_PALLET_KINDS = ("inspect", "manual")


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
