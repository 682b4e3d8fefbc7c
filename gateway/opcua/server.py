"""The gateway's OPC UA server: the adapter's public face, :class:`OpcUaServer`.

It owns the asyncua server (endpoint, build info, security) and wires the parts of the adapter: the
address space of docs/opcua.md built from the cell's config (address_space.py, from the tables of
contract.py), the method calls (calls.py), the stations' tags (tags.py) and what is published after
each commit (publishing.py). An adapter only: every change goes through the writer.
"""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path

from asyncua import ua
from asyncua.common.callback import CallbackType
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway import __version__
from gateway.config import CellConfig
from gateway.logging import get_logger
from gateway.opcua.address_space import NAMESPACE_URI, AddressSpace, build
from gateway.opcua.calls import Calls
from gateway.opcua.identity import ConfigUserManager, GatewayInternalServer, session_class
from gateway.opcua.publishing import Publisher
from gateway.opcua.standard.companion import Namespaces, load_companions
from gateway.opcua.standard.faces import Faces, build_faces
from gateway.opcua.tags import Tags
from gateway.opcua.transport import Edge, GatewayServer, install
from gateway.security.logins import LoginGuard, login_guard
from gateway.service.writer import Writer

log = get_logger(__name__)

# The server's BuildInfo (Server/ServerStatus/BuildInfo) and the ProductUri of its endpoints.
PRODUCT_NAME = "cell-gateway"
PRODUCT_URI = "urn:cell-gateway"
MANUFACTURER_NAME = "cell-gateway project"

SECURE_POLICIES = [
    ua.SecurityPolicyType.Basic256Sha256_Sign,
    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
]


def build_date() -> datetime:
    """When this copy of the gateway was built or installed: the time of its package metadata (an
    installed wheel or an editable install), else of the ``gateway`` package's files (a source tree)."""
    try:
        dist = metadata.distribution("cell-gateway")
        record = next((f for f in dist.files or () if f.name == "METADATA"), None)
        if record is not None:
            return datetime.fromtimestamp(Path(str(dist.locate_file(record))).stat().st_mtime, UTC)
    except (metadata.PackageNotFoundError, OSError):
        pass
    return datetime.fromtimestamp(Path(__file__).parent.parent.joinpath("__init__.py").stat().st_mtime, UTC)


class OpcUaServer:
    """Owns the asyncua server and its security; wires the address space, calls, tags and publishing."""

    def __init__(
        self, config: CellConfig, writer: Writer, engine: AsyncEngine, logins: LoginGuard | None = None
    ) -> None:
        self.config = config
        self.writer = writer
        self.closing = asyncio.Event()  # shutting down: no new connection, no new call, no new tag write
        self.calls = Calls(writer, engine, self.closing)  # engine: for reads (Trace)
        self.tags = Tags(writer, self.closing)
        self.demo = config.server.security_profile == "demo"
        self.iserver = GatewayInternalServer(user_manager=ConfigUserManager(config))
        edge_limits = config.limits
        self.iserver.session_type = session_class(
            self.tags.may_write, require_secure_channel=not self.demo, max_sessions=edge_limits.max_sessions
        )
        # Password logins (shared with HTTP when given) and the connection limits: gateway/opcua/transport.py.
        self._own_logins = logins is None
        self.logins = logins or login_guard(config)
        self.edge = Edge(edge_limits, self.logins)
        self.edge_stats = self.edge.stats  # counts for the metrics
        self.iserver.on_sessions_full = self.edge.sessions_full
        self.iserver.live_sessions = self.edge.live_sessions
        install(self.iserver, edge_limits)
        self.server = GatewayServer(iserver=self.iserver, edge=self.edge)
        self.publisher = Publisher(self.server, writer, timedelta(hours=config.server.closed_job_retention_hours))
        self.space: AddressSpace | None = None
        self.companions: Namespaces | None = None  # the companion namespaces, when loaded
        self._listening = False

    @property
    def endpoint(self) -> str:
        return self.config.server.endpoint

    # ------------------------------------------------------------------ start and stop
    async def start(self) -> None:
        server = self.server
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name(f"cell-gateway {self.config.cell.name}")
        server.product_uri = PRODUCT_URI
        server.manufacturer_name = MANUFACTURER_NAME
        await server.set_build_info(
            PRODUCT_URI, MANUFACTURER_NAME, PRODUCT_NAME, __version__, __version__, build_date()
        )
        application_uri = f"urn:{socket.gethostname()}:cell-gateway:{self.config.cell.name}"
        await server.set_application_uri(application_uri)
        await self._security(application_uri)
        space = await build(
            server, self.config.stations, self.calls.handler, self.calls.trace_handler, self.tags.start_from
        )
        self.space = self.calls.space = self.tags.space = self.publisher.space = space
        if self.config.server.companion_specs:
            self.companions = await load_companions(server)
            await build_faces(Faces(server, self.companions, space, self.config, self.writer, self.calls.gate))
        server.iserver.callback_service.addListener(CallbackType.PostWrite, self.tags.written, priority=10)
        view = self.writer.view
        await self.publisher.publish_stations(view, set(view.stations))
        self.writer.subscribe(self.publisher.on_commit)
        await server.start()
        self._listening = True
        # Jobs' objects are published once listening: PLCs report at once, while asyncua adds a
        # year's open jobs (14 nodes each, each add scanning its parent's references) over seconds.
        self.publisher.publish_loaded_jobs(view)
        log.info(
            "opcua_listening",
            endpoint=self.endpoint,
            namespace=NAMESPACE_URI,
            profile=self.config.server.security_profile,
            stations=len(space.stations),
        )

    async def stop_taking(self) -> None:
        """The first step of a shutdown: no new connection is accepted and every new method call is
        answered BadServerHalted (not stored); sessions stay open, so the calls taken are answered."""
        self.closing.set()
        bserver = self.server.bserver
        listener = getattr(bserver, "_server", None) if bserver is not None else None
        if listener is not None:
            listener.close()  # stops accepting; connections made before stay open

    async def calls_answered(self) -> None:
        """Until every method call taken before :meth:`stop_taking` has been answered."""
        await self.calls.answered()

    async def stop(self) -> None:
        self.closing.set()
        self._listening = False
        await self.publisher.stop()
        await self.server.stop()
        if self._own_logins:
            self.logins.close()

    async def jobs_published(self) -> None:
        """Until the jobs loaded at start are in the address space (they are published after listening)."""
        await self.publisher.jobs_published()

    async def remove_expired_jobs(self, now: datetime) -> list[str]:
        """Closed (or done) jobs' objects past the retention leave the address space: their ids."""
        return await self.publisher.remove_expired_jobs(now)

    def is_listening(self) -> bool:
        return self._listening

    async def _security(self, application_uri: str) -> None:
        server = self.server
        if self.demo:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity, *SECURE_POLICIES])
            server.set_identity_tokens([ua.AnonymousIdentityToken, ua.UserNameIdentityToken, ua.X509IdentityToken])
        else:
            server.set_security_policy(SECURE_POLICIES)
            server.set_identity_tokens([ua.UserNameIdentityToken, ua.X509IdentityToken])
        from gateway.opcua.pki import prepare_pki

        pki = await prepare_pki(Path(self.config.server.pki_dir), application_uri)
        await server.load_certificate(str(pki.certificate))
        await server.load_private_key(str(pki.private_key))
        if not self.demo:
            server.set_certificate_validator(pki.validator)
