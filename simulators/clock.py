"""The simulation's clock: simulated time runs ``speed`` times faster than wall time, and can pause.

It satisfies :class:`gateway.clock.Clock`, so an in-process gateway can share it. Simulated time is
anchored on the monotonic wall clock: ``now = start + (elapsed wall time - paused time) x speed``. A
station that "works" for 900 simulated seconds sleeps 900 / speed wall seconds; the pause (used while
the gateway restarts or a PLC logs in again, so that a few wall seconds of it do not cost hours of
simulated production) holds every sleeper until it resumes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta


class SimClock:
    def __init__(self, start: datetime | None = None, speed: float = 600.0) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        start = start or datetime.now(UTC).replace(microsecond=0)
        if start.tzinfo is None:
            raise ValueError("SimClock needs a timezone-aware start time")
        self.start = start
        self.speed = speed
        self._t0 = time.monotonic()
        self._paused_at: float | None = None
        self._paused_total = 0.0
        self._holds = 0
        self.held_seconds = 0.0  # wall seconds during which simulated time was held
        self._running = asyncio.Event()
        self._running.set()

    def restart(self) -> None:
        """Start simulated time again from ``start`` (after the set-up, which takes wall time)."""
        self._t0 = time.monotonic()
        self._paused_total = 0.0
        self.held_seconds = 0.0
        if self._paused_at is not None:
            self._paused_at = self._t0

    # ------------------------------------------------------------------ reading
    def elapsed(self) -> float:
        """Simulated seconds since the start."""
        wall = (self._paused_at if self._paused_at is not None else time.monotonic()) - self._t0
        return (wall - self._paused_total) * self.speed

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.elapsed())

    @property
    def paused(self) -> bool:
        return self._paused_at is not None

    # ------------------------------------------------------------------ pausing
    def pause(self) -> None:
        """Hold simulated time; pauses nest (time runs again when every pause is resumed)."""
        self._holds += 1
        if self._paused_at is None:
            self._paused_at = time.monotonic()
            self._running.clear()

    def resume(self) -> None:
        if self._holds == 0:
            return
        self._holds -= 1
        if self._holds == 0 and self._paused_at is not None:
            held = time.monotonic() - self._paused_at
            self._paused_total += held
            self.held_seconds += held
            self._paused_at = None
            self._running.set()

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Simulated time stands still inside the block (a gateway restart, a PLC logging in again)."""
        self.pause()
        try:
            yield
        finally:
            self.resume()

    # ------------------------------------------------------------------ waiting
    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of simulated time (a simulation of work, not a wait for a condition)."""
        await self.sleep_until(self.elapsed() + max(0.0, seconds))

    async def sleep_until(self, target: float) -> None:
        """Wait until ``elapsed()`` reaches ``target`` simulated seconds."""
        while True:
            await self._running.wait()
            remaining = target - self.elapsed()
            if remaining <= 0:
                return
            await asyncio.sleep(remaining / self.speed)

    def wall_seconds(self, simulated: float) -> float:
        return simulated / self.speed
