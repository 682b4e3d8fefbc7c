"""The config's pydantic models: one per table of the file, and :class:`CellConfig` for the whole cell.

Each model checks its own fields (ids, URLs, bounds); ``CellConfig`` also runs the cross-checks
(``checks``), so a config built in code is held to the same rules as one read from a file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from gateway import limits
from gateway.config.checks import cross_problems
from gateway.security.logins import LoginPolicy
from gateway.security.passwords import is_password_hash

StationKind = Literal["load", "machine", "wash", "inspection", "manual"]
OperationKind = Literal["load", "unload", "machine", "wash", "inspect", "manual"]
Role = Literal["plc", "operator", "engineer", "erp"]

# Only drivers SQLAlchemy can run under asyncio; the gateway never blocks the event loop on I/O.
_ASYNC_DRIVERS: Mapping[str, str] = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}
_BACKEND_ALIASES: Mapping[str, str] = {"postgres": "postgresql"}

_ID_MAX = 32
_ID_RULE = f"a letter, then up to {_ID_MAX - 1} letters, digits, '_' or '-'"


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


class ConfigModel(BaseModel):
    """The base of every table's model: strict, immutable, finite numbers."""

    # frozen: the config is shared by every task of the gateway and must not change under them.
    # allow_inf_nan=False: TOML accepts nan and inf, which no time or percentage can be.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class CellSettings(ConfigModel):
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


class ServerSettings(ConfigModel):
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
    # The standard faces (docs/opcua.md, "For MES integrators"): the DI, Machinery, ISA-95 Job Control and
    # Machinery Job Management NodeSets loaded at start (about 1 s and 10 MB), each station a
    # MachineryItem, the jobs as a JobManagement object. Off: the gateway's own contract only.
    companion_specs: bool = True

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


class LimitSettings(ConfigModel):
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


class DatabaseSettings(ConfigModel):
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


_NAMEPLATE_MAX = 256


def _check_nameplate(value: str) -> str:
    # Published as they are in the station's Identification (OPC 40001-1): text an operator can read.
    if len(value) > _NAMEPLATE_MAX:
        raise ValueError(f"longer than {_NAMEPLATE_MAX} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError("must not contain control characters (tabs, line breaks, NUL)")
    return value


def _check_uri(value: str) -> str:
    if value and not urlsplit(value).scheme:
        raise ValueError(f"{value!r} is not a URI: it needs a scheme, e.g. urn:acme:vmc-500:1234 or https://...")
    return value


NameplateText = Annotated[str, AfterValidator(_check_nameplate)]


class Station(ConfigModel):
    """A place where units are loaded, machined, washed, inspected or scanned."""

    id: Ident
    kind: StationKind
    groups: tuple[Ident, ...] = Field(min_length=1)
    name: str = ""
    # The machine's nameplate, published in its Identification (the Machinery face, docs/opcua.md):
    # empty when not known (Model is then left out; the mandatory ones hold "").
    manufacturer: NameplateText = ""
    model: NameplateText = ""
    serial_number: NameplateText = ""
    product_instance_uri: Annotated[NameplateText, AfterValidator(_check_uri)] = ""


class Operation(ConfigModel):
    """One stage of the process configuration, satisfied by any station of its resource group."""

    code: Ident
    name: str
    group: str
    kind: OperationKind
    program: str = ""
    # Per unit for load/unload/inspect (labor), the program's cycle time for machine/wash steps.
    expected_seconds: float | None = Field(default=None, ge=0)


class User(ConfigModel):
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


class CapacitySettings(ConfigModel):
    """Available hours used by the daily schedule."""

    hours_per_day: float = Field(default=24, gt=0, le=24)
    efficiency: float = Field(default=0.85, gt=0, le=1)


class CellConfig(ConfigModel):
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
        problems = cross_problems(
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
