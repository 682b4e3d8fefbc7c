"""The gateway's OPC UA event types, raised on ``Objects/Cell`` after the facts are committed, and
the events each applied command raises (:func:`raise_events`).

Custom fields are named so they never collide with BaseEventType's (``EventId`` and ``Message`` are
the server's own): the PLC's EventId travels as ``ReportEventId``. Clients subscribe to ``Cell`` with
the custom event type so its fields are selected.

Every event also reaches the notifiers above Cell in the HasNotifier chain (``Server -HasNotifier->
Cell``: integration tools subscribe to events on the Server object by default). asyncua 2.1 does not
walk that chain: it hands an event only to the monitored items on the node it names as its emitting
node (``MonitoredItemService.trigger_event``; FreeOpcUa/opcua-asyncio#105). So :meth:`EventTypes.raise_event`
delivers one event (one EventId, SourceNode Cell) once per notifier, nearest first: a subscriber on
Server gets it once, a subscriber on Cell once, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from asyncua import Node, ua

from gateway.cell.commands import Command
from gateway.jobs.events import (
    JobStateChanged,
    JobTargetReached,
    LostAuditActivity,
    LostAuditFlagged,
    UnitFinished,
)
from gateway.jobs.model import JobState
from gateway.logging import get_logger
from gateway.service.writer import Applied
from gateway.tracking.reports import Report

log = get_logger(__name__)

S = ua.VariantType.String
REPORT_FIELDS = ("Reason", "Station", "Pallet", "Serial", "Job", "ReportEventId")

EVENT_TYPES: dict[str, list[tuple[str, Any]]] = {
    "RejectionEventType": [(f, S) for f in REPORT_FIELDS],
    "AnomalyEventType": [(f, S) for f in REPORT_FIELDS],
    "JobStateChangedEventType": [("Job", S), ("FromState", S), ("ToState", S), ("Reason", S)],
    "LostAuditEventType": [("Serial", S), ("Job", S), ("Station", S), ("IdleSeconds", ua.VariantType.Double)],
    "UnitFinishedEventType": [("Serial", S), ("Job", S)],
    "JobTargetReachedEventType": [("Job", S), ("Quantity", ua.VariantType.UInt32), ("Finished", ua.VariantType.UInt32)],
    "LostAuditActivityEventType": [("Serial", S), ("Job", S), ("Station", S)],
}


@dataclass(slots=True)
class EventTypes:
    """Event generators, one per type, emitting on Cell; ``notifiers`` are the nodes above Cell in the
    HasNotifier chain (nearest first) and ``deliver`` hands an event to the monitored items on its
    emitting node (asyncua's subscription service)."""

    generators: dict[str, Any]
    nodes: dict[str, Any]
    notifiers: tuple[ua.NodeId, ...]
    deliver: Callable[[Any], Awaitable[None]]
    # One event at a time: a generator's event object is filled, stamped and delivered to every
    # notifier before the next event of any type (delivery awaits the subscriptions' publishing).
    raising: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)

    async def raise_event(self, type_name: str, message: str, fields: dict[str, Any], severity: int = 500) -> None:
        generator = self.generators[type_name]
        event = generator.event
        async with self.raising:
            for name, _ in EVENT_TYPES[type_name]:
                value = fields.get(name, 0.0 if name == "IdleSeconds" else "")
                setattr(event, name, value)
            event.Severity = severity
            await generator.trigger(message=message)  # stamped (EventId, Time, Message), delivered on Cell
            source = event.emitting_node
            try:
                for notifier in self.notifiers:  # the same event, up the chain
                    event.emitting_node = notifier
                    await self.deliver(event)
            finally:
                event.emitting_node = source


async def create_event_types(server: Any, ns: int, cell: Any) -> EventTypes:
    """The event types, their generators on ``cell``, and the notifiers above it (read from the
    HasNotifier references already in the address space)."""
    generators: dict[str, Any] = {}
    nodes: dict[str, Any] = {}
    for name, fields in EVENT_TYPES.items():
        etype = await server.create_custom_event_type(ns, name, ua.ObjectIds.BaseEventType, fields)
        nodes[name] = etype
        generators[name] = await server.get_event_generator(etype, cell)
    notifiers = await notifiers_above(cell)
    return EventTypes(generators, nodes, notifiers, server.iserver.subscription_service.trigger_event)


