"""Wiring, the one composition root: config, domain, store, writer and OPC UA server under one TaskGroup.

``layout_from`` and ``build_model`` turn the validated config into the domain (the cell's layout, and
the ``CellModel`` with its job book, tracker and order book): the service, replay and the tests all
build the model through them.

``Gateway.run`` is the whole life of the service: open and migrate the store, load the cell's state,
start the writer and the stale-WIP sweeper, serve OPC UA and HTTP (the ERP API, when
``server.http_port`` is not 0) until told to stop, then shut down in reverse order within
``server.shutdown_grace_seconds``. ``running_gateway`` runs it in-process for tests.
"""

from __future__ import annotations

import asyncio
import errno
import signal
import socket
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager, suppress
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway import __version__
from gateway.cell.model import CellModel
from gateway.clock import Clock, SystemClock
from gateway.config import CellConfig
from gateway.http.metrics import Metrics, opcua_session_count
from gateway.http.server import HttpServer
from gateway.http.status_page import router as status_router
from gateway.jobs.book import JobBook
from gateway.jobs.commands import FlagStaleUnits
from gateway.jobs.layout import CellLayout, StationInfo
from gateway.jobs.model import Step, StepKind
from gateway.logging import get_logger
from gateway.opcua.server import OpcUaServer
from gateway.orders import OrderBook
from gateway.security.logins import login_guard
from gateway.service.writer import Writer
from gateway.storage.database import create_engine, sqlite_path, unwritable
from gateway.storage.migrate import upgrade
from gateway.storage.sql_store import SqlStore
from gateway.tracking.tracker import CellTracker, TrackingRules

log = get_logger(__name__)

SWEEP_INTERVAL_SECONDS = 60.0

# Exit codes of `cell-gateway run` when it cannot start (docs/operations.md); 1 is anything else.
EXIT_CONFIG = 2  # the config file is missing or invalid
EXIT_FILE = 3  # a file the config names (certificate, key) is missing or does not parse
EXIT_ADDRESS = 4  # an address the gateway listens on is in use or not available
EXIT_DATABASE = 5  # the database cannot be reached or opened


# ---------------------------------------------------------------------- the domain from the config
def layout_from(config: CellConfig) -> CellLayout:
    stations = [StationInfo(s.id, s.kind, frozenset(s.groups)) for s in config.stations]
    process = [
        Step(
            operation=op.code,
            name=op.name,
            group=op.group,
            kind=StepKind(op.kind),
            program=op.program,
            expected_seconds=op.expected_seconds,
        )
        for op in config.operations
    ]
    return CellLayout.build(stations, process, config.pallets)


def build_model(config: CellConfig) -> CellModel:
    book = JobBook(
        layout_from(config),
        require_approved_templates=config.cell.require_approved_templates,
        default_yield_buffer_percent=config.cell.default_yield_buffer_percent,
    )
    rules = TrackingRules(
        cell_name=config.cell.name,
        serial_format=config.cell.serial_format,
        source_time_tolerance=timedelta(seconds=config.cell.source_time_tolerance_seconds),
        units_per_pallet=config.cell.units_per_pallet,
    )
    return CellModel(
        book,
        CellTracker(book, rules),
        OrderBook(),
        assign_workorder_at_unload=config.cell.assign_workorder_at_unload,
    )


class StartupFailure(Exception):
    """Why the gateway could not start: ``reason`` is the kind, ``fields`` name what failed (logged as is)."""

    def __init__(self, reason: str, exit_code: int, **fields: Any) -> None:
        self.reason = reason
        self.exit_code = exit_code
        self.fields = fields
        super().__init__(f"{reason}: {fields}")


