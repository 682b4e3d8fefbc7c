"""Who is calling: users, roles and stations for OPC UA sessions.

asyncua does not tell a method callback which session called it. The gateway therefore runs asyncua's
server with a thin subclass of its ``InternalSession`` that publishes the session in a ContextVar for
the duration of each Call and Write request (``GatewaySession.call`` / ``.write``). asyncua awaits the
method callback inside that request, so the handler reads the caller with :func:`current_user`; a
test calls concurrently as several users and checks each always sees itself
(tests/integration/test_opcua_security.py).

Users come from the config: argon2 password hashes, or X.509 user certificates. A password is never
checked here: the server's processor (gateway/opcua/transport.py) has the login guard check it off the
event loop before asyncua activates the session, and publishes the verdict in :data:`login_attempt`,
which :meth:`ConfigUserManager.get_user` reads. Every asyncua user is
given ``UserRole.User`` (never Admin, which would bypass access levels); the gateway's own roles are
kept on :class:`GatewayUser` and checked by the handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.internal_server import InternalServer
from asyncua.server.internal_session import InternalSession, SessionState
from asyncua.server.user_managers import UserManager

from gateway.config import CellConfig
from gateway.logging import get_logger
from gateway.security.logins import Verdict

log = get_logger(__name__)

ALL_ROLES = frozenset({"plc", "operator", "engineer", "erp"})


@dataclass(eq=False)
class GatewayUser(User):  # type: ignore[misc]
    """An authenticated OPC UA user: asyncua's User plus the gateway's roles and stations."""

    auth: str = "anonymous"  # anonymous | username | x509 | internal
    roles: frozenset[str] = field(default_factory=frozenset)
    stations: frozenset[str] = field(default_factory=frozenset)

    def may_report_for(self, station: str) -> bool:
        """Station methods and tags: operators and engineers anywhere, a PLC only at its own stations."""
        if self.roles & {"operator", "engineer"}:
            return True
        return "plc" in self.roles and station in self.stations

    def has_any(self, roles: Iterable[str]) -> bool:
        return bool(self.roles & set(roles))


# The gateway itself (server-side calls, tests calling nodes directly): every role.
INTERNAL = GatewayUser(role=UserRole.Admin, name="gateway", auth="internal", roles=ALL_ROLES)

_TOKEN_KIND: contextvars.ContextVar[str] = contextvars.ContextVar("opcua_token_kind", default="anonymous")
_SESSION: contextvars.ContextVar[InternalSession | None] = contextvars.ContextVar("opcua_session", default=None)


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    """A user name login as the guard judged it, for the ActivateSession request being served."""

    token: Any  # the ua.UserNameIdentityToken it came with
    user: str
    password: str
    verdict: Verdict
    peer: str = ""  # the client's address


login_attempt: contextvars.ContextVar[LoginAttempt | None] = contextvars.ContextVar("opcua_login", default=None)

# What a client is told for each verdict that is not OK. BUSY (more password checks waiting than the
# guard queues) is not the client's fault and worth a retry: BadTooManyOperations, as for a full
# writer queue (gateway/opcua/status.py). Unknown user, wrong password and back-off look the same.
REFUSAL_CODES = {
    Verdict.REFUSED: ua.StatusCodes.BadUserAccessDenied,
    Verdict.BACKED_OFF: ua.StatusCodes.BadUserAccessDenied,
    Verdict.BUSY: ua.StatusCodes.BadTooManyOperations,
}
_REFUSAL_WHY = {
    Verdict.REFUSED: "unknown user or wrong password",
    Verdict.BACKED_OFF: "too many failed logins for this user or from this address: back-off",
    Verdict.BUSY: "too many password checks waiting: not checked",
}


def current_user() -> GatewayUser:
    """The user of the OPC UA request being served; INTERNAL outside of one."""
    session = _SESSION.get()
    if session is None:
        return INTERNAL
    user = session.user
    return user if isinstance(user, GatewayUser) else INTERNAL


def _token_kind(token: Any) -> str:
    if isinstance(token, ua.UserNameIdentityToken):
        return "username"
    if isinstance(token, ua.X509IdentityToken):
        return "x509"
    return "anonymous"


class ConfigUserManager(UserManager):  # type: ignore[misc]
    """Accounts from the config: argon2 passwords, X.509 user certificates, anonymous per profile."""

    def __init__(self, config: CellConfig) -> None:
        self._passwords: dict[str, str] = {}
        self._certificates: dict[bytes, str] = {}
        self._roles: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
        for user in config.users:
            self._roles[user.name] = (frozenset(user.roles), frozenset(user.stations))
            if user.password_hash:
                self._passwords[user.name] = user.password_hash
            if user.certificate:
                self._certificates[_der_fingerprint(_read_certificate(Path(user.certificate)))] = user.name
        self._anonymous = frozenset(config.anonymous_roles())

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> GatewayUser | None:
        kind = _TOKEN_KIND.get()
        if kind == "username":
            attempt = login_attempt.get()
            if attempt is None or attempt.user != username or attempt.password != password:
                # Never checked here: argon2 would stall the event loop.
                log.warning("opcua_login_refused", user=username, why="password not checked by the login guard")
                return None
            if attempt.verdict is not Verdict.OK or username not in self._passwords:
                why = _REFUSAL_WHY.get(attempt.verdict, "refused")
                log.warning("opcua_login_refused", user=username, peer=attempt.peer, why=why)
                if attempt.verdict is Verdict.BUSY:
                    raise ServiceError(REFUSAL_CODES[Verdict.BUSY])
                return None
            return self._user(username or "", "username")
        if kind == "x509":
            name = self._certificates.get(_der_fingerprint(certificate)) if certificate else None
            if name is None:
                log.warning("opcua_login_refused", why="X.509 user certificate not configured for any user")
                return None
            return self._user(name, "x509")
        if not self._anonymous:
            log.warning("opcua_login_refused", why="anonymous access is off in this security profile")
            return None
        return GatewayUser(role=UserRole.User, name="anonymous", auth="anonymous", roles=self._anonymous)

    def _user(self, name: str, auth: str) -> GatewayUser:
        roles, stations = self._roles[name]
        log.info("opcua_login", user=name, auth=auth, roles=sorted(roles))
        return GatewayUser(role=UserRole.User, name=name, auth=auth, roles=roles, stations=stations)


def _read_certificate(path: Path) -> bytes:
    data = path.read_bytes()
    if b"-----BEGIN" in data:
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        return x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
    return data


def _der_fingerprint(certificate: Any) -> bytes:
    if not isinstance(certificate, bytes | bytearray):
        from cryptography.hazmat.primitives.serialization import Encoding

        certificate = certificate.public_bytes(Encoding.DER)
    return hashlib.sha256(bytes(certificate)).digest()


# Why a user may not make a write, as the status code to answer (BadUserAccessDenied, BadTypeMismatch,
# ...), or None when the write may go through. Async: a refusal may raise an OPC UA event.
WriteFilter = Callable[[GatewayUser, ua.WriteValue], Awaitable[int | None]]


class GatewaySession(InternalSession):  # type: ignore[misc]
    """asyncua's session, publishing itself while it serves a Call or Write request."""

    write_filter: WriteFilter | None = None
    require_secure_channel = False
    max_sessions = 1_000_000  # activated sessions of this server at once (limits.max_sessions)

    def activate_session(self, params: Any, peer_certificate: Any) -> Any:
        # asyncua answers a SecurityPolicy None channel even when no None endpoint is offered; outside
        # the demo profile such a channel (no peer certificate) must not get a session.
        if self.require_secure_channel and not peer_certificate:
            raise ServiceError(ua.StatusCodes.BadSecurityModeRejected)
        if self.state == SessionState.Created and self._activated_sessions() >= self.max_sessions:
            on_full = getattr(self.iserver, "on_sessions_full", None)
            if on_full is not None:
                on_full(self.name)
            raise ServiceError(ua.StatusCodes.BadTooManySessions)
        token = _TOKEN_KIND.set(_token_kind(params.UserIdentityToken))
        try:
            return super().activate_session(params, peer_certificate)
        finally:
            _TOKEN_KIND.reset(token)

    def _activated_sessions(self) -> int:
        """Activated sessions on a live connection. asyncua keeps a session with subscriptions after its
        connection is lost, until its timeout (up to 10 minutes): such a session takes no slot, or a
        switch reboot would lock reconnecting PLCs out until the old sessions time out."""
        live = getattr(self.iserver, "live_sessions", None)
        if live is not None:
            return int(live())
        sessions = getattr(self.iserver, "_external_sessions", {})
        return sum(1 for s in sessions.values() if s.is_activated())

    async def call(self, params: Any) -> Any:
        token = _SESSION.set(self)
        try:
            return await super().call(params)
        finally:
            _SESSION.reset(token)

    async def write(self, params: ua.WriteParameters) -> list[ua.StatusCode]:
        """Per node: a write the caller may not make gets BadUserAccessDenied; the others go through."""
        token = _SESSION.set(self)
        try:
            check = self.write_filter
            user = self.user if isinstance(self.user, GatewayUser) else INTERNAL
            if check is None or user is INTERNAL:
                return list(await super().write(params))
            results: list[ua.StatusCode | None] = [None] * len(params.NodesToWrite)
            allowed = []
            for i, value in enumerate(params.NodesToWrite):
                refusal = await check(user, value)
                if refusal is None:
                    allowed.append((i, value))
                else:
                    results[i] = ua.StatusCode(refusal)
            if allowed:
                sub = ua.WriteParameters()
                sub.NodesToWrite = [value for _, value in allowed]
                for (i, _), result in zip(allowed, await super().write(sub), strict=True):
                    results[i] = result
            return [r if r is not None else ua.StatusCode(ua.StatusCodes.BadInternalError) for r in results]
        finally:
            _SESSION.reset(token)


