"""What every ``cell-gateway`` command shares: the --config option and loading it with readable errors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gateway.config import CellConfig, ConfigError, load_config

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="Cell config file (TOML).", envvar="CELL_GATEWAY_CONFIG")
]
DEFAULT_CONFIG = Path("config/cell.toml")


def load_or_exit(path: Path) -> CellConfig:
    """The config, or every problem printed with its key path and exit code 2."""
    try:
        return load_config(path)
    except ConfigError as exc:
        typer.echo(f"{path}: {len(exc.problems)} problem(s)", err=True)
        for problem in exc.problems:
            typer.echo(f"  {problem.path}: {problem.message}", err=True)
        raise typer.Exit(2) from exc
