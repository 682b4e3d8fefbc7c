"""After a simulated run: does the gateway's database agree with what the simulated cell did?

Read with the stdlib ``sqlite3`` (a WAL reader never blocks the gateway). The checks:

- every acknowledged report is in ``cell_events`` exactly once, with the same kind, arguments and
  answer (Good or the same refusal, the same serials), and every report of this run that the log
  holds was acknowledged (nothing committed behind a PLC's back, nothing counted twice);
- a tag PLC's writes caused exactly the edges it meant (arrivals, cycle starts and ends, departures);
- per job: started, scrapped, finished and WIP equal the units the job holds (WIP = started - scrapped
  - finished), started - scrapped never exceeds the cap, and the counts the gateway publishes over
  OPC UA are the stored ones;
- per unit: its status and its history (job, operation, station, pass/fail, in order) are what the
  simulation did; its passes follow its routing step by step (none skipped, none passed twice); and
  each unit scan points at an accepted report of that station in the log.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import Reason

# The one import of the domain: the cap (ordered + yield buffer) of every job, to check started net of
# scrap against. The gateway publishes it as the job's MaxQuantity over OPC UA only while the job is in
# the address space, and a done job is not published again after a restart (a run with faults ends
# with jobs whose counts were never read back); the database stores the quantity and the buffer, not
# the cap; the ERP API's max_quantity is served over HTTP, which a simulated gateway runs without.
# Until the cap is published for every job, the cap is computed here as the gateway computes it.
from gateway.jobs.model import max_quantity
from gateway.opcua.status import STATUS_OF
from simulators.ledger import Ack
from simulators.model import SimResult, StepDone

SCAN_EVENT_KINDS = frozenset(
    {"LoadCompleted", "CycleEnded", "CycleStarted", "PalletDeparted", "PalletArrived", "ScanOut"}
)
LIVE = ("waiting", "in_step")


@dataclass(slots=True)
class Reconciliation:
    checked: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def fail(self, text: str) -> None:
        self.failures.append(text)

    def report(self, limit: int = 20) -> str:
        lines = [f"{name}: {count}" for name, count in sorted(self.checked.items())]
        if self.failures:
            lines.append(f"{len(self.failures)} failure(s):")
            lines += [f"  {f}" for f in self.failures[:limit]]
            if len(self.failures) > limit:
                lines.append(f"  ... and {len(self.failures) - limit} more")
        return "\n".join(lines)


def _status_name(reason: str | None) -> str:
    if reason is None:
        return "Good"
    try:
        from asyncua import ua

        return str(ua.StatusCode(STATUS_OF[Reason(reason)]).name)
    except (KeyError, ValueError):
        return f"?{reason}"


def _connect(database: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    return conn


def reconcile(database: Path, result: SimResult) -> Reconciliation:
    out = Reconciliation()
    with _connect(database) as conn:
        _reports(conn, result, out)
        _tags(conn, result, out)
        _jobs(conn, result, out)
        _units(conn, result, out)
    for text in result.ledger.problems:
        out.fail(f"simulation: {text}")
    for text in result.ledger.mismatched_duplicates:
        out.fail(f"duplicate answered differently: {text}")
    return out


def _reports(conn: sqlite3.Connection, result: SimResult, out: Reconciliation) -> None:
    rows: dict[tuple[str, str], list[sqlite3.Row]] = defaultdict(list)
    prefix = f"{result.run_id}-"
    for row in conn.execute("SELECT counter, source, event_id, kind, args, reason, answer FROM cell_events"):
        if row["event_id"].startswith(prefix):
            rows[(row["source"], row["event_id"])].append(row)
    acks: dict[tuple[str, str], Ack] = {}
    for ack in result.ledger.acks:
        if ack.key in acks:
            out.fail(f"the simulation used EventId {ack.event_id} of {ack.source} twice")
        acks[ack.key] = ack
        out.checked["acknowledged reports"] += 1
        if not ack.stored:
            out.fail(f"{ack.source} {ack.kind} {ack.args}: answered {ack.status}, which is never stored")
            continue
        found = rows.get(ack.key, [])
        if len(found) != 1:
            out.fail(f"{ack.source} {ack.kind} {ack.event_id}: acknowledged {ack.status}, {len(found)} rows in the log")
            continue
        row = found[0]
        args = json.loads(row["args"])
        if row["kind"] != ack.kind or args != ack.args:
            out.fail(f"{ack.key}: logged {row['kind']} {args}, reported {ack.kind} {ack.args}")
        if _status_name(row["reason"]) != ack.status:
            out.fail(f"{ack.key} {ack.kind}: logged {row['reason'] or 'accepted'}, acknowledged {ack.status}")
        if ack.ok and ack.kind == "LoadCompleted":
            serials = json.loads(row["answer"]).get("Serials", [])
            if list(serials) != list(ack.outputs[0] if ack.outputs else []):
                out.fail(f"{ack.key}: logged serials {serials}, acknowledged {ack.outputs}")
    for key, found in rows.items():
        if key not in acks:
            out.fail(f"{key} {found[0]['kind']} is in the log but was never acknowledged to the PLC")
    out.checked["log rows of this run"] = sum(len(v) for v in rows.values())


def _tags(conn: sqlite3.Connection, result: SimResult, out: Reconciliation) -> None:
    meant: dict[str, Counter[str]] = defaultdict(Counter)
    for write in result.ledger.tag_writes:
        meant[write.station].update(write.edges)
    for station, edges in meant.items():
        logged = Counter(
            row["kind"]
            for row in conn.execute(
                "SELECT kind FROM cell_events WHERE source = ? AND event_id LIKE 'tag:%' AND reason IS NULL", (station,)
            )
        )
        out.checked["tag stations"] += 1
        if logged != edges:
            out.fail(f"tag PLC {station}: meant {dict(edges)}, the gateway logged {dict(logged)}")


def _jobs(conn: sqlite3.Connection, result: SimResult, out: Reconciliation) -> None:
    for job_id in result.jobs:
        job = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if job is None:
            out.fail(f"job {job_id} is not in the database")
            continue
        out.checked["jobs"] += 1
        units = Counter(row["status"] for row in conn.execute("SELECT status FROM units WHERE job_id = ?", (job_id,)))
        held = sum(units.values())
        live = units["waiting"] + units["in_step"]
        wip = job["started"] - job["scrapped"] - job["finished"]
        if job["started"] != held:
            out.fail(f"job {job_id}: started {job['started']}, but it holds {held} units")
        if job["scrapped"] != units["scrapped"] or job["finished"] != units["finished"]:
            out.fail(
                f"job {job_id}: scrapped/finished {job['scrapped']}/{job['finished']}, units say "
                f"{units['scrapped']}/{units['finished']}"
            )
        if wip != live:
            out.fail(f"job {job_id}: WIP {wip} (started - scrapped - finished), {live} units live")
        cap = max_quantity(job["quantity"], job["yield_buffer_percent"])
        if job["started"] - job["scrapped"] > cap:
            out.fail(f"job {job_id}: {job['started'] - job['scrapped']} started net of scrap, cap {cap}")
        published = result.gateway_jobs.get(job_id)
        if published is not None:
            stored = {"Started": job["started"], "Scrapped": job["scrapped"], "Finished": job["finished"], "Wip": wip}
            shown = {k: published[k] for k in stored}
            if shown != stored:
                out.fail(f"job {job_id}: published {shown}, stored {stored}")


def _units(conn: sqlite3.Connection, result: SimResult, out: Reconciliation) -> None:
    placeholders = ",".join("?" * len(result.jobs))
    stored = {
        row["serial"]: row
        for row in conn.execute(f"SELECT * FROM units WHERE job_id IN ({placeholders})", list(result.jobs))
    }
    if set(stored) != set(result.units):
        missing, extra = set(result.units) - set(stored), set(stored) - set(result.units)
        out.fail(f"units: the simulation has {len(missing)} the gateway lacks {sorted(missing)[:5]}, "
                 f"the gateway {len(extra)} the simulation lacks {sorted(extra)[:5]}")  # fmt: skip
    routings = {
        row["id"]: [s["operation"] for s in json.loads(row["routing"])]
        for row in conn.execute("SELECT id, routing FROM jobs")
    }
    kinds = ",".join(f"'{k}'" for k in sorted(SCAN_EVENT_KINDS))
    query = f"SELECT counter, source, kind, reason FROM cell_events WHERE kind IN ({kinds})"
    events = {row["counter"]: row for row in conn.execute(query)}
    scans: dict[str, list[sqlite3.Row]] = defaultdict(list)
    for row in conn.execute("SELECT * FROM unit_scans ORDER BY id"):
        scans[row["serial"]].append(row)
    for serial, unit in result.units.items():
        row = stored.get(serial)
        if row is None:
            continue
        out.checked["units"] += 1
        status = "live" if row["status"] in LIVE else row["status"]
        if status != unit.status or row["job_id"] != unit.job:
            out.fail(f"{serial}: gateway {row['status']} in {row['job_id']}, simulation {unit.status} in {unit.job}")
        history = [StepDone(s["job_id"], s["operation"], s["station"], bool(s["passed"])) for s in scans[serial]]
        if history != unit.history:
            out.fail(f"{serial}: gateway history {_fmt(history)} != simulation {_fmt(unit.history)}")
        _steps_in_order(serial, row, scans[serial], routings, out)
        for scan in scans[serial]:
            out.checked["unit scans"] += 1
            event = events.get(scan["event_counter"])
            if event is None or event["reason"] is not None or event["source"] != scan["station"]:
                what = "missing" if event is None else f"{event['kind']} at {event['source']} ({event['reason']})"
                out.fail(f"{serial} {scan['operation']} at {scan['station']}: its log entry is {what}")


def _steps_in_order(
    serial: str, unit: sqlite3.Row, scans: list[sqlite3.Row], routings: dict[str, list[str]], out: Reconciliation
) -> None:
    """Passes follow the routing one step at a time; a fail repeats the step it failed."""
    job: str | None = None
    expected = 0
    for scan in scans:
        if scan["job_id"] != job:
            if job is not None and scan["step_index"] != 0:
                out.fail(f"{serial}: moved to {scan['job_id']} at step {scan['step_index']}, not its first")
            job, expected = scan["job_id"], (0 if job is None else scan["step_index"])
        routing = routings.get(scan["job_id"], [])
        if scan["step_index"] != expected:
            out.fail(f"{serial}: {scan['operation']} (step {scan['step_index']}) when step {expected} was next")
            return
        if expected >= len(routing) or routing[expected] != scan["operation"]:
            out.fail(f"{serial}: {scan['operation']} is not step {expected} of {scan['job_id']}'s routing {routing}")
            return
        if scan["passed"]:
            expected += 1
    if unit["status"] == "finished" and expected != len(routings.get(unit["job_id"], [])):
        out.fail(f"{serial}: finished after {expected} of {len(routings.get(unit['job_id'], []))} steps")
    if unit["status"] in LIVE and job == unit["job_id"] and unit["next_step"] != expected:
        out.fail(f"{serial}: next step {unit['next_step']}, its scans say {expected}")


def _fmt(history: list[StepDone]) -> str:
    return " ".join(f"{h.operation}@{h.station}{'' if h.passed else '!'}" for h in history)


def summary_counts(database: Path, jobs: list[str]) -> dict[str, Any]:
    """Started, scrapped, finished and WIP over the given jobs, from the database."""
    with _connect(database) as conn:
        placeholders = ",".join("?" * len(jobs))
        row = conn.execute(
            f"SELECT sum(started), sum(scrapped), sum(finished) FROM jobs WHERE id IN ({placeholders})",
            jobs,
        ).fetchone()
    started, scrapped, finished = (v or 0 for v in row)
    return {"started": started, "scrapped": scrapped, "finished": finished, "wip": started - scrapped - finished}
