"""``cell-gateway export-nodeset``: the gateway's own address space as NodeSet2 XML.

The command runs as a process on the demo cell's config; the file is imported into a fresh asyncua
server (the companion NodeSets loaded first, as the command says) and its browse tree under
Objects/Cell (browse names with their namespaces, node classes and reference types, recursively) and
the gateway's event types are compared with those of a real gateway running the same config, browsed
by a client. Control: the config with one more station exports a different tree, by that station.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path

from asyncua import Client, Node, Server, ua
from typer.testing import CliRunner

from gateway.app import running_gateway
from gateway.cli.main import app
from gateway.config import CellConfig
from gateway.opcua.address_space import NAMESPACE_URI
from gateway.opcua.contract import STATION_METHODS
from gateway.opcua.standard.companion import NODESETS, load_companions
from tests.integration.opcua_support import cell_toml

Tree = dict[str, str]  # path of browse names "ns-uri:name/..." -> "ReferenceType NodeClass"

ONE_MORE_STATION = """
[[stations]]
id = "M9"
name = "Machining center 9"
kind = "machine"
groups = ["MILL"]
"""


async def export(config: Path, file: Path) -> tuple[int, str]:
    """``cell-gateway export-nodeset FILE --config CONFIG`` as a process: its exit code and output."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CELL_GATEWAY_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "export-nodeset", str(file), "--config", str(config),
        env=environ, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(120):
        output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


async def tree(root: Node, namespaces: list[str], *, only: str | None = None) -> Tree:
    """Every node reached from ``root`` by forward hierarchical references; ``only``: the first level
    restricted to that namespace (the gateway's event types among the standard ones)."""

    def name(qualified: ua.QualifiedName) -> str:
        return f"{namespaces[qualified.NamespaceIndex]}:{qualified.Name}"

    def reference(nodeid: ua.NodeId) -> str:
        return f"{namespaces[nodeid.NamespaceIndex]}|{nodeid.Identifier}"

    found: Tree = {}

    async def walk(node: Node, path: str, above: frozenset[ua.NodeId]) -> None:
        refs = await node.get_references(ua.ObjectIds.HierarchicalReferences, ua.BrowseDirection.Forward)
        for ref in refs:
            if only is not None and not path and namespaces[ref.NodeId.NamespaceIndex] != only:
                continue
            child = f"{path}/{name(ref.BrowseName)}"
            found[child] = f"{reference(ref.ReferenceTypeId)} {ref.NodeClass.name}"
            if ref.NodeId not in above:
                await walk(Node(node.session, ref.NodeId), child, above | {ref.NodeId})

    await walk(root, "", frozenset({root.nodeid}))
    return found


async def gateway_trees(config: CellConfig) -> tuple[Tree, Tree]:
    """The trees under Objects/Cell and the gateway's event types, as a client browses a running gateway."""
    async with running_gateway(config), Client(config.server.endpoint, timeout=10) as client:
        namespaces = await client.get_namespace_array()
        cell = client.get_node(ua.NodeId("Cell", namespaces.index(NAMESPACE_URI)))
        events = client.get_node(ua.NodeId(ua.ObjectIds.BaseEventType))
        return await tree(cell, namespaces), await tree(events, namespaces, only=NAMESPACE_URI)


async def imported_trees(file: Path, *, companions: bool) -> tuple[Tree, Tree]:
    """The same trees in a fresh asyncua server that imported ``file`` (after the companion NodeSets)."""
    server = Server()
    await server.init()
    own = await server.register_namespace(NAMESPACE_URI)
    if companions:
        await load_companions(server)
    await server.import_xml(str(file))
    namespaces = await server.get_namespace_array()
    cell = server.get_node(ua.NodeId("Cell", own))
    # The events' way up survives the export: Server -HasNotifier-> Cell.
    notified = await server.nodes.server.get_referenced_nodes(ua.ObjectIds.HasNotifier, ua.BrowseDirection.Forward)
    assert [n.nodeid for n in notified] == [cell.nodeid]
    assert await cell.read_event_notifier() == {ua.EventNotifier.SubscribeToEvents}
    # The methods' arguments are values (export_values): a tool that imports the file sees them.
    for method in STATION_METHODS:
        node = server.get_node(ua.NodeId(f"Cell/Stations/L1/{method.name}", own))
        arguments = await (await node.get_child("0:InputArguments")).read_value()
        assert [a.Name for a in arguments] == [a.name for a in method.inputs], method.name
    events = server.get_node(ua.NodeId(ua.ObjectIds.BaseEventType))
    return await tree(cell, namespaces), await tree(events, namespaces, only=NAMESPACE_URI)


