"""The OPC UA server's edge under attack: password floods, stalled connections, limits (issue 14).

Attackers connect from other loopback addresses (all of 127.0.0.0/8 is loopback on Linux) so the
gateway tells them from the healthy PLC on 127.0.0.1, as it would tell hosts apart on a shop floor.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import statistics
import struct
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState

from gateway.app import running_gateway
from gateway.config import CellConfig
from simulators.gateway_process import free_port
from tests.integration.opcua_client import NOW, CellClient
from tests.integration.opcua_support import good, login
from tests.integration.test_http_edges import start_flood

pytestmark = pytest.mark.timeout(120)


def with_limits(config: CellConfig, **limits: Any) -> CellConfig:
    return config.model_copy(update={"limits": config.limits.model_copy(update=limits)})


def endpoint_of(config: CellConfig) -> tuple[str, int]:
    host, port = config.server.endpoint.removeprefix("opc.tcp://").split("/")[0].split(":")
    return host, int(port)


def from_address(client: Client, address: str) -> Client:
    """Make ``client`` connect from ``address`` (another host, as the gateway sees it)."""
    uaclient = client.uaclient

    async def connect_socket() -> None:
        uaclient._set_state(UaClientState.CONNECTING)
        try:
            await asyncio.wait_for(
                asyncio.get_running_loop().create_connection(
                    uaclient._make_protocol,
                    client.server_url.hostname,
                    client.server_url.port,
                    local_addr=(address, 0),
                ),
                uaclient._timeout,
            )
        except BaseException:
            uaclient._set_state(UaClientState.DISCONNECTED)
            raise
        uaclient._set_state(UaClientState.SOCKET_OPEN)

    client.connect_socket = connect_socket  # type: ignore[method-assign]
    return client


async def try_login(config: CellConfig, user: str, password: str, address: str = "127.0.0.1") -> tuple[str, float]:
    """One ActivateSession with a user name and password: its status code and how long it took."""
    client = from_address(Client(config.server.endpoint, timeout=10), address)
    await client.connect_socket()
    try:
        await client.send_hello()
        await client.open_secure_channel()
        await client.create_session()
        start = time.perf_counter()
        try:
            await client.activate_session(user, password)
            code = "Good"
        except ua.UaStatusCodeError as e:
            code = ua.StatusCode(e.code).name
        took = time.perf_counter() - start
        with contextlib.suppress(Exception):
            await client.close_session()
        with contextlib.suppress(Exception):
            await client.close_secure_channel()
        return code, took
    finally:
        client.disconnect_socket()


async def connect_error(client: Client) -> str:
    """The status code a connect fails with (the test fails if it succeeds)."""
    try:
        await client.connect()
    except ua.UaStatusCodeError as e:
        return str(ua.StatusCode(e.code).name)
    await client.disconnect()
    raise AssertionError("connected")


async def half_hello(host: str, port: int, address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that starts a HELLO (its 8-byte header announces 100 bytes) and never finishes it."""
    reader, writer = await asyncio.open_connection(host, port, local_addr=(address, 0))
    writer.write(b"HELF" + struct.pack("<I", 100))
    await writer.drain()
    return reader, writer


async def closed_with(reader: asyncio.StreamReader, within: float) -> str:
    """Wait until the server closes the connection; the status code of its ERR message ("" if none)."""
    data = await asyncio.wait_for(reader.read(), within)
    if data[:3] != b"ERR" or len(data) < 12:
        return ""
    return str(ua.StatusCode(struct.unpack_from("<I", data, 8)[0]).name)


