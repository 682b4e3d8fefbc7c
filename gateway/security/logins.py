"""Password logins for OPC UA and HTTP: off the event loop, in constant time, with back-off.

One :class:`LoginGuard` per gateway checks every password login, whatever the protocol:

- **Off the event loop, bounded.** An argon2id check costs about 0.1-0.3 s of CPU and 64 MiB; it runs in
  the guard's own small thread pool (``workers``), never on the loop that serves the PLCs. At most
  ``queue`` checks wait for a worker; a login beyond that is answered at once as :attr:`Verdict.BUSY`,
  so a flood of guesses costs bounded memory and CPU.
- **Constant time.** An unknown user is checked against a hash made at start with the same argon2
  parameters as the accounts' own (the most common ones when they differ), so "no such user" and
  "wrong password" take the same time and give the same answer.
- **Remembered outcomes.** A reconnecting PLC is answered from :class:`LoginCache` (a keyed digest,
  never the password): each distinct (user, password) costs one full check while remembered.
- **Back-off.** ``failures`` failed logins within ``window_seconds`` for one user name, or from one peer
  address, start a back-off for that user or peer: logins are refused without a check
  (:attr:`Verdict.BACKED_OFF`) for ``backoff_seconds``, doubled for each further episode while the
  failures go on, up to ``backoff_max_seconds``. An episode is logged once when it starts. Sessions
  already open are not touched. A user's back-off does not hold back the address that user logged in
  from within the last day (``TRUSTED_SECONDS``): guesses at a PLC's user name from elsewhere do not
  lock the PLC out. A PLC behind an address that guesses (the same NAT) gets in again when the
  address's back-off ends (the price of slowing guessing down; see docs/operations.md).
- **Bounded input.** A user name longer than any configured one, or a password over 1 KiB, is refused
  unchecked and counted against the address only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from argon2 import PasswordHasher, extract_parameters

from gateway import limits
from gateway.logging import get_logger
from gateway.security.passwords import LoginCache, hash_password, is_password_hash, verify_password

if TYPE_CHECKING:  # the config imports LoginPolicy from here
    from gateway.config import CellConfig

__all__ = ["LoginGuard", "LoginPolicy", "LoginStats", "Verdict", "login_guard"]

log = get_logger(__name__)


class Verdict(Enum):
    OK = "ok"
    REFUSED = "refused"  # unknown user or wrong password: the same answer for both
    BACKED_OFF = "backed_off"  # too many recent failures for this user or peer: not checked
    BUSY = "busy"  # too many checks already waiting for a worker: not checked


@dataclass(frozen=True, slots=True)
class LoginPolicy:
    workers: int = 1
    queue: int = 16
    failures: int = 5
    window_seconds: float = 60.0
    backoff_seconds: float = 2.0
    backoff_max_seconds: float = 60.0


@dataclass(slots=True)
class LoginStats:
    """Counts since start, for the metrics: checks run and answers by verdict, back-off episodes."""

    checks: int = 0
    verdicts: dict[str, int] = field(default_factory=lambda: {v.value: 0 for v in Verdict})
    backoffs: dict[str, int] = field(default_factory=lambda: {"user": 0, "peer": 0})


@dataclass(slots=True)
class _Tally:
    failures: int = 0
    last_failure: float = 0.0
    until: float = 0.0  # backed off until this time (monotonic clock)
    episodes: int = 0


def login_guard(config: CellConfig) -> LoginGuard:
    """A guard for the password users of ``config``, with its login limits (``[limits]``)."""
    accounts = {u.name: u.password_hash for u in config.users if u.password_hash}
    return LoginGuard(accounts, config.limits.login_policy())


class LoginGuard:
    """Checks user name and password logins; see the module's docstring for the rules."""

    # Tallies kept per user name and per peer address; the oldest is forgotten beyond this.
    MAX_TALLIES = 10_000
    # A (user, peer) that logged in within this time is not held back by the user's back-off (only by
    # its address's): someone guessing a PLC's password elsewhere does not lock that PLC out.
    TRUSTED_SECONDS = 24 * 3600.0
    # Longer than any configured user name or any sane password: refused unchecked, counted against
    # the address only (an attacker's megabyte names are neither kept nor hashed).
    MAX_PASSWORD_LENGTH = 1024

    def __init__(
        self,
        accounts: Mapping[str, str],
        policy: LoginPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy or LoginPolicy()
        self._accounts = {name: stored for name, stored in accounts.items() if is_password_hash(stored)}
        # Same argon2 parameters as the accounts' hashes: an unknown user costs a real check.
        self._decoy = _decoy_hash(self._accounts.values())
        self._cache = LoginCache()
        self._clock = clock
        self._executor: ThreadPoolExecutor | None = None
        self._waiting = 0
        self._tallies: OrderedDict[tuple[str, str], _Tally] = OrderedDict()
        self._trusted: OrderedDict[tuple[str, str], float] = OrderedDict()  # (user, peer) -> last success
        self.stats = LoginStats()

    async def check(self, user: str, password: str, peer: str) -> Verdict:
        """The verdict for a login by ``user`` from ``peer`` (an address, without the port)."""
        verdict = await self._check(user, password, peer)
        self.stats.verdicts[verdict.value] += 1
        return verdict

    def retry_after(self, user: str, peer: str) -> float:
        """Seconds until ``user`` and ``peer`` are both out of back-off (0 when neither is in one)."""
        now = self._clock()
        tallies = [self._tallies.get(("peer", peer))]
        success = self._trusted.get((user, peer))
        if success is None or now - success > self.TRUSTED_SECONDS:
            tallies.append(self._tallies.get(("user", user)))
        return max([0.0, *(t.until - now for t in tallies if t)])

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def _check(self, user: str, password: str, peer: str) -> Verdict:
        if self.retry_after(user, peer) > 0:
            return Verdict.BACKED_OFF
        if len(user) > limits.MAX_USER_NAME_LENGTH or len(password) > self.MAX_PASSWORD_LENGTH:
            self._failed("peer", peer, user[: limits.MAX_USER_NAME_LENGTH])
            return Verdict.REFUSED
        stored = self._accounts.get(user)
        against = stored if stored is not None else self._decoy
        matches = self._cache.known(user, against, password)
        if matches is None:
            if self._waiting >= self.policy.queue:
                return Verdict.BUSY
            self._waiting += 1
            try:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(
                        self.policy.workers, thread_name_prefix="login-check", initializer=_lower_priority
                    )
                loop = asyncio.get_running_loop()
                matches = await loop.run_in_executor(self._executor, verify_password, against, password)
            finally:
                self._waiting -= 1
            self.stats.checks += 1
            self._cache.remember(user, against, password, matches)
        if matches and stored is not None:
            tally = self._tallies.get(("user", user))
            if tally is not None and tally.until <= self._clock():  # a running back-off runs on for others
                del self._tallies[("user", user)]
            self._trusted.pop((user, peer), None)
            self._trusted[(user, peer)] = self._clock()
            while len(self._trusted) > self.MAX_TALLIES:
                self._trusted.popitem(last=False)
            return Verdict.OK
        self._failed("user", user, peer)
        self._failed("peer", peer, user)
        return Verdict.REFUSED

    def _failed(self, kind: str, key: str, other: str) -> None:
        now = self._clock()
        tally = self._tallies.pop((kind, key), None) or _Tally()
        self._tallies[(kind, key)] = tally  # most recently failed last
        while len(self._tallies) > self.MAX_TALLIES:
            self._tallies.popitem(last=False)
        if now - tally.last_failure > self.policy.window_seconds:
            tally.failures = 0
        # Episodes count on while the failures go on: a back-off's own time is not a quiet window.
        if now - max(tally.last_failure, tally.until) > self.policy.window_seconds:
            tally.episodes = 0
        tally.failures += 1
        tally.last_failure = now
        if tally.failures < self.policy.failures:
            return
        seconds = min(self.policy.backoff_max_seconds, self.policy.backoff_seconds * 2**tally.episodes)
        tally.until = now + seconds
        tally.episodes += 1
        tally.failures = 0
        self.stats.backoffs[kind] += 1
        log.warning(
            "login_backoff",
            **{kind: key, ("peer" if kind == "user" else "user"): other},
            failures=self.policy.failures,
            within_seconds=self.policy.window_seconds,
            seconds=seconds,
            why=f"{self.policy.failures} failed logins for this {kind}; logins refused unchecked for {seconds:g} s",
        )


def _decoy_hash(stored: Iterable[str]) -> str:
    """A hash of a random password, with the argon2 parameters most of ``stored`` use (the defaults if none)."""
    # "$argon2id$v=19$m=65536,t=3,p=4$salt$hash": the parameters are everything before the salt.
    hashes = list(stored)
    kinds = Counter(h.rsplit("$", 2)[0] for h in hashes)
    secret = secrets.token_urlsafe(16)
    if not kinds:
        return hash_password(secret)
    example = next(h for h in hashes if h.startswith(kinds.most_common(1)[0][0] + "$"))
    return PasswordHasher.from_parameters(extract_parameters(example)).hash(secret)


def _lower_priority() -> None:
    """Run a login worker at a lower CPU priority than the event loop that serves the PLCs (Linux)."""
    # On Linux the nice value belongs to a thread, and argon2's own threads inherit it; elsewhere
    # setpriority would renice the whole process, so it is left alone.
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
