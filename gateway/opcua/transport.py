"""The OPC UA server's edge: connection limits, handshake timeouts and password logins off the event loop.

asyncua accepts up to 1,000 connections and gives each 30 s to activate a session; a thousand peers
that open a socket and say nothing lock every PLC out. The gateway runs asyncua's binary server with
these subclasses instead (limits from ``[limits]`` in the config, docs/operations.md):

- **Total and per peer address.** At most ``max_connections`` connections, and ``max_connections_per_peer``
  from one address. A new connection beyond a limit evicts the oldest connection (of all, or of that
  peer) that has not activated a session yet; only when every slot holds an activated session is the
  new one refused. Either way the loser gets an OPC UA ERR message, BadTcpNotEnoughResources, then the
  socket is closed. Stalled peers therefore never lock a PLC out.
- **Handshake timeouts.** A connection that has not completed its HELLO within ``hello_timeout_seconds``,
  or activated a session within ``activation_timeout_seconds``, gets ERR BadTimeout and is closed.
- **Sessions.** At most ``max_sessions`` activated sessions (BadTooManySessions beyond; see
  ``GatewaySession`` in gateway/opcua/identity.py).
- **Logins.** An ActivateSession with a user name and password is checked by the gateway's
  :class:`~gateway.security.logins.LoginGuard` (argon2 in its own thread pool, constant time, back-off
  per user and peer) before asyncua activates the session; asyncua's user manager then only reads the
  verdict (``ConfigUserManager.get_user``), so no argon2 check ever runs on the event loop.

Each limit that trips is logged once per episode (``opcua_limit``: the first trip after a quiet minute),
and counted in :class:`EdgeStats` (``OpcUaServer.edge_stats``) for the metrics.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from asyncua import Server, ua
from asyncua.common.connection import TransportLimits
from asyncua.crypto import uacrypto
from asyncua.server.binary_server_asyncio import BinaryServer, OPCUAProtocol
from asyncua.server.internal_server import InternalServer
from asyncua.server.internal_session import SessionState
from asyncua.server.uaprocessor import UaProcessor
from asyncua.ua.ua_binary import struct_from_binary, uatcp_to_binary

from gateway.config import LimitSettings
from gateway.logging import get_logger
from gateway.opcua.identity import LoginAttempt, login_attempt
from gateway.security.logins import LoginGuard

__all__ = ["EdgeStats", "GatewayBinaryServer", "GatewayServer", "install"]

log = get_logger(__name__)
_asyncua_log = logging.getLogger("asyncua.server.binary_server_asyncio")

_ACTIVATE = ua.NodeId(ua.ObjectIds.ActivateSessionRequest_Encoding_DefaultBinary)

# A limit that trips again within this many seconds of its last trip belongs to the same episode.
EPISODE_QUIET_SECONDS = 60.0


@dataclass(slots=True)
class EdgeStats:
    """Counts since start, for the metrics: connections taken, evicted, refused and timed out; episodes."""

    accepted: int = 0
    evicted: int = 0  # not yet activated, closed to make room for a new connection
    refused: int = 0  # every slot (of all, or of the peer) held an activated session
    hello_timeouts: int = 0
    activation_timeouts: int = 0
    refused_sessions: int = 0  # ActivateSession answered BadTooManySessions
    episodes: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("max_connections", "max_connections_per_peer", "hello", "activation", "max_sessions"), 0
        )
    )
    open: int = 0  # connections open now


class Edge:
    """The connection registry and limits of one server (shared by all its connections)."""

    def __init__(
        self, limits: LimitSettings, logins: LoginGuard, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits
        self.logins = logins
        self.stats = EdgeStats()
        self._clock = clock
        self._open: dict[GatewayProtocol, None] = {}  # in order of arrival
        self._per_peer: Counter[str] = Counter()
        self._last_trip: dict[tuple[str, str], float] = {}

    def admit(self, new: GatewayProtocol) -> bool:
        """Make room for ``new`` (evicting a stalled connection if needed); False if it must be refused."""
        peer = new.peer_host
        if self._per_peer[peer] >= self.limits.max_connections_per_peer:
            self._trip("max_connections_per_peer", peer, self.limits.max_connections_per_peer)
            if not self._evict(lambda p: p.peer_host == peer):
                return self._refuse(new)
        if len(self._open) >= self.limits.max_connections:
            self._trip("max_connections", "", self.limits.max_connections)
            # Room is made at the expense of the address holding the most connections without a
            # session: a flood from a few addresses does not close other peers' handshakes.
            stalled = Counter(p.peer_host for p in self._open if not p.activated)
            busiest = stalled.most_common(1)[0][0] if stalled else None
            if not self._evict(lambda p: p.peer_host == busiest):
                return self._refuse(new)
        self._open[new] = None
        self._per_peer[peer] += 1
        self.stats.accepted += 1
        self.stats.open = len(self._open)
        return True

    def forget(self, protocol: GatewayProtocol) -> None:
        if protocol in self._open:
            del self._open[protocol]
            self._per_peer[protocol.peer_host] -= 1
            if self._per_peer[protocol.peer_host] <= 0:
                del self._per_peer[protocol.peer_host]
            self.stats.open = len(self._open)

    def live_sessions(self) -> int:
        """Activated sessions on the connections open now."""
        return sum(1 for protocol in self._open if protocol.activated)

    def sessions_full(self, session_name: Any) -> None:
        """An activation refused for max_sessions (``session_name`` is asyncua's: the peer's address)."""
        self.stats.refused_sessions += 1
        peer = str(session_name[0]) if isinstance(session_name, tuple) and session_name else str(session_name)
        self._trip("max_sessions", "", self.limits.max_sessions, peer=peer)

    def timed_out(self, protocol: GatewayProtocol, stage: str) -> None:
        if stage == "hello":
            self.stats.hello_timeouts += 1
            limit = self.limits.hello_timeout_seconds
        else:
            self.stats.activation_timeouts += 1
            limit = self.limits.activation_timeout_seconds
        self._trip(stage, "", limit, peer=protocol.peer_host)

    def _evict(self, among: Callable[[GatewayProtocol], bool]) -> bool:
        for protocol in self._open:  # oldest first
            if among(protocol) and not protocol.activated:
                self.forget(protocol)
                self.stats.evicted += 1
                protocol.close_with(ua.StatusCodes.BadTcpNotEnoughResources, "evicted for a newer connection")
                return True
        return False

    def _refuse(self, new: GatewayProtocol) -> bool:
        self.stats.refused += 1
        return False

    def _trip(self, limit: str, key: str, value: float, *, peer: str | None = None) -> None:
        """Log the first trip of an episode; later trips within the quiet period are only counted."""
        now = self._clock()
        last = self._last_trip.get((limit, key))
        self._last_trip[(limit, key)] = now
        if last is not None and now - last < EPISODE_QUIET_SECONDS:
            return
        if len(self._last_trip) > 10_000:  # a flood from many addresses: forget the old episodes
            self._last_trip = {k: t for k, t in self._last_trip.items() if now - t < EPISODE_QUIET_SECONDS}
        self.stats.episodes[limit] += 1
        why = {
            "max_connections": "all connection slots in use: the oldest connection without a session is closed",
            "max_connections_per_peer": f"peer {key} holds all its slots: its oldest one without a session is closed",
            "hello": "connections closed for not completing their HELLO in time",
            "activation": "connections closed for not activating a session in time",
            "max_sessions": "all sessions in use: new session activations answered BadTooManySessions",
        }[limit]
        log.warning(
            "opcua_limit",
            limit=limit,
            value=value,
            peer=peer or key or None,
            open=len(self._open),
            evicted=self.stats.evicted,
            refused=self.stats.refused,
            why=why,
        )


class GatewayProcessor(UaProcessor):  # type: ignore[misc]
    """asyncua's processor, checking password logins with the guard before asyncua activates a session."""

    def __init__(self, iserver: InternalServer, transport: Any, limits: TransportLimits, edge: Edge) -> None:
        super().__init__(iserver, transport, limits)
        self.edge = edge
        self.hello_done = False
        peer = transport.get_extra_info("peername")
        self.peer_host = str(peer[0]) if peer else ""

    async def process(self, header: Any, body: Any) -> Any:
        if header.MessageType == ua.MessageType.Hello:
            self.hello_done = True
        return await super().process(header, body)

    async def _process_message(self, typeid: Any, requesthdr: Any, seqhdr: Any, body: Any) -> Any:
        if typeid != _ACTIVATE:
            return await super()._process_message(typeid, requesthdr, seqhdr, body)
        attempt = await self._check_login(requesthdr, body.copy())
        token = login_attempt.set(attempt)
        try:
            return await super()._process_message(typeid, requesthdr, seqhdr, body)
        finally:
            login_attempt.reset(token)

    async def _check_login(self, requesthdr: Any, body: Any) -> LoginAttempt | None:
        """The guard's verdict on a user name login, or None when asyncua refuses the request itself.

        Everything asyncua checks before it asks the user manager is checked here first (the session,
        the client's signature, the token's type and encryption); when one fails, no password is checked
        and asyncua answers with its own status code, as without the guard.
        """
        params = struct_from_binary(ua.ActivateSessionParameters, body)
        token = params.UserIdentityToken
        if not isinstance(token, ua.UserNameIdentityToken):
            return None
        session = self.session or self.iserver.lookup_external_session(requesthdr.AuthenticationToken)
        if session is None or session.state == SessionState.Closed:
            return None
        policy = self._connection.security_policy
        if getattr(session, "require_secure_channel", False) and not policy.peer_certificate:
            return None
        if not isinstance(token, self.iserver.supported_tokens):
            return None
        try:
            nonce = session.nonce
            signed = nonce if policy.host_certificate is None else policy.host_certificate + nonce
            policy.asymmetric_cryptography.verify(signed, params.ClientSignature.Signature)
            user, password = self.iserver.decrypt_user_token(session, token)
        except Exception:  # asyncua repeats the step and answers with its own code
            return None
        if not isinstance(user, str) or not isinstance(password, str):
            return None
        verdict = await self.edge.logins.check(user, password, self.peer_host)
        return LoginAttempt(token=token, user=user, password=password, verdict=verdict, peer=self.peer_host)


