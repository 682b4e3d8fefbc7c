"""The cell as the domain sees it: stations with their groups, the operations, the pallets.

Built from the config by the wiring layer, so the domain does not depend on how config is read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from gateway.errors import Reason, Refused
from gateway.jobs.model import Routing, Step


@dataclass(frozen=True, slots=True)
class StationInfo:
    id: str
    kind: str
    groups: frozenset[str]


@dataclass(slots=True)
class CellLayout:
    stations: Mapping[str, StationInfo]
    # The process configuration: the shop's operations in order. Automatic mode snapshots it whole.
    process: Routing
    pallets: frozenset[str]
    # Every operation code a routing may name; the process configuration's, plus any extra ones.
    catalogue: dict[str, Step] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for step in self.process:
            self.catalogue.setdefault(step.operation, step)

    @classmethod
    def build(cls, stations: Iterable[StationInfo], process: Sequence[Step], pallets: Iterable[str]) -> CellLayout:
        return cls({s.id: s for s in stations}, tuple(process), frozenset(pallets))

    def station(self, station_id: str) -> StationInfo:
        try:
            return self.stations[station_id]
        except KeyError:
            raise Refused(Reason.NOT_FOUND, f"station {station_id!r} is not configured in this cell") from None

    def resolve(self, operations: Sequence[str]) -> Routing:
        """Operation codes to a routing snapshot; an unknown code refuses the whole list."""
        unknown = [op for op in operations if op not in self.catalogue]
        if unknown:
            known = ", ".join(self.catalogue)
            raise Refused(Reason.NOT_FOUND, f"unknown operation(s) {', '.join(unknown)} (known: {known})")
        if not operations:
            raise Refused(Reason.INVALID_ARGUMENT, "a routing needs at least one step")
        return tuple(self.catalogue[op] for op in operations)

    def check_pallets(self, pallets: Sequence[str]) -> tuple[str, ...]:
        unknown = [p for p in pallets if p not in self.pallets]
        if unknown:
            raise Refused(Reason.NOT_FOUND, f"unknown pallet(s) {', '.join(unknown)}")
        return tuple(dict.fromkeys(pallets))