def session_class(
    write_filter: WriteFilter | None, require_secure_channel: bool, max_sessions: int = 1_000_000
) -> type[GatewaySession]:
    """A session class bound to this server's rules (a class per server keeps test servers apart)."""
    return type(
        "BoundGatewaySession",
        (GatewaySession,),
        {
            "write_filter": staticmethod(write_filter) if write_filter else None,
            "require_secure_channel": require_secure_channel,
            "max_sessions": max_sessions,
        },
    )


class GatewayInternalServer(InternalServer):  # type: ignore[misc]
    session_type: type[GatewaySession] = GatewaySession
    # Told the session's name when an activation is refused for max_sessions (the edge counts it).
    on_sessions_full: Callable[[Any], None] | None = None
    # Activated sessions on a live connection (the edge knows the connections); None: asyncua's count.
    live_sessions: Callable[[], int] | None = None

    def decrypt_user_token(self, isession: Any, token: ua.UserNameIdentityToken) -> tuple[str, str]:
        # The processor decrypted this token already to have the password checked; not again.
        attempt = login_attempt.get()
        if attempt is not None and attempt.token == token:
            return attempt.user, attempt.password
        return super().decrypt_user_token(isession, token)  # type: ignore[no-any-return]

    async def stop(self) -> None:
        # asyncua's CurrentTime task sleeps a second between updates and stop() waits for it to
        # notice; cancelling it makes a shutdown take milliseconds instead of a second.
        task: asyncio.Task[None] | None = getattr(self, "time_task", None)
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.time_task = None
        await super().stop()

    def create_session(self, name: str, user: Any = None, external: bool = False) -> GatewaySession:
        return self.session_type(
            self,
            self.aspace,
            self.subscription_service,
            name,
            user=user if user is not None else User(role=UserRole.Anonymous),
            external=external,
        )
