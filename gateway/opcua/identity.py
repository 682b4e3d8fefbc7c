"""Who is calling: users, roles and stations for OPC UA sessions.

asyncua does not tell a method callback which session called it. The gateway therefore runs asyncua's
server with a thin subclass of its ``InternalSession`` that publishes the session in a ContextVar for
the duration of each Call and Write request (``GatewaySession.call`` / ``.write``). asyncua awaits the
method callback inside that request, so the handler reads the caller with :func:`current_user`; a
test calls concurrently as several users and checks each always sees itself
(tests/integration/test_opcua_security.py).

Users come from the config: argon2 password hashes, or X.509 user certificates. Every asyncua user is
given ``UserRole.User`` (never Admin, which would bypass access levels); the gateway's own roles are
kept on :class:`GatewayUser` and checked by the handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.internal_server import InternalServer
from asyncua.server.internal_session import InternalSession
from asyncua.server.user_managers import UserManager

from gateway.config import CellConfig
from gateway.logging import get_logger
from gateway.security.passwords import LoginCache

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
        self._logins = LoginCache()

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> GatewayUser | None:
        kind = _TOKEN_KIND.get()
        if kind == "username":
            stored = self._passwords.get(username or "")
            if stored is None or not self._logins.verify(username or "", stored, password or ""):
                log.warning("opcua_login_refused", user=username, why="unknown user or wrong password")
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


WriteFilter = Callable[[GatewayUser, ua.WriteValue], bool]


class GatewaySession(InternalSession):  # type: ignore[misc]
    """asyncua's session, publishing itself while it serves a Call or Write request."""

    write_filter: WriteFilter | None = None
    require_secure_channel = False

    def activate_session(self, params: Any, peer_certificate: Any) -> Any:
        # asyncua answers a SecurityPolicy None channel even when no None endpoint is offered; outside
        # the demo profile such a channel (no peer certificate) must not get a session.
        if self.require_secure_channel and not peer_certificate:
            raise ServiceError(ua.StatusCodes.BadSecurityModeRejected)
        token = _TOKEN_KIND.set(_token_kind(params.UserIdentityToken))
        try:
            return super().activate_session(params, peer_certificate)
        finally:
            _TOKEN_KIND.reset(token)

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
                if check(user, value):
                    allowed.append((i, value))
                else:
                    results[i] = ua.StatusCode(ua.StatusCodes.BadUserAccessDenied)
            if allowed:
                sub = ua.WriteParameters()
                sub.NodesToWrite = [value for _, value in allowed]
                for (i, _), result in zip(allowed, await super().write(sub), strict=True):
                    results[i] = result
            return [r if r is not None else ua.StatusCode(ua.StatusCodes.BadInternalError) for r in results]
        finally:
            _SESSION.reset(token)


def session_class(write_filter: WriteFilter | None, require_secure_channel: bool) -> type[GatewaySession]:
    """A session class bound to this server's rules (a class per server keeps test servers apart)."""
    return type(
        "BoundGatewaySession",
        (GatewaySession,),
        {
            "write_filter": staticmethod(write_filter) if write_filter else None,
            "require_secure_channel": require_secure_channel,
        },
    )


class GatewayInternalServer(InternalServer):  # type: ignore[misc]
    session_type: type[GatewaySession] = GatewaySession

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
