"""Workorders: the output of the cell, the order book's collection of them, and their cost reports.

A workorder collects finished serials per part until its fill quantities are met; it fills on its own
when the last serial comes in (:meth:`Workorders.assign_serial`), or a supervisor marks it filled. When
it fills, the times its serials were assigned with are summed into its cost report
(:func:`cost_report`; the values it is made of live in :mod:`gateway.orders.costs`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime

from gateway.errors import Reason, Refused
from gateway.orders.checks import check_at, check_id, urgency
from gateway.orders.costs import TIME_FIELDS, CostReport, TimeKind, TimeTotals, UnitCost


@dataclass(frozen=True, slots=True)
class Workorder:
    """Output of the cell: finished serials collected per part until the fill quantities are met."""

    id: str
    due: date
    priority: int
    parts: Mapping[str, int]
    serials: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    filled: bool = False
    filled_at: datetime | None = None
    # Not part of the workorder's value: what its cost report is made of. Each assigned serial's times,
    # taken when it was assigned (a finished unit's times never change again), so that the report
    # needs no unit in memory when the workorder fills; once filled, the report itself, and the
    # serials' times are let go. An order update that raises a filled workorder drops the report, and
    # the times are taken again from the units (OrderBook.keep_costs).
    costs: Mapping[str, UnitCost] = field(default_factory=dict, compare=False, repr=False)
    report: CostReport | None = field(default=None, compare=False, repr=False)

    def assigned(self, part: str) -> int:
        return len(self.serials.get(part, ()))

    def remaining(self, part: str) -> int:
        """How many more serials of ``part`` this workorder takes (0 for a part it does not hold)."""
        return max(0, self.parts.get(part, 0) - self.assigned(part))

    @property
    def complete(self) -> bool:
        return all(self.assigned(part) >= qty for part, qty in self.parts.items())

    @property
    def all_serials(self) -> tuple[str, ...]:
        return tuple(s for part in sorted(self.serials) for s in self.serials[part])


class Workorders:
    """The workorders by id, which workorder holds each serial, and the ids changed since the last
    :meth:`drain`. Audit entries are the order book's: the methods here validate and change."""

    def __init__(self, workorders: Iterable[Workorder] = ()) -> None:
        self._workorders: dict[str, Workorder] = {w.id: w for w in workorders}
        self._serial_owner: dict[str, str] = {s: w.id for w in self._workorders.values() for s in w.all_serials}
        self._dirty: set[str] = set()

    def drain(self) -> frozenset[str]:
        """The ids of the workorders written since the last drain."""
        changed = frozenset(self._dirty)
        self._dirty.clear()
        return changed

    def __contains__(self, workorder_id: object) -> bool:
        return workorder_id in self._workorders

    def get(self, workorder_id: str) -> Workorder:
        try:
            return self._workorders[workorder_id]
        except KeyError:
            raise Refused(Reason.NOT_FOUND, f"no workorder {workorder_id!r}") from None

    @property
    def all(self) -> tuple[Workorder, ...]:
        return tuple(self._workorders.values())

    def unfilled(self, part: str | None = None) -> list[Workorder]:
        """Unfilled workorders (holding ``part`` if given), soonest due first."""
        found = [w for w in self._workorders.values() if not w.filled and (part is None or part in w.parts)]
        return sorted(found, key=urgency)

    def owner_of(self, serial: str) -> str | None:
        return self._serial_owner.get(serial)

    def put(self, workorder: Workorder) -> None:
        self._workorders[workorder.id] = workorder
        self._dirty.add(workorder.id)

    def assign_serial(self, serial: str, part: str, at: datetime, cost: UnitCost | None = None) -> str | None:
        """At unload: the serial goes to the unfilled workorder with the soonest due date (then higher
        priority, then id) that still needs ``part``; filled when all its quantities are met.
        Returns the workorder id, or None when no workorder needs the part. ``cost``: the serial's
        times, kept for the workorder's cost report.
        """
        check_at(at)
        check_id(serial, "serial")
        check_id(part, "part")
        self.check_serial_free(serial)
        candidates = [w for w in self._workorders.values() if not w.filled and w.remaining(part) > 0]
        if not candidates:
            return None
        workorder = min(candidates, key=urgency)
        serials = dict(workorder.serials)
        serials[part] = (*serials.get(part, ()), serial)
        updated = replace(workorder, serials=serials, costs=_with_costs(workorder.costs, {serial: cost}))
        if updated.complete:
            updated = _filled(updated, at)
        self.put(updated)
        self._serial_owner[serial] = workorder.id
        return workorder.id

    def assign_serials(
        self,
        workorder: Workorder,
        pairs: list[tuple[str, str]],
        costs: Mapping[str, UnitCost] | None = None,
    ) -> Workorder:
        """Assign finished (serial, part) pairs to one unfilled workorder; filling stays explicit.
        Returns the workorder as it is now (as it was, for no pairs)."""
        workorder_id = workorder.id
        if workorder.filled:
            raise Refused(Reason.ORDER_FULFILLED, f"workorder {workorder_id!r} is already filled")
        seen: set[str] = set()
        added: dict[str, int] = {}
        for serial, part in pairs:
            check_id(serial, "serial")
            check_id(part, "part")
            if serial in seen:
                raise Refused(Reason.DUPLICATE_SERIAL, f"serial {serial!r} is listed twice")
            seen.add(serial)
            self.check_serial_free(serial)
            if part not in workorder.parts:
                raise Refused(Reason.INVALID_ARGUMENT, f"workorder {workorder_id!r} holds no part {part!r}")
            added[part] = added.get(part, 0) + 1
        for part, count in added.items():
            if count > workorder.remaining(part):
                raise Refused(
                    Reason.INVALID_ARGUMENT,
                    f"workorder {workorder_id!r} takes {workorder.remaining(part)} more {part}, not {count}",
                )
        if not pairs:
            return workorder
        serials = {p: list(s) for p, s in workorder.serials.items()}
        for serial, part in pairs:
            serials.setdefault(part, []).append(serial)
            self._serial_owner[serial] = workorder_id
        updated = replace(
            workorder,
            serials={p: tuple(s) for p, s in serials.items()},
            costs=_with_costs(workorder.costs, {s: (costs or {}).get(s) for s, _ in pairs}),
        )
        self.put(updated)
        return updated

    def unassign_serial(self, serial: str) -> tuple[Workorder, Workorder]:
        """Take a tentatively assigned serial back out of its (unfilled) workorder: (before, after)."""
        workorder_id = self._serial_owner.get(serial)
        if workorder_id is None:
            raise Refused(Reason.NOT_FOUND, f"serial {serial!r} is not in any workorder")
        workorder = self._workorders[workorder_id]
        if workorder.filled:
            raise Refused(Reason.ORDER_FULFILLED, f"workorder {workorder_id!r} is already filled")
        serials = {p: tuple(s for s in ss if s != serial) for p, ss in workorder.serials.items()}
        kept = {s: c for s, c in workorder.costs.items() if s != serial}
        updated = replace(workorder, serials={p: ss for p, ss in serials.items() if ss}, costs=kept)
        self.put(updated)
        del self._serial_owner[serial]
        return workorder, updated

    def keep_costs(self, workorder_id: str, costs: Mapping[str, UnitCost]) -> None:
        """Keep the times of serials an unfilled workorder holds, for its cost report.

        A workorder lets its serials' times go when it fills; one that an order update raised again
        takes them back here from its units. Times it keeps already stay as they are; serials it does
        not hold are passed over. The times are not stored, so nothing is marked changed.
        """
        workorder = self.get(workorder_id)
        if workorder.filled:
            return
        held = set(workorder.all_serials)
        taken = {s: c for s, c in costs.items() if s in held and s not in workorder.costs}
        if taken:
            self._workorders[workorder_id] = replace(workorder, costs=_with_costs(workorder.costs, taken))

    def mark_filled(self, workorder: Workorder, at: datetime) -> Workorder:
        """Fill a workorder now, even short of its quantities."""
        if workorder.filled:
            raise Refused(Reason.ORDER_FULFILLED, f"workorder {workorder.id!r} is already filled")
        updated = _filled(workorder, at)
        self.put(updated)
        return updated

    def check_editable(self, workorder: Workorder, new: Mapping[str, int], *, may_reopen: bool = False) -> None:
        """``may_reopen``: an order update, which may raise a filled workorder (never lower it)."""
        if workorder.filled and not may_reopen:
            raise Refused(Reason.ORDER_FULFILLED, f"workorder {workorder.id!r} is already filled")
        if workorder.filled:
            for part, quantity in sorted(workorder.parts.items()):
                if new.get(part, 0) < quantity:
                    raise Refused(
                        Reason.ORDER_FULFILLED,
                        f"workorder {workorder.id!r} is already filled with {workorder.assigned(part)} {part} "
                        f"of {quantity}: an order update may raise a filled workorder (it then fills again "
                        f"from new serials) but not lower it to {new.get(part, 0)}, nor below the serials "
                        "assigned to it",
                    )
        for part in workorder.serials:
            if workorder.assigned(part) > new.get(part, 0):
                raise Refused(
                    Reason.INVALID_ARGUMENT,
                    f"workorder {workorder.id!r} already holds {workorder.assigned(part)} {part}; "
                    f"cannot go down to {new.get(part, 0)}",
                )

    def check_serial_free(self, serial: str) -> None:
        owner = self._serial_owner.get(serial)
        if owner is not None:
            raise Refused(Reason.DUPLICATE_SERIAL, f"serial {serial!r} is already in workorder {owner!r}")


