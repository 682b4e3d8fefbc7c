"""The companion NodeSets the gateway ships: pinned, and loaded whole into a real asyncua server."""

from __future__ import annotations

import hashlib
from importlib import resources

from asyncua import Server, ua

from gateway.opcua.address_space import NAMESPACE_URI
from gateway.opcua.standard.companion import JOBS, MACHINERY, NODESETS, load_companions
from simulators.gateway_process import free_port

# SHA-256 of each file as published in node-opcua-nodesets 2.185.0 (nodesets/SOURCES.md): a file changed
# by hand, or replaced by another version, fails here before it changes the address space.
PINNED = {
    "Opc.Ua.Di.NodeSet2.xml": "40a02d98a8b2a014",
    "Opc.Ua.IA.NodeSet2.xml": "8ac55e581540258e",
    "Opc.Ua.Machinery.NodeSet2.xml": "1bc4ba9f70d07c51",
    "opc.ua.isa95-jobcontrol.nodeset2.xml": "52327e736beb604c",
    "Opc.Ua.Machinery.Jobs.Nodeset2.xml": "9faccdac87a47709",
}


def test_the_shipped_nodesets_are_the_pinned_ones() -> None:
    folder = resources.files("gateway.opcua.standard").joinpath("nodesets")
    assert [name for _, name in NODESETS] == list(PINNED)
    for name, prefix in PINNED.items():
        digest = hashlib.sha256(folder.joinpath(name).read_bytes()).hexdigest()
        assert digest.startswith(prefix), name


async def test_the_nodesets_load_after_the_gateway_namespace_with_their_types() -> None:
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{free_port()}/probe/")
    try:
        own = await server.register_namespace(NAMESPACE_URI)
        found = await load_companions(server)
        assert own == 2  # docs/opcua.md: the gateway's nodes are ns=2, whatever else is loaded
        assert [found.di, found.ia, found.machinery, found.isa95, found.jobs] == [3, 4, 5, 6, 7]
        assert await server.get_namespace_index(MACHINERY) == found.machinery
        assert await server.get_namespace_index(JOBS) == found.jobs
        # The types a MES browses for: JobManagementType, MachineryItemState, the Machines folder.
        job_management = server.get_node(ua.NodeId(1003, found.jobs))
        assert (await job_management.read_browse_name()).Name == "JobManagementType"
        item_state = server.get_node(ua.NodeId(1002, found.machinery))
        assert (await item_state.read_browse_name()).Name == "MachineryItemState_StateMachineType"
        machines = server.get_node(ua.NodeId(1001, found.machinery))
        assert (await machines.read_browse_name()).Name == "Machines"
        # The structure the Machinery Jobs fix makes buildable, and the job order a MES sends.
        assert hasattr(ua, "OutputInformationDataType")
        assert "JobOrderID" in ua.ISA95JobOrderDataType.__dataclass_fields__
    finally:
        await server.stop()
