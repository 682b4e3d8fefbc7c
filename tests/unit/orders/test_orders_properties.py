"""Random days of orders, schedules, production and fills keep the part bookkeeping exact."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gateway.errors import Refused
from gateway.orders import OrderBook, make_schedule
from gateway.orders.costs import UnitCost

T = TypeVar("T")

PARTS = ("P1", "P2", "P3")
GROUPS = ("MILL", "LATHE")
LOAD = {"P1": {"MILL": 60.0}, "P2": {"MILL": 30.0, "LATHE": 90.0}, "P3": {"LATHE": 45.0}}
START = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
TODAY = date(2026, 1, 5)

part_quantities = st.dictionaries(st.sampled_from(PARTS), st.integers(1, 25), min_size=1, max_size=3)


def cost(serial: str) -> UnitCost:
    """Every finished serial's times, as the cell would have measured them."""
    return UnitCost(serial, 10.0, 9.0, 50.0, 45.0)


class OrderDays(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.book = OrderBook()
        self.now = START
        self.orders: list[str] = []
        self.jobs_total = dict.fromkeys(PARTS, 0)  # units ever sent to the cell in jobs
        self.manual_table = dict.fromkeys(PARTS, 0)  # fix-ups of the without-bookings table
        self.outstanding = dict.fromkeys(PARTS, 0)  # scheduled, not yet produced or backed out
        self.finished: list[tuple[str, str]] = []  # (serial, part) made and not yet in a workorder
        self.serials = 0
        self.schedules = 0

    # ---------------------------------------------------------------- helpers

    def tick(self) -> datetime:
        self.now += timedelta(minutes=7)
        return self.now

    def attempt(self, command: Callable[[], T]) -> T | None:
        """Run a command; if it is refused, nothing may have changed."""
        book = self.book
        before = (
            book.bookings,
            book.workorders,
            book.scheduled_without_bookings,
            book.audit,
            book.schedules,
        )
        try:
            return command()
        except Refused:
            after = (
                book.bookings,
                book.workorders,
                book.scheduled_without_bookings,
                book.audit,
                book.schedules,
            )
            assert after == before
            return None

    def take_costs_again(self, order_id: str) -> None:
        """As the UpdateOrder handler does after an update: a workorder it raised out of filled takes its
        serials' times again from their units."""
        workorder = self.book.workorder(order_id)
        self.book.keep_costs(order_id, {s: cost(s) for s in workorder.all_serials})

    # ---------------------------------------------------------------- rules

    @rule(days=st.integers(0, 20), priority=st.integers(0, 3), parts=part_quantities)
    def receive(self, days: int, priority: int, parts: dict[str, int]) -> None:
        order_id = f"O{len(self.orders)}"
        self.book.receive_order(order_id, TODAY + timedelta(days=days), priority, parts)
        self.orders.append(order_id)

    @precondition(lambda self: bool(self.orders))
    @rule(data=st.data(), parts=part_quantities)
    def update(self, data: st.DataObject, parts: dict[str, int]) -> None:
        order_id = data.draw(st.sampled_from(self.orders))
        if self.attempt(lambda: self.book.update_order(order_id, parts, self.tick(), "erp")) is not None:
            self.take_costs_again(order_id)

    @precondition(lambda self: bool(self.book.unscheduled_bookings()))
    @rule(data=st.data(), part=st.sampled_from(PARTS), qty=st.integers(0, 25))
    def fix_booking(self, data: st.DataObject, part: str, qty: int) -> None:
        booking = data.draw(st.sampled_from(self.book.unscheduled_bookings()))
        self.attempt(lambda: self.book.edit_booking(booking.id, part, qty, at=self.tick(), actor="sup", reason="count"))

    @rule(part=st.sampled_from(PARTS), delta=st.integers(-2, 2))
    def fix_table(self, part: str, delta: int) -> None:
        current = self.book.scheduled_without_bookings.get(part, 0)
        target = max(0, current + delta)
        self.book.set_scheduled_without_booking(part, target, at=self.tick(), actor="sup", reason="fix")
        self.manual_table[part] += target - current

    @rule(part=st.sampled_from(PARTS), days=st.integers(0, 20))
    def replace_scrap(self, part: str, days: int) -> None:
        self.book.add_replacement_booking(
            part, due=TODAY + timedelta(days=days), priority=1, at=self.tick(), actor="op", reason="scrap"
        )

    @rule(
        horizon=st.integers(0, 25),
        capacity=st.fixed_dictionaries({g: st.integers(0, 3600) for g in GROUPS}),
    )
    def schedule_day(self, horizon: int, capacity: dict[str, int]) -> None:
        self.schedules += 1
        schedule = make_schedule(
            f"S{self.schedules}",
            self.tick(),
            24.0,
            self.book.unscheduled_bookings(due_before=TODAY + timedelta(days=horizon)),
            self.book.scheduled_without_bookings,
            {g: float(s) for g, s in capacity.items()},
            LOAD,
        )
        self.book.apply_schedule(schedule)
        for part, qty in schedule.jobs.items():
            self.jobs_total[part] += qty
            self.outstanding[part] += qty

    @precondition(lambda self: any(self.outstanding.values()))
    @rule(data=st.data())
    def produce(self, data: st.DataObject) -> None:
        part = data.draw(st.sampled_from([p for p in PARTS if self.outstanding[p]]))
        made = data.draw(st.integers(1, self.outstanding[part]))
        for _ in range(made):
            self.serials += 1
            self.finished.append((f"SN{self.serials}", part))
        self.outstanding[part] -= made

    @precondition(lambda self: any(self.outstanding.values()))
    @rule(data=st.data())
    def back_out(self, data: st.DataObject) -> None:
        part = data.draw(st.sampled_from([p for p in PARTS if self.outstanding[p]]))
        qty = data.draw(st.integers(1, self.outstanding[part]))
        self.book.back_out(
            f"J-{part}", part, qty, due=TODAY, priority=2, at=self.tick(), actor="gateway", reason="down"
        )
        self.outstanding[part] -= qty

    @precondition(lambda self: bool(self.finished))
    @rule(data=st.data())
    def unload(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.finished) - 1))
        serial, part = self.finished[index]
        if self.book.assign_serial(serial, part, self.tick(), cost(serial)) is not None:
            del self.finished[index]

    @precondition(lambda self: bool(self.finished))
    @rule()
    def unload_the_day(self) -> None:
        left: list[tuple[str, str]] = []
        for serial, part in self.finished:
            if self.book.assign_serial(serial, part, self.tick(), cost(serial)) is None:
                left.append((serial, part))
        self.finished = left

    @precondition(lambda self: bool(self.finished) and bool(self.book.unfilled_workorders()))
    @rule(data=st.data())
    def bulk(self, data: st.DataObject) -> None:
        workorder = data.draw(st.sampled_from(self.book.unfilled_workorders()))
        chosen = data.draw(st.lists(st.sampled_from(self.finished), max_size=4, unique=True))
        costs = {serial: cost(serial) for serial, _ in chosen}
        if self.attempt(
            lambda: self.book.assign_serials_bulk(workorder.id, chosen, at=self.tick(), actor="sup", costs=costs)
        ):
            self.finished = [pair for pair in self.finished if pair not in chosen]

    @precondition(lambda self: bool(self.finished))
    @rule(data=st.data())
    def reuse_a_filled_serial(self, data: st.DataObject) -> None:
        owned = [s for w in self.book.workorders for s in w.all_serials]
        if owned:
            serial = data.draw(st.sampled_from(owned))
            self.attempt(lambda: self.book.assign_serial(serial, "P1", self.tick()))

    @precondition(lambda self: bool(self.orders))
    @rule(data=st.data(), short=st.integers(0, 3))
    def mark_filled(self, data: st.DataObject, short: int) -> None:
        if short:  # a supervisor closing a workorder short is the exception, not the rule
            return
        order_id = data.draw(st.sampled_from(self.orders))
        self.attempt(lambda: self.book.mark_filled(order_id, self.tick(), actor="sup"))

    @precondition(lambda self: any(w.filled for w in self.book.workorders))
    @rule(data=st.data(), more=st.integers(1, 5))
    def raise_a_filled_order(self, data: st.DataObject, more: int) -> None:
        """Seed 001: an order raised after its workorder filled books the difference and fills again."""
        workorder = data.draw(st.sampled_from([w for w in self.book.workorders if w.filled]))
        part = data.draw(st.sampled_from(sorted(workorder.parts)))
        parts = {**workorder.parts, part: workorder.parts[part] + more}
        if self.attempt(lambda: self.book.update_order(workorder.id, parts, self.tick(), "erp")) is None:
            return  # its booking was fixed up to nothing and removed: the order is gone
        raised = self.book.workorder(workorder.id)
        assert (raised.filled, raised.filled_at, raised.report) == (False, None, None)
        assert raised.serials == workorder.serials
        assert raised.remaining(part) >= more
        self.take_costs_again(workorder.id)

    # ---------------------------------------------------------------- invariants

    @invariant()
    def bookkeeping_is_exact(self) -> None:
        table = self.book.scheduled_without_bookings
        for part in PARTS:
            scheduled = sum(b.quantity(part) for b in self.book.bookings if b.scheduled)
            unscheduled = sum(b.quantity(part) for b in self.book.bookings if not b.scheduled)
            booked = sum(b.quantity(part) for b in self.book.bookings)
            assert booked == scheduled + unscheduled
            assert self.jobs_total[part] + self.manual_table[part] == scheduled + table.get(part, 0)
        assert all(q > 0 for q in table.values())
        assert all(b.parts and all(q > 0 for q in b.parts.values()) for b in self.book.bookings)

    @invariant()
    def a_serial_is_in_one_workorder_within_its_quantity(self) -> None:
        seen: set[str] = set()
        for workorder in self.book.workorders:
            for part, serials in workorder.serials.items():
                assert part in workorder.parts
                assert len(serials) <= workorder.parts[part]
                for serial in serials:
                    assert serial not in seen
                    seen.add(serial)
                    assert self.book.workorder_of(serial) == workorder.id
            assert workorder.filled == (workorder.filled_at is not None)
        assert not seen & {serial for serial, _ in self.finished}

    @invariant()
    def a_cost_report_covers_every_serial_of_a_filled_workorder(self) -> None:
        for workorder in self.book.workorders:
            if workorder.filled:
                assert workorder.report is not None
                assert workorder.report.serials == workorder.all_serials
                assert workorder.report.expected_labor_s == 9.0 * len(workorder.all_serials)
                assert workorder.costs == {}
            else:
                assert workorder.report is None
                assert set(workorder.costs) == set(workorder.all_serials)


TestOrderDays = OrderDays.TestCase
TestOrderDays.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
