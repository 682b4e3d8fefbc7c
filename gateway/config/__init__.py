"""Configuration of one cell, read from a TOML file (``config/cell.toml``): the package's public face.

The file is what a cell integrator edits first, often on the shop floor, so a bad file must be answered
with *every* problem at once, each named by its key path (``operations[2].group``), instead of one
pydantic traceback per attempt. To get there, every table and every array item is validated on its
own, and the cross-references (groups, station ids, duplicates) are checked on whatever did validate;
only when nothing is wrong is the whole :class:`CellConfig` built.

The rooms, each importing only those above it:

- ``problems``: :class:`ConfigProblem` (one mistake and its key path) and :class:`ConfigError`.
- ``checks``: the checks that span items (uniqueness, references to stations and groups).
- ``schema``: the pydantic models, one per table, and :class:`CellConfig`.
- ``messages``: pydantic's errors turned into problems with readable messages.
- ``load``: reading the file, environment overrides, relative paths, validation part by part.

Callers import from ``gateway.config`` only.
"""

from __future__ import annotations

from gateway.config.load import load_config, parse_config
from gateway.config.problems import ConfigError, ConfigProblem
from gateway.config.schema import (
    CapacitySettings,
    CellConfig,
    CellSettings,
    DatabaseSettings,
    LimitSettings,
    Operation,
    OperationKind,
    Role,
    ServerSettings,
    Station,
    StationKind,
    User,
)

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
