"""Reads for the ERP: bookings, workorders, schedules, cost reports, the audit trail, finished serials.

Reads go to the store, not to the writer's model: the store holds exactly what was committed (and so
acknowledged), and WAL readers never block the writer. Lists are pages in a stable order (by id)
with a cursor: ``after`` = the last id of the previous page.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.config import CellConfig
from gateway.errors import Reason, Refused
from gateway.jobs.model import UnitStatus, target_reached
from gateway.orders.costs import TIME_FIELDS, OverrunFinding, overrun_report
from gateway.storage import orders_rows as O
from gateway.storage import schema as S

Item = dict[str, Any]


def capacity_seconds(config: CellConfig, expected_hours: float) -> dict[str, float]:
    """Seconds of work each resource group can do in a period of ``expected_hours``.

    A group's daily capacity is its stations x ``capacity.hours_per_day`` x ``capacity.efficiency``
    (:meth:`CellConfig.group_capacity_hours`); a period shorter or longer than a day gets its share.
    """
    return {group: config.group_capacity_hours(group) * 3600.0 * expected_hours / 24.0 for group in config.groups()}


def _page(items: list[Item], limit: int, key: str) -> tuple[list[Item], str | None]:
    if len(items) > limit:
        items = items[:limit]
        return items, str(items[-1][key])
    return items, None


# ---------------------------------------------------------------------------------------- bookings
def _booking_item(row: Any, parts: Sequence[Any]) -> Item:
    return {
        "id": row.booking_id,
        "due": row.due_date,
        "priority": row.priority,
        "scheduled": row.scheduled,
        "parts": {p.part_name: p.quantity for p in parts},
        "casting": parts[0].casting if parts else "",
    }


async def _bookings(conn: AsyncConnection, query: Select[Any]) -> list[Item]:
    rows = (await conn.execute(query)).all()
    ids = [r.booking_id for r in rows]
    parts: dict[str, list[Any]] = {}
    if ids:
        found = await conn.execute(
            select(S.booking_parts).where(S.booking_parts.c.booking_id.in_(ids)).order_by(S.booking_parts.c.part_name)
        )
        for p in found:
            parts.setdefault(p.booking_id, []).append(p)
    return [_booking_item(r, parts.get(r.booking_id, [])) for r in rows]


async def list_bookings(
    conn: AsyncConnection,
    *,
    scheduled: bool | None = None,
    due_before: date | None = None,
    part: str | None = None,
    after: str | None = None,
    limit: int = 100,
) -> tuple[list[Item], str | None]:
    b = S.bookings.c
    query = select(S.bookings).order_by(b.booking_id).limit(limit + 1)
    if scheduled is not None:
        query = query.where(b.scheduled == scheduled)
    if due_before is not None:
        query = query.where(b.due_date < due_before)
    if part is not None:
        query = query.where(
            b.booking_id.in_(select(S.booking_parts.c.booking_id).where(S.booking_parts.c.part_name == part))
        )
    if after is not None:
        query = query.where(b.booking_id > after)
    return _page(await _bookings(conn, query), limit, "id")


async def get_booking(conn: AsyncConnection, booking_id: str) -> Item:
    found = await _bookings(conn, select(S.bookings).where(S.bookings.c.booking_id == booking_id))
    if not found:
        raise Refused(Reason.NOT_FOUND, f"no booking {booking_id!r}")
    return found[0]


async def scheduled_without_bookings(conn: AsyncConnection) -> dict[str, int]:
    t = S.scheduled_parts_without_bookings.c
    rows = await conn.execute(select(S.scheduled_parts_without_bookings).order_by(t.part_name))
    return {r.part_name: r.quantity for r in rows}


async def list_scheduled_without_bookings(
    conn: AsyncConnection, *, after: str | None = None, limit: int = 100
) -> tuple[list[Item], str | None]:
    t = S.scheduled_parts_without_bookings.c
    query = select(S.scheduled_parts_without_bookings).order_by(t.part_name).limit(limit + 1)
    if after is not None:
        query = query.where(t.part_name > after)
    items = [{"part": r.part_name, "quantity": r.quantity} for r in await conn.execute(query)]
    return _page(items, limit, "part")


# -------------------------------------------------------------------------------------- workorders
async def _workorders(conn: AsyncConnection, query: Select[Any]) -> list[Item]:
    rows = (await conn.execute(query)).all()
    ids = [r.workorder_id for r in rows]
    parts: dict[str, dict[str, int]] = {}
    serials: dict[str, dict[str, list[tuple[int, str]]]] = {}
    if ids:
        p = S.workorder_parts.c
        for row in await conn.execute(select(S.workorder_parts).where(p.workorder_id.in_(ids)).order_by(p.part_name)):
            parts.setdefault(row.workorder_id, {})[row.part_name] = row.quantity
        s = S.workorder_serials.c
        for row in await conn.execute(select(S.workorder_serials).where(s.workorder_id.in_(ids))):
            serials.setdefault(row.workorder_id, {}).setdefault(row.part_name, []).append((row.position, row.serial))
    items = []
    for r in rows:
        quantities = parts.get(r.workorder_id, {})
        assigned = {
            part: [serial for _, serial in sorted(found)] for part, found in serials.get(r.workorder_id, {}).items()
        }
        items.append(
            {
                "id": r.workorder_id,
                "due": r.due_date,
                "priority": r.priority,
                "filled": r.filled,
                "filled_at": r.filled_at,
                "parts": quantities,
                "serials": dict(sorted(assigned.items())),
                "remaining": {part: max(0, q - len(assigned.get(part, []))) for part, q in quantities.items()},
            }
        )
    return items


async def list_workorders(
    conn: AsyncConnection,
    *,
    filled: bool | None = None,
    due_before: date | None = None,
    part: str | None = None,
    after: str | None = None,
    limit: int = 100,
) -> tuple[list[Item], str | None]:
    w = S.workorders.c
    query = select(S.workorders).order_by(w.workorder_id).limit(limit + 1)
    if filled is not None:
        query = query.where(w.filled == filled)
    if due_before is not None:
        query = query.where(w.due_date < due_before)
    if part is not None:
        p = S.workorder_parts.c
        inner = select(p.workorder_id).where(p.part_name == part)
        if filled is not None:
            inner = inner.where(p.filled == filled)  # the (Filled, PartName) index
        query = query.where(w.workorder_id.in_(inner))
    if after is not None:
        query = query.where(w.workorder_id > after)
    return _page(await _workorders(conn, query), limit, "id")


async def get_workorder(conn: AsyncConnection, workorder_id: str) -> Item:
    found = await _workorders(conn, select(S.workorders).where(S.workorders.c.workorder_id == workorder_id))
    if not found:
        raise Refused(Reason.NOT_FOUND, f"no workorder {workorder_id!r}")
    return found[0]


# ------------------------------------------------------------------------------------ cost reports
def _report_item(report: Any, serials: list[str]) -> Item:
    return {
        "workorder_id": report.workorder_id,
        "filled_at": report.filled_at,
        "serials": serials,
        **{name: getattr(report, name) for name in TIME_FIELDS.values()},
        "unknown": report.unknown,
        "by_part": report.by_part,
    }


async def cost_report(conn: AsyncConnection, workorder_id: str) -> Item:
    workorder = (await conn.execute(select(S.workorders).where(S.workorders.c.workorder_id == workorder_id))).first()
    if workorder is None:
        raise Refused(Reason.NOT_FOUND, f"no workorder {workorder_id!r}")
    row = (
        await conn.execute(select(S.workorder_results).where(S.workorder_results.c.workorder_id == workorder_id))
    ).first()
    # A workorder an order update raised after it filled is unfilled again: the report it had no longer
    # covers it, and a new one comes when it fills again.
    if row is None or not workorder.filled:
        raise Refused(
            Reason.INVALID_TRANSITION, f"workorder {workorder_id!r} is not filled; its cost report comes then"
        )
    s = S.workorder_serials.c
    serials = [
        r.serial
        for r in await conn.execute(
            select(s.serial).where(s.workorder_id == workorder_id).order_by(s.part_name, s.position)
        )
    ]
    return _report_item(row, serials)


async def overruns(
    conn: AsyncConnection,
    *,
    min_workorders: int,
    threshold: float,
    majority: float,
    filled_since: datetime | None = None,
) -> tuple[int, tuple[OverrunFinding, ...]]:
    """How many filled workorders were looked at, and the findings over them."""
    filled = select(S.workorders.c.workorder_id).where(S.workorders.c.filled)
    query = select(S.workorder_results).where(S.workorder_results.c.workorder_id.in_(filled))
    if filled_since is not None:
        query = query.where(S.workorder_results.c.filled_at >= filled_since)
    reports = [O.report_from(row, ()) for row in await conn.execute(query)]
    return len(reports), overrun_report(reports, min_workorders=min_workorders, threshold=threshold, majority=majority)


# --------------------------------------------------------------------------------------- schedules
async def _schedules(conn: AsyncConnection, query: Select[Any]) -> list[Item]:
    rows = (await conn.execute(query)).all()
    ids = [r.schedule_id for r in rows]
    lines: dict[str, list[Any]] = {}
    if ids:
        c = S.schedule_lines.c
        for line in await conn.execute(select(S.schedule_lines).where(c.schedule_id.in_(ids)).order_by(c.part_name)):
            lines.setdefault(line.schedule_id, []).append(line)
    return [
        {
            "id": r.schedule_id,
            "created_at": r.created_at,
            "expected_hours": r.expected_hours,
            "due_before": r.due_before,
            "bookings_scheduled": list(r.bookings_scheduled),
            "jobs": [
                {"part": line.part_name, "quantity": line.quantity, "job_id": line.job_id}
                for line in lines.get(r.schedule_id, [])
                if line.quantity
            ],
            "demand": {line.part_name: line.demand for line in lines.get(r.schedule_id, [])},
            "scheduled_without_bookings": dict(r.scheduled_without_bookings),
            "parts_without_routing": list(r.parts_without_routing),
        }
        for r in rows
    ]


async def list_schedules(
    conn: AsyncConnection, *, after: str | None = None, limit: int = 100
) -> tuple[list[Item], str | None]:
    c = S.schedules.c
    query = select(S.schedules).order_by(c.schedule_id).limit(limit + 1)
    if after is not None:
        query = query.where(c.schedule_id > after)
    return _page(await _schedules(conn, query), limit, "id")


async def get_schedule(conn: AsyncConnection, schedule_id: str) -> Item:
    found = await _schedules(conn, select(S.schedules).where(S.schedules.c.schedule_id == schedule_id))
    if not found:
        raise Refused(Reason.NOT_FOUND, f"no schedule {schedule_id!r}")
    return found[0]


# ------------------------------------------------------------------------------------------- audit
async def list_audit(
    conn: AsyncConnection,
    *,
    subject: str | None = None,
    action: str | None = None,
    after: int | None = None,
    limit: int = 100,
) -> tuple[list[Item], str | None]:
    a = S.order_audit.c
    query = select(S.order_audit).order_by(a.id).limit(limit + 1)
    if subject is not None:
        query = query.where(a.subject == subject)
    if action is not None:
        query = query.where(a.action == action)
    if after is not None:
        query = query.where(a.id > after)
    items = [
        {
            "id": r.id,
            "at": r.at,
            "actor": r.actor,
            "action": r.action,
            "subject": r.subject,
            "reason": r.reason,
            "before": r.before,
            "after": r.after,
            "event_counter": r.event_counter,
        }
        for r in await conn.execute(query)
    ]
    return _page(items, limit, "id")


# --------------------------------------------------------------------------------- jobs and serials
async def finished_serials(
    conn: AsyncConnection, *, part: str | None = None, after: str | None = None, limit: int = 100
) -> tuple[list[Item], str | None]:
    """Finished serials in no workorder yet: what a supervisor fills from."""
    u, j, w = S.units.c, S.jobs.c, S.workorder_serials.c
    query = (
        select(u.serial, u.job_id, u.last_activity, j.part, j.revision)
        .join(S.jobs, j.id == u.job_id)
        .outerjoin(S.workorder_serials, w.serial == u.serial)
        .where(u.status == UnitStatus.FINISHED.value, w.serial.is_(None))
        .order_by(u.serial)
        .limit(limit + 1)
    )
    if part is not None:
        query = query.where(j.part == part)
    if after is not None:
        query = query.where(u.serial > after)
    items = [
        {"serial": r.serial, "job_id": r.job_id, "part": r.part, "revision": r.revision, "finished_at": r.last_activity}
        for r in await conn.execute(query)
    ]
    return _page(items, limit, "serial")


def _job_item(r: Any) -> Item:
    return {
        "id": r.id,
        "part": r.part,
        "revision": r.revision,
        "state": r.state,
        "quantity": r.quantity,
        "started": r.started,
        "finished": r.finished,
        "scrapped": r.scrapped,
        "wip": r.started - r.scrapped - r.finished,
        "target_reached": target_reached(r.finished, r.quantity),
        "due": r.due,
        "priority": r.priority,
        "created_at": r.created_at,
    }


async def list_jobs(
    conn: AsyncConnection,
    *,
    state: str | None = None,
    part: str | None = None,
    after: str | None = None,
    limit: int = 100,
) -> tuple[list[Item], str | None]:
    j = S.jobs.c
    query = select(S.jobs).order_by(j.id).limit(limit + 1)
    if state is not None:
        query = query.where(j.state == state)
    if part is not None:
        query = query.where(j.part == part)
    if after is not None:
        query = query.where(j.id > after)
    return _page([_job_item(r) for r in await conn.execute(query)], limit, "id")


async def get_job(conn: AsyncConnection, job_id: str) -> Item:
    row = (await conn.execute(select(S.jobs).where(S.jobs.c.id == job_id))).first()
    if row is None:
        raise Refused(Reason.NOT_FOUND, f"job {job_id!r} does not exist")
    return _job_item(row)
