"""The gateway's OPC UA server: the address space of docs/opcua.md, built from the cell's config.

An adapter only: it turns OPC UA calls into service commands and service results into OPC UA answers.
Node ids are string ids under the gateway namespace that follow the browse path (``Cell/Stations/L1``),
so a PLC programmer can write them down and they stay the same across restarts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from asyncua import ua
from asyncua.common.node import Node
from asyncua.server.server import Server

from gateway.config import CellConfig
from gateway.logging import get_logger

log = get_logger(__name__)

NAMESPACE_URI = "urn:cell-gateway"


@dataclass(slots=True)
class StationNodes:
    """The nodes of one station that the gateway writes to or listens on."""

    node: Node
    state: Node
    pallet: Node
    load_instruction: Node
    expected_program: Node
    tag_pallet_present: Node
    tag_cycle_active: Node
    tag_program: Node


@dataclass(slots=True)
class AddressSpace:
    namespace_index: int
    cell: Node
    stations_folder: Node
    stations: dict[str, StationNodes] = field(default_factory=dict)


def node_id(ns: int, path: str) -> ua.NodeId:
    return ua.NodeId(ua.String(path), ua.Int16(ns))


async def _variable(parent: Node, ns: int, path: str, name: str, value: object, vtype: ua.VariantType) -> Node:
    return await parent.add_variable(node_id(ns, f"{path}/{name}"), ua.QualifiedName(name, ns), value, vtype)


async def build_address_space(server: Server, config: CellConfig) -> AddressSpace:
    ns = await server.register_namespace(NAMESPACE_URI)
    cell = await server.nodes.objects.add_object(node_id(ns, "Cell"), ua.QualifiedName("Cell", ns))
    await cell.set_event_notifier([ua.EventNotifier.SubscribeToEvents])
    stations_folder = await cell.add_folder(node_id(ns, "Cell/Stations"), ua.QualifiedName("Stations", ns))
    space = AddressSpace(namespace_index=ns, cell=cell, stations_folder=stations_folder)
    for station in config.stations:
        path = f"Cell/Stations/{station.id}"
        obj = await stations_folder.add_object(node_id(ns, path), ua.QualifiedName(station.id, ns))
        await _variable(obj, ns, path, "Kind", station.kind, ua.VariantType.String)
        await _variable(obj, ns, path, "Groups", list(station.groups), ua.VariantType.String)
        state = await _variable(obj, ns, path, "State", "idle", ua.VariantType.String)
        pallet = await _variable(obj, ns, path, "Pallet", "", ua.VariantType.String)
        instruction = await _variable(obj, ns, path, "LoadInstruction", "", ua.VariantType.String)
        program = await _variable(obj, ns, path, "ExpectedProgram", "", ua.VariantType.String)
        tags = await obj.add_folder(node_id(ns, f"{path}/Tags"), ua.QualifiedName("Tags", ns))
        tpath = f"{path}/Tags"
        present = await _variable(tags, ns, tpath, "PalletPresent", "", ua.VariantType.String)
        active = await _variable(tags, ns, tpath, "CycleActive", False, ua.VariantType.Boolean)
        tprogram = await _variable(tags, ns, tpath, "Program", "", ua.VariantType.String)
        space.stations[station.id] = StationNodes(obj, state, pallet, instruction, program, present, active, tprogram)
    return space


class OpcUaServer:
    """Owns the asyncua server: configure, build the address space, start and stop."""

    def __init__(self, config: CellConfig) -> None:
        self.config = config
        self.server = Server()
        self.space: AddressSpace | None = None

    @property
    def endpoint(self) -> str:
        return self.config.server.endpoint

    async def start(self) -> None:
        server = self.server
        await server.init()
        server.set_endpoint(self.config.server.endpoint)
        server.set_server_name(f"cell-gateway {self.config.cell.name}")
        await server.set_application_uri(f"urn:cell-gateway:{self.config.cell.name}")
        if self.config.server.security_profile == "demo":
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        else:
            raise NotImplementedError("the production security profile is not available yet")
        self.space = await build_address_space(server, self.config)
        await server.start()
        log.info(
            "opcua_listening",
            endpoint=self.endpoint,
            namespace=NAMESPACE_URI,
            profile=self.config.server.security_profile,
            stations=len(self.space.stations),
        )

    async def stop(self) -> None:
        await self.server.stop()
