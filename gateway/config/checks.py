"""Checks that span items of the config: uniqueness, references to stations and groups, process rules.

They run twice: on whatever validated of a file (``load``), so that a broken file still gets every
cross-reference problem, and on a whole :class:`CellConfig` (``schema``), which also guards configs
built in code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gateway.config.problems import ConfigProblem


def cross_problems(
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