async def notifiers_above(node: Node) -> tuple[ua.NodeId, ...]:
    """The nodes whose events include ``node``'s: the sources of its inverse HasEventSource references
    (HasNotifier is one), and theirs, nearest first; each once, ``node`` never."""
    found: list[ua.NodeId] = []
    todo = [node]
    while todo:
        current = todo.pop(0)
        refs = await current.get_references(
            ua.ObjectIds.HasEventSource, ua.BrowseDirection.Inverse, includesubtypes=True
        )
        for ref in refs:
            if ref.NodeId != node.nodeid and ref.NodeId not in found:
                found.append(ref.NodeId)
                todo.append(Node(current.session, ref.NodeId))
    return tuple(found)


async def raise_events(events: EventTypes, item: Applied) -> None:
    """The events of one applied command: its refusal, its anomalies, and the jobs' and units' events."""
    answer, command = item.answer, item.command
    common = report_fields(command)
    if answer.reason is not None:
        await events.raise_event(
            "RejectionEventType",
            f"{command.kind} {_where(command)} refused ({answer.reason.value}): {answer.message}",
            {**common, "Reason": answer.reason.value},
        )
    for flag in answer.flags:
        fields: dict[str, Any] = {**common, "Reason": flag.anomaly.value}
        named = {"Serial": flag.serial, "Pallet": flag.pallet, "Job": flag.job}
        fields.update({k: v for k, v in named.items() if v})
        await events.raise_event("AnomalyEventType", flag.message, fields, severity=300)
    for event in item.events:
        if isinstance(event, JobStateChanged) and event.to_state is not JobState.CREATED:
            # a Created job is invisible to the shop floor, in events as in the address space
            await events.raise_event(
                "JobStateChangedEventType",
                f"job {event.job}: {event.from_state or 'new'} -> {event.to_state} ({event.reason})",
                {
                    "Job": event.job,
                    "FromState": event.from_state.value if event.from_state else "",
                    "ToState": event.to_state.value,
                    "Reason": event.reason,
                },
            )
        elif isinstance(event, UnitFinished):
            await events.raise_event(
                "UnitFinishedEventType",
                f"{event.serial} of {event.job} finished",
                {"Serial": event.serial, "Job": event.job},
                severity=100,
            )
        elif isinstance(event, JobTargetReached):
            await events.raise_event(
                "JobTargetReachedEventType",
                f"job {event.job}: {event.finished} of {event.quantity} ordered finished; target reached, "
                "it may be closed",
                {"Job": event.job, "Quantity": event.quantity, "Finished": event.finished},
                severity=300,
            )
        elif isinstance(event, LostAuditActivity):
            await events.raise_event(
                "LostAuditActivityEventType",
                f"{event.serial} of {event.job}, under an open Lost Audit, was active at "
                f"{event.station or 'the cell'}; the audit stays open until an engineer resolves it",
                {"Serial": event.serial, "Job": event.job, "Station": event.station},
                severity=500,
            )
        elif isinstance(event, LostAuditFlagged):
            await events.raise_event(
                "LostAuditEventType",
                f"{event.serial} of {event.job} idle for {event.idle_seconds / 86400:.1f} days: Lost Audit",
                {
                    "Serial": event.serial,
                    "Job": event.job,
                    "Station": event.station,
                    "IdleSeconds": event.idle_seconds,
                },
                severity=700,
            )


def _where(command: Command) -> str:
    return f"at {command.station}" if isinstance(command, Report) and command.station else ""


def report_fields(command: Command) -> dict[str, str]:
    """What a command names, as the events' fields name it (and the canonical log line, in lower case)."""
    if not isinstance(command, Report):
        job = getattr(command, "job_id", "") or getattr(command, "target_job_id", "")
        return {"Job": job, "Serial": getattr(command, "serial", "")}
    return {
        "Station": command.station,
        "ReportEventId": command.event_id,
        "Pallet": getattr(command, "pallet", ""),
        "Serial": getattr(command, "serial", ""),
        "Job": getattr(command, "job", ""),
    }
