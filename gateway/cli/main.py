"""The ``cell-gateway`` command line: run the gateway, check its config, manage its database, export its
address space as a NodeSet."""

from __future__ import annotations

import asyncio
import getpass
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from gateway import __version__
from gateway.cli.common import (
    DEFAULT_CONFIG,
    ConfigOption,
    file_problems,
    load_for_reading,
    load_or_exit,
    readiness_problems,
)
from gateway.cli.inspection import register as register_inspection
from gateway.config import CellConfig, ConfigError, load_config
from gateway.logging import configure_logging, get_logger

app = typer.Typer(
    name="cell-gateway",
    help="OPC UA cell-controller gateway for one machining cell.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema: migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cell-gateway {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """OPC UA cell-controller gateway for one machining cell."""


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
    """Start the gateway and serve until Ctrl-C or SIGTERM.

    If it cannot start, one ``gateway_start_failed`` log line names what failed and the exit code says
    the kind: 2 config, 3 a file (certificate, key), 4 an address in use, 5 the database, 1 anything
    else (docs/operations.md). A traceback only at ``--log-level DEBUG``.
    """
    from gateway.app import EXIT_CONFIG, EXIT_FILE, StartupFailure, serve

    configure_logging(log_level, json=json_logs)
    log = get_logger("gateway.cli")
    debug = log_level.upper() == "DEBUG"
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        problems = [str(p) for p in exc.problems]
        log.error("gateway_start_failed", reason="config", exit_code=EXIT_CONFIG, config=str(config), problems=problems)
        raise typer.Exit(EXIT_CONFIG) from None
    files = file_problems(cfg)
    if files:
        log.error(
            "gateway_start_failed", reason="file_unreadable", exit_code=EXIT_FILE, config=str(config),
            problems=[str(p) for p in files],
        )  # fmt: skip
        raise typer.Exit(EXIT_FILE)
    try:
        asyncio.run(serve(cfg))
    except Exception as exc:  # every failure becomes one log line and an exit code
        failure = _startup_failure(exc, StartupFailure)
        if failure is not None:
            log.error(
                "gateway_start_failed", reason=failure.reason, exit_code=failure.exit_code, **failure.fields,
                exc_info=exc if debug else None,
            )  # fmt: skip
            raise typer.Exit(failure.exit_code) from None
        error = f"{type(exc).__name__}: {exc}"
        log.critical("gateway_failed", error=error, exit_code=1, exc_info=exc if debug else None)
        raise typer.Exit(1) from None


def _startup_failure(exc: BaseException, kind: type[Exception]) -> Any:
    """The first ``kind`` in ``exc`` or in the exception groups it nests, or None."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _startup_failure(inner, kind)
            if found is not None:
                return found
    return None


@app.command("check-config")
def check_config(
    path: Annotated[Path, typer.Argument(help="Config file to check.")] = DEFAULT_CONFIG,
    ports: Annotated[
        bool, typer.Option("--ports", help="Also check that the OPC UA and HTTP ports are free now.")
    ] = False,
) -> None:
    """Check a config file and what `run` needs (files, password hashes, with --ports the ports).

    Every problem is printed with its key path; exit 2 if there is any, so "ok" means `run` starts.
    """
    cfg = _load(path)
    problems = readiness_problems(cfg, ports=ports)
    if problems:
        typer.echo(f"{path}: {len(problems)} problem(s)", err=True)
        for problem in problems:
            typer.echo(f"  {problem.path}: {problem.message}", err=True)
        raise typer.Exit(2)
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


@app.command("export-nodeset")
def export_nodeset(
    file: Annotated[Path, typer.Argument(help="NodeSet2 XML file to write (replaced if it exists).")],
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Write the gateway's own address space as NodeSet2 XML, for tools that import one to map tags.

    Its namespace (urn:cell-gateway) with the event types and the nodes built from the config, as a
    gateway on a fresh database starts with them (no jobs); nothing listens and no database is opened.
    With server.companion_specs the standard faces are in it: the importer loads the companion
    NodeSets first (listed). Exit 2 for a bad config, 3 when the file cannot be written (nothing written).
    """
    from gateway.app import EXIT_FILE, build_model
    from gateway.opcua.standard.export import export_nodeset as export

    cfg = _load(config)
    if not file.parent.is_dir():
        typer.echo(f"{file}: no folder {file.parent}", err=True)
        raise typer.Exit(EXIT_FILE)
    configure_logging("ERROR", json=False)  # asyncua's importer warns about the companion NodeSets
    try:
        exported = asyncio.run(export(cfg, lambda: build_model(cfg), file))
    except OSError as exc:
        typer.echo(f"{file}: cannot write: {exc.strerror or exc}", err=True)
        raise typer.Exit(EXIT_FILE) from None
    typer.echo(f"{file}: {exported.nodes} nodes of urn:cell-gateway ({len(cfg.stations)} stations)")
    if exported.requires:
        typer.echo("load these NodeSets first, in this order: " + ", ".join(exported.requires))


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Apply all migrations to the configured database (the gateway also does it at start)."""
    from gateway.storage.database import create_engine
    from gateway.storage.migrate import upgrade

    cfg = _load(config)

    async def _go() -> tuple[str | None, str | None]:
        engine = create_engine(cfg.database.url, schema=cfg.database.schema_name)
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

    cfg = load_for_reading(config)

    async def _go() -> str | None:
        engine = create_engine(cfg.database.url, schema=cfg.database.schema_name)
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
