"""The standard faces, built once the companion NodeSets are loaded; each one then follows the writer's
commits on its own (``writer.subscribe``), beside the gateway's own publishing."""

from __future__ import annotations

from dataclasses import dataclass

from asyncua import Server

from gateway.config import CellConfig
from gateway.opcua.address_space import AddressSpace
from gateway.opcua.calls import CallGate
from gateway.opcua.standard.companion import Namespaces
from gateway.opcua.standard.job_management import build_job_management
from gateway.opcua.standard.machinery import build_machinery
from gateway.service.writer import Writer


@dataclass(slots=True)
class Faces:
    """What a standard face needs: the server with the companion namespaces, the gateway's own address
    space (the Cell and its stations), the config and the writer (views to publish, commands to submit)."""

    server: Server
    namespaces: Namespaces
    space: AddressSpace
    config: CellConfig
    writer: Writer
    gate: CallGate  # the server's: closing, and the calls taken and not answered yet


async def build_faces(faces: Faces) -> None:
    """Every standard face, in the address space and following the commits."""
    await build_machinery(faces.server, faces.namespaces, faces.space, faces.config, faces.writer)
    await build_job_management(faces.server, faces.namespaces, faces.space, faces.writer, faces.gate)
