"""The gateway's address space (docs/opcua.md), built from the cell's config: Cell with its Stations,
Jobs, Parts and Units, their methods and variables, a station's tags, and the event types raised on Cell
(a notifier under the Server object: ``Server -HasNotifier-> Cell``).

Node ids are string ids under the gateway namespace that follow the browse path (``Cell/Stations/L1``),
so a PLC programmer can write them down; they are the same across restarts. What answers a method call
is given to :func:`build` by the caller (gateway/opcua/calls.py); values are written after each commit
by gateway/opcua/publishing.py.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from asyncua import Node, ua

from gateway.config import Station
from gateway.opcua.arguments import argument_descriptions
from gateway.opcua.contract import (
    JOB_METHODS,
    PART_METHODS,
    STATION_METHODS,
    TAG_TYPES,
    TRACE_INPUTS,
    TRACE_OUTPUTS,
    UNIT_METHODS,
    Method,
)
from gateway.opcua.events import EventTypes, create_event_types
from gateway.opcua.transport import GatewayServer
from gateway.service.answers import safe_text
from gateway.service.views import JobView

NAMESPACE_URI = "urn:cell-gateway"

# What answers a call: asyncua calls it with the ObjectId the call names, then the input variants.
MethodHandler = Callable[..., Awaitable[Any]]


def node_id(ns: int, path: str) -> ua.NodeId:
    return ua.NodeId(path, ns)


_PLAIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_JOBS_CHILDREN = frozenset(method.name for method in JOB_METHODS)


def job_path(job_id: str) -> str:
    """The node id path of a job's object: ``Cell/Jobs/<JobId>`` when the id is plain and names no
    other node there; otherwise a digest of the id, so no id a client chooses can collide with another
    node or make the address space fail (the browse name is still the id)."""
    if _PLAIN_ID.fullmatch(job_id) and job_id not in _JOBS_CHILDREN:
        return f"Cell/Jobs/{job_id}"
    digest = hashlib.sha256(job_id.encode("utf-8", "surrogatepass")).hexdigest()[:24]
    return f"Cell/Jobs/#{digest}"


@dataclass(slots=True)
class StationNodes:
    node: Node
    state: Node
    pallet: Node
    load_instruction: Node
    expected_program: Node
    tags: dict[str, Node]


@dataclass(slots=True)
class AddressSpace:
    namespace_index: int
    cell: Node
    jobs_folder: Node
    events: EventTypes  # the event types, raised on Cell (and so on the Server object)
    stations: dict[str, StationNodes] = field(default_factory=dict)
    jobs: dict[str, dict[str, Node]] = field(default_factory=dict)
    tag_nodes: dict[ua.NodeId, tuple[str, str]] = field(default_factory=dict)  # node -> (station, tag)


JOB_VARIABLES: tuple[tuple[str, ua.VariantType], ...] = (
    ("Part", ua.VariantType.String),
    ("Revision", ua.VariantType.String),
    ("State", ua.VariantType.String),
    ("Quantity", ua.VariantType.UInt32),
    ("MaxQuantity", ua.VariantType.UInt32),
    ("Started", ua.VariantType.UInt32),
    ("Scrapped", ua.VariantType.UInt32),
    ("Finished", ua.VariantType.UInt32),
    ("Wip", ua.VariantType.UInt32),
    ("DueDate", ua.VariantType.DateTime),
    ("Priority", ua.VariantType.Int32),
    ("Routing", ua.VariantType.String),
    ("RoutingSource", ua.VariantType.String),
    ("TargetReached", ua.VariantType.Boolean),
)


def job_values(job: JobView) -> dict[str, Any]:
    return {
        "Part": job.part,
        "Revision": job.revision,
        "State": job.state.value,
        "Quantity": job.quantity,
        "MaxQuantity": job.max_quantity,
        "Started": job.started,
        "Scrapped": job.scrapped,
        "Finished": job.finished,
        "Wip": job.wip,
        "DueDate": job.due,
        "Priority": job.priority,
        "Routing": list(job.routing),
        "RoutingSource": job.routing_source,
        "TargetReached": job.target_reached,
    }


async def build(
    server: GatewayServer,
    stations: Iterable[Station],
    handler: Callable[[Method, str, ua.NodeId], MethodHandler],
    trace: Callable[[ua.NodeId], MethodHandler],
    tags_of: Callable[[str], Mapping[str, Any]],
) -> AddressSpace:
    """The address space: ``handler(method, station, owner)`` answers a method of the object ``owner``
    (station "" for the cell's objects), ``trace(owner)`` Units.Trace, and a station's tags start from
    ``tags_of(station)``."""
    ns = await server.register_namespace(NAMESPACE_URI)
    cell = await server.nodes.objects.add_object(node_id(ns, "Cell"), ua.QualifiedName("Cell", ns))
    await cell.set_event_notifier([ua.EventNotifier.SubscribeToEvents])
    # Cell's events are the Server object's too (where integration tools subscribe by default):
    # Server -HasNotifier-> Cell, delivered up the chain by gateway/opcua/events.py.
    await server.nodes.server.add_reference(cell.nodeid, ua.ObjectIds.HasNotifier)
    stations_folder = await cell.add_folder(node_id(ns, "Cell/Stations"), ua.QualifiedName("Stations", ns))
    jobs = await cell.add_object(node_id(ns, "Cell/Jobs"), ua.QualifiedName("Jobs", ns))
    parts = await cell.add_object(node_id(ns, "Cell/Parts"), ua.QualifiedName("Parts", ns))
    units = await cell.add_object(node_id(ns, "Cell/Units"), ua.QualifiedName("Units", ns))
    station_nodes: dict[str, StationNodes] = {}
    tag_nodes: dict[ua.NodeId, tuple[str, str]] = {}

    async def add_method(parent: Node, path: str, method: Method, station: str) -> None:
        await parent.add_method(
            node_id(ns, f"{path}/{method.name}"),
            ua.QualifiedName(method.name, ns),
            handler(method, station, parent.nodeid),
            argument_descriptions(method.inputs),
            argument_descriptions(method.outputs),
        )

    for method in JOB_METHODS:
        await add_method(jobs, "Cell/Jobs", method, "")
    for method in PART_METHODS:
        await add_method(parts, "Cell/Parts", method, "")
    for method in UNIT_METHODS:
        await add_method(units, "Cell/Units", method, "")
    await units.add_method(
        node_id(ns, "Cell/Units/Trace"),
        ua.QualifiedName("Trace", ns),
        trace(units.nodeid),
        argument_descriptions(TRACE_INPUTS),
        argument_descriptions(TRACE_OUTPUTS),
    )
    for station in stations:
        path = f"Cell/Stations/{station.id}"
        obj = await stations_folder.add_object(node_id(ns, path), ua.QualifiedName(station.id, ns))

        async def var(parent: Node, p: str, name: str, value: Any, vtype: ua.VariantType) -> Node:
            return await parent.add_variable(node_id(ns, f"{p}/{name}"), ua.QualifiedName(name, ns), value, vtype)

        await var(obj, path, "Kind", station.kind, ua.VariantType.String)
        groups = await var(obj, path, "Groups", list(station.groups), ua.VariantType.String)
        await one_dimension(groups)
        state = await var(obj, path, "State", "idle", ua.VariantType.String)
        pallet = await var(obj, path, "Pallet", "", ua.VariantType.String)
        instruction = await var(obj, path, "LoadInstruction", "", ua.VariantType.String)
        program = await var(obj, path, "ExpectedProgram", "", ua.VariantType.String)
        tags_folder = await obj.add_folder(node_id(ns, f"{path}/Tags"), ua.QualifiedName("Tags", ns))
        # A restart must not read a tag PLC's next block as new edges: the tags start from the
        # station state recorded before it (the pallet present, its running cycle and program).
        known = tags_of(station.id)
        tags = {
            name: await var(tags_folder, f"{path}/Tags", name, known[name], vtype) for name, vtype in TAG_TYPES.items()
        }
        for tag_name, tag in tags.items():
            await tag.set_writable()
            tag_nodes[tag.nodeid] = (station.id, tag_name)
        station_nodes[station.id] = StationNodes(obj, state, pallet, instruction, program, tags)
        for method in STATION_METHODS:
            await add_method(obj, path, method, station.id)
    events = await create_event_types(server, ns, cell)
    return AddressSpace(ns, cell, jobs, events, station_nodes, tag_nodes=tag_nodes)


async def add_job(space: AddressSpace, job_id: str, values: Mapping[str, Any]) -> dict[str, Node]:
    """A job's object under Cell/Jobs with its variables, which start at ``values``."""
    ns = space.namespace_index
    path = job_path(job_id)
    name = ua.QualifiedName(safe_text(job_id), ns)
    obj = await space.jobs_folder.add_object(node_id(ns, path), name)
    nodes = {"": obj}
    for var_name, vtype in JOB_VARIABLES:
        initial = values[var_name] if values[var_name] is not None else ua.Variant(None, ua.VariantType.Null)
        nodes[var_name] = await obj.add_variable(
            node_id(ns, f"{path}/{var_name}"), ua.QualifiedName(var_name, ns), initial, vtype
        )
    await one_dimension(nodes["Routing"])
    space.jobs[job_id] = nodes
    return nodes


async def one_dimension(node: Node) -> None:
    """Declare a String[] variable as one-dimensional (asyncua leaves ValueRank 0 for a list)."""
    await node.write_value_rank(1)
    await node.write_array_dimensions([0])
