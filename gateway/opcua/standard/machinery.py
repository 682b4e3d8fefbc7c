"""The Machinery face (OPC 40001-1): each station a machine registered in ``Objects/Machines``, with its
Identification, MachineryItemState and MachineryOperationMode, following the committed view.

Where the machines are
    The stations' own objects (``Cell/Stations/<id>``) are the machines: ``Machines`` Organizes them,
    and the building blocks are added to them beside the contract's variables and methods. Why not
    separate machine objects:

    - 40001-1 defines no ObjectType for a machine (6.3: it "intentionally does not define an ObjectType
      representing a MachineryItem"); its building blocks are AddIns, meant to be applied to whatever
      object stands for the machine. The station objects keep their type (BaseObjectType), browse
      names and node ids as contract v1 has them; only references and children are added.
    - One object per station: a client that finds M1 through ``Machines`` lands on the node a PLC
      programmer knows, with the station's variables and report methods beside the standard state,
      and SCADA tags mapped either way name the same node.
    - Nothing to keep in step: separate objects would be a second copy of every station, in the
      address space and in a NodeSet export.

    ``Objects/Cell`` is registered in ``Machines`` too: 40001-3 looks for JobManagement on a machine
    there, and JobManagement sits under Cell. Cell gets no Identification or building blocks here:
    its hierarchical children are part of contract v1 (the contract test and the node-opcua interop
    test list them exactly: Jobs, Parts, Stations, Units).

Node layout (browse names in the DI and Machinery namespaces; node ids, on the right, in the gateway's,
``<id>`` short for ``Cell/Stations/<id>``)::

    Objects/Machines  -Organizes->  Cell, Cell/Stations/<id>
    Cell/Stations/<id>
      -HasAddIn->      DI:Identification (MachineIdentificationType)     <id>/Identification
                           DI:Manufacturer, DI:Model (when configured),
                           DI:SerialNumber, DI:ProductInstanceUri         <id>/Identification.<name>
      -HasComponent->  Machinery:MachineryBuildingBlocks (FolderType)     <id>/MachineryBuildingBlocks
                           -HasAddIn-> DI:Identification (the same node; 40001-1 6.3)
                           -HasAddIn-> Machinery:MachineryItemState       <id>/MachineryBuildingBlocks/<name>
                           -HasAddIn-> Machinery:MachineryOperationMode   <id>/MachineryBuildingBlocks/<name>
                               each with CurrentState, its Id and Number  ...<name>.CurrentState[.Id|.Number]

    The ids of an instance's own children are asyncua's (parent id + "." + browse name); Number is
    the optional StateVariableType property, added so a client can read the state as a number.

MachineryItemState, from the station's state in the committed view (``StationView.state``)::

    running          Executing      a cycle is open (CycleStarted, no CycleEnded yet)
    idle, occupied   NotExecuting   functional and waiting, with or without a pallet
    down             OutOfService   its last cycle ended INTERRUPTED (reported so, or the pallet left
                                    during it, or another start closed it); until the next cycle
                                    start or a pallet placed there (gateway/tracking/floor.py)
    (no state)       NotAvailable   the view has no state for the station, or one not listed here

MachineryOperationMode: Processing, always. The gateway hears production reports only: none says a
machine is in setup or maintenance, and ``down`` says a cycle was interrupted, not why (a tool break,
an e-stop, an operator's abort); that is MachineryItemState's OutOfService. Publishing Maintenance
for it would be a guess a MES could act on.

Publishing: from ``writer.view`` when built, then after each commit for the stations the batch
changed (``Committed.stations``) only. CurrentState (the state's DisplayName), its Id (the state's
NodeId in the type) and Number (its StateNumber) are written only when the state changes. A station
whose values cannot be written is logged once (and its recovery once); the next commit tries again;
nothing is raised into the writer's feed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from asyncua import Node, Server, ua

from gateway.config import CellConfig, Station
from gateway.logging import get_logger
from gateway.opcua.address_space import AddressSpace
from gateway.opcua.standard.companion import Namespaces
from gateway.service.feed import Committed
from gateway.service.views import CellView, StationView
from gateway.service.writer import Writer

log = get_logger(__name__)

# Machinery's types (nodesets/Opc.Ua.Machinery.NodeSet2.xml, pinned).
MACHINES_FOLDER = 1001
MACHINE_IDENTIFICATION_TYPE = 1012
ITEM_STATE_TYPE = 1002  # MachineryItemState_StateMachineType
OPERATION_MODE_TYPE = 1008  # MachineryOperationModeStateMachineType

#: The station's state in the view -> the MachineryItemState it shows (the table in the docstring).
ITEM_STATES = {
    "running": "Executing",
    "idle": "NotExecuting",
    "occupied": "NotExecuting",
    "down": "OutOfService",
}
NOT_AVAILABLE = "NotAvailable"
#: The only operation mode the gateway can vouch for (see the docstring).
OPERATION_MODE = "Processing"


def item_state(station: StationView | None) -> str:
    """The MachineryItemState name of a station's view (NotAvailable when there is none to map)."""
    if station is None:
        return NOT_AVAILABLE
    return ITEM_STATES.get(station.state, NOT_AVAILABLE)


