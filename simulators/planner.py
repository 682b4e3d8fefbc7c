"""The people around the cell: a planner (engineer) who creates, releases and splits jobs, and a
monitor that listens to the gateway's RejectionEventType and AnomalyEventType events."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from asyncua import Client, ua

from simulators.link import NS_URI, CallAnswer, Link, LinkDown, NotPublished, Persistence, SimulationError
from simulators.scenario import Account, PlcSettings

JOB_COUNTS = ("State", "Quantity", "MaxQuantity", "Started", "Scrapped", "Finished", "Wip")


class Planner:
    """Job commands carry no EventId, so a retried one is made safe by hand: explicit JobIds, and a
    refusal after a lost answer is checked against what the gateway now shows."""

    def __init__(self, link: Link) -> None:
        self.link = link

    async def _call(self, obj: str, method: str, *inputs: ua.Variant) -> tuple[CallAnswer, int]:
        persist = Persistence(self.link.settings, f"planner {method}")
        while True:
            try:
                return await self.link.call(obj, method, inputs), persist.attempts + 1
            except LinkDown as exc:
                await persist.failed(str(exc))

    async def create_job(
        self,
        job_id: str,
        part: str,
        revision: str,
        quantity: int,
        due: datetime | None,
        priority: int,
        buffer: float,
        steps: tuple[str, ...],
    ) -> None:
        answer, attempts = await self._call(
            "Cell/Jobs",
            "CreateJob",
            ua.Variant(job_id, ua.VariantType.String),
            ua.Variant(part, ua.VariantType.String),
            ua.Variant(revision, ua.VariantType.String),
            ua.Variant(quantity, ua.VariantType.UInt32),
            ua.Variant(due, ua.VariantType.DateTime) if due else ua.Variant(None, ua.VariantType.Null),
            ua.Variant(priority, ua.VariantType.Int32),
            ua.Variant(buffer, ua.VariantType.Double),
            ua.Variant(list(steps), ua.VariantType.String, is_array=True),
            ua.Variant([], ua.VariantType.String, is_array=True),
        )
        if answer.status == "Good" or (answer.status == "BadEntryExists" and attempts > 1):
            return
        raise SimulationError(f"CreateJob {job_id} answered {answer.status}")

    async def release(self, job_id: str) -> None:
        answer, attempts = await self._call("Cell/Jobs", "Release", ua.Variant(job_id, ua.VariantType.String))
        if answer.status == "Good":
            return
        if attempts > 1 and await self.read_new_job(job_id, "State") in ("Released", "Running"):
            return
        raise SimulationError(f"Release {job_id} answered {answer.status}")

    async def split(self, job_id: str, serials: list[str]) -> str:
        """Split units off to a child job with the parent's remaining steps; returns the child's id."""
        answer, attempts = await self._call(
            "Cell/Jobs",
            "Split",
            ua.Variant(job_id, ua.VariantType.String),
            ua.Variant(serials, ua.VariantType.String, is_array=True),
            ua.Variant([], ua.VariantType.String, is_array=True),
        )
        if answer.status == "Good":
            return str(answer.outputs[0])
        if attempts > 1:  # the first call may have split them already: ask where the unit is now
            traced = await self.trace(serials[0])
            if traced is not None and traced["job"] != job_id:
                return str(traced["job"])
        raise SimulationError(f"Split {job_id} {serials} answered {answer.status}")

    async def trace(self, serial: str) -> dict[str, Any] | None:
        answer, _ = await self._call("Cell/Units", "Trace", ua.Variant(serial, ua.VariantType.String))
        if answer.status != "Good":
            return None
        found: dict[str, Any] = json.loads(answer.outputs[0])
        return found

    async def read_job(self, job_id: str, name: str) -> Any:
        """A job variable; None when the job's object is not in the address space (a job that is
        closed or done leaves it after the gateway's retention, and is not published after a restart)."""
        persist = Persistence(self.link.settings, f"planner read {job_id}/{name}")
        while True:
            try:
                return await self.link.read(f"Cell/Jobs/{job_id}/{name}")
            except NotPublished:
                return None
            except LinkDown as exc:
                await persist.failed(str(exc))

    async def read_new_job(self, job_id: str, name: str, within: float = 30.0) -> Any:
        """A variable of a job just created or split off: its object appears once the gateway has
        published it, just after the call was answered."""
        deadline = asyncio.get_running_loop().time() + within
        while (value := await self.read_job(job_id, name)) is None:
            if asyncio.get_running_loop().time() > deadline:
                raise SimulationError(f"job {job_id} was not published within {within} s")
            await asyncio.sleep(0.05)
        return value

    async def job_counts(self, job_id: str) -> dict[str, Any] | None:
        """The job's published counts, or None if its object left the address space."""
        counts = {name: await self.read_job(job_id, name) for name in JOB_COUNTS}
        return None if counts["State"] is None else counts

    async def has_room(self, job_ids: list[str]) -> bool:
        """Does any running job still take new units (its cap not reached)?"""
        for job_id in job_ids:
            counts = {n: await self.read_job(job_id, n) for n in ("State", "MaxQuantity", "Started", "Scrapped")}
            if (
                counts["State"] in ("Released", "Running")
                and counts["MaxQuantity"] > counts["Started"] - counts["Scrapped"]
            ):
                return True
        return False


