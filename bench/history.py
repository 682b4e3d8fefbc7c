"""What a year of history costs: the gateway on a fresh database against the same gateway after N reports.

PLC lanes produce real units through real jobs. A lane is one OPC UA session with a pallet of its own
(``HP000``...) and stations of its own in the demo cell's groups: a load station ``HL000`` (LOAD), a
machining center ``HM000`` (MILL), a washer ``HW000`` (WASH) and a CMM ``HC000`` (CMM), so lanes never
queue for each other and the demo routing (OP10 load, OP20 mill, OP30 wash, OP40 unload, OP50 inspect)
applies unchanged. Each OPC UA request of a lane carries one turn of its pallet, in order (a session's
calls are served one after the other, each answered after its commit):

    ScanIn + ScanOut at HC of each unit unloaded in the turn before   (OP50: the unit finishes)
    PalletArrived, CycleStarted, CycleEnded ok, PalletDeparted at HM  (OP20)
    the same at HW                                                    (OP30)
    PalletArrived, LoadCompleted, PalletDeparted at HL                (OP40 for the units on the pallet,
                                                                       OP10 for units_per_pallet new ones)

15 reports per turn, 7.5 per unit with the demo's 2 units per pallet (a year of the demo cell, 4 mills
at 900 s per unit, is about 140,000 units and 1,000,000 reports). Serials are assigned by the gateway
(LoadCompleted with no serials). Every ``refuse_every`` turns a lane sends one report that is refused
on purpose, alternately a ScanIn at the CMM of a unit that still needs milling (wrong station:
InvalidProcessStep) and a CycleStarted at the mill with the wash program (WrongProgram); both are
stored in the log, as refusals are. Any other answer than the expected one is counted as unexpected.

Each worker process also runs a planner session: it creates and releases 40-unit jobs of one part
(automatic routing, no yield buffer: the cap is 40) as its lanes need them, CreateJob and Release in
one request. In the "closed" variant it closes each job (Jobs.Close) once all of its units finished;
in the "open" variant finished jobs are left Running, as a cell whose planner never closes them would.

Measured, on a fresh database and after N reports (the gateway is stopped after the fill and started
again on that database): start-up (process start until the OPC UA port accepts and /healthz answers),
RSS, /api/status latency and the CLI (``status``, ``trace``) on the database as it is; then reports/s
and server CPU per report over a steady window of closed-loop lanes, and the peak RSS after it.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from asyncua import Client, ua

from bench.run import DEMO_CONFIG, Server, WorkerPool, percentile
from simulators.gateway_process import derive_config, free_port

NS_URI = "urn:cell-gateway"
JOB_QUANTITY = 40
PART, REVISION = "HIST-100", "A"
MILL, WASH = "PRG-MILL-100", "PRG-WASH-1"
# Targets of the project: after a year of history, against a fresh database.
TARGETS = {"startup": 2.0, "rss": 1.5, "reports_per_s": 0.9, "status": 2.0}
S, U32, I32, F64, DT = (
    ua.VariantType.String,
    ua.VariantType.UInt32,
    ua.VariantType.Int32,
    ua.VariantType.Double,
    ua.VariantType.DateTime,
)


# ---------------------------------------------------------------------------------------------- config


def history_config(out: Path, lanes: int) -> Path:
    """The demo cell plus, per lane, a pallet and a load, mill, wash and CMM station of its own."""
    config = derive_config(DEMO_CONFIG, out)
    text = config.read_text()
    pallets = ", ".join(f'"HP{i:03d}"' for i in range(lanes))
    text, found = re.subn(r"^pallets = \[(.*)\]$", rf"pallets = [\1, {pallets}]", text, count=1, flags=re.MULTILINE)
    if not found:
        raise RuntimeError("the demo config has no top-level pallets line")
    for i in range(lanes):
        for prefix, kind, group in (("HL", "load", "LOAD"), ("HM", "machine", "MILL"), ("HW", "wash", "WASH")):
            text += f'\n[[stations]]\nid = "{prefix}{i:03d}"\nkind = "{kind}"\ngroups = ["{group}"]\n'
        text += f'\n[[stations]]\nid = "HC{i:03d}"\nkind = "inspection"\ngroups = ["CMM"]\n'
    config.write_text(text)
    return config


def units_per_pallet(config: Path) -> int:
    found = re.search(r"^units_per_pallet\s*=\s*(\d+)", config.read_text(), flags=re.MULTILINE)
    return int(found.group(1)) if found else 1


# ---------------------------------------------------------------------------------------------- PLC side


@dataclass(frozen=True, slots=True)
class Work:
    """One job for a worker process: run its lanes until ``reports`` calls, or through a window."""

    endpoint: str
    tag: str  # makes EventIds and JobIds unique across runs against one database
    lanes: tuple[int, ...]
    per_pallet: int
    close_jobs: bool
    refuse_every: int
    reports: int = 0  # calls this process makes (count mode); 0 = window mode
    stop_at: float = 0.0  # wall clock: count mode stops early here (time budget)
    start_at: float = 0.0  # window mode: wall clock when the lanes start
    warmup: float = 0.0
    duration: float = 0.0
    progress_every: float = 2.0  # seconds between progress messages (count mode)


@dataclass(frozen=True, slots=True)
class Progress:
    worker: int
    calls: int


@dataclass(slots=True)
class Tally:
    """What a worker did; summed over workers by the orchestrator."""

    calls: int = 0  # every call answered (station and job methods), or those inside the window
    station_calls: int = 0
    requests: int = 0
    refused_on_purpose: int = 0
    unexpected: Counter[str] = field(default_factory=Counter)  # "Method: status" -> count
    units_loaded: int = 0
    units_finished: int = 0
    jobs_created: int = 0
    jobs_closed: int = 0
    seconds: float = 0.0
    serial: str = ""  # a finished unit, for the CLI's trace

    def add(self, other: Tally) -> None:
        self.calls += other.calls
        self.station_calls += other.station_calls
        self.requests += other.requests
        self.refused_on_purpose += other.refused_on_purpose
        self.unexpected.update(other.unexpected)
        self.units_loaded += other.units_loaded
        self.units_finished += other.units_finished
        self.jobs_created += other.jobs_created
        self.jobs_closed += other.jobs_closed
        self.seconds = max(self.seconds, other.seconds)
        self.serial = self.serial or other.serial


def serve(worker: int, conn: Connection) -> None:
    """The worker process: run :class:`Work` until told to quit (None)."""
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    while True:
        message = conn.recv()
        if message is None:
            return
        try:
            conn.send(asyncio.run(_work(worker, message, conn)))
        except BaseException as exc:  # reported (picklable) to the orchestrator, which fails the run
            conn.send(RuntimeError(f"worker {worker}: {exc!r}"))
            if not isinstance(exc, Exception):
                raise


@dataclass(slots=True)
class _Job:
    id: str
    allocated: int = 0
    finished: int = 0
    closed: bool = False


class Session:
    """One OPC UA session; ``call`` sends a list of method calls as one request."""

    def __init__(self, endpoint: str) -> None:
        self.client = Client(endpoint, timeout=60, watchdog_intervall=30.0)  # a loaded server is not a dead one
        self.ns = 0
        self._ids: dict[str, ua.NodeId] = {}

    async def __aenter__(self) -> Session:
        async with asyncio.timeout(60):
            await self.client.connect()
            self.ns = await self.client.get_namespace_index(NS_URI)
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            async with asyncio.timeout(5):
                await self.client.disconnect()
        except Exception:
            with suppress(Exception):
                self.client.disconnect_socket()

    def node(self, path: str) -> ua.NodeId:
        found = self._ids.get(path)
        if found is None:
            found = self._ids[path] = ua.NodeId(path, self.ns)
        return found

    def request(self, obj: str, method: str, *inputs: ua.Variant) -> ua.CallMethodRequest:
        return ua.CallMethodRequest(
            ObjectId=self.node(obj), MethodId=self.node(f"{obj}/{method}"), InputArguments=list(inputs)
        )

    async def call(self, requests: list[ua.CallMethodRequest]) -> list[Any]:
        async with asyncio.timeout(120):
            results: list[Any] = await self.client.uaclient.call(requests)
        return results


def _status(result: Any) -> str:
    code = result.StatusCode
    return "Good" if code.is_good() else str(code.name)


class Planner:
    """Creates and releases 40-unit jobs as the lanes of this process need units; closes finished ones."""

    def __init__(self, session: Session, work: Work, worker: int, tally: Tally) -> None:
        self.session = session
        self.work = work
        self.prefix = f"H{work.tag}-{worker}"
        self.tally = tally
        self.jobs: dict[str, _Job] = {}
        self.current: _Job | None = None
        self.lock = asyncio.Lock()
        self.numbers = itertools.count(1)

    async def _call(self, requests: list[ua.CallMethodRequest], what: str) -> list[str]:
        statuses = [_status(r) for r in await self.session.call(requests)]
        self.tally.calls += len(requests)
        self.tally.requests += 1
        for status in statuses:
            if status != "Good":
                self.tally.unexpected[f"{what}: {status}"] += 1
        return statuses

    async def take(self, count: int) -> tuple[str, int]:
        """A job and how many units of it a pallet loads now (the job's quantity is never crossed)."""
        async with self.lock:
            job = self.current
            if job is None or job.allocated >= JOB_QUANTITY:
                job = self.current = await self._new_job()
            n = min(count, JOB_QUANTITY - job.allocated)
            job.allocated += n
            return job.id, n

    def give_back(self, job_id: str, count: int) -> None:
        self.jobs[job_id].allocated -= count

    async def _new_job(self) -> _Job:
        job = _Job(f"{self.prefix}-{next(self.numbers):05d}")
        null = ua.Variant(None, ua.VariantType.Null)
        create = self.session.request(
            "Cell/Jobs", "CreateJob",
            ua.Variant(job.id, S), ua.Variant(PART, S), ua.Variant(REVISION, S), ua.Variant(JOB_QUANTITY, U32),
            null, ua.Variant(0, I32), ua.Variant(0.0, F64),
            ua.Variant([], S, is_array=True), ua.Variant([], S, is_array=True),
        )  # fmt: skip
        release = self.session.request("Cell/Jobs", "Release", ua.Variant(job.id, S))
        statuses = await self._call([create, release], "CreateJob/Release")
        if statuses != ["Good", "Good"]:
            raise RuntimeError(f"CreateJob/Release {job.id} answered {statuses}")
        self.tally.jobs_created += 1
        self.jobs[job.id] = job
        return job

    async def finished(self, job_id: str, count: int) -> None:
        job = self.jobs[job_id]
        job.finished += count
        if self.work.close_jobs and job.allocated >= JOB_QUANTITY and job.finished >= job.allocated:
            await self._close(job)

    async def _close(self, job: _Job) -> None:
        if job.closed:
            return
        job.closed = True
        close = self.session.request("Cell/Jobs", "Close", ua.Variant(job.id, S), ua.Variant("done", S))
        if await self._call([close], "Close") == ["Good"]:
            self.tally.jobs_closed += 1

    async def wrap_up(self) -> None:
        """Closed variant: the lanes are done, so every job whose units all finished is closed."""
        if not self.work.close_jobs:
            return
        for job in list(self.jobs.values()):
            if job.finished >= job.allocated:
                await self._close(job)


class Lane:
    """One pallet going round its own load, mill, wash and CMM stations; one request per turn."""

    def __init__(self, index: int, session: Session, planner: Planner, work: Work, tally: Tally) -> None:
        self.i = index
        self.session = session
        self.planner = planner
        self.work = work
        self.tally = tally
        self.pallet = ua.Variant(f"HP{index:03d}", S)
        self.load, self.mill, self.wash, self.cmm = (f"Cell/Stations/{p}{index:03d}" for p in ("HL", "HM", "HW", "HC"))
        self.on_pallet: list[str] = []  # units loaded, needing the mill (or, if unload_only, the unload)
        self.unload_only = False  # the last load was refused: the pallet's units still need unloading
        self.to_scan: list[str] = []  # units unloaded in the last turn, needing inspection
        self.job_of: dict[str, str] = {}
        self.events = itertools.count(1)
        self.turns = 0

    def _report(self, station: str, method: str, *inputs: ua.Variant) -> ua.CallMethodRequest:
        event_id = ua.Variant(f"{self.work.tag}-{self.i}-{next(self.events)}", S)
        return self.session.request(station, method, event_id, *inputs, ua.Variant(None, ua.VariantType.Null))

    async def run(self, done: Callable[[], bool], counting: Callable[[float], bool]) -> None:
        """Turns until ``done()``, then turns that load nothing until the pallet and the CMM are empty."""
        while True:
            stopping = done()
            if stopping and not self.on_pallet and not self.to_scan:
                return
            await self.turn(stopping, counting)

    async def turn(self, stopping: bool, counting: Callable[[float], bool]) -> None:
        calls: list[ua.CallMethodRequest] = []
        expect: list[str] = []
        what: list[str] = []

        def add(request: ua.CallMethodRequest, name: str, status: str = "Good") -> None:
            calls.append(request)
            expect.append(status)
            what.append(name)

        self.turns += 1
        scanned = self.to_scan
        for serial in scanned:
            add(self._report(self.cmm, "ScanIn", ua.Variant(serial, S)), "ScanIn")
            add(self._report(self.cmm, "ScanOut", ua.Variant(serial, S), ua.Variant("pass", S)), "ScanOut")
        refuse = bool(self.work.refuse_every) and self.turns % self.work.refuse_every == 0
        milled = bool(self.on_pallet) and not self.unload_only
        if milled:
            if refuse and self.turns // self.work.refuse_every % 2:  # wrong station: the unit needs the mill
                add(
                    self._report(self.cmm, "ScanIn", ua.Variant(self.on_pallet[0], S)), "ScanIn", "BadRequestNotAllowed"
                )
            add(self._report(self.mill, "PalletArrived", self.pallet), "PalletArrived")
            if refuse and not self.turns // self.work.refuse_every % 2:  # wrong program
                cycle = self._report(self.mill, "CycleStarted", self.pallet, ua.Variant(WASH, S))
                add(cycle, "CycleStarted", "BadRequestNotAllowed")
            for station, program in ((self.mill, MILL), (self.wash, WASH)):
                if station == self.wash:
                    add(self._report(station, "PalletArrived", self.pallet), "PalletArrived")
                add(self._report(station, "CycleStarted", self.pallet, ua.Variant(program, S)), "CycleStarted")
                cycle = self._report(station, "CycleEnded", self.pallet, ua.Variant(program, S), ua.Variant("ok", S))
                add(cycle, "CycleEnded")
                add(self._report(station, "PalletDeparted", self.pallet), "PalletDeparted")
        job, quantity = ("", 0) if stopping else await self.planner.take(self.work.per_pallet)
        load_at = -1
        if self.on_pallet or quantity:
            add(self._report(self.load, "PalletArrived", self.pallet), "PalletArrived")
            load_at = len(calls)
            add(
                self._report(
                    self.load, "LoadCompleted", self.pallet, ua.Variant(job, S), ua.Variant(quantity, U32),
                    ua.Variant([], S, is_array=True),
                ),
                "LoadCompleted",
            )  # fmt: skip
            add(self._report(self.load, "PalletDeparted", self.pallet), "PalletDeparted")
        elif job:
            self.planner.give_back(job, quantity)

        results = await self.session.call(calls)
        answered = time.time()
        statuses = [_status(r) for r in results]
        if counting(answered):
            self.tally.calls += len(calls)
            self.tally.station_calls += len(calls)
            self.tally.requests += 1
        for name, want, got in zip(what, expect, statuses, strict=True):
            if got != want:
                self.tally.unexpected[f"{name}: {got}"] += 1
            elif want != "Good":
                self.tally.refused_on_purpose += 1

        finished: Counter[str] = Counter()
        for k, serial in enumerate(scanned):
            if statuses[2 * k + 1] == "Good":
                finished[self.job_of.pop(serial, "")] += 1
                self.tally.units_finished += 1
                self.tally.serial = self.tally.serial or serial
        self.to_scan = []
        if load_at >= 0 and statuses[load_at] == "Good":
            washed = milled and all(s == "Good" for s, w in zip(statuses, expect, strict=True) if w == "Good")
            if washed or self.unload_only:
                self.to_scan = self.on_pallet
            outputs = results[load_at].OutputArguments or []
            serials = [str(s) for s in outputs[0].Value] if outputs and quantity else []
            for serial in serials:
                self.job_of[serial] = job
            self.tally.units_loaded += len(serials)
            self.on_pallet = serials
            self.unload_only = False
        elif load_at >= 0:  # the load was refused: nothing recorded, the units are still on the pallet
            if job:
                self.planner.give_back(job, quantity)
            self.unload_only = bool(self.on_pallet)
        for job_id, n in finished.items():
            if job_id:
                await self.planner.finished(job_id, n)


async def _work(worker: int, work: Work, conn: Connection) -> Tally:
    tally = Tally()
    began = time.monotonic()
    async with Session(work.endpoint) as planning:
        planner = Planner(planning, work, worker, tally)
        sessions = [Session(work.endpoint) for _ in work.lanes]
        for s in sessions:
            await s.__aenter__()
        try:
            lanes = [Lane(i, s, planner, work, tally) for i, s in zip(work.lanes, sessions, strict=True)]
            if work.reports:

                def done() -> bool:
                    return tally.calls >= work.reports or time.time() >= work.stop_at

                def counting(at: float) -> bool:
                    return True

                reporter = asyncio.create_task(_progress(worker, conn, tally, work.progress_every))
                try:
                    await asyncio.gather(*(lane.run(done, counting) for lane in lanes))
                finally:
                    reporter.cancel()
                    await asyncio.gather(reporter, return_exceptions=True)
                tally.seconds = time.monotonic() - began
            else:
                measure_from = work.start_at + work.warmup
                measure_to = measure_from + work.duration

                def done() -> bool:
                    return time.time() >= measure_to

                def counting(at: float) -> bool:
                    return measure_from <= at < measure_to

                await asyncio.sleep(max(0.0, work.start_at - time.time()))
                await asyncio.gather(*(lane.run(done, counting) for lane in lanes))
                tally.seconds = work.duration
            await planner.wrap_up()
        finally:
            await asyncio.gather(*(s.__aexit__() for s in sessions), return_exceptions=True)
    return tally


async def _progress(worker: int, conn: Connection, tally: Tally, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        conn.send(Progress(worker, tally.calls))


# ---------------------------------------------------------------------------------------------- orchestrator


def run_work(
    pool: WorkerPool,
    works: list[Work],
    timeout: float,
    on_progress: Callable[[int], None] | None = None,
) -> Tally:
    """Send each worker its work and wait for all of them; progress messages go to ``on_progress``."""
    conns = pool.conns[: len(works)]
    for conn, work in zip(conns, works, strict=True):
        conn.send(work)
    progress = [0] * len(works)
    index = {id(conn): i for i, conn in enumerate(conns)}
    total = Tally()
    pending = set(range(len(works)))
    deadline = time.monotonic() + timeout
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"{len(pending)} history worker(s) did not finish within {timeout:.0f} s")
        for ready in wait([conns[i] for i in pending], timeout=min(left, 1.0)):
            i = index[id(ready)]
            message = conns[i].recv()
            if isinstance(message, Progress):
                progress[i] = message.calls
                if on_progress is not None:
                    on_progress(sum(progress))
            elif isinstance(message, Tally):
                progress[i] = message.calls
                total.add(message)
                pending.discard(i)
            else:
                raise RuntimeError(f"a history worker failed: {message!r}")
    return total


def _split(lanes: int, processes: int) -> list[tuple[int, ...]]:
    return [tuple(range(p, lanes, processes)) for p in range(processes) if p < lanes]


def _tag() -> str:
    return f"{time.time_ns() // 1_000_000 % 10**9:x}"


@dataclass(slots=True)
class Gateway:
    server: Server
    startup_s: float
    opc_port: int
    http_port: int

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.opc_port}/cell-gateway/"


