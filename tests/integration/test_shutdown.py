"""SIGTERM while a PLC keeps reporting, against a real `cell-gateway run` process and its SQLite file.

The gateway first stops taking new sessions and calls (a call that arrives then is answered
BadServerHalted and not stored), then commits what it took, then stops: the process exits 0 well
within ``server.shutdown_grace_seconds``, every report answered Good is in the database and none
answered BadServerHalted is.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
from asyncua import Client

from simulators.gateway_process import free_port
from tests.integration.opcua_client import NOW, CellClient
from tests.support import DEMO_CONFIG, spawn_gateway

ROUNDS = 5  # the stop used to run into the grace about one time in five
GRACE_SECONDS = 5.0  # the demo config's server.shutdown_grace_seconds


class _Logs:
    """The process's JSON log lines, read as they come (the pipe never fills)."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.lines: list[dict[str, Any]] = []
        self.text: list[str] = []
        self._stream = stream
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._read(), name="gateway-logs")

    async def _read(self) -> None:
        while raw := await self._stream.readline():
            text = raw.decode(errors="replace")
            self.text.append(text)
            if text.startswith("{"):
                self.lines.append(json.loads(text))
            self._changed.set()
        self._changed.set()

    async def wait_for(self, event: str) -> dict[str, Any]:
        while True:
            for line in self.lines:
                if line.get("event") == event:
                    return line
            if self.task.done():
                raise AssertionError(f"the process ended before logging {event!r}: {''.join(self.text)}")
            self._changed.clear()
            await self._changed.wait()


async def _report_until_cut_off(
    cell: CellClient, station: str, pallet: str, prefix: str, results: dict[str, str], sent: asyncio.Event
) -> None:
    """PalletArrived / PalletDeparted in a loop, each with a new EventId, until the gateway is gone."""
    there = 1 if await cell.read(f"Cell/Stations/{station}/Pallet") else 0  # as the last round left it
    n = 0
    while True:
        n += 1
        event_id = f"{prefix}{station}-{n}"
        method = "PalletArrived" if (n + there) % 2 else "PalletDeparted"
        try:
            result = await cell.station(station, method, event_id, pallet, NOW)
        except Exception as exc:  # the connection closed under the call: its fate is unknown to the PLC
            results[event_id] = f"lost: {type(exc).__name__}"
            return
        results[event_id] = result.code
        if n == 20:
            sent.set()  # well into the session: time for the SIGTERM
        if result.code == "BadServerHalted":
            return


def _stored_event_ids(db: Path) -> set[str]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return {row[0] for row in conn.execute("SELECT event_id FROM cell_events")}