def try_bind(host: str, port: int) -> None:
    """Bind host:port and release it at once, as the servers bind (SO_REUSEADDR); raises OSError if it cannot."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)


def _address_failure(service: str, host: str, port: int, exc: OSError) -> StartupFailure:
    reason = "address_in_use" if exc.errno == errno.EADDRINUSE else "cannot_listen"
    return StartupFailure(reason, EXIT_ADDRESS, service=service, address=host, port=port, error=_why(exc))


def _file_failure(exc: OSError) -> StartupFailure:
    return StartupFailure("file_unreadable", EXIT_FILE, file=str(exc.filename), error=_why(exc))


def _database_failure(url: str, exc: BaseException) -> StartupFailure:
    parsed = make_url(url)
    path = sqlite_path(url)
    if path is not None:
        error = _why(exc)
        read_only = unwritable(url)  # SQLite cannot even read a WAL database whose folder it cannot write
        if read_only is not None:
            error = f"{error} ({read_only})"
        return StartupFailure("database_unavailable", EXIT_DATABASE, file=str(path), error=error)
    return StartupFailure(
        "database_unavailable",
        EXIT_DATABASE,
        host=parsed.host or "localhost",
        port=parsed.port,
        database=parsed.database,
        error=_why(exc),
    )


def _why(exc: BaseException) -> str:
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}".strip()


class Gateway:
    def __init__(self, config: CellConfig, *, clock: Clock | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.engine: AsyncEngine = create_engine(
            config.database.url, synchronous=config.database.synchronous, schema=config.database.schema_name
        )
        self.writer = Writer(
            SqlStore(self.engine),
            lambda: build_model(config),
            self.clock,
            max_queue=config.server.max_queued_commands,
        )
        # One guard for every password login, OPC UA or HTTP: a peer's failures count across both.
        self.logins = login_guard(config)
        self.opcua = OpcUaServer(config, self.writer, self.engine, logins=self.logins)
        self.metrics = Metrics(
            self.writer,
            opcua_session_count(self.opcua.server),
            logins=self.logins.stats,
            connections=self.opcua.edge_stats,
        )
        status = status_router(self.writer, self.engine, self.metrics, self.opcua.is_listening, self.clock)
        self.http = (
            HttpServer(config, self.writer, self.engine, routers=[status], logins=self.logins)
            if config.server.http_port
            else None
        )
        self.ready = asyncio.Event()

    @property
    def stale_threshold(self) -> timedelta:
        return timedelta(days=self.config.cell.stale_wip_days)

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        http_socket: socket.socket | None = None
        try:
            # Addresses first: a port in use is found in milliseconds, before migrations and certificates.
            endpoint = urlsplit(self.config.server.endpoint)
            try:
                try_bind(endpoint.hostname or "", endpoint.port or 0)
            except OSError as exc:
                raise _address_failure("opcua", endpoint.hostname or "", endpoint.port or 0, exc) from exc
            if self.http is not None:
                try:
                    http_socket = await self.http.bind()
                except OSError as exc:
                    server = self.config.server
                    raise _address_failure("http", server.http_host, server.http_port, exc) from exc
            try:
                before, after = await upgrade(self.engine)
            except (OSError, DBAPIError, TimeoutError) as exc:
                raise _database_failure(self.config.database.url, exc) from exc
            if before != after:
                log.info("database_migrated", url=safe_url(self.config.database.url), before=before, after=after)
            await self.writer.load()
            async with asyncio.TaskGroup() as tasks:
                writer = tasks.create_task(self._essential(self.writer.run(), "writer", stop), name="writer")
                await self._start_opcua()
                http: asyncio.Task[None] | None = None
                if self.http is not None and http_socket is not None:
                    http = tasks.create_task(self.http.serve(http_socket), name="http")
                    await self.http.listening()
                sweeper = tasks.create_task(self._sweep_forever(), name="stale-wip-sweeper")
                self.ready.set()
                await stop.wait()
                stopping = loop.time()
                sweeper.cancel()
                await self._stop_serving(http)
                writer.cancel()
            log.info("gateway_stopped", seconds=round(loop.time() - stopping, 3))
        finally:
            if http_socket is not None:
                http_socket.close()
            self.writer.close()
            self.logins.close()
            await self.engine.dispose()

    async def _start_opcua(self) -> None:
        try:
            await self.opcua.start()
        except OSError as exc:
            if exc.filename is not None:
                raise _file_failure(exc) from exc
            endpoint = urlsplit(self.config.server.endpoint)
            raise _address_failure("opcua", endpoint.hostname or "", endpoint.port or 0, exc) from exc

    async def _stop_serving(self, http: asyncio.Task[None] | None = None) -> None:
        """Stop taking calls, let the writer commit what it already took, then stop, within the grace.

        1. OPC UA accepts no new connection and answers every new method call BadServerHalted (not
           stored); HTTP accepts no new connection (uvicorn lets the requests in flight finish).
        2. The calls and requests taken are answered: their commands are committed by the writer.
        3. The OPC UA server closes its sessions; the writer stops (``run`` cancels it after this).
        """
        grace = self.config.server.shutdown_grace_seconds
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(grace):
                await self.opcua.stop_taking()
                if self.http is not None:
                    self.http.stop()
                log.info("gateway_draining", queued=self.writer.queue_depth)
                await self.opcua.calls_answered()
                if http is not None:
                    await http  # requests in flight finish: their commands are answered by the writer
                await self.writer.wait_idle()
        except TimeoutError:
            log.error("gateway_stop_timed_out", grace_seconds=grace, queued=self.writer.queue_depth)
        log.info("gateway_drained", seconds=round(loop.time() - started, 3), counter=self.writer.counter)
        try:
            async with asyncio.timeout(max(0.5, grace - (loop.time() - started))):
                await self.opcua.stop()
        except TimeoutError:
            log.error("opcua_stop_timed_out", grace_seconds=grace)

    @staticmethod
    async def _essential(work: Coroutine[Any, Any, None], name: str, stop: asyncio.Event) -> None:
        """Run a task the gateway cannot serve without; if it ever ends, stop the gateway, saying why."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            log.critical("gateway_stopping", task=name, error=f"{type(exc).__name__}: {exc}", exc_info=exc)
            stop.set()
            return
        if not stop.is_set():
            log.critical("gateway_stopping", task=name, error="it ended")
            stop.set()

    async def sweep(self) -> list[str]:
        """One stale-WIP pass: flag units idle beyond the threshold for a Lost Audit (each once)."""
        now, threshold = self.clock.now(), self.stale_threshold
        oldest = self.writer.view.oldest_activity  # committed view: no scan here
        if oldest is None or now - oldest <= threshold:
            return []
        answer = await self.writer.submit(FlagStaleUnits(threshold.total_seconds()), "sweeper")
        flagged: list[str] = answer.outputs.get("Flagged", [])
        return flagged

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_SECONDS)
            try:
                await self.sweep()
            except Exception:
                log.exception("stale_wip_sweep_failed")
            try:
                await self.opcua.remove_expired_jobs(self.clock.now())
            except Exception:
                log.exception("closed_job_removal_failed")


