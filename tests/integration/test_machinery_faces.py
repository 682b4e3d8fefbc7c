"""The Machinery face (OPC 40001-1) against a real gateway: the stations as machines in Objects/Machines,
their Identification from the config, and their MachineryItemState through cycles and breakdowns.

Everything is found the way a MES finds it: by browse names from Objects and by type, never by the
gateway's node ids; the states' ids and numbers are read from the standard type itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, Node, ua

from gateway.config import CellConfig
from gateway.opcua.standard.companion import DI, MACHINERY
from gateway.opcua.standard.machinery import ITEM_STATES, NOT_AVAILABLE, item_state
from gateway.service.views import StationView
from tests.integration.opcua_client import NOW, CellClient, i32
from tests.integration.opcua_support import Session, cell_toml, good, serving

# Nameplates added to the demo cell: M1 complete, M2 without a model; every other station has none.
M1_NAMEPLATE = """manufacturer = "Example Machine Tools"
model = "VMC-500"
serial_number = "VMC500-0042"
product_instance_uri = "urn:example-machine-tools:vmc-500:0042"
"""
M2_NAMEPLATE = """manufacturer = "Example Machine Tools"
serial_number = "VMC500-0043"
"""


def with_nameplates(path: Path) -> Path:
    text = path.read_text()
    for station, nameplate in (("M1", M1_NAMEPLATE), ("M2", M2_NAMEPLATE)):
        block = f'id = "{station}"\n'
        assert text.count(block) == 1, f"config/cell.toml no longer has one station {station}"
        text = text.replace(block, block + nameplate)
    path.write_text(text)
    return path


@pytest.fixture
def config(tmp_path: Path, make_config: Callable[..., CellConfig]) -> CellConfig:
    return make_config(with_nameplates(cell_toml(tmp_path)))


@pytest.fixture
async def session(config: CellConfig) -> AsyncIterator[Session]:
    async with serving(config) as running:
        yield running


# ---------------------------------------------------------------------------- found as a MES finds it
async def machines_folder(client: Client) -> Node:
    machinery = await client.get_namespace_index(MACHINERY)
    return await client.nodes.objects.get_child(f"{machinery}:Machines")


async def machines(client: Client) -> dict[str, Node]:
    """The objects Machines organizes, by browse name."""
    folder = await machines_folder(client)
    found = {}
    for ref in await folder.get_references(refs=ua.ObjectIds.Organizes, direction=ua.BrowseDirection.Forward):
        found[ref.BrowseName.Name] = client.get_node(ref.NodeId)
    return found


async def type_name(node: Node) -> str:
    definition = await node.read_type_definition()
    assert definition is not None
    return str((await Node(node.session, definition).read_browse_name()).Name)


async def add_ins(node: Node) -> dict[str, Node]:
    """What ``node`` references with HasAddIn, by browse name."""
    refs = await node.get_references(refs=ua.ObjectIds.HasAddIn, direction=ua.BrowseDirection.Forward)
    return {ref.BrowseName.Name: Node(node.session, ref.NodeId) for ref in refs}


async def state_machine(client: Client, machine: Node, name: str) -> Node:
    """A machine's MachineryItemState or MachineryOperationMode: its MachineryBuildingBlocks' add-in."""
    machinery = await client.get_namespace_index(MACHINERY)
    blocks = await machine.get_child(f"{machinery}:MachineryBuildingBlocks")
    assert await type_name(blocks) == "FolderType"
    found = await add_ins(blocks)
    assert (await found[name].read_browse_name()).NamespaceIndex == machinery
    return found[name]


@dataclass(frozen=True, slots=True)
class Shown:
    """A state machine's CurrentState, its Id and Number, as read."""

    text: str
    id: ua.NodeId
    number: int


async def shown(machine_state: Node) -> Shown:
    current = await machine_state.get_child("0:CurrentState")
    text = await current.read_value()
    state_id = await (await current.get_child("0:Id")).read_value()
    number = await (await current.get_child("0:Number")).read_value()
    return Shown(text.Text, state_id, number)


