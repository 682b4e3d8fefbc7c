"""The simulator's own record of every acknowledged report, to reconcile with the gateway's log.

An acknowledgement is an answer the gateway gave to a well-formed report: Good, or Bad with a domain
reason (those are stored with the report). Calls the gateway does not store (malformed arguments,
access denied) are kept too, marked, so a test can insist there are none.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

# Answers that are not stored with the report (opcua-contract.md): the same call again is new.
NOT_STORED = frozenset(
    {
        "BadUserAccessDenied",
        "BadArgumentsMissing",
        "BadTooManyArguments",
        "BadTypeMismatch",
        "BadInvalidArgument",  # malformed input; a domain InvalidArgument is stored, but the simulator never sends one
    }
)


@dataclass(slots=True)
class Ack:
    """One report and the answer that was finally acknowledged."""

    source: str  # station id, or "cell" for Units.Scrap
    event_id: str
    kind: str
    args: dict[str, Any]  # as the gateway stores them (cell_events.args)
    status: str  # "Good" or the Bad status code's name
    outputs: list[Any]
    attempts: int  # calls made until this answer (1 = first call answered)
    source_time: datetime | None
    sim_seconds: float  # when it was reported, in simulated seconds from the start
    duplicates: int = 0  # times it was sent again after the answer, each answered the same
    reason: str = ""  # the refusal's Reason, when the gateway told it (RejectionEventType)

    @property
    def ok(self) -> bool:
        return self.status == "Good"

    @property
    def stored(self) -> bool:
        return self.status not in NOT_STORED

    @property
    def key(self) -> tuple[str, str]:
        return (self.source, self.event_id)


@dataclass(slots=True)
class TagWrite:
    """One block of tag values a tag PLC got acknowledged (and the edges it meant)."""

    station: str
    values: dict[str, Any]
    edges: tuple[str, ...]  # report kinds this write should cause: PalletArrived, CycleStarted, ...
    dropped: bool  # never sent (fault "tagdrop"); its edges arrive with the next write
    sim_seconds: float


@dataclass(slots=True)
class Ledger:
    acks: list[Ack] = field(default_factory=list)
    tag_writes: list[TagWrite] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # things the simulation did not expect
    retries: Counter[str] = field(default_factory=Counter)  # why calls were repeated
    mismatched_duplicates: list[str] = field(default_factory=list)

    _waiters: list[tuple[int, asyncio.Event]] = field(default_factory=list, repr=False)

    def add(self, ack: Ack) -> None:
        self.acks.append(ack)
        for count, event in self._waiters:
            if len(self.acks) >= count:
                event.set()

    async def wait_for(self, count: int, within: float) -> None:
        """Until ``count`` reports are acknowledged in all (TimeoutError after ``within`` seconds)."""
        event = asyncio.Event()
        entry = (count, event)
        self._waiters.append(entry)
        try:
            if len(self.acks) < count:
                async with asyncio.timeout(within):
                    await event.wait()
        finally:
            self._waiters.remove(entry)

    def problem(self, text: str) -> None:
        self.problems.append(text)

    def by_key(self) -> dict[tuple[str, str], Ack]:
        return {a.key: a for a in self.acks}

    def refusals(self) -> Counter[str]:
        return Counter(a.reason or a.status for a in self.acks if not a.ok)

    def write_jsonl(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as out:
            for ack in self.acks:
                row = asdict(ack)
                row["source_time"] = ack.source_time.isoformat() if ack.source_time else None
                out.write(json.dumps({"type": "ack", **row}) + "\n")
            for write in self.tag_writes:
                out.write(json.dumps({"type": "tag_write", **asdict(write)}) + "\n")
            for problem in self.problems:
                out.write(json.dumps({"type": "problem", "text": problem}) + "\n")


def ack_summary(acks: list[Ack]) -> Counter[str]:
    return Counter(a.kind for a in acks)