@dataclass(frozen=True, slots=True)
class State:
    """One state of a standard state machine type, as its CurrentState shows it."""

    text: ua.LocalizedText  # the state's DisplayName
    node_id: ua.NodeId
    number: int


@dataclass(slots=True)
class StateVariables:
    """A state machine instance's CurrentState, its Id and Number, and the state written last."""

    current: ua.NodeId
    id: ua.NodeId
    number: ua.NodeId
    shown: str = ""


class Machines:
    """The stations' MachineryItemState and MachineryOperationMode, written from the committed views."""

    def __init__(
        self,
        server: Server,
        writer: Writer,
        item_states: dict[str, State],
        modes: dict[str, State],
    ) -> None:
        self.server = server
        self.writer = writer
        self.item_states = item_states
        self.modes = modes
        self.stations: dict[str, tuple[StateVariables, StateVariables]] = {}  # station -> (item state, mode)
        self._failing: set[str] = set()  # stations whose last write failed (logged once)

    async def publish(self, view: CellView, station_ids: set[str]) -> None:
        """The named stations' states from ``view``; never raises (see the module docstring)."""
        for station_id in station_ids:
            variables = self.stations.get(station_id)
            if variables is None:
                continue
            item, mode = variables
            try:
                await self._show(item, self.item_states[item_state(view.stations.get(station_id))])
                await self._show(mode, self.modes[OPERATION_MODE])
            except Exception:
                if station_id not in self._failing:
                    self._failing.add(station_id)
                    log.exception("machinery_state_publish_failed", station=station_id)
                continue
            if station_id in self._failing:
                self._failing.discard(station_id)
                log.info("machinery_state_published_again", station=station_id)

    async def on_commit(self, batch: Committed) -> None:
        """After a commit (in the feed's task): the states of the stations the batch changed."""
        try:
            await self.publish(batch.view, batch.stations)
        except Exception:  # publish handles each station's failure; this guards the feed all the same
            log.exception("machinery_publish_failed")

    async def _show(self, variables: StateVariables, state: State) -> None:
        name = str(state.text.Text)
        if variables.shown == name:
            return
        variables.shown = ""  # until all three are written: a write that fails is tried again in full
        produced = self.writer.clock.now()
        for node_id, variant in (
            (variables.current, ua.Variant(state.text, ua.VariantType.LocalizedText)),
            (variables.id, ua.Variant(state.node_id, ua.VariantType.NodeId)),
            (variables.number, ua.Variant(state.number, ua.VariantType.UInt32)),
        ):
            value = ua.DataValue(variant, SourceTimestamp=produced, ServerTimestamp=datetime.now(UTC))
            # The address space's own write answers a status (Server.write_attribute_value drops it):
            # a value not taken must not count as shown, so the next commit writes it again.
            status = await self.server.iserver.aspace.write_attribute_value(node_id, ua.AttributeIds.Value, value)
            status.check()
        variables.shown = name


async def states_of(server: Server, type_id: ua.NodeId) -> dict[str, State]:
    """The states a state machine type declares, by browse name."""
    states = {}
    for child in await server.get_node(type_id).get_children(refs=ua.ObjectIds.HasComponent):
        if await child.read_type_definition() not in (
            ua.NodeId(ua.ObjectIds.StateType),
            ua.NodeId(ua.ObjectIds.InitialStateType),
        ):
            continue
        name = (await child.read_browse_name()).Name
        number = await (await child.get_child("0:StateNumber")).read_value()
        states[name] = State(await child.read_display_name(), child.nodeid, int(number))
    return states