async def declared(machine_state: Node, state: str) -> Shown:
    """What CurrentState must show for ``state``: the state as its type (found from the instance) declares it."""
    type_node = Node(machine_state.session, await machine_state.read_type_definition())
    machinery = (await type_node.read_browse_name()).NamespaceIndex
    node = await type_node.get_child(f"{machinery}:{state}")
    number = await (await node.get_child("0:StateNumber")).read_value()
    return Shown((await node.read_display_name()).Text, node.nodeid, number)


@dataclass
class StateWatch:
    """Every CurrentState value of the watched machines' MachineryItemState, in order, per station."""

    names: dict[Any, str] = field(default_factory=dict)  # CurrentState node id -> station
    seen: dict[str, list[str]] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def datachange_notification(self, node: Node, value: Any, data: Any) -> None:
        self.seen.setdefault(self.names[node.nodeid], []).append(value.Text)
        self.changed.set()

    async def until(self, station: str, state: str, within: float = 5.0) -> None:
        """Until the station's newest CurrentState is ``state`` (published after the commit)."""
        try:
            async with asyncio.timeout(within):
                while (self.seen.get(station) or [None])[-1] != state:
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(f"{station} never showed {state}: {self.seen.get(station)}") from None


async def watch(cell: CellClient, stations: list[str]) -> tuple[StateWatch, dict[str, Node]]:
    """Subscribe to the stations' MachineryItemState/CurrentState; each station's MachineryItemState."""
    found = await machines(cell.client)
    log = StateWatch()
    states, currents = {}, []
    for station in stations:
        states[station] = await state_machine(cell.client, found[station], "MachineryItemState")
        current = await states[station].get_child("0:CurrentState")
        log.names[current.nodeid] = station
        currents.append(current)
    subscription = await cell.client.create_subscription(20, log)
    await subscription.subscribe_data_change(currents, queuesize=10)
    for station in stations:
        await log.until(station, "NotExecuting")  # the first notification: the value now
    return log, states


async def shows(states: dict[str, Node], station: str, state: str) -> None:
    """CurrentState, Id and Number all say ``state``, as the standard type declares it."""
    machine_state = states[station]
    assert await shown(machine_state) == await declared(machine_state, state), station


# ---------------------------------------------------------------------------- the tests
async def test_machines_lists_the_cell_and_every_station_as_their_own_objects(
    session: Session, config: CellConfig
) -> None:
    cell = session.cell
    found = await machines(cell.client)
    assert sorted(found) == sorted(["Cell", *(s.id for s in config.stations)])
    # The machines are the gateway's own objects, found again through Objects/Cell/Stations by name.
    assert found["Cell"].nodeid == (await cell.client.nodes.objects.get_child(f"{cell.ns}:Cell")).nodeid
    for station in config.stations:
        path = [f"{cell.ns}:Cell", f"{cell.ns}:Stations", f"{cell.ns}:{station.id}"]
        by_path = await cell.client.nodes.objects.get_child(path)
        assert found[station.id].nodeid == by_path.nodeid
        assert (await found[station.id].read_browse_name()).NamespaceIndex == cell.ns  # unchanged
        assert await type_name(found[station.id]) == "BaseObjectType"  # unchanged
    # Cell keeps exactly the contract's children in the gateway's namespace; the standard JobManagement
    # sits beside them in its own.
    cell_children = [
        await n.read_browse_name() for n in await found["Cell"].get_children(nodeclassmask=ua.NodeClass.Object)
    ]
    assert sorted(n.Name for n in cell_children if n.NamespaceIndex == cell.ns) == [
        "Jobs",
        "Parts",
        "Stations",
        "Units",
    ]
    assert [n.Name for n in cell_children if n.NamespaceIndex != cell.ns] == ["JobManagement"]

    machinery = await cell.client.get_namespace_index(MACHINERY)
    for station in config.stations:
        machine = found[station.id]
        item = await state_machine(cell.client, machine, "MachineryItemState")
        mode = await state_machine(cell.client, machine, "MachineryOperationMode")
        assert await type_name(item) == "MachineryItemState_StateMachineType"
        assert await type_name(mode) == "MachineryOperationModeStateMachineType"
        item_type = Node(item.session, await item.read_type_definition())
        assert (await item_type.read_browse_name()).NamespaceIndex == machinery
        assert await shown(item) == await declared(item, "NotExecuting"), station.id  # nothing happened yet
        assert await shown(mode) == await declared(mode, "Processing"), station.id
        # Identification: an add-in of the machine, and of its MachineryBuildingBlocks (40001-1 6.3).
        identification = (await add_ins(machine))["Identification"]
        blocks = await machine.get_child(f"{machinery}:MachineryBuildingBlocks")
        assert (await add_ins(blocks))["Identification"].nodeid == identification.nodeid
        assert await type_name(identification) == "MachineIdentificationType"


