"""Orders at the cell boundary: bookings in, the daily schedule of part jobs, workorders out (pure)."""

from __future__ import annotations

from gateway.orders.audit import AuditAction, AuditEntry
from gateway.orders.book import OrderBook, OrderChanges
from gateway.orders.bookings import Booking, extra_booking_id
from gateway.orders.costs import CostReport, OverrunFinding, OverrunKind, TimeKind, TimeTotals, UnitCost, overrun_report
from gateway.orders.schedule import DailySchedule, make_schedule
from gateway.orders.workorders import Workorder, cost_report

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
