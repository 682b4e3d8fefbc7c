"""The whole cell's state in one object: the JobBook, the CellTracker and the OrderBook, behind one ``apply``.

The writer owns exactly one CellModel and is the only caller of ``apply``; that is what makes
"commands are applied in order" true. Filling workorders at unload happens here too, in the same
step as the report that finished the unit, so it is saved in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.jobs.book import JobBook
from gateway.jobs.commands import JobCommand, handle
from gateway.jobs.events import JobEvent, UnitFinished
from gateway.orders.commands import OrderCommand, assign_finished_unit
from gateway.orders.commands import handle as handle_order
from gateway.orders.model import OrderBook, OrderChanges
from gateway.tracking.anomalies import Flag
from gateway.tracking.cell import CellTracker, Outcome
from gateway.tracking.reports import Report

Command = Report | JobCommand | OrderCommand


@dataclass(slots=True)
class Changes:
    """What one batch changed, drained by the writer after applying it."""

    events: list[JobEvent]
    jobs: set[str]
    units: set[str]
    templates: set[str]
    specs: set[tuple[str, str]]
    pallets: set[str]
    stations: set[str]
    serial_seq: int
    orders: OrderChanges


class CellModel:
    def __init__(
        self,
        book: JobBook,
        tracker: CellTracker,
        orders: OrderBook | None = None,
        *,
        assign_workorder_at_unload: bool = False,
    ) -> None:
        self.book = book
        self.tracker = tracker
        self.orders = orders if orders is not None else OrderBook()
        self.assign_workorder_at_unload = assign_workorder_at_unload

    def apply(self, command: Command, received_at: datetime, actor: str) -> Outcome:
        """Apply one command; raises ``Refused`` having changed nothing."""
        if isinstance(command, Report):
            seen = len(self.book.events)
            outcome = self.tracker.apply(command, received_at)
            if self.assign_workorder_at_unload:
                for event in self.book.events[seen:]:
                    if isinstance(event, UnitFinished):
                        assign_finished_unit(self.orders, self.book, event.serial, event.at)
            return outcome
        outputs: dict[str, Any]
        if isinstance(command, OrderCommand):
            outputs = handle_order(self.orders, self.book, command, received_at, actor)
        else:
            outputs = handle(self.book, command, received_at, actor)
        return Outcome(outputs, (), received_at)

    def drain(self) -> Changes:
        book, tracker = self.book, self.tracker
        changes = Changes(
            events=book.events,
            jobs=set(book.dirty.jobs),
            units=set(book.dirty.units),
            templates=set(book.dirty.templates),
            specs=set(book.dirty.specs),
            pallets=set(tracker.dirty_pallets),
            stations=set(tracker.dirty_stations),
            serial_seq=tracker.serial_seq,
            orders=self.orders.drain(),
        )
        book.events = []
        book.transitions.clear()
        book.dirty.clear()
        tracker.dirty_pallets.clear()
        tracker.dirty_stations.clear()
        return changes


__all__ = ["CellModel", "Changes", "Command", "Flag", "Outcome"]