async def test_identification_comes_from_the_config(session: Session, config: CellConfig) -> None:
    client = session.cell.client
    di = await client.get_namespace_index(DI)
    found = await machines(client)

    async def nameplate(station: str) -> dict[str, Any]:
        identification = await found[station].get_child(f"{di}:Identification")
        values = {}
        for prop in await identification.get_properties():
            name = await prop.read_browse_name()
            if name.NamespaceIndex == di:
                value = await prop.read_value()
                values[name.Name] = value.Text if isinstance(value, ua.LocalizedText) else value
        return values

    assert await nameplate("M1") == {
        "Manufacturer": "Example Machine Tools",
        "Model": "VMC-500",
        "SerialNumber": "VMC500-0042",
        "ProductInstanceUri": "urn:example-machine-tools:vmc-500:0042",
    }
    assert config.station("M1").model == "VMC-500"  # read from the TOML file
    # Model is optional: left out when not configured; the mandatory ones are always there.
    assert await nameplate("M2") == {
        "Manufacturer": "Example Machine Tools",
        "SerialNumber": "VMC500-0043",
        "ProductInstanceUri": "",
    }
    # The control: a station without a nameplate.
    assert await nameplate("L1") == {"Manufacturer": "", "SerialNumber": "", "ProductInstanceUri": ""}


async def test_a_machine_cycle_is_not_executing_executing_not_executing(session: Session) -> None:
    cell, clock = session.cell, session.clock
    log, states = await watch(cell, ["L1", "M1", "M3"])
    await good(cell.jobs("CreateJob", "J1", "PN-100", "C", 1, None, i32(0), 0.0, [], []))
    await good(cell.jobs("Release", "J1"))
    await good(cell.station("L1", "PalletArrived", "L1-1", "P1", NOW))
    await good(cell.station("L1", "LoadCompleted", "L1-2", "P1", "J1", 1, ["SN-1"], NOW))
    await good(cell.station("L1", "PalletDeparted", "L1-3", "P1", NOW))

    await good(cell.station("M1", "PalletArrived", "M1-1", "P1", NOW))
    await cell.wait_for("Cell/Stations/M1/State", "occupied")
    await shows(states, "M1", "NotExecuting")  # a pallet waiting is not an activity
    await good(cell.station("M1", "CycleStarted", "M1-2", "P1", "PRG-MILL-100", NOW))
    await log.until("M1", "Executing")
    await shows(states, "M1", "Executing")
    clock.advance(600)
    await good(cell.station("M1", "CycleEnded", "M1-3", "P1", "PRG-MILL-100", "OK", NOW))
    await log.until("M1", "NotExecuting")
    await shows(states, "M1", "NotExecuting")
    await good(cell.station("M1", "PalletDeparted", "M1-4", "P1", NOW))
    await cell.wait_for("Cell/Stations/M1/State", "idle")
    await session.gateway.writer.feed.wait_idle()

    # Each change written once, and only changes: the arrival and departure left it as it was.
    assert log.seen["M1"] == ["NotExecuting", "Executing", "NotExecuting"]
    assert log.seen["L1"] == ["NotExecuting"]  # a load station's pallet and load are no cycle
    # The control: a machine that did nothing.
    assert log.seen["M3"] == ["NotExecuting"]
    await shows(states, "M3", "NotExecuting")


