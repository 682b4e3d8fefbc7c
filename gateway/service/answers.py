"""Idempotency: the answers of logged reports, by (source, EventId), for retries.

A PLC that retries after a timeout sends the same EventId; it must get the original answer and change
nothing. The newest ``size`` answers are kept in memory (an LRU warmed at start); once the log holds
more than that, a miss is looked up in the store before the batch is applied (one indexed statement
per batch). The writer keeps 10,000: retries come within seconds, and once the log is larger than the
cache every new EventId is looked up anyway, so a larger cache only costs memory (100,000 answers
held ~97 MiB).

Keys are stored as *safe text*: a string that cannot be stored as it is (invalid UTF-8 arrives from
asyncua as lone surrogates; PostgreSQL refuses NUL) is escaped the same way everywhere, so its report
can be logged, refused and answered the same on every retry instead of failing its batch's commit.

A retried report is answered from here (:func:`replay`): the stored answer when its arguments are the
same, a DuplicateEventId refusal when they are not; each logged report is kept by :func:`remember`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from gateway.cell.codec import encode
from gateway.cell.commands import Command
from gateway.errors import Reason
from gateway.service.feed import Answer
from gateway.storage.store import LoggedAnswer
from gateway.tracking.anomalies import Flag
from gateway.tracking.reports import Report

Key = tuple[str, str]


def safe_text(text: str) -> str:
    """``text`` if any store can hold it as it is; otherwise with the offending characters escaped."""
    if "\x00" not in text and text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\x00", "\\x00")


def safe_value(value: Any) -> Any:
    """A JSON-able value with every string in it made safe (see :func:`safe_text`)."""
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        return {safe_text(str(k)): safe_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [safe_value(v) for v in value]
    return value


class AnswerCache:
    """The newest logged answers in LRU order; ``complete`` while it holds every logged report."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._answers: OrderedDict[Key, LoggedAnswer] = OrderedDict()
        self.complete = True  # every logged key is here: a miss is a new report

    def __len__(self) -> int:
        return len(self._answers)

    def warm(self, recent: Sequence[tuple[Key, LoggedAnswer]], total: int) -> None:
        self._answers = OrderedDict(recent)
        self.complete = total <= self.size

    def get(self, key: Key) -> LoggedAnswer | None:
        found = self._answers.get(key)
        if found is not None:
            self._answers.move_to_end(key)
        return found

    def missing(self, keys: Iterable[Key]) -> set[Key]:
        """The keys a lookup in the store must answer (none while the cache is complete)."""
        if self.complete:
            return set()
        return {k for k in keys if k not in self._answers}

    def add(self, key: Key, answer: LoggedAnswer) -> None:
        self._answers[key] = answer
        while len(self._answers) > self.size:
            self._answers.popitem(last=False)
            self.complete = False

    def found(self, answers: dict[Key, LoggedAnswer]) -> None:
        """Answers looked up in the store: kept like any other (they may push older ones out)."""
        for key, answer in answers.items():
            self.add(key, answer)

    def forget(self, keys: Iterable[Key]) -> None:
        """Keys of reports that were not committed after all."""
        for key in keys:
            self._answers.pop(key, None)


def replay(answers: AnswerCache, command: Command, received_at: datetime) -> Answer | None:
    """The stored answer for a retried report, a DuplicateEventId refusal, or None for a new report."""
    if not isinstance(command, Report):
        return None
    stored = answers.get(report_key(command))
    if stored is None:
        return None
    if stored.kind == command.kind and _same_arguments(stored.args, encode(command)):
        return Answer(
            counter=stored.counter,
            kind=stored.kind,
            reason=Reason(stored.reason) if stored.reason else None,
            message=stored.message,
            outputs=stored.outputs,
            flags=tuple(Flag.from_json(f) for f in stored.flags),
            at=received_at,
            replayed=True,
        )
    return Answer(
        counter=0,
        kind=command.kind,
        reason=Reason.DUPLICATE_EVENT_ID,
        message=(
            f"EventId {safe_text(command.event_id)!r} of {safe_text(command.source)} was used at log position "
            f"{stored.counter} for another report ({stored.kind} {stored.args}); a new report needs a new EventId"
        ),
        outputs={},
        flags=(),
        at=received_at,
    )


def remember(answers: AnswerCache, key: Key, command: Command, answer: Answer) -> None:
    if not isinstance(command, Report):
        return
    answers.add(
        key,
        LoggedAnswer(
            counter=answer.counter,
            kind=command.kind,
            args=encode(command),
            reason=answer.reason.value if answer.reason else None,
            message=answer.message,
            outputs=answer.outputs,
            flags=[f.to_json() for f in answer.flags],
        ),
    )


def report_key(command: Report) -> Key:
    return (safe_text(command.source), safe_text(command.event_id))


def _same_arguments(stored: dict[str, Any], given: dict[str, Any]) -> bool:
    return stored == given or stored == safe_value(given)
