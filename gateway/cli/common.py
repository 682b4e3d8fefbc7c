"""What every ``cell-gateway`` command shares: the --config option, loading it with readable errors,
opening the database only where one exists, and the checks of what ``run`` needs before it starts."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer

from gateway.config import CellConfig, ConfigError, ConfigProblem, load_config

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


def missing_database(config: CellConfig) -> Path | None:
    """The SQLite file the config names when it does not exist (None: it exists, or not SQLite)."""
    from gateway.storage.database import sqlite_path

    path = sqlite_path(config.database.url)
    return path if path is not None and not path.exists() else None


def load_for_reading(path: Path) -> CellConfig:
    """The config of a command that only reads: it never creates an empty database (exit code 2)."""
    config = load_or_exit(path)
    missing = missing_database(config)
    if missing is not None:
        typer.echo(f"no database at {missing}; is --config right?", err=True)
        raise typer.Exit(2)
    return config


# --------------------------------------------------------------------------------------------------
# What `run` needs beyond a valid file


def file_problems(config: CellConfig) -> list[ConfigProblem]:
    """Files the gateway reads at start that are missing or do not parse (user and server certificates)."""
    problems: list[ConfigProblem] = []
    for i, user in enumerate(config.users):
        if user.certificate:
            why = _certificate_problem(Path(user.certificate))
            if why:
                problems.append(ConfigProblem(f"users[{i}].certificate", why))
    own = Path(config.server.pki_dir) / "own"
    for name, check in (("server_cert.der", _certificate_problem), ("server_key.pem", _key_problem)):
        file = own / name
        if file.exists():  # created at first start when missing
            why = check(file)
            if why:
                problems.append(ConfigProblem("server.pki_dir", why))
    return problems


def readiness_problems(config: CellConfig, *, ports: bool = False) -> list[ConfigProblem]:
    """Everything ``run`` would fail on or a user could not log in with; ports only when asked."""
    problems = file_problems(config)
    for i, user in enumerate(config.users):
        if not user.password_hash and not user.certificate:
            message = "empty: this user cannot log in (no certificate either); run cell-gateway hash-password"
            problems.append(ConfigProblem(f"users[{i}].password_hash", f"{message} (user {user.name!r})"))
    problems.extend(_database_problems(config))
    if ports:
        endpoint = urlsplit(config.server.endpoint)
        host, port = endpoint.hostname or "", endpoint.port or 0
        why = port_problem(host, port)
        if why:
            problems.append(ConfigProblem("server.endpoint", why))
        if config.server.http_port:
            why = port_problem(config.server.http_host, config.server.http_port)
            if why:
                problems.append(ConfigProblem("server.http_port", why))
    return problems


def port_problem(host: str, port: int) -> str:
    """Why the gateway could not listen on host:port, or "" when it can (bound and released here)."""
    from gateway.app import try_bind

    try:
        try_bind(host, port)
    except socket.gaierror as exc:
        return f"cannot resolve {host}: {exc.strerror or exc}"
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return f"{host}:{port} is in use by another process"
        return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return ""


def _database_problems(config: CellConfig) -> list[ConfigProblem]:
    from gateway.storage.database import sqlite_path

    path = sqlite_path(config.database.url)
    if path is None or path.exists():
        return []
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        return [ConfigProblem("database.url", f"cannot create {path}: {folder} is not writable")]
    return []


def _certificate_problem(path: Path) -> str:
    from cryptography import x509

    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    try:
        if b"-----BEGIN" in data:
            x509.load_pem_x509_certificate(data)
        else:
            x509.load_der_x509_certificate(data)
    except ValueError:
        return f"{path} is not an X.509 certificate (PEM or DER)"
    return ""


def _key_problem(path: Path) -> str:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    try:
        load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        return f"{path} is not an unencrypted PEM private key"
    return ""
