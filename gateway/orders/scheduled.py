"""The scheduled-parts-without-bookings table and the daily schedules applied to the order book.

The table counts, per part, units a schedule sent to the cell that no booking holds (a surplus of a
schedule, or a re-machined extra part set by a supervisor); the next schedule takes them off its
demand. Each applied schedule replaces the table as a whole.
"""

from __future__ import annotations

from gateway.errors import Reason, Refused
from gateway.orders.schedule import DailySchedule


class ScheduledParts:
    """The table (part -> count, no zeros) and the applied schedules by id, with what changed since
    the last :meth:`drain`."""

    def __init__(self, table: dict[str, int] | None = None, schedules: tuple[DailySchedule, ...] = ()) -> None:
        self._without_bookings: dict[str, int] = {p: q for p, q in (table or {}).items() if q > 0}
        self._schedules: dict[str, DailySchedule] = {s.id: s for s in schedules}
        self._dirty_table = False
        self._new_schedules: list[str] = []

    def drain(self) -> tuple[bool, tuple[str, ...]]:
        """Whether the table changed, and the ids of the schedules applied, since the last drain."""
        changes = (self._dirty_table, tuple(self._new_schedules))
        self._dirty_table = False
        self._new_schedules.clear()
        return changes

    @property
    def table(self) -> dict[str, int]:
        return dict(self._without_bookings)

    def count(self, part: str) -> int:
        return self._without_bookings.get(part, 0)

    def set_count(self, part: str, quantity: int) -> None:
        if quantity == 0:
            del self._without_bookings[part]
        else:
            self._without_bookings[part] = quantity
        self._dirty_table = True

    def __contains__(self, schedule_id: object) -> bool:
        return schedule_id in self._schedules

    def get(self, schedule_id: str) -> DailySchedule:
        try:
            return self._schedules[schedule_id]
        except KeyError:
            raise Refused(Reason.NOT_FOUND, f"no schedule {schedule_id!r}") from None

    @property
    def all(self) -> tuple[DailySchedule, ...]:
        return tuple(self._schedules.values())

    def apply(self, schedule: DailySchedule) -> None:
        """Keep the schedule and take its table for the whole table."""
        self._without_bookings = {p: q for p, q in schedule.scheduled_without_bookings.items() if q > 0}
        self._schedules[schedule.id] = schedule
        self._dirty_table = True
        self._new_schedules.append(schedule.id)
