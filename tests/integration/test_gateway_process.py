"""`cell-gateway run` as a user starts it: a real process, a real OPC UA client, a real SQLite file."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from asyncua import Client

from gateway.storage.database import create_engine
from gateway.storage.migrate import current_revision, head_revision
from tests.conftest import DEMO_CONFIG, ROOT


async def _read_json_lines(stream: asyncio.StreamReader, until: str, lines: list[dict[str, Any]]) -> dict[str, Any]:
    while True:
        raw = await stream.readline()
        if not raw:
            raise AssertionError(f"process ended before logging {until!r}; got {lines}")
        line = json.loads(raw)
        lines.append(line)
        if line.get("event") == until:
            return line


async def test_run_serves_the_demo_cell_and_stops_cleanly_on_ctrl_c(tmp_path: Path, port: int) -> None:
    db = tmp_path / "var" / "cell.db"
    env = dict(os.environ)
    env.update(
        CELL_GATEWAY_ENDPOINT=f"opc.tcp://127.0.0.1:{port}/cell-gateway/",
        CELL_GATEWAY_DATABASE_URL=f"sqlite+aiosqlite:///{db}",
        CELL_GATEWAY_HTTP_PORT="0",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "run", "--config", str(DEMO_CONFIG), "--json-logs",
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(30):
            started = await _read_json_lines(proc.stdout, "gateway_started", lines)
        assert started["endpoint"] == f"opc.tcp://127.0.0.1:{port}/cell-gateway/"

        client = Client(f"opc.tcp://127.0.0.1:{port}/cell-gateway/")
        async with client:
            ns = await client.get_namespace_index("urn:cell-gateway")
            l1 = await client.nodes.objects.get_child([f"{ns}:Cell", f"{ns}:Stations", f"{ns}:L1"])
            assert await (await l1.get_child(f"{ns}:Kind")).read_value() == "load"
            assert await (await l1.get_child(f"{ns}:Groups")).read_value() == ["LOAD"]
            stations = await (await client.nodes.objects.get_child([f"{ns}:Cell", f"{ns}:Stations"])).get_children()
            names = sorted([(await s.read_browse_name()).Name for s in stations])
            assert names == ["C1", "L1", "L2", "M1", "M2", "M3", "M4", "W1"]

        engine = create_engine(f"sqlite+aiosqlite:///{db}")
        try:
            assert await current_revision(engine) == head_revision()
        finally:
            await engine.dispose()

        proc.send_signal(signal.SIGINT)
        loop = asyncio.get_running_loop()
        sent = loop.time()
        async with asyncio.timeout(10):
            stopped = await _read_json_lines(proc.stdout, "gateway_stopped", lines)
            rest = await proc.stdout.read()
            code = await proc.wait()
        assert loop.time() - sent < 5, "Ctrl-C must stop the gateway within 5 s"
        assert code == 0
        assert stopped["level"] == "info"
        errors = [line for line in lines if line.get("level") in ("error", "critical")]
        assert not errors, errors
        assert b"Traceback" not in rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_run_refuses_a_broken_config_and_names_the_problem(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text(DEMO_CONFIG.read_text().replace('group = "MILL"', 'group = "MILLL"', 1))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "run", "--config", str(broken),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert "operations[1].group" in err.decode()
    assert "MILLL" in err.decode()
