"""The baseline: a bare asyncua server whose station methods do nothing, in its own process.

Same endpoint path, namespace, node ids and method signatures as the gateway's station methods, the
same SecurityPolicy None and anonymous access; the handler answers at once. This is the ceiling a
gateway built on asyncua can approach on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Any

from asyncua import Server, ua

NS_URI = "urn:cell-gateway"


async def noop(parent: ua.NodeId, *args: Any) -> list[ua.Variant]:
    return []


async def serve(port: int, stations: int) -> None:
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/cell-gateway/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace(NS_URI)
    cell = await server.nodes.objects.add_object(ua.NodeId("Cell", ns), ua.QualifiedName("Cell", ns))
    folder = await cell.add_folder(ua.NodeId("Cell/Stations", ns), ua.QualifiedName("Stations", ns))
    arguments = [ua.Argument(Name=n, DataType=ua.NodeId(ua.ObjectIds.String)) for n in ("EventId", "Pallet")]
    arguments.append(ua.Argument(Name="SourceTime", DataType=ua.NodeId(ua.ObjectIds.DateTime)))
    for i in range(stations):
        path = f"Cell/Stations/B{i:03d}"
        obj = await folder.add_object(ua.NodeId(path, ns), ua.QualifiedName(f"B{i:03d}", ns))
        for method in ("PalletArrived", "PalletDeparted"):
            await obj.add_method(ua.NodeId(f"{path}/{method}", ns), ua.QualifiedName(method, ns), noop, arguments, [])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        print("baseline_ready", flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stations", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.stations))


if __name__ == "__main__":
    main()
