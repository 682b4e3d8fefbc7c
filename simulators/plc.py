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
import logging
import random
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from asyncua import Client, ua

from simulators.clock import SimClock
from simulators.ledger import NOT_STORED, Ack, Ledger, TagWrite
from simulators.scenario import Account, PlcSettings

NS_URI = "urn:cell-gateway"

# asyncua logs every lost connection and refused request at WARNING or above; a simulation that
# causes them on purpose keeps its own account of them instead.
for _name in ("asyncua", "asyncua.client", "asyncua.client.ua_client", "asyncua.client.client"):
    logging.getLogger(_name).setLevel(logging.CRITICAL)

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


class LinkDown(Exception):
    """The connection is not usable; the caller reconnects and tries again."""


class NotPublished(Exception):
    """The node is not in the gateway's address space (e.g. a job that is closed or done and left it)."""


class SimulationError(RuntimeError):
    """Something the simulation cannot carry on from (a report that never got an answer)."""


@dataclass(slots=True)
class CallAnswer:
    status: str
    outputs: list[Any]


def status_name(code: ua.StatusCode) -> str:
    return "Good" if code.is_good() else str(code.name)


class Link:
    """One OPC UA session of a virtual PLC, opened on demand and opened again after it breaks."""

    def __init__(
        self,
        endpoint: str,
        name: str,
        account: Account,
        settings: PlcSettings,
        *,
        hold: Callable[[], AbstractContextManager[None]] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.hold = hold or nullcontext
        self.name = name
        self.account = account
        self.settings = settings
        self.ns = 0
        self.connects = 0
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        return self._client is not None

    async def client(self) -> Client:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is not None:  # another task connected while this one waited
                return self._client  # type: ignore[unreachable]
            # The client's own watchdog would take a slow answer for a dead server; the PLC's call
            # timeout decides that here.
            client = Client(self.endpoint, timeout=self.settings.call_timeout, watchdog_intervall=30.0)
            client.name = client.description = f"cell-sim {self.name}"
            client.session_timeout = 60_000
            if self.account.user:
                client.set_user(self.account.user)
                client.set_password(self.account.password)
            try:
                # Logging in costs the gateway an argon2 verification (~0.3 s of its event loop): at
                # hundreds of times real speed that would be hours of lost production, so simulated
                # time stands still meanwhile (the summary reports how long).
                with self.hold():
                    async with asyncio.timeout(self.settings.connect_timeout):
                        await client.connect()
                        self.ns = await client.get_namespace_index(NS_URI)
            except Exception as exc:
                await _discard(client)
                raise LinkDown(f"connect: {exc!r}") from None
            self.connects += 1
            self._client = client
            return client

    async def drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await _discard(client)

    def abort(self) -> None:
        """Cut the connection at once, as a pulled cable would (the session stays for the server to expire)."""
        client = self._client
        protocol = getattr(client.uaclient, "protocol", None) if client is not None else None
        transport = getattr(protocol, "transport", None)
        if transport is not None:
            transport.abort()

    def node_id(self, path: str) -> ua.NodeId:
        return ua.NodeId(path, self.ns)

    async def call(self, obj: str, method: str, inputs: Sequence[ua.Variant], *, cut: bool = False) -> CallAnswer:
        """Call ``obj/method``; ``cut`` cuts the connection right after the request went out."""
        client = await self.client()
        request = ua.CallMethodRequest(
            ObjectId=self.node_id(obj), MethodId=self.node_id(f"{obj}/{method}"), InputArguments=list(inputs)
        )
        try:
            if cut:
                task = asyncio.ensure_future(client.uaclient.call([request]))
                await asyncio.sleep(0)  # the request is written to the socket before the call awaits its answer
                if not task.done():
                    self.abort()
                with suppress(Exception):
                    await task
                raise LinkDown("connection cut after sending (fault: retry)")
            async with asyncio.timeout(self.settings.call_timeout):
                (result,) = await client.uaclient.call([request])
        except LinkDown:
            await self.drop()
            raise
        except (TimeoutError, OSError, ua.UaError, asyncio.IncompleteReadError) as exc:
            await self.drop()
            raise LinkDown(f"{method}: {exc!r}") from None
        except Exception as exc:  # asyncua raises plain Exceptions for some transport errors
            await self.drop()
            raise LinkDown(f"{method}: {exc!r}") from None
        return CallAnswer(status_name(result.StatusCode), [v.Value for v in result.OutputArguments or []])

    async def read(self, path: str) -> Any:
        client = await self.client()
        try:
            async with asyncio.timeout(self.settings.call_timeout):
                return await client.get_node(self.node_id(path)).read_value()
        except ua.uaerrors.BadNodeIdUnknown:
            raise NotPublished(path) from None  # the link is fine: the node is not there
        except Exception as exc:
            await self.drop()
            raise LinkDown(f"read {path}: {exc!r}") from None

    async def write(self, values: Sequence[tuple[str, ua.Variant]]) -> list[str]:
        client = await self.client()
        params = ua.WriteParameters()
        for path, variant in values:
            item = ua.WriteValue()
            item.NodeId = self.node_id(path)
            item.AttributeId = ua.AttributeIds.Value
            item.Value = ua.DataValue(variant)
            params.NodesToWrite.append(item)
        try:
            async with asyncio.timeout(self.settings.call_timeout):
                results = await client.uaclient.write(params)
        except Exception as exc:
            await self.drop()
            raise LinkDown(f"write: {exc!r}") from None
        return [status_name(r) for r in results]


async def _discard(client: Client) -> None:
    try:
        async with asyncio.timeout(2.0):
            await client.disconnect()
    except Exception:  # the server may be gone: the socket is closed below either way
        pass
    finally:
        with suppress(Exception):
            client.disconnect_socket()


class Persistence:
    """Retries with back-off until something works, within ``give_up_after`` wall seconds."""

    def __init__(self, settings: PlcSettings, what: str) -> None:
        self.settings = settings
        self.what = what
        self.started = time.monotonic()
        self.pause = settings.backoff[0]
        self.attempts = 0
        self.last_error = ""

    async def failed(self, error: str) -> None:
        self.attempts += 1
        self.last_error = error
        if time.monotonic() - self.started > self.settings.give_up_after:
            raise SimulationError(
                f"{self.what}: no answer after {self.attempts} attempts in {self.settings.give_up_after:.0f} s "
                f"(last: {error})"
            )
        await asyncio.sleep(self.pause)  # a PLC's retry interval, in wall time
        self.pause = min(self.pause * 2, self.settings.backoff[1])


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
