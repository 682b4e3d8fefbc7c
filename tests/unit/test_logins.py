"""The login guard: verdicts, constant-time decoy for unknown users, back-off per user and per peer."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from argon2 import PasswordHasher, extract_parameters

from gateway.config import LimitSettings
from gateway.security.logins import LoginGuard, LoginPolicy, Verdict
from gateway.security.passwords import hash_password

PLC_HASH = hash_password("plc-secret")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def guard(clock: Clock) -> Iterator[LoginGuard]:
    policy = LoginPolicy(failures=3, window_seconds=60, backoff_seconds=2, backoff_max_seconds=5)
    g = LoginGuard({"plc": PLC_HASH, "plain": "not-a-hash"}, policy, clock=clock)
    yield g
    g.close()


async def test_right_password_is_ok_and_wrong_or_unknown_are_refused_alike(guard: LoginGuard) -> None:
    assert await guard.check("plc", "plc-secret", "10.0.0.1") is Verdict.OK
    assert await guard.check("plc", "guess", "10.0.0.2") is Verdict.REFUSED
    assert await guard.check("nobody", "guess", "10.0.0.3") is Verdict.REFUSED
    # An account whose stored value is not a hash never logs in, even with that value as password.
    assert await guard.check("plain", "not-a-hash", "10.0.0.4") is Verdict.REFUSED
    assert guard.stats.verdicts == {"ok": 1, "refused": 3, "backed_off": 0, "busy": 0}


async def test_unknown_user_costs_a_full_check(guard: LoginGuard) -> None:
    """Constant time: an unknown user is checked against the decoy hash, in the pool (not the cache)."""
    await guard.check("nobody", "one", "10.0.0.1")
    await guard.check("nobody", "two", "10.0.0.2")
    assert guard.stats.checks == 2


def test_decoy_uses_the_accounts_argon2_parameters() -> None:
    cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("x")
    guard = LoginGuard({"a": cheap, "b": PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("y")})
    try:
        assert extract_parameters(guard._decoy) == extract_parameters(cheap)
    finally:
        guard.close()


async def test_user_backs_off_after_failures_and_recovers_when_it_ends(guard: LoginGuard, clock: Clock) -> None:
    for peer in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        assert await guard.check("plc", f"guess-{peer}", peer) is Verdict.REFUSED
    # Backed off: even the right password, from a fresh address, is refused without a check.
    checks = guard.stats.checks
    assert await guard.check("plc", "plc-secret", "10.0.0.9") is Verdict.BACKED_OFF
    assert guard.stats.checks == checks
    assert guard.retry_after("plc", "10.0.0.9") == pytest.approx(2)
    assert guard.stats.backoffs["user"] == 1

    clock.now += 2.01
    assert await guard.check("plc", "plc-secret", "10.0.0.9") is Verdict.OK


async def test_backoff_doubles_per_episode_up_to_the_maximum(guard: LoginGuard, clock: Clock) -> None:
    waits = []
    for episode in range(4):
        for i in range(3):
            assert await guard.check("plc", f"guess-{episode}-{i}", f"10.0.{episode}.{i}") is Verdict.REFUSED
        waits.append(guard.retry_after("plc", "10.9.9.9"))
        clock.now += waits[-1] + 0.01
    assert waits == pytest.approx([2, 4, 5, 5])
    # A quiet window later the next episode starts again at the shortest back-off.
    clock.now += 61
    for i in range(3):
        await guard.check("plc", f"late-{i}", f"10.1.0.{i}")
    assert guard.retry_after("plc", "10.9.9.9") == pytest.approx(2)


async def test_peer_backs_off_for_every_user(guard: LoginGuard, clock: Clock) -> None:
    for user in ("a", "b", "c"):
        assert await guard.check(user, "guess", "10.6.6.6") is Verdict.REFUSED
    assert await guard.check("plc", "plc-secret", "10.6.6.6") is Verdict.BACKED_OFF
    # Control: the same user from another address is checked.
    assert await guard.check("plc", "plc-secret", "10.0.0.1") is Verdict.OK
    assert guard.stats.backoffs == {"user": 0, "peer": 1}


async def test_failures_outside_the_window_do_not_add_up(guard: LoginGuard, clock: Clock) -> None:
    for i in range(6):
        assert await guard.check("plc", f"guess-{i}", f"10.0.0.{i}") in (Verdict.REFUSED,)
        clock.now += 31  # two failures per 60 s window at most
    assert guard.retry_after("plc", "10.0.0.99") == 0


async def test_backoff_is_logged_once_per_episode(guard: LoginGuard, caplog: pytest.LogCaptureFixture) -> None:
    for i in range(3):
        await guard.check("plc", f"guess-{i}", "10.0.0.1")
    for _ in range(5):
        assert await guard.check("plc", "again", "10.0.0.1") is Verdict.BACKED_OFF
    logged = [r for r in caplog.records if "login_backoff" in str(r.msg)]
    assert len(logged) == 2  # one episode for the user, one for the peer


async def test_busy_when_more_checks_wait_than_the_queue_holds(clock: Clock) -> None:
    """A flood beyond the queue is answered at once, without a check; the queued ones finish."""
    release = threading.Event()
    guard = LoginGuard({"plc": PLC_HASH}, LoginPolicy(workers=1, queue=2, failures=100), clock=clock)
    guard._executor = None
    try:
        from concurrent.futures import ThreadPoolExecutor

        guard._executor = ThreadPoolExecutor(1)
        guard._executor.submit(release.wait)  # the only worker is taken
        waiting = [asyncio.create_task(guard.check("plc", f"guess-{i}", "10.0.0.1")) for i in range(2)]
        await asyncio.sleep(0)  # let both reach the pool
        assert await guard.check("plc", "plc-secret", "10.0.0.2") is Verdict.BUSY
        release.set()
        assert await asyncio.gather(*waiting) == [Verdict.REFUSED, Verdict.REFUSED]
        assert await guard.check("plc", "plc-secret", "10.0.0.2") is Verdict.OK
        assert guard.stats.verdicts["busy"] == 1
    finally:
        release.set()
        guard.close()


async def test_checks_run_off_the_event_loop(guard: LoginGuard) -> None:
    """While a check runs, the loop keeps serving: a callback that reschedules itself runs many times."""
    ticks = 0
    loop = asyncio.get_running_loop()
    running = True

    def tick() -> None:
        nonlocal ticks
        ticks += 1
        if running:
            loop.call_soon(tick)

    loop.call_soon(tick)
    try:
        await guard.check("plc", "guess", "10.0.0.1")
    finally:
        running = False
    assert ticks >= 10


def test_policy_from_limit_settings() -> None:
    policy = LimitSettings(login_failures=7, login_backoff_seconds=3).login_policy()
    assert (policy.failures, policy.backoff_seconds) == (7, 3)


async def test_guesses_at_a_plcs_user_elsewhere_do_not_lock_that_plc_out(guard: LoginGuard) -> None:
    """The user back-off spares the address the user logged in from (the PLC), not a new address."""
    assert await guard.check("plc", "plc-secret", "10.0.0.1") is Verdict.OK
    for i in range(3):
        assert await guard.check("plc", f"guess-{i}", f"10.6.6.{i}") is Verdict.REFUSED
    assert await guard.check("plc", "plc-secret", "10.0.0.1") is Verdict.OK
    # Control: the same right password from an address the user never logged in from waits.
    assert await guard.check("plc", "plc-secret", "10.0.0.9") is Verdict.BACKED_OFF


async def test_backoff_stays_at_its_maximum_while_the_guessing_goes_on(clock: Clock) -> None:
    """A back-off longer than the window is no quiet time: the next episode doubles on."""
    policy = LoginPolicy(failures=1, window_seconds=10, backoff_seconds=2, backoff_max_seconds=40)
    guard = LoginGuard({"plc": PLC_HASH}, policy, clock=clock)
    try:
        waits = []
        for episode in range(7):
            assert await guard.check("plc", f"guess-{episode}", "10.0.0.1") is Verdict.REFUSED
            waits.append(guard.retry_after("plc", "10.0.0.1"))
            clock.now += waits[-1] + 0.01
        assert waits == pytest.approx([2, 4, 8, 16, 32, 40, 40])
    finally:
        guard.close()


async def test_oversized_names_and_passwords_are_refused_unchecked_against_the_address(guard: LoginGuard) -> None:
    huge = "u" * 1_000_000
    for _ in range(3):
        assert await guard.check(huge, "x", "10.6.6.6") is Verdict.REFUSED
        assert await guard.check("plc", "p" * 2000, "10.6.6.7") is Verdict.REFUSED
    assert guard.stats.checks == 0
    assert guard.retry_after("anyone", "10.6.6.6") > 0  # the address backs off
    assert all(len(user) <= 64 for kind, user in guard._tallies if kind == "user")
    # Control: the PLC's user was not backed off by the long passwords sent under its name.
    assert await guard.check("plc", "plc-secret", "10.0.0.1") is Verdict.OK
