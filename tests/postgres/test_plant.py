"""A plant: several cells on one PostgreSQL database, each in its own schema (``database.schema``).

Two gateway processes run side by side on the one server, with schemas ``cell_a`` and ``cell_b``:
each takes its own jobs and orders and sees only those; tables and migration versions are per schema.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from asyncua import Client
from sqlalchemy import exc as sa_exc

from gateway.storage.database import create_engine
from gateway.storage.migrate import current_revision, head_revision, upgrade
from gateway.storage.schema import metadata
from simulators.gateway_process import free_port
from tests.answer_lookup import check_answer_lookup
from tests.integration.opcua_client import CellClient, i32
from tests.integration.opcua_support import good
from tests.support import DEMO_CONFIG


def cell_config(folder: Path, url: str, schema: str, pki_dir: Path) -> Path:
    """The demo cell on ``url`` in ``schema``: the plant's config of one cell."""
    text = DEMO_CONFIG.read_text(encoding="utf-8")
    text, urls = re.subn(r'(?m)^url = ".*"$', f'url = "{url}"\nschema = "{schema}"', text)
    text, pkis = re.subn(r'(?m)^pki_dir = ".*"$', f'pki_dir = "{pki_dir}"', text)
    assert (urls, pkis) == (1, 1)
    folder.mkdir()
    path = folder / "cell.toml"
    path.write_text(text, encoding="utf-8")
    return path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60)


