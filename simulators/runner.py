"""``cell-gateway simulate``: a simulated production period against a gateway, with a progress bar
and a summary; optionally the simulator starts the gateway itself (``--spawn``) on a fresh database,
which also lets it restart the gateway mid-run and reconcile every count with the database after."""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from gateway.config import load_config
from simulators.clock import SimClock
from simulators.gateway_process import GatewayProcess, derive_config
from simulators.reconcile import reconcile
from simulators.scenario import DEFAULT_SCENARIO, Fault, load_scenario, parse_faults
from simulators.simulation import CellSimulation
from simulators.summary import render, summarize

# The simulated day runs ahead of the gateway's wall clock by up to its whole length; SourceTimes
# stay within the tolerance of a spawned gateway with this much to spare.
TOLERANCE_MARGIN_SECONDS = 2 * 3600


@dataclass(frozen=True, slots=True)
class RunOptions:
    config: Path
    hours: float = 24.0
    speed: float = 600.0
    faults: str = ""
    seed: int = 1
    scenario: Path = DEFAULT_SCENARIO
    spawn: bool = False
    endpoint: str | None = None
    workdir: Path | None = None
    check: bool = True
    ledger: Path | None = None
    summary_json: Path | None = None


def needed_tolerance(hours: float) -> float:
    return hours * 3600.0 + TOLERANCE_MARGIN_SECONDS


async def simulate(options: RunOptions, console: Console | None = None) -> int:
    """Run the simulation; returns the exit code (0: ran, no problem found; 1: problems; 2: bad input)."""
    console = console or Console()
    try:
        faults = parse_faults(options.faults)
        scenario = load_scenario(options.scenario)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        return 2
    notes: list[str] = []
    gateway: GatewayProcess | None = None
    if options.spawn:
        workdir = options.workdir or Path(tempfile.mkdtemp(prefix="cell-sim-"))
        workdir.mkdir(parents=True, exist_ok=True)
        for stale in ("cell.db", "cell.db-wal", "cell.db-shm", "gateway.log"):
            (workdir / stale).unlink(missing_ok=True)
        derived = derive_config(
            options.config, workdir / "cell.toml", tolerance_seconds=needed_tolerance(options.hours)
        )
        gateway = GatewayProcess(derived, workdir)
        console.print(f"starting the gateway ({gateway.endpoint}, database {gateway.database}, log {gateway.log_path})")
        await gateway.start()
        config = gateway.load_config()
        endpoint = gateway.endpoint
    else:
        config = load_config(options.config)
        endpoint = options.endpoint or config.server.endpoint
        if config.cell.source_time_tolerance_seconds < needed_tolerance(options.hours):
            notes.append(
                f"The gateway's source_time_tolerance_seconds ({config.cell.source_time_tolerance_seconds:g}) is "
                f"shorter than the simulated period: later reports are recorded at receipt time with a ClockSkew "
                f"anomaly. Use --spawn, or a config with at least {needed_tolerance(options.hours):.0f}."
            )
        for fault in (Fault.RESTART, Fault.CRASH):
            if fault in faults:
                notes.append(f"Fault {fault} needs --spawn (the simulator restarts only a gateway it started).")

    clock = SimClock(speed=options.speed)
    sim = CellSimulation(
        config, scenario, endpoint=endpoint, clock=clock, hours=options.hours, faults=faults, seed=options.seed,
        gateway=gateway,
    )  # fmt: skip
    code = 0
    try:
        with Progress(
            TextColumn("[bold]day"),
            BarColumn(),
            TextColumn("{task.fields[clock]}"),
            TextColumn("{task.fields[figures]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as bar:
            task = bar.add_task("sim", total=options.hours * 3600.0, clock="00:00", figures="")

            def progress(s: CellSimulation) -> None:
                elapsed = min(s.clock.elapsed(), options.hours * 3600.0)
                f = s.figures()
                bar.update(
                    task,
                    completed=elapsed,
                    clock=f"{int(elapsed // 3600):02d}:{int(elapsed % 3600 // 60):02d}",
                    figures=f"started {f['started']} finished {f['finished']} scrapped {f['scrapped']} "
                    f"WIP {f['wip']} reports {f['reports']}",
                )

            result = await sim.run(progress)
    finally:
        if gateway is not None:
            stopped = time.monotonic()
            await gateway.stop()
            notes.append(f"gateway stopped in {time.monotonic() - stopped:.1f} s; log {gateway.log_path}")
    reconciliation = None
    if gateway is not None and options.check:
        reconciliation = reconcile(gateway.database, result)
        if not reconciliation.ok:
            code = 1
    if result.ledger.problems:
        code = 1
    summary = summarize(result, options.speed, reconciliation)
    summary.notes.extend(notes)
    render(summary, console)
    if options.ledger is not None:
        result.ledger.write_jsonl(options.ledger)
    if options.summary_json is not None:
        options.summary_json.parent.mkdir(parents=True, exist_ok=True)
        options.summary_json.write_text(json.dumps(summary.as_json(), indent=2, default=str))
    return code
