"""Storage faults as a PLC and a monitor see them, through OPC UA and /healthz of a real gateway:

- a full disk (SQLite's ``max_page_count`` on the store's connections, a real "database or disk is
  full"): reports are answered BadResourceUnavailable and not stored, /healthz answers 503 with that
  reason, and both recover without a restart once there is room again;
- a write lock held by another process: /healthz answers within its budget with a reason, never an
  empty one, and never by writing itself;
- a gateway started on a read-only database file (a real process, run as an unprivileged user when
  the tests run as root, since root writes any file): it starts, refuses reports, and stores them
  again without a restart once the file is writable; in a read-only folder SQLite cannot even read
  the database, and the start fails naming the folder.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from asyncua import Client
from sqlalchemy import event

from gateway.config import CellConfig
from gateway.http.status_page import FAILURE_MEMORY_SECONDS
from gateway.storage.sql_store import SqlStore
from simulators.gateway_process import free_port
from tests.integration.opcua_client import NOW, CellClient
from tests.integration.opcua_support import Session, serving
from tests.support import DEMO_CONFIG, ROOT, spawn_gateway

BUDGET = 1.0  # /healthz answers within this (gateway.http.status_page.HEALTH_BUDGET_SECONDS)
ANSWERED_WITHIN = BUDGET + 0.5  # the budget plus an HTTP round trip on a busy test machine


def _stored(db: Path) -> set[str]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return {row[0] for row in conn.execute("SELECT event_id FROM cell_events")}


def _files(db: Path) -> list[tuple[int, int]]:
    """Size and modification time of the database and its WAL: a write changes them."""
    return [(p.stat().st_size, p.stat().st_mtime_ns) for p in (db, db.with_name(db.name + "-wal"))]


async def _health(http: httpx.AsyncClient) -> tuple[int, str, float]:
    """/healthz: its status, its database check, and how long it took to answer."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    answer = await http.get("/healthz")
    took = loop.time() - started
    return answer.status_code, answer.json()["checks"]["database"], took


@asynccontextmanager
async def _gateway_with_http(
    make_config: Callable[..., CellConfig],
) -> AsyncIterator[tuple[Session, httpx.AsyncClient]]:
    config = make_config(CELL_GATEWAY_HTTP_PORT=str(free_port()))
    async with serving(config) as session:
        assert session.gateway.http is not None
        async with httpx.AsyncClient(base_url=session.gateway.http.url.rstrip("/"), timeout=10) as http:
            yield session, http


async def test_a_full_disk_refuses_reports_with_a_reason_in_healthz_and_recovers_without_restart(
    make_config: Callable[..., CellConfig], db_url: str
) -> None:
    db = Path(db_url.removeprefix("sqlite+aiosqlite:///"))
    async with _gateway_with_http(make_config) as (session, http):
        cell, gateway = session.cell, session.gateway
        assert (await cell.station("L1", "PalletArrived", "a-1", "P1", NOW)).ok  # the control
        assert (await _health(http))[:2] == (200, "ok")

        store = gateway.writer.store
        assert isinstance(store, SqlStore)
        engine = store.transactions.sync_engine
        assert engine is not None
        room: dict[str, int | None] = {"pages": None}  # None: as much as the disk holds

        @event.listens_for(engine, "checkout")
        def _disk(dbapi_connection: Any, *_: Any) -> None:
            pages = room["pages"]
            dbapi_connection.execute(f"PRAGMA max_page_count = {pages if pages is not None else 1073741823}")

        with closing(sqlite3.connect(db)) as conn:
            room["pages"] = conn.execute("PRAGMA page_count").fetchone()[0]  # the disk is full now
        try:
            refused: list[str] = []
            for n in range(400):  # the free pages inside the file take a few reports first
                event_id = f"full-{n}"
                method = "PalletDeparted" if n % 2 == 0 else "PalletArrived"
                result = await cell.station("L1", method, event_id, "P1", NOW)
                if not result.ok:
                    assert result.code == "BadResourceUnavailable"
                    refused.append(event_id)
                    break
            assert refused, "the database never filled up"
            status, reason, took = await _health(http)
            assert status == 503
            assert "database or disk is full" in reason
            assert took < ANSWERED_WITHIN
            assert refused[0] not in _stored(db)  # not acknowledged, not stored
        finally:
            room["pages"] = None  # room again on the disk
        again = await cell.station("L1", method, refused[0], "P1", NOW)  # the PLC's retry, same EventId
        assert again.ok, again.code
        assert (await _health(http))[:2] == (200, "ok")
        event.remove(engine, "checkout", _disk)
    assert refused[0] in _stored(db)


