"""A real ``cell-gateway run`` process for simulations, end-to-end tests and the benchmark.

It runs in its own working folder (its PKI and database live there) on a config derived from the one
given: a free port, a database path, and a ``source_time_tolerance_seconds`` wide enough for a
simulated day whose clock runs ahead of the gateway's (see docs/simulator.md, "Two clocks"). Its
JSON log goes to a file; start and stop are awaited on its ``gateway_started`` and ``gateway_stopped``
lines, never on a fixed sleep.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from gateway.config import CellConfig, load_config


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


_TOLERANCE = re.compile(r"^source_time_tolerance_seconds\s*=.*$", re.MULTILINE)
_CELL_TABLE = re.compile(r"^\[cell\]\s*$", re.MULTILINE)


def derive_config(base: Path, out: Path, *, tolerance_seconds: float | None = None, extra: str = "") -> Path:
    """Copy a cell config, widening the SourceTime tolerance and appending TOML (extra stations ...)."""
    text = base.read_text(encoding="utf-8")
    if tolerance_seconds is not None:
        line = f"source_time_tolerance_seconds = {tolerance_seconds:.0f}"
        if _TOLERANCE.search(text):
            text = _TOLERANCE.sub(line, text, count=1)
        else:
            text = _CELL_TABLE.sub(f"[cell]\n{line}", text, count=1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + ("\n" + extra if extra else ""), encoding="utf-8")
    return out


class GatewayProcess:
    """``cell-gateway run`` in a subprocess: start, stop (SIGINT), kill (SIGKILL), restart."""

    def __init__(
        self,
        config: Path,
        workdir: Path,
        *,
        port: int | None = None,
        database: Path | None = None,
        log_level: str = "INFO",
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.config_path = config
        self.workdir = workdir
        self.port = port or free_port()
        self.database = database or workdir / "cell.db"
        self.log_level = log_level
        self.log_path = workdir / "gateway.log"
        self.extra_env = extra_env or {}
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.errors: list[dict[str, Any]] = []
        self._reader: asyncio.Task[None] | None = None
        self._started = asyncio.Event()
        self._stopped = asyncio.Event()

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}/cell-gateway/"

    @property
    def database_url(self) -> str:
        return f"sqlite+aiosqlite:///{self.database.resolve()}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def env(self) -> dict[str, str]:
        return {
            "CELL_GATEWAY_ENDPOINT": self.endpoint,
            "CELL_GATEWAY_DATABASE_URL": self.database_url,
            "CELL_GATEWAY_HTTP_PORT": "0",
            **self.extra_env,
        }

    def load_config(self) -> CellConfig:
        """The config as the gateway process sees it (environment overrides applied)."""
        return load_config(self.config_path, env=self.env())

    # ------------------------------------------------------------------ life cycle
    async def start(self, within: float = 30.0) -> None:
        if self.process is not None and self.process.returncode is None:
            raise RuntimeError("the gateway is running already")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._started = asyncio.Event()
        self._stopped = asyncio.Event()
        env = {**os.environ, **self.env()}
        env.pop("CELL_GATEWAY_CONFIG", None)
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "run", "--config", str(self.config_path.resolve()),
            "--json-logs", "--log-level", self.log_level,
            cwd=self.workdir, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        self.starts += 1
        self._reader = asyncio.create_task(self._read(self.process), name=f"gateway-log-{self.starts}")
        exited = asyncio.create_task(self.process.wait())
        started = asyncio.create_task(self._started.wait())
        try:
            done, _ = await asyncio.wait({exited, started}, timeout=within, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (exited, started):
                task.cancel()
            await asyncio.gather(exited, started, return_exceptions=True)
        if not self._started.is_set():
            await self.kill()
            tail = self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""
            why = "exited" if done else f"did not log gateway_started within {within:.0f} s"
            raise RuntimeError(f"the gateway {why}; log tail:\n{tail}")

    async def stop(self, within: float = 20.0) -> int:
        """Ctrl-C (SIGINT) and wait for the process to end; returns its exit code."""
        process = self.process
        if process is None or process.returncode is not None:
            return process.returncode if process is not None and process.returncode is not None else 0
        process.send_signal(signal.SIGINT)
        try:
            async with asyncio.timeout(within):
                code = await process.wait()
        except TimeoutError:
            await self.kill()
            raise RuntimeError(f"the gateway did not stop within {within:.0f} s of SIGINT") from None
        await self._finish_reader()
        return code

    async def kill(self) -> None:
        """SIGKILL: the process gets no chance to finish anything."""
        process = self.process
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()
        await self._finish_reader()

    async def restart(self, *, kill: bool = False, within: float = 30.0) -> None:
        if kill:
            await self.kill()
        else:
            await self.stop()
        await self.start(within)

    async def __aenter__(self) -> GatewayProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.stop()
        finally:
            await self.kill()

    @property
    def stopped_cleanly(self) -> bool:
        return self._stopped.is_set()

    # ------------------------------------------------------------------ log
    async def _finish_reader(self) -> None:
        if self._reader is not None:
            try:
                async with asyncio.timeout(5):
                    await self._reader
            except TimeoutError:
                self._reader.cancel()
                await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        with self.log_path.open("ab") as log:
            while True:
                line = await process.stdout.readline()
                if not line:
                    return
                log.write(line)
                if b'"gateway_' in line or b'"level": "error"' in line or b'"level": "critical"' in line:
                    try:
                        data = json.loads(line)
                    except ValueError:
                        continue
                    if data.get("event") == "gateway_started":
                        self._started.set()
                    elif data.get("event") == "gateway_stopped":
                        self._stopped.set()
                    if data.get("level") in ("error", "critical"):
                        self.errors.append(data)