def serial_counts(workorder: Workorder) -> dict[str, int]:
    """How many serials the workorder holds per part (what the audit trail records for serial actions)."""
    return {part: len(s) for part, s in sorted(workorder.serials.items()) if s}


def _with_costs(costs: Mapping[str, UnitCost], new: Mapping[str, UnitCost | None]) -> dict[str, UnitCost]:
    out = dict(costs)
    out.update((serial, cost) for serial, cost in new.items() if cost is not None)
    return out


def _filled(workorder: Workorder, at: datetime) -> Workorder:
    """The workorder filled at ``at``, with its cost report taken now when every serial's times are
    known here; otherwise the times stay for the report to be completed from the units."""
    filled = replace(workorder, filled=True, filled_at=at)
    if any(s not in workorder.costs for s in workorder.all_serials):
        return filled
    try:
        report = cost_report(filled, {s: workorder.costs[s] for s in workorder.all_serials})
    except Refused:
        return filled  # left for whoever asks for the report, who gets the same refusal
    return replace(filled, costs={}, report=report)


def cost_report(workorder: Workorder, units: Mapping[str, UnitCost]) -> CostReport:
    """Sum the serials' times for a filled workorder. A serial missing from ``units`` is all unknown."""
    if not workorder.filled or workorder.filled_at is None:
        raise Refused(Reason.INVALID_TRANSITION, f"workorder {workorder.id!r} is not filled")
    for serial, unit in units.items():
        for kind in TimeKind:
            value = unit.time(kind)
            if value is not None and (isinstance(value, bool) or not value >= 0):
                raise Refused(Reason.INVALID_ARGUMENT, f"serial {serial!r}: {kind} {value!r} is not >= 0")
    by_part = {
        part: _totals([units.get(s) or UnitCost.nothing_known(s) for s in serials])
        for part, serials in sorted(workorder.serials.items())
    }
    everything = _totals([units.get(s) or UnitCost.nothing_known(s) for s in workorder.all_serials])
    return CostReport(
        workorder_id=workorder.id,
        filled_at=workorder.filled_at,
        serials=workorder.all_serials,
        unknown=everything.unknown,
        by_part=by_part,
        **{name: everything.total(kind) for kind, name in TIME_FIELDS.items()},
    )


def _totals(units: list[UnitCost]) -> TimeTotals:
    sums: dict[str, float] = {}
    unknown: dict[TimeKind, int] = {}
    for kind, name in TIME_FIELDS.items():
        values = [unit.time(kind) for unit in units]
        sums[name] = float(sum(v for v in values if v is not None))
        missing = sum(1 for unit in units if not unit.complete(kind))
        if missing:
            unknown[kind] = missing
    return TimeTotals(units=len(units), unknown=unknown, **sums)
