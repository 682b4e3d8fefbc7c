"""Shared by the OPC UA integration and interop tests: cell configs, client certificates, event capture.

A test runs a gateway in-process (``running_gateway``) on a free port with its own SQLite file; a demo
config uses the test session's shared server certificate, a production one its own PKI under ``tmp_path``
(clients are trusted by copying their certificate into its ``trusted/`` folder, as an integrator does).
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncua import Client, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID
from sqlalchemy.engine import make_url

from gateway.app import Gateway, running_gateway
from gateway.clock import ManualClock
from gateway.config import CellConfig
from tests.integration.opcua_client import CellClient, Result
from tests.support import DEMO_CONFIG

EVENT_TYPES = (
    "RejectionEventType",
    "AnomalyEventType",
    "JobStateChangedEventType",
    "LostAuditEventType",
    "UnitFinishedEventType",
)


def cell_toml(
    tmp_path: Path, *, profile: str = "demo", require_approved_templates: bool = False, extra: str = ""
) -> Path:
    """The demo cell's TOML, optionally in the production profile (then with its own PKI under tmp_path).

    A demo config keeps ``var/pki``, which ``make_config`` replaces with the test session's shared PKI.
    ``extra`` is appended (more ``[[users]]``, for example).
    """
    text = DEMO_CONFIG.read_text()
    replacements = {
        'security_profile = "demo"': f'security_profile = "{profile}"',
        "require_approved_templates = false": f"require_approved_templates = {str(require_approved_templates).lower()}",
    }
    if profile != "demo":
        replacements['pki_dir = "../var/pki"'] = f'pki_dir = "{tmp_path / "pki"}"'

    for old, new in replacements.items():
        assert old in text, f"config/cell.toml no longer contains {old!r}"
        text = text.replace(old, new)
    path = tmp_path / f"cell-{profile}.toml"
    path.write_text(text + extra)
    return path


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """An OPC UA client application's certificate (DER and PEM) and key, as an integrator makes one."""

    key: Path
    der: Path
    pem: Path
    application_uri: str


async def client_certificate(folder: Path, name: str = "test-client") -> ClientCertificate:
    """A self-signed client application certificate, made with asyncua's helper like the server's own."""
    certificate = _certificate_paths(folder, name)
    await setup_self_signed_certificate(
        certificate.key,
        certificate.der,
        certificate.application_uri,
        socket.gethostname(),
        [ExtendedKeyUsageOID.CLIENT_AUTH],
        {"commonName": name},
    )
    _save_pem(certificate)
    return certificate


def _certificate_paths(folder: Path, name: str) -> ClientCertificate:
    folder.mkdir(parents=True, exist_ok=True)
    uri = f"urn:{socket.gethostname()}:cell-gateway-tests:{name}"
    return ClientCertificate(folder / f"{name}_key.pem", folder / f"{name}_cert.der", folder / f"{name}_cert.pem", uri)


def _save_pem(certificate: ClientCertificate) -> None:
    der = certificate.der.read_bytes()
    certificate.pem.write_bytes(x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM))


def trust(pki_dir: Path, certificate: ClientCertificate) -> None:
    """What an integrator does: put the client's certificate into the gateway's trusted/ folder."""
    trusted = pki_dir / "trusted"
    trusted.mkdir(parents=True, exist_ok=True)
    (trusted / certificate.der.name).write_bytes(certificate.der.read_bytes())


async def secure_client(
    endpoint: str,
    certificate: ClientCertificate,
    server_certificate: Path,
    user: str | None = None,
    password: str | None = None,
    mode: ua.MessageSecurityMode = ua.MessageSecurityMode.SignAndEncrypt,
) -> Client:
    """An asyncua client on a Basic256Sha256 channel, logged in with a user name or anonymously."""
    client = Client(endpoint, timeout=10)
    client.application_uri = certificate.application_uri  # must match the URI in the certificate
    await client.set_security(
        SecurityPolicyBasic256Sha256,
        str(certificate.der),
        str(certificate.key),
        server_certificate=str(server_certificate),
        mode=mode,
    )
    if user is not None:
        client.set_user(user)
        client.set_password(password or "")
    return client


def login(endpoint: str, user: str) -> Client:
    """A demo-profile client (SecurityPolicy None) with the demo password, which equals the user name."""
    client = Client(endpoint, timeout=10)
    client.set_user(user)
    client.set_password(user)
    return client


STATE_TABLES = ("jobs", "units", "routing_templates", "part_specs", "pallets", "stations", "gateway_meta")


def model_state(gateway: Gateway) -> dict[str, Any]:
    """Everything a command can change in the cell's state, as stored (for "nothing changed").

    Read from the database, the truth every reader and a restart see (a closed job may have left the
    writer's memory, which is no change of state); the writer's memory must agree with it.
    """
    path = make_url(gateway.config.database.url).database
    assert path, "model_state reads the gateway's SQLite file"
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        state = {table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall()) for table in STATE_TABLES}
    stored_jobs = {row[0] for row in state["jobs"]}
    assert set(gateway.writer.model.book.jobs) <= stored_jobs, "a job in memory is not in the store"
    return state


