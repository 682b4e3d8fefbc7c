"""Reads for people: trace a serial, list refusals. Safe while the gateway runs (WAL readers)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.storage import schema as S
from gateway.tracking.model import CellModel


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
    routing = job.routing if job is not None else []
    next_op = routing[unit.next_step]["operation"] if unit.next_step < len(routing) else ""
    return {
        "serial": serial,
        "job": unit.job_id,
        "part": job.part if job is not None else "",
        "revision": job.revision if job is not None else "",
        "status": unit.status,
        "next_step": next_op,
        "station": unit.station,
        "audit_flagged": unit.audit_flagged,
        "elapsed": {"labor": unit.elapsed_labor, "machine": unit.elapsed_machine, "unknown": unit.unknown_elapsed},
        "expected": {"labor": unit.expected_labor, "machine": unit.expected_machine, "unknown": unit.unknown_expected},
        "steps": [
            {
                "operation": s.operation,
                "job": s.job_id,
                "station": s.station,
                "entered_at": s.entered_at.isoformat() if s.entered_at else None,
                "left_at": s.left_at.isoformat(),
                "result": "pass" if s.passed else "fail",
                "elapsed": s.elapsed,
                "expected": s.expected,
                "flags": s.flags,
            }
            for s in scans
        ],
        "events": [{"kind": e.kind, "job": e.job_id, "at": e.at.isoformat(), **e.detail} for e in events],
    }
