"""Reads for people: status, trace, pallet, job, refusals, events, audits.

Straight from the store, so they work while the gateway runs (SQLite WAL readers never take the write
lock) and when it is down. Every function returns plain JSON-able values; the CLI and the HTTP API
render them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Text, cast, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.cell.model import CellModel
from gateway.jobs.model import max_quantity
from gateway.storage import schema as S


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


async def trace(engine: AsyncEngine, model: CellModel | None, serial: str) -> dict[str, Any] | None:
    """A unit's whole history: steps with stations, times, elapsed vs expected; moves; refusals naming it."""
    async with engine.connect() as conn:
        unit = (await conn.execute(select(S.units).where(S.units.c.serial == serial))).first()
        if unit is None:
            return None
        scans = (
            await conn.execute(select(S.unit_scans).where(S.unit_scans.c.serial == serial).order_by(S.unit_scans.c.id))
        ).all()
        events = (
            await conn.execute(
                select(S.unit_events).where(S.unit_events.c.serial == serial).order_by(S.unit_events.c.id)
            )
        ).all()
        job = (await conn.execute(select(S.jobs).where(S.jobs.c.id == unit.job_id))).first()
        pallet = (await conn.execute(select(S.pallets.c.id, S.pallets.c.station, S.pallets.c.units))).all()
        refusals = await _refusals_naming(conn, serial)
    routing = job.routing if job is not None else []
    next_op = routing[unit.next_step]["operation"] if unit.next_step < len(routing) else ""
    on_pallet = next((p for p in pallet if serial in (p.units or [])), None)
    return {
        "serial": serial,
        "job": unit.job_id,
        "part": job.part if job is not None else "",
        "revision": job.revision if job is not None else "",
        "status": unit.status,
        "next_step": next_op,
        "station": unit.station,
        "pallet": on_pallet.id if on_pallet is not None else "",
        "pallet_station": on_pallet.station if on_pallet is not None else "",
        "audit_flagged": unit.audit_flagged,
        "last_activity": _iso(unit.last_activity),
        "elapsed": {
            "labor": unit.elapsed_labor,
            "machine": unit.elapsed_machine,
            "wash": unit.elapsed_wash,
            "inspection": unit.elapsed_inspection,
            "unknown": unit.unknown_elapsed,
        },
        "expected": {
            "labor": unit.expected_labor,
            "machine": unit.expected_machine,
            "wash": unit.expected_wash,
            "inspection": unit.expected_inspection,
            "unknown": unit.unknown_expected,
        },
        # contributions that could not be measured (or were not planned), per category
        "unknown": dict(unit.unknown or {}),
        "steps": [
            {
                "operation": s.operation,
                "job": s.job_id,
                "station": s.station,
                "entered_at": _iso(s.entered_at),
                "left_at": _iso(s.left_at),
                "result": "pass" if s.passed else "fail",
                "elapsed": s.elapsed,
                "expected": s.expected,
                "flags": s.flags,
            }
            for s in scans
        ],
        "events": [{"kind": e.kind, "job": e.job_id, "at": _iso(e.at), **e.detail} for e in events],
        "refusals": refusals,
    }


def _event_row(row: Any) -> dict[str, Any]:
    return {
        "counter": row.counter,
        "at": _iso(row.received_at),
        "source_time": _iso(row.source_time),
        "source": row.source,
        "event_id": row.event_id,
        "kind": row.kind,
        "actor": row.actor,
        "args": row.args,
        "result": row.reason or "ok",
        "message": row.message,
        "outputs": row.answer,
        "anomalies": [f["anomaly"] for f in row.flags or []],
    }


async def _refusals_naming(conn: Any, text: str) -> list[dict[str, Any]]:
    # A coarse text match in SQL (portable), then an exact check on the decoded arguments.
    query = (
        select(S.cell_events)
        .where(S.cell_events.c.reason.is_not(None))
        .where(cast(S.cell_events.c.args, Text).contains(text))
        .order_by(S.cell_events.c.counter)
    )
    rows = (await conn.execute(query)).all()
    return [_event_row(r) for r in rows if _names(r.args, text)]


def _names(args: Any, text: str) -> bool:
    if isinstance(args, dict):
        return any(_names(v, text) for v in args.values())
    if isinstance(args, list):
        return any(_names(v, text) for v in args)
    return bool(args == text)


