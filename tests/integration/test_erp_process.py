"""`cell-gateway run` with the HTTP port open: the ERP API answers, and Ctrl-C still stops everything.

uvicorn would install its own SIGINT/SIGTERM handlers; the gateway's server does not, so the signal
reaches the gateway, which stops HTTP and OPC UA and lets the writer finish within the grace.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path
from typing import Any

import httpx

from simulators.gateway_process import free_port
from tests.support import DEMO_CONFIG, read_json_lines, spawn_gateway


async def test_the_erp_api_is_served_by_the_process_and_ctrl_c_stops_it(tmp_path: Path, port: int) -> None:
    http_port = free_port()
    env = dict(os.environ)
    env.update(
        CELL_GATEWAY_ENDPOINT=f"opc.tcp://127.0.0.1:{port}/cell-gateway/",
        CELL_GATEWAY_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'cell.db'}",
        CELL_GATEWAY_HTTP_PORT=str(http_port),
    )
    proc = await spawn_gateway(DEMO_CONFIG, tmp_path, env)
    assert proc.stdout is not None
    lines: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(30):
            started = await read_json_lines(proc.stdout, "gateway_started", lines)
        assert started["http"] == f"http://127.0.0.1:{http_port}/"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", auth=("erp", "erp")) as http:
            order = {"id": "XYZ", "due": "2030-01-31", "parts": {"ABC123": 2}}
            assert (await http.post("/orders", json=order)).status_code == 201
            assert (await http.get("/workorders/XYZ")).json()["remaining"] == {"ABC123": 2}

        proc.send_signal(signal.SIGINT)
        loop = asyncio.get_running_loop()
        sent = loop.time()
        async with asyncio.timeout(10):
            await read_json_lines(proc.stdout, "gateway_stopped", lines)
            rest = await proc.stdout.read()
            code = await proc.wait()
        assert loop.time() - sent < 5
        assert code == 0
        assert b"Traceback" not in rest
        assert not [line for line in lines if line.get("level") in ("error", "critical")]
        with socket.socket() as probe:  # the port is free again
            probe.bind(("127.0.0.1", http_port))
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
