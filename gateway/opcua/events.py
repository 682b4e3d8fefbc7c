"""The gateway's OPC UA event types, raised on ``Objects/Cell`` after the facts are committed.

Custom fields are named so they never collide with BaseEventType's (``EventId`` and ``Message`` are
the server's own): the PLC's EventId travels as ``ReportEventId``. Clients subscribe to ``Cell`` with
the custom event type so its fields are selected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asyncua import ua

from gateway.logging import get_logger

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
    """Event generators, one per type; fields are set and the event triggered without an await between."""

    generators: dict[str, Any]
    nodes: dict[str, Any]

    async def raise_event(self, type_name: str, message: str, fields: dict[str, Any], severity: int = 500) -> None:
        generator = self.generators[type_name]
        event = generator.event
        for name, _ in EVENT_TYPES[type_name]:
            value = fields.get(name, 0.0 if name == "IdleSeconds" else "")
            setattr(event, name, value)
        event.Severity = severity
        await generator.trigger(message=message)


async def create_event_types(server: Any, ns: int, cell: Any) -> EventTypes:
    generators: dict[str, Any] = {}
    nodes: dict[str, Any] = {}
    for name, fields in EVENT_TYPES.items():
        etype = await server.create_custom_event_type(ns, name, ua.ObjectIds.BaseEventType, fields)
        nodes[name] = etype
        generators[name] = await server.get_event_generator(etype, cell)
    return EventTypes(generators, nodes)
