"""`cell-gateway run` as a user starts it: a real process, a real OPC UA client, a real SQLite file."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client

from gateway import __version__
from gateway.storage.database import create_engine
from gateway.storage.migrate import current_revision, head_revision
from simulators.gateway_process import free_port
from tests.support import DEMO_CONFIG, ROOT, read_json_lines, spawn_gateway


async def test_run_serves_the_demo_cell_and_stops_cleanly_on_ctrl_c(tmp_path: Path, port: int) -> None:
    db = tmp_path / "var" / "cell.db"
    env = dict(os.environ)
    env.update(
        CELL_GATEWAY_ENDPOINT=f"opc.tcp://127.0.0.1:{port}/cell-gateway/",
        CELL_GATEWAY_DATABASE_URL=f"sqlite+aiosqlite:///{db}",
        CELL_GATEWAY_HTTP_PORT="0",
        CELL_GATEWAY_PKI_DIR=str(tmp_path / "pki"),
    )
    proc = await spawn_gateway(DEMO_CONFIG, tmp_path, env)
    assert proc.stdout is not None
    lines: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(30):
            started = await read_json_lines(proc.stdout, "gateway_started", lines)
        assert started["endpoint"] == f"opc.tcp://127.0.0.1:{port}/cell-gateway/"
        assert started["version"] == __version__

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
            stopped = await read_json_lines(proc.stdout, "gateway_stopped", lines)
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


async def _failed_start(config: Path, cwd: Path, *args: str, **env: str) -> tuple[int, list[dict[str, Any]], str]:
    """Run ``cell-gateway run`` expecting it to fail: its exit code, its JSON log lines, all it printed."""
    proc = await spawn_gateway(config, cwd, {**os.environ, **env}, *args)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert proc.returncode is not None
    return proc.returncode, lines, text


def _the_failure(lines: list[dict[str, Any]], text: str) -> dict[str, Any]:
    """The one ``gateway_start_failed`` line, with no error line before it and no traceback anywhere."""
    failed = [line for line in lines if line.get("event") == "gateway_start_failed"]
    assert len(failed) == 1, text
    errors = [line for line in lines if line.get("level") in ("error", "critical")]
    assert errors == failed, text
    assert "Traceback" not in text
    return failed[0]


@pytest.fixture
def occupied() -> Iterator[int]:
    """A port on 127.0.0.1 another process listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _quick_env(tmp_path: Path, port: int, http_port: int = 0) -> dict[str, str]:
    return {
        "CELL_GATEWAY_ENDPOINT": f"opc.tcp://127.0.0.1:{port}/cell-gateway/",
        "CELL_GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cell.db'}",
        "CELL_GATEWAY_HTTP_PORT": str(http_port),
        "CELL_GATEWAY_PKI_DIR": str(tmp_path / "pki"),
    }


async def test_run_names_the_opcua_address_in_use(tmp_path: Path, occupied: int) -> None:
    code, lines, text = await _failed_start(DEMO_CONFIG, tmp_path, **_quick_env(tmp_path, occupied))
    failure = _the_failure(lines, text)
    assert code == 4
    assert failure["reason"] == "address_in_use"
    assert (failure["service"], failure["address"], failure["port"]) == ("opcua", "127.0.0.1", occupied)


async def test_run_names_the_http_address_in_use(tmp_path: Path, occupied: int) -> None:
    code, lines, text = await _failed_start(DEMO_CONFIG, tmp_path, **_quick_env(tmp_path, free_port(), occupied))
    failure = _the_failure(lines, text)
    assert code == 4
    assert (failure["service"], failure["address"], failure["port"]) == ("http", "127.0.0.1", occupied)


async def test_run_shows_the_traceback_at_debug_level(tmp_path: Path, occupied: int) -> None:
    env = _quick_env(tmp_path, occupied)
    code, _lines, text = await _failed_start(DEMO_CONFIG, tmp_path, "--log-level", "DEBUG", **env)
    assert code == 4
    assert "Traceback" in text


@pytest.mark.skipif(importlib.util.find_spec("asyncpg") is None, reason="asyncpg is not installed")
async def test_run_names_the_postgresql_host_it_cannot_reach(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there
    env = _quick_env(tmp_path, free_port())
    env["CELL_GATEWAY_DATABASE_URL"] = f"postgresql+asyncpg://cell:secret@127.0.0.1:{closed}/cell"
    code, lines, text = await _failed_start(DEMO_CONFIG, tmp_path, **env)
    failure = _the_failure(lines, text)
    assert code == 5
    assert failure["reason"] == "database_unavailable"
    assert (failure["host"], failure["port"]) == ("127.0.0.1", closed)
    assert "secret" not in text


async def test_run_names_a_missing_certificate_file(tmp_path: Path) -> None:
    config = tmp_path / "cell.toml"
    config.write_text(
        DEMO_CONFIG.read_text() + '\n[[users]]\nname = "plc-x"\nroles = ["plc"]\nstations = ["L1"]\n'
        'certificate = "certs/plc-x.der"\n'
    )
    code, lines, text = await _failed_start(config, ROOT, **_quick_env(tmp_path, free_port()))
    failure = _the_failure(lines, text)
    assert code == 3
    assert str(tmp_path / "certs" / "plc-x.der") in " ".join(failure["problems"])
    assert not (tmp_path / "cell.db").exists()


async def test_run_refuses_a_broken_config_and_names_the_problem(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text(DEMO_CONFIG.read_text().replace('group = "MILL"', 'group = "MILLL"', 1))
    code, lines, text = await _failed_start(broken, ROOT)
    failure = _the_failure(lines, text)
    assert code == 2
    assert failure["reason"] == "config"
    assert any("operations[1].group" in p and "MILLL" in p for p in failure["problems"])
