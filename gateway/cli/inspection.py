"""The maintenance engineer's commands: status, trace, pallet, job, refusals, events, audit.

Reads go straight to the store (safe while the gateway runs); changes (``audit resolve``) go through the
running gateway's OPC UA methods with the engineer's credentials, never behind its back (``remote``).
Tables at a terminal, ``--json`` for scripts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from gateway.cli.common import DEFAULT_CONFIG, ConfigOption, load_for_reading, load_or_exit
from gateway.cli.remote import call_gateway, client_endpoint
from gateway.config import CellConfig
from gateway.errors import Reason
from gateway.storage import queries

T = TypeVar("T")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


class _Console:
    """rich's console, made at print time: tables never wrap ids when the output is a pipe or a file."""

    def print(self, *objects: Any) -> None:
        width = None if sys.stdout.isatty() else 200
        Console(width=width, soft_wrap=width is not None).print(*objects)


console = _Console()


def register(app: typer.Typer) -> None:
    """Add the inspection commands to the ``cell-gateway`` app."""
    load = load_for_reading  # every command here reads the database: never create an empty one

    def read(config: Path | CellConfig, query: Callable[[Any], Awaitable[T]]) -> T:
        from gateway.storage.database import create_engine

        cfg = config if isinstance(config, CellConfig) else load(config)

        async def go() -> T:
            engine = create_engine(cfg.database.url, schema=cfg.database.schema_name)
            try:
                return await query(engine)
            finally:
                await engine.dispose()

        return asyncio.run(go())

    @app.command()
    def status(config: ConfigOption = DEFAULT_CONFIG, as_json: JsonOption = False) -> None:
        """Stations, open jobs with counts, WIP, refusals in the last hour, open Lost Audits."""
        now = datetime.now(UTC)
        cfg = load(config)
        stations = [(s.id, str(s.kind)) for s in cfg.stations]
        data = read(cfg, lambda e: queries.status(e, now, stations))
        if as_json:
            _print_json(data)
            return
        table = Table("station", "kind", "state", "pallet", "jobs on pallet", "program", title="Stations")
        for s in data["stations"]:
            table.add_row(s["station"], s["kind"], s["state"], s["pallet"], ", ".join(s["jobs"]), s["program"])
        console.print(table)
        working = [j for j in data["jobs"] if j["wip"] or j["finished"] < j["quantity"]]
        _jobs_table(working)
        done = len(data["jobs"]) - len(working)
        if done:
            console.print(
                f"{done} more open job(s) are done (ordered quantity finished, nothing in WIP) and wait to be "
                "closed: `cell-gateway job ID` shows one, --json lists them all"
            )
        refusals = ", ".join(f"{k} {v}" for k, v in sorted(data["refusals_last_hour"].items())) or "none"
        console.print(
            f"WIP {data['wip']} | refusals in the last hour: {refusals} | open Lost Audits: {data['open_audits']} "
            f"| event log at {data['counter']}"
        )

    @app.command()
    def trace(
        serial: Annotated[str, typer.Argument(help="Unit serial.")],
        config: ConfigOption = DEFAULT_CONFIG,
        as_json: JsonOption = False,
    ) -> None:
        """Where a serial is and everything that happened to it, refusals included."""
        data = read(config, lambda e: queries.trace(e, None, serial))
        if data is None:
            _usage(f"no serial {serial} in this cell (`cell-gateway pallet ID` and `job ID` list serials)")
        if as_json:
            _print_json(data)
            return
        where = f"on pallet {data['pallet']} at {data['pallet_station'] or 'no station'}" if data["pallet"] else ""
        console.print(
            f"[bold]{serial}[/] job {data['job']} ({data['part']} rev {data['revision']}): {data['status']}, "
            f"next {data['next_step'] or '-'} {where}".rstrip()
        )
        if data["audit_flagged"]:
            console.print(f"[red]flagged for a Lost Audit[/] (last activity {data['last_activity']})")
        table = Table("step", "job", "station", "in", "out", "result", "elapsed s", "expected s", "flags")
        for s in data["steps"]:
            table.add_row(
                s["operation"], s["job"], s["station"], _t(s["entered_at"]), _t(s["left_at"]), s["result"],
                _n(s["elapsed"]), _n(s["expected"]), ", ".join(s["flags"]),
            )  # fmt: skip
        console.print(table)
        for e in data["events"]:
            detail = ", ".join(f"{k}={v}" for k, v in e.items() if k not in ("kind", "at", "job"))
            console.print(f"{_t(e['at'])}  {e['kind']} ({e['job']}) {detail}")
        for r in data["refusals"]:
            console.print(
                f"{_t(r['at'])}  [red]refused[/] {r['kind']} at {r['source']} ({r['result']}): {r['message']}"
            )
        e, x = data["elapsed"], data["expected"]
        console.print(
            f"labor {e['labor']:.0f} s elapsed / {x['labor']:.0f} s expected; machine {e['machine']:.0f} s / "
            f"{x['machine']:.0f} s" + (f"; {e['unknown']} step(s) with unknown elapsed time" if e["unknown"] else "")
        )

    @app.command()
    def pallet(
        pallet_id: Annotated[str, typer.Argument(metavar="PALLET", help="Pallet id, e.g. P3.")],
        config: ConfigOption = DEFAULT_CONFIG,
        as_json: JsonOption = False,
    ) -> None:
        """What is on a pallet and where it is."""
        cfg = load(config)
        data = read(cfg, lambda e: queries.pallet(e, pallet_id))
        if data is None:
            if pallet_id not in cfg.pallets:
                _usage(f"no pallet {pallet_id} in this cell; pallets: {', '.join(cfg.pallets) or 'none configured'}")
            # configured but never seen by the gateway: nowhere yet, empty
            data = {"pallet": pallet_id, "station": "", "arrived_at": None, "units": []}
        if as_json:
            _print_json(data)
            return
        console.print(f"[bold]{pallet_id}[/] at {data['station'] or 'no station (in transit)'}")
        table = Table("serial", "job", "part", "status", "next step")
        for u in data["units"]:
            table.add_row(u["serial"], u["job"], u["part"], u["status"], u["next_step"])
        console.print(table if data["units"] else "empty")

    @app.command("job")
    def job_command(
        job_id: Annotated[str, typer.Argument(metavar="JOB", help="Job id.")],
        config: ConfigOption = DEFAULT_CONFIG,
        as_json: JsonOption = False,
    ) -> None:
        """A job's routing snapshot with WIP per step, its counts and its state history."""
        data = read(config, lambda e: queries.job(e, job_id))
        if data is None:
            _usage(f"no job {job_id} in this cell (`cell-gateway status` lists the open jobs)")
        if as_json:
            _print_json(data)
            return
        _jobs_table([data])
        table = Table("#", "operation", "name", "group", "program", "expected s", "WIP", title=data["routing_source"])
        for i, step in enumerate(data["routing"], 1):
            table.add_row(
                str(i), step["operation"], step["name"], step["group"], step["program"], _n(step["expected_seconds"]),
                str(step["wip"]),
            )  # fmt: skip
        console.print(table)
        for h in data["history"]:
            console.print(f"{_t(h['at'])}  {h['from'] or 'new'} -> {h['to']} by {h['actor'] or '-'}: {h['reason']}")

    @app.command("refusals")
    def refusals_command(
        config: ConfigOption = DEFAULT_CONFIG,
        since: Annotated[str | None, typer.Option(help=f"Only from then on: {SINCE_FORMS}.")] = None,
        station: Annotated[str | None, typer.Option(help="Only this station.")] = None,
        reason: Annotated[str | None, typer.Option(help="Only this reason, e.g. InvalidProcessStep.")] = None,
        limit: Annotated[int, typer.Option(help="At most this many, newest.")] = 200,
        as_json: JsonOption = False,
    ) -> None:
        """Refused reports with the reason and the readable message the PLC's event carried."""
        start = _since(since)
        cfg = load(config)
        if station is not None:
            _known_station(cfg, station)
        if reason is not None and reason not in {r.value for r in Reason}:
            _usage(f"no reason {reason}; reasons: {', '.join(r.value for r in Reason)}")
        data = read(cfg, lambda e: queries.refusals(e, since=start, station=station, reason=reason, limit=limit))
        if as_json:
            _print_json(data)
            return
        table = Table("#", "time", "station", "report", "EventId", "reason", "message")
        for r in data:
            table.add_row(
                str(r["counter"]), _t(r["at"]), r["source"], r["kind"], r["event_id"], r["result"], r["message"]
            )
        console.print(table if data else "no refusals")

    @app.command()
    def events(
        config: ConfigOption = DEFAULT_CONFIG,
        after: Annotated[int, typer.Option(help="Start after this log counter.")] = 0,
        follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events.")] = False,
        limit: Annotated[int | None, typer.Option(help="Stop after this many events.")] = None,
        as_json: JsonOption = False,
    ) -> None:
        """The event log from a counter on, optionally live (one line per event)."""
        from gateway.storage.database import create_engine

        cfg = load(config)

        async def go() -> None:
            engine = create_engine(cfg.database.url, schema=cfg.database.schema_name)
            position, printed = after, 0
            try:
                while True:
                    batch = await queries.events_after(engine, position)
                    for event in batch:
                        _print_event(event, as_json)
                        position = event["counter"]
                        printed += 1
                        if limit is not None and printed >= limit:
                            return
                    if not follow:
                        return
                    if not batch:
                        await asyncio.sleep(0.5)
            finally:
                await engine.dispose()

        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(go())

    audit_app = typer.Typer(help="Lost Audits of stale WIP.", no_args_is_help=True)
    app.add_typer(audit_app, name="audit")

    @audit_app.command("list")
    def audit_list(config: ConfigOption = DEFAULT_CONFIG, as_json: JsonOption = False) -> None:
        """Units flagged for a Lost Audit, longest idle first."""
        now = datetime.now(UTC)
        data = read(config, lambda e: queries.audits(e, now))
        if as_json:
            _print_json(data)
            return
        table = Table("serial", "job", "station", "last activity", "idle days")
        for a in data:
            table.add_row(a["serial"], a["job"], a["station"], _t(a["last_activity"]), str(a["idle_days"]))
        console.print(table if data else "no open Lost Audits")

    @audit_app.command("resolve")
    def audit_resolve(
        serial: Annotated[str, typer.Argument(help="Flagged unit serial.")],
        outcome: Annotated[str, typer.Argument(help="found or lost")],
        config: ConfigOption = DEFAULT_CONFIG,
        user: Annotated[str | None, typer.Option(envvar="CELL_GATEWAY_USER", help="Engineer user name.")] = None,
        password: Annotated[str | None, typer.Option(envvar="CELL_GATEWAY_PASSWORD", help="Its password.")] = None,
        endpoint: Annotated[
            str | None,
            typer.Option(help="OPC UA endpoint of the running gateway; default: the config's server.endpoint."),
        ] = None,
        as_json: JsonOption = False,
    ) -> None:
        """Resolve a Lost Audit through the running gateway (Units.ResolveAudit)."""
        if outcome.lower() not in ("found", "lost"):
            _usage(f"outcome must be found or lost, not {outcome!r}")
        cfg = load_or_exit(config)  # a call to the gateway, which may run elsewhere: no local database needed
        target = endpoint or client_endpoint(cfg.server.endpoint)
        if not target.startswith("opc.tcp://"):
            _usage(f"--endpoint must be an opc.tcp:// URL, e.g. opc.tcp://127.0.0.1:4840/cell-gateway/; got {target!r}")
        call = call_gateway(cfg, target, "Cell/Units", "ResolveAudit", [serial, outcome], user, password)
        result = asyncio.run(call)
        if result is not None:
            _fail(result)
        if as_json:
            _print_json({"serial": serial, "outcome": outcome.lower(), "resolved": True, "endpoint": target})
            return
        console.print(f"{serial}: Lost Audit resolved as {outcome.lower()}")


