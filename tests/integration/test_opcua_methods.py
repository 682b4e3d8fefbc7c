"""Every OPC UA method of the contract, called by an asyncua client against a real gateway (demo cell).

The address space is checked the way a client discovers it (browse names, data types, method
arguments); each method is called where it makes sense in a cell's day, and its effect is read back
through the address space, the events on Cell, or the gateway's model.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua

from gateway.config import CellConfig
from tests.integration.opcua_client import NOW, CellClient, i32
from tests.integration.opcua_support import Session, cell_toml, good, refused, serving

OPERATIONS = ["OP10", "OP20", "OP30", "OP40", "OP50"]

# The contract's methods: inputs and outputs as (name, type); "[]" marks a String array.
STATION_METHODS = {
    "PalletArrived": ("EventId:String Pallet:String SourceTime:DateTime", ""),
    "PalletDeparted": ("EventId:String Pallet:String SourceTime:DateTime", ""),
    "LoadCompleted": (
        "EventId:String Pallet:String Job:String Quantity:UInt32 Serials:String[] SourceTime:DateTime",
        "Serials:String[]",
    ),
    "CycleStarted": ("EventId:String Pallet:String Program:String SourceTime:DateTime", ""),
    "CycleEnded": ("EventId:String Pallet:String Program:String Result:String SourceTime:DateTime", ""),
    "StartUnit": ("EventId:String Job:String Serial:String SourceTime:DateTime", "Serial:String"),
    "ScanIn": ("EventId:String Serial:String SourceTime:DateTime", ""),
    "ScanOut": ("EventId:String Serial:String Result:String SourceTime:DateTime", ""),
}
CELL_METHODS = {
    "Jobs": {
        "CreateJob": (
            "JobId:String Part:String Revision:String Quantity:UInt32 DueDate:DateTime Priority:Int32 "
            "YieldBufferPercent:Double Steps:String[] Pallets:String[]",
            "JobId:String",
        ),
        "Release": ("JobId:String", ""),
        "Resume": ("JobId:String", ""),
        "Hold": ("JobId:String Reason:String", ""),
        "Close": ("JobId:String Reason:String", ""),
        "Split": ("JobId:String Serials:String[] Steps:String[]", "ChildJobId:String"),
        "SplitQuantity": ("JobId:String Quantity:UInt32 Steps:String[]", "ChildJobId:String"),
        "Merge": ("TargetJobId:String SourceJobId:String", ""),
    },
    "Parts": {
        "CreateTemplate": ("Part:String Revision:String Steps:String[]", "TemplateId:String"),
        "ApproveTemplate": ("TemplateId:String", ""),
        "DeprecateTemplate": ("TemplateId:String", ""),
        "SetDefaultTemplate": ("Part:String Revision:String TemplateId:String", ""),
        "PromoteRouting": ("JobId:String", "TemplateId:String"),
    },
    "Units": {
        "Trace": ("Serial:String", "Json:String"),
        "Scrap": ("EventId:String Serial:String Reason:String SourceTime:DateTime", ""),
        "ResolveAudit": ("Serial:String Outcome:String", ""),
    },
}
STATION_VARIABLES = {
    "Kind": "String",
    "Groups": "String[]",
    "State": "String",
    "Pallet": "String",
    "LoadInstruction": "String",
    "ExpectedProgram": "String",
}
JOB_VARIABLES = {
    "Part": "String",
    "Revision": "String",
    "State": "String",
    "Quantity": "UInt32",
    "MaxQuantity": "UInt32",
    "Started": "UInt32",
    "Scrapped": "UInt32",
    "Finished": "UInt32",
    "Wip": "UInt32",
    "DueDate": "DateTime",
    "Priority": "Int32",
    "Routing": "String[]",
    "RoutingSource": "String",
    "TargetReached": "Boolean",
}


@pytest.fixture
def config(tmp_path: Path, make_config: Callable[..., CellConfig]) -> CellConfig:
    return make_config(cell_toml(tmp_path))


@pytest.fixture
async def session(config: CellConfig) -> AsyncIterator[Session]:
    async with serving(config) as running:  # anonymous: the engineer role in the demo profile
        yield running


def _signature(arguments: list[ua.Argument]) -> str:
    return " ".join(
        f"{a.Name}:{ua.VariantType(a.DataType.Identifier).name}{'[]' if a.ValueRank == 1 else ''}" for a in arguments
    )


async def _method_signature(cell: CellClient, path: str) -> tuple[str, str]:
    node = cell.node(path)
    found = {}
    for prop in await node.get_properties():
        found[(await prop.read_browse_name()).Name] = _signature(await prop.read_value())
    return found.get("InputArguments", ""), found.get("OutputArguments", "")


async def _variable_type(cell: CellClient, path: str) -> str:
    node = cell.node(path)
    vtype = await node.read_data_type_as_variant_type()
    # ValueRank 1 (one dimension) or 0 (one or more dimensions, what asyncua gives a list value): an array
    return f"{vtype.name}{'[]' if await node.read_value_rank() >= 0 else ''}"


async def _children(cell: CellClient, path: str, node_class: ua.NodeClass | None = None) -> list[str]:
    nodes = await cell.node(path).get_children(nodeclassmask=node_class or ua.NodeClass.Unspecified)
    return sorted([(await n.read_browse_name()).Name for n in nodes])


async def test_the_address_space_is_the_contracts(session: Session, config: CellConfig) -> None:
    cell = session.cell
    assert cell.ns == await cell.client.get_namespace_index("urn:cell-gateway")
    # Found by browsing from Objects, as a client without the node ids does.
    found = await cell.client.nodes.objects.get_child([f"{cell.ns}:Cell", f"{cell.ns}:Stations", f"{cell.ns}:M3"])
    assert found.nodeid == ua.NodeId("Cell/Stations/M3", cell.ns)
    # The contract's objects, in the gateway's namespace (the standard faces sit beside them in theirs).
    objects = await cell.node("Cell").get_children(nodeclassmask=ua.NodeClass.Object)
    names = [(await n.read_browse_name()) for n in objects]
    assert sorted(n.Name for n in names if n.NamespaceIndex == cell.ns) == ["Jobs", "Parts", "Stations", "Units"]
    notifier = await cell.node("Cell").read_event_notifier()
    assert ua.EventNotifier.SubscribeToEvents in notifier

    stations = {s.id: s for s in config.stations}
    assert await _children(cell, "Cell/Stations") == sorted(stations)
    for station_id, station in stations.items():
        path = f"Cell/Stations/{station_id}"
        assert await _children(cell, path, ua.NodeClass.Method) == sorted(STATION_METHODS)
        for name, vtype in STATION_VARIABLES.items():
            assert await _variable_type(cell, f"{path}/{name}") == vtype, f"{path}/{name}"
        assert await cell.read(f"{path}/Kind") == station.kind
        assert await cell.read(f"{path}/Groups") == list(station.groups)
        assert await cell.read(f"{path}/State") == "idle"
        assert await cell.read(f"{path}/Pallet") == ""
        assert await _children(cell, f"{path}/Tags") == ["CycleActive", "PalletPresent", "Program"]
        assert await _variable_type(cell, f"{path}/Tags/CycleActive") == "Boolean"
        assert await _variable_type(cell, f"{path}/Tags/PalletPresent") == "String"
        assert await _variable_type(cell, f"{path}/Tags/Program") == "String"
    for method, (inputs, outputs) in STATION_METHODS.items():
        assert await _method_signature(cell, f"Cell/Stations/W1/{method}") == (inputs, outputs), method
    for folder, methods in CELL_METHODS.items():
        assert await _children(cell, f"Cell/{folder}", ua.NodeClass.Method) == sorted(methods)
        for method, (inputs, outputs) in methods.items():
            assert await _method_signature(cell, f"Cell/{folder}/{method}") == (inputs, outputs), method

    # Jobs/<JobId> appears at release, with the contract's variables.
    await good(cell.jobs("CreateJob", "J-AS", "PN-1", "A", 3, None, i32(0), -1.0, [], []))
    assert await _children(cell, "Cell/Jobs", ua.NodeClass.Object) == []
    await good(cell.jobs("Release", "J-AS"))
    assert await _children(cell, "Cell/Jobs", ua.NodeClass.Object) == ["J-AS"]
    assert await _children(cell, "Cell/Jobs/J-AS") == sorted(JOB_VARIABLES)
    for name, vtype in JOB_VARIABLES.items():
        if name != "DueDate":  # no due date: the variable holds Null until one is set
            assert await _variable_type(cell, f"Cell/Jobs/J-AS/{name}") == vtype, name


async def test_a_unit_goes_through_the_demo_cell_by_station_methods(session: Session) -> None:
    cell, events, clock = session.cell, session.events, session.clock
    # A fact that breaks a rule is recorded, answered Good, and raises an AnomalyEventType.
    await good(cell.station("M2", "PalletDeparted", "M2-7", "P5", NOW))  # never reported arriving
    anomaly = await events.wait_for("AnomalyEventType", ReportEventId="M2-7")
    fields: dict[str, Any] = {k: getattr(anomaly, k) for k in ("Reason", "Station", "Pallet", "Serial", "Job")}
    assert fields == {"Reason": "DepartureWithoutArrival", "Station": "M2", "Pallet": "P5", "Serial": "", "Job": ""}
    assert "P5" in anomaly.Message.Text
    assert anomaly.SourceNode == cell.node("Cell").nodeid

    await good(cell.jobs("CreateJob", "J1", "PN-100", "C", 1, None, i32(0), 0.0, [], []))  # no yield buffer
    await good(cell.jobs("Release", "J1"))

    # OP10 at L1: the pallet arrives, the load station is told what to load, the unit is loaded.
    await good(cell.station("L1", "PalletArrived", "L1-1", "P1", NOW))
    await cell.wait_for("Cell/Stations/L1/Pallet", "P1")
    instruction = json.loads(await cell.read("Cell/Stations/L1/LoadInstruction"))
    assert instruction["load"] == {"job": "J1", "part": "PN-100", "revision": "C", "quantity": 1, "operation": "OP10"}
    clock.advance(60)
    assert await good(cell.station("L1", "LoadCompleted", "L1-2", "P1", "J1", 1, ["SN-1"], NOW)) == [["SN-1"]]
    running = await events.wait_for("JobStateChangedEventType", Job="J1", ToState="Running")
    assert running.FromState == "Released"
    await cell.wait_for("Cell/Jobs/J1/Started", 1)
    await good(cell.station("L1", "PalletDeparted", "L1-3", "P1", NOW))
    await cell.wait_for("Cell/Stations/L1/State", "idle")

    # OP20 at M1 and OP30 at W1: cycles with the step's program.
    for station, program, seconds in (("M1", "PRG-MILL-100", 600), ("W1", "PRG-WASH-1", 120)):
        await good(cell.station(station, "PalletArrived", f"{station}-1", "P1", NOW))
        await cell.wait_for(f"Cell/Stations/{station}/ExpectedProgram", program)
        await good(cell.station(station, "CycleStarted", f"{station}-2", "P1", program, NOW))
        await cell.wait_for(f"Cell/Stations/{station}/State", "running")
        clock.advance(seconds)
        await good(cell.station(station, "CycleEnded", f"{station}-3", "P1", program, "OK", NOW))  # any case
        await cell.wait_for(f"Cell/Stations/{station}/State", "occupied")
        await good(cell.station(station, "PalletDeparted", f"{station}-4", "P1", NOW))

    # OP40 at L2: an unload-only report (Job "", Quantity 0).
    await good(cell.station("L2", "PalletArrived", "L2-1", "P1", NOW))
    await cell.wait_for("Cell/Stations/L2/Pallet", "P1")
    instruction = json.loads(await cell.read("Cell/Stations/L2/LoadInstruction"))
    assert instruction["unload"] == [{"serial": "SN-1", "job": "J1", "next": "OP40"}]
    clock.advance(30)
    assert await good(cell.station("L2", "LoadCompleted", "L2-2", "P1", "", 0, [], NOW)) == [[]]
    await good(cell.station("L2", "PalletDeparted", "L2-3", "P1", NOW))

    # OP50 at C1, a manual scan station: the last step finishes the unit.
    await good(cell.station("C1", "ScanIn", "C1-1", "SN-1", NOW))
    clock.advance(200)
    mark = events.mark()
    await good(cell.station("C1", "ScanOut", "C1-2", "SN-1", "Pass", NOW))
    finished = await events.wait_for("UnitFinishedEventType", after=mark, Serial="SN-1")
    assert finished.Job == "J1"
    assert finished.SourceNode == cell.node("Cell").nodeid
    await cell.wait_for("Cell/Jobs/J1/Finished", 1)
    assert await cell.read("Cell/Jobs/J1/Wip") == 0

    (text,) = await good(cell.units("Trace", "SN-1"))
    trace = json.loads(text)
    assert trace["job"] == "J1"
    assert trace["status"] == "finished"
    steps = [(s["operation"], s["station"], s["result"], s["elapsed"], s["expected"]) for s in trace["steps"]]
    assert steps == [
        ("OP10", "L1", "pass", 60.0, 120.0),
        ("OP20", "M1", "pass", 600.0, 900.0),
        ("OP30", "W1", "pass", 120.0, 180.0),
        ("OP40", "L2", "pass", 30.0, 90.0),
        ("OP50", "C1", "pass", 200.0, 300.0),
    ]


async def test_job_methods_move_a_job_through_its_states(session: Session) -> None:
    cell, events = session.cell, session.events
    due = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)
    (job,) = await good(cell.jobs("CreateJob", "", "PN-7", "B", 4, due, i32(3), 0.0, [], ["P1", "P2"]))
    assert job == "J-0001"
    with pytest.raises(ua.uaerrors.BadNodeIdUnknown):  # a Created job is not on the shop floor yet
        await cell.read(f"Cell/Jobs/{job}/State")

    await good(cell.jobs("Release", job))
    released = await events.wait_for("JobStateChangedEventType", Job=job, ToState="Released")
    assert released.FromState == "Created"
    # a Created job is invisible to the shop floor: its creation raised no event
    assert not [e for e in events.events if getattr(e, "ToState", None) == "Created"]
    await cell.wait_for(f"Cell/Jobs/{job}/State", "Released")
    # a historian or SCADA reads when each value was produced and when the server took it
    state = await cell.node(f"Cell/Jobs/{job}/State").read_data_value()
    assert state.SourceTimestamp == session.clock.now()
    assert state.ServerTimestamp is not None
    values = {name: await cell.read(f"Cell/Jobs/{job}/{name}") for name in JOB_VARIABLES}
    assert values == {
        "Part": "PN-7",
        "Revision": "B",
        "State": "Released",
        "Quantity": 4,
        "MaxQuantity": 4,
        "Started": 0,
        "Scrapped": 0,
        "Finished": 0,
        "Wip": 0,
        "DueDate": due,
        "Priority": 3,
        "Routing": OPERATIONS,
        "RoutingSource": "automatic",
        "TargetReached": False,
    }

    await good(cell.jobs("Hold", job, "material check"))
    await cell.wait_for(f"Cell/Jobs/{job}/State", "Hold")
    held = await events.wait_for("JobStateChangedEventType", Job=job, ToState="Hold")
    assert (held.FromState, held.Reason) == ("Released", "material check")
    await good(cell.jobs("Resume", job))
    await cell.wait_for(f"Cell/Jobs/{job}/State", "Released")

    await good(cell.station("L1", "LoadCompleted", "L1-1", "P1", job, 2, ["A-1", "A-2"], NOW))
    await cell.wait_for(f"Cell/Jobs/{job}/Wip", 2)

    (child,) = await good(cell.jobs("Split", job, ["A-2"], []))
    assert child == f"{job}-R1"
    await events.wait_for("JobStateChangedEventType", Job=child, ToState="Running")
    await cell.wait_for(f"Cell/Jobs/{child}/State", "Running")
    assert await cell.read(f"Cell/Jobs/{child}/Routing") == OPERATIONS[1:]  # the parent's remaining steps
    assert await cell.read(f"Cell/Jobs/{child}/Wip") == 1
    await cell.wait_for(f"Cell/Jobs/{job}/Wip", 1)
    assert session.gateway.writer.model.book.units["A-2"].job_id == child

    await good(cell.jobs("Merge", job, child))
    await cell.wait_for(f"Cell/Jobs/{child}/State", "Closed")
    await cell.wait_for(f"Cell/Jobs/{job}/Wip", 2)
    assert session.gateway.writer.model.book.units["A-2"].job_id == job

    # product.md: split "N units (or a quantity)": 1 of the 2 ordered units not started yet
    await refused(
        session.gateway, events, cell.jobs("SplitQuantity", job, 3, []), "BadInvalidArgument", "InvalidArgument"
    )
    (batch,) = await good(cell.jobs("SplitQuantity", job, 1, ["OP10", "OP20", "OP40"]))
    assert batch == f"{job}-R2"
    await cell.wait_for(f"Cell/Jobs/{batch}/State", "Released")
    assert await cell.read(f"Cell/Jobs/{batch}/Quantity") == 1
    assert await cell.read(f"Cell/Jobs/{batch}/Routing") == ["OP10", "OP20", "OP40"]
    await cell.wait_for(f"Cell/Jobs/{job}/Quantity", 3)

    await good(cell.jobs("Close", job, "short close"))
    await cell.wait_for(f"Cell/Jobs/{job}/State", "Closed")
    closed = await events.wait_for("JobStateChangedEventType", Job=job, ToState="Closed")
    assert (closed.FromState, closed.Reason) == ("Running", "short close")


async def test_part_methods_manage_routing_templates(session: Session) -> None:
    cell = session.cell
    book = session.gateway.writer.model.book
    (template,) = await good(cell.parts("CreateTemplate", "PN-2", "A", ["OP10", "OP20", "OP40"]))
    assert template == "PN-2/A/v1"
    assert book.templates[template].status == "Draft"
    await good(cell.parts("ApproveTemplate", template))
    await good(cell.parts("SetDefaultTemplate", "PN-2", "A", template))
    assert book.specs[("PN-2", "A")].default_template_id == template

    # A job of the part without steps takes the default template, which freezes it.
    await good(cell.jobs("CreateJob", "J-T", "PN-2", "A", 1, None, i32(0), -1.0, [], []))
    await good(cell.jobs("Release", "J-T"))
    await cell.wait_for("Cell/Jobs/J-T/RoutingSource", f"template:{template}")
    assert await cell.read("Cell/Jobs/J-T/Routing") == ["OP10", "OP20", "OP40"]
    assert book.templates[template].status == "Frozen"

    # A custom routing becomes a new draft version.
    await good(cell.jobs("CreateJob", "J-C", "PN-2", "A", 1, None, i32(0), -1.0, ["OP10", "OP20", "OP30"], []))
    assert await good(cell.parts("PromoteRouting", "J-C")) == ["PN-2/A/v2"]
    assert [s.operation for s in book.templates["PN-2/A/v2"].steps] == ["OP10", "OP20", "OP30"]
    assert book.templates["PN-2/A/v2"].status == "Draft"

    await good(cell.parts("DeprecateTemplate", template))
    assert book.templates[template].status == "Deprecated"
    assert book.specs[("PN-2", "A")].default_template_id == ""  # the part is back in automatic mode
    await good(cell.jobs("CreateJob", "J-A", "PN-2", "A", 1, None, i32(0), -1.0, [], []))
    await good(cell.jobs("Release", "J-A"))
    await cell.wait_for("Cell/Jobs/J-A/RoutingSource", "automatic")


async def test_unit_methods_start_scrap_audit_and_trace(session: Session) -> None:
    cell, events, gateway = session.cell, session.events, session.gateway
    book = gateway.writer.model.book
    # A manual line: units start at C1 (the job's only step is OP50, served by C1).
    await good(cell.jobs("CreateJob", "J-M", "PN-3", "A", 3, None, i32(0), 0.0, ["OP50"], []))
    await good(cell.jobs("Release", "J-M"))
    assert await good(cell.station("C1", "StartUnit", "C1-1", "J-M", "", NOW)) == ["DEMO-000001"]
    assert await good(cell.station("C1", "StartUnit", "C1-2", "J-M", "M-2", NOW)) == ["M-2"]
    assert await good(cell.station("C1", "StartUnit", "C1-3", "J-M", "M-3", NOW)) == ["M-3"]
    await good(cell.station("C1", "ScanOut", "C1-4", "DEMO-000001", "pass", NOW))
    await events.wait_for("UnitFinishedEventType", Serial="DEMO-000001", Job="J-M")

    async with session.connect("operator") as operator:
        await good(operator.units("Scrap", "OP-1", "M-2", "dropped", NOW))
    await cell.wait_for("Cell/Jobs/J-M/Scrapped", 1)
    assert book.units["M-2"].status == "scrapped"
    (text,) = await good(cell.units("Trace", "M-2"))
    trace = json.loads(text)
    assert trace["status"] == "scrapped"
    assert [e["kind"] for e in trace["events"]][-1] == "scrapped"

    # Idle for longer than stale_wip_days: the sweeper flags it, an engineer resolves the audit.
    session.clock.advance(timedelta(days=31))
    assert await gateway.sweep() == ["M-3"]
    lost = await events.wait_for("LostAuditEventType", Serial="M-3")
    assert (lost.Job, lost.Station, lost.IdleSeconds) == ("J-M", "C1", 31 * 86400.0)
    assert book.units["M-3"].audit_flagged
    await good(cell.units("ResolveAudit", "M-3", "Found"))
    assert not book.units["M-3"].audit_flagged
    assert book.units["M-3"].status == "in_step"


async def test_the_worked_session_of_the_docs(session: Session) -> None:
    """docs/opcua.md, "A worked session for a PLC programmer", step 4, call by call."""
    cell, events = session.cell, session.events
    await good(cell.jobs("CreateJob", "J1", "PN-100", "C", 1, None, i32(0), 0.0, [], []))
    await good(cell.jobs("Release", "J1"))
    await good(cell.station("L1", "LoadCompleted", "L1-1", "P3", "J1", 1, ["SN-1"], NOW))
    unit = session.gateway.writer.model.book.units["SN-1"]
    t = session.clock.now()
    async with session.connect("plc-mill") as plc:

        async def m1(method: str, *args: Any) -> str:
            return (await plc.station("M1", method, *args)).code

        assert await m1("PalletArrived", "M1-000101", "P3", t) == "Good"
        await cell.wait_for("Cell/Stations/M1/ExpectedProgram", "PRG-MILL-100")
        assert await cell.read("Cell/Stations/M1/State") == "occupied"
        assert await m1("CycleStarted", "M1-000102", "P3", "PRG-MILL-200", t) == "BadRequestNotAllowed"
        refusal = await events.wait_for("RejectionEventType", ReportEventId="M1-000102")
        assert refusal.Reason == "WrongProgram"
        assert "needs program PRG-MILL-100 for OP20, not PRG-MILL-200" in refusal.Message.Text
        assert await m1("CycleStarted", "M1-000103", "P3", "PRG-MILL-100", t) == "Good"
        await cell.wait_for("Cell/Stations/M1/State", "running")
        ended = ("CycleEnded", "M1-000104", "P3", "PRG-MILL-100", "ok", t)
        assert await m1(*ended) == "Good"
        assert await m1(*ended) == "Good"  # the retry after a lost answer: recorded once
        assert unit.next_step == 2
        assert await m1("PalletDeparted", "M1-000105", "P3", t) == "Good"
        await cell.wait_for("Cell/Stations/M1/State", "idle")
        assert await m1("CycleEnded", "M1-000104", "P4", "PRG-MILL-100", "ok", t) == "BadEntryExists"
        assert (await events.wait_for("RejectionEventType", ReportEventId="M1-000104")).Reason == "DuplicateEventId"
        assert await m1("PalletArrived", "M1-000106", "P9", t) == "BadNotFound"
        assert await m1("PalletArrived", "M1-000107") == "BadArgumentsMissing"
        assert await m1("PalletArrived", "M1-000107", "P4") == "Good"
    (text,) = await good(cell.units("Trace", "SN-1"))
    assert [s["operation"] for s in json.loads(text)["steps"]] == ["OP10", "OP20"]  # OP20 once
