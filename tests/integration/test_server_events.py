"""The gateway's events on the Server object (``Server -HasNotifier-> Cell``), where integration tools
subscribe by default, with Cell still the narrower notifier.

A real gateway (demo cell) and an asyncua client with four subscriptions: on Cell (the control, as every
other test subscribes), and on the Server object with BaseEventType (a tool's default, no where clause),
with every gateway type (their fields selected) and with RejectionEventType alone (a type filter). A
unit refused on a held job must reach each once, as one event. "Once" is read behind a fence: a later
event raised after it has arrived, and a subscription's events come in the order they were raised.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua

from gateway.config import CellConfig
from tests.integration.opcua_client import NOW, i32
from tests.integration.opcua_support import (
    EventLog,
    Session,
    cell_toml,
    event_type_nodes,
    good,
    refused,
    serving,
    subscribe_server,
)


@pytest.fixture
async def session(tmp_path: Path, make_config: Callable[..., CellConfig]) -> AsyncIterator[Session]:
    async with serving(make_config(cell_toml(tmp_path))) as running:  # anonymous = engineer in the demo
        yield running


def with_event_id(log: EventLog, report_event_id: str) -> list[Any]:
    return [e for e in log.of("RejectionEventType") if getattr(e, "ReportEventId", None) == report_event_id]


async def test_a_refusal_reaches_subscribers_on_the_server_object_once_and_cell_still(session: Session) -> None:
    gw, cell, on_cell = session.gateway, session.cell, session.events
    client = cell.client
    types = await event_type_nodes(client)
    everything = await subscribe_server(client, types)  # BaseEventType: what a tool subscribes by default
    gateway_types = await subscribe_server(client, types, *types)
    rejections = await subscribe_server(client, types, "RejectionEventType")

    # The address space says where the events go: Server -HasNotifier-> Cell, a notifier itself.
    notified = await client.nodes.server.get_referenced_nodes(ua.ObjectIds.HasNotifier, ua.BrowseDirection.Forward)
    assert [n.nodeid for n in notified] == [cell.node("Cell").nodeid]
    assert await cell.node("Cell").read_event_notifier() == {ua.EventNotifier.SubscribeToEvents}

    await good(cell.jobs("CreateJob", "J-H", "PN-1", "A", 5, None, i32(0), 0.0, [], []))
    await good(cell.jobs("Release", "J-H"))
    await good(cell.jobs("Hold", "J-H", "quality alert"))
    _, at_cell = await refused(
        gw,
        on_cell,
        cell.station("L1", "LoadCompleted", "L1-1", "P1", "J-H", 1, [], NOW),
        "BadInvalidState",
        "JobOnHold",
        Job="J-H",
    )
    # The fence: a later refusal, raised after the first was delivered to every notifier.
    await refused(gw, on_cell, cell.jobs("Release", "J-NONE"), "BadNotFound", "NotFound")
    for log in (gateway_types, rejections):
        await log.wait_for("RejectionEventType", Reason="NotFound")
    await everything.wait_until(lambda e: len(everything.of("RejectionEventType")) == 2, "the fence")

    # On Server, with every field: once, the same event (EventId) as on Cell, its source Cell.
    (on_server,) = with_event_id(gateway_types, "L1-1")
    (at_cell_only,) = with_event_id(on_cell, "L1-1")  # the control: Cell's subscriber still gets it, once
    assert at_cell_only.EventId == at_cell.EventId
    assert on_server.EventId == at_cell.EventId
    assert on_server.SourceNode == cell.node("Cell").nodeid
    assert on_server.SourceName == "Cell"
    assert on_server.Message.Text == at_cell.Message.Text
    assert "refused (JobOnHold)" in on_server.Message.Text
    assert (on_server.Reason, on_server.Station, on_server.Pallet, on_server.Job, on_server.ReportEventId) == (
        "JobOnHold",
        "L1",
        "P1",
        "J-H",
        "L1-1",
    )
    assert on_server.Severity == at_cell.Severity
    held = await gateway_types.wait_for("JobStateChangedEventType", Job="J-H", ToState="Hold")
    assert held.SourceNode == cell.node("Cell").nodeid

    # A tool's default subscription (BaseEventType, no where clause): every gateway event, once, its
    # type and source named (the gateway's own fields are not selected by BaseEventType).
    first, fence = everything.of("RejectionEventType")
    assert first.EventId == at_cell.EventId
    assert fence.EventId != first.EventId
    assert first.SourceNode == cell.node("Cell").nodeid
    assert first.Message.Text == at_cell.Message.Text
    assert [e.EventId for e in everything.events].count(at_cell.EventId) == 1
    assert everything.of("JobStateChangedEventType"), "the job's state changes reach the default subscriber"

    # The type filter (OfType RejectionEventType): the refusals only, each once.
    assert [e.Reason for e in rejections.events] == ["JobOnHold", "NotFound"]
    assert {rejections.type_of(e) for e in rejections.events} == {"RejectionEventType"}
    (filtered,) = with_event_id(rejections, "L1-1")
    assert filtered.EventId == at_cell.EventId


async def test_a_tag_write_refused_reaches_the_server_object(session: Session) -> None:
    """A refusal raised outside a commit (a tag write of the wrong type) takes the same way up the chain."""
    cell = session.cell
    types = await event_type_nodes(cell.client)
    rejections = await subscribe_server(cell.client, types, "RejectionEventType")
    async with session.connect("plc-load") as plc:
        for tag, variant in (  # the second is the fence
            ("PalletPresent", ua.Variant(1, ua.VariantType.Int32)),
            ("CycleActive", ua.Variant([True], ua.VariantType.Boolean)),
        ):
            node = plc.node(f"Cell/Stations/L1/Tags/{tag}").nodeid
            (status,) = await plc.client.uaclient.write_attributes([node], [ua.DataValue(variant)])
            assert status.name == "BadTypeMismatch"
    at_cell = await session.events.wait_for("RejectionEventType", Reason="InvalidArgument", Station="L1")
    await rejections.wait_for_count("RejectionEventType", 2)
    first, fence = rejections.events
    assert first.EventId == at_cell.EventId
    assert "write of PalletPresent at L1 refused" in first.Message.Text
    assert "write of CycleActive at L1 refused" in fence.Message.Text
