"""Loading the companion NodeSets (nodesets/SOURCES.md) into the asyncua server, in dependency order.

Two fixes are applied at load time, each for a gap in asyncua 2.1, so the files themselves stay as
published:

- DI 1.05 declares nine objects ``DesignToolOnly="true"`` without a parent (i=73..75, 90..95: templates
  for the functional groups). asyncua does not know the attribute and refuses them
  (BadParentNodeIdInvalid); nothing references them, so they are left out of the text imported.
- Machinery Jobs' ``OutputInfoType`` (i=3009) is an OptionSet derived from Byte. asyncua registers only
  OptionSets derived from the OptionSet structure, so the structure that uses it fails to build
  ("Unknown datatype ... OutputInfo", FreeOpcUa/opcua-asyncio#1869). It is registered first as what
  it is on the wire, a Byte.

The gateway's own namespace must be registered before (it is ``ns=2`` in docs/opcua.md): the companion
namespaces take the indexes after it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from importlib import resources

from asyncua import Server, ua

from gateway.logging import get_logger

log = get_logger(__name__)

DI = "http://opcfoundation.org/UA/DI/"
IA = "http://opcfoundation.org/UA/IA/"
MACHINERY = "http://opcfoundation.org/UA/Machinery/"
ISA95 = "http://opcfoundation.org/UA/ISA95-JOBCONTROL_V2/"
JOBS = "http://opcfoundation.org/UA/Machinery/Jobs/"

#: (namespace, file) in the order they must be loaded: each file needs the ones before it.
NODESETS = (
    (DI, "Opc.Ua.Di.NodeSet2.xml"),
    (IA, "Opc.Ua.IA.NodeSet2.xml"),
    (MACHINERY, "Opc.Ua.Machinery.NodeSet2.xml"),
    (ISA95, "opc.ua.isa95-jobcontrol.nodeset2.xml"),
    (JOBS, "Opc.Ua.Machinery.Jobs.Nodeset2.xml"),
)

_DESIGN_TOOL_ONLY = re.compile(r'<UAObject [^>]*DesignToolOnly="true"[^>]*>.*?</UAObject>\s*', re.S)
_OUTPUT_INFO_TYPE = 3009  # Machinery Jobs' OutputInfoType, an OptionSet on Byte


@dataclass(frozen=True, slots=True)
class Namespaces:
    """The indexes the companion namespaces got in this server."""

    di: int
    ia: int
    machinery: int
    isa95: int
    jobs: int


def nodeset_text(name: str) -> str:
    """A NodeSet file shipped with the gateway, as published."""
    return resources.files("gateway.opcua.standard").joinpath("nodesets", name).read_text(encoding="utf-8")


def prepared(namespace: str, text: str) -> str:
    """The text to import: DI's parentless design-tool objects left out (see the module docstring)."""
    if namespace == DI:
        return _DESIGN_TOOL_ONLY.sub("", text)
    return text


async def load_companions(server: Server) -> Namespaces:
    """Import the five NodeSets into ``server`` (after its own namespace is registered)."""
    started = time.perf_counter()
    for namespace, name in NODESETS:
        if namespace == JOBS:
            index = await server.register_namespace(JOBS)
            ua.register_basetype("OutputInfoType", ua.NodeId(_OUTPUT_INFO_TYPE, index), ua.Byte)
        await server.import_xml(xmlstring=prepared(namespace, nodeset_text(name)))
    found = [await server.get_namespace_index(namespace) for namespace, _ in NODESETS]
    log.info("companion_specs_loaded", seconds=round(time.perf_counter() - started, 2), namespaces=found)
    return Namespaces(*found)