@dataclass(slots=True)
class CellEvents:
    """What the gateway said about refusals and anomalies, from its events on ``Cell``."""

    rejections: dict[tuple[str, str], str] = field(default_factory=dict)  # (station, ReportEventId) -> Reason
    rejection_reasons: Counter[str] = field(default_factory=Counter)
    anomalies: Counter[str] = field(default_factory=Counter)
    subscriptions: int = 0


class Monitor:
    """Subscribes to the gateway's events, and subscribes again after the gateway restarts."""

    def __init__(
        self,
        endpoint: str,
        settings: PlcSettings,
        account: Account,
        *,
        hold: Callable[[], AbstractContextManager[None]] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.settings = settings
        self.account = account
        self.hold = hold or nullcontext
        self.events = CellEvents()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sim-monitor")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while not self._stop.is_set():
            client = Client(self.endpoint, timeout=self.settings.call_timeout)
            client.name = client.description = "cell-sim monitor"
            if self.account.user:
                client.set_user(self.account.user)
                client.set_password(self.account.password)
            try:
                with self.hold():  # a login stalls the gateway: see Link.client
                    async with asyncio.timeout(self.settings.connect_timeout):
                        await client.connect()
                await self._subscribe(client)
                while not self._stop.is_set():
                    try:
                        async with asyncio.timeout(0.5):
                            await self._stop.wait()
                    except TimeoutError:
                        await asyncio.wait_for(client.get_node(ua.ObjectIds.Server_ServerStatus_State).read_value(), 3)
            except Exception:
                pass
            finally:
                try:
                    async with asyncio.timeout(2):
                        await client.disconnect()
                except Exception:
                    client.disconnect_socket()
            if not self._stop.is_set():
                try:
                    async with asyncio.timeout(0.2):
                        await self._stop.wait()
                except TimeoutError:
                    pass

    async def _subscribe(self, client: Client) -> None:
        ns = await client.get_namespace_index(NS_URI)
        base = client.get_node(ua.ObjectIds.BaseEventType)
        types = [await base.get_child(f"{ns}:{name}") for name in ("RejectionEventType", "AnomalyEventType")]
        names = ("RejectionEventType", "AnomalyEventType")
        handler = _Handler(self.events, {t.nodeid: name for t, name in zip(types, names, strict=True)})
        subscription = await client.create_subscription(50, handler)
        cell = client.get_node(ua.NodeId("Cell", ns))
        for etype in types:
            await subscription.subscribe_events(cell, etype)
        self.events.subscriptions += 1


class _Handler:
    def __init__(self, events: CellEvents, types: dict[Any, str]) -> None:
        self.events = events
        self.types = types

    def event_notification(self, event: Any) -> None:
        kind = self.types.get(getattr(event, "EventType", None), "")
        reason = getattr(event, "Reason", "") or ""
        if not reason:
            return
        if kind == "AnomalyEventType":
            self.events.anomalies[reason] += 1
        elif kind == "RejectionEventType":
            self.events.rejection_reasons[reason] += 1
            event_id = getattr(event, "ReportEventId", "") or ""
            if event_id:
                self.events.rejections[(getattr(event, "Station", "") or "cell", event_id)] = reason

    def status_change_notification(self, status: Any) -> None:
        pass
