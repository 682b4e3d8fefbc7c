"""The whole cell's state in one object: the JobBook and the CellTracker, behind one ``apply``.

The writer owns exactly one CellModel and is the only caller of ``apply``; that is what makes
"commands are applied in order" true.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.jobs.book import JobBook
from gateway.jobs.commands import JobCommand, handle
from gateway.jobs.events import JobEvent
from gateway.tracking.anomalies import Flag
from gateway.tracking.cell import CellTracker, Outcome
from gateway.tracking.reports import Report

Command = Report | JobCommand


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


class CellModel:
    def __init__(self, book: JobBook, tracker: CellTracker) -> None:
        self.book = book
        self.tracker = tracker

    def apply(self, command: Command, received_at: datetime, actor: str) -> Outcome:
        """Apply one command; raises ``Refused`` having changed nothing."""
        if isinstance(command, Report):
            return self.tracker.apply(command, received_at)
        outputs: dict[str, Any] = handle(self.book, command, received_at, actor)
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
        )
        book.events = []
        book.transitions.clear()
        book.dirty.clear()
        tracker.dirty_pallets.clear()
        tracker.dirty_stations.clear()
        return changes


__all__ = ["CellModel", "Changes", "Command", "Flag", "Outcome"]