def start(workdir: Path, name: str, config: Path, db: Path, log_level: str, within: float, http: bool) -> Gateway:
    """``cell-gateway run`` on ``db``; start-up = process start until the OPC UA port accepts and
    /healthz answers 200 (polled every 20 ms)."""
    opc_port, http_port = free_port(), free_port() if http else 0
    env = {
        "CELL_GATEWAY_ENDPOINT": f"opc.tcp://127.0.0.1:{opc_port}/cell-gateway/",
        "CELL_GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{db.resolve()}",
        "CELL_GATEWAY_HTTP_PORT": str(http_port),
    }
    argv = [sys.executable, "-m", "gateway", "run", "--config", str(config), "--json-logs", "--log-level", log_level]
    workdir.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    server = Server(name, argv, opc_port, workdir, env, within=within)
    try:
        deadline = began + within
        while http and not _healthy(http_port):
            if server.proc.poll() is not None or time.perf_counter() > deadline:
                raise RuntimeError(f"{name}: /healthz did not answer 200 within {within:.0f} s")
            time.sleep(0.02)
    except BaseException:
        server.stop()
        raise
    return Gateway(server, time.perf_counter() - began, opc_port, http_port)


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
            return bool(answer.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def status_latency(port: int, gets: int, auth: str) -> tuple[list[float], int]:
    """``gets`` sequential GETs of /api/status, after one not measured: milliseconds, and the body's size."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/status")
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    latencies = []
    size = 0
    for k in range(gets + 1):
        began = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                size = len(answer.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                raise RuntimeError("/api/status asks for credentials: pass --history-http-auth USER:PASSWORD") from None
            raise
        if k:
            latencies.append((time.perf_counter() - began) * 1000)
    return latencies, size


def cli_seconds(workdir: Path, config: Path, db: Path, argv: list[str]) -> float:
    """Wall time of ``python -m gateway ARGV --config CONFIG`` on ``db`` (exit 1 allowed: an unknown serial)."""
    env = {**_environ(), "CELL_GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{db.resolve()}"}
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "gateway", *argv, "--config", str(config)],
        cwd=workdir, env=env, capture_output=True, timeout=300, check=False,
    )  # fmt: skip
    seconds = time.perf_counter() - began
    if done.returncode not in (0, 1):
        raise RuntimeError(f"gateway {' '.join(argv)} exited {done.returncode}: {done.stderr.decode()[-800:]}")
    return seconds


def _environ() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CELL_GATEWAY_CONFIG", None)
    return env


def db_figures(db: Path) -> dict[str, Any]:
    """Rows in the log, units, jobs; a finished unit from the middle of the history; the file size."""
    if not db.exists():
        return {"reports": 0, "units": 0, "jobs": 0, "open_jobs": 0, "serial": "", "mib": 0.0}
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        reports = conn.execute("SELECT count(*) FROM cell_events").fetchone()[0]
        units = conn.execute("SELECT count(*) FROM units").fetchone()[0]
        jobs = conn.execute("SELECT count(*) FROM jobs").fetchone()[0]
        open_jobs = conn.execute("SELECT count(*) FROM jobs WHERE state != 'Closed'").fetchone()[0]
        row = conn.execute(
            "SELECT serial FROM units WHERE status = 'finished' LIMIT 1 OFFSET "
            "(SELECT count(*) / 2 FROM units WHERE status = 'finished')"
        ).fetchone()
    size = sum(p.stat().st_size for p in (db, *_companions(db)) if p.exists())
    return {
        "reports": reports,
        "units": units,
        "jobs": jobs,
        "open_jobs": open_jobs,
        "serial": row[0] if row else "",
        "mib": round(size / 2**20, 1),
    }


def _companions(db: Path) -> list[Path]:
    return [db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]


def copy_db(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    for path in (target, *_companions(target)):
        path.unlink(missing_ok=True)
    shutil.copyfile(source, target)
    for companion, copy in zip(_companions(source), _companions(target), strict=True):
        if companion.exists():
            shutil.copyfile(companion, copy)


# ---------------------------------------------------------------------------------------------- one round


@dataclass(slots=True)
class Options:
    reports: int
    lanes: int
    processes: int
    warmup: float
    duration: float
    rounds: int
    status_gets: int  # per state, spread over the rounds
    refuse_every: int
    log_level: str
    http_auth: str
    start_within: float


@dataclass(slots=True)
class State:
    """One side of the comparison: a database that is copied afresh for every round."""

    label: str  # "empty" or "after"
    pristine: Path
    working: Path
    serial: str  # for the CLI's trace
    rounds: list[dict[str, Any]] = field(default_factory=list)
    status_ms: list[float] = field(default_factory=list)


def measure_round(
    pool: WorkerPool,
    gwdir: Path,
    name: str,
    config: Path,
    state: State,
    per_pallet: int,
    close_jobs: bool,
    opts: Options,
) -> dict[str, Any]:
    """Start the gateway on a fresh copy of the state's database; RSS, /api/status and the CLI on it as
    it is; then a steady window of closed-loop lanes (which adds reports to the copy only)."""
    copy_db(state.pristine, state.working)
    load = loadavg()
    gateway = start(gwdir, name, config, state.working, opts.log_level, opts.start_within, True)
    server = gateway.server
    try:
        time.sleep(1.0)  # the first /healthz answered; start-up work may still finish
        idle = server.memory_kib()
        gets = -(-opts.status_gets // opts.rounds)
        latencies, size = status_latency(gateway.http_port, gets, opts.http_auth)
        state.status_ms += latencies
        cli_status = cli_seconds(gwdir, config, state.working, ["status"])
        cli_trace = cli_seconds(gwdir, config, state.working, ["trace", state.serial])

        start_at = time.time() + 2.0
        works = [
            Work(
                gateway.endpoint, f"{_tag()}w", lanes, per_pallet, close_jobs, opts.refuse_every,
                start_at=start_at, warmup=opts.warmup, duration=opts.duration,
            )
            for lanes in _split(opts.lanes, opts.processes)
        ]  # fmt: skip
        for conn, work in zip(pool.conns, works, strict=False):
            conn.send(work)
        time.sleep(max(0.0, start_at + opts.warmup - time.time()))
        cpu0 = server.cpu_seconds()
        time.sleep(max(0.0, start_at + opts.warmup + opts.duration - time.time()))
        cpu1 = server.cpu_seconds()
        tally = _collect(pool, len(works), 300)
        loaded = server.memory_kib()
    finally:
        server.stop()
    return {
        "load_average": load,
        "startup_s": round(gateway.startup_s, 3),
        "rss_idle_mib": round(idle["VmRSS"] / 1024, 1),
        "hwm_after_window_mib": round(loaded["VmHWM"] / 1024, 1),
        "reports_per_s": round(tally.calls / opts.duration, 1),
        "cpu_us_per_report": round((cpu1 - cpu0) / tally.calls * 1e6, 1) if tally.calls else float("nan"),
        "window_unexpected": dict(tally.unexpected),
        "status_bytes": size,
        "cli_status_s": round(cli_status, 3),
        "cli_trace_s": round(cli_trace, 3),
    }


def summarize_state(state: State) -> dict[str, Any]:
    """Medians over the rounds; /api/status latencies pooled."""

    def median(key: str) -> float:
        return round(float(statistics.median(r[key] for r in state.rounds)), 3)

    return {
        "database": db_figures(state.pristine),
        "startup_s": median("startup_s"),
        "rss_idle_mib": median("rss_idle_mib"),
        "hwm_after_window_mib": median("hwm_after_window_mib"),
        "reports_per_s": median("reports_per_s"),
        "cpu_us_per_report": median("cpu_us_per_report"),
        "status": {
            "p50_ms": round(percentile(state.status_ms, 0.5), 2),
            "p99_ms": round(percentile(state.status_ms, 0.99), 2),
            "gets": len(state.status_ms),
            "kib": round(statistics.median(r["status_bytes"] for r in state.rounds) / 1024, 1),
        },
        "cli_status_s": median("cli_status_s"),
        "cli_trace_s": median("cli_trace_s"),
        "trace_serial": state.serial,
        "rounds": state.rounds,
    }


def _collect(pool: WorkerPool, count: int, timeout: float) -> Tally:
    total = Tally()
    deadline = time.monotonic() + timeout
    for conn in pool.conns[:count]:
        while True:
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                raise RuntimeError("a history worker did not finish its window in time")
            message = conn.recv()
            if isinstance(message, Tally):
                total.add(message)
                break
            if not isinstance(message, Progress):
                raise RuntimeError(f"a history worker failed: {message!r}")
    return total


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# ---------------------------------------------------------------------------------------------- fill


def fill(
    pool: WorkerPool,
    workdir: Path,
    label: str,
    config: Path,
    db: Path,
    per_pallet: int,
    close_jobs: bool,
    opts: Options,
    target: int,
    deadline: float,
) -> dict[str, Any]:
    """Grow ``db`` to at least ``target`` log rows; stops short at ``deadline`` (time.monotonic())."""
    have = db_figures(db)["reports"]
    want = target - have
    if want <= 0:
        return {"skipped": f"the database holds {have:,} reports already", "reports": 0}
    gateway = start(workdir, f"gateway-{label}-fill", config, db, "WARNING", opts.start_within, False)
    server = gateway.server
    began = time.monotonic()
    samples: list[dict[str, Any]] = [{"reports": have, "seconds": 0.0, **server.memory_kib()}]
    last = {"at": began, "calls": 0.0, "cpu": server.cpu_seconds()}

    def progress(calls: int) -> None:
        now = time.monotonic()
        if now - last["at"] < 15:
            return
        cpu = server.cpu_seconds()
        rate = (calls - last["calls"]) / (now - last["at"])
        cost = (cpu - last["cpu"]) / (calls - last["calls"]) * 1e6 if calls > last["calls"] else float("nan")
        last.update(at=now, calls=calls, cpu=cpu)
        mem = server.memory_kib()
        samples.append(
            {
                "reports": have + calls,
                "seconds": round(now - began, 1),
                "reports_per_s": round(rate),
                "cpu_us_per_report": round(cost),
                "load_average": loadavg(),
                **mem,
            }
        )
        print(
            f"    {have + calls:>10,} reports  {rate:6,.0f}/s  {cost:5.0f} us CPU/report  "
            f"RSS {mem['VmRSS'] / 1024:6.1f} MiB  peak {mem['VmHWM'] / 1024:6.1f} MiB  (load average {loadavg()})",
            flush=True,
        )

    try:
        tag = _tag()
        groups = _split(opts.lanes, opts.processes)
        stop_at = time.time() + max(0.0, deadline - time.monotonic())
        works = [
            Work(
                gateway.endpoint, f"{tag}f", lanes, per_pallet, close_jobs, opts.refuse_every,
                reports=-(-want // len(groups)), stop_at=stop_at,
            )
            for lanes in groups
        ]  # fmt: skip
        tally = run_work(pool, works, max(600.0, deadline - time.monotonic() + 600), progress)
        seconds = time.monotonic() - began
        mem = server.memory_kib()
    finally:
        server.stop()
    after = db_figures(db)
    stored = after["reports"] - have
    unexpected = sum(tally.unexpected.values())
    result = {
        "reports": stored,
        "calls": tally.calls,
        "seconds": round(seconds, 1),
        "reports_per_s": round(stored / seconds, 1) if seconds else 0.0,
        "units_loaded": tally.units_loaded,
        "units_finished": tally.units_finished,
        "reports_per_unit": round(tally.station_calls / tally.units_loaded, 2) if tally.units_loaded else 0.0,
        "jobs_created": tally.jobs_created,
        "jobs_closed": tally.jobs_closed,
        "refused_on_purpose": tally.refused_on_purpose,
        "unexpected": dict(tally.unexpected),
        "complete": after["reports"] >= target,
        "samples": [*samples, {"reports": after["reports"], "seconds": round(seconds, 1), **mem}],
    }
    if unexpected > max(20, tally.calls // 100):
        raise RuntimeError(f"the fill got {unexpected} unexpected answers: {dict(tally.unexpected)}")
    return result


# ---------------------------------------------------------------------------------------------- a variant


def _db_for(base: Path | None, variant: str, workdir: Path) -> Path:
    if base is None:
        return workdir / variant / "history.db"
    if variant == "open":
        return base
    return base.with_name(f"{base.stem}-{variant}{base.suffix}")


def run_variant(
    pool: WorkerPool,
    workdir: Path,
    variant: str,
    opts: Options,
    keep: Path | None,
    deadline: float,
) -> dict[str, Any]:
    close_jobs = variant == "closed"
    kept = _db_for(keep, variant, workdir)
    sidecar = kept.with_name(kept.name + ".json")
    lanes = opts.lanes
    if kept.exists():
        if not sidecar.exists():
            raise RuntimeError(f"{kept} exists but was not made by the history benchmark (no {sidecar.name})")
        meta = json.loads(sidecar.read_text())
        if meta.get("variant") != variant:
            raise RuntimeError(f"{kept} holds the {meta.get('variant')!r} variant, not {variant!r}")
        if meta["lanes"] != lanes:
            print(f"  {kept} was filled by {meta['lanes']} lanes: using {meta['lanes']}", flush=True)
            lanes = opts.lanes = meta["lanes"]
    base = workdir / variant
    base.mkdir(parents=True, exist_ok=True)
    gwdir = workdir / "gw"  # every gateway's working folder: one PKI, made by the warm-up start
    config = history_config(base / "history.toml", lanes)
    per_pallet = units_per_pallet(config)

    print(f"  {variant}: filling {kept} to {opts.reports:,} reports ...", flush=True)
    # The fill leaves time in the budget for the rounds after it.
    reserve = 60 + opts.rounds * 2 * (opts.warmup + opts.duration + 30)
    filled = fill(pool, gwdir, variant, config, kept, per_pallet, close_jobs, opts, opts.reports, deadline - reserve)
    if "skipped" in filled:
        print(f"    skipped: {filled['skipped']}", flush=True)
    else:
        print(
            f"    filled {filled['reports']:,} reports in {filled['seconds']:.0f} s "
            f"({filled['reports_per_s']:,.0f}/s), "
            f"{filled['units_loaded']:,} units, {filled['jobs_created']:,} jobs ({filled['jobs_closed']:,} closed), "
            f"unexpected answers {sum(filled['unexpected'].values())}",
            flush=True,
        )
        fills = json.loads(sidecar.read_text()).get("fills", []) if sidecar.exists() else []
        fills.append({k: v for k, v in filled.items() if k != "samples"})
        sidecar.write_text(json.dumps({"variant": variant, "lanes": lanes, "fills": fills}, indent=2))

    # The empty state: a database the gateway made and left without a report (not measured).
    empty_db = base / "empty-pristine.db"
    start(
        gwdir, f"gateway-{variant}-empty-made", config, empty_db, opts.log_level, opts.start_within, True
    ).server.stop()
    states = [
        State("empty", empty_db, base / "empty.db", "NO-SUCH-SERIAL"),
        State("after", kept, base / "after.db", db_figures(kept)["serial"] or "NO-SUCH-SERIAL"),
    ]
    # Rounds alternate the states, each on a fresh copy: the pristine databases never change, so the
    # kept one can be measured again later, and the machine's load drifts over both alike.
    for r in range(opts.rounds):
        for state in states:
            figures = measure_round(
                pool, gwdir, f"gateway-{variant}-{state.label}-{r + 1}", config, state, per_pallet, close_jobs, opts
            )
            state.rounds.append(figures)
            _print_round(f"{state.label} round {r + 1}", figures)
    empty, after = (summarize_state(s) for s in states)
    result: dict[str, Any] = {
        "variant": variant,
        "jobs": "closed when finished" if close_jobs else "left open",
        "lanes": lanes,
        "processes": opts.processes,
        "units_per_pallet": per_pallet,
        "database": str(kept) if keep is not None else "(temporary)",
        "fill": filled,
        "empty": empty,
        "after": after,
    }
    result["rows"] = comparison(result)
    print("\n" + history_table(result) + "\n", flush=True)
    return result


def _print_round(label: str, r: dict[str, Any]) -> None:
    print(
        f"    {label}: start-up {r['startup_s']:.2f} s, RSS {r['rss_idle_mib']} MiB, CLI status "
        f"{r['cli_status_s']:.2f} s, trace {r['cli_trace_s']:.2f} s, {r['reports_per_s']:,.0f} reports/s, "
        f"{r['cpu_us_per_report']:.0f} us CPU/report, peak RSS {r['hwm_after_window_mib']} MiB "
        f"(load average {r['load_average']})",
        flush=True,
    )


def comparison(r: dict[str, Any]) -> list[dict[str, Any]]:
    """figure, empty, after, ratio, target (as ratio and direction), met."""
    e, a = r["empty"], r["after"]
    rows = [
        ("start-up s (port + /healthz)", e["startup_s"], a["startup_s"], ("<=", TARGETS["startup"])),
        ("RSS after start MiB (VmRSS)", e["rss_idle_mib"], a["rss_idle_mib"], ("<=", TARGETS["rss"])),
        ("peak RSS after the window MiB (VmHWM)", e["hwm_after_window_mib"], a["hwm_after_window_mib"],
         ("<=", TARGETS["rss"])),
        ("reports/s (steady window)", e["reports_per_s"], a["reports_per_s"], (">=", TARGETS["reports_per_s"])),
        ("server CPU us/report", e["cpu_us_per_report"], a["cpu_us_per_report"], None),
        ("/api/status p50 ms", e["status"]["p50_ms"], a["status"]["p50_ms"], ("<=", TARGETS["status"])),
        ("/api/status p99 ms", e["status"]["p99_ms"], a["status"]["p99_ms"], ("<=", TARGETS["status"])),
        ("/api/status body KiB", e["status"]["kib"], a["status"]["kib"], None),
        ("CLI status s", e["cli_status_s"], a["cli_status_s"], None),
        ("CLI trace s", e["cli_trace_s"], a["cli_trace_s"], None),
        ("database MiB", e["database"]["mib"], a["database"]["mib"], None),
    ]  # fmt: skip
    out = []
    for name, empty, after, target in rows:
        ratio = after / empty if empty else float("nan")
        row: dict[str, Any] = {"figure": name, "empty": empty, "after": after, "ratio": round(ratio, 2)}
        if target is not None:
            op, limit = target
            row["target"] = f"{op} {limit}x"
            row["met"] = bool(ratio <= limit if op == "<=" else ratio >= limit)
        out.append(row)
    return out


def history_table(r: dict[str, Any]) -> str:
    n = r["after"]["database"]["reports"]
    lines = [
        f"| figure ({r['jobs']}) | empty DB | after {n:,} reports | ratio | target |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for row in r["rows"]:
        target = f"{row['target']}: {'met' if row['met'] else '**not met**'}" if "target" in row else ""
        lines.append(
            f"| {row['figure']} | {_num(row['empty'])} | {_num(row['after'])} | {row['ratio']:.2f}x | {target} |"
        )
    return "\n".join(lines)


def _num(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


# ---------------------------------------------------------------------------------------------- entry


def add_options(parser: Any) -> None:
    group = parser.add_argument_group(
        "history benchmark",
        "A fresh database against one after N reports of real units through real jobs (bench/history.py). "
        "Not part of the default run: it takes about as long as the rest (the 1M fill alone ~10 min).",
    )
    group.add_argument("--history", action="store_true", help="run the history benchmark after the other parts")
    group.add_argument(
        "--history-only",
        action="store_true",
        help="run only the history benchmark; the other sections of latest.json/.md are kept from the last run",
    )
    group.add_argument("--history-reports", type=int, default=1_000_000, help="reports in the history (N)")
    group.add_argument(
        "--history-jobs",
        choices=("auto", "open", "closed", "both"),
        default="auto",
        help="finished jobs left open or closed (Jobs.Close); auto: open, then closed if the budget allows",
    )
    group.add_argument(
        "--history-db",
        type=Path,
        default=None,
        help="keep the filled database here (the closed variant: NAME-closed.db beside it) and reuse it: "
        "a database that holds N reports already is not filled again",
    )
    group.add_argument("--history-lanes", type=int, default=40, help="PLC lanes (pallet + 4 stations + 1 session)")
    group.add_argument("--history-processes", type=int, default=4, help="client processes the lanes share")
    group.add_argument("--history-warmup", type=float, default=3.0, help="seconds before the steady window")
    group.add_argument("--history-duration", type=float, default=12.0, help="seconds of the steady window")
    group.add_argument(
        "--history-rounds",
        type=int,
        default=3,
        help="rounds per state, alternating empty and after, each a gateway start on a fresh copy (median)",
    )
    group.add_argument("--history-status-gets", type=int, default=50, help="GET /api/status per state")
    group.add_argument(
        "--history-refuse-every", type=int, default=20, help="turns of a lane between reports refused on purpose"
    )
    group.add_argument("--history-log-level", default="INFO", help="log level of the measured gateways (fill: WARNING)")
    group.add_argument("--history-http-auth", default="", help="USER:PASSWORD for /api/status if it asks for them")
    group.add_argument("--history-budget", type=float, default=1800.0, help="seconds for the history part")


def run(args: Any, workdir: Path) -> dict[str, Any]:
    """The history benchmark: each variant's figures, for latest.json."""
    began = time.monotonic()
    deadline = began + args.history_budget
    opts = Options(
        reports=args.history_reports,
        lanes=args.history_lanes,
        processes=min(args.history_processes, args.history_lanes),
        warmup=args.history_warmup,
        duration=args.history_duration,
        rounds=max(1, args.history_rounds),
        status_gets=args.history_status_gets,
        refuse_every=args.history_refuse_every,
        log_level=args.history_log_level,
        http_auth=args.history_http_auth,
        start_within=300.0,
    )
    keep = args.history_db.resolve() if args.history_db else None
    if keep is not None:
        keep.parent.mkdir(parents=True, exist_ok=True)
    wanted = {"auto": ["open", "closed"], "both": ["open", "closed"]}.get(args.history_jobs, [args.history_jobs])
    print(
        f"\nhistory: {opts.reports:,} reports from {opts.lanes} lanes in {opts.processes} processes, "
        f"variants {', '.join(wanted)}{' (closed if the budget allows)' if args.history_jobs == 'auto' else ''} ...",
        flush=True,
    )
    pool = WorkerPool(opts.processes, target=serve)
    variants: dict[str, Any] = {}
    notes = []
    try:
        for k, variant in enumerate(wanted):
            spent = time.monotonic() - began
            if k and args.history_jobs == "auto" and time.monotonic() + spent / k > deadline:
                notes.append(f"the {variant} variant was skipped: it would not fit --history-budget")
                print(f"  {notes[-1]}", flush=True)
                continue
            variants[variant] = run_variant(pool, workdir / "history", variant, opts, keep, deadline)
    finally:
        pool.close()
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "target_reports": opts.reports,
        "options": asdict(opts),
        "variants": variants,
        "notes": notes,
        "seconds": round(time.monotonic() - began, 1),
    }


