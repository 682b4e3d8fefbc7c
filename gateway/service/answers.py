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
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

from gateway.storage.store import LoggedAnswer

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
