"""Virtual PLCs: one OPC UA client per station, reporting to the gateway as a real PLC should.

A :class:`Plc` sends a report with a new EventId and waits for the answer. If the answer does not
come (timeout, connection lost, the gateway restarting or its store unavailable) it reconnects and
sends the *same* report again, EventId and SourceTime included, until it gets an answer; the gateway
answers a repeated report with the stored answer. Every answer it finally accepts goes to the
:class:`~simulators.ledger.Ledger`.

A :class:`TagPlc` reports by writing its station's ``Tags`` (PalletPresent, CycleActive, Program) as
one block, in an order that lets the gateway see every edge even if an earlier write was lost.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from asyncua import ua

from simulators.clock import SimClock
from simulators.ledger import NOT_STORED, Ack, Ledger, TagWrite
from simulators.link import CallAnswer, Link, LinkDown, Persistence

S, U32, DT = ua.VariantType.String, ua.VariantType.UInt32, ua.VariantType.DateTime

# Inputs of each report between EventId and SourceTime, as (argument name in the log, variant type).
REPORT_INPUTS: dict[str, tuple[tuple[str, ua.VariantType], ...]] = {
    "PalletArrived": (("pallet", S),),
    "PalletDeparted": (("pallet", S),),
    "LoadCompleted": (("pallet", S), ("job", S), ("quantity", U32), ("serials", S)),
    "CycleStarted": (("pallet", S), ("program", S)),
    "CycleEnded": (("pallet", S), ("program", S), ("result", S)),
    "StartUnit": (("job", S), ("serial", S)),
    "ScanIn": (("serial", S),),
    "ScanOut": (("serial", S), ("result", S)),
    "Scrap": (("serial", S), ("reason", S)),
}
ARRAYS = frozenset({"serials"})

# Answers that mean "not answered": the report is sent again with the same EventId.
RETRYABLE = frozenset(
    {
        "BadResourceUnavailable",  # the gateway's store could not commit: nothing was acknowledged
        "BadTimeout",
        "BadServerHalted",
        "BadShutdown",
        "BadSessionClosed",
        "BadSessionIdInvalid",
        "BadSessionNotActivated",
        "BadSecureChannelClosed",
        "BadSecureChannelIdInvalid",
        "BadCommunicationError",
        "BadConnectionClosed",
        "BadTooManySessions",
        "BadServerNotConnected",
        "BadInternalError",
        "BadUnexpectedError",
    }
)


@dataclass(slots=True)
class PlcFaults:
    """Fault switches and rates of one PLC, set by the simulation."""

    duplicate: float = 0.0  # chance to send an acknowledged report once more
    retry: float = 0.0  # chance to lose the answer (cut the connection after sending)
    tagdrop: float = 0.0  # chance that a tag write never goes out
    offline_until: float = 0.0  # simulated seconds: disconnected until then
    skew: timedelta = timedelta(0)  # while set, SourceTime is the gateway's time plus this


class Plc:
    """A station's PLC (or an operator's HMI) reporting through station methods."""

    def __init__(
        self,
        source: str,
        link: Link,
        ledger: Ledger,
        clock: SimClock,
        run_id: str,
        rng: random.Random,
        *,
        object_path: str | None = None,
    ) -> None:
        self.source = source
        self.link = link
        self.ledger = ledger
        self.clock = clock
        self.run_id = run_id
        self.rng = rng
        self.object_path = object_path or f"Cell/Stations/{source}"
        self.faults = PlcFaults()
        self.reference_now: Callable[[], datetime] = clock.now  # the gateway's clock, for fault "skew"
        self.reports = 0
        self.on_answer: Callable[[Ack], None] | None = None
        self._seq = itertools.count(1)

    def new_event_id(self) -> str:
        return f"{self.run_id}-{next(self._seq):06d}"

    def source_time(self) -> datetime:
        if self.faults.skew:  # a clock that is off, measured against the gateway's own
            return self.reference_now() + self.faults.skew
        return self.clock.now()

    async def wait_online(self) -> None:
        if self.faults.offline_until > self.clock.elapsed():
            await self.link.drop()
            await self.clock.sleep_until(self.faults.offline_until)

    async def report(self, kind: str, *, method: str | None = None, **args: Any) -> Ack:
        """Send one report until it is answered; returns the acknowledgement (Good or a refusal)."""
        await self.wait_online()
        event_id = self.new_event_id()
        when = self.source_time()
        sim_seconds = self.clock.elapsed()
        inputs = self._inputs(kind, event_id, when, args)
        answer, attempts = await self._until_answered(method or kind, inputs, f"{self.source} {kind} {event_id}")
        ack = Ack(
            source="cell" if kind == "Scrap" else self.source,
            event_id=event_id,
            kind=kind,
            args={name: args[name] for name, _ in REPORT_INPUTS[kind]},
            status=answer.status,
            outputs=answer.outputs,
            attempts=attempts,
            source_time=when,
            sim_seconds=sim_seconds,
        )
        self.reports += 1
        self.ledger.add(ack)
        if answer.status in NOT_STORED:
            self.ledger.problem(f"{self.source} {kind} {args}: answered {answer.status} (not stored)")
        if self.on_answer is not None:
            self.on_answer(ack)
        if self.faults.duplicate and self.rng.random() < self.faults.duplicate:
            again, _ = await self._until_answered(method or kind, inputs, f"{self.source} {kind} {event_id} (dup)")
            ack.duplicates += 1
            if (again.status, again.outputs) != (answer.status, answer.outputs):
                self.ledger.mismatched_duplicates.append(
                    f"{self.source} {kind} {event_id}: first {answer.status} {answer.outputs}, "
                    f"again {again.status} {again.outputs}"
                )
        return ack

    def _inputs(self, kind: str, event_id: str, when: datetime, args: dict[str, Any]) -> list[ua.Variant]:
        inputs = [ua.Variant(event_id, S)]
        for name, vtype in REPORT_INPUTS[kind]:
            inputs.append(ua.Variant(args[name], vtype, is_array=name in ARRAYS))
        inputs.append(ua.Variant(when, DT))
        return inputs

    async def _until_answered(self, method: str, inputs: list[ua.Variant], what: str) -> tuple[CallAnswer, int]:
        persist = Persistence(self.link.settings, what)
        while True:
            await self.wait_online()
            cut = bool(self.faults.retry) and self.rng.random() < self.faults.retry
            try:
                answer = await self.link.call(self.object_path, method, inputs, cut=cut)
            except LinkDown as exc:
                self.ledger.retries["cut" if cut else "link"] += 1
                await persist.failed(str(exc))
                continue
            if answer.status in RETRYABLE:
                self.ledger.retries[answer.status] += 1
                await self.link.drop()
                await persist.failed(answer.status)
                continue
            return answer, persist.attempts + 1

    async def read(self, path: str) -> Any:
        persist = Persistence(self.link.settings, f"{self.source} read {path}")
        while True:
            try:
                return await self.link.read(path)
            except LinkDown as exc:
                await persist.failed(str(exc))

    async def wait_for(self, path: str, accept: Callable[[Any], bool], within: float = 10.0) -> Any:
        """Read a variable until ``accept(value)``; variables are published just after commit."""
        deadline = time.monotonic() + within
        while True:
            value = await self.read(path)
            if accept(value):
                return value
            if time.monotonic() > deadline:
                return value
            await asyncio.sleep(0.005)


class TagPlc(Plc):
    """A PLC that only writes its station's tags, always the whole block, in the order Program,
    CycleActive, PalletPresent: a cycle starts with the program already set, and a cycle's end
    (CycleActive false) reaches the gateway before the pallet leaves even when the write that carried
    the end alone was lost (fault "tagdrop").
    """

    TAGS = ("Program", "CycleActive", "PalletPresent")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.state: dict[str, Any] = {"CycleActive": False, "Program": "", "PalletPresent": ""}

    async def set_tags(self, edges: tuple[str, ...], *, droppable: bool = False, **values: Any) -> None:
        """Write the whole block with ``values`` changed; ``edges`` are the reports it should cause."""
        await self.wait_online()
        self.state.update(values)
        drop = droppable and bool(self.faults.tagdrop) and self.rng.random() < self.faults.tagdrop
        block = [(f"{self.object_path}/Tags/{name}", self._variant(name, self.state[name])) for name in self.TAGS]
        self.ledger.tag_writes.append(TagWrite(self.source, dict(self.state), edges, drop, self.clock.elapsed()))
        if drop:
            return
        persist = Persistence(self.link.settings, f"{self.source} tag write {values}")
        while True:
            await self.wait_online()
            try:
                results = await self.link.write(block)
            except LinkDown as exc:
                self.ledger.retries["link"] += 1
                await persist.failed(str(exc))
                continue
            bad = [r for r in results if r != "Good"]
            if not bad:
                return
            if any(r in RETRYABLE for r in bad):
                await persist.failed(",".join(bad))
                continue
            self.ledger.problem(f"{self.source} tag write {values} answered {bad}")
            return

    @staticmethod
    def _variant(name: str, value: Any) -> ua.Variant:
        return ua.Variant(bool(value), ua.VariantType.Boolean) if name == "CycleActive" else ua.Variant(value, S)
