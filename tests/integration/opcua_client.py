"""A thin test client for the gateway's OPC UA interface: calls by browse path, results as OPC UA sees them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asyncua import Client, ua

NS_URI = "urn:cell-gateway"


@dataclass
class Result:
    status: ua.StatusCode
    outputs: list[Any]
    input_results: list[ua.StatusCode]

    @property
    def ok(self) -> bool:
        return bool(self.status.is_good())

    @property
    def code(self) -> str:
        return str(self.status.name)


class CellClient:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.ns = 0

    async def setup(self) -> CellClient:
        self.ns = await self.client.get_namespace_index(NS_URI)
        return self

    def node(self, path: str) -> Any:
        return self.client.get_node(ua.NodeId(path, self.ns))

    async def call(self, obj: str, method: str, *args: Any) -> Result:
        request = ua.CallMethodRequest(
            ObjectId=ua.NodeId(obj, self.ns),
            MethodId=ua.NodeId(f"{obj}/{method}", self.ns),
            InputArguments=[_variant(a) for a in args],
        )
        (result,) = await self.client.uaclient.call([request])
        return Result(result.StatusCode, [v.Value for v in result.OutputArguments], list(result.InputArgumentResults))

    async def station(self, station: str, method: str, *args: Any) -> Result:
        return await self.call(f"Cell/Stations/{station}", method, *args)

    async def jobs(self, method: str, *args: Any) -> Result:
        return await self.call("Cell/Jobs", method, *args)

    async def parts(self, method: str, *args: Any) -> Result:
        return await self.call("Cell/Parts", method, *args)

    async def units(self, method: str, *args: Any) -> Result:
        return await self.call("Cell/Units", method, *args)

    async def read(self, path: str) -> Any:
        return await self.node(path).read_value()

    async def wait_for(self, path: str, expected: Any, within: float = 5.0) -> Any:
        """Wait until a variable has a value (published after commit), without sleeping blindly: each
        round is a Read request to the server, which is what paces the loop."""
        async with asyncio.timeout(within):
            while True:
                value = await self.read(path)
                if value == expected:
                    return value


def _variant(value: Any) -> ua.Variant:
    if isinstance(value, ua.Variant):
        return value
    if isinstance(value, bool):
        return ua.Variant(value, ua.VariantType.Boolean)
    if isinstance(value, str):
        return ua.Variant(value, ua.VariantType.String)
    if isinstance(value, int):
        return ua.Variant(value, ua.VariantType.UInt32)
    if isinstance(value, float):
        return ua.Variant(value, ua.VariantType.Double)
    if isinstance(value, datetime):
        return ua.Variant(value, ua.VariantType.DateTime)
    if value is None:
        return ua.Variant(None, ua.VariantType.Null)
    if isinstance(value, list):
        return ua.Variant(value, ua.VariantType.String, is_array=True)
    raise TypeError(value)


def i32(value: int) -> ua.Variant:
    return ua.Variant(value, ua.VariantType.Int32)


NOW = None  # SourceTime Null: the gateway uses the time of receipt