async def add_machine(
    ns: Namespaces, machines: Node, machine: Node, station: Station
) -> tuple[StateVariables, StateVariables]:
    """Register the station's object ``machine`` in Machines and give it its building blocks."""
    await machines.add_reference(machine.nodeid, ua.ObjectIds.Organizes)
    path = str(machine.nodeid.Identifier)
    gw = machine.nodeid.NamespaceIndex
    identification = await identify(machine, ns, station)
    blocks = await machine.add_folder(
        ua.NodeId(f"{path}/MachineryBuildingBlocks", gw), ua.QualifiedName("MachineryBuildingBlocks", ns.machinery)
    )
    await blocks.add_reference(identification.nodeid, ua.ObjectIds.HasAddIn)
    found = []
    for name, type_id in (("MachineryItemState", ITEM_STATE_TYPE), ("MachineryOperationMode", OPERATION_MODE_TYPE)):
        block = await blocks.add_object(
            ua.NodeId(f"{path}/MachineryBuildingBlocks/{name}", gw),
            ua.QualifiedName(name, ns.machinery),
            objecttype=ua.NodeId(type_id, ns.machinery),
            instantiate_optional=False,
        )
        await as_add_in(blocks, block, ua.ObjectIds.Organizes)  # asyncua organizes a folder's objects
        found.append(await state_variables(block))
    item, mode = found
    return item, mode


async def identify(machine: Node, ns: Namespaces, station: Station) -> Node:
    """The machine's Identification: Manufacturer, SerialNumber and ProductInstanceUri (mandatory,
    "" when not configured) and Model (optional: only when configured)."""
    path = f"{machine.nodeid.Identifier}/Identification"
    gw = machine.nodeid.NamespaceIndex
    identification = await machine.add_object(
        ua.NodeId(path, gw),
        ua.QualifiedName("Identification", ns.di),
        objecttype=ua.NodeId(MACHINE_IDENTIFICATION_TYPE, ns.machinery),
        instantiate_optional=False,
    )
    await as_add_in(machine, identification, ua.ObjectIds.HasComponent)
    values: dict[str, ua.Variant] = {
        "Manufacturer": ua.Variant(ua.LocalizedText(station.manufacturer), ua.VariantType.LocalizedText),
        "SerialNumber": ua.Variant(station.serial_number, ua.VariantType.String),
        "ProductInstanceUri": ua.Variant(station.product_instance_uri, ua.VariantType.String),
    }
    for name, variant in values.items():
        await (await identification.get_child(f"{ns.di}:{name}")).write_value(variant)
    if station.model:
        await identification.add_property(
            ua.NodeId(f"{path}.Model", gw),
            ua.QualifiedName("Model", ns.di),
            ua.Variant(ua.LocalizedText(station.model), ua.VariantType.LocalizedText),
        )
    return identification


async def as_add_in(parent: Node, child: Node, added_as: int) -> None:
    """Link ``child`` to ``parent`` with HasAddIn instead of the reference asyncua's add made."""
    await parent.delete_reference(child, added_as, forward=True, bidirectional=True)
    await parent.add_reference(child, ua.ObjectIds.HasAddIn, forward=True, bidirectional=True)


async def state_variables(machine_state: Node) -> StateVariables:
    """CurrentState, its mandatory Id, and Number (added: optional in the type)."""
    current = await machine_state.get_child("0:CurrentState")
    state_id = await current.get_child("0:Id")
    number = await current.add_property(
        ua.NodeId(f"{current.nodeid.Identifier}.Number", current.nodeid.NamespaceIndex),
        ua.QualifiedName("Number", 0),
        ua.Variant(0, ua.VariantType.UInt32),  # written with CurrentState at once
    )
    return StateVariables(current.nodeid, state_id.nodeid, number.nodeid)


async def build_machinery(
    server: Server, ns: Namespaces, space: AddressSpace, config: CellConfig, writer: Writer
) -> Machines:
    """Every station of ``space`` a machine in Machines (and Cell registered there), its nameplate
    from ``config``, its state published from ``writer.view`` now and after each commit."""
    machines_folder = server.get_node(ua.NodeId(MACHINES_FOLDER, ns.machinery))
    await machines_folder.add_reference(space.cell.nodeid, ua.ObjectIds.Organizes)
    item_states = await states_of(server, ua.NodeId(ITEM_STATE_TYPE, ns.machinery))
    modes = await states_of(server, ua.NodeId(OPERATION_MODE_TYPE, ns.machinery))
    missing = ({*ITEM_STATES.values(), NOT_AVAILABLE} - set(item_states)) | ({OPERATION_MODE} - set(modes))
    if missing:  # only if the shipped NodeSet were another one: found at start, not at the first commit
        raise RuntimeError(f"the Machinery NodeSet declares no state {sorted(missing)}")
    machines = Machines(server, writer, item_states, modes)
    for station in config.stations:
        nodes = space.stations.get(station.id)
        if nodes is not None:
            machines.stations[station.id] = await add_machine(ns, machines_folder, nodes.node, station)
    view = writer.view
    await machines.publish(view, set(machines.stations))
    writer.subscribe(machines.on_commit)
    return machines
