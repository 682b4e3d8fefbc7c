"""Request and response bodies of the ERP API (the OpenAPI description is generated from these)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema

from gateway import limits


def _storable(value: str) -> str:
    # JSON may carry lone surrogates, NUL and control characters; none can be stored (nor logged) as text.
    problem = limits.text_problem(value)
    if problem:
        raise ValueError(problem)
    return value


Storable = AfterValidator(_storable)

# Every length, pattern and number below comes from gateway/limits.py, as the OPC UA checks do.
# Ids travel in URLs and log lines: letters, digits and . _ : - only, starting with a letter or digit.
ID_PATTERN = limits.NODE_ID_PATTERN
_ID_MAX = limits.MAX_ID_LENGTH
_QUANTITY_MAX = limits.MAX_JOB_QUANTITY
Id = Annotated[str, StringConstraints(min_length=1, max_length=_ID_MAX, pattern=ID_PATTERN)]
PartName = Annotated[
    str, StringConstraints(min_length=1, max_length=limits.PART.max_length, pattern=limits.PART.pattern)
]
Serial = Annotated[
    str,
    StringConstraints(min_length=1, max_length=limits.SERIAL.max_length, pattern=limits.SERIAL.pattern),
    Storable,
]
Text = Annotated[str, StringConstraints(max_length=limits.MAX_TEXT_LENGTH), Storable]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=limits.MAX_TEXT_LENGTH), Storable]
Casting = Annotated[str, StringConstraints(max_length=_ID_MAX), Storable]
Quantity = Annotated[int, Field(ge=1, le=_QUANTITY_MAX)]
Count = Annotated[int, Field(ge=0, le=_QUANTITY_MAX)]
Priority = Annotated[int, Field(ge=-limits.MAX_PRIORITY, le=limits.MAX_PRIORITY, description="larger = more urgent")]
Parts = Annotated[
    dict[PartName, Quantity],
    Field(min_length=1, max_length=limits.MAX_PARTS_PER_ORDER),
    # One schema for the keys (propertyNames) rather than pydantic's patternProperties, which would let
    # a client read any other key as allowed.
    WithJsonSchema(
        {
            "type": "object",
            "description": "part name -> quantity",
            "minProperties": 1,
            "maxProperties": limits.MAX_PARTS_PER_ORDER,
            "propertyNames": {"type": "string", "minLength": 1, "maxLength": _ID_MAX, "pattern": ID_PATTERN},
            "additionalProperties": {"type": "integer", "minimum": 1, "maximum": _QUANTITY_MAX},
        }
    ),
]

T = TypeVar("T")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# ------------------------------------------------------------------------------------------ requests
class OrderIn(_In):
    """A new order: it becomes a booking and a workorder with this id, due date, priority and parts."""

    id: Id
    due: date
    priority: Priority = 0
    parts: Parts
    casting: Casting = ""


class OrderUpdate(_In):
    """The order's new quantities (the whole set of parts)."""

    parts: Parts
    reason: Reason = "order updated"


class QuantityFix(_In):
    """A quantity fix-up of one part; 0 removes the part."""

    part: PartName
    quantity: Count
    reason: Reason


class TableFix(_In):
    quantity: Count
    reason: Reason


class ReplacementIn(_In):
    part: PartName
    quantity: Quantity = 1
    due: date
    priority: Priority = 0
    replaces: Annotated[str, StringConstraints(max_length=_ID_MAX, pattern=r"^$|" + ID_PATTERN)] = ""
    casting: Casting = ""
    reason: Reason


class BackOutIn(_In):
    reason: Reason
    due: date | None = Field(default=None, description="due date of the new booking; default: the job's")
    priority: Priority | None = Field(default=None, description="priority of the new booking; default: the job's")


class ScheduleIn(_In):
    schedule_id: Id | None = Field(default=None, description="default S-<date>, S-<date>-2, ...")
    due_before: date | None = Field(default=None, description="read bookings due before this date; default all")
    expected_hours: float = Field(default=24.0, gt=0, le=168, description="length of the period scheduled")


