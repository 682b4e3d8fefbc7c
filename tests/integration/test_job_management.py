"""Machinery Job Management / ISA-95 Job Control on a real gateway, through an asyncua client as an MES
uses it: JobManagement found by its type, job orders stored and started, units produced by the station
methods and counted in JobOrderResults, Pause/Resume/Abort/Cancel, and the refusals with their
ReturnStatus bits (Uncertain, never Bad) and the gateway's own reasons.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, Node, ua

from gateway.config import CellConfig
from gateway.opcua.standard.companion import ISA95, JOBS
from tests.integration.opcua_client import NOW
from tests.integration.opcua_support import (
    Session,
    cell_toml,
    event_type_nodes,
    good,
    model_state,
    serving,
    subscribe_server,
)

NO_ERROR, UNKNOWN_ID, INVALID_STATUS, UNABLE_TO_ACCEPT, INVALID_REQUEST = 1, 2, 8, 16, 1 << 32
DUE = datetime(2027, 1, 15, 12, 0, tzinfo=UTC)


@dataclass(slots=True)
class Mes:
    """What an MES holds after browsing: the JobManagement object's control and results, by node."""

    client: Client
    control: Node
    results: Node
    isa: int

    async def call(self, obj: Node, method: str, *args: ua.Variant) -> tuple[ua.StatusCode, list[Any]]:
        node = await obj.get_child(f"{self.isa}:{method}")
        request = ua.CallMethodRequest(ObjectId=obj.nodeid, MethodId=node.nodeid, InputArguments=list(args))
        (result,) = await self.client.uaclient.call([request])
        return result.StatusCode, [v.Value for v in result.OutputArguments]

    async def order(self, method: str, order: Any, comment: str = "") -> tuple[str, int]:
        status, outputs = await self.call(self.control, method, ua.Variant(order), _comment(comment))
        return status.name, outputs[-1] if outputs else -1

    async def command(self, method: str, job_id: str, comment: str = "") -> tuple[str, int]:
        status, outputs = await self.call(self.control, method, ua.Variant(job_id), _comment(comment))
        return status.name, outputs[-1] if outputs else -1

    async def response(self, job_id: str) -> tuple[str, int, Any]:
        status, outputs = await self.call(self.results, "RequestJobResponseByJobOrderID", ua.Variant(job_id))
        return status.name, outputs[1], outputs[0]

    async def order_list(self) -> dict[str, str]:
        node = await self.control.get_child(f"{self.isa}:JobOrderList")
        return {entry.JobOrder.JobOrderID: entry.State[0].StateText.Text for entry in await node.read_value() or []}

    async def wait_listed(self, expected: dict[str, str], within: float = 5.0) -> None:
        """JobOrderList is written after the commit: read until it shows ``expected`` (each read paces)."""
        async with asyncio.timeout(within):
            while await self.order_list() != expected:
                pass


def _comment(text: str) -> ua.Variant:
    return ua.Variant([ua.LocalizedText(text, "en")] if text else [], ua.VariantType.LocalizedText)


def job_order(job_id: str, *, part: str = "PN-100", quantity: str = "2", revision: str | None = "C") -> Any:
    parameters = [ua.ISA95ParameterDataType(ID="Revision", Value=ua.Variant(revision))] if revision else []
    return ua.ISA95JobOrderDataType(
        JobOrderID=job_id,
        Description=[ua.LocalizedText("brackets for the MES", "en")],
        EndTime=DUE,
        Priority=5,
        JobOrderParameters=parameters,
        MaterialRequirements=[
            ua.ISA95MaterialDataType(MaterialDefinitionID="CAST-7", MaterialUse="Consumed", Quantity="2"),
            ua.ISA95MaterialDataType(MaterialDefinitionID=part, MaterialUse="Produced", Quantity=quantity),
        ],
    )


async def find_job_management(client: Client) -> Mes:
    """Browse from Objects two levels down for the object whose type is JobManagementType: by type, not name."""
    await client.load_data_type_definitions()
    namespaces = await client.get_namespace_array()
    jobs, isa = namespaces.index(JOBS), namespaces.index(ISA95)
    wanted = ua.NodeId(1003, jobs)
    level = [client.nodes.objects]
    for _ in range(2):
        below: list[Node] = []
        for node in level:
            for ref in await node.get_children_descriptions(refs=ua.ObjectIds.HierarchicalReferences):
                if ref.TypeDefinition == wanted:
                    found = client.get_node(ref.NodeId)
                    control = await found.get_child(f"{jobs}:JobOrderControl")
                    return Mes(client, control, await found.get_child(f"{jobs}:JobOrderResults"), isa)
                if ref.NodeClass == ua.NodeClass.Object:
                    below.append(client.get_node(ref.NodeId))
        level = below
    raise AssertionError("no object of JobManagementType under Objects")


