"""Routes for people and monitoring: ``/`` (status page), ``/api/status``, ``/metrics``, ``/healthz``.

The page is one static HTML file with a small script that polls ``/api/status`` every second and
redraws only when the event-log counter moved; no build step, nothing to install on the screen.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from importlib import resources
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.http.metrics import CONTENT_TYPE, Metrics
from gateway.service.views import CellView
from gateway.service.writer import Writer, store_message
from gateway.storage import queries
from gateway.storage.database import unwritable

# The writer is "stalled" when commands wait and nothing was committed for this long.
STALL_SECONDS = 10.0
# /healthz answers within this budget, whatever the database does.
HEALTH_BUDGET_SECONDS = 1.0
# A commit waiting longer than this for the database (a held write lock, a stuck disk) is reported.
SLOW_COMMIT_SECONDS = 2.0
# A failed commit is the answer while PLCs are still being refused. Once nothing is queued, nothing is
# committing and this long has passed since, it is history (a lock held by a nightly backup must not
# keep /healthz failing, and a liveness probe restarting the gateway, all night): reported, not failing.
FAILURE_MEMORY_SECONDS = 30.0


def live_status(view: CellView, now: datetime) -> dict[str, Any]:
    """The cell from the writer's committed view: what the shop-floor screen shows."""
    stations = [
        {
            "station": st.id,
            "kind": st.kind,
            "state": st.state,
            "pallet": st.pallet,
            "jobs": list(st.jobs),
            "program": st.cycle_program,
        }
        for _, st in sorted(view.stations.items())
    ]
    jobs = []
    for job in sorted((view.jobs[j] for j in view.working if j in view.jobs), key=lambda j: (-j.priority, j.id)):
        jobs.append(
            {
                "job": job.id,
                "part": job.part,
                "revision": job.revision,
                "state": job.state.value,
                "quantity": job.quantity,
                "max_quantity": job.max_quantity,
                "started": job.started,
                "scrapped": job.scrapped,
                "finished": job.finished,
                "wip": job.wip,
                "target_reached": job.target_reached,
                "wip_by_step": [{"operation": s.operation, "wip": s.wip} for s in job.wip_by_step],
            }
        )
    audits = [
        {"serial": a.serial, "job": a.job, "idle_days": round((now - a.last_activity).total_seconds() / 86400, 1)}
        for a in view.audits
    ]
    return {
        "counter": view.counter,
        "now": now.isoformat(),
        "stations": stations,
        "jobs": jobs,
        "wip": sum(j["wip"] for j in jobs),
        "jobs_done": len(view.done),  # counted, not listed: a year of jobs nobody closed
        "open_audits": audits,
    }


def router(writer: Writer, engine: AsyncEngine, metrics: Metrics, opcua_listening: Any, clock: Any) -> APIRouter:
    routes = APIRouter()
    page = resources.files("gateway.http").joinpath("status.html").read_text(encoding="utf-8")
    progress: dict[str, float] = {"counter": writer.counter, "at": time.monotonic()}

    @routes.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def status_page() -> HTMLResponse:
        return HTMLResponse(page)

    @routes.get("/api/status", tags=["status"], summary="The cell now: stations, jobs, WIP, refusals, audits")
    async def status(refusals: int = 15) -> dict[str, Any]:
        data = live_status(writer.view, clock.now())
        data["refusals"] = await queries.refusals(engine, limit=max(0, min(refusals, 100)))
        return data

    @routes.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @routes.get("/healthz", tags=["status"], summary="Reports being stored, OPC UA listening, writer not stalled")
    async def healthz() -> JSONResponse:
        return await health(writer, engine, opcua_listening, progress)

    return routes


async def health(writer: Writer, engine: AsyncEngine, opcua_listening: Any, progress: dict[str, float]) -> JSONResponse:
    """What a PLC would get now, within :data:`HEALTH_BUDGET_SECONDS`; never writes to the database.

    ``database`` is a read of ``gateway_meta`` plus the writer's own last attempt to commit: when
    reports cannot be stored, the store's message says why ("database or disk is full", "attempt to
    write a readonly database", "database is locked").
    """
    checks = {
        "database": await _database(writer, engine),
        "opcua": "ok" if opcua_listening() else "not listening",
        "writer": _writer(writer, progress),
    }
    healthy = all(v == "ok" for v in checks.values())
    body: dict[str, Any] = {"status": "ok" if healthy else "failing", "checks": checks}
    last = writer.last_commit
    if last is not None and not last.ok:
        body["last_commit_failed"] = {"error": last.error, "seconds_ago": round(time.monotonic() - last.at, 1)}
    return JSONResponse(body, status_code=200 if healthy else 503)


async def _database(writer: Writer, engine: AsyncEngine) -> str:
    problems = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HEALTH_BUDGET_SECONDS
    # File permissions in a thread, beside the read below: a stat on a stalled network filesystem
    # must not hold the event loop the PLCs are served on.
    permissions = asyncio.ensure_future(asyncio.to_thread(unwritable, engine.url))
    try:
        async with asyncio.timeout_at(deadline):
            read_only = await asyncio.shield(permissions)
    except TimeoutError:
        read_only = f"its file permissions could not be read within {HEALTH_BUDGET_SECONDS} s"
    if read_only is not None:
        problems.append(f"reports cannot be stored: {read_only}")
    failing = writer.writes_failing
    last = writer.last_commit
    settled = (
        last is not None
        and not writer.queue_depth
        and not writer.commit_waiting
        and time.monotonic() - last.at > FAILURE_MEMORY_SECONDS
    )
    if failing is not None and last is not None and not settled:
        since = time.monotonic() - (last.failing_since or last.at)
        queued = f", {writer.queue_depth} commands queued" if writer.queue_depth else ""
        problems.append(f"reports cannot be stored: {failing} (failing for {since:.0f} s{queued})")
    waiting = writer.commit_waiting
    if waiting >= SLOW_COMMIT_SECONDS:
        problems.append(f"a commit has waited {waiting:.1f} s for the database ({writer.queue_depth} commands queued)")
    try:
        async with asyncio.timeout_at(max(deadline, loop.time() + 0.1)):
            async with engine.connect() as conn:
                await conn.execute(text("SELECT count(*) FROM gateway_meta"))
    except TimeoutError:
        problems.append(f"not readable: no answer within {HEALTH_BUDGET_SECONDS} s")
    except Exception as exc:  # any failure is the answer
        problems.append(f"not readable: {store_message(exc)}")
    return "; ".join(problems) or "ok"


def _writer(writer: Writer, progress: dict[str, float]) -> str:
    if writer.counter != progress["counter"] or not writer.queue_depth:
        progress.update(counter=writer.counter, at=time.monotonic())
    stalled = time.monotonic() - progress["at"]
    if stalled < STALL_SECONDS:
        return "ok"
    return f"stalled for {stalled:.0f} s with {writer.queue_depth} queued"
