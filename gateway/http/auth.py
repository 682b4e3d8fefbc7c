"""HTTP Basic authentication against the config's users: role ``erp`` or ``engineer``.

Passwords are argon2id hashes in the config; verifying one costs tens of milliseconds and 64 MiB, so
it runs in a worker thread (never on the event loop the writer and the OPC UA server share) and its
outcome is remembered under a keyed digest of the name and password, never the password itself
(``LoginCache``, shared with the OPC UA logins). Each different guess costs a full verify.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from gateway.config import User
from gateway.errors import Reason
from gateway.http.problems import ProblemError
from gateway.security.passwords import LoginCache, verify_password

ALLOWED_ROLES = frozenset({"erp", "engineer"})
REALM = "cell-gateway"
_CHALLENGE = {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'}


class Authenticator:
    def __init__(self, users: Iterable[User], *, cache_size: int = 256) -> None:
        self._users = {u.name: u for u in users if u.password_hash}
        self._logins = LoginCache(cache_size)

    async def authenticate(self, name: str | None, password: str | None) -> User:
        """The user these credentials belong to, if it may use the ERP API; otherwise a 401 or 403 problem."""
        if name is None or password is None:
            raise ProblemError(401, Reason.ACCESS_DENIED.value, "HTTP Basic credentials are required", _CHALLENGE)
        user = self._users.get(name)
        if user is None or not await self._verify(user, password):
            raise ProblemError(401, Reason.ACCESS_DENIED.value, "unknown user or wrong password", _CHALLENGE)
        if not ALLOWED_ROLES & set(user.roles):
            raise ProblemError(
                403,
                Reason.ACCESS_DENIED.value,
                f"user {name!r} has roles {', '.join(user.roles)}; the ERP API needs erp or engineer",
            )
        return user

    async def _verify(self, user: User, password: str) -> bool:
        known = self._logins.known(user.name, user.password_hash, password)
        if known is not None:
            return known
        ok = await asyncio.to_thread(verify_password, user.password_hash, password)
        self._logins.remember(user.name, user.password_hash, password, ok)
        return ok