def safe_url(url: str) -> str:
    """The URL without its password, for logs."""
    return make_url(url).render_as_string(hide_password=True)


@asynccontextmanager
async def running_gateway(config: CellConfig, *, clock: Clock | None = None) -> AsyncIterator[Gateway]:
    """Run a gateway in this process until the block ends (tests, the simulator's own runs)."""
    gateway = Gateway(config, clock=clock)
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop), name="gateway")
    ready = asyncio.create_task(gateway.ready.wait())
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        task.result()  # raises what stopped it
    await gateway.opcua.jobs_published()  # in-process users see the whole address space at once
    try:
        yield gateway
    finally:
        stop.set()
        with suppress(asyncio.CancelledError):
            await task


async def serve(config: CellConfig) -> None:
    """Run the gateway until SIGINT/SIGTERM, then shut down within the grace."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        gateway = Gateway(config)
    except OSError as exc:  # a file it reads at once (a user certificate), or the database's folder
        if exc.filename is None:
            raise
        raise _file_failure(exc) from exc
    started = loop.time()
    run = asyncio.create_task(gateway.run(stop), name="gateway")
    ready = asyncio.create_task(gateway.ready.wait(), name="ready")
    await asyncio.wait({run, ready}, return_when=asyncio.FIRST_COMPLETED)
    if gateway.ready.is_set():
        log.info(
            "gateway_started",
            version=__version__,
            cell=config.cell.name,
            endpoint=config.server.endpoint,
            http=gateway.http.url if gateway.http is not None else "off",
            database=safe_url(config.database.url),
            profile=config.server.security_profile,
            seconds=round(loop.time() - started, 3),
        )
        if "units_per_pallet" not in config.cell.model_fields_set:
            log.warning(
                "units_per_pallet_not_set",
                units_per_pallet=config.cell.units_per_pallet,
                why="cell.units_per_pallet is not in the config: a load putting more than 1 unit on a pallet "
                "is refused; set it to what the cell's pallets hold",
            )
    else:
        ready.cancel()
    try:
        await run
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
