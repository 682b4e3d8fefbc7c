"""The HTTP server (uvicorn) inside the gateway's TaskGroup, on ``server.http_host``/``http_port``.

The gateway owns the process's signals and its shutdown: this server never installs signal handlers,
it is told to stop (``stop``) after the OPC UA server, and it lets requests in flight finish within
``server.shutdown_grace_seconds``. The socket is bound before the server starts, so a port in use
fails the start of the gateway with a plain ``OSError`` instead of a ``SystemExit`` from uvicorn.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Generator, Sequence
from contextlib import contextmanager

import uvicorn
from fastapi import APIRouter, FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config import CellConfig
from gateway.http.api import create_app
from gateway.security.logins import LoginGuard, login_guard
from gateway.service.writer import Writer


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextmanager
    def capture_signals(self) -> Generator[None]:
        # SIGINT/SIGTERM belong to the gateway (gateway.app.serve), which stops this server itself.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.listening.set()


class HttpServer:
    def __init__(
        self,
        config: CellConfig,
        writer: Writer,
        engine: AsyncEngine,
        *,
        routers: Sequence[APIRouter] = (),
        logins: LoginGuard | None = None,
    ) -> None:
        """``logins`` checks the ERP API's passwords; without one the server makes (and closes) its own."""
        self.host = config.server.http_host
        self.port = config.server.http_port
        self._own_logins: LoginGuard | None = None
        if logins is None:
            logins = self._own_logins = login_guard(config)
        self.logins = logins
        self.app: FastAPI = create_app(writer, engine, config, routers=routers, logins=self.logins)
        self._server = _Server(
            uvicorn.Config(
                self.app,
                host=self.host,
                port=self.port,
                log_config=None,
                access_log=False,  # edge.RequestLog writes one line per request instead
                lifespan="off",
                server_header=False,
                timeout_graceful_shutdown=max(1, int(config.server.shutdown_grace_seconds)),
            )
        )

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def bind(self) -> socket.socket:
        """The listening socket; raises OSError (port in use, unknown host) before anything starts."""
        infos = await asyncio.get_running_loop().getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
        except OSError:
            sock.close()
            raise
        return sock

    async def serve(self, sock: socket.socket) -> None:
        try:
            await self._server.serve(sockets=[sock])
        finally:
            if self._own_logins is not None:
                self._own_logins.close()

    async def listening(self) -> None:
        await self._server.listening.wait()

    def stop(self) -> None:
        self._server.should_exit = True