class EventLog:
    """Subscription handler: keeps every event raised on Cell and lets a test wait for one."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.names: dict[ua.NodeId, str] = {}  # event type node -> browse name, set when subscribing
        self._changed = asyncio.Event()

    def event_notification(self, event: Any) -> None:
        self.events.append(event)
        self._changed.set()

    def mark(self) -> int:
        """A position: ``wait_for(..., after=mark)`` looks only at events that came after it."""
        return len(self.events)

    def of(self, type_name: str) -> list[Any]:
        return [e for e in self.events if self.type_of(e) == type_name]

    def type_of(self, event: Any) -> str:
        return str(self.names.get(event.EventType, event.EventType))

    async def wait_for(self, type_name: str, *, after: int = 0, within: float = 5.0, **fields: Any) -> Any:
        """The first event of the type (after a mark) whose fields have the given values."""

        def match(event: Any) -> bool:
            return self.type_of(event) == type_name and all(getattr(event, k, None) == v for k, v in fields.items())

        return await self.wait_until(match, f"{type_name} {fields}", after=after, within=within)

    async def wait_for_count(self, type_name: str, count: int, within: float = 10.0) -> list[Any]:
        """All events of the type, once there are ``count`` of them."""

        def enough(_: Any) -> bool:
            return len(self.of(type_name)) >= count

        await self.wait_until(enough, f"{count} x {type_name}", within=within)
        return self.of(type_name)

    async def wait_until(
        self, predicate: Callable[[Any], bool], what: str, *, after: int = 0, within: float = 5.0
    ) -> Any:
        try:
            async with asyncio.timeout(within):
                while True:
                    for event in self.events[after:]:
                        if predicate(event):
                            return event
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            seen = [(self.type_of(e), getattr(e, "Reason", None), str(e.Message.Text)) for e in self.events]
            raise AssertionError(f"no {what} within {within} s; events seen: {seen}") from None


async def event_type_nodes(client: Client) -> dict[str, Any]:
    """The gateway's event types, found the way a client finds them: under BaseEventType, by browse name."""
    base = client.get_node(ua.NodeId(ua.ObjectIds.BaseEventType))
    found = {}
    for ref in await base.get_children_descriptions(refs=ua.ObjectIds.HasSubtype):
        if ref.BrowseName.Name in EVENT_TYPES:
            found[ref.BrowseName.Name] = client.get_node(ref.NodeId)
    assert sorted(found) == sorted(EVENT_TYPES), f"event types under BaseEventType: {sorted(found)}"
    return found


async def subscribe_cell_events(cell: CellClient, log: EventLog | None = None) -> EventLog:
    """Subscribe to every gateway event type on Cell, with the custom types so their fields are selected."""
    log = log or EventLog()
    types = await event_type_nodes(cell.client)
    log.names = {node.nodeid: name for name, node in types.items()}
    subscription = await cell.client.create_subscription(20, log)
    await subscription.subscribe_events(cell.node("Cell"), list(types.values()), queuesize=0)
    return log


async def refused(
    gateway: Gateway, log: EventLog, call: Awaitable[Result], code: str, reason: str, **fields: Any
) -> tuple[Result, Any]:
    """Make a call that must be refused: its status code, a RejectionEventType with its Reason, nothing changed."""
    before, mark = model_state(gateway), log.mark()
    result = await call
    assert result.code == code, f"expected {code}, got {result.code}"
    event = await log.wait_for("RejectionEventType", after=mark, Reason=reason, **fields)
    assert model_state(gateway) == before, "a refused call changed the cell's state"
    return result, event


async def good(call: Awaitable[Result]) -> list[Any]:
    """Make a call that must succeed; its outputs."""
    result = await call
    assert result.ok, f"refused with {result.code}"
    return result.outputs


@dataclass(slots=True)
class Session:
    """A running gateway, one client of it, and the events that client receives from Cell."""

    gateway: Gateway
    cell: CellClient
    events: EventLog
    clock: ManualClock

    @asynccontextmanager
    async def connect(self, user: str) -> AsyncIterator[CellClient]:
        """Another demo-profile client, logged in as ``user`` (the demo password is the user name)."""
        async with login(self.gateway.config.server.endpoint, user) as client:
            yield await CellClient(client).setup()


@asynccontextmanager
async def serving(config: CellConfig, user: str | None = None) -> AsyncIterator[Session]:
    """Run a gateway (on a manual clock) and connect to it, anonymously (engineer in the demo) or as ``user``."""
    clock = ManualClock()
    async with running_gateway(config, clock=clock) as gateway:
        endpoint = config.server.endpoint
        async with login(endpoint, user) if user else Client(endpoint, timeout=10) as client:
            cell = await CellClient(client).setup()
            yield Session(gateway, cell, await subscribe_cell_events(cell), clock)


async def subscribe_server(client: Client, types: dict[str, Any], *selected: str) -> EventLog:
    """A subscription on the Server object (i=2253): ``selected`` event types, or BaseEventType if none."""
    log = EventLog()
    log.names = {node.nodeid: name for name, node in types.items()}
    subscription = await client.create_subscription(20, log)
    evtypes = [types[name] for name in selected] or ua.ObjectIds.BaseEventType
    await subscription.subscribe_events(client.nodes.server, evtypes, queuesize=0)
    return log
