"""A benchmark PLC: one asyncua client in its own process, calling station methods in a closed loop.

Each call waits for its answer (for the gateway: after the report is committed) before the next one;
calls alternate PalletArrived and PalletDeparted of the worker's own pallet at its own station, each
with a new EventId and a Null SourceTime. Workers are forked once and take jobs over a pipe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from array import array
from dataclasses import dataclass
from multiprocessing.connection import Connection

from asyncua import Client, ua

NS_URI = "urn:cell-gateway"


@dataclass(frozen=True, slots=True)
class Job:
    endpoint: str
    tag: str  # makes EventIds unique across runs against one database
    start_at: float  # wall clock (time.time()): every worker starts its loop at this instant
    warmup: float  # seconds of calls not measured
    duration: float  # seconds measured; 0 = run ``calls`` calls instead
    calls: int = 0
    per_request: int = 1  # station method calls per OPC UA Call request (the memory run sends several)
    sessions: int = 1  # OPC UA sessions in this process, each with its own station (B<worker + s * stride>)
    stride: int = 0  # station index step between a worker's sessions (the number of workers)


@dataclass(frozen=True, slots=True)
class Outcome:
    worker: int
    calls: int  # answered calls completed inside the measured window (or all, for a count job)
    errors: int
    latencies_ms: bytes  # array('f') of the measured calls' latencies
    seconds: float  # time the measured calls took (count job) or the window


def serve(worker: int, conn: Connection) -> None:
    """The worker process: run jobs until told to quit."""
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    while True:
        message = conn.recv()
        if message is None:
            return
        try:
            conn.send(asyncio.run(_run(worker, message)))
        except Exception as exc:  # reported to the orchestrator, which fails the run
            conn.send(exc)


async def _run(worker: int, job: Job) -> Outcome:
    if job.sessions == 1:
        return await _session(worker, worker, job)
    outcomes = await asyncio.gather(*(_session(worker, worker + s * job.stride, job) for s in range(job.sessions)))
    latencies = b"".join(o.latencies_ms for o in outcomes)
    return Outcome(
        worker,
        sum(o.calls for o in outcomes),
        sum(o.errors for o in outcomes),
        latencies,
        max(o.seconds for o in outcomes),
    )


async def _session(worker: int, index: int, job: Job) -> Outcome:
    client = Client(job.endpoint, timeout=60, watchdog_intervall=30.0)  # a loaded server is not a dead one
    await client.connect()
    try:
        ns = await client.get_namespace_index(NS_URI)
        station = f"Cell/Stations/B{index:03d}"
        pallet = ua.Variant(f"X{index:03d}", ua.VariantType.String)
        null = ua.Variant(None, ua.VariantType.Null)
        obj = ua.NodeId(station, ns)
        methods = [ua.NodeId(f"{station}/PalletArrived", ns), ua.NodeId(f"{station}/PalletDeparted", ns)]
        call = client.uaclient.call
        latencies = array("f")
        errors = 0
        n = 0
        await asyncio.sleep(max(0.0, job.start_at - time.time()))
        measure_from = job.start_at + job.warmup
        measure_to = measure_from + job.duration
        counted = 0
        first = last = 0.0
        while True:
            requests = []
            for _ in range(job.per_request):
                requests.append(
                    ua.CallMethodRequest(
                        ObjectId=obj,
                        MethodId=methods[n % 2],
                        InputArguments=[ua.Variant(f"{job.tag}-{index}-{n}", ua.VariantType.String), pallet, null],
                    )
                )
                n += 1
            started = time.perf_counter()
            results = await call(requests)
            ended = time.perf_counter()
            errors += sum(1 for result in results if not result.StatusCode.is_good())
            if job.duration:
                now = time.time()
                if now >= measure_to:
                    break
                if now >= measure_from:
                    latencies.append((ended - started) * 1000)
                    counted += len(requests)
            else:
                if not first:
                    first = started
                last = ended
                latencies.append((ended - started) * 1000)
                counted += len(requests)
                if n >= job.calls:
                    break
        seconds = job.duration if job.duration else last - first
        return Outcome(worker, counted, errors, latencies.tobytes(), seconds)
    finally:
        await client.disconnect()