async def test_a_breakdown_is_out_of_service_until_the_next_cycle_or_pallet(session: Session) -> None:
    """An interrupted cycle puts the machine OutOfService; a departure leaves it so; the next cycle
    start, or the next pallet placed there, brings it back (docs/tracking.md: down "until the next
    pallet or cycle"). Empty pallets: the state follows the cycles whatever they carry."""
    cell = session.cell
    log, states = await watch(cell, ["M2", "M3", "M4"])

    await good(cell.station("M2", "PalletArrived", "M2-1", "P2", NOW))
    await good(cell.station("M2", "CycleStarted", "M2-2", "P2", "PRG-MILL-100", NOW))
    await log.until("M2", "Executing")
    await good(cell.station("M2", "CycleEnded", "M2-3", "P2", "PRG-MILL-100", "INTERRUPTED", NOW))
    await log.until("M2", "OutOfService")
    await shows(states, "M2", "OutOfService")
    assert await cell.read("Cell/Stations/M2/State") == "down"
    # The next cycle start: executing again, and a good end is NotExecuting.
    await good(cell.station("M2", "CycleStarted", "M2-4", "P2", "PRG-MILL-100", NOW))
    await log.until("M2", "Executing")
    await good(cell.station("M2", "CycleEnded", "M2-5", "P2", "PRG-MILL-100", "ok", NOW))
    await log.until("M2", "NotExecuting")
    await shows(states, "M2", "NotExecuting")

    # Down again; the pallet leaves: still out of service (nothing has run since); the next pallet placed
    # there brings it back.
    await good(cell.station("M4", "PalletArrived", "M4-1", "P3", NOW))
    await good(cell.station("M4", "CycleStarted", "M4-2", "P3", "PRG-MILL-100", NOW))
    await good(cell.station("M4", "CycleEnded", "M4-3", "P3", "PRG-MILL-100", "interrupted", NOW))
    await log.until("M4", "OutOfService")
    await good(cell.station("M4", "PalletDeparted", "M4-4", "P3", NOW))
    await cell.wait_for("Cell/Stations/M4/Pallet", "")
    await session.gateway.writer.feed.wait_idle()
    await shows(states, "M4", "OutOfService")
    await good(cell.station("M4", "PalletArrived", "M4-5", "P4", NOW))
    await log.until("M4", "NotExecuting")
    await shows(states, "M4", "NotExecuting")
    await session.gateway.writer.feed.wait_idle()

    assert log.seen["M2"] == ["NotExecuting", "Executing", "OutOfService", "Executing", "NotExecuting"]
    assert log.seen["M4"] == ["NotExecuting", "Executing", "OutOfService", "NotExecuting"]
    assert log.seen["M3"] == ["NotExecuting"]  # the control


def test_the_state_table() -> None:
    """Every state the gateway gives a station has a MachineryItemState; anything else is NotAvailable."""

    def view(state: str) -> StationView:
        return StationView("M1", "machine", state, "", "", "", "", "", ())

    assert {s: item_state(view(s)) for s in ("idle", "occupied", "running", "down")} == {
        "idle": "NotExecuting",
        "occupied": "NotExecuting",
        "running": "Executing",
        "down": "OutOfService",
    }
    assert set(ITEM_STATES) == {"idle", "occupied", "running", "down"}
    assert item_state(None) == NOT_AVAILABLE
    assert item_state(view("exploded")) == NOT_AVAILABLE


async def test_without_companion_specs_there_is_no_machines_folder(
    tmp_path: Path, make_config: Callable[..., CellConfig]
) -> None:
    path = with_nameplates(cell_toml(tmp_path))
    text = path.read_text()
    assert text.count("companion_specs = true") == 1
    path.write_text(text.replace("companion_specs = true", "companion_specs = false"))
    config = make_config(path)
    assert config.server.companion_specs is False
    async with serving(config) as session:
        cell = session.cell
        namespaces = await cell.client.get_namespace_array()
        assert MACHINERY not in namespaces
        assert DI not in namespaces
        assert cell.ns == 2  # the gateway's own namespace, as docs/opcua.md says
        objects = [(await n.read_browse_name()).Name for n in await cell.client.nodes.objects.get_children()]
        assert "Machines" not in objects
        assert "Cell" in objects
        # The contract works as ever: a cycle, published in the station's own variables.
        m1 = await cell.client.nodes.objects.get_child([f"{cell.ns}:Cell", f"{cell.ns}:Stations", f"{cell.ns}:M1"])
        names = [(await n.read_browse_name()).Name for n in await m1.get_children()]
        assert "MachineryBuildingBlocks" not in names
        assert "Identification" not in names
        await good(cell.station("M1", "PalletArrived", "M1-1", "P1", NOW))
        await good(cell.station("M1", "CycleStarted", "M1-2", "P1", "PRG-MILL-100", NOW))
        await cell.wait_for("Cell/Stations/M1/State", "running")
        await good(cell.station("M1", "CycleEnded", "M1-3", "P1", "PRG-MILL-100", "interrupted", NOW))
        await cell.wait_for("Cell/Stations/M1/State", "down")


