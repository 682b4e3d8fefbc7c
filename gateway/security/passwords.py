"""Password hashing for OPC UA and HTTP users.

Only argon2id hashes are ever stored (in the cell config file, which integrators copy around and
commit to their own repositories), so a leaked config file does not leak passwords. Verification never
raises: a login attempt with a bad or malformed hash is simply refused, and the caller decides how to
answer (``BadUserAccessDenied``) without an exception crossing an asyncua method handler.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections import OrderedDict

from argon2 import PasswordHasher
from argon2.exceptions import Argon2Error, InvalidHashError

__all__ = ["LoginCache", "hash_password", "is_password_hash", "verify_password"]

# argon2-cffi's defaults follow RFC 9106's low-memory profile (64 MiB, t=3, p=4): strong enough for a
# handful of users, cheap enough that a PLC reconnect storm does not stall the event loop for long.
_HASHER = PasswordHasher()

# The PHC string format argon2-cffi writes; salt and hash are unpadded standard base64.
_ARGON2ID = re.compile(r"\$argon2id\$v=\d+\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+")


def hash_password(plain: str) -> str:
    """Hash with a fresh random salt, so equal passwords give different strings."""
    return _HASHER.hash(plain)


def verify_password(hash: str, plain: str) -> bool:
    """Whether ``plain`` matches ``hash``; False for a mismatch and for anything that is not a hash."""
    if not is_password_hash(hash):
        return False
    try:
        return _HASHER.verify(hash, plain)
    except (Argon2Error, InvalidHashError, ValueError, TypeError):
        return False


def is_password_hash(s: object) -> bool:
    """Tell a stored argon2id hash from a password someone pasted in plain text."""
    return isinstance(s, str) and _ARGON2ID.fullmatch(s) is not None


class LoginCache:
    """Remembers the outcome of recent argon2 checks, so a reconnecting PLC does not stall the loop.

    asyncua activates sessions synchronously, on the event loop; one argon2 check takes about a third
    of a second, which every station would wait for each time a PLC reconnects. Outcomes are keyed by
    an HMAC of (user, stored hash, password) under a key drawn at start and never stored, so the cache
    holds no password and no unkeyed digest of one (someone who can read the process's memory can
    read the key as well). Successes and failures are kept apart: a PLC retrying with a wrong password
    costs one check, not one per try, and a flood of wrong guesses never pushes the PLCs' good logins
    out. A different password is always checked in full.
    """

    def __init__(self, size: int = 1024) -> None:
        self._key = os.urandom(32)
        self._size = size
        self._good: OrderedDict[bytes, None] = OrderedDict()
        self._bad: OrderedDict[bytes, None] = OrderedDict()

    def known(self, user: str, stored: str, plain: str) -> bool | None:
        """The remembered outcome for these credentials, or None when they must be checked."""
        digest = self._digest(user, stored, plain)
        for outcome, remembered in ((True, self._good), (False, self._bad)):
            if digest in remembered:
                remembered.move_to_end(digest)
                return outcome
        return None

    def remember(self, user: str, stored: str, plain: str, ok: bool) -> None:
        remembered = self._good if ok else self._bad
        remembered[self._digest(user, stored, plain)] = None
        while len(remembered) > self._size:
            remembered.popitem(last=False)

    def verify(self, user: str, stored: str, plain: str) -> bool:
        """Check on this thread, at most once per distinct (user, password) while remembered."""
        outcome = self.known(user, stored, plain)
        if outcome is None:
            outcome = verify_password(stored, plain)
            self.remember(user, stored, plain, outcome)
        return outcome

    def _digest(self, user: str, stored: str, plain: str) -> bytes:
        message = "\0".join((user, stored, plain)).encode("utf-8", "surrogatepass")
        return hmac.new(self._key, message, hashlib.sha256).digest()
