"""Password hashes: what the config stores and what a login checks against."""

from __future__ import annotations

import pytest

from gateway.security.passwords import LoginCache, hash_password, is_password_hash, verify_password


def test_round_trip() -> None:
    stored = hash_password("correct horse")

    assert stored.startswith("$argon2id$")
    assert is_password_hash(stored)
    assert verify_password(stored, "correct horse")


def test_wrong_password_is_refused() -> None:
    assert not verify_password(hash_password("correct horse"), "battery staple")


def test_same_password_gets_a_fresh_salt() -> None:
    assert hash_password("pw") != hash_password("pw")


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "plc-load",
        "$argon2id$",
        "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$",
        "$argon2i$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
        "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$!!notbase64!!",
        "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaA",
    ],
)
def test_garbage_hash_is_refused_without_raising(garbage: str) -> None:
    assert not verify_password(garbage, "plc-load")


def test_plaintext_is_not_a_hash() -> None:
    assert not is_password_hash("s3cret")
    assert not is_password_hash(None)


def test_login_cache_checks_each_distinct_password_once() -> None:
    """A reconnecting PLC is answered from memory; a different password is always checked in full."""
    stored = hash_password("plc-secret")
    cache = LoginCache(size=2)

    assert cache.known("plc", stored, "plc-secret") is None
    assert cache.verify("plc", stored, "plc-secret")
    assert cache.known("plc", stored, "plc-secret") is True
    assert not cache.verify("plc", stored, "guess")
    assert cache.known("plc", stored, "guess") is False
    # Another user with the same password, or the same user under a new hash, is a new check.
    assert cache.known("other", stored, "plc-secret") is None
    assert cache.known("plc", hash_password("plc-secret"), "plc-secret") is None


def test_login_cache_forgets_the_oldest_and_wrong_guesses_never_push_out_good_logins() -> None:
    stored = hash_password("pw")
    cache = LoginCache(size=2)
    for attempt in ("pw", "a", "b", "c"):
        cache.verify("plc", stored, attempt)

    assert cache.known("plc", stored, "pw") is True  # three wrong guesses later
    assert cache.known("plc", stored, "a") is None  # the oldest wrong guess, forgotten
    assert cache.known("plc", stored, "b") is False
    assert cache.known("plc", stored, "c") is False
