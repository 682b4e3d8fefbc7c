"""The tracking settings of one cell (``cell.*`` in the config): serial format, clock tolerance, limits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True, slots=True)
class TrackingRules:
    cell_name: str = "cell"
    serial_format: str = "{cell}-{seq:06d}"
    source_time_tolerance: timedelta = timedelta(minutes=5)
    # Longer than this, a step or cycle is taken for a missed report rather than real work.
    max_plausible: timedelta = timedelta(hours=24)
    units_per_pallet: int = 1
