"""The HTTP edge against a running gateway: credentials before bodies, body and concurrency limits, logins.

Some requests are written on raw sockets, because what is checked is what the gateway does *before* a
client has finished sending: a body announced as 50 MB of which a few bytes were sent is answered at
once (401, 413), so the gateway never waited for (or stored) the rest. Clients on other loopback
addresses (127.0.x.y) stand for other hosts: the login back-off is kept per peer address.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import CellConfig
from tests.integration.erp_support import Erp, day, erp_gateway
from tests.support import ROOT

FIFTY_MB = 50_000_000


# ------------------------------------------------------------------------------------- raw HTTP


def head(method: str, path: str, *, auth: tuple[str, str] | None = None, **headers: str | int) -> bytes:
    """A request's head; header names from keywords (``content_length`` -> ``content-length``)."""
    lines = [f"{method} {path} HTTP/1.1", "host: 127.0.0.1"]
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        lines.append(f"authorization: Basic {token}")
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Raw:
    """One connection, written and read by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, local: str = "127.0.0.1") -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(local, 0))
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        status_line = await self.reader.readline()
        assert status_line.startswith(b"HTTP/1.1 "), status_line
        headers: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), headers, body

    async def closed_by_server(self) -> bool:
        try:
            return await self.reader.read(1) == b""
        except ConnectionResetError:
            return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def problem_of(status: int, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    assert headers["content-type"].startswith("application/problem+json"), (status, headers, body)
    problem: dict[str, Any] = json.loads(body)
    assert problem["status"] == status
    return problem


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def order_json(order_id: str, padding: int = 0) -> bytes:
    body = {"id": order_id, "due": day(3), "priority": 0, "parts": {"ABC123": 1}}
    return json.dumps(body).encode() + b" " * padding


def client_from(erp: Erp, local: str, auth: tuple[str, str] | None) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=local)
    return httpx.AsyncClient(base_url=erp.base_url, auth=auth, transport=transport, timeout=30)


async def bookings(erp: Erp) -> list[Any]:
    items: list[Any] = (await erp.ok("GET", "/bookings"))["items"]
    return items


# ------------------------------------------------------------------------ credentials before body


async def test_credentials_are_checked_before_the_body_is_read(make_config: Callable[..., CellConfig]) -> None:
    async with erp_gateway(make_config) as erp:
        port = int(erp.base_url.rsplit(":", 1)[1])
        for auth in (None, ("erp", "wrong"), ("nobody", "erp")):
            # 50 MB announced, 16 bytes sent: the answer comes without the rest, and the connection is closed.
            raw = await Raw.open(port)
            await raw.send(head("POST", "/orders", auth=auth, content_type="application/json", content_length=FIFTY_MB))
            await raw.send(b'{"id": "X", "du')
            async with asyncio.timeout(5):
                status, headers, body = await raw.response()
                assert await raw.closed_by_server()
            await raw.close()
            assert status == 401, (auth, status, body)
            assert problem_of(status, headers, body)["reason"] == "AccessDenied"
            assert headers["connection"] == "close"
            assert headers["www-authenticate"].startswith("Basic ")

        # A malformed body without credentials: 401 (it used to be 422: parsed before authentication).
        for auth in (None, ("erp", "wrong")):
            bad = await erp.http.post(
                "/orders", content=b"{not json", headers={"content-type": "application/json"}, auth=auth
            )
            assert bad.status_code == 401, bad.text
        malformed = await erp.http.get("/bookings", headers={"authorization": "Basic !!!"}, auth=None)
        assert malformed.status_code == 401
        assert "malformed" in malformed.json()["detail"]

        # Control: with the ERP's credentials the same body is read and refused as a body, and orders are taken.
        await erp.problem(
            "POST",
            "/orders",
            422,
            "InvalidArgument",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
        assert await bookings(erp) == []
        await erp.order("XYZ", {"ABC123": 1}, due=day(3))
        assert [b["id"] for b in await bookings(erp)] == ["XYZ"]
        # The documentation and the monitor's pages need no credentials.
        for public in ("/healthz", "/openapi.json", "/docs"):
            assert (await erp.http.get(public, auth=None)).status_code == 200, public


# ------------------------------------------------------------------------------------ body limit

LIMIT = 64 * 1024


async def test_bodies_over_the_limit_are_refused_with_413(make_config: Callable[..., CellConfig]) -> None:
    async with erp_gateway(make_config, limits={"http_max_body_bytes": LIMIT}) as erp:
        port = int(erp.base_url.rsplit(":", 1)[1])
        erp_auth = ("erp", "erp")

        # Announced over the limit: 413 at once, nothing of the body waited for.
        raw = await Raw.open(port)
        await raw.send(head("POST", "/orders", auth=erp_auth, content_type="application/json", content_length=FIFTY_MB))
        await raw.send(b'{"id": ')
        async with asyncio.timeout(5):
            status, headers, body = await raw.response()
            assert await raw.closed_by_server()
        await raw.close()
        problem = problem_of(status, headers, body)
        assert (status, problem["reason"]) == (413, "BodyTooLarge"), body
        assert f"at most {LIMIT} bytes" in problem["detail"]

        # No length announced (chunked): cut off when the count passes the limit, while the client still sends.
        raw = await Raw.open(port)
        await raw.send(
            head("POST", "/orders", auth=erp_auth, content_type="application/json", transfer_encoding="chunked")
        )
        answer = asyncio.create_task(raw.response())
        sent, piece, ceiling = 0, chunk(b" " * 16384), 32 * 1024 * 1024
        try:
            async with asyncio.timeout(20):
                while sent < ceiling and not answer.done():
                    await raw.send(piece)
                    sent += len(piece)
        except (ConnectionResetError, BrokenPipeError):
            pass  # closed after the 413
        async with asyncio.timeout(5):
            status, headers, body = await answer
        await raw.close()
        assert (status, problem_of(status, headers, body)["reason"]) == (413, "BodyTooLarge"), body
        assert sent < ceiling, f"the gateway read all {sent} bytes before answering"

        # The oversized requests changed nothing.
        assert await bookings(erp) == []

        # Control: bodies just under the limit, with and without a length, are served.
        await erp.ok(
            "POST", "/orders", 201, content=order_json("A", LIMIT - 200), headers={"content-type": "application/json"}
        )

        async def pieces() -> Any:
            whole = order_json("B", LIMIT - 200)
            for start in range(0, len(whole), 4096):
                yield whole[start : start + 4096]

        await erp.ok("POST", "/orders", 201, content=pieces(), headers={"content-type": "application/json"})
        assert [b["id"] for b in await bookings(erp)] == ["A", "B"]


# ------------------------------------------------------------------------------ concurrency cap


async def test_requests_beyond_the_cap_get_503_and_the_probes_still_answer(
    make_config: Callable[..., CellConfig],
) -> None:
    async with erp_gateway(make_config, limits={"http_max_concurrent_requests": 2}) as erp:
        port = int(erp.base_url.rsplit(":", 1)[1])
        # Two requests in flight: their bodies are started and not finished, so each holds its place.
        held = []
        for order_id in ("H1", "H2"):
            raw = await Raw.open(port)
            request = head(
                "POST", "/orders", auth=("erp", "erp"), content_type="application/json", transfer_encoding="chunked"
            )
            await raw.send(request + chunk(order_json(order_id)[:10]))
            held.append((raw, order_json(order_id)[10:]))

        async with asyncio.timeout(10):
            while (busy := await erp.http.get("/bookings")).status_code != 503:
                assert busy.status_code == 200
        problem = busy.json()
        assert busy.headers["content-type"].startswith("application/problem+json")
        assert problem["reason"] == "Busy"
        assert "2 requests" in problem["detail"]
        assert busy.headers["retry-after"] == "1"
        # A monitor still gets its answers, whatever the load.
        assert (await erp.http.get("/healthz", auth=None)).status_code == 200
        assert (await erp.http.get("/metrics", auth=None)).status_code == 200

        # Control: one held request finishes; its place is free again.
        raw, rest = held[0]
        await raw.send(chunk(rest) + b"0\r\n\r\n")
        async with asyncio.timeout(10):
            status, _, body = await raw.response()
        assert status == 201, body
        await erp.ok("GET", "/bookings")
        for raw, _ in held:
            await raw.close()


# ------------------------------------------------------------------------------------ logins


async def test_failed_logins_back_off_per_user_and_per_address(make_config: Callable[..., CellConfig]) -> None:
    limits = {"login_failures": 3, "login_backoff_seconds": 1, "login_window_seconds": 60}
    async with (
        erp_gateway(make_config, limits=limits) as erp,
        client_from(erp, "127.0.0.2", None) as guesser,
        client_from(erp, "127.0.0.3", None) as other,
    ):
        for n in range(3):
            wrong = await guesser.get("/bookings", auth=("engineer", f"guess-{n}"))
            assert wrong.status_code == 401
            assert wrong.json()["detail"] == "unknown user or wrong password"
        # Backed off: even the right password is not checked, from that address or for that user.
        for client in (guesser, other):
            backed_off = await client.get("/bookings", auth=("engineer", "engineer"))
            assert backed_off.status_code == 429, backed_off.text
            problem = backed_off.json()
            assert problem["reason"] == "LoginBackedOff"
            assert 1 <= int(backed_off.headers["retry-after"]) <= 2
            assert "too many failed logins" in problem["detail"]
            assert f"try again in {backed_off.headers['retry-after']} s" in problem["detail"]
        # Control: the ERP's own user from its own address is not touched.
        await erp.ok("GET", "/bookings")
        # When the back-off ends, the right password gets in again.
        async with asyncio.timeout(10):
            while (after := await other.get("/bookings", auth=("engineer", "engineer"))).status_code == 429:
                pass
        assert after.status_code == 200, after.text


async def test_logins_beyond_the_queue_are_answered_busy(make_config: Callable[..., CellConfig]) -> None:
    limits = {"login_workers": 1, "login_queue": 2, "login_failures": 1000}
    async with erp_gateway(make_config, limits=limits) as erp:
        async with client_from(erp, "127.0.0.2", None) as guesser:
            answers = await asyncio.gather(
                *(guesser.get("/bookings", auth=("engineer", f"guess-{n}")) for n in range(12))
            )
        statuses = Counter(a.status_code for a in answers)
        assert set(statuses) == {401, 503}, statuses
        for busy in (a for a in answers if a.status_code == 503):
            assert busy.json()["reason"] == "Busy"
            assert busy.headers["retry-after"] == "1"
        # Control: the ERP is answered once the guesses are done.
        await erp.ok("GET", "/bookings")


async def test_unknown_user_and_wrong_password_answer_alike(make_config: Callable[..., CellConfig]) -> None:
    """Both cost one argon2 check (an unknown user against a decoy hash with the same parameters).

    Medians of 8 each after 2 warm-ups, interleaved so CPU contention from other processes hits both
    alike. The bound (within 2x either way) is loose on purpose for a shared machine, and still far
    from the 60x (1.6 ms vs 102 ms) an unknown user took against a wrong password without the decoy.
    """
    async with erp_gateway(make_config, limits={"login_failures": 1000}) as erp:
        times: dict[str, list[float]] = {"unknown": [], "wrong": []}
        details: set[tuple[int, str]] = set()
        for n in range(10):
            for kind, user in (("unknown", f"nobody-{n}"), ("wrong", "erp")):
                started = time.perf_counter()
                answer = await erp.http.get("/bookings", auth=(user, f"guess-{n}"))
                elapsed = time.perf_counter() - started
                details.add((answer.status_code, answer.json()["detail"]))
                if n >= 2:
                    times[kind].append(elapsed)
        assert details == {(401, "unknown user or wrong password")}
        unknown, wrong = statistics.median(times["unknown"]), statistics.median(times["wrong"])
        print(f"unknown user {unknown * 1000:.1f} ms, wrong password {wrong * 1000:.1f} ms (medians)")
        assert 0.5 < unknown / wrong < 2, f"unknown user {unknown * 1000:.1f} ms, wrong password {wrong * 1000:.1f} ms"
        await erp.ok("GET", "/bookings")


# -------------------------------------------------------------------------------- load test


def _flood_main() -> None:
    """In a child process: flood the gateway on port argv[1] until stdin closes; print the answers' counts."""
    port = int(sys.argv[1])
    counts: Counter[str] = Counter()
    answered = asyncio.Event()

    def count(answer: str) -> None:
        counts[answer] += 1
        if counts.total() >= 5:
            answered.set()

    async def exchange(raw: Raw, data: bytes, body: int) -> int:
        await raw.send(data)
        answer = asyncio.create_task(raw.response())
        sent = 0
        try:
            while sent < body and not answer.done():
                await raw.send(b"\0" * 65536)
                sent += 65536
        except ConnectionError:
            pass
        try:
            async with asyncio.timeout(10):
                status, _, _ = await answer
        except ConnectionError:
            # The gateway answered and closed while this client was still writing: asyncio drops the
            # answer it had received. Closing on an oversized body is the point; the 413 is seen too.
            return 0
        finally:
            await raw.close()
        return status

    async def guesses(stop: asyncio.Event, lane: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            user = ("engineer", f"nobody-{n}", "admin")[n % 3]
            raw = await Raw.open(port, f"127.0.{lane}.{2 + n % 200}")
            status = await exchange(
                raw, head("GET", "/bookings", auth=(user, f"guess-{lane}-{n}"), connection="close"), 0
            )
            count(f"wrong password {status}")

    async def oversized(stop: asyncio.Event, lane: int, auth: tuple[str, str]) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            raw = await Raw.open(port, f"127.0.{lane}.{2 + n % 200}")
            request = head("POST", "/orders", auth=auth, content_type="application/json", content_length=FIFTY_MB)
            status = await exchange(raw, request, FIFTY_MB)
            count(f"oversized as {auth[0]} {status}")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stop.set)), daemon=True).start()
        tasks = [asyncio.create_task(guesses(stop, lane)) for lane in range(10, 16)]
        tasks += [asyncio.create_task(oversized(stop, 20, ("engineer", "x")))]
        tasks += [asyncio.create_task(oversized(stop, 21, ("intruder", "x")))]
        await answered.wait()
        print("flooding", flush=True)
        await stop.wait()
        await asyncio.gather(*tasks)
        print(json.dumps(counts), flush=True)

    asyncio.run(main())