async def test_the_exported_nodeset_imports_to_the_running_gateways_tree(
    tmp_path: Path, make_config: Callable[..., CellConfig]
) -> None:
    toml = cell_toml(tmp_path)
    config = make_config(toml)
    assert config.server.companion_specs  # the default: the standard faces are in the export
    file = tmp_path / "cell-gateway.NodeSet2.xml"
    code, output = await export(toml, file)
    assert code == 0, output
    assert f"{file}: " in output
    assert f"({len(config.stations)} stations)" in output
    assert "load these NodeSets first, in this order: " + ", ".join(ns for ns, _ in NODESETS) in output
    text = file.read_text(encoding="utf-8")
    assert "<Uri>urn:cell-gateway</Uri>" in text

    running_cell, running_events = await gateway_trees(config)
    cell, events = await imported_trees(file, companions=True)
    assert len(running_cell) > 100  # stations with their variables, tags and methods
    assert sorted(cell) == sorted(running_cell)
    assert cell == running_cell
    assert events == running_events
    assert {path.split("/")[1] for path in events} == {
        f"{NAMESPACE_URI}:{name}"
        for name in (
            "RejectionEventType",
            "AnomalyEventType",
            "JobStateChangedEventType",
            "LostAuditEventType",
            "UnitFinishedEventType",
            "JobTargetReachedEventType",
            "LostAuditActivityEventType",
        )
    }

    # Control: one more station in the config, one more station's subtree in the export, nothing else.
    bigger = tmp_path / "bigger.toml"
    bigger.write_text(toml.read_text() + ONE_MORE_STATION)
    code, output = await export(bigger, tmp_path / "bigger.xml")
    assert code == 0, output
    more, _ = await imported_trees(tmp_path / "bigger.xml", companions=True)
    assert set(running_cell) < set(more)
    station = f"/{NAMESPACE_URI}:Stations/{NAMESPACE_URI}:M9"
    assert {path for path in more if path not in running_cell} == {p for p in more if p.startswith(station)}
    assert f"{station}/{NAMESPACE_URI}:Tags/{NAMESPACE_URI}:PalletPresent" in more


async def test_without_the_companion_specs_the_export_needs_no_other_nodeset(
    tmp_path: Path, make_config: Callable[..., CellConfig]
) -> None:
    toml = cell_toml(tmp_path)
    assert "companion_specs = true" in toml.read_text()
    toml.write_text(toml.read_text().replace("companion_specs = true", "companion_specs = false"))
    config = make_config(toml)
    assert not config.server.companion_specs
    file = tmp_path / "own.xml"
    code, output = await export(toml, file)
    assert code == 0, output
    assert "load these NodeSets first" not in output
    running_cell, running_events = await gateway_trees(config)
    cell, events = await imported_trees(file, companions=False)  # a bare asyncua server takes it
    assert cell == running_cell
    assert events == running_events


runner = CliRunner()


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_bad_config_or_a_missing_folder_writes_nothing(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text(cell_toml(tmp_path).read_text().replace('group = "MILL"', 'group = "MILLL"', 1))
    result = runner.invoke(app, ["export-nodeset", str(tmp_path / "out.xml"), "--config", str(broken)])
    assert result.exit_code == 2
    assert "MILLL" in result.output
    nowhere = tmp_path / "no-such-folder" / "out.xml"
    result = runner.invoke(app, ["export-nodeset", str(nowhere), "--config", str(cell_toml(tmp_path))])
    assert result.exit_code == 3
    assert "no folder" in result.output
    assert files(tmp_path) == ["broken.toml", "cell-demo.toml"]


async def test_a_file_that_cannot_be_written_is_answered_and_nothing_is_left(tmp_path: Path) -> None:
    toml = cell_toml(tmp_path)
    taken = tmp_path / "taken.xml"
    taken.mkdir()  # a folder where the file should go: the finished export cannot replace it
    code, output = await export(toml, taken)
    assert code == 3, output
    assert f"{taken}: cannot write" in output
    assert taken.is_dir()
    assert files(tmp_path) == ["cell-demo.toml", "taken.xml"]  # no partial file left
