"""Argument checks shared by the order book's commands, and the urgency order of bookings and workorders.

Each check raises :class:`~gateway.errors.Refused` (``INVALID_ARGUMENT``) before anything changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Protocol

from gateway.errors import Reason, Refused


class Dated(Protocol):
    """What the urgency order reads: a booking or a workorder."""

    @property
    def id(self) -> str: ...

    @property
    def due(self) -> date: ...

    @property
    def priority(self) -> int: ...


def urgency(item: Dated) -> tuple[date, int, str]:
    """Most urgent first: the soonest due date, then the higher priority, then the id."""
    return (item.due, -item.priority, item.id)


def check_id(value: str, what: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise Refused(Reason.INVALID_ARGUMENT, f"{what} must be a non-empty string")


def check_quantity(quantity: int, *, allow_zero: bool = False) -> None:
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise Refused(Reason.INVALID_ARGUMENT, f"quantity must be an integer, not {quantity!r}")
    if quantity < 0 or (quantity == 0 and not allow_zero):
        raise Refused(Reason.INVALID_ARGUMENT, f"quantity {quantity} is out of range")


def check_parts(parts: Mapping[str, int]) -> dict[str, int]:
    if not isinstance(parts, Mapping) or not parts:
        raise Refused(Reason.INVALID_ARGUMENT, "an order needs at least one part")
    for part, quantity in parts.items():
        check_id(part, "part")
        check_quantity(quantity)
    return dict(parts)


def check_due(due: date) -> None:
    # A datetime is a date too, but the two do not compare: keep due dates plain dates.
    if isinstance(due, datetime) or not isinstance(due, date):
        raise Refused(Reason.INVALID_ARGUMENT, f"due must be a date, not {due!r}")


def check_priority(priority: int) -> None:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise Refused(Reason.INVALID_ARGUMENT, f"priority must be an integer, not {priority!r}")


def check_at(at: datetime) -> None:
    if not isinstance(at, datetime) or at.tzinfo is None:
        raise Refused(Reason.INVALID_ARGUMENT, "times must be timezone-aware datetimes")


def check_manual(at: datetime, actor: str, reason: str) -> None:
    check_at(at)
    check_id(actor, "actor")
    check_id(reason, "reason")
