"""Password hashing for OPC UA and HTTP users.

Only argon2id hashes are ever stored (in the cell config file, which integrators copy around and
commit to their own repositories), so a leaked config file does not leak passwords. Verification never
raises: a login attempt with a bad or malformed hash is simply refused, and the caller decides how to
answer (``BadUserAccessDenied``) without an exception crossing an asyncua method handler.
"""

from __future__ import annotations

import re

from argon2 import PasswordHasher
from argon2.exceptions import Argon2Error, InvalidHashError

__all__ = ["hash_password", "is_password_hash", "verify_password"]

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
