"""Shared fixtures: a free port, temporary databases, the demo config, and leak checks (tasks, threads).

Constants and plain helpers that test modules import are in ``tests/support.py``; nothing imports this file.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from gateway.config import CellConfig, load_config
from gateway.logging import configure_logging
from simulators.gateway_process import free_port
from tests.support import DEMO_CONFIG

configure_logging("WARNING", json=True)


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """A real SQLite file, new for each test."""
    return f"sqlite+aiosqlite:///{tmp_path / 'cell.db'}"


@pytest.fixture(scope="session")
def shared_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One server certificate for the whole run: creating an RSA key per test would cost seconds."""
    return tmp_path_factory.mktemp("pki")


@pytest.fixture
def make_config(port: int, db_url: str, shared_pki: Path) -> Callable[..., CellConfig]:
    """The demo config on a free port and a fresh database; extra env overrides may be given.

    The PKI folder is the session's shared one unless the config file names its own (never ./var).
    """

    def make(path: Path = DEMO_CONFIG, **env: str) -> CellConfig:
        base = {
            "CELL_GATEWAY_ENDPOINT": f"opc.tcp://127.0.0.1:{port}/cell-gateway/",
            "CELL_GATEWAY_DATABASE_URL": db_url,
            "CELL_GATEWAY_HTTP_PORT": "0",
        }
        base.update(env)
        config = load_config(path, env=base)
        if config.server.pki_dir.parts[-2:] == ("var", "pki"):  # the demo's, beside the config file
            server = config.server.model_copy(update={"pki_dir": shared_pki})
            config = config.model_copy(update={"server": server})
        return config

    return make


@pytest.fixture
def demo_config(make_config: Callable[..., CellConfig]) -> CellConfig:
    return make_config()


#: How long threads a test started may take to end after it (a store's thread closing, an executor's
#: workers getting their stop signal): they are joined until then, and only then reported.
THREAD_GRACE = 2.0


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves threads running, as pymodbus's health check does: a leak here is a leak
    in production. Set up before the test's event loop (``no_leaked_tasks`` asks for it), so it looks
    after the loop is closed and its default executor's threads are joined.

    No thread is exempt: neither the interpreter, asyncio, aiosqlite, asyncua nor uvicorn leaves one
    running once the gateway, its store and the loop are closed.
    """
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + THREAD_GRACE
    leaked = []
    for thread in threading.enumerate():
        if thread in before or thread is threading.current_thread():
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            leaked.append(thread)
    if leaked:
        names = ", ".join(
            sorted(f"{t.name} (daemon={t.daemon}, target={getattr(t, '_target', None)!r})" for t in leaked)
        )
        pytest.fail(f"test left {len(leaked)} thread(s) running {THREAD_GRACE} s after it: {names}")


@pytest.fixture(autouse=True)
async def no_leaked_tasks(no_leaked_threads: None) -> AsyncIterator[None]:
    """Fail a test that leaves tasks running on its loop: a leak here is a leak in production."""
    before = asyncio.all_tasks()
    yield
    current = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
    if leaked:
        for task in leaked:
            task.cancel()
        await asyncio.gather(*leaked, return_exceptions=True)
        names = ", ".join(sorted(t.get_name() + ":" + repr(t.get_coro()) for t in leaked))
        pytest.fail(f"test left {len(leaked)} task(s) running: {names}")
