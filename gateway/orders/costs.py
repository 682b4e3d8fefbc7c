"""Cost report per filled workorder and the "consistently above expected" statistic (seed ``001``).

Elapsed (measured) and expected (planned: the model's load/unload time, the program cycle time) are
kept apart everywhere. A time that is unknown for a unit is skipped in a sum and counted, never
replaced by a made-up value.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from gateway.errors import Reason, Refused
from gateway.jobs.model import Cost
from gateway.orders.model import Workorder


class TimeKind(StrEnum):
    ELAPSED_LABOR = "ElapsedLabor"
    EXPECTED_LABOR = "ExpectedLabor"
    ELAPSED_MACHINING = "ElapsedMachining"
    PROGRAM_CYCLE = "ProgramCycle"


class OverrunKind(StrEnum):
    LABOR = "Labor"  # elapsed labor vs expected labor
    MACHINING = "Machining"  # elapsed machining vs program cycle time


@dataclass(frozen=True, slots=True)
class UnitCost:
    """The times one finished serial accumulated; None where unknown."""

    serial: str
    elapsed_labor_s: float | None = None
    expected_labor_s: float | None = None
    elapsed_machining_s: float | None = None
    program_cycle_s: float | None = None

    def time(self, kind: TimeKind) -> float | None:
        match kind:
            case TimeKind.ELAPSED_LABOR:
                return self.elapsed_labor_s
            case TimeKind.EXPECTED_LABOR:
                return self.expected_labor_s
            case TimeKind.ELAPSED_MACHINING:
                return self.elapsed_machining_s
            case TimeKind.PROGRAM_CYCLE:
                return self.program_cycle_s


def unit_cost(serial: str, cost: Cost) -> UnitCost:
    """A unit's accumulated times as the cost report counts them. "Program cycle time" is the expected
    machine time. A unit with a contribution whose elapsed time could not be measured (an end without
    a start) has its elapsed times reported unknown rather than too small; expected times likewise.
    """
    elapsed_known = cost.unknown_elapsed == 0
    expected_known = cost.unknown_expected == 0
    return UnitCost(
        serial=serial,
        elapsed_labor_s=cost.elapsed_labor if elapsed_known else None,
        expected_labor_s=cost.expected_labor if expected_known else None,
        elapsed_machining_s=cost.elapsed_machine if elapsed_known else None,
        program_cycle_s=cost.expected_machine if expected_known else None,
    )


@dataclass(frozen=True, slots=True)
class TimeTotals:
    """Sums over some units; ``unknown`` counts the units left out of each sum (kinds with 0 omitted)."""

    units: int
    elapsed_labor_s: float
    expected_labor_s: float
    elapsed_machining_s: float
    program_cycle_s: float
    unknown: Mapping[TimeKind, int]

    def total(self, kind: TimeKind) -> float:
        match kind:
            case TimeKind.ELAPSED_LABOR:
                return self.elapsed_labor_s
            case TimeKind.EXPECTED_LABOR:
                return self.expected_labor_s
            case TimeKind.ELAPSED_MACHINING:
                return self.elapsed_machining_s
            case TimeKind.PROGRAM_CYCLE:
                return self.program_cycle_s


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


def cost_report(workorder: Workorder, units: Mapping[str, UnitCost]) -> CostReport:
    """Sum the serials' times for a filled workorder. A serial missing from ``units`` is all unknown."""
    if not workorder.filled or workorder.filled_at is None:
        raise Refused(Reason.INVALID_TRANSITION, f"workorder {workorder.id!r} is not filled")
    for serial, unit in units.items():
        for kind in TimeKind:
            value = unit.time(kind)
            if value is not None and (isinstance(value, bool) or not value >= 0):
                raise Refused(Reason.INVALID_ARGUMENT, f"serial {serial!r}: {kind} {value!r} is not >= 0")
    by_part = {
        part: _totals([units.get(s, UnitCost(s)) for s in serials])
        for part, serials in sorted(workorder.serials.items())
    }
    everything = _totals([units.get(s, UnitCost(s)) for s in workorder.all_serials])
    return CostReport(
        workorder_id=workorder.id,
        filled_at=workorder.filled_at,
        serials=workorder.all_serials,
        elapsed_labor_s=everything.elapsed_labor_s,
        expected_labor_s=everything.expected_labor_s,
        elapsed_machining_s=everything.elapsed_machining_s,
        program_cycle_s=everything.program_cycle_s,
        unknown=everything.unknown,
        by_part=by_part,
    )


def _totals(units: list[UnitCost]) -> TimeTotals:
    sums: dict[TimeKind, float] = {}
    unknown: dict[TimeKind, int] = {}
    for kind in TimeKind:
        values = [unit.time(kind) for unit in units]
        sums[kind] = float(sum(v for v in values if v is not None))
        missing = sum(1 for v in values if v is None)
        if missing:
            unknown[kind] = missing
    return TimeTotals(
        units=len(units),
        elapsed_labor_s=sums[TimeKind.ELAPSED_LABOR],
        expected_labor_s=sums[TimeKind.EXPECTED_LABOR],
        elapsed_machining_s=sums[TimeKind.ELAPSED_MACHINING],
        program_cycle_s=sums[TimeKind.PROGRAM_CYCLE],
        unknown=unknown,
    )


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
        elapsed_labor_s=report.elapsed_labor_s,
        expected_labor_s=report.expected_labor_s,
        elapsed_machining_s=report.elapsed_machining_s,
        program_cycle_s=report.program_cycle_s,
        unknown=report.unknown,
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
