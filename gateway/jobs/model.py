"""Jobs, routings and units: the values and entities of the cell's work.

Pure: no I/O, no clock. Times are handed in by the caller. Entities are plain mutable classes owned by
:class:`gateway.jobs.book.JobBook`, which is the only code that changes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from fractions import Fraction
from functools import lru_cache
from math import ceil


class JobState(StrEnum):
    CREATED = "Created"
    RELEASED = "Released"
    RUNNING = "Running"
    HOLD = "Hold"
    CLOSED = "Closed"


class TemplateStatus(StrEnum):
    DRAFT = "Draft"
    APPROVED = "Approved"
    FROZEN = "Frozen"
    DEPRECATED = "Deprecated"


class CostKind(StrEnum):
    """The categories a unit's time is reported in (seed 001's cost report, wash and inspection apart).

    Elapsed labor is the pallet's time at load stations, elapsed machining its time at machines,
    elapsed wash its time at washers; elapsed inspection is scan in to scan out at an inspection
    station. Expected times are the steps' planned times of the same kinds (program cycle times for
    machining and wash)."""

    LABOR = "labor"
    MACHINING = "machining"
    WASH = "wash"
    INSPECTION = "inspection"


class StepKind(StrEnum):
    """What a step does; decides in which cost category its time is reported."""

    LOAD = "load"
    UNLOAD = "unload"
    MACHINE = "machine"
    WASH = "wash"
    INSPECT = "inspect"
    MANUAL = "manual"

    @property
    def is_labor(self) -> bool:
        return self in (StepKind.LOAD, StepKind.UNLOAD, StepKind.MANUAL, StepKind.INSPECT)

    @property
    def cost_kind(self) -> CostKind:
        """Load, unload and manual steps are labor; inspection, machining and wash are their own."""
        match self:
            case StepKind.MACHINE:
                return CostKind.MACHINING
            case StepKind.WASH:
                return CostKind.WASH
            case StepKind.INSPECT:
                return CostKind.INSPECTION
            case _:
                return CostKind.LABOR

    @property
    def is_cycle(self) -> bool:
        """Steps passed by a machine or wash cycle on a pallet (CycleStarted/CycleEnded)."""
        return self in (StepKind.MACHINE, StepKind.WASH)


class UnitStatus(StrEnum):
    WAITING = "waiting"  # needs routing[next_step] next
    IN_STEP = "in_step"  # has entered routing[next_step] at ``station``
    FINISHED = "finished"
    SCRAPPED = "scrapped"


class RoutingSourceKind(StrEnum):
    TEMPLATE = "template"
    AUTOMATIC = "automatic"
    CUSTOM = "custom"


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a routing, snapshotted whole: later config edits never reach it."""

    operation: str
    name: str
    group: str
    kind: StepKind
    program: str = ""
    expected_seconds: float | None = None


Routing = tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class RoutingSource:
    kind: RoutingSourceKind
    template_id: str = ""

    def __str__(self) -> str:
        return f"template:{self.template_id}" if self.kind is RoutingSourceKind.TEMPLATE else self.kind.value

    @classmethod
    def parse(cls, text: str) -> RoutingSource:
        kind, _, template = text.partition(":")
        return cls(RoutingSourceKind(kind), template)


@dataclass(slots=True)
class RoutingTemplate:
    id: str
    part: str
    revision: str
    version: int
    steps: Routing
    status: TemplateStatus = TemplateStatus.DRAFT
    created_at: datetime | None = None

    @property
    def usable(self) -> bool:
        """Approved for production: may be the default and may feed new jobs."""
        return self.status in (TemplateStatus.APPROVED, TemplateStatus.FROZEN)


@dataclass(slots=True)
class PartSpec:
    part: str
    revision: str
    default_template_id: str = ""
    template_versions: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.part, self.revision)


