"""Shared test harness: free ports, temporary databases, the demo config, and a leak check."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gateway.config import CellConfig, load_config
from gateway.logging import configure_logging

ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = ROOT / "config" / "cell.toml"

configure_logging("WARNING", json=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
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