def _jobs_table(jobs: list[dict[str, Any]]) -> None:
    table = Table("job", "part", "rev", "state", "qty", "max", "started", "scrapped", "finished", "WIP", "due", "prio",
                  title="Jobs")  # fmt: skip
    for j in jobs:
        table.add_row(
            j["job"], j["part"], j["revision"], j["state"], str(j["quantity"]), str(j["max_quantity"]),
            str(j["started"]), str(j["scrapped"]), str(j["finished"]), str(j["wip"]), _t(j["due"]), str(j["priority"]),
        )  # fmt: skip
    console.print(table)


def _print_event(event: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(event, default=str) + "\n")
        sys.stdout.flush()
        return
    args = " ".join(f"{k}={v}" for k, v in event["args"].items() if v not in ("", [], None))
    tail = f" -> {event['result']}" + (f": {event['message']}" if event["message"] else "")
    if event["anomalies"]:
        tail += f" [{', '.join(event['anomalies'])}]"
    console.print(f"{event['counter']:>8} {_t(event['at'])} {event['source']:<6} {event['kind']} {args}{tail}")


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _fail(message: str) -> NoReturn:
    """A failure while doing what was asked (the gateway unreachable, a call refused): exit 1."""
    typer.echo(message, err=True)
    raise typer.Exit(1)


