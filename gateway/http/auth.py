"""HTTP Basic authentication against the config's users: role ``erp`` or ``engineer``.

The password check is the gateway's :class:`~gateway.security.logins.LoginGuard`, shared with the OPC UA
logins: argon2id in its own bounded pool (never on the event loop), the same answer in the same time
for an unknown user and a wrong password, outcomes remembered under a keyed digest (never the
password), and a back-off per user name and per peer address after repeated failures. Its verdicts
become problems here:

- ``OK``: the user (403 when its roles do not include ``erp`` or ``engineer``);
- ``REFUSED``: 401 "unknown user or wrong password", whichever it was;
- ``BACKED_OFF``: 429 with ``Retry-After`` (seconds until the back-off ends);
- ``BUSY``: 503 with ``Retry-After``: too many checks already waiting for a worker.

Credentials are checked by :class:`gateway.http.edge.Edge` before the request's body is read; the route
dependency only hands over the user it found (and shows the security scheme in the OpenAPI description).
"""

from __future__ import annotations

import binascii
import math
from base64 import b64decode
from collections.abc import Iterable

from fastapi import Request
from fastapi.security import HTTPBasic

from gateway.config import User
from gateway.errors import Reason
from gateway.http.problems import BUSY, LOGIN_BACKED_OFF, ProblemError
from gateway.security.logins import LoginGuard, Verdict

ALLOWED_ROLES = frozenset({"erp", "engineer"})
REALM = "cell-gateway"
_CHALLENGE = {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'}
# Where the edge leaves the authenticated user in the ASGI scope's state (``request.state``).
USER_STATE = "erp_user"


def basic_credentials(authorization: str | None) -> tuple[str, str]:
    """User name and password of an ``Authorization: Basic`` header; a 401 problem when absent or malformed."""
    if not authorization:
        raise ProblemError(401, Reason.ACCESS_DENIED.value, "HTTP Basic credentials are required", _CHALLENGE)
    scheme, _, param = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        raise ProblemError(
            401,
            Reason.ACCESS_DENIED.value,
            f"the ERP API takes HTTP Basic credentials, not {scheme[:20]!r}",
            _CHALLENGE,
        )
    try:
        name, colon, password = b64decode(param.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, ValueError):
        name, colon, password = "", "", ""
    if not colon or not name:
        raise ProblemError(
            401, Reason.ACCESS_DENIED.value, "malformed HTTP Basic credentials (base64 of name:password)", _CHALLENGE
        )
    return name, password


class Authenticator:
    def __init__(self, users: Iterable[User], guard: LoginGuard) -> None:
        self._users = {u.name: u for u in users if u.password_hash}
        self.guard = guard

    async def authenticate(self, authorization: str | None, peer: str) -> User:
        """The user of this ``Authorization`` header from ``peer``, if it may use the ERP API; else a problem."""
        name, password = basic_credentials(authorization)
        verdict = await self.guard.check(name, password, peer)
        if verdict is Verdict.BACKED_OFF:
            seconds = max(1, math.ceil(self.guard.retry_after(name, peer)))
            raise ProblemError(
                429,
                LOGIN_BACKED_OFF,
                f"too many failed logins for this user or from this address; try again in {seconds} s",
                {"Retry-After": str(seconds)},
            )
        if verdict is Verdict.BUSY:
            raise ProblemError(
                503, BUSY, "too many logins are being checked at once; try again shortly", {"Retry-After": "1"}
            )
        user = self._users.get(name) if verdict is Verdict.OK else None
        if user is None:
            raise ProblemError(401, Reason.ACCESS_DENIED.value, "unknown user or wrong password", _CHALLENGE)
        if not ALLOWED_ROLES & set(user.roles):
            raise ProblemError(
                403,
                Reason.ACCESS_DENIED.value,
                f"user {name!r} has roles {', '.join(user.roles)}; the ERP API needs erp or engineer",
            )
        return user


class BasicScheme(HTTPBasic):
    """HTTP Basic as the OpenAPI description shows it; the credentials themselves are checked by the edge."""

    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        return None


def authenticated_user(request: Request) -> User:
    """The user the edge authenticated for this request (a 401 problem if none did)."""
    user = request.scope.get("state", {}).get(USER_STATE)
    if not isinstance(user, User):
        raise ProblemError(401, Reason.ACCESS_DENIED.value, "HTTP Basic credentials are required", _CHALLENGE)
    return user
