"""What the tests share besides fixtures: the repository's paths, the reference time, and small helpers.

Fixtures live in ``tests/conftest.py`` (pytest finds them there; nothing imports a conftest); the
constants and plain helpers that test modules import live here, each defined once. A free port comes
from ``simulators.gateway_process.free_port``, the same one the simulator's gateway process uses.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.cell.model import CellModel

ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = ROOT / "config" / "cell.toml"

#: The reference time of the cell, jobs, service and ERP tests (a manual clock starts here): 06:00 UTC
#: on Monday 2 March 2026, a shift start. The orders unit tests keep their own day (5 January 2026):
#: their due dates and schedules are written as dates of that January.
T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


class ModelParts:
    """What a test harness holding a :class:`CellModel` shows of it: its job book and its tracker.

    A harness sets ``model`` (or makes it a property, e.g. the writer's current model, which a reload
    replaces).
    """

    model: CellModel

    @property
    def book(self):  # type: ignore[no-untyped-def]
        return self.model.book

    @property
    def tracker(self):  # type: ignore[no-untyped-def]
        return self.model.tracker


async def spawn_gateway(
    config: Path, cwd: Path, env: Mapping[str, str], *args: str, before: Sequence[str] = ()
) -> asyncio.subprocess.Process:
    """``cell-gateway run --json-logs`` on ``config`` in a process of its own, its stdout and stderr piped
    together (its JSON log lines). ``before``: a command that runs it (as another user, say)."""
    return await asyncio.create_subprocess_exec(
        *before, sys.executable, "-m", "gateway", "run", "--config", str(config), "--json-logs", *args,
        cwd=cwd, env=dict(env), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip


async def read_json_lines(stream: asyncio.StreamReader, until: str, lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Read a gateway process's JSON log lines into ``lines`` up to the one whose event is ``until``."""
    while True:
        raw = await stream.readline()
        if not raw:
            raise AssertionError(f"process ended before logging {until!r}; got {lines}")
        line = json.loads(raw)
        lines.append(line)
        if line.get("event") == until:
            return line