class _Gateway:
    """`cell-gateway run` on the demo config, in a folder of its own, with its JSON logs."""

    def __init__(self, folder: Path, pki: Path | None = None) -> None:
        self.folder = folder
        self.pki = pki or folder / "pki"
        self.db = folder / "cell.db"
        self.endpoint = f"opc.tcp://127.0.0.1:{free_port()}/cell-gateway/"
        self.http = free_port()
        self.proc: asyncio.subprocess.Process | None = None
        self.logs: _Logs | None = None
        self.signalled = 0.0

    async def __aenter__(self) -> _Gateway:
        env = {
            **os.environ,
            "CELL_GATEWAY_ENDPOINT": self.endpoint,
            "CELL_GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{self.db}",
            "CELL_GATEWAY_HTTP_PORT": str(self.http),
            "CELL_GATEWAY_PKI_DIR": str(self.pki),
        }
        self.proc = await spawn_gateway(DEMO_CONFIG, self.folder, env)
        assert self.proc.stdout is not None
        self.logs = _Logs(self.proc.stdout)
        async with asyncio.timeout(30):
            await self.logs.wait_for("gateway_started")
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.proc is not None
        assert self.logs is not None
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        await asyncio.gather(self.logs.task, return_exceptions=True)

    async def client(self) -> CellClient:
        client = Client(self.endpoint, timeout=10)
        await client.connect()
        return await CellClient(client).setup()

    def sigterm(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.signalled = asyncio.get_running_loop().time()

    async def exited(self) -> None:
        """The process ended cleanly (exit code 0, no error logged) and in time after SIGTERM."""
        assert self.proc is not None
        assert self.logs is not None
        async with asyncio.timeout(GRACE_SECONDS * 3):
            code = await self.proc.wait()
            took = asyncio.get_running_loop().time() - self.signalled
            await self.logs.task
        assert code == 0, "".join(self.logs.text)
        stopped = await self.logs.wait_for("gateway_stopped")
        # The gateway's own stop, well within the grace; the process's exit adds the interpreter's
        # teardown (about a second on a busy machine) and must still come before the grace ends.
        assert stopped["seconds"] < GRACE_SECONDS / 2, stopped
        assert took < GRACE_SECONDS, f"the process ended {took:.2f} s after SIGTERM (grace {GRACE_SECONDS} s)"
        errors = [line for line in self.logs.lines if line.get("level") in ("error", "critical")]
        # A /healthz answered 503 is logged as an error; anything else is not expected.
        assert not [line for line in errors if line.get("event") != "http_request"], self.logs.text


async def _close(cell: CellClient) -> None:
    try:
        async with asyncio.timeout(2):
            await cell.client.disconnect()
    except Exception:  # the server is gone: nothing to say goodbye to
        cell.client.disconnect_socket()


async def test_sigterm_while_plcs_keep_reporting_stores_every_good_answer_and_exits_within_the_grace(
    tmp_path: Path,
) -> None:
    """Each round restarts the gateway on the same database (and the same server certificate)."""
    for round_ in range(ROUNDS):
        results: dict[str, str] = {}
        async with _Gateway(tmp_path) as gateway:
            plcs = [await gateway.client() for _ in ("L1", "M1")]
            try:
                sent = asyncio.Event()
                loops = [
                    asyncio.create_task(_report_until_cut_off(plc, station, pallet, f"r{round_}-", results, sent))
                    for plc, (station, pallet) in zip(plcs, (("L1", "P1"), ("M1", "P2")), strict=True)
                ]
                async with asyncio.timeout(30):
                    await sent.wait()
                gateway.sigterm()
                await gateway.exited()
                async with asyncio.timeout(10):
                    await asyncio.gather(*loops)
            finally:
                for plc in plcs:
                    await _close(plc)
        stored = _stored_event_ids(gateway.db)
        good = {e for e, code in results.items() if code == "Good"}
        halted = {e for e, code in results.items() if code == "BadServerHalted"}
        assert len(good) >= 20, results  # the control: the sessions were served until the signal
        assert good <= stored, f"round {round_}: answered Good but not stored: {sorted(good - stored)}"
        assert not halted & stored, f"round {round_}: refused at shutdown but stored: {sorted(halted & stored)}"


async def test_a_call_arriving_while_the_gateway_drains_is_refused_and_the_call_taken_is_answered(
    tmp_path: Path,
) -> None:
    """The drain is made to last: another process holds the database's write lock while a report is
    being committed; meanwhile a new call is answered BadServerHalted and a new connection is refused."""
    async with _Gateway(tmp_path) as gateway:
        plc, other = await gateway.client(), await gateway.client()
        locker = sqlite3.connect(gateway.db, timeout=5, isolation_level=None)
        try:
            assert (await plc.station("L1", "PalletArrived", "before", "P1", NOW)).ok  # the control
            locker.execute("BEGIN IMMEDIATE")
            taken = asyncio.create_task(plc.station("L1", "PalletDeparted", "taken", "P1", NOW))
            assert gateway.logs is not None
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http}") as http, asyncio.timeout(4):
                # The report is being committed (below the lock's 5 s busy timeout): /healthz says so.
                while "a commit has waited" not in (await http.get("/healthz")).json()["checks"]["database"]:
                    assert not taken.done(), (await taken).code
            gateway.sigterm()
            async with asyncio.timeout(10):
                await gateway.logs.wait_for("gateway_draining")
            late = await other.station("M1", "PalletArrived", "late", "P2", NOW)
            assert late.code == "BadServerHalted"
            newcomer = Client(gateway.endpoint, timeout=2)
            try:
                await newcomer.connect()
            except (OSError, TimeoutError):
                pass
            else:
                await newcomer.disconnect()
                raise AssertionError("a new session was accepted while the gateway was stopping")
            assert not taken.done()  # still waiting for its commit
        finally:
            if locker.in_transaction:
                locker.execute("ROLLBACK")
            locker.close()
        answer = await taken
        assert answer.ok, answer.code  # taken before the signal: committed and answered
        await gateway.exited()
        await _close(plc)
        await _close(other)
    stored = _stored_event_ids(gateway.db)
    assert {"before", "taken"} <= stored
    assert "late" not in stored
