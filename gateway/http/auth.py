"""HTTP Basic authentication against the config's users: role ``erp`` or ``engineer``.

Passwords are argon2id hashes in the config; verifying one costs tens of milliseconds and 64 MiB, so
it runs in a worker thread (never on the event loop the writer and the OPC UA server share) and a
successful check is remembered for the life of the process under a keyed digest of the name and
password, never the password itself. A failed check is not remembered: each guess costs a full verify.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Iterable

from gateway.config import User
from gateway.errors import Reason
from gateway.http.problems import ProblemError
from gateway.security.passwords import verify_password

ALLOWED_ROLES = frozenset({"erp", "engineer"})
REALM = "cell-gateway"
_CHALLENGE = {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'}


class Authenticator:
    def __init__(self, users: Iterable[User], *, cache_size: int = 256) -> None:
        self._users = {u.name: u for u in users if u.password_hash}
        self._key = secrets.token_bytes(32)
        self._verified: OrderedDict[bytes, str] = OrderedDict()
        self._cache_size = cache_size

    def _digest(self, name: str, password: str) -> bytes:
        message = name.encode("utf-8", "surrogatepass") + b"\0" + password.encode("utf-8", "surrogatepass")
        return hmac.new(self._key, message, hashlib.sha256).digest()

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
        digest = self._digest(user.name, password)
        if self._verified.get(digest) == user.name:
            self._verified.move_to_end(digest)
            return True
        ok = await asyncio.to_thread(verify_password, user.password_hash, password)
        if ok:
            self._verified[digest] = user.name
            while len(self._verified) > self._cache_size:
                self._verified.popitem(last=False)
        return ok
