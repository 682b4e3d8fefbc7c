"""The audit trail of manual changes to bookings, workorders and the scheduled-parts-without-bookings table.

The :class:`~gateway.orders.book.OrderBook` records an entry for every manual edit; the writer stores
the entries as they are drained, so the trail in memory only holds those since the last drain.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class AuditAction(StrEnum):
    BOOKING_EDITED = "BookingEdited"
    BOOKING_REMOVED = "BookingRemoved"
    EXTRA_BOOKING = "ExtraBooking"
    REPLACEMENT_BOOKING = "ReplacementBooking"
    JOB_BACKED_OUT = "JobBackedOut"
    SCHEDULED_WITHOUT_BOOKING_SET = "ScheduledWithoutBookingSet"
    WORKORDER_EDITED = "WorkorderEdited"
    SERIALS_ASSIGNED = "SerialsAssigned"
    SERIAL_UNASSIGNED = "SerialUnassigned"
    WORKORDER_MARKED_FILLED = "WorkorderMarkedFilled"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One manual change. ``before``/``after`` are part quantities (for serial actions: serial counts)."""

    at: datetime
    actor: str
    action: AuditAction
    subject: str
    reason: str
    before: Mapping[str, int]
    after: Mapping[str, int]


class AuditTrail:
    """The audit entries recorded since the last :meth:`drain`."""

    def __init__(self) -> None:
        self._entries: list[AuditEntry] = []

    @property
    def entries(self) -> tuple[AuditEntry, ...]:
        return tuple(self._entries)

    def record(
        self,
        at: datetime,
        actor: str,
        action: AuditAction,
        subject: str,
        reason: str,
        before: Mapping[str, int],
        after: Mapping[str, int],
    ) -> None:
        self._entries.append(AuditEntry(at, actor, action, subject, reason, dict(before), dict(after)))

    def drain(self) -> tuple[AuditEntry, ...]:
        """The entries recorded since the last drain; they are no longer held in memory."""
        entries = tuple(self._entries)
        self._entries.clear()
        return entries