class SerialsIn(_In):
    serials: Annotated[list[Serial], Field(min_length=1, max_length=limits.MAX_SERIALS_PER_CALL)]
    reason: Text = ""


class FillIn(_In):
    reason: Text = ""


# ----------------------------------------------------------------------------------------- responses
class Page(BaseModel, Generic[T]):
    items: list[T]
    next_after: str | None = Field(description="pass as ?after= for the next page; null on the last page")


class Booking(BaseModel):
    id: str
    due: date
    priority: int
    scheduled: bool
    parts: dict[str, int]
    casting: str


class BookingEdited(BaseModel):
    booking: Booking | None = Field(description="the booking as edited; null when it was removed")
    removed: bool


class Workorder(BaseModel):
    id: str
    due: date
    priority: int
    filled: bool
    filled_at: datetime | None
    parts: dict[str, int]
    serials: dict[str, list[str]]
    remaining: dict[str, int]


class Order(BaseModel):
    booking: Booking
    workorder: Workorder


class OrderUpdated(BaseModel):
    bookings: list[Booking] = Field(description="the bookings written: the edited one, or the -extra booking")
    workorder: Workorder


class ScheduledWithoutBookings(BaseModel):
    part: str
    quantity: int


class Variance(BaseModel):
    ordered: int
    started: int
    finished: int
    scrapped: int
    wip: int
    freed: int


class BackOut(BaseModel):
    job_id: str
    quantity: int = Field(description="the quantity booked again (0: nothing was left to make)")
    booking: Booking | None
    variance: Variance


class ScheduleJob(BaseModel):
    part: str
    quantity: int
    job_id: str | None


class Schedule(BaseModel):
    id: str
    created_at: datetime
    expected_hours: float
    due_before: date | None
    bookings_scheduled: list[str]
    jobs: list[ScheduleJob]
    demand: dict[str, int]
    scheduled_without_bookings: dict[str, int]
    parts_without_routing: list[str]


class Totals(BaseModel):
    units: int
    elapsed_labor_s: float
    expected_labor_s: float
    elapsed_machining_s: float
    program_cycle_s: float
    elapsed_wash_s: float = 0.0
    expected_wash_s: float = 0.0
    elapsed_inspection_s: float = 0.0
    expected_inspection_s: float = 0.0
    unknown: dict[str, int]


class CostReport(BaseModel):
    workorder_id: str
    filled_at: datetime
    serials: list[str]
    elapsed_labor_s: float = Field(description="the pallets' time at load stations, shared among their units")
    expected_labor_s: float = Field(description="sum of the expected load/unload (and manual) times")
    elapsed_machining_s: float = Field(description="the pallets' time at the machines, shared among their units")
    program_cycle_s: float = Field(description="sum of the program cycle times (expected machining)")
    elapsed_wash_s: float = Field(description="the pallets' time at washers (never inside machining)")
    expected_wash_s: float = Field(description="sum of the wash programs' cycle times")
    elapsed_inspection_s: float = Field(description="scan in to scan out at inspection (never inside labor)")
    expected_inspection_s: float = Field(description="sum of the expected inspection times")
    unknown: dict[str, int] = Field(
        description="time kind -> serials with a time of that kind not measured (the measured ones are summed)"
    )
    by_part: dict[str, Totals]


class OverrunFinding(BaseModel):
    kind: str
    part: str | None
    workorders: int
    skipped: int
    above_expected: int
    share_above: float | None
    median_overrun: float | None
    mean_overrun: float | None
    consistent: bool


class Overruns(BaseModel):
    workorders: int
    findings: list[OverrunFinding]


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    subject: str
    reason: str
    before: dict[str, int]
    after: dict[str, int]
    event_counter: int | None


class FinishedSerial(BaseModel):
    serial: str
    job_id: str
    part: str
    revision: str
    finished_at: datetime


class Job(BaseModel):
    id: str
    part: str
    revision: str
    state: str
    quantity: int
    started: int
    finished: int
    scrapped: int
    wip: int
    target_reached: bool = Field(description="its ordered quantity is finished: the ERP may close it")
    due: datetime | None
    priority: int
    created_at: datetime
