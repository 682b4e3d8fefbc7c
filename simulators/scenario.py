"""What the simulated cell does: small frozen dataclasses, read from a TOML scenario file.

The cell itself (stations, groups, operations with their expected times, pallets) comes from the
gateway's own config; a scenario adds what only a simulation needs: the jobs the planner creates, how
each station's PLC talks (methods or tags, which account), the spread of times, and how often each
fault strikes when it is switched on. ``simulators/scenarios/demo.toml`` is the default and documents
every key.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

DEFAULT_SCENARIO = Path(__file__).resolve().parent / "scenarios" / "demo.toml"


class Fault(StrEnum):
    """Faults that can be switched on with ``--faults``."""

    BREAKDOWN = "breakdown"  # a machine breaks down mid-cycle (CycleEnded interrupted), is repaired
    SCRAP = "scrap"  # a machine cycle fails; the operator scraps its units
    INSPECTION = "inspection"  # failed inspections: re-inspect, scrap, or split to a rework job
    DELAY = "delay"  # operator delays at load stations and inspection
    DISCONNECT = "disconnect"  # a PLC drops its connection for a while, then reconnects
    DUPLICATE = "duplicate"  # a PLC sends an acknowledged report again (same EventId)
    RETRY = "retry"  # the answer to a report is lost (connection cut after sending): the PLC retries
    TAGDROP = "tagdrop"  # a tag PLC's write never reaches the gateway; the next write carries the state
    SKEW = "skew"  # a PLC's clock is off by more than the gateway's tolerance for a while
    RESTART = "restart"  # the gateway is restarted (SIGTERM) mid-run (needs --spawn)
    CRASH = "crash"  # the gateway is killed (SIGKILL) mid-run and started again (needs --spawn)


# "all" is every fault but a crash, which is its own test (tests/e2e/test_crash.py).
ALL_FAULTS = frozenset(Fault) - {Fault.CRASH}


def parse_faults(text: str) -> frozenset[Fault]:
    """``"all"``, ``"none"``, ``""`` or a comma list such as ``breakdown,retry``; ``all,-restart`` removes."""
    chosen: set[Fault] = set()
    for raw in text.split(","):
        word = raw.strip().casefold()
        if not word or word == "none":
            continue
        remove = word.startswith("-")
        word = word.lstrip("-")
        if word == "all":
            names = set(ALL_FAULTS)
        else:
            try:
                names = {Fault(word)}
            except ValueError:
                known = ", ".join(["all", "none", *(f.value for f in Fault)])
                raise ValueError(f"unknown fault {word!r} (known: {known})") from None
        if remove:
            chosen -= names
        else:
            chosen |= names
    return frozenset(chosen)


@dataclass(frozen=True, slots=True)
class JobPlan:
    """A job the planner creates and releases at the start of the run."""

    part: str
    revision: str
    quantity: int
    priority: int = 0
    due_hours: float | None = 24.0
    steps: tuple[str, ...] = ()  # operation codes; empty = the part's default template or automatic mode
    yield_buffer_percent: float = -1.0  # negative = the cell's default
    supply_serials: bool = False  # the load station supplies serials (laser mark) instead of the gateway


@dataclass(frozen=True, slots=True)
class StationPlan:
    """How one station's PLC talks to the gateway."""

    id: str
    mode: Literal["methods", "tags"] = "methods"


@dataclass(frozen=True, slots=True)
class Account:
    """An OPC UA account; an empty user is an anonymous session."""

    user: str = ""
    password: str = ""
    stations: tuple[str, ...] = ()  # stations whose PLC logs in with this account


@dataclass(frozen=True, slots=True)
class Timing:
    """Simulated seconds. Operation times come from the gateway's config (expected_seconds)."""

    variation: float = 0.10  # every duration is drawn uniformly within +-variation of its nominal value
    transport_seconds: float = 45.0  # a pallet move between stations
    park_recheck_seconds: float = 900.0  # an empty pallet with nothing to load looks again after this
    repair_seconds: tuple[float, float] = (1800.0, 5400.0)
    operator_delay_seconds: tuple[float, float] = (600.0, 2400.0)
    rework_seconds: tuple[float, float] = (600.0, 1800.0)
    default_operation_seconds: float = 300.0  # for an operation without expected_seconds