@pytest.fixture
def config(tmp_path: Path, make_config: Callable[..., CellConfig]) -> CellConfig:
    return make_config(cell_toml(tmp_path))


@pytest.fixture
async def session(config: CellConfig) -> AsyncIterator[Session]:
    async with serving(config) as running:  # anonymous: the engineer role in the demo profile
        yield running


async def produce(session: Session, job_id: str) -> None:
    """Two units of the job through the demo cell by the station methods: SN-1 finished, SN-2 scrapped."""
    cell, clock = session.cell, session.clock
    await good(cell.station("L1", "PalletArrived", "L1-1", "P1", NOW))
    await cell.wait_for("Cell/Stations/L1/Pallet", "P1")
    await good(cell.station("L1", "LoadCompleted", "L1-2", "P1", job_id, 2, ["SN-1", "SN-2"], NOW))
    await good(cell.station("L1", "PalletDeparted", "L1-3", "P1", NOW))
    for station, program in (("M1", "PRG-MILL-100"), ("W1", "PRG-WASH-1")):
        await good(cell.station(station, "PalletArrived", f"{station}-1", "P1", NOW))
        await good(cell.station(station, "CycleStarted", f"{station}-2", "P1", program, NOW))
        clock.advance(60)
        await good(cell.station(station, "CycleEnded", f"{station}-3", "P1", program, "ok", NOW))
        await good(cell.station(station, "PalletDeparted", f"{station}-4", "P1", NOW))
    await good(cell.station("L2", "PalletArrived", "L2-1", "P1", NOW))
    await good(cell.station("L2", "LoadCompleted", "L2-2", "P1", "", 0, [], NOW))
    await good(cell.station("L2", "PalletDeparted", "L2-3", "P1", NOW))
    await good(cell.station("C1", "ScanIn", "C1-1", "SN-1", NOW))
    await good(cell.station("C1", "ScanOut", "C1-2", "SN-1", "pass", NOW))
    await good(cell.units("Scrap", "C1-3", "SN-2", "dropped at inspection", NOW))


def actuals(response: Any) -> dict[str, str]:
    return {m.MaterialUse: m.Quantity for m in response.MaterialActuals}


async def test_an_mes_stores_starts_counts_pauses_resumes_and_aborts_a_job(session: Session) -> None:
    mes = await find_job_management(session.cell.client)
    assert await mes.order("Store", job_order("J1"), "from the MES") == ("Good", NO_ERROR)
    job = session.gateway.writer.view.jobs["J1"]
    assert (job.part, job.revision, job.quantity, job.due, job.priority) == ("PN-100", "C", 2, DUE, 5)
    await mes.wait_listed({"J1": "NotAllowedToStart"})
    (entry,) = await (await mes.control.get_child(f"{mes.isa}:JobOrderList")).read_value()
    assert entry.State[0].StateNumber == 1
    assert entry.JobOrder.MaterialRequirements[0].Quantity == "2"

    assert await mes.command("Start", "J1") == ("Good", NO_ERROR)
    await mes.wait_listed({"J1": "AllowedToStart"})
    await produce(session, "J1")
    await mes.wait_listed({"J1": "Running"})
    status, bits, response = await mes.response("J1")
    assert (status, bits, response.JobOrderID) == ("Good", NO_ERROR, "J1")
    assert actuals(response) == {"Produced": "1", "Scrapped": "1"}
    assert response.JobState[0].StateText.Text == "Running"

    types = await event_type_nodes(session.cell.client)
    on_server = await subscribe_server(session.cell.client, types, "RejectionEventType")
    assert await mes.command("Pause", "J1", "waiting for fixtures") == ("Good", NO_ERROR)
    await mes.wait_listed({"J1": "Interrupted"})
    held = await session.events.wait_for("JobStateChangedEventType", Job="J1", ToState="Hold")
    assert held.Reason == "waiting for fixtures"
    # A unit for the paused job is refused, and a subscriber on the Server object (where MES and SCADA
    # tools subscribe by default) receives the rejection.
    cell = session.cell
    await good(cell.station("L1", "PalletArrived", "L1-P", "P2", NOW))
    loaded = await cell.station("L1", "LoadCompleted", "L1-Q", "P2", "J1", 1, ["SN-3"], NOW)
    assert loaded.status.name == "BadInvalidState"
    rejection = await on_server.wait_for("RejectionEventType", ReportEventId="L1-Q")
    assert (rejection.Reason, rejection.Job, rejection.SourceNode) == ("JobOnHold", "J1", cell.node("Cell").nodeid)
    assert await mes.command("Resume", "J1") == ("Good", NO_ERROR)
    await mes.wait_listed({"J1": "Running"})

    assert await mes.command("Abort", "J1", "order withdrawn") == ("Good", NO_ERROR)
    await mes.wait_listed({"J1": "Aborted"})  # closed short: 1 of 2 finished
    status, outputs = await mes.call(
        mes.results,
        "RequestJobResponseByJobOrderState",
        ua.Variant([ua.ISA95StateDataType(ua.RelativePath(), ua.LocalizedText("Aborted"), 6)]),
    )
    assert (status.name, outputs[1]) == ("Good", NO_ERROR)
    assert [(r.JobOrderID, actuals(r)) for r in outputs[0]] == [("J1", {"Produced": "1", "Scrapped": "1"})]
    closed = await session.events.wait_for("JobStateChangedEventType", Job="J1", ToState="Closed")
    assert closed.Reason == "order withdrawn"


