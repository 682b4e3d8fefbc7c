"""The gateway's own address space as a NodeSet2 file (``cell-gateway export-nodeset``), for the
integration tools that import one to map tags: the namespace ``urn:cell-gateway`` with its event types
and the nodes built from the config, the standard faces included when ``server.companion_specs`` is on.

It is built as :meth:`gateway.opcua.server.OpcUaServer.start` builds it (the gateway's address space,
then the companion NodeSets and the standard faces), in an asyncua server that never listens, over a
writer loaded from an empty store and never run: the address space of a gateway on a fresh database.
So no job is in it (asyncua exports structures nested in arrays wrongly, a live JobOrderList's states
among them), and the method handlers, never called, answer BadNotImplemented.

asyncua writes no ``<Models>`` element: an importer loads the companion NodeSets the file uses first
(:attr:`Exported.requires`, in order), as the gateway does.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.common.ua_utils import get_nodes_of_namespace

from gateway.cell.model import CellModel
from gateway.clock import SystemClock
from gateway.config import CellConfig
from gateway.opcua.address_space import NAMESPACE_URI, MethodHandler, build
from gateway.opcua.calls import CallGate
from gateway.opcua.standard.companion import NODESETS, load_companions
from gateway.opcua.standard.faces import Faces, build_faces
from gateway.opcua.tags import Tags
from gateway.service.writer import Writer
from gateway.storage.memory_store import MemoryStore


@dataclass(frozen=True, slots=True)
class Exported:
    """What was written: the file, how many nodes of the gateway's namespace, and the namespaces an
    importer must have loaded first (the companion specs, in load order; none when they are off)."""

    path: Path
    nodes: int
    requires: tuple[str, ...]


async def export_nodeset(config: CellConfig, model_factory: Callable[[], CellModel], path: Path) -> Exported:
    """Write the address space a gateway with ``config`` starts with to ``path`` (NodeSet2 XML).

    The file is written beside ``path`` and moved over it once complete: a failure leaves ``path`` as
    it was. ``model_factory`` builds the cell's model from the config (``gateway.app.build_model``).
    """
    writer = Writer(MemoryStore(), model_factory, SystemClock())
    await writer.load()  # the cell of a fresh gateway: its stations, no jobs
    try:
        server = Server()
        await server.init()
        tags = Tags(writer, asyncio.Event())
        space = await build(server, config.stations, _not_served, _not_served, tags.start_from)
        requires: tuple[str, ...] = ()
        if config.server.companion_specs:
            companions = await load_companions(server)
            await build_faces(Faces(server, companions, space, config, writer, CallGate(asyncio.Event())))
            requires = tuple(namespace for namespace, _ in NODESETS)
        nodes = await get_nodes_of_namespace(server, [NAMESPACE_URI])
        partial = path.with_name(f".{path.name}.part")
        try:
            await server.export_xml(nodes, str(partial), export_values=True)
            os.replace(partial, path)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    finally:
        writer.close()
    return Exported(path, len(nodes), requires)


def _not_served(*_: Any) -> MethodHandler:
    """The handler of every method in an exported address space: it is never served."""

    async def answer(parent: ua.NodeId, *arguments: Any) -> ua.StatusCode:
        return ua.StatusCode(ua.StatusCodes.BadNotImplemented)

    return answer
