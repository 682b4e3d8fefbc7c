"""Wiring: config, store and OPC UA server under one TaskGroup.

``Gateway`` is what tests start in-process (``async with Gateway(config) as gw``) and what ``run``
starts for ``cell-gateway run``. Start order: store (migrated to head), then the OPC UA server; stop is
the reverse, within ``server.shutdown_grace_seconds``.
"""

from __future__ import annotations

import asyncio
import signal
from types import TracebackType

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.clock import Clock, SystemClock
from gateway.config import CellConfig
from gateway.logging import get_logger
from gateway.opcua.server import OpcUaServer
from gateway.storage.database import create_engine
from gateway.storage.migrate import upgrade

log = get_logger(__name__)


class Gateway:
    def __init__(self, config: CellConfig, *, clock: Clock | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.engine: AsyncEngine | None = None
        self.opcua = OpcUaServer(config)

    async def start(self) -> None:
        self.engine = create_engine(self.config.database.url, synchronous=self.config.database.synchronous)
        before, after = await upgrade(self.engine)
        if before != after:
            log.info("database_migrated", url=_safe_url(self.config.database.url), before=before, after=after)
        try:
            await self.opcua.start()
        except BaseException:
            await self.engine.dispose()
            raise

    async def stop(self) -> None:
        try:
            await self.opcua.stop()
        finally:
            if self.engine is not None:
                await self.engine.dispose()

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


def _safe_url(url: str) -> str:
    """The URL without its password, for logs."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


async def serve(config: CellConfig, stop: asyncio.Event | None = None) -> None:
    """Run the gateway until ``stop`` is set or SIGINT/SIGTERM arrives, then shut down within the grace."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    gateway = Gateway(config)
    started = loop.time()
    try:
        await gateway.start()
        log.info(
            "gateway_started",
            cell=config.cell.name,
            endpoint=config.server.endpoint,
            database=_safe_url(config.database.url),
            seconds=round(loop.time() - started, 3),
        )
        await stop.wait()
        stopping = loop.time()
        try:
            async with asyncio.timeout(config.server.shutdown_grace_seconds):
                await gateway.stop()
        except TimeoutError:
            log.error("gateway_stop_timed_out", grace_seconds=config.server.shutdown_grace_seconds)
        else:
            log.info("gateway_stopped", seconds=round(loop.time() - stopping, 3))
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
