"""Configuration of one cell, read from a TOML file (``config/cell.toml``).

The file is what a cell integrator edits first, often on the shop floor, so a bad file must be answered
with *every* problem at once, each named by its key path (``operations[2].group``), instead of one
pydantic traceback per attempt. To get there, every table and every array item is validated on its
own, and the cross-references (groups, station ids, duplicates) are checked on whatever did validate;
only when nothing is wrong is the whole :class:`CellConfig` built.

Relative paths in the file (``server.pki_dir``, user certificates, the SQLite file in
``database.url``) are relative to the folder of the config file, whatever the current folder of the
process: ``cell-gateway status --config /srv/cell/cell.toml`` from anywhere reads the same database
as ``cell-gateway run`` started from ``/srv/cell``. A path given by an environment variable is a
command-line path: relative to the current folder.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, Self
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from gateway import limits
from gateway.security.logins import LoginPolicy
from gateway.security.passwords import is_password_hash

__all__ = [
    "CapacitySettings",
    "CellConfig",
    "CellSettings",
    "ConfigError",
    "ConfigProblem",
    "DatabaseSettings",
    "LimitSettings",
    "Operation",
    "OperationKind",
    "Role",
    "ServerSettings",
    "Station",
    "StationKind",
    "User",
    "load_config",
    "parse_config",
]

StationKind = Literal["load", "machine", "wash", "inspection", "manual"]
OperationKind = Literal["load", "unload", "machine", "wash", "inspect", "manual"]
Role = Literal["plc", "operator", "engineer", "erp"]

# Environment variable -> key path it overrides. Deployments (containers, systemd units) change where
# the database and the endpoints are without editing the file that describes the cell.
ENV_OVERRIDES: Mapping[str, tuple[str, str]] = {
    "CELL_GATEWAY_DATABASE_URL": ("database", "url"),
    "CELL_GATEWAY_ENDPOINT": ("server", "endpoint"),
    "CELL_GATEWAY_HTTP_PORT": ("server", "http_port"),
    "CELL_GATEWAY_PKI_DIR": ("server", "pki_dir"),
}

# Only drivers SQLAlchemy can run under asyncio; the gateway never blocks the event loop on I/O.
_ASYNC_DRIVERS: Mapping[str, str] = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}
_BACKEND_ALIASES: Mapping[str, str] = {"postgres": "postgresql"}

_ID_MAX = 32
_ID_RULE = f"a letter, then up to {_ID_MAX - 1} letters, digits, '_' or '-'"


class ConfigProblem(NamedTuple):
    """One thing wrong with the config, where ``path`` is the key path (``users[0].stations[1]``)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ConfigError(Exception):
    """The config cannot be used; carries every problem found, not just the first."""

    def __init__(self, problems: Sequence[ConfigProblem], source: str = "<string>") -> None:
        self.problems: list[ConfigProblem] = list(problems)
        self.source = source
        super().__init__("\n".join(str(p) for p in self.problems))


def _check_ident(value: str) -> str:
    # Ids end up as OPC UA browse names, CLI arguments and log fields: keep them plain.
    ok = (
        0 < len(value) <= _ID_MAX
        and value[0].isascii()
        and value[0].isalpha()
        and all(c.isascii() and (c.isalnum() or c in "_-") for c in value)
    )
    if not ok:
        raise ValueError(f"{value!r} is not a valid id: {_ID_RULE}")
    return value


Ident = Annotated[str, AfterValidator(_check_ident)]