def _usage(message: str) -> NoReturn:
    """The command names something that does not exist or an unreadable value: one line, exit 2."""
    typer.echo(message, err=True)
    raise typer.Exit(2)


def _known_station(cfg: CellConfig, station: str) -> None:
    ids = [s.id for s in cfg.stations]
    if station not in ids:
        _usage(f"no station {station} in this cell; stations: {', '.join(ids)}")


SINCE_FORMS = (
    "a duration back from now (45s, 30m, 2h, 3d), today or yesterday (from 00:00 UTC), "
    "or an ISO date or time (2026-12-03, 2026-12-03T14:00, UTC unless it has an offset)"
)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(value: str, now: datetime) -> datetime:
    """The start time ``--since`` names, relative to ``now`` (aware); ValueError if it is none of the forms."""
    text = value.strip().lower()
    if match := _DURATION.fullmatch(text):
        return now - timedelta(seconds=float(match[1]) * _SECONDS[match[2]])
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if text == "today":
        return midnight
    if text == "yesterday":
        return midnight - timedelta(days=1)
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"not a --since value: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_since(value, datetime.now(UTC))
    except ValueError:
        _usage(f"--since {value!r}: expected {SINCE_FORMS}")


def _t(value: str | None) -> str:
    return value.replace("+00:00", "Z")[:19].replace("T", " ") if value else ""


def _n(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f}"
