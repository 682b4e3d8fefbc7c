"""Cost report per filled workorder and the consistent-overrun statistic (seed 001)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from gateway.errors import Reason, Refused
from gateway.jobs.model import Cost, CostKind
from gateway.orders import (
    CostReport,
    OrderBook,
    OverrunFinding,
    OverrunKind,
    TimeKind,
    UnitCost,
    Workorder,
    cost_report,
    overrun_report,
)
from gateway.orders.costs import unit_cost

AT = datetime(2026, 1, 5, 14, 0, tzinfo=UTC)


def filled(workorder_id: str, parts: dict[str, int]) -> Workorder:
    book = OrderBook()
    book.receive_order(workorder_id, date(2026, 1, 10), 1, parts)
    for part, qty in parts.items():
        for n in range(qty):
            book.assign_serial(f"{workorder_id}-{part}-{n}", part, AT)
    return book.workorder(workorder_id)


def test_cost_report_sums_the_serials_times() -> None:
    workorder = filled("XYZ", {"ABC123": 2, "DEF456": 1})
    units = {
        "XYZ-ABC123-0": UnitCost("XYZ-ABC123-0", 300.0, 240.0, 1900.0, 1800.0),
        "XYZ-ABC123-1": UnitCost("XYZ-ABC123-1", 250.0, 240.0, 1800.0, 1800.0),
        "XYZ-DEF456-0": UnitCost("XYZ-DEF456-0", 100.0, 120.0, 700.0, 600.0),
    }
    report = cost_report(workorder, units)
    assert report.workorder_id == "XYZ"
    assert report.filled_at == AT
    assert report.serials == ("XYZ-ABC123-0", "XYZ-ABC123-1", "XYZ-DEF456-0")
    assert (report.elapsed_labor_s, report.expected_labor_s) == (650.0, 600.0)
    assert (report.elapsed_machining_s, report.program_cycle_s) == (4400.0, 4200.0)
    assert report.unknown == {}
    abc = report.by_part["ABC123"]
    assert (abc.units, abc.elapsed_labor_s, abc.program_cycle_s) == (2, 550.0, 3600.0)


def test_unknown_times_are_skipped_and_counted() -> None:
    workorder = filled("XYZ", {"P": 3})
    units = {
        "XYZ-P-0": UnitCost("XYZ-P-0", elapsed_labor_s=100.0, expected_labor_s=90.0),
        "XYZ-P-1": UnitCost("XYZ-P-1", elapsed_labor_s=None, expected_labor_s=90.0, program_cycle_s=50.0),
        # XYZ-P-2 has no record at all.
    }
    report = cost_report(workorder, units)
    assert report.elapsed_labor_s == 100.0
    assert report.expected_labor_s == 180.0
    assert report.program_cycle_s == 50.0
    assert report.unknown == {
        TimeKind.ELAPSED_LABOR: 2,
        TimeKind.EXPECTED_LABOR: 1,
        TimeKind.ELAPSED_MACHINING: 3,
        TimeKind.PROGRAM_CYCLE: 2,
        # XYZ-P-2 has nothing known, wash and inspection included
        TimeKind.ELAPSED_WASH: 1,
        TimeKind.EXPECTED_WASH: 1,
        TimeKind.ELAPSED_INSPECTION: 1,
        TimeKind.EXPECTED_INSPECTION: 1,
    }


def test_one_unmeasured_step_never_erases_the_measured_ones() -> None:
    """Seed 001: the report sums elapsed labor and machining per workorder. A unit whose unload could
    not be timed still brings its measured load and machine time; the unknown one is counted beside."""
    cost = Cost()
    cost.add_elapsed(CostKind.LABOR, 150.0)  # the load, measured
    cost.add_elapsed(CostKind.LABOR, None)  # the unload: an end without a start
    cost.add_elapsed(CostKind.MACHINING, 965.0)
    cost.add_elapsed(CostKind.WASH, 200.0)
    cost.add_elapsed(CostKind.INSPECTION, 280.0)
    cost.add_expected(CostKind.LABOR, 210.0)
    unit = unit_cost("XYZ-P-0", cost)
    assert (unit.elapsed_labor_s, unit.elapsed_machining_s) == (150.0, 965.0)
    assert (unit.elapsed_wash_s, unit.elapsed_inspection_s) == (200.0, 280.0)
    assert unit.unknown == {TimeKind.ELAPSED_LABOR: 1}
    report = cost_report(filled("XYZ", {"P": 2}), {"XYZ-P-0": unit, "XYZ-P-1": unit_cost("XYZ-P-1", Cost())})
    assert report.elapsed_labor_s == 150.0
    assert report.elapsed_machining_s == 965.0
    assert (report.elapsed_wash_s, report.elapsed_inspection_s) == (200.0, 280.0)
    assert report.unknown == {TimeKind.ELAPSED_LABOR: 1}


def test_cost_report_needs_a_filled_workorder_and_sane_times() -> None:
    book = OrderBook()
    book.receive_order("XYZ", date(2026, 1, 10), 1, {"P": 2})
    with pytest.raises(Refused) as refused:
        cost_report(book.workorder("XYZ"), {})
    assert refused.value.reason is Reason.INVALID_TRANSITION
    workorder = filled("ABC", {"P": 1})
    with pytest.raises(Refused) as refused:
        cost_report(workorder, {"ABC-P-0": UnitCost("ABC-P-0", elapsed_labor_s=-1.0)})
    assert refused.value.reason is Reason.INVALID_ARGUMENT


def report(n: int, elapsed_labor: float, expected_labor: float = 100.0, part: str = "P") -> CostReport:
    workorder = filled(f"W{n}", {part: 1})
    serial = f"W{n}-{part}-0"
    return cost_report(workorder, {serial: UnitCost(serial, elapsed_labor, expected_labor, 500.0, 500.0)})


def finding(findings: tuple[OverrunFinding, ...], kind: OverrunKind, part: str | None) -> OverrunFinding:
    return next(f for f in findings if f.kind is kind and f.part == part)


def test_consistent_overrun_is_flagged_with_its_numbers() -> None:
    reports = [report(n, elapsed) for n, elapsed in enumerate([125, 130, 118, 140, 122, 95])]
    findings = overrun_report(reports)
    labor = finding(findings, OverrunKind.LABOR, None)
    assert labor.consistent
    assert labor.workorders == 6
    assert labor.above_expected == 5
    assert labor.share_above == pytest.approx(5 / 6)
    assert labor.median_overrun == pytest.approx(0.235)
    assert finding(findings, OverrunKind.LABOR, "P").consistent
    machining = finding(findings, OverrunKind.MACHINING, None)
    assert not machining.consistent
    assert machining.median_overrun == 0.0


def test_a_single_outlier_never_flags() -> None:
    reports = [report(0, 1000.0)] + [report(n, 100.0) for n in range(1, 8)]
    labor = finding(overrun_report(reports), OverrunKind.LABOR, None)
    assert not labor.consistent
    assert labor.above_expected == 1
    assert labor.mean_overrun is not None
    assert labor.mean_overrun > 1.0  # the outlier is large; the verdict is still no
    # Even alone and even with the smallest allowed minimum.
    alone = finding(overrun_report([report(0, 1000.0), report(1, 99.0)], min_workorders=2), OverrunKind.LABOR, None)
    assert not alone.consistent


def test_too_few_workorders_or_a_mixed_picture_does_not_flag() -> None:
    few = [report(n, 150.0) for n in range(4)]
    assert not finding(overrun_report(few), OverrunKind.LABOR, None).consistent
    # Median above threshold but only 4 of 7 above expected.
    mixed = [report(n, e) for n, e in enumerate([150, 150, 150, 150, 90, 90, 90])]
    labor = finding(overrun_report(mixed), OverrunKind.LABOR, None)
    assert labor.median_overrun == pytest.approx(0.5)
    assert not labor.consistent


def test_per_part_findings_and_skipped_workorders() -> None:
    reports = [report(n, 130.0, part="SLOW") for n in range(5)]
    reports += [report(n + 10, 100.0, part="FINE") for n in range(5)]
    workorder = filled("NOLOG", {"SLOW": 1})
    reports.append(cost_report(workorder, {}))  # nothing known: skipped
    findings = overrun_report(reports)
    assert finding(findings, OverrunKind.LABOR, "SLOW").consistent
    assert finding(findings, OverrunKind.LABOR, "SLOW").skipped == 1
    assert not finding(findings, OverrunKind.LABOR, "FINE").consistent
    overall = finding(findings, OverrunKind.LABOR, None)
    assert overall.workorders == 10
    assert not overall.consistent
    assert [(f.kind, f.part) for f in findings] == [
        (OverrunKind.LABOR, None),
        (OverrunKind.LABOR, "FINE"),
        (OverrunKind.LABOR, "SLOW"),
        (OverrunKind.MACHINING, None),
        (OverrunKind.MACHINING, "FINE"),
        (OverrunKind.MACHINING, "SLOW"),
    ]


def test_no_reports_gives_findings_without_numbers() -> None:
    findings = overrun_report([])
    assert [(f.workorders, f.median_overrun, f.consistent) for f in findings] == [
        (0, None, False),
        (0, None, False),
    ]


@pytest.mark.parametrize(
    "kwargs",
    [{"min_workorders": 1}, {"majority": 0.5}, {"majority": 1.5}, {"threshold": -0.1}],
)
def test_settings_that_would_let_one_outlier_flag_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(Refused) as refused:
        overrun_report([], **kwargs)  # type: ignore[arg-type]
    assert refused.value.reason is Reason.INVALID_ARGUMENT