async def refusals(
    engine: AsyncEngine,
    *,
    since: datetime | None = None,
    station: str | None = None,
    reason: str | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """Refused reports, newest last, each with its readable message."""
    query = select(S.cell_events).where(S.cell_events.c.reason.is_not(None))
    if since is not None:
        query = query.where(S.cell_events.c.received_at >= since)
    if station:
        query = query.where(S.cell_events.c.source == station)
    if reason:
        query = query.where(S.cell_events.c.reason == reason)
    query = query.order_by(S.cell_events.c.counter.desc()).limit(limit)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [_event_row(r) for r in reversed(rows)]


async def events_after(engine: AsyncEngine, after: int = 0, limit: int = 500) -> list[dict[str, Any]]:
    """The event log from counter ``after`` on: how a client catches up."""
    query = select(S.cell_events).where(S.cell_events.c.counter > after).order_by(S.cell_events.c.counter).limit(limit)
    async with engine.connect() as conn:
        return [_event_row(r) for r in (await conn.execute(query)).all()]


async def pallet(engine: AsyncEngine, pallet_id: str) -> dict[str, Any] | None:
    async with engine.connect() as conn:
        row = (await conn.execute(select(S.pallets).where(S.pallets.c.id == pallet_id))).first()
        if row is None:
            return None
        serials = list(row.units or [])
        units = (await conn.execute(select(S.units).where(S.units.c.serial.in_(serials)))).all() if serials else []
        jobs = {
            j.id: j
            for j in (await conn.execute(select(S.jobs).where(S.jobs.c.id.in_({u.job_id for u in units})))).all()
        }
    by_serial = {u.serial: u for u in units}
    out_units = []
    for serial in serials:
        u = by_serial.get(serial)
        if u is None:
            continue
        routing = jobs[u.job_id].routing if u.job_id in jobs else []
        out_units.append(
            {
                "serial": serial,
                "job": u.job_id,
                "part": jobs[u.job_id].part if u.job_id in jobs else "",
                "status": u.status,
                "next_step": routing[u.next_step]["operation"] if u.next_step < len(routing) else "",
            }
        )
    return {
        "pallet": row.id,
        "station": row.station,
        "arrived_at": _iso(row.arrived_at),
        "units": out_units,
    }


async def job(engine: AsyncEngine, job_id: str) -> dict[str, Any] | None:
    async with engine.connect() as conn:
        row = (await conn.execute(select(S.jobs).where(S.jobs.c.id == job_id))).first()
        if row is None:
            return None
        history = (
            await conn.execute(
                select(S.job_transitions).where(S.job_transitions.c.job_id == job_id).order_by(S.job_transitions.c.id)
            )
        ).all()
        per_step = (
            await conn.execute(
                select(S.units.c.next_step, S.units.c.status, func.count())
                .where(S.units.c.job_id == job_id)
                .group_by(S.units.c.next_step, S.units.c.status)
            )
        ).all()
    wip = [0] * len(row.routing)
    for next_step, status, count in per_step:
        if status in ("waiting", "in_step") and next_step < len(wip):
            wip[next_step] += count
    return {
        **_job_counts(row),
        "routing": [{**step, "wip": wip[i]} for i, step in enumerate(row.routing)],
        "routing_source": row.source,
        "parent": row.parent_id,
        "pallets": row.pallets,
        "history": [
            {
                "at": _iso(h.at),
                "from": h.from_state,
                "to": h.to_state,
                "actor": h.actor,
                "reason": h.reason,
            }
            for h in history
        ],
    }


def _job_counts(row: Any) -> dict[str, Any]:
    return {
        "job": row.id,
        "part": row.part,
        "revision": row.revision,
        "state": row.state,
        "quantity": row.quantity,
        "max_quantity": max_quantity(row.quantity, row.yield_buffer_percent),
        "started": row.started,
        "scrapped": row.scrapped,
        "finished": row.finished,
        "wip": row.started - row.scrapped - row.finished,
        "due": _iso(row.due),
        "priority": row.priority,
    }


async def status(
    engine: AsyncEngine, now: datetime, stations: Sequence[tuple[str, str]] | None = None
) -> dict[str, Any]:
    """The cell at a glance: stations, open jobs, WIP, refusals in the last hour, open audits.

    ``stations`` are the configured (id, kind) pairs, in config order: each is listed, also one that has
    never reported (it has no row yet, e.g. a scan station) and is shown idle. Without them, the stations
    the database knows are listed.
    """
    from datetime import timedelta

    async with engine.connect() as conn:
        rows = {r.id: r for r in (await conn.execute(select(S.stations).order_by(S.stations.c.id))).all()}
        pallets = {p.id: p for p in (await conn.execute(select(S.pallets))).all()}
        jobs = (await conn.execute(select(S.jobs).where(S.jobs.c.state != "Closed").order_by(S.jobs.c.id))).all()
        refused = (
            await conn.execute(
                select(S.cell_events.c.reason, func.count())
                .where(S.cell_events.c.reason.is_not(None))
                .where(S.cell_events.c.received_at >= now - timedelta(hours=1))
                .group_by(S.cell_events.c.reason)
            )
        ).all()
        audits = (
            await conn.execute(select(func.count()).select_from(S.units).where(S.units.c.audit_flagged.is_(True)))
        ).scalar_one()
        unit_jobs = dict(
            (
                await conn.execute(
                    select(S.units.c.serial, S.units.c.job_id).where(S.units.c.status.in_(("waiting", "in_step")))
                )
            ).all()
        )
        counter = (await conn.execute(select(func.coalesce(func.max(S.cell_events.c.counter), 0)))).scalar_one()
    configured = list(stations) if stations is not None else [(station_id, "") for station_id in rows]
    station_rows: list[dict[str, Any]] = []
    for station_id, kind in configured:
        s = rows.get(station_id)
        if s is None:
            station_rows.append(
                {"station": station_id, "kind": kind, "state": "idle", "pallet": "", "jobs": [], "program": ""}
            )
            continue
        on_pallet = pallets[s.pallet].units if s.pallet in pallets else []
        station_rows.append(
            {
                "station": s.id,
                "kind": kind,
                "state": "running" if s.cycle_pallet else ("down" if s.down else ("occupied" if s.pallet else "idle")),
                "pallet": s.pallet,
                "jobs": sorted({unit_jobs[u] for u in on_pallet if u in unit_jobs}),
                "program": s.cycle_program or "",
            }
        )
    job_rows = [_job_counts(j) for j in jobs]
    return {
        "counter": counter,
        "stations": station_rows,
        "jobs": job_rows,
        "wip": sum(j["wip"] for j in job_rows),
        "refusals_last_hour": {reason: count for reason, count in refused},
        "open_audits": audits,
    }


async def audits(engine: AsyncEngine, now: datetime) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(S.units).where(S.units.c.audit_flagged.is_(True)).order_by(S.units.c.last_activity)
            )
        ).all()
    return [
        {
            "serial": u.serial,
            "job": u.job_id,
            "station": u.station,
            "last_activity": _iso(u.last_activity),
            "idle_days": round((now - u.last_activity).total_seconds() / 86400, 1),
        }
        for u in rows
    ]