def clis(*commands: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
    """Several ``cell-gateway`` commands at once (each process spends most of its time starting)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "gateway", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for args in commands
    ]
    done = []
    for args, proc in zip(commands, procs, strict=True):
        out, err = proc.communicate(timeout=60)
        done.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
    return done


@dataclass
class RunningCell:
    config: Path
    endpoint: str
    http: str


async def _until(stream: asyncio.StreamReader, event: str) -> None:
    seen = []
    while True:
        raw = await stream.readline()
        if not raw:
            raise AssertionError(f"process ended before logging {event!r}; got {seen}")
        seen.append(raw)
        if json.loads(raw).get("event") == event:
            return


@asynccontextmanager
async def running(*configs: Path) -> AsyncIterator[list[RunningCell]]:
    """``cell-gateway run`` for each config, side by side on free ports; all stopped with SIGINT at the end."""
    procs: list[asyncio.subprocess.Process] = []
    cells = []
    try:
        for config in configs:
            port, http_port = free_port(), free_port()
            endpoint = f"opc.tcp://127.0.0.1:{port}/cell-gateway/"
            env = dict(os.environ, CELL_GATEWAY_ENDPOINT=endpoint, CELL_GATEWAY_HTTP_PORT=str(http_port))
            command = [sys.executable, "-m", "gateway", "run", "--config", str(config), "--json-logs"]
            pipe, out = asyncio.subprocess.PIPE, asyncio.subprocess.STDOUT
            proc = await asyncio.create_subprocess_exec(*command, cwd=config.parent, env=env, stdout=pipe, stderr=out)
            procs.append(proc)
            cells.append(RunningCell(config, endpoint, f"http://127.0.0.1:{http_port}"))
        async with asyncio.timeout(60):
            await asyncio.gather(*(_until(_out(proc), "gateway_started") for proc in procs))
        yield cells
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            await asyncio.gather(*(_out(proc).read() for proc in procs))
            assert [await proc.wait() for proc in procs] == [0] * len(procs)
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


def _out(proc: asyncio.subprocess.Process) -> asyncio.StreamReader:
    assert proc.stdout is not None
    return proc.stdout


async def test_two_cells_share_one_database_each_in_its_own_schema(postgres_url: str, tmp_path: Path) -> None:
    names = ("cell_a", "cell_b")
    configs = [cell_config(tmp_path / name, postgres_url, name, tmp_path / name / "pki") for name in names]
    async with running(*configs) as cells:
        for name, cell in zip(names, cells, strict=True):
            async with Client(cell.endpoint, timeout=10) as client:
                opcua = await CellClient(client).setup()
                await good(opcua.jobs("CreateJob", f"J-{name}", "PN-1", "A", 2, None, i32(0), 0.0, [], []))
            async with httpx.AsyncClient(base_url=cell.http, auth=("erp", "erp")) as http:
                order = {"id": f"WO-{name}", "due": "2030-01-31", "parts": {"ABC123": 1}}
                assert (await http.post("/orders", json=order)).status_code == 201

        for name, other, cell in zip(names, reversed(names), cells, strict=True):
            async with httpx.AsyncClient(base_url=cell.http, auth=("erp", "erp")) as http:
                jobs = (await http.get("/jobs")).json()["items"]
                assert [job["id"] for job in jobs] == [f"J-{name}"]
                assert (await http.get(f"/jobs/J-{other}")).status_code == 404
                assert (await http.get(f"/workorders/WO-{name}")).status_code == 200
                assert (await http.get(f"/workorders/WO-{other}")).status_code == 404
                health = await http.get("/healthz")  # a textual statement: it finds the cell's tables too
                assert health.json()["checks"]["database"] == "ok"

    head = head_revision()
    # the other commands find the cell's schema too
    current, status = clis(("db", "current", "--config", str(configs[1])), ("status", "--config", str(configs[1])))
    assert current.returncode == 0, current.stderr
    assert current.stdout.strip() == f"current {head}, head {head}"
    assert status.returncode == 0, status.stderr
    assert "J-cell_b" in status.stdout
    assert "J-cell_a" not in status.stdout

    conn = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        for name in names:
            assert await conn.fetchval(f"SELECT version_num FROM {name}.alembic_version") == head
            assert [r["id"] for r in await conn.fetch(f"SELECT id FROM {name}.jobs")] == [f"J-{name}"]
        where = await conn.fetch(
            "SELECT DISTINCT table_schema FROM information_schema.tables WHERE table_name = 'jobs'"
        )
        assert sorted(r["table_schema"] for r in where) == ["cell_a", "cell_b"]
        public = await conn.fetch("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        assert public == []
    finally:
        await conn.close()


async def test_migration_versions_are_per_schema(postgres_url: str) -> None:
    older = "0002"
    engines = {name: create_engine(postgres_url, schema=name) for name in ("cell_a", "cell_b")}
    try:
        assert await upgrade(engines["cell_a"]) == (None, head_revision())
        assert await upgrade(engines["cell_b"], older) == (None, older)
        assert await current_revision(engines["cell_a"]) == head_revision()
        assert await current_revision(engines["cell_b"]) == older
        assert await upgrade(engines["cell_b"]) == (older, head_revision())
        async with engines["cell_a"].connect() as conn:  # the schema holds exactly what the models describe
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync, opts={"compare_type": True}), metadata)
            )
        assert diff == []
        await check_answer_lookup(engines["cell_b"])  # the textual look-up of stored answers, in the schema
    finally:
        for engine in engines.values():
            await engine.dispose()


async def test_a_cell_role_runs_in_a_schema_made_for_it_without_rights_on_the_database(postgres_url: str) -> None:
    """The least a cell's role needs (docs/operations.md): a schema it owns; no CREATE on the database."""
    admin_url = postgres_url.replace("postgresql+asyncpg", "postgresql")
    role = f"gw_{postgres_url.rsplit('_', 1)[-1]}"  # roles belong to the server: one per test database
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN")
        await admin.execute(f"CREATE SCHEMA cell_c AUTHORIZATION {role}")
        as_role = postgres_url.replace("postgres@", f"{role}@")
        engine = create_engine(as_role, schema="cell_c")
        try:
            assert await upgrade(engine) == (None, head_revision())
            assert await upgrade(engine) == (head_revision(), head_revision())
            await check_answer_lookup(engine)
        finally:
            await engine.dispose()
        refused = create_engine(as_role, schema="cell_d")  # no schema of its own, no right to make one
        try:
            with pytest.raises(sa_exc.ProgrammingError, match="permission denied"):
                await upgrade(refused)
        finally:
            await refused.dispose()
    finally:
        await admin.execute(f"DROP OWNED BY {role} CASCADE")
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()


def test_a_schema_on_sqlite_is_a_config_error(tmp_path: Path) -> None:
    text = DEMO_CONFIG.read_text(encoding="utf-8").replace("[database]", '[database]\nschema = "cell_a"', 1)
    config = tmp_path / "cell.toml"
    config.write_text(text, encoding="utf-8")
    checked = cli("check-config", str(config))
    assert checked.returncode == 2
    assert "database.schema: is for PostgreSQL only" in checked.stdout + checked.stderr