async def test_refusals_answer_uncertain_with_the_bits_and_the_gateways_reasons(session: Session) -> None:
    mes, events, gateway = await find_job_management(session.cell.client), session.events, session.gateway
    assert await mes.order("StoreAndStart", job_order("J2")) == ("Good", NO_ERROR)  # control: created and released
    await mes.wait_listed({"J2": "AllowedToStart"})

    async def refused(call: Any, answer: tuple[str, int], reason: str) -> None:
        before, mark = model_state(gateway), events.mark()
        assert await call == answer
        await events.wait_for("RejectionEventType", after=mark, Reason=reason)
        assert model_state(gateway) == before, "a refused call changed the cell's state"

    await refused(mes.order("Store", job_order("J2")), ("Uncertain", UNABLE_TO_ACCEPT), "DuplicateId")
    await refused(mes.command("Start", "NOPE"), ("Uncertain", UNKNOWN_ID), "NotFound")
    await refused(mes.command("Start", "J2"), ("Uncertain", INVALID_STATUS), "InvalidTransition")
    await refused(mes.command("Resume", "J2"), ("Uncertain", INVALID_STATUS), "InvalidTransition")
    # Malformed orders: Invalid request, with the gateway's limits, never Bad.
    malformed = (
        job_order("J3", revision=None),  # the gateway needs a revision, as CreateJob does
        job_order("J3", quantity="2.5"),
        job_order("J3", quantity="0"),
        job_order("J3", quantity="1000001"),  # above limits.MAX_JOB_QUANTITY
        job_order("J 3"),  # not a new job id (limits.NEW_JOB_ID)
        job_order("J3", part=""),
        "J3",  # not an ISA95JobOrderDataType
    )
    for order in malformed:
        await refused(mes.order("Store", order), ("Uncertain", INVALID_REQUEST), "InvalidArgument")
    status, _ = await mes.call(mes.control, "Store")  # no arguments at all
    assert status.name == "Uncertain"
    # Cancel: only a job order that has not started; a cancelled one leaves JobOrderList.
    assert await mes.order("Store", job_order("J3", quantity="0002")) == ("Good", NO_ERROR)
    assert session.gateway.writer.view.jobs["J3"].quantity == 2
    await mes.wait_listed({"J2": "AllowedToStart", "J3": "NotAllowedToStart"})
    assert await mes.command("Cancel", "J3", "not needed") == ("Good", NO_ERROR)
    await mes.wait_listed({"J2": "AllowedToStart"})
    await good(session.cell.station("L1", "LoadCompleted", "L1-1", "P1", "J2", 1, [], NOW))
    await mes.wait_listed({"J2": "Running"})
    await refused(mes.command("Cancel", "J2"), ("Uncertain", INVALID_STATUS), "InvalidTransition")
    # What the gateway's jobs cannot do: Unable to accept, nothing changed (no refusal of the cell's).
    before = model_state(gateway)
    assert await mes.command("RevokeStart", "J2") == ("Uncertain", UNABLE_TO_ACCEPT)
    assert await mes.command("Clear", "J2") == ("Uncertain", UNABLE_TO_ACCEPT)
    assert await mes.order("Update", job_order("J2", quantity="5")) == ("Uncertain", UNABLE_TO_ACCEPT)
    assert await mes.command("Clear", "NOPE") == ("Uncertain", UNKNOWN_ID)
    assert model_state(gateway) == before
    status, bits, response = await mes.response("NOPE")
    assert (status, bits, response.JobOrderID) == ("Uncertain", UNKNOWN_ID, "NOPE")


