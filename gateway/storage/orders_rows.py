"""Orders (bookings, workorders, schedules, audit) to table rows and back. The only place that knows both."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gateway.jobs.book import JobBook
from gateway.orders import AuditEntry, Booking, Workorder, cost_report
from gateway.orders.costs import TIME_FIELDS, CostReport, TimeKind, TimeTotals, UnitCost, unit_cost
from gateway.orders.schedule import DailySchedule

Row = dict[str, Any]


# ---------------------------------------------------------------------------------------- bookings
def booking_row(booking: Booking) -> Row:
    return {
        "booking_id": booking.id,
        "due_date": booking.due,
        "priority": booking.priority,
        "scheduled": booking.scheduled,
    }


def booking_part_rows(booking: Booking) -> list[Row]:
    return [
        {"booking_id": booking.id, "part_name": part, "quantity": quantity, "casting": booking.casting}
        for part, quantity in booking.parts.items()
    ]


def booking_from(row: Any, parts: Iterable[Any]) -> Booking:
    part_rows = list(parts)
    return Booking(
        id=row.booking_id,
        due=row.due_date,
        priority=row.priority,
        parts={p.part_name: p.quantity for p in part_rows},
        casting=part_rows[0].casting if part_rows else "",
        scheduled=row.scheduled,
    )


# -------------------------------------------------------------------------------------- workorders
def workorder_row(workorder: Workorder) -> Row:
    return {
        "workorder_id": workorder.id,
        "due_date": workorder.due,
        "priority": workorder.priority,
        "filled": workorder.filled,
        "filled_at": workorder.filled_at,
    }


def workorder_part_rows(workorder: Workorder) -> list[Row]:
    return [
        {"workorder_id": workorder.id, "part_name": part, "quantity": quantity, "filled": workorder.filled}
        for part, quantity in workorder.parts.items()
    ]


def workorder_serial_rows(workorder: Workorder) -> list[Row]:
    return [
        {"serial": serial, "workorder_id": workorder.id, "part_name": part, "position": position}
        for part, serials in workorder.serials.items()
        for position, serial in enumerate(serials)
    ]


def workorder_from(row: Any, parts: Iterable[Any], serials: Iterable[Any]) -> Workorder:
    by_part: dict[str, list[tuple[int, str]]] = {}
    for s in serials:
        by_part.setdefault(s.part_name, []).append((s.position, s.serial))
    return Workorder(
        id=row.workorder_id,
        due=row.due_date,
        priority=row.priority,
        parts={p.part_name: p.quantity for p in parts},
        serials={part: tuple(serial for _, serial in sorted(found)) for part, found in by_part.items()},
        filled=row.filled,
        filled_at=row.filled_at,
    )


# ------------------------------------------------------------------------------------ cost reports
def unit_costs(
    jobs: JobBook, serials: Iterable[str], known: Mapping[str, UnitCost] | None = None
) -> dict[str, UnitCost]:
    """The times each serial accumulated in the cell (see :func:`gateway.orders.costs.unit_cost`).

    ``known``: times already taken (a workorder's, when each serial was assigned); the others come from
    the units in the book, and a serial the book does not hold is all unknown.
    """
    out: dict[str, UnitCost] = {}
    for serial in serials:
        taken = known.get(serial) if known else None
        if taken is not None:
            out[serial] = taken
            continue
        unit = jobs.units.get(serial)
        out[serial] = UnitCost.nothing_known(serial) if unit is None else unit_cost(serial, unit.cost)
    return out


def report_for(workorder: Workorder, jobs: JobBook) -> CostReport:
    """The cost report of a filled workorder: the one taken when it filled, or made from its serials'
    times (each serial's as kept when it was assigned, else its unit's in the book)."""
    if workorder.report is not None and workorder.filled:
        return workorder.report
    return cost_report(workorder, unit_costs(jobs, workorder.all_serials, workorder.costs))


def _unknown(unknown: Mapping[TimeKind, int]) -> dict[str, int]:
    return {kind.value: count for kind, count in unknown.items()}


def _times(source: TimeTotals | CostReport) -> dict[str, float]:
    return {name: source.total(kind) for kind, name in TIME_FIELDS.items()}


def _totals_json(totals: TimeTotals) -> dict[str, Any]:
    return {"units": totals.units, **_times(totals), "unknown": _unknown(totals.unknown)}


def result_row(report: CostReport) -> Row:
    return {
        "workorder_id": report.workorder_id,
        "filled_at": report.filled_at,
        "serials": len(report.serials),
        **_times(report),
        "unknown": _unknown(report.unknown),
        "by_part": {part: _totals_json(t) for part, t in report.by_part.items()},
    }


def report_from(row: Any, serials: Iterable[str]) -> CostReport:
    return CostReport(
        workorder_id=row.workorder_id,
        filled_at=row.filled_at,
        serials=tuple(serials),
        **{name: getattr(row, name) for name in TIME_FIELDS.values()},
        unknown={TimeKind(k): v for k, v in row.unknown.items()},
        by_part={
            part: TimeTotals(
                units=t["units"],
                # a report stored before wash and inspection were apart has no such figures: 0
                **{name: t.get(name, 0.0) for name in TIME_FIELDS.values()},
                unknown={TimeKind(k): v for k, v in t["unknown"].items()},
            )
            for part, t in row.by_part.items()
        },
    )


# --------------------------------------------------------------------------------------- schedules
def schedule_row(schedule: DailySchedule) -> Row:
    return {
        "schedule_id": schedule.id,
        "created_at": schedule.created_at,
        "expected_hours": schedule.expected_hours,
        "due_before": schedule.due_before,
        "bookings_scheduled": list(schedule.bookings_scheduled),
        "scheduled_without_bookings": dict(schedule.scheduled_without_bookings),
        "parts_without_routing": list(schedule.parts_without_routing),
    }


def schedule_line_rows(schedule: DailySchedule) -> list[Row]:
    return [
        {
            "schedule_id": schedule.id,
            "part_name": part,
            "demand": demand,
            "quantity": schedule.jobs.get(part, 0),
            "job_id": schedule.job_ids.get(part),
        }
        for part, demand in schedule.demand.items()
    ]


def schedule_from(row: Any, lines: Iterable[Any]) -> DailySchedule:
    found = list(lines)
    return DailySchedule(
        id=row.schedule_id,
        created_at=row.created_at,
        expected_hours=row.expected_hours,
        bookings_scheduled=tuple(row.bookings_scheduled),
        jobs={line.part_name: line.quantity for line in found if line.quantity},
        scheduled_without_bookings=dict(row.scheduled_without_bookings),
        demand={line.part_name: line.demand for line in found},
        parts_without_routing=tuple(row.parts_without_routing),
        job_ids={line.part_name: line.job_id for line in found if line.job_id},
        due_before=row.due_before,
    )


# ------------------------------------------------------------------------------------------- audit
def audit_row(entry: AuditEntry, counter: int | None) -> Row:
    return {
        "event_counter": counter,
        "at": entry.at,
        "actor": entry.actor,
        "action": entry.action.value,
        "subject": entry.subject,
        "reason": entry.reason,
        "before": dict(entry.before),
        "after": dict(entry.after),
    }