async def start_flood(port: int) -> asyncio.subprocess.Process:
    """``_flood_main`` against the HTTP port, in a process of its own at a lower CPU priority (nice 10).

    On a shop floor the attacker's CPU is another host's; on this 2-core machine its closed loops would
    take a core from the gateway and measure the machine, not what the flood costs the gateway. The
    priority changes nothing about what is sent: the same requests, each as soon as the last is
    answered."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from tests.integration.test_http_edges import _flood_main; _flood_main()", str(port),
        cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, preexec_fn=lambda: os.nice(10),
    )  # fmt: skip


def _rss_bytes() -> int:
    status = Path(f"/proc/{os.getpid()}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match
    return int(match.group(1)) * 1024


async def _p50(erp: Erp, count: int, seconds: float = 0) -> float:
    """The median time of the ERP's GET, over ``count`` calls and at least ``seconds``."""
    times: list[float] = []
    until = time.perf_counter() + seconds
    while len(times) < count or time.perf_counter() < until:
        started = time.perf_counter()
        await erp.ok("GET", "/bookings", params={"limit": 1})
        times.append(time.perf_counter() - started)
    return statistics.median(times)


@pytest.mark.timeout(90)
async def test_a_healthy_erp_client_is_served_during_a_flood(make_config: Callable[..., CellConfig]) -> None:
    """Wrong passwords from many addresses and 50 MB bodies, from another process, for a few seconds.

    The attacker has no valid credentials: each request is refused (401, 429, 503) before its body is
    read, and the connection of a 50 MB body is closed after the answer (0: the attacker, still
    sending, lost the answer to the reset). The ERP's GETs (credentials remembered after the first)
    keep a p50 within 3x of the idle p50 of the same run; the gateway's memory (this process) grows by
    less than three 64 MiB argon2 checks, whatever the number of guesses in flight; none hangs.
    """
    async with erp_gateway(make_config) as erp:
        port = int(erp.base_url.rsplit(":", 1)[1])
        await erp.order("XYZ", {"ABC123": 1}, due=day(3))
        await _p50(erp, 5)
        idle = await _p50(erp, 40)

        baseline, peak, sampling = _rss_bytes(), 0, threading.Event()

        def sample() -> None:
            nonlocal peak
            while not sampling.wait(0.005):
                peak = max(peak, _rss_bytes())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        flood = await start_flood(port)
        assert flood.stdin is not None
        assert flood.stdout is not None
        try:
            async with asyncio.timeout(30):
                assert await flood.stdout.readline() == b"flooding\n"
            loaded = await _p50(erp, 40, seconds=4)
        finally:
            flood.stdin.close()
            async with asyncio.timeout(30):
                output, _ = await flood.communicate()
            sampling.set()
            sampler.join()
        counts = Counter(json.loads(output))
        figures = f"idle p50 {idle * 1000:.1f} ms, under flood {loaded * 1000:.1f} ms; flood answers {dict(counts)}"
        print(figures)
        assert loaded < 3 * idle, figures
        for user in ("engineer", "intruder"):
            assert counts[f"oversized as {user} 401"] + counts[f"oversized as {user} 429"] >= 1, figures
        assert sum(n for answer, n in counts.items() if answer.startswith("wrong password")) >= 10, figures
        assert {a.rsplit(" ", 1)[1] for a in counts} <= {"0", "401", "429", "503"}, figures
        grown = peak - baseline
        assert grown < 192 * 1024 * 1024, f"RSS grew by {grown / 2**20:.0f} MiB during the flood; {figures}"
        print(f"RSS grew by {grown / 2**20:.0f} MiB")
