"""Orders at the cell boundary: bookings in, the daily schedule of part jobs, workorders out (pure)."""

from __future__ import annotations

from gateway.orders.costs import (
    CostReport,
    OverrunFinding,
    OverrunKind,
    TimeKind,
    TimeTotals,
    UnitCost,
    cost_report,
    overrun_report,
)
from gateway.orders.model import (
    AuditAction,
    AuditEntry,
    Booking,
    OrderBook,
    OrderChanges,
    Workorder,
    extra_booking_id,
)
from gateway.orders.schedule import DailySchedule, make_schedule

__all__ = [
    "AuditAction",
    "AuditEntry",
    "Booking",
    "CostReport",
    "DailySchedule",
    "OrderBook",
    "OrderChanges",
    "OverrunFinding",
    "OverrunKind",
    "TimeKind",
    "TimeTotals",
    "UnitCost",
    "Workorder",
    "cost_report",
    "extra_booking_id",
    "make_schedule",
    "overrun_report",
]
