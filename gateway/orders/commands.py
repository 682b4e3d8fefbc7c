"""Commands of the ERP and of supervisors on bookings, the daily schedule and workorders.

Each is a value with a ``kind`` and its arguments, like :mod:`gateway.jobs.commands`; they go through
the same writer and event log as everything else, and :func:`gateway.orders.handlers.handle` applies
one to the order book (and, where the seed asks for it, to the job book).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import date
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class OrderCommand:
    kind: ClassVar[str] = ""
    source: ClassVar[str] = "orders"


def _as_date(command: OrderCommand, name: str) -> None:
    """Dates come back from the event log as ISO text; anything else is left for the domain to refuse."""
    value = getattr(command, name)
    if isinstance(value, str):
        with suppress(ValueError):
            object.__setattr__(command, name, date.fromisoformat(value))


def _as_dict(command: OrderCommand, name: str) -> None:
    # A command is a value: keep a copy, so the caller's dict can change without changing it.
    value = getattr(command, name)
    if isinstance(value, Mapping):
        object.__setattr__(command, name, dict(value))


@dataclass(frozen=True, slots=True)
class ReceiveOrder(OrderCommand):
    """A new order: a booking and a workorder with the same id, due date, priority and quantities."""

    kind: ClassVar[str] = "ReceiveOrder"
    order_id: str
    due: date
    priority: int
    parts: Mapping[str, int]
    casting: str = ""

    def __post_init__(self) -> None:
        _as_date(self, "due")
        _as_dict(self, "parts")


@dataclass(frozen=True, slots=True)
class UpdateOrder(OrderCommand):
    """The order's quantities changed to ``parts`` (the whole new set): the seed's order-update rules."""

    kind: ClassVar[str] = "UpdateOrder"
    order_id: str
    parts: Mapping[str, int]
    reason: str = "order updated"

    def __post_init__(self) -> None:
        _as_dict(self, "parts")


@dataclass(frozen=True, slots=True)
class EditBooking(OrderCommand):
    """Quantity fix-up of an unscheduled booking; 0 drops the part."""

    kind: ClassVar[str] = "EditBooking"
    booking_id: str
    part: str
    quantity: int
    reason: str


@dataclass(frozen=True, slots=True)
class SetScheduledWithoutBooking(OrderCommand):
    """Quantity fix-up of the scheduled-parts-without-bookings table (e.g. a re-machined extra part)."""

    kind: ClassVar[str] = "SetScheduledWithoutBooking"
    part: str
    quantity: int
    reason: str


@dataclass(frozen=True, slots=True)
class EditWorkorder(OrderCommand):
    """Quantity fix-up of an unfilled workorder; 0 drops a part (not the last one)."""

    kind: ClassVar[str] = "EditWorkorder"
    workorder_id: str
    part: str
    quantity: int
    reason: str


@dataclass(frozen=True, slots=True)
class AddReplacementBooking(OrderCommand):
    """A new booking for scrapped parts; workorders stay as they are."""

    kind: ClassVar[str] = "AddReplacementBooking"
    part: str
    due: date
    reason: str
    quantity: int = 1
    priority: int = 0
    replaces: str = ""
    casting: str = ""

    def __post_init__(self) -> None:
        _as_date(self, "due")


@dataclass(frozen=True, slots=True)
class BackOutJob(OrderCommand):
    """Close a job and book its unstarted quantity again (due date and priority: the job's, unless given)."""

    kind: ClassVar[str] = "BackOutJob"
    job_id: str
    reason: str
    due: date | None = None
    priority: int | None = None

    def __post_init__(self) -> None:
        _as_date(self, "due")


@dataclass(frozen=True, slots=True)
class RunSchedule(OrderCommand):
    """The daily schedule. ``capacity``: seconds of work per resource group for the period.

    ``due_before``: only bookings due before this date are read (None: all unscheduled bookings).
    ``schedule_id`` "" = ``S-<date>`` (``S-<date>-2``, ... when that is taken).
    """

    kind: ClassVar[str] = "RunSchedule"
    capacity: Mapping[str, float]
    expected_hours: float = 24.0
    due_before: date | None = None
    schedule_id: str = ""

    def __post_init__(self) -> None:
        _as_date(self, "due_before")
        _as_dict(self, "capacity")


@dataclass(frozen=True, slots=True)
class AssignSerials(OrderCommand):
    """A supervisor assigns finished serials to one workorder (filling stays a separate step)."""

    kind: ClassVar[str] = "AssignSerials"
    workorder_id: str
    serials: tuple[str, ...]
    reason: str = ""


@dataclass(frozen=True, slots=True)
class UnassignSerial(OrderCommand):
    """Take a tentatively assigned serial back out of its unfilled workorder."""

    kind: ClassVar[str] = "UnassignSerial"
    serial: str
    reason: str
    workorder_id: str = ""  # if given, the serial must be in this workorder


@dataclass(frozen=True, slots=True)
class MarkWorkorderFilled(OrderCommand):
    kind: ClassVar[str] = "MarkWorkorderFilled"
    workorder_id: str
    reason: str = ""


ORDER_COMMAND_TYPES: dict[str, type[OrderCommand]] = {
    cls.kind: cls
    for cls in (
        ReceiveOrder, UpdateOrder, EditBooking, SetScheduledWithoutBooking, EditWorkorder, AddReplacementBooking,
        BackOutJob, RunSchedule, AssignSerials, UnassignSerial, MarkWorkorderFilled,
    )
}  # fmt: skip
