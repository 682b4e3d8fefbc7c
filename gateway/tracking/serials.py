"""The serial counter: the serials the cell generates, and whether a serial given by hand is one the
counter has yet to reach."""

from __future__ import annotations

import re
from collections.abc import Container

from gateway.tracking.rules import TrackingRules


class SerialCounter:
    """The counter behind generated serials (``rules.serial_format`` with the cell name and ``seq``)."""

    def __init__(self, rules: TrackingRules) -> None:
        self.rules = rules
        self.seq = 0

    def new_serial(self, known: Container[str], taken: set[str]) -> str:
        """The next generated serial that is neither a ``known`` unit's nor ``taken``."""
        while True:
            self.seq += 1
            serial = self.serial_for(self.seq)
            if serial not in known and serial not in taken:
                return serial

    def serial_for(self, seq: int) -> str:
        """The serial the cell generates for counter value ``seq``."""
        return self.rules.serial_format.format(cell=self.rules.cell_name, seq=seq)

    def generated_prefix(self) -> str:
        """The text every generated serial starts with (the format's text before the counter)."""
        first, *others = (self.serial_for(n) for n in (0, 1, 2**31 - 1, 10**15 + 1))
        length = len(first)
        for other in others:
            length = next((i for i, (a, b) in enumerate(zip(first, other, strict=False)) if a != b), length)
            length = min(length, len(other))
        return first[:length]

    def may_generate(self, serial: str) -> bool:
        """Whether the counter has yet to pass ``serial``: it has the generated form for a value above
        the counter. Such a serial (given by hand) is skipped when the counter reaches it, so a unit
        carrying it stays in memory until then (see :meth:`CellModel.retire`).

        A cheap test first: a counter value rendered in any base grows in length, and among renderings
        of one length in text order (for the formats this cell accepts); then the exact one.
        """
        current = self.serial_for(self.seq)
        if not serial.startswith(self.generated_prefix()):
            return False
        if len(serial) < len(current) or (len(serial) == len(current) and serial <= current):
            return False
        return any(value > self.seq and self.serial_for(value) == serial for value in _counter_values(serial))


def _counter_values(serial: str) -> set[int]:
    """Every number a run of digits (or letters and digits, for other bases) in ``serial`` could spell."""
    values: set[int] = set()
    for run in _ALNUM_RUN.findall(serial):
        for start in range(len(run)):
            for end in range(start + 1, len(run) + 1):
                for base in (10, 16, 8, 2):
                    try:
                        values.add(int(run[start:end], base))
                    except ValueError:
                        continue
    return values


_ALNUM_RUN = re.compile(r"[0-9A-Za-z]+")