async def test_the_job_roles_apply_to_the_standard_methods(session: Session) -> None:
    for user, expected in (("operator", "BadUserAccessDenied"), ("plc-load", "BadUserAccessDenied"), ("erp", "Good")):
        async with session.connect(user) as cell:
            mes = await find_job_management(cell.client)
            mark = session.events.mark()
            assert (await mes.order("Store", job_order(f"J-{user}")))[0] == expected
            if expected != "Good":
                event = await session.events.wait_for("RejectionEventType", after=mark, Reason="AccessDenied")
                assert user in event.Message.Text
                assert f"J-{user}" not in session.gateway.writer.view.jobs
            # Reading the results is for every role of the gateway.
            assert (await mes.response("J-erp"))[0] in ("Good", "Uncertain")
    assert session.gateway.writer.view.jobs["J-erp"].part == "PN-100"


async def test_store_and_start_whose_release_is_refused_leaves_the_job_created(
    tmp_path: Path, make_config: Callable[..., CellConfig]
) -> None:
    config = make_config(cell_toml(tmp_path, require_approved_templates=True))
    async with serving(config) as session:
        mes = await find_job_management(session.cell.client)
        mark = session.events.mark()
        # Created, then the release refused (no approved template): Uncertain, Unable to accept, still Created.
        assert await mes.order("StoreAndStart", job_order("J4")) == ("Uncertain", UNABLE_TO_ACCEPT)
        await session.events.wait_for("RejectionEventType", after=mark, Reason="ApprovalRequired")
        await mes.wait_listed({"J4": "NotAllowedToStart"})
        assert session.gateway.writer.view.jobs["J4"].state.value == "Created"
        # Control: Store alone is Good on the same cell.
        assert await mes.order("Store", job_order("J5")) == ("Good", NO_ERROR)


async def test_a_method_called_on_another_object_is_refused(session: Session) -> None:
    mes = await find_job_management(session.cell.client)
    store = await mes.control.get_child(f"{mes.isa}:Store")
    request = ua.CallMethodRequest(
        ObjectId=mes.results.nodeid, MethodId=store.nodeid, InputArguments=[ua.Variant(job_order("J6")), _comment("")]
    )
    (result,) = await mes.client.uaclient.call([request])
    assert result.StatusCode.name == "BadMethodInvalid"
    assert "J6" not in session.gateway.writer.view.jobs
    assert await mes.order("Store", job_order("J6")) == ("Good", NO_ERROR)  # control: on its own object


async def test_a_standard_call_during_a_shutdown_is_server_halted_and_changes_nothing(session: Session) -> None:
    """The standard methods pass the same gate as the contract's: once the gateway stops taking calls,
    Start is answered BadServerHalted and the job stays as it was; before, the same call is taken."""
    mes = await find_job_management(session.cell.client)
    assert await mes.order("Store", job_order("SD-1")) == ("Good", 1)
    assert await mes.order("Store", job_order("SD-2")) == ("Good", 1)
    assert await mes.command("Start", "SD-1") == ("Good", 1)  # control: taken while running
    await session.gateway.opcua.stop_taking()
    status, _ = await mes.call(mes.control, "Start", ua.Variant("SD-2"), _comment(""))
    assert status.name == "BadServerHalted"
    await session.gateway.opcua.calls_answered()  # nothing taken is left unanswered
    assert session.gateway.writer.view.jobs["SD-2"].state.value == "Created"
    assert session.gateway.writer.view.jobs["SD-1"].state.value == "Released"
