"""The ``cell-gateway`` command line: run the gateway, check its config, manage its database."""

from __future__ import annotations

import asyncio
import getpass
import sys
from pathlib import Path
from typing import Annotated

import typer

from gateway.cli_common import DEFAULT_CONFIG, ConfigOption, load_or_exit
from gateway.cli_inspect import register as register_inspection
from gateway.config import CellConfig
from gateway.logging import configure_logging

app = typer.Typer(
    name="cell-gateway",
    help="OPC UA cell-controller gateway for one machining cell.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema: migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _load(path: Path) -> CellConfig:
    return load_or_exit(path)


@app.command()
def run(
    config: ConfigOption = DEFAULT_CONFIG,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
    json_logs: Annotated[
        bool | None, typer.Option("--json-logs/--console-logs", help="Default: JSON unless at a terminal.")
    ] = None,
) -> None:
    """Start the gateway and serve until Ctrl-C or SIGTERM."""
    from gateway.app import serve

    cfg = _load(config)
    configure_logging(log_level, json=json_logs)
    asyncio.run(serve(cfg))


@app.command("check-config")
def check_config(path: Annotated[Path, typer.Argument(help="Config file to check.")] = DEFAULT_CONFIG) -> None:
    """Validate a config file: print every problem with its key path; exit 2 if there is any."""
    cfg = _load(path)
    groups = cfg.groups()
    typer.echo(
        f"{path}: ok (cell {cfg.cell.name!r}, {len(cfg.stations)} stations in {len(groups)} groups, "
        f"{len(cfg.operations)} operations, {len(cfg.pallets)} pallets, {len(cfg.users)} users, "
        f"profile {cfg.server.security_profile})"
    )


@app.command("hash-password")
def hash_password(
    password: Annotated[
        str | None, typer.Option("--password", help="Read from a prompt when not given (safer).")
    ] = None,
) -> None:
    """Print an argon2 hash of a password, for the ``password_hash`` of a user in the config."""
    from gateway.security.passwords import hash_password as _hash

    if password is None:
        if not sys.stdin.isatty():
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = getpass.getpass("Password: ")
            if getpass.getpass("Again: ") != password:
                typer.echo("passwords differ", err=True)
                raise typer.Exit(2)
    if not password:
        typer.echo("empty password refused", err=True)
        raise typer.Exit(2)
    typer.echo(_hash(password))


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Apply all migrations to the configured database (the gateway also does it at start)."""
    from gateway.storage.database import create_engine
    from gateway.storage.migrate import upgrade

    cfg = _load(config)

    async def _go() -> tuple[str | None, str | None]:
        engine = create_engine(cfg.database.url)
        try:
            return await upgrade(engine)
        finally:
            await engine.dispose()

    before, after = asyncio.run(_go())
    typer.echo(f"database at {after}" + ("" if before == after else f" (was {before or 'empty'})"))


@db_app.command("current")
def db_current(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Print the database's migration revision and the latest one this version knows."""
    from gateway.storage.database import create_engine
    from gateway.storage.migrate import current_revision, head_revision

    cfg = _load(config)

    async def _go() -> str | None:
        engine = create_engine(cfg.database.url)
        try:
            return await current_revision(engine)
        finally:
            await engine.dispose()

    current, head = asyncio.run(_go()), head_revision()
    typer.echo(f"current {current or 'empty'}, head {head}" + ("" if current == head else " (upgrade needed)"))


def main() -> None:
    app()


register_inspection(app)


@app.command()
def simulate(
    config: ConfigOption = DEFAULT_CONFIG,
    hours: Annotated[float, typer.Option(min=0.01, help="Simulated hours to run.")] = 24.0,
    speed: Annotated[float, typer.Option(min=1, help="Simulated seconds per wall-clock second.")] = 600.0,
    faults: Annotated[
        str,
        typer.Option(
            help="Comma list of faults, or all / none: breakdown, scrap, inspection, delay, disconnect, "
            "duplicate, retry, tagdrop, skew, restart, crash ('all,-restart' removes one)."
        ),
    ] = "",
    seed: Annotated[int, typer.Option(help="Seed of every random draw.")] = 1,
    spawn: Annotated[
        bool, typer.Option("--spawn/--no-spawn", help="Start a gateway for the run (fresh database), stop it after.")
    ] = False,
    endpoint: Annotated[str | None, typer.Option(help="Gateway to drive; default: the config's endpoint.")] = None,
    scenario: Annotated[Path | None, typer.Option(help="Scenario TOML (jobs, PLC modes, fault rates).")] = None,
    workdir: Annotated[
        Path | None, typer.Option(help="With --spawn: folder for the gateway's database and log.")
    ] = None,
    check: Annotated[
        bool, typer.Option("--check/--no-check", help="With --spawn: reconcile with the database.")
    ] = True,
    ledger: Annotated[Path | None, typer.Option(help="Write every acknowledged report here (JSON lines).")] = None,
    summary_json: Annotated[Path | None, typer.Option(help="Write the summary here (JSON).")] = None,
) -> None:
    """Simulate the cell's PLCs for a production day against a gateway, then print a summary."""
    from simulators.runner import RunOptions
    from simulators.runner import simulate as run_simulation
    from simulators.scenario import DEFAULT_SCENARIO

    options = RunOptions(
        config=config, hours=hours, speed=speed, faults=faults, seed=seed, scenario=scenario or DEFAULT_SCENARIO,
        spawn=spawn, endpoint=endpoint, workdir=workdir, check=check, ledger=ledger, summary_json=summary_json,
    )  # fmt: skip
    configure_logging("WARNING", json=False)
    raise typer.Exit(asyncio.run(run_simulation(options)))