async def test_healthz_under_a_held_write_lock_answers_within_its_budget_with_a_reason(
    make_config: Callable[..., CellConfig], db_url: str
) -> None:
    db = Path(db_url.removeprefix("sqlite+aiosqlite:///"))
    async with _gateway_with_http(make_config) as (session, http):
        cell = session.cell
        assert (await cell.station("L1", "PalletArrived", "a-1", "P1", NOW)).ok
        await session.gateway.writer.wait_idle()
        before = _files(db)
        for _ in range(3):  # the control: healthy, answered at once, and /healthz writes nothing
            assert (await _health(http))[:2] == (200, "ok")
        assert _files(db) == before

        endpoint = session.gateway.config.server.endpoint
        locker = sqlite3.connect(db, timeout=5, isolation_level=None)
        async with Client(endpoint, timeout=10, watchdog_intervall=60) as client:
            patient = await CellClient(client).setup()
            try:
                locker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
                # A session of its own: asyncua answers a session's requests one by one, so a call waiting
                # for the lock holds back that client's keep-alive reads (its watchdog would reconnect).
                call = asyncio.create_task(patient.station("L1", "PalletDeparted", "d-1", "P1", NOW))
                reasons = []
                async with asyncio.timeout(15):
                    while not call.done():
                        status, reason, took = await _health(http)
                        assert took < ANSWERED_WITHIN, f"/healthz took {took:.2f} s"
                        assert status == 200 or reason.strip(), "a 503 without a reason"
                        reasons.append(reason)
                        await asyncio.wait([call], timeout=0.25)  # paced by the report's own answer
                assert any("a commit has waited" in r for r in reasons), reasons  # before the busy timeout
                assert (await call).code == "BadResourceUnavailable"  # the writer gave up waiting for the lock
                status, reason, took = await _health(http)
                assert status == 503
                assert "database is locked" in reason
                assert took < ANSWERED_WITHIN
            finally:
                if locker.in_transaction:
                    locker.execute("ROLLBACK")
                locker.close()
        # The lock is gone and no PLC has sent anything since: once FAILURE_MEMORY_SECONDS have passed
        # (moved here on the failure's own timestamp, not waited for), the failure is history, not
        # health: 200, with the last failure named.
        writer = session.gateway.writer
        last = writer.last_commit
        assert last is not None
        assert not last.ok
        assert (await _health(http))[0] == 503  # control: a fresh failure is still the answer
        writer.last_commit = replace(last, at=last.at - FAILURE_MEMORY_SECONDS - 1)
        response = await http.get("/healthz")
        assert response.status_code == 200
        assert "database is locked" in response.json()["last_commit_failed"]["error"]
        assert (await cell.station("L1", "PalletDeparted", "d-1", "P1", NOW)).ok  # the retry, lock gone
        assert (await _health(http))[:2] == (200, "ok")
        assert "last_commit_failed" not in (await http.get("/healthz")).json()


# ---------------------------------------------------------------------------------------- read-only