@dataclass(frozen=True, slots=True)
class FaultRates:
    """How often each fault strikes when it is switched on."""

    breakdown: float = 0.04  # per machine cycle
    cycle_fail: float = 0.03  # per machine cycle (fault "scrap")
    inspection_fail: float = 0.10  # per inspection
    delay: float = 0.06  # per load or inspection task
    duplicate: float = 0.02  # per report
    retry: float = 0.02  # per report
    tagdrop: float = 0.10  # per tag write
    disconnects: int = 3  # PLC disconnects per run
    disconnect_seconds: float = 1200.0  # how long a disconnected PLC stays away (simulated)
    skews: int = 2  # periods of clock skew per run
    skew_seconds: float = 3600.0  # how long a skew lasts (simulated); the offset is beyond the tolerance
    restart_at: float = 0.45  # restart or crash of the gateway at this fraction of the run


@dataclass(frozen=True, slots=True)
class PlcSettings:
    """Wall-clock behaviour of the virtual PLCs' connections."""

    call_timeout: float = 5.0  # seconds to wait for an answer before the PLC retries
    connect_timeout: float = 5.0
    give_up_after: float = 60.0  # seconds of failed attempts on one report before the simulation fails
    backoff: tuple[float, float] = (0.05, 1.0)  # first and longest pause between reconnect attempts


@dataclass(frozen=True, slots=True)
class Scenario:
    jobs: tuple[JobPlan, ...] = ()
    stations: tuple[StationPlan, ...] = ()
    accounts: tuple[Account, ...] = ()
    planner: Account = field(default_factory=Account)  # creates, releases and splits jobs
    operator: Account = field(default_factory=Account)  # scraps units
    timing: Timing = field(default_factory=Timing)
    faults: FaultRates = field(default_factory=FaultRates)
    plc: PlcSettings = field(default_factory=PlcSettings)

    def mode(self, station: str) -> str:
        for plan in self.stations:
            if plan.id == station:
                return plan.mode
        return "methods"

    def account(self, station: str) -> Account:
        for account in self.accounts:
            if station in account.stations:
                return account
        return Account()


class ScenarioError(ValueError):
    pass


def load_scenario(path: str | Path = DEFAULT_SCENARIO) -> Scenario:
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    return parse_scenario(data, str(path))


def parse_scenario(data: dict[str, Any], source: str = "<scenario>") -> Scenario:
    def build(cls: type[Any], raw: Any, where: str) -> Any:
        if not isinstance(raw, dict):
            raise ScenarioError(f"{source}: {where} must be a table")
        names = {f.name: f for f in fields(cls)}
        unknown = sorted(set(raw) - set(names))
        if unknown:
            raise ScenarioError(f"{source}: {where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(names)})")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
        try:
            return cls(**values)
        except TypeError as exc:
            raise ScenarioError(f"{source}: {where}: {exc}") from None

    known = {"jobs", "stations", "accounts", "planner", "operator", "timing", "faults", "plc"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ScenarioError(f"{source}: unknown table(s) {', '.join(unknown)}")
    scenario = Scenario(
        jobs=tuple(build(JobPlan, j, f"jobs[{i}]") for i, j in enumerate(data.get("jobs", []))),
        stations=tuple(build(StationPlan, s, f"stations[{i}]") for i, s in enumerate(data.get("stations", []))),
        accounts=tuple(build(Account, a, f"accounts[{i}]") for i, a in enumerate(data.get("accounts", []))),
        planner=build(Account, data.get("planner", {}), "planner"),
        operator=build(Account, data.get("operator", {}), "operator"),
        timing=build(Timing, data.get("timing", {}), "timing"),
        faults=build(FaultRates, data.get("faults", {}), "faults"),
        plc=build(PlcSettings, data.get("plc", {}), "plc"),
    )
    for i, plan in enumerate(scenario.stations):
        if plan.mode not in ("methods", "tags"):
            raise ScenarioError(f"{source}: stations[{i}].mode must be 'methods' or 'tags', not {plan.mode!r}")
    for i, job in enumerate(scenario.jobs):
        if job.quantity < 1:
            raise ScenarioError(f"{source}: jobs[{i}].quantity must be at least 1")
    return scenario
