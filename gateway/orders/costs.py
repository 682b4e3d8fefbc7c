"""The times of a cost report per filled workorder and the "consistently above expected" statistic
(seed ``001``). The report is summed from a workorder's serials by
:func:`gateway.orders.workorders.cost_report`.

Elapsed (measured) and expected (planned: the model's load/unload time, the program cycle time) are
kept apart everywhere, and so are the categories: labor (the pallet's time at load stations),
machining (its time at machines), wash (at washers) and inspection (scan in to scan out). A time that
could not be measured is counted as unknown, never replaced by a made-up value; the measured ones are
still summed.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from gateway.errors import Reason, Refused
from gateway.jobs.model import Cost, CostKind


class TimeKind(StrEnum):
    ELAPSED_LABOR = "ElapsedLabor"
    EXPECTED_LABOR = "ExpectedLabor"
    ELAPSED_MACHINING = "ElapsedMachining"
    PROGRAM_CYCLE = "ProgramCycle"
    ELAPSED_WASH = "ElapsedWash"
    EXPECTED_WASH = "ExpectedWash"
    ELAPSED_INSPECTION = "ElapsedInspection"
    EXPECTED_INSPECTION = "ExpectedInspection"


# Each kind of time: the unit's cost category and whether it is measured ("elapsed") or planned.
_SOURCE = {
    TimeKind.ELAPSED_LABOR: ("elapsed", CostKind.LABOR),
    TimeKind.EXPECTED_LABOR: ("expected", CostKind.LABOR),
    TimeKind.ELAPSED_MACHINING: ("elapsed", CostKind.MACHINING),
    TimeKind.PROGRAM_CYCLE: ("expected", CostKind.MACHINING),
    TimeKind.ELAPSED_WASH: ("elapsed", CostKind.WASH),
    TimeKind.EXPECTED_WASH: ("expected", CostKind.WASH),
    TimeKind.ELAPSED_INSPECTION: ("elapsed", CostKind.INSPECTION),
    TimeKind.EXPECTED_INSPECTION: ("expected", CostKind.INSPECTION),
}
# The name of each kind's figure in reports, totals and their stored rows.
TIME_FIELDS = {
    TimeKind.ELAPSED_LABOR: "elapsed_labor_s",
    TimeKind.EXPECTED_LABOR: "expected_labor_s",
    TimeKind.ELAPSED_MACHINING: "elapsed_machining_s",
    TimeKind.PROGRAM_CYCLE: "program_cycle_s",
    TimeKind.ELAPSED_WASH: "elapsed_wash_s",
    TimeKind.EXPECTED_WASH: "expected_wash_s",
    TimeKind.ELAPSED_INSPECTION: "elapsed_inspection_s",
    TimeKind.EXPECTED_INSPECTION: "expected_inspection_s",
}


class OverrunKind(StrEnum):
    LABOR = "Labor"  # elapsed labor vs expected labor
    MACHINING = "Machining"  # elapsed machining vs program cycle time


@dataclass(frozen=True, slots=True)
class UnitCost:
    """The times one finished serial accumulated. A time is None when nothing of it is known (a serial
    the cell has no record of); ``unknown`` counts, per kind, the contributions that could not be
    measured while the others were summed (one unmeasured step never erases the measured ones)."""

    serial: str
    elapsed_labor_s: float | None = None
    expected_labor_s: float | None = None
    elapsed_machining_s: float | None = None
    program_cycle_s: float | None = None
    elapsed_wash_s: float | None = 0.0
    expected_wash_s: float | None = 0.0
    elapsed_inspection_s: float | None = 0.0
    expected_inspection_s: float | None = 0.0
    unknown: Mapping[TimeKind, int] = field(default_factory=dict)

    @classmethod
    def nothing_known(cls, serial: str) -> UnitCost:
        """A serial the cell has no times of: every kind unknown."""
        return cls(
            serial,
            elapsed_labor_s=None,
            expected_labor_s=None,
            elapsed_machining_s=None,
            program_cycle_s=None,
            elapsed_wash_s=None,
            expected_wash_s=None,
            elapsed_inspection_s=None,
            expected_inspection_s=None,
        )

    def time(self, kind: TimeKind) -> float | None:
        value: float | None = getattr(self, TIME_FIELDS[kind])
        return value

    def complete(self, kind: TimeKind) -> bool:
        """Every contribution of this kind is known."""
        return self.time(kind) is not None and not self.unknown.get(kind)


def unit_cost(serial: str, cost: Cost) -> UnitCost:
    """A unit's accumulated times as the cost report counts them: per category, the measured (or
    planned) ones summed, and how many could not be known counted beside ("program cycle time" is the
    expected machining time)."""
    times: dict[str, float] = {}
    unknown: dict[TimeKind, int] = {}
    for kind, (which, category) in _SOURCE.items():
        times[TIME_FIELDS[kind]] = cost.elapsed(category) if which == "elapsed" else cost.expected(category)
        missing = cost.unknown_of(which, category)
        if missing:
            unknown[kind] = missing
    return UnitCost(serial=serial, unknown=unknown, **times)


@dataclass(frozen=True, slots=True)
class TimeTotals:
    """Sums over some units; ``unknown`` counts the units with a time of that kind not (wholly) known:
    a unit the cell has no record of is left out of the sum, one with some unmeasured contributions is
    summed with what was measured (kinds with 0 omitted)."""

    units: int
    elapsed_labor_s: float
    expected_labor_s: float
    elapsed_machining_s: float
    program_cycle_s: float
    unknown: Mapping[TimeKind, int]
    elapsed_wash_s: float = 0.0
    expected_wash_s: float = 0.0
    elapsed_inspection_s: float = 0.0
    expected_inspection_s: float = 0.0

    def total(self, kind: TimeKind) -> float:
        value: float = getattr(self, TIME_FIELDS[kind])
        return value


@dataclass(frozen=True, slots=True)
class CostReport:
    """What is sent to the ERP for a filled workorder, plus the same sums per part."""

    workorder_id: str
    filled_at: datetime
    serials: tuple[str, ...]
    elapsed_labor_s: float
    expected_labor_s: float
    elapsed_machining_s: float
    program_cycle_s: float
    unknown: Mapping[TimeKind, int]
    by_part: Mapping[str, TimeTotals]
    elapsed_wash_s: float = 0.0
    expected_wash_s: float = 0.0
    elapsed_inspection_s: float = 0.0
    expected_inspection_s: float = 0.0

    def total(self, kind: TimeKind) -> float:
        value: float = getattr(self, TIME_FIELDS[kind])
        return value


@dataclass(frozen=True, slots=True)
class OverrunFinding:
    """Elapsed vs expected over many workorders, for one kind and one part (None: all parts).

    ``overrun`` of a workorder is elapsed/expected - 1. A workorder is left out (``skipped``) when a
    time it would need is unknown for some unit or nothing was expected.
    """

    kind: OverrunKind
    part: str | None
    workorders: int
    skipped: int
    above_expected: int
    share_above: float | None
    median_overrun: float | None
    mean_overrun: float | None
    consistent: bool


_PAIRS = {
    OverrunKind.LABOR: (TimeKind.ELAPSED_LABOR, TimeKind.EXPECTED_LABOR),
    OverrunKind.MACHINING: (TimeKind.ELAPSED_MACHINING, TimeKind.PROGRAM_CYCLE),
}


def overrun_report(
    reports: Iterable[CostReport],
    min_workorders: int = 5,
    threshold: float = 0.10,
    majority: float = 0.75,
) -> tuple[OverrunFinding, ...]:
    """Which kinds of time run above expected *consistently*.

    Flagged when at least ``min_workorders`` workorders count, the median overrun exceeds
    ``threshold`` and at least ``majority`` of them ran above expected. Because ``min_workorders`` is
    at least 2 and ``majority`` above one half, a single workorder, however far over, never flags.
    Findings come per kind, first over all parts (``part=None``), then per part in name order.
    """
    if isinstance(min_workorders, bool) or not isinstance(min_workorders, int) or min_workorders < 2:
        raise Refused(Reason.INVALID_ARGUMENT, "min_workorders must be at least 2")
    if not 0.5 < majority <= 1.0:
        raise Refused(Reason.INVALID_ARGUMENT, "majority must be above 0.5 and at most 1")
    if not threshold >= 0:
        raise Refused(Reason.INVALID_ARGUMENT, "threshold must be >= 0")
    reports = list(reports)
    parts = sorted({part for report in reports for part in report.by_part})
    findings: list[OverrunFinding] = []
    for kind, (elapsed_kind, expected_kind) in _PAIRS.items():
        for part in [None, *parts]:
            totals = [
                _report_totals(r) if part is None else r.by_part[part]
                for r in reports
                if part is None or part in r.by_part
            ]
            overruns: list[float] = []
            skipped = 0
            for t in totals:
                expected = t.total(expected_kind)
                if t.unknown.get(elapsed_kind) or t.unknown.get(expected_kind) or expected <= 0:
                    skipped += 1
                    continue
                overruns.append(t.total(elapsed_kind) / expected - 1.0)
            findings.append(_finding(kind, part, overruns, skipped, min_workorders, threshold, majority))
    return tuple(findings)


def _report_totals(report: CostReport) -> TimeTotals:
    return TimeTotals(
        units=len(report.serials),
        unknown=report.unknown,
        **{name: report.total(kind) for kind, name in TIME_FIELDS.items()},
    )


def _finding(
    kind: OverrunKind,
    part: str | None,
    overruns: list[float],
    skipped: int,
    min_workorders: int,
    threshold: float,
    majority: float,
) -> OverrunFinding:
    if not overruns:
        return OverrunFinding(kind, part, 0, skipped, 0, None, None, None, consistent=False)
    above = sum(1 for o in overruns if o > 0)
    share = above / len(overruns)
    median = statistics.median(overruns)
    consistent = len(overruns) >= min_workorders and median > threshold and share >= majority
    return OverrunFinding(
        kind=kind,
        part=part,
        workorders=len(overruns),
        skipped=skipped,
        above_expected=above,
        share_above=share,
        median_overrun=median,
        mean_overrun=statistics.fmean(overruns),
        consistent=consistent,
    )