class GatewayProtocol(OPCUAProtocol):  # type: ignore[misc]
    """One connection: admitted by the edge's limits, closed if its handshake stalls."""

    def __init__(self, *args: Any, edge: Edge, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.edge = edge
        self.peer_host = ""
        self._timers: list[asyncio.TimerHandle] = []

    @property
    def activated(self) -> bool:
        processor = self.processor
        return bool(processor is not None and processor.session is not None and processor.session.is_activated())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncua's own, with the edge's limits instead of its max_connections, and timers instead of
        # its activation watchdog task.
        self.peer_name = transport.get_extra_info("peername")
        self.peer_host = str(self.peer_name[0]) if self.peer_name else ""
        if not self.edge.admit(self):
            _close_with(transport, ua.StatusCodes.BadTcpNotEnoughResources, "every connection slot holds a session")
            return
        self.transport = cast(asyncio.Transport, transport)
        _asyncua_log.info("New connection from %s", self.peer_name)
        self.processor = GatewayProcessor(self.iserver, transport, self.limits, self.edge)
        self.processor.set_policies(self.policies)
        self.iserver.asyncio_transports.append(transport)
        self.clients.append(self)
        self._task = asyncio.create_task(self._process_received_message_loop())
        loop = asyncio.get_running_loop()
        limits = self.edge.limits
        self._timers = [
            loop.call_later(limits.hello_timeout_seconds, self._deadline, "hello"),
            loop.call_later(limits.activation_timeout_seconds, self._deadline, "activation"),
        ]

    def connection_lost(self, ex: BaseException | None) -> None:
        for timer in self._timers:
            timer.cancel()
        self.edge.forget(self)
        super().connection_lost(ex)

    def _deadline(self, stage: str) -> None:
        processor = self.processor
        if processor is None or self.transport is None or self.transport.is_closing():
            return
        if stage == "hello" and processor.hello_done:
            return
        if stage == "activation" and self.activated:
            return
        self.edge.timed_out(self, stage)
        self.edge.forget(self)
        self.close_with(ua.StatusCodes.BadTimeout, f"no {stage.upper() if stage == 'hello' else stage} in time")

    def close_with(self, code: int, reason: str) -> None:
        if self.transport is not None:
            _close_with(self.transport, code, reason)


def _close_with(transport: asyncio.BaseTransport, code: int, reason: str) -> None:
    """Send an OPC UA ERR message with ``code`` (what the peer's stack reports), then close."""
    if transport.is_closing():
        return
    try:
        if isinstance(transport, asyncio.WriteTransport):
            message = ua.ErrorMessage(ua.StatusCode(code), reason)
            transport.write(uatcp_to_binary(ua.MessageType.Error, message))
    finally:
        transport.close()


class GatewayBinaryServer(BinaryServer):  # type: ignore[misc]
    def __init__(self, *args: Any, edge: Edge, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.edge = edge

    def _make_protocol(self) -> GatewayProtocol:
        return GatewayProtocol(
            iserver=self.iserver,
            policies=self._policies,
            clients=self.clients,
            closing_tasks=self.closing_tasks,
            limits=self.limits,
            edge=self.edge,
        )


class GatewayServer(Server):  # type: ignore[misc]
    """asyncua's Server, listening with :class:`GatewayBinaryServer`."""

    def __init__(self, *args: Any, edge: Edge, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.edge = edge

    async def start(self) -> None:
        # asyncua's Server.start, with the gateway's binary server.
        if self.iserver.certificate is not None:
            uacrypto.check_certificate(self.iserver.certificate, self._application_uri, socket.gethostname())
        await self._setup_server_nodes()
        await self.iserver.start()
        try:
            host, port = self._get_bind_socket_info()
            self.bserver = GatewayBinaryServer(self.iserver, host, port, self.limits, edge=self.edge)
            self.bserver.set_policies(self._policies)
            await self.bserver.start()
        except Exception:
            await self.iserver.stop()
            raise


def install(iserver: InternalServer, limits: LimitSettings) -> None:
    """Hand the connection limits asyncua enforces itself to ``iserver`` (the edge does the rest)."""
    # The edge admits connections and runs the activation deadline; asyncua's own checks stay out of
    # its way (its watchdog task per connection is replaced by a timer).
    iserver.max_connections = 2 * limits.max_connections  # not consulted by GatewayProtocol; kept above ours
    iserver.max_pending_activation_seconds = 0
