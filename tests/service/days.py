"""Recorded production days (tests/data/days/*.jsonl) played through the writer on a real SQLite file."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from gateway.cell.codec import decode
from gateway.storage import schema as S
from gateway.tracking.reports import REPORT_TYPES
from tests.service.harness import Cell, whole_book

DAYS = Path(__file__).resolve().parents[1] / "data" / "days"


def read_day(path: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [line for line in lines if "cmd" in line]


def to_command(line: dict[str, Any], cell: Cell) -> Any:
    args = {k: v for k, v in line.items() if k not in ("after", "cmd", "note", "station", "event_id", "source_offset")}
    source_time = None
    if "source_offset" in line:
        source_time = cell.clock.now() + timedelta(seconds=line["source_offset"])
    if line["cmd"] in REPORT_TYPES:
        return decode(line["cmd"], line["station"], line["event_id"], args, source_time)
    return decode(line["cmd"], "", "", args, None)


async def play(cell: Cell, day: list[dict[str, Any]]) -> list[list[Any]]:
    answers = []
    for line in day:
        cell.clock.advance(line["after"])
        answer = await cell.send(to_command(line, cell))
        answers.append(
            [
                line.get("event_id", line["cmd"]),
                answer.reason.value if answer.reason else "ok",
                [f.anomaly.value for f in answer.flags],
                answer.replayed,
                answer.outputs,
            ]
        )
    return answers


async def summary(cell: Cell, answers: list[list[Any]]) -> dict[str, Any]:
    jobs, units = await whole_book(cell)  # closed jobs and finished units may have left memory
    async with cell.writer.store.engine.connect() as conn:
        scans = (await conn.execute(select(S.unit_scans).order_by(S.unit_scans.c.id))).all()
    return {
        "answers": answers,
        "jobs": {
            j.id: {
                "state": j.state.value,
                "quantity": j.quantity,
                "started": j.started,
                "scrapped": j.scrapped,
                "finished": j.finished,
                "wip": j.wip,
            }
            for j in sorted(jobs.values(), key=lambda j: j.id)
        },
        "units": {
            u.serial: {
                "job": u.job_id,
                "status": u.status.value,
                "next_step": u.next_step,
                "elapsed_labor": round(u.cost.elapsed_labor, 3),
                "expected_labor": u.cost.expected_labor,
                "elapsed_machine": round(u.cost.elapsed_machine, 3),
                "expected_machine": u.cost.expected_machine,
                "elapsed_wash": round(u.cost.elapsed_wash, 3),
                "expected_wash": u.cost.expected_wash,
                "elapsed_inspection": round(u.cost.elapsed_inspection, 3),
                "expected_inspection": u.cost.expected_inspection,
                "unknown_elapsed": u.cost.unknown_elapsed,
                "unknown": dict(sorted(u.cost.unknown.items())),
            }
            for u in sorted(units.values(), key=lambda u: u.serial)
        },
        "scans": [
            [
                s.serial,
                s.job_id,
                s.operation,
                s.station,
                "pass" if s.passed else "fail",
                None if s.elapsed is None else round(s.elapsed, 3),
                s.expected,
                s.flags,
            ]
            for s in scans
        ],
    }
