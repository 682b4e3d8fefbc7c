"""Domain entities to table rows and back. The only place that knows both shapes."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from gateway.jobs.events import (
    JobEvent,
    JobStateChanged,
    JobTargetReached,
    LostAuditActivity,
    LostAuditFlagged,
    LostAuditResolved,
    StepRecorded,
    UnitFinished,
    UnitScrapped,
    UnitsMoved,
    UnitStarted,
)
from gateway.jobs.model import (
    Cost,
    Job,
    JobState,
    PartSpec,
    RoutingSource,
    RoutingTemplate,
    Step,
    StepKind,
    TemplateStatus,
    Unit,
    UnitStatus,
)
from gateway.tracking.floor import OpenCycle, PalletState, StationState

Row = dict[str, Any]


def steps_to_json(steps: tuple[Step, ...]) -> list[dict[str, Any]]:
    return [
        {
            "operation": s.operation,
            "name": s.name,
            "group": s.group,
            "kind": s.kind.value,
            "program": s.program,
            "expected_seconds": s.expected_seconds,
        }
        for s in steps
    ]


def steps_from_json(data: list[dict[str, Any]]) -> tuple[Step, ...]:
    return tuple(
        Step(
            operation=d["operation"],
            name=d["name"],
            group=d["group"],
            kind=StepKind(d["kind"]),
            program=d["program"],
            expected_seconds=d["expected_seconds"],
        )
        for d in data
    )


def spec_row(spec: PartSpec) -> Row:
    return {
        "part": spec.part,
        "revision": spec.revision,
        "default_template_id": spec.default_template_id,
        "template_versions": spec.template_versions,
    }


def spec_from(row: Any) -> PartSpec:
    return PartSpec(row.part, row.revision, row.default_template_id, row.template_versions)


def template_row(t: RoutingTemplate) -> Row:
    return {
        "id": t.id,
        "part": t.part,
        "revision": t.revision,
        "version": t.version,
        "steps": steps_to_json(t.steps),
        "status": t.status.value,
        "created_at": t.created_at,
    }


def template_from(row: Any) -> RoutingTemplate:
    return RoutingTemplate(
        id=row.id,
        part=row.part,
        revision=row.revision,
        version=row.version,
        steps=steps_from_json(row.steps),
        status=TemplateStatus(row.status),
        created_at=row.created_at,
    )


def job_row(job: Job) -> Row:
    return {
        "id": job.id,
        "part": job.part,
        "revision": job.revision,
        "quantity": job.quantity,
        "yield_buffer_percent": job.yield_buffer_percent,
        "due": job.due,
        "priority": job.priority,
        "pallets": list(job.pallets),
        "routing": steps_to_json(job.routing),
        "source": str(job.source),
        "state": job.state.value,
        "held_from": job.held_from.value if job.held_from else None,
        "parent_id": job.parent_id,
        "children": job.children,
        "started": job.started,
        "scrapped": job.scrapped,
        "finished": job.finished,
        "created_at": job.created_at,
        "released_at": job.released_at,
        "closed_at": job.closed_at,
    }


def job_from(row: Any) -> Job:
    return Job(
        id=row.id,
        part=row.part,
        revision=row.revision,
        quantity=row.quantity,
        yield_buffer_percent=row.yield_buffer_percent,
        due=row.due,
        priority=row.priority,
        pallets=tuple(row.pallets),
        routing=steps_from_json(row.routing),
        source=RoutingSource.parse(row.source),
        created_at=row.created_at,
        state=JobState(row.state),
        held_from=JobState(row.held_from) if row.held_from else None,
        parent_id=row.parent_id,
        children=row.children,
        started=row.started,
        scrapped=row.scrapped,
        finished=row.finished,
        released_at=row.released_at,
        closed_at=row.closed_at,
    )


def unit_row(unit: Unit) -> Row:
    return {
        "serial": unit.serial,
        "job_id": unit.job_id,
        "next_step": unit.next_step,
        "status": unit.status.value,
        "started_at": unit.started_at,
        "last_activity": unit.last_activity,
        "station": unit.station,
        "entered_at": unit.entered_at,
        "failed_attempts": unit.failed_attempts,
        "audit_flagged": unit.audit_flagged,
        **asdict(unit.cost),  # the unknown dict copied, never shared with the live unit
    }


def unit_from(row: Any) -> Unit:
    return Unit(
        serial=row.serial,
        job_id=row.job_id,
        next_step=row.next_step,
        status=UnitStatus(row.status),
        started_at=row.started_at,
        last_activity=row.last_activity,
        station=row.station,
        entered_at=row.entered_at,
        failed_attempts=row.failed_attempts,
        audit_flagged=row.audit_flagged,
        cost=Cost(
            elapsed_labor=row.elapsed_labor,
            expected_labor=row.expected_labor,
            elapsed_machine=row.elapsed_machine,
            expected_machine=row.expected_machine,
            unknown_elapsed=row.unknown_elapsed,
            unknown_expected=row.unknown_expected,
            elapsed_wash=row.elapsed_wash,
            expected_wash=row.expected_wash,
            elapsed_inspection=row.elapsed_inspection,
            expected_inspection=row.expected_inspection,
            unknown=dict(row.unknown) if row.unknown is not None else _legacy_unknown(row),
        ),
    )


def _legacy_unknown(row: Any) -> dict[str, int]:
    """A unit stored before unknown times were counted per category: its totals could be any of them,
    so they are counted against labor and machining alike (a report then says those are incomplete)."""
    unknown: dict[str, int] = {}
    if row.unknown_elapsed:
        unknown.update(elapsed_labor=row.unknown_elapsed, elapsed_machining=row.unknown_elapsed)
    if row.unknown_expected:
        unknown.update(expected_labor=row.unknown_expected, expected_machining=row.unknown_expected)
    return unknown


def pallet_row(p: PalletState) -> Row:
    return {
        "id": p.id,
        "station": p.station,
        "arrived_at": p.arrived_at,
        "window_start": p.window_start,
        "units": list(p.units),
    }


def pallet_from(row: Any) -> PalletState:
    return PalletState(row.id, row.station, row.arrived_at, row.window_start, list(row.units))


def station_row(s: StationState) -> Row:
    c = s.cycle
    return {
        "id": s.id,
        "pallet": s.pallet,
        "down": s.down,
        "cycle_pallet": c.pallet if c else None,
        "cycle_program": c.program if c else None,
        "cycle_started_at": c.started_at if c else None,
        "cycle_serials": list(c.serials) if c else None,
    }


def station_from(row: Any) -> StationState:
    cycle = None
    if row.cycle_pallet is not None:
        cycle = OpenCycle(row.cycle_pallet, row.cycle_program, row.cycle_started_at, tuple(row.cycle_serials))
    return StationState(row.id, row.pallet, cycle, row.down)


def event_rows(event: JobEvent, counter: int) -> tuple[str, Row] | None:
    """The history row an event leaves: (table name, row), or None for events kept only in the log."""
    match event:
        case StepRecorded():
            return "unit_scans", {
                "event_counter": counter,
                "serial": event.serial,
                "job_id": event.job,
                "step_index": event.step_index,
                "operation": event.operation,
                "station": event.station,
                "entered_at": event.entered_at,
                "left_at": event.left_at,
                "passed": event.passed,
                "elapsed": event.elapsed,
                "expected": event.expected,
                "labor": event.labor,
                "flags": list(event.flags),
            }
        case JobStateChanged():
            return "job_transitions", {
                "event_counter": counter,
                "job_id": event.job,
                "at": event.at,
                "actor": event.actor,
                "from_state": event.from_state.value if event.from_state else None,
                "to_state": event.to_state.value,
                "reason": event.reason,
            }
        case UnitStarted():
            return _unit_event(counter, event.serial, event.job, "started", event.at, {"station": event.station})
        case UnitFinished():
            return _unit_event(counter, event.serial, event.job, "finished", event.at, {})
        case UnitScrapped():
            return _unit_event(counter, event.serial, event.job, "scrapped", event.at, {"reason": event.reason})
        case LostAuditFlagged():
            return _unit_event(
                counter,
                event.serial,
                event.job,
                "lost_audit_flagged",
                event.at,
                {"station": event.station, "idle_seconds": event.idle_seconds},
            )
        case LostAuditResolved():
            return _unit_event(
                counter,
                event.serial,
                event.job,
                "lost_audit_resolved",
                event.at,
                {"outcome": event.outcome, "actor": event.actor},
            )
        case LostAuditActivity():
            return _unit_event(
                counter, event.serial, event.job, "lost_audit_activity", event.at, {"station": event.station}
            )
        case UnitsMoved():
            return None  # one row per unit: moved_rows
        case JobTargetReached():
            return None  # the job's row says it (finished >= quantity); the event is for OPC UA


def moved_rows(event: UnitsMoved, counter: int) -> list[Row]:
    return [
        _unit_event(counter, serial, event.to_job, "moved", event.at, {"from_job": event.from_job})[1]
        for serial in event.serials
    ]


def _unit_event(counter: int, serial: str, job: str, kind: str, at: Any, detail: dict[str, Any]) -> tuple[str, Row]:
    return "unit_events", {
        "event_counter": counter,
        "serial": serial,
        "job_id": job,
        "kind": kind,
        "at": at,
        "detail": detail,
    }
