"""The OPC UA server says what it is: Server/ServerStatus/BuildInfo names cell-gateway and its version.

Read by a plain asyncua client from a gateway running on its port, as a generic OPC UA tool reads it:
the BuildInfo variables one by one, the BuildInfo structure, the ServerStatus structure, and the
ProductUri in the endpoints' application description.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from asyncua import Client, ua

from gateway import __version__
from gateway.app import running_gateway
from gateway.config import CellConfig
from gateway.opcua.server import build_date

EXPECTED = {
    "ProductName": "cell-gateway",
    "ProductUri": "urn:cell-gateway",
    "ManufacturerName": "cell-gateway project",
    "SoftwareVersion": __version__,
    "BuildNumber": __version__,
}


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def test_build_info_names_the_gateway_and_its_version(make_config: Callable[..., CellConfig]) -> None:
    config = make_config()
    async with running_gateway(config) as _gateway, Client(config.server.endpoint, timeout=10) as client:
        fields = {
            name: await client.get_node(getattr(ua.ObjectIds, f"Server_ServerStatus_BuildInfo_{name}")).read_value()
            for name in (*EXPECTED, "BuildDate")
        }
        structure = await client.get_node(ua.ObjectIds.Server_ServerStatus_BuildInfo).read_value()
        status = await client.get_node(ua.ObjectIds.Server_ServerStatus).read_value()
        endpoints = await client.get_endpoints()

    assert {name: fields[name] for name in EXPECTED} == EXPECTED
    for info in (structure, status.BuildInfo):
        assert isinstance(info, ua.BuildInfo)
        assert {name: getattr(info, name) for name in EXPECTED} == EXPECTED
        assert _utc(info.BuildDate) == _utc(fields["BuildDate"])

    built = _utc(fields["BuildDate"])
    assert abs(built - build_date()) < timedelta(milliseconds=1)
    assert built <= datetime.now(UTC)
    assert status.State == ua.ServerState.Running
    assert {endpoint.Server.ProductUri for endpoint in endpoints} == {"urn:cell-gateway"}