def _as_unprivileged() -> list[str]:
    """How to run a command as a user the file permissions apply to: nothing to add unless root."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("root writes read-only files, and setpriv (util-linux) is missing to run as nobody")
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]


class _Process:
    """`cell-gateway run` on the demo config, as the unprivileged user, with its JSON logs."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.db = folder / "data" / "cell.db"
        self.port, self.http_port = free_port(), free_port()
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[dict[str, Any]] = []

    async def start(self) -> None:
        env = {
            **os.environ,
            "CELL_GATEWAY_ENDPOINT": f"opc.tcp://127.0.0.1:{self.port}/cell-gateway/",
            "CELL_GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{self.db}",
            "CELL_GATEWAY_HTTP_PORT": str(self.http_port),
            "CELL_GATEWAY_PKI_DIR": str(self.folder / "pki"),
            "PYTHONPATH": str(ROOT),
            "HOME": str(self.folder),
        }
        self.proc = await spawn_gateway(DEMO_CONFIG, self.folder, env, before=_as_unprivileged())
        await self.wait_for("gateway_started")

    async def wait_for(self, event_name: str) -> dict[str, Any]:
        assert self.proc is not None
        assert self.proc.stdout is not None
        async with asyncio.timeout(30):
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    # Reap it here: a signal sent to an ended process makes Popen.send_signal reap it
                    # behind asyncio's child watcher, which then reports exit code 255.
                    await self.proc.wait()
                    raise AssertionError(f"the gateway ended before {event_name!r}: {self.lines}")
                if raw.startswith(b"{"):
                    line = json.loads(raw)
                    self.lines.append(line)
                    if line.get("event") == event_name:
                        return line

    async def stop(self) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(15):
                    await self.proc.communicate()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        assert self.proc.returncode is not None
        return self.proc.returncode


@pytest.fixture
def open_folder() -> Any:
    """A folder the unprivileged user may write (pytest's tmp_path is root's alone), the database's
    folder ``data`` in it."""
    folder = Path(tempfile.mkdtemp(prefix="cellgw-ro-"))
    (folder / "data").mkdir()
    for each in (folder, folder / "data"):
        each.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


async def test_started_on_a_read_only_database_it_refuses_reports_and_stores_them_once_writable(
    open_folder: Path,
) -> None:
    first = _Process(open_folder)  # makes the database, as the user the gateway runs as
    await first.start()
    assert await first.stop() == 0
    db = first.db
    db.chmod(0o444)  # what a restore or a mistake leaves

    gateway = _Process(open_folder)
    await gateway.start()  # it starts: the state is readable
    try:
        async with (
            Client(f"opc.tcp://127.0.0.1:{gateway.port}/cell-gateway/", timeout=10) as client,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}", timeout=10) as http,
        ):
            cell = await CellClient(client).setup()
            status, reason, took = await _health(http)
            assert status == 503
            assert "read-only" in reason or "readonly" in reason
            assert took < ANSWERED_WITHIN
            refused = await cell.station("L1", "PalletArrived", "ro-1", "P1", NOW)
            assert refused.code == "BadResourceUnavailable"
            status, reason, _ = await _health(http)
            assert status == 503
            assert "attempt to write a readonly database" in reason

            db.chmod(0o644)  # the operator makes it writable again; no restart
            again = await cell.station("L1", "PalletArrived", "ro-1", "P1", NOW)  # the PLC's retry
            assert again.ok, again.code
            assert (await cell.station("L1", "PalletDeparted", "ro-2", "P1", NOW)).ok
            assert (await _health(http))[:2] == (200, "ok")
    finally:
        db.chmod(0o644)
        code = await gateway.stop()
    assert code == 0
    assert {"ro-1", "ro-2"} <= _stored(db)


async def test_a_read_only_database_folder_fails_the_start_and_names_the_folder(open_folder: Path) -> None:
    """SQLite cannot even read a WAL database when it cannot make its -wal and -shm files beside it:
    there is no state to serve, so the start fails (exit 5) and says which folder to fix."""
    first = _Process(open_folder)
    await first.start()
    assert await first.stop() == 0
    db = first.db
    db.parent.chmod(0o555)
    try:
        failed = _Process(open_folder)
        with pytest.raises(AssertionError, match="gateway ended before"):
            await failed.start()
        assert await failed.stop() == 5
        (line,) = [x for x in failed.lines if x.get("event") == "gateway_start_failed"]
        assert line["reason"] == "database_unavailable"
        assert f"the database folder {db.parent} is read-only" in line["error"]
    finally:
        db.parent.chmod(0o777)
    again = _Process(open_folder)  # the control: the folder writable again, it starts
    await again.start()
    assert await again.stop() == 0