class _Model(BaseModel):
    # frozen: the config is shared by every task of the gateway and must not change under them.
    # allow_inf_nan=False: TOML accepts nan and inf, which no time or percentage can be.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class CellSettings(_Model):
    """Rules that apply to the whole cell."""

    name: str = Field(min_length=1)
    require_approved_templates: bool = False
    default_yield_buffer_percent: float = Field(default=2.0, ge=0, le=100)
    stale_wip_days: float = Field(default=30, gt=0)
    source_time_tolerance_seconds: float = Field(default=300, gt=0)
    serial_format: str = "{cell}-{seq:06d}"
    assign_workorder_at_unload: bool = False
    units_per_pallet: int = Field(default=1, ge=1, le=1000)

    @field_validator("serial_format")
    @classmethod
    def _serial_format_formats(cls, value: str) -> str:
        # Found now rather than at the first generated serial, in the middle of a shift.
        try:
            first = value.format(cell="CELL", seq=1)
            second = value.format(cell="CELL", seq=2)
        except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
            raise ValueError(
                f"cannot format {value!r} with cell (text) and seq (integer): {exc!r}; "
                'for example "{cell}-{seq:06d}" gives DEMO-000001'
            ) from None
        if first == second:
            raise ValueError(f"{value!r} must contain {{seq}}, or every generated serial is the same")
        return value

    @model_validator(mode="after")
    def _serials_fit_the_limits(self) -> Self:
        # The gateway's own serials are checked like a PLC's: one that breaks the serial rule would be
        # refused when a station scans it. Checked with a seq of a billion units.
        serial = self.serial_format.format(cell=self.name, seq=999_999_999)
        problem = limits.SERIAL.problem(serial)
        if problem:
            raise ValueError(f"serial_format with name {self.name!r} makes serials such as {serial!r}: {problem}")
        return self


class ServerSettings(_Model):
    """Where the gateway listens, and how strictly it checks who connects."""

    endpoint: str = "opc.tcp://127.0.0.1:4840/cell-gateway/"
    security_profile: Literal["demo", "production"] = "production"
    pki_dir: Path = Path("var/pki")
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    shutdown_grace_seconds: float = Field(default=5, ge=0)
    # A closed job's OPC UA object stays browsable this long after it closed, then it is removed (its
    # history stays in the database: trace, cost reports and the CLI read it from there).
    closed_job_retention_hours: float = Field(default=24, ge=0)
    # Commands waiting for the writer at most; beyond it a call is answered BadTooManyOperations (HTTP
    # 503) at once instead of queueing without bound.
    max_queued_commands: int = Field(default=20_000, ge=1)

    @field_validator("endpoint")
    @classmethod
    def _endpoint_is_opc_tcp(cls, value: str) -> str:
        example = "opc.tcp://host:4840/cell-gateway/"
        parts = urlsplit(value)
        if parts.scheme != "opc.tcp":
            raise ValueError(f"{value!r} must start with opc.tcp:// (e.g. {example})")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"{value!r} has an invalid port (e.g. {example})") from None
        if not parts.hostname:
            raise ValueError(f"{value!r} must name a host (e.g. {example})")
        if port is None:
            raise ValueError(f"{value!r} must name a port (e.g. {example})")
        return value


class LimitSettings(_Model):
    """What all peers together, and one peer address, may take of the gateway (docs/operations.md)."""

    # OPC UA connections: open at once, from one peer address, and how long a new connection may take
    # to say HELLO and to activate a session before it is closed (stalled peers cannot hold slots).
    max_connections: int = Field(default=200, ge=1, le=10_000)
    max_connections_per_peer: int = Field(default=50, ge=1, le=10_000)
    hello_timeout_seconds: float = Field(default=5, gt=0, le=300)
    activation_timeout_seconds: float = Field(default=10, gt=0, le=300)
    max_sessions: int = Field(default=100, ge=1, le=10_000)
    # Password logins (OPC UA and HTTP Basic): argon2 checks at once and waiting, and the back-off after
    # `login_failures` failures within `login_window_seconds` for one user or from one peer address.
    login_workers: int = Field(default=1, ge=1, le=16)
    login_queue: int = Field(default=16, ge=1, le=1000)
    login_failures: int = Field(default=5, ge=1, le=1000)
    login_window_seconds: float = Field(default=60, gt=0)
    login_backoff_seconds: float = Field(default=2, gt=0)
    login_backoff_max_seconds: float = Field(default=60, gt=0)
    # HTTP: the largest request body accepted (413 beyond), and requests served at once (503 beyond).
    http_max_body_bytes: int = Field(default=1_048_576, ge=1024)
    http_max_concurrent_requests: int = Field(default=32, ge=1, le=10_000)

    def login_policy(self) -> LoginPolicy:
        return LoginPolicy(
            workers=self.login_workers,
            queue=self.login_queue,
            failures=self.login_failures,
            window_seconds=self.login_window_seconds,
            backoff_seconds=self.login_backoff_seconds,
            backoff_max_seconds=self.login_backoff_max_seconds,
        )


