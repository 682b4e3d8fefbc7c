"""Reading a config file: TOML, environment overrides, relative paths, then validation part by part.

Every table and every array item is validated on its own, and the cross-references (groups, station
ids, duplicates) are checked on whatever did validate; only when nothing is wrong is the whole
:class:`CellConfig` built. So a bad file is answered with every problem at once.

Relative paths in the file (``server.pki_dir``, user certificates, the SQLite file in
``database.url``) are relative to the folder of the config file, whatever the current folder of the
process: ``cell-gateway status --config /srv/cell/cell.toml`` from anywhere reads the same database
as ``cell-gateway run`` started from ``/srv/cell``. A path given by an environment variable is a
command-line path: relative to the current folder.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from gateway.config.checks import cross_problems
from gateway.config.messages import convert_errors, unknown_key
from gateway.config.problems import ConfigError, ConfigProblem
from gateway.config.schema import (
    CapacitySettings,
    CellConfig,
    CellSettings,
    ConfigModel,
    DatabaseSettings,
    Ident,
    LimitSettings,
    Operation,
    ServerSettings,
    Station,
    User,
)

# Environment variable -> key path it overrides. Deployments (containers, systemd units) change where
# the database and the endpoints are without editing the file that describes the cell.
ENV_OVERRIDES: Mapping[str, tuple[str, str]] = {
    "CELL_GATEWAY_DATABASE_URL": ("database", "url"),
    "CELL_GATEWAY_ENDPOINT": ("server", "endpoint"),
    "CELL_GATEWAY_HTTP_PORT": ("server", "http_port"),
    "CELL_GATEWAY_PKI_DIR": ("server", "pki_dir"),
}


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
            problems = convert_errors(exc, "", CellConfig, overridden)
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


_TABLES: Mapping[str, type[ConfigModel]] = {
    "cell": CellSettings,
    "server": ServerSettings,
    "database": DatabaseSettings,
    "limits": LimitSettings,
    "capacity": CapacitySettings,
}
_ARRAYS: Mapping[str, type[ConfigModel]] = {"stations": Station, "operations": Operation, "users": User}
_PALLETS: TypeAdapter[tuple[str, ...]] = TypeAdapter(tuple[Ident, ...])


def _validate_parts(data: dict[str, Any], overridden: Mapping[str, str]) -> list[ConfigProblem]:
    """Validate each table and array item on its own, then cross-check what validated."""
    problems: list[ConfigProblem] = []
    known = tuple(CellConfig.model_fields)
    for key in data:
        if key not in known:
            problems.append(ConfigProblem(key, unknown_key(key, known)))

    for key, model in _TABLES.items():
        if key in data:
            try:
                model.model_validate(data[key])
            except ValidationError as exc:
                problems.extend(convert_errors(exc, key, model, overridden))
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
                problems.extend(convert_errors(exc, f"{key}[{index}]", model, overridden))
                items[key].append(_valid_fields(model, item, exc))

    pallets = data.get("pallets", [])
    try:
        _PALLETS.validate_python(pallets)
    except ValidationError as exc:
        problems.extend(convert_errors(exc, "pallets", None, overridden))

    # A station id or group that is itself invalid (bad characters) still counts as known, so that
    # one mistake in a station does not also flag every operation and user that refers to it.
    raw_stations = data.get("stations", [])
    raw_stations = [s for s in raw_stations if isinstance(s, dict)] if isinstance(raw_stations, list) else []
    loose_ids = {s["id"] for s in raw_stations if isinstance(s.get("id"), str)}
    raw_groups = [g for s in raw_stations if isinstance(s.get("groups"), list) for g in s["groups"]]
    cross = cross_problems(
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


def _valid_fields(model: type[ConfigModel], item: object, exc: ValidationError) -> dict[str, Any]:
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