@asynccontextmanager
async def held(conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for _, writer in conns:
            writer.close()


class Tally:
    """A count that tasks wait on: ``await tally.reached(n)`` returns once it is n or more."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = asyncio.Condition()

    async def add(self) -> None:
        async with self._changed:
            self.count += 1
            self._changed.notify_all()

    async def reached(self, n: int, within: float = 10.0) -> None:
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: self.count >= n)


def logged(caplog: pytest.LogCaptureFixture, event: str) -> list[str]:
    return [str(r.msg) for r in caplog.records if event in str(r.msg)]


# ---------------------------------------------------------------------------------------------- logins


async def test_unknown_user_and_wrong_password_look_alike(demo_config: CellConfig) -> None:
    """Same code, about the same time: a guesser cannot tell which user names exist.

    Both are a full argon2 check in the login pool (an unknown user against a decoy hash with the same
    parameters), so their medians differ by noise only; without the decoy an unknown user is answered
    3-4 times faster (40 vs 144 ms measured), far outside 0.5..2. Each try uses a new password (a
    remembered outcome would answer without a check) and back-off is out of the way for this test.
    """
    config = with_limits(demo_config, login_failures=1000)
    async with running_gateway(config):
        tries: dict[str, list[float]] = {"unknown": [], "wrong": []}
        codes = set()
        for i in range(6):
            for kind, user in (("unknown", f"nobody-{i}"), ("wrong", "plc-mill")):
                code, took = await try_login(config, user, f"guess-{i}")
                codes.add(code)
                if i:  # the first of each is a warm-up
                    tries[kind].append(took)
        assert codes == {"BadUserAccessDenied"}
        ratio = statistics.median(tries["unknown"]) / statistics.median(tries["wrong"])
        assert 0.5 < ratio < 2, f"unknown user {tries['unknown']} vs wrong password {tries['wrong']}"
        # Control: the right password gets in.
        assert (await try_login(config, "plc-mill", "plc-mill"))[0] == "Good"


async def test_wrong_passwords_back_off_per_user_and_per_peer(
    demo_config: CellConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """After 5 failures a user, or an address, is refused unchecked for a while; others are not."""
    config = with_limits(demo_config, login_backoff_seconds=30)
    async with running_gateway(config) as gateway:
        guard = gateway.opcua.logins
        for i in range(5):
            assert (await try_login(config, "plc-mill", f"guess-{i}", "127.0.0.2"))[0] == "BadUserAccessDenied"
        checks = guard.stats.checks
        # plc-mill's right password, even from the PLC's own address, is refused without a check.
        assert (await try_login(config, "plc-mill", "plc-mill", "127.0.0.1"))[0] == "BadUserAccessDenied"
        # 127.0.0.2 is backed off too, for every user.
        assert (await try_login(config, "plc-load", "plc-load", "127.0.0.2"))[0] == "BadUserAccessDenied"
        assert guard.stats.checks == checks
        assert guard.stats.backoffs == {"user": 1, "peer": 1}
        refusals = logged(caplog, "opcua_login_refused")
        assert any("back-off" in r for r in refusals)
        assert len(logged(caplog, "login_backoff")) == 2  # once per episode, not once per refusal
        # Control: another user from another address logs in and calls.
        async with login(config.server.endpoint, "plc-load") as client:
            cell = await CellClient(client).setup()
            await good(cell.station("L1", "PalletArrived", "e-1", "P1", NOW))


async def test_busy_login_pool_answers_too_many_operations(demo_config: CellConfig) -> None:
    """Beyond the queue of password checks, a login is answered at once with BadTooManyOperations."""
    config = with_limits(demo_config, login_queue=1, login_failures=1000)
    async with running_gateway(config) as gateway:
        results = await asyncio.gather(*(try_login(config, "plc-mill", f"guess-{i}") for i in range(6)))
        codes = [code for code, _ in results]
        assert "BadTooManyOperations" in codes
        assert set(codes) <= {"BadTooManyOperations", "BadUserAccessDenied"}
        assert gateway.opcua.logins.stats.verdicts["busy"] == codes.count("BadTooManyOperations")
        assert (await try_login(config, "plc-mill", "plc-mill"))[0] == "Good"  # control


# ------------------------------------------------------------------------------------------ connections


async def test_stalled_connections_do_not_lock_a_plc_out(
    demo_config: CellConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """1,000 half-HELLO connections from 20 addresses: a PLC still connects at once (they are evicted)."""
    config = demo_config  # the default limits
    host, port = endpoint_of(config)
    async with running_gateway(config) as gateway:
        stalled = [await half_hello(host, port, f"127.0.1.{1 + i % 20}") for i in range(1000)]
        async with held(stalled):
            async with login(config.server.endpoint, "plc-load") as client:
                cell = await CellClient(client).setup()
                await good(cell.station("L1", "PalletArrived", "e-1", "P1", NOW))
            stats = gateway.opcua.edge_stats
            assert stats.open <= config.limits.max_connections
            assert stats.evicted + stats.refused >= 1000 - config.limits.max_connections
            # An evicted connection is told why before it is closed.
            assert await closed_with(stalled[0][0], 5) == "BadTcpNotEnoughResources"
        # Logged once per episode, not once per connection.
        limits = logged(caplog, "opcua_limit")
        assert 1 <= len(limits) <= 21, limits  # the total, and each address's own limit at most once


async def test_one_address_gets_its_share_only(demo_config: CellConfig) -> None:
    """Per peer address: a new connection beyond the limit evicts that address's oldest stalled one;
    when all of them hold sessions the new one is refused. Another address is not affected."""
    config = with_limits(demo_config, max_connections_per_peer=2)
    host, port = endpoint_of(config)
    async with running_gateway(config) as gateway:
        first, second = await half_hello(host, port, "127.0.0.2"), await half_hello(host, port, "127.0.0.2")
        async with held([first, second]), from_address(login(config.server.endpoint, "plc-load"), "127.0.0.2"):
            assert await closed_with(first[0], 5) == "BadTcpNotEnoughResources"  # the oldest stalled one
            async with from_address(login(config.server.endpoint, "plc-load"), "127.0.0.2"):
                assert await closed_with(second[0], 5) == "BadTcpNotEnoughResources"
                # Both slots hold sessions: a third connection is told so and closed at once.
                third, _ = await half_hello(host, port, "127.0.0.2")
                assert await closed_with(third, 5) == "BadTcpNotEnoughResources"
                assert gateway.opcua.edge_stats.refused == 1
                # Control: the PLC on another address.
                async with login(config.server.endpoint, "plc-load") as client:
                    cell = await CellClient(client).setup()
                    await good(cell.station("L1", "PalletArrived", "e-1", "P1", NOW))


async def test_a_stalled_hello_is_closed_after_the_hello_timeout(demo_config: CellConfig) -> None:
    config = with_limits(demo_config, hello_timeout_seconds=0.5)
    host, port = endpoint_of(config)
    # The control: a PLC that completed its HELLO before.
    async with running_gateway(config) as gateway, login(config.server.endpoint, "plc-load") as client:
        reader, writer = await half_hello(host, port, "127.0.0.2")
        async with held([(reader, writer)]):
            assert await closed_with(reader, 5) == "BadTimeout"
        assert gateway.opcua.edge_stats.hello_timeouts == 1
        cell = await CellClient(client).setup()
        await good(cell.station("L1", "PalletArrived", "e-1", "P1", NOW))


async def test_a_session_not_activated_in_time_is_closed(demo_config: CellConfig) -> None:
    config = with_limits(demo_config, activation_timeout_seconds=0.5)
    # The control: a PLC that activated its session before.
    async with running_gateway(config) as gateway, login(config.server.endpoint, "plc-load") as client:
        stalled = Client(config.server.endpoint, timeout=10)
        await stalled.connect_socket()
        closed = asyncio.Event()
        assert stalled.uaclient.protocol is not None
        stalled.uaclient.protocol.on_connection_lost = lambda _: closed.set()
        try:
            await stalled.send_hello()
            await stalled.open_secure_channel()
            await stalled.create_session()
            async with asyncio.timeout(5):
                await closed.wait()  # the gateway closes it at the activation deadline
            assert gateway.opcua.edge_stats.activation_timeouts == 1
            with pytest.raises((ua.UaError, ConnectionError, asyncio.TimeoutError)):
                await stalled.activate_session("plc-load", "plc-load")
        finally:
            stalled.disconnect_socket()
        cell = await CellClient(client).setup()
        await good(cell.station("L1", "PalletArrived", "e-1", "P1", NOW))


async def test_sessions_beyond_the_limit_are_refused(demo_config: CellConfig) -> None:
    config = with_limits(demo_config, max_sessions=2)
    async with running_gateway(config) as gateway:
        async with login(config.server.endpoint, "plc-load"), login(config.server.endpoint, "plc-mill"):
            assert await connect_error(login(config.server.endpoint, "plc-wash")) == "BadTooManySessions"
            assert gateway.opcua.edge_stats.refused_sessions == 1
        # Control: with the others gone, the same login gets in.
        async with login(config.server.endpoint, "plc-wash") as client:
            cell = await CellClient(client).setup()
            await good(cell.station("W1", "PalletArrived", "e-1", "P1", NOW))


# ------------------------------------------------------------------------------------------------ load


async def _call_latencies(
    cell: CellClient, count: int, ids: itertools.count[int], until: Callable[[], bool] = lambda: True
) -> list[float]:
    """At least ``count`` station calls (a pallet arriving at and leaving L1, in turn), and on until
    ``until()`` holds (at most 20 s): each call's seconds."""
    took: list[float] = []
    deadline = time.monotonic() + 20
    while len(took) < count or not (until() or time.monotonic() > deadline):
        n = next(ids)
        method = "PalletArrived" if n % 2 == 0 else "PalletDeparted"
        start = time.perf_counter()
        await good(cell.station("L1", method, f"e-{n}", "P1", NOW))
        took.append(time.perf_counter() - start)
    return took


async def _flood_logins(config: CellConfig, stop: asyncio.Event, loop_no: int, answered: Tally) -> None:
    """Wrong passwords as fast as answered, from ever new addresses (so every one is a full check)."""
    tries = 0
    while not stop.is_set():
        address = f"127.0.2.{1 + (loop_no * 50 + tries) % 250}"
        user = "plc-mill" if tries % 2 else f"nobody-{tries}"
        with contextlib.suppress(ua.UaError, OSError, asyncio.TimeoutError):
            await try_login(config, user, f"guess-{loop_no}-{tries}", address)
        tries += 1
        await answered.add()


async def test_a_plc_is_served_while_logins_are_flooded_and_connections_stalled(
    make_config: Callable[..., CellConfig],
) -> None:
    """The healthy PLC's median call time under attack stays within 3x its idle median, same run.

    Attack: 5 loops of wrong-password logins (each a full argon2 check), 1,000 half-HELLO connections,
    and, from another process, wrong HTTP Basic passwords and 50 MB request bodies on the ERP API
    (tests/integration/test_http_edges.py's flood); the PLC's session that was open before, and a new
    connect + login during the attack.
    """
    config = with_limits(make_config(CELL_GATEWAY_HTTP_PORT=str(free_port())), login_failures=1000)
    host, port = endpoint_of(config)
    ids = itertools.count()
    async with running_gateway(config) as gateway:
        async with login(config.server.endpoint, "plc-load") as client:
            cell = await CellClient(client).setup()
            await _call_latencies(cell, 10, ids)  # warm-up
            idle = statistics.median(await _call_latencies(cell, 40, ids))

            stalled = [await half_hello(host, port, f"127.0.1.{1 + i % 20}") for i in range(1000)]
            stop = asyncio.Event()
            answered = Tally()  # wrong-password logins answered so far
            floods = [asyncio.create_task(_flood_logins(config, stop, n, answered)) for n in range(5)]
            http_flood = await start_flood(config.server.http_port)
            assert http_flood.stdin is not None
            assert http_flood.stdout is not None
            try:
                async with asyncio.timeout(30):
                    assert await http_flood.stdout.readline() == b"flooding\n"
                async with held(stalled):
                    await answered.reached(3)
                    before = gateway.opcua.logins.stats.checks
                    # Each session calls for as long as 3 more guesses take to be answered.
                    mark = answered.count
                    busy = statistics.median(await _call_latencies(cell, 40, ids, lambda: answered.count >= mark + 3))
                    async with login(config.server.endpoint, "plc-load") as fresh_client:
                        fresh = await CellClient(fresh_client).setup()
                        mark = answered.count
                        fresh_busy = statistics.median(
                            await _call_latencies(fresh, 20, ids, lambda: answered.count >= mark + 3)
                        )
                    checks = gateway.opcua.logins.stats.checks - before
            finally:
                stop.set()
                await asyncio.gather(*floods)
                http_flood.stdin.close()
                async with asyncio.timeout(30):
                    http_answers, _ = await http_flood.communicate()
        print(f"idle {idle * 1000:.1f} ms, open {busy * 1000:.1f} ms, new {fresh_busy * 1000:.1f} ms, {checks} checks")
        assert busy < 3 * idle, f"open session: {busy * 1000:.1f} ms under attack vs {idle * 1000:.1f} ms idle"
        assert fresh_busy < 3 * idle, f"new session: {fresh_busy * 1000:.1f} ms vs {idle * 1000:.1f} ms idle"
        assert checks >= 6, "the guesses were not checked (each is a full argon2 check in the pool)"
        flooded = json.loads(http_answers)
        assert sum(n for answer, n in flooded.items() if answer.startswith("oversized")) >= 2, flooded