class DatabaseSettings(_Model):
    """Where the event log and the cell's state are stored."""

    url: str = "sqlite+aiosqlite:///var/cell-gateway.db"
    # SQLite's PRAGMA synchronous; ignored for PostgreSQL, so one file works when an environment
    # override switches the URL.
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    # PostgreSQL schema of this cell (tables and alembic_version), so that several cells share one
    # database; none: the server's default (search_path). docs/operations.md, "A plant: several cells".
    schema_name: str | None = Field(default=None, alias="schema")
    model_config = ConfigDict(serialize_by_alias=True)  # model_dump() gives the file's keys back

    @field_validator("schema_name")
    @classmethod
    def _schema_is_for_postgresql(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        plain = all(c.isascii() and (c.islower() or c.isdigit() or c == "_") for c in value)
        if not (plain and 0 < len(value) <= 63 and not value[0].isdigit()):
            raise ValueError(f"{value!r} is not a schema name: lowercase letters, digits and _, at most 63")
        if value.startswith("pg_"):
            raise ValueError(f"{value!r}: names starting with pg_ are reserved by PostgreSQL")
        url = info.data.get("url")
        if url is not None and make_url(url).get_backend_name() == "sqlite":
            raise ValueError("is for PostgreSQL only (a SQLite file holds one cell): remove it or use a postgresql URL")
        return value

    @field_validator("url")
    @classmethod
    def _url_is_async(cls, value: str) -> str:
        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError(
                "is not a database URL: use sqlite+aiosqlite:///path/to/file.db "
                "or postgresql+asyncpg://user:password@host/database"
            ) from None
        backend = _BACKEND_ALIASES.get(url.get_backend_name(), url.get_backend_name())
        driver = url.drivername.partition("+")[2]
        wanted = _ASYNC_DRIVERS.get(backend)
        if wanted is None:
            raise ValueError(
                f"unsupported database {url.get_backend_name()!r}: the gateway runs on "
                "sqlite+aiosqlite:// or postgresql+asyncpg://"
            )
        if driver != wanted:
            # Never echo a password from the URL into a log or a terminal.
            shown = url.render_as_string(hide_password=True)
            fixed = url.set(drivername=f"{backend}+{wanted}").render_as_string(hide_password=True)
            if not driver:
                raise ValueError(f"{shown} is not an async URL: use {fixed}")
            raise ValueError(f"driver {driver!r} is not supported (use {wanted}): use {fixed}")
        return value


class Station(_Model):
    """A place where units are loaded, machined, washed, inspected or scanned."""

    id: Ident
    kind: StationKind
    groups: tuple[Ident, ...] = Field(min_length=1)
    name: str = ""


class Operation(_Model):
    """One stage of the process configuration, satisfied by any station of its resource group."""

    code: Ident
    name: str
    group: str
    kind: OperationKind
    program: str = ""
    # Per unit for load/unload/inspect (labor), the program's cycle time for machine/wash steps.
    expected_seconds: float | None = Field(default=None, ge=0)


class User(_Model):
    """An account for OPC UA (username/password or X.509 user token) and the HTTP API."""

    name: str = Field(min_length=1)
    password_hash: str = ""
    certificate: str = ""
    roles: tuple[Role, ...] = Field(min_length=1)
    stations: tuple[str, ...] = ()

    @field_validator("password_hash")
    @classmethod
    def _password_is_hashed(cls, value: str) -> str:
        # The message never repeats the value: it may be someone's real password.
        if value and not is_password_hash(value):
            if value.startswith("$argon2"):
                raise ValueError(
                    "not a valid argon2id hash ($argon2id$v=19$m=...,t=...,p=...$salt$hash): "
                    "run cell-gateway hash-password"
                )
            raise ValueError("password must be hashed: run cell-gateway hash-password")
        return value


class CapacitySettings(_Model):
    """Available hours used by the daily schedule."""

    hours_per_day: float = Field(default=24, gt=0, le=24)
    efficiency: float = Field(default=0.85, gt=0, le=1)


class CellConfig(_Model):
    """The whole validated configuration of one cell; built only if every cross-reference holds."""

    cell: CellSettings
    server: ServerSettings = Field(default_factory=ServerSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    stations: tuple[Station, ...]
    operations: tuple[Operation, ...]
    pallets: tuple[Ident, ...] = ()
    users: tuple[User, ...] = ()
    capacity: CapacitySettings = Field(default_factory=CapacitySettings)

    @model_validator(mode="after")
    def _cross_references_hold(self) -> Self:
        # Also guards configs built in code (tests, simulators), not only those read from a file.
        problems = _cross_problems(
            [dict(s) for s in self.stations],
            [dict(o) for o in self.operations],
            [dict(u) for u in self.users],
            self.pallets,
        )
        if problems:
            raise ValueError("\n".join(str(p) for p in problems))
        return self

    def groups(self) -> dict[str, tuple[str, ...]]:
        """Resource group -> its station ids, both in config order."""
        members: dict[str, list[str]] = {}
        for station in self.stations:
            for group in station.groups:
                members.setdefault(group, []).append(station.id)
        return {group: tuple(ids) for group, ids in members.items()}

    def station(self, station_id: str) -> Station:
        for station in self.stations:
            if station.id == station_id:
                return station
        raise KeyError(station_id)

    def operation(self, code: str) -> Operation:
        for operation in self.operations:
            if operation.code == code:
                return operation
        raise KeyError(code)

    def user(self, name: str) -> User:
        for user in self.users:
            if user.name == name:
                return user
        raise KeyError(name)

    def group_capacity_hours(self, group: str) -> float:
        """Hours a resource group can work per day: stations x hours per day x efficiency."""
        count = len(self.groups().get(group, ()))
        return count * self.capacity.hours_per_day * self.capacity.efficiency

    def anonymous_roles(self) -> tuple[Role, ...]:
        """Roles of an anonymous OPC UA session: only the demo lets a newcomer in without an account."""
        return ("engineer",) if self.server.security_profile == "demo" else ()


# --------------------------------------------------------------------------------------------------
# Loading


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> CellConfig:
    """Read and validate a cell config file; ``env`` (default ``os.environ``) may override some keys."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        problem = ConfigProblem(source, f"cannot read config file: {exc.strerror or exc}")
        raise ConfigError([problem], source) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigProblem(source, f"not UTF-8 text (byte {exc.start})")], source) from None
    return parse_config(text, env, source, base=Path(path).absolute().parent)


def parse_config(
    text: str, env: Mapping[str, str] | None = None, source: str = "<string>", *, base: Path | None = None
) -> CellConfig:
    """Validate config text; raises :class:`ConfigError` listing every problem.

    With ``base`` (the config file's folder), relative paths written in the text are made relative to
    it; paths from environment variables are left as given (relative to the current folder).
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # The message already ends with "(at line L, column C)".
        raise ConfigError([ConfigProblem(source, f"invalid TOML: {exc}")], source) from None
    overridden = _apply_env(data, os.environ if env is None else env)
    if base is not None:
        _resolve_paths(data, base, overridden)
    problems = _validate_parts(data, overridden)
    if not problems:
        try:
            return CellConfig.model_validate(data)
        except ValidationError as exc:  # pragma: no cover - every check above also runs here
            problems = _convert(exc, "", CellConfig, overridden)
    raise ConfigError(problems, source)


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """Apply overrides in place; returns key path -> variable name, to say where a bad value came from.

    Empty variables count as unset, as container tooling often defines every variable it knows.
    """
    overridden: dict[str, str] = {}
    for variable, (table, key) in ENV_OVERRIDES.items():
        value = env.get(variable, "")
        if not value:
            continue
        section = data.setdefault(table, {})
        if isinstance(section, dict):  # otherwise validation reports the table itself
            section[key] = value
            overridden[f"{table}.{key}"] = variable
    return overridden


def _resolve_paths(data: dict[str, Any], base: Path, overridden: Mapping[str, str]) -> None:
    """Make the file's relative paths relative to ``base``, in place; malformed values are left to validation."""

    def rebase(value: object) -> object:
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            return os.path.normpath(base / value)
        return value

    server, database, users = data.get("server"), data.get("database"), data.get("users")
    if "server.pki_dir" not in overridden and (isinstance(server, dict) or server is None):
        default = str(ServerSettings.model_fields["pki_dir"].default)
        data.setdefault("server", {})["pki_dir"] = rebase((server or {}).get("pki_dir", default))
    if isinstance(users, list):
        for user in users:
            if isinstance(user, dict) and "certificate" in user:
                user["certificate"] = rebase(user["certificate"])
    if "database.url" not in overridden:
        if isinstance(database, dict) and isinstance(database.get("url"), str):
            database["url"] = _rebase_sqlite_url(database["url"], base)
        elif isinstance(database, dict) or "database" not in data:
            url = DatabaseSettings.model_fields["url"].default
            data.setdefault("database", {})["url"] = _rebase_sqlite_url(url, base)


def _rebase_sqlite_url(value: str, base: Path) -> str:
    """A SQLite URL with a relative file made relative to ``base``; any other URL unchanged."""
    try:
        url = make_url(value)
    except ArgumentError:
        return value
    name = url.database
    if url.get_backend_name() != "sqlite" or not name or name == ":memory:" or name.startswith("file:"):
        return value
    if Path(name).is_absolute():
        return value
    return url.set(database=os.path.normpath(base / name)).render_as_string(hide_password=False)


_TABLES: Mapping[str, type[_Model]] = {
    "cell": CellSettings,
    "server": ServerSettings,
    "database": DatabaseSettings,
    "limits": LimitSettings,
    "capacity": CapacitySettings,
}
_ARRAYS: Mapping[str, type[_Model]] = {"stations": Station, "operations": Operation, "users": User}
_PALLETS: TypeAdapter[tuple[str, ...]] = TypeAdapter(tuple[Ident, ...])


def _validate_parts(data: dict[str, Any], overridden: Mapping[str, str]) -> list[ConfigProblem]:
    """Validate each table and array item on its own, then cross-check what validated."""
    problems: list[ConfigProblem] = []
    known = tuple(CellConfig.model_fields)
    for key in data:
        if key not in known:
            problems.append(ConfigProblem(key, _unknown_key(key, known)))

    for key, model in _TABLES.items():
        if key in data:
            try:
                model.model_validate(data[key])
            except ValidationError as exc:
                problems.extend(_convert(exc, key, model, overridden))
        elif key == "cell":
            problems.append(ConfigProblem("cell", "required table [cell] is missing"))

    items: dict[str, list[Mapping[str, Any]]] = {}
    not_arrays: set[str] = set()
    for key, model in _ARRAYS.items():
        raw = data.get(key, [])
        if not isinstance(raw, list):
            problems.append(ConfigProblem(key, f"must be an array of tables ([[{key}]])"))
            not_arrays.add(key)
            raw = []
        items[key] = []
        for index, item in enumerate(raw):
            try:
                items[key].append(dict(model.model_validate(item)))
            except ValidationError as exc:
                problems.extend(_convert(exc, f"{key}[{index}]", model, overridden))
                items[key].append(_valid_fields(model, item, exc))

    pallets = data.get("pallets", [])
    try:
        _PALLETS.validate_python(pallets)
    except ValidationError as exc:
        problems.extend(_convert(exc, "pallets", None, overridden))

    # A station id or group that is itself invalid (bad characters) still counts as known, so that
    # one mistake in a station does not also flag every operation and user that refers to it.
    raw_stations = data.get("stations", [])
    raw_stations = [s for s in raw_stations if isinstance(s, dict)] if isinstance(raw_stations, list) else []
    loose_ids = {s["id"] for s in raw_stations if isinstance(s.get("id"), str)}
    raw_groups = [g for s in raw_stations if isinstance(s.get("groups"), list) for g in s["groups"]]
    cross = _cross_problems(
        items["stations"],
        items["operations"],
        items["users"],
        pallets if isinstance(pallets, list) else [],
        loose_station_ids=loose_ids,
        loose_groups={g for g in raw_groups if isinstance(g, str)},
    )
    # "must be an array" already says all there is about a malformed array.
    problems.extend(p for p in cross if p.path not in not_arrays)
    order = list(data)
    return sorted(problems, key=lambda p: _sort_key(p.path, order))


def _valid_fields(model: type[_Model], item: object, exc: ValidationError) -> dict[str, Any]:
    """The fields of a failed item that are fine on their own, so its references can still be checked.

    Fields with an error, and required fields that are missing, are left out; the cross-checks skip
    whatever they need and do not find.
    """
    if not isinstance(item, dict):
        return {}
    failed = {error["loc"][0] for error in exc.errors() if error["loc"]}
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if name in failed:
            continue
        if name in item:
            fields[name] = item[name]
        elif not info.is_required():
            fields[name] = info.get_default(call_default_factory=True)
    return fields


def _sort_key(path: str, order: Sequence[str]) -> tuple[int, int]:
    """Report problems in file order (top-level key as written, then array index); ties keep their order."""
    head = path.partition(".")[0]
    name, _, index = head.partition("[")
    number = index.rstrip("]")
    return (order.index(name) if name in order else len(order)), (int(number) if number.isdigit() else -1)


def _cross_problems(
    stations: Sequence[Mapping[str, Any]],
    operations: Sequence[Mapping[str, Any]],
    users: Sequence[Mapping[str, Any]],
    pallets: Sequence[object],
    *,
    loose_station_ids: Iterable[str] = (),
    loose_groups: Iterable[str] = (),
) -> list[ConfigProblem]:
    """Checks that span items: uniqueness, references to stations and groups, process rules.

    Items are field mappings; one that failed its own validation holds only its valid fields, and a
    check that needs a missing field is skipped (the field's own problem is reported already).
    """
    problems: list[ConfigProblem] = []

    if not stations:
        problems.append(ConfigProblem("stations", "at least one station ([[stations]]) is required"))
    problems.extend(_duplicates([s.get("id") for s in stations], "stations", "station id", field="id"))
    station_ids = set(loose_station_ids) | {s["id"] for s in stations if "id" in s}
    groups = set(loose_groups)
    for i, station in enumerate(stations):
        if "groups" in station:
            groups.update(station["groups"])
            problems.extend(_duplicates(station["groups"], f"stations[{i}].groups", "group"))

    if not operations:
        problems.append(ConfigProblem("operations", "at least one operation ([[operations]]) is required"))
    codes = [o.get("code") for o in operations]
    problems.extend(_duplicates(codes, "operations", "operation code", field="code"))
    groups_text = ", ".join(sorted(groups)) or "none: no station has a group"
    for i, op in enumerate(operations):
        path = f"operations[{i}]"
        if "group" in op and op["group"] not in groups:
            message = f'unknown resource group "{op["group"]}" (known: {groups_text})'
            problems.append(ConfigProblem(f"{path}.group", message))
        kind = op.get("kind")
        if kind in ("machine", "wash") and "program" in op and not op["program"].strip():
            message = f"a {kind} operation needs the program the station runs"
            problems.append(ConfigProblem(f"{path}.program", message))
        if i == 0 and kind is not None and kind not in ("load", "manual"):
            message = f'the first operation must be "load" or "manual" (units enter there), not "{kind}"'
            problems.append(ConfigProblem(f"{path}.kind", message))

    problems.extend(_duplicates(pallets, "pallets", "pallet id"))

    problems.extend(_duplicates([u.get("name") for u in users], "users", "user name", field="name"))
    stations_text = ", ".join(sorted(station_ids)) or "none"
    for i, user in enumerate(users):
        path = f"users[{i}]"
        for k, station_id in enumerate(user.get("stations", ())):
            if station_id not in station_ids:
                message = f'unknown station "{station_id}" (known: {stations_text})'
                problems.append(ConfigProblem(f"{path}.stations[{k}]", message))
        if "plc" in user.get("roles", ()) and "stations" in user and not user["stations"]:
            # A PLC account may report only for its own stations; with none listed it could do nothing.
            message = "a user with role plc must list at least one station"
            problems.append(ConfigProblem(f"{path}.stations", message))
    return problems


def _duplicates(values: Sequence[object], path: str, what: str, field: str = "") -> list[ConfigProblem]:
    """Each repeat of an earlier value, at ``path[i]`` (or ``path[i].field`` for a key of an item)."""
    suffix = f".{field}" if field else ""
    first: dict[str, int] = {}
    problems: list[ConfigProblem] = []
    for i, value in enumerate(values):
        if not isinstance(value, str):
            continue
        if value in first:
            message = f'duplicate {what} "{value}" (first at {path}[{first[value]}])'
            problems.append(ConfigProblem(f"{path}[{i}]{suffix}", message))
        else:
            first[value] = i
    return problems


# --------------------------------------------------------------------------------------------------
# Turning pydantic errors into problems


def _convert(
    exc: ValidationError, prefix: str, model: type[BaseModel] | None, overridden: Mapping[str, str]
) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    errors = exc.errors()
    # pydantic counts an array's length after dropping its invalid items: ["boss"] is then both a bad
    # role and "too short". Only the item is the mistake.
    with_item_errors = {e["loc"][:-1] for e in errors if e["loc"] and isinstance(e["loc"][-1], int)}
    for error in errors:
        if error["type"] == "too_short" and error["loc"] in with_item_errors:
            continue
        path = _path(prefix, error["loc"])
        message = _message(error, model)
        if path in overridden:
            message += f" (from environment variable {overridden[path]})"
        problems.append(ConfigProblem(path, message))
    return problems


def _path(prefix: str, loc: tuple[int | str, ...]) -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else part
    return path


_BOUNDS: Mapping[str, tuple[str, str]] = {
    "greater_than_equal": (">=", "ge"),
    "greater_than": (">", "gt"),
    "less_than_equal": ("<=", "le"),
    "less_than": ("<", "lt"),
}


def _message(error: ErrorDetails, model: type[BaseModel] | None) -> str:
    kind = error["type"]
    ctx = error.get("ctx", {})
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "extra_forbidden":
        key = str(error["loc"][-1])
        keys = model.model_fields.items() if model is not None and len(error["loc"]) == 1 else ()
        fields = tuple(field.alias or name for name, field in keys)  # the file's key: `schema` for schema_name
        return _unknown_key(key, fields)
    if kind == "missing":
        return "is required"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "must be a table"
    if kind == "tuple_type":
        return "must be an array"
    if kind in _BOUNDS:
        symbol, limit = _BOUNDS[kind]
        bound = ctx.get(limit)
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)  # "must be >= 0", not "must be >= 0.0"
        return f"must be {symbol} {bound}"
    if kind in ("too_short", "string_too_short") and ctx.get("min_length") == 1:
        return "must not be empty"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')} (got {error['input']!r})"
    return str(error["msg"])


def _unknown_key(key: str, allowed: Sequence[str]) -> str:
    if allowed and key in CellConfig.model_fields and key not in allowed:
        # The classic TOML slip: a top-level key written after a [table] belongs to that table.
        return f'unknown key "{key}" (a top-level key must come before the first [table] in the file)'
    if not allowed:
        return f'unknown key "{key}"'
    close = difflib.get_close_matches(key, allowed, n=1)
    if close:
        return f'unknown key "{key}" (did you mean "{close[0]}"?)'
    return f'unknown key "{key}" (allowed: {", ".join(allowed)})'