def markdown(h: dict[str, Any]) -> list[str]:
    """The history section of latest.md."""
    o = h["options"]
    out = [
        "## History: what a year of reports costs",
        "",
        f"{h['when']}: `python -m bench --history` (bench/history.py). The same gateway on a fresh database and "
        f"after {h['target_reports']:,} reports of real units through real 40-unit jobs ({o['lanes']} PLC lanes, "
        f"each a pallet with its own load, mill, wash and CMM station, in {o['processes']} client processes; one "
        "OPC UA request per pallet turn: scans of the units unloaded before, mill, wash, unload + load). "
        f"{o['rounds']} rounds per state, alternating empty and after, each on a fresh copy of the state's "
        "database: a gateway start (process start until the OPC UA port accepts and /healthz answers), RSS after "
        f"start, GETs of /api/status ({o['status_gets']} per state, pooled) and the CLI (`status`, `trace`) on "
        f"the database as it is, then {o['duration']:.0f} s of closed-loop lanes (after {o['warmup']:.0f} s "
        "warm-up) for reports/s and server CPU, and the peak RSS after them; medians of the rounds. The empty "
        "state is a database the gateway made and left without a report; the window adds its own reports to the "
        f"copy. Measured gateways log at {o['log_level']}, the fill at WARNING. Targets: start-up within 2x, "
        "RSS within 1.5x, reports/s >= 0.9x, "
        "/api/status within 2x.",
        "",
    ]
    for note in h.get("notes", []):
        out += [f"**{note}.**", ""]
    for name, r in h["variants"].items():
        f = r["fill"]
        out += [f"### Finished jobs {r['jobs']} ({name})", ""]
        if "skipped" in f:
            out.append(f"Fill skipped: {f['skipped']} ({r['database']}).")
        else:
            out.append(
                f"Fill: {f['reports']:,} reports in {f['seconds']:.0f} s ({f['reports_per_s']:,.0f} reports/s), "
                f"{f['units_loaded']:,} units loaded ({f['reports_per_unit']} reports per unit), "
                f"{f['units_finished']:,} finished, {f['jobs_created']:,} jobs created, {f['jobs_closed']:,} closed, "
                f"{f['refused_on_purpose']:,} refused on purpose, {sum(f['unexpected'].values())} unexpected answers"
                + ("" if f["complete"] else " (**stopped short by the time budget**)")
                + f"; database {r['database']}."
            )
        d = r["after"]["database"]
        out += [
            "",
            f"After: {d['reports']:,} log rows, {d['units']:,} units, {d['jobs']:,} jobs ({d['open_jobs']:,} not "
            f"closed), {d['mib']} MiB. CLI trace of `{r['after']['trace_serial']}`, a finished unit from the middle "
            "of the history (on the empty database an unknown serial).",
            "",
            history_table(r),
            "",
            "Per round (empty / after): reports/s "
            + ", ".join(
                f"{x['reports_per_s']:,.0f} / {y['reports_per_s']:,.0f}"
                for x, y in zip(r["empty"]["rounds"], r["after"]["rounds"], strict=True)
            )
            + "; start-up s "
            + ", ".join(
                f"{x['startup_s']:.2f} / {y['startup_s']:.2f}"
                for x, y in zip(r["empty"]["rounds"], r["after"]["rounds"], strict=True)
            )
            + "; load average before each: "
            + ", ".join(
                f"{x['load_average']} / {y['load_average']}"
                for x, y in zip(r["empty"]["rounds"], r["after"]["rounds"], strict=True)
            )
            + ".",
            "",
        ]
        if "samples" in f and len(f["samples"]) > 2:
            out += [
                "| fill: reports | reports/s | server CPU us/report | RSS MiB | peak RSS MiB | load average |",
                "| ---: | ---: | ---: | ---: | ---: | --- |",
            ]
            out += [
                f"| {x['reports']:,} | {x.get('reports_per_s', 0):,} | {x.get('cpu_us_per_report', '')} "
                f"| {x['VmRSS'] / 1024:.1f} | {x['VmHWM'] / 1024:.1f} | {x.get('load_average', '')} |"
                for x in f["samples"]
            ]
            out.append("")
    return out
