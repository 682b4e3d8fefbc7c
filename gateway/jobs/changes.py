"""What the JobBook changed since it last handed its changes over: its events in order (what happened, for
logs, storage and OPC UA events) and the ids of the entities the writer must save."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.jobs.events import JobEvent


@dataclass(slots=True)
class Dirty:
    """Entities changed since the writer last saved; it drains these after each batch."""

    jobs: set[str] = field(default_factory=set)
    units: set[str] = field(default_factory=set)
    templates: set[str] = field(default_factory=set)
    specs: set[tuple[str, str]] = field(default_factory=set)

    def clear(self) -> None:
        self.jobs.clear()
        self.units.clear()
        self.templates.clear()
        self.specs.clear()


@dataclass(frozen=True, slots=True)
class JobChanges:
    """What a :class:`~gateway.jobs.book.JobBook` changed since its last :meth:`~gateway.jobs.book.JobBook.drain`:
    its events in order and the ids of what must be saved."""

    events: tuple[JobEvent, ...] = ()
    jobs: frozenset[str] = frozenset()
    units: frozenset[str] = frozenset()
    templates: frozenset[str] = frozenset()
    specs: frozenset[tuple[str, str]] = frozenset()


@dataclass(slots=True)
class ChangeLog:
    """The book's changes since its last drain: every command appends to ``events`` and marks ``dirty``."""

    events: list[JobEvent] = field(default_factory=list)
    dirty: Dirty = field(default_factory=Dirty)

    def drain(self) -> JobChanges:
        """Hand over what changed since the last drain (the writer saves it) and start afresh."""
        changes = JobChanges(
            tuple(self.events),
            frozenset(self.dirty.jobs),
            frozenset(self.dirty.units),
            frozenset(self.dirty.templates),
            frozenset(self.dirty.specs),
        )
        self.events = []
        self.dirty.clear()
        return changes