@dataclass(slots=True)
class Cost:
    """Accumulated time of a unit per :class:`CostKind`, elapsed (measured) and expected (planned) apart.

    ``unknown`` counts, per ``"elapsed_<kind>"`` / ``"expected_<kind>"``, the contributions whose time
    could not be measured (an end without a start, a pallet whose arrival was not reported) or was not
    planned: they are never invented, only counted, and the measured ones are still summed, so a
    report can say how complete each figure is. ``unknown_elapsed`` / ``unknown_expected`` are the
    totals over the kinds.
    """

    elapsed_labor: float = 0.0
    expected_labor: float = 0.0
    elapsed_machine: float = 0.0
    expected_machine: float = 0.0
    unknown_elapsed: int = 0
    unknown_expected: int = 0
    elapsed_wash: float = 0.0
    expected_wash: float = 0.0
    elapsed_inspection: float = 0.0
    expected_inspection: float = 0.0
    unknown: dict[str, int] = field(default_factory=dict)

    def add_elapsed(self, kind: CostKind, seconds: float | None) -> None:
        self._add("elapsed", kind, seconds)

    def add_expected(self, kind: CostKind, seconds: float | None) -> None:
        self._add("expected", kind, seconds)

    def _add(self, which: str, kind: CostKind, seconds: float | None) -> None:
        if seconds is None:
            key = _UNKNOWN_KEY[which, kind]
            self.unknown[key] = self.unknown.get(key, 0) + 1
            if which == "elapsed":
                self.unknown_elapsed += 1
            else:
                self.unknown_expected += 1
            return
        attribute = _ATTRIBUTE[which, kind]
        setattr(self, attribute, getattr(self, attribute) + seconds)

    def elapsed(self, kind: CostKind) -> float:
        return float(getattr(self, _ATTRIBUTE["elapsed", kind]))

    def expected(self, kind: CostKind) -> float:
        return float(getattr(self, _ATTRIBUTE["expected", kind]))

    def unknown_of(self, which: str, kind: CostKind) -> int:
        """How many ``which`` ("elapsed" or "expected") contributions of ``kind`` were not known."""
        return self.unknown.get(_UNKNOWN_KEY[which, kind], 0)

    def add(self, other: Cost) -> None:
        for attribute in _ATTRIBUTE.values():
            setattr(self, attribute, getattr(self, attribute) + getattr(other, attribute))
        self.unknown_elapsed += other.unknown_elapsed
        self.unknown_expected += other.unknown_expected
        for key, count in other.unknown.items():
            self.unknown[key] = self.unknown.get(key, 0) + count

    def copy(self) -> Cost:
        copied = Cost()
        copied.add(self)
        return copied


_FIELD = {
    CostKind.LABOR: "labor",
    CostKind.MACHINING: "machine",
    CostKind.WASH: "wash",
    CostKind.INSPECTION: "inspection",
}
# ("elapsed" | "expected", kind) -> the Cost attribute, and the key of its unknown count: built once, as
# every step a unit leaves adds to them.
_ATTRIBUTE = {(which, kind): f"{which}_{name}" for kind, name in _FIELD.items() for which in ("elapsed", "expected")}
_UNKNOWN_KEY = {(which, kind): f"{which}_{kind.value}" for kind in CostKind for which in ("elapsed", "expected")}


@dataclass(slots=True)
class Unit:
    serial: str
    job_id: str
    next_step: int
    status: UnitStatus
    started_at: datetime
    last_activity: datetime
    station: str = ""  # where it is while IN_STEP
    entered_at: datetime | None = None
    failed_attempts: int = 0  # of the step it needs next
    audit_flagged: bool = False
    cost: Cost = field(default_factory=Cost)

    @property
    def live(self) -> bool:
        """Counted in WIP: started and neither finished nor scrapped."""
        return self.status in (UnitStatus.WAITING, UnitStatus.IN_STEP)


@dataclass(slots=True)
class Job:
    id: str
    part: str
    revision: str
    quantity: int
    yield_buffer_percent: float
    due: datetime | None
    priority: int
    pallets: tuple[str, ...]
    routing: Routing
    source: RoutingSource
    created_at: datetime
    state: JobState = JobState.CREATED
    held_from: JobState | None = None
    parent_id: str = ""
    children: int = 0
    started: int = 0
    scrapped: int = 0
    finished: int = 0
    released_at: datetime | None = None
    closed_at: datetime | None = None

    @property
    def max_quantity(self) -> int:
        return max_quantity(self.quantity, self.yield_buffer_percent)

    @property
    def wip(self) -> int:
        return self.started - self.scrapped - self.finished

    @property
    def room(self) -> int:
        """How many more units may still be started under the cap (the buffer included): the hard
        ceiling of any load, an operator's deliberate one too."""
        return max(0, self.max_quantity - (self.started - self.scrapped))

    @property
    def unstarted(self) -> int:
        """How many of the ordered units are still to be started (a scrapped one is owed again). The
        gateway's own load instructions offer only these: the buffer is a ceiling, never a plan."""
        return max(0, self.quantity - (self.started - self.scrapped))

    @property
    def target_reached(self) -> bool:
        return target_reached(self.finished, self.quantity)

    @property
    def shop_floor_visible(self) -> bool:
        return self.state is not JobState.CREATED

    def allows_pallet(self, pallet: str) -> bool:
        return not self.pallets or pallet in self.pallets


def target_reached(finished: int, quantity: int) -> bool:
    """The ordered quantity is finished (units may still be in WIP): the ERP may close the job."""
    return finished >= quantity > 0


@lru_cache(maxsize=4096)
def max_quantity(quantity: int, buffer_percent: float) -> int:
    """Ordered + ceil(ordered x buffer%), computed exactly: 2% of 1,000 is 20, never 20.000000000000004.

    Cached: the load instructions ask it of every open job after each batch, and the exact Fraction
    costs microseconds a call; a cell has few distinct (quantity, buffer) pairs."""
    return quantity + ceil(Fraction(repr(float(buffer_percent))) * quantity / 100)


@dataclass(frozen=True, slots=True)
class Variance:
    """What Close reports: ordered against what was made, and what was freed."""

    job_id: str
    ordered: int
    started: int
    finished: int
    scrapped: int
    wip: int
    freed: int  # unstarted quantity released by the close

    @property
    def shortfall(self) -> int:
        return max(0, self.ordered - self.finished)
