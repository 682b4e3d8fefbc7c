"""The end-of-run summary: units, WIP, utilisation per station, reports, refusals, anomalies, faults."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table

from simulators.model import SimResult
from simulators.reconcile import Reconciliation

FAULT_LINES = 16


@dataclass(slots=True)
class Summary:
    run_id: str
    seed: int
    faults: list[str]
    hours: float
    wall_seconds: float
    speed: float
    units: dict[str, int]  # started, finished, scrapped, wip (from the gateway's job counts)
    simulated_units: dict[str, int]  # the same, from the simulation's own model
    jobs: list[dict[str, Any]]
    stations: list[dict[str, Any]]
    reports: dict[str, int]
    acknowledged: int
    retried: int
    duplicates: int
    retries_by_cause: dict[str, int]
    tag_writes: int
    tag_writes_dropped: int
    refusals: dict[str, int]
    anomalies: dict[str, int]
    fault_log: list[str]
    problems: list[str]
    restarts: int
    held_seconds: float
    reconnects: int
    reconciliation: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def summarize(result: SimResult, speed: float, reconciliation: Reconciliation | None = None) -> Summary:
    ledger = result.ledger
    horizon = max(min(result.hours * 3600.0, result.simulated_seconds), 1.0)
    totals: Counter[str] = Counter()
    jobs = []
    for job_id, counts in result.gateway_jobs.items():
        job = result.jobs[job_id]
        for key in ("Started", "Finished", "Scrapped", "Wip"):
            totals[key.lower()] += int(counts.get(key) or 0)
        jobs.append({"job": job_id, "part": job.part, "parent": job.parent, **counts})
    simulated = Counter(u.status for u in result.units.values())
    stations = [
        {
            "station": s.id,
            "kind": s.kind,
            "utilisation": round(min(s.busy, horizon) / horizon, 3),
            "down": round(s.down / horizon, 3),
            "visits": s.visits,
            **{k: v for k, v in sorted(s.results.items())},
        }
        for s in result.stations.values()
    ]
    refusals = Counter(a.reason or a.status for a in ledger.acks if not a.ok)
    return Summary(
        run_id=result.run_id,
        seed=result.seed,
        faults=sorted(f.value for f in result.faults),
        hours=result.hours,
        wall_seconds=round(result.wall_seconds, 1),
        speed=speed,
        units={k: totals[k] for k in ("started", "finished", "scrapped", "wip")},
        simulated_units={
            "started": len(result.units),
            "finished": simulated["finished"],
            "scrapped": simulated["scrapped"],
            "wip": simulated["live"],
        },
        jobs=jobs,
        stations=stations,
        reports=dict(Counter(a.kind for a in ledger.acks)),
        acknowledged=len(ledger.acks),
        retried=sum(1 for a in ledger.acks if a.attempts > 1),
        duplicates=sum(a.duplicates for a in ledger.acks),
        retries_by_cause=dict(ledger.retries),
        tag_writes=len(ledger.tag_writes),
        tag_writes_dropped=sum(1 for w in ledger.tag_writes if w.dropped),
        refusals=dict(refusals),
        anomalies=dict(result.monitor_anomalies),
        fault_log=result.fault_log,
        problems=ledger.problems,
        restarts=result.restarts,
        held_seconds=round(result.held_seconds, 1),
        reconnects=result.reconnects,
        reconciliation=(
            {"ok": reconciliation.ok, "checked": dict(reconciliation.checked), "failures": reconciliation.failures}
            if reconciliation is not None
            else None
        ),
    )


def render(summary: Summary, console: Console) -> None:
    s = summary
    head = Table.grid(padding=(0, 2))
    head.add_row(
        "simulated",
        f"{s.hours:g} h in {s.wall_seconds:.1f} s of wall time (x{s.speed:g}), seed {s.seed}, run {s.run_id}",
    )
    head.add_row("faults", ", ".join(s.faults) or "none")
    u, m = s.units, s.simulated_units
    same = "" if u == m else f"   [red](simulation counted {m})[/red]"
    head.add_row(
        "units",
        f"started {u['started']}, finished {u['finished']}, scrapped {u['scrapped']}, WIP {u['wip']}{same}",
    )
    head.add_row(
        "reports",
        f"{s.acknowledged} acknowledged ({s.retried} after a retry, {s.duplicates} sent twice), "
        f"{s.tag_writes} tag writes ({s.tag_writes_dropped} dropped)",
    )
    head.add_row(
        "connections",
        f"{s.reconnects} PLC reconnects, {s.restarts} gateway restarts; simulated time held "
        f"{s.held_seconds:.1f} s of wall time meanwhile",
    )

    jobs = Table(
        title="Jobs (counts as the gateway publishes them)", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False
    )
    for col in ("job", "part", "state", "qty", "max", "started", "done", "scrap", "WIP"):
        jobs.add_column(col, justify="left" if col in ("job", "part", "state") else "right", min_width=3)
    numbers = ("Quantity", "MaxQuantity", "Started", "Finished", "Scrapped", "Wip")
    for j in s.jobs:
        if not j["parent"]:
            jobs.add_row(j["job"], j["part"], str(j.get("State")), *(str(j.get(k)) for k in numbers))
    rework = [j for j in s.jobs if j["parent"]]
    if rework:
        totals = {k: sum(int(j.get(k) or 0) for j in rework) for k in numbers}
        jobs.add_row("rework", f"{len(rework)} jobs", "", *(str(totals[k]) for k in numbers))

    stations = Table(
        title="Stations (share of the simulated period)", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False
    )
    for col in ("station", "kind", "busy", "down", "visits", "results"):
        stations.add_column(col, justify="right" if col in ("busy", "down", "visits") else "left")
    for st in s.stations:
        results = ", ".join(
            f"{k} {v}" for k, v in st.items() if k not in ("station", "kind", "utilisation", "down", "visits")
        )
        stations.add_row(
            st["station"], st["kind"], f"{st['utilisation']:.0%}", f"{st['down']:.0%}", str(st["visits"]), results
        )

    counts = Table(title="Refusals and anomalies", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    counts.add_column("what")
    counts.add_column("reason")
    counts.add_column("count", justify="right")
    for reason, n in sorted(s.refusals.items(), key=lambda kv: -kv[1]):
        counts.add_row("refused", reason, str(n))
    for reason, n in sorted(s.anomalies.items(), key=lambda kv: -kv[1]):
        counts.add_row("anomaly", reason, str(n))
    if not s.refusals and not s.anomalies:
        counts.add_row("-", "none", "0")

    parts: list[Any] = [head, jobs, stations, counts]
    if s.fault_log:
        shown = s.fault_log if len(s.fault_log) <= FAULT_LINES else s.fault_log[: FAULT_LINES - 1]
        more = len(s.fault_log) - len(shown)
        text = "\n".join(shown) + (f"\n... and {more} more (--summary-json has them all)" if more else "")
        parts.append(Panel(text, title="Faults (simulated time)", title_align="left"))
    if s.problems:
        parts.append(Panel("\n".join(s.problems[:20]), title="[red]Simulation problems[/red]", title_align="left"))
    if s.reconciliation is not None:
        rec = s.reconciliation
        checked = ", ".join(f"{v} {k}" for k, v in sorted(rec["checked"].items()))
        if rec["ok"]:
            parts.append(f"[green]Reconciled[/green] with the gateway's database: {checked}")
        else:
            lines = "\n".join(rec["failures"][:20])
            parts.append(Panel(f"{checked}\n{lines}", title="[red]Reconciliation failed[/red]", title_align="left"))
    for note in s.notes:
        parts.append(f"[yellow]{note}[/yellow]")
    console.print(Panel(Group(*parts), title="cell-gateway simulate: summary", title_align="left"))