async def test_a_state_that_cannot_be_written_is_logged_once_and_the_rest_goes_on(
    session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    """A fault in the address space: M3's CurrentState is removed through the server's own API. Its
    writes fail; the failure is logged once, never raised into the feed: the other machines and the
    gateway's own contract go on being published."""
    cell = session.cell
    log, states = await watch(cell, ["M1"])
    m3 = await state_machine(cell.client, (await machines(cell.client))["M3"], "MachineryItemState")
    server = session.gateway.opcua.server
    current = await m3.get_child("0:CurrentState")
    await server.delete_nodes([server.get_node(current.nodeid)], recursive=True)

    def failures() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "machinery_state_publish_failed" in str(r.msg)]

    await good(cell.station("M3", "PalletArrived", "M3-1", "P5", NOW))
    for n in range(2):  # two cycles: two failed writes of Executing
        await good(cell.station("M3", "CycleStarted", f"M3-s{n}", "P5", "PRG-MILL-100", NOW))
        await cell.wait_for("Cell/Stations/M3/State", "running")  # the contract's own variable
        await good(cell.station("M1", "PalletArrived", f"M1-a{n}", f"P{n + 1}", NOW))
        await good(cell.station("M1", "CycleStarted", f"M1-s{n}", f"P{n + 1}", "PRG-MILL-100", NOW))
        await log.until("M1", "Executing")  # the control: another machine, in the same commits' wake
        await good(cell.station("M1", "CycleEnded", f"M1-e{n}", f"P{n + 1}", "PRG-MILL-100", "ok", NOW))
        await good(cell.station("M1", "PalletDeparted", f"M1-d{n}", f"P{n + 1}", NOW))
        await log.until("M1", "NotExecuting")
        await good(cell.station("M3", "CycleEnded", f"M3-e{n}", "P5", "PRG-MILL-100", "ok", NOW))
        await cell.wait_for("Cell/Stations/M3/State", "occupied")
    await session.gateway.writer.feed.wait_idle()

    (failure,) = failures()  # logged once, with the station
    assert "M3" in str(failure.msg)
    assert log.seen["M1"] == ["NotExecuting", *["Executing", "NotExecuting"] * 2]
    await shows(states, "M1", "NotExecuting")


async def test_a_restart_shows_the_stored_states_before_any_report(config: CellConfig) -> None:
    """The states are published from the view loaded at start, not only after a commit: a machine
    down (or in a cycle) when the gateway stopped is shown so at once."""
    async with serving(config) as session:
        cell = session.cell
        await good(cell.station("M1", "PalletArrived", "M1-1", "P1", NOW))
        await good(cell.station("M1", "CycleStarted", "M1-2", "P1", "PRG-MILL-100", NOW))
        await good(cell.station("M2", "PalletArrived", "M2-1", "P2", NOW))
        await good(cell.station("M2", "CycleStarted", "M2-2", "P2", "PRG-MILL-100", NOW))
        await good(cell.station("M2", "CycleEnded", "M2-3", "P2", "PRG-MILL-100", "interrupted", NOW))
        await cell.wait_for("Cell/Stations/M2/State", "down")
    async with serving(config) as session:
        cell = session.cell
        found = await machines(cell.client)
        states = {s: await state_machine(cell.client, found[s], "MachineryItemState") for s in ("M1", "M2", "M3")}
        await shows(states, "M1", "Executing")
        await shows(states, "M2", "OutOfService")
        await shows(states, "M3", "NotExecuting")  # the control
