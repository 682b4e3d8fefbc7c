"""The quantity cap, splitting units off to a child job with their cost, and merging jobs."""

from __future__ import annotations

import pytest

from gateway.errors import Reason
from gateway.jobs.book import JobBook
from gateway.jobs.events import JobStateChanged, StepRecorded, UnitsMoved
from gateway.jobs.model import Cost, CostKind, JobState, RoutingSourceKind, UnitStatus, max_quantity

from .demo_book import (
    OP25,
    PROCESS_OPS,
    REWORK_OPS,
    T0,
    at,
    make_book,
    new_job,
    ops,
    pass_step,
    refused,
    released_job,
    start,
)


# ---------------------------------------------------------------- the cap
@pytest.mark.parametrize(
    ("ordered", "buffer", "cap"),
    [
        (1000, 2.0, 1020),
        (100, 7.0, 107),  # naive float: ceil(7.000000000000001) would give 108
        (1000, 1.1, 1011),  # naive float: 1012
        (10, 2.0, 11),  # a part of a unit rounds up
        (3, 33.3, 4),
        (1000, 0.0, 1000),
        (1, 100.0, 2),
    ],
)
def test_the_cap_is_ordered_plus_the_buffer_rounded_up_exactly(ordered: int, buffer: float, cap: int) -> None:
    assert max_quantity(ordered, buffer) == cap


def test_two_percent_buffer_on_1000_caps_at_1020() -> None:
    book = make_book()
    job = released_job(book, "WO-001", quantity=1000, buffer=2.0)
    assert job.max_quantity == 1020
    for n in range(1, 1021):
        start(book, "WO-001", f"S{n:04d}")
    assert (job.started, job.room) == (1020, 0)

    error = refused(book, Reason.ORDER_FULFILLED, start, book, "WO-001", "S1021")
    assert "WO-001 is fulfilled: 1020 of max 1020 started (ordered 1000 + buffer)" in error.message


def test_scrap_frees_room_under_the_cap() -> None:
    book = make_book()
    job = released_job(book, "WO-1", quantity=2, buffer=0.0)
    start(book, "WO-1", "S1")
    start(book, "WO-1", "S2")
    refused(book, Reason.ORDER_FULFILLED, start, book, "WO-1", "S3")
    book.scrap("S1", "crash", at(10))
    assert job.room == 1
    start(book, "WO-1", "S3", at(20))
    refused(book, Reason.ORDER_FULFILLED, start, book, "WO-1", "S4", at(30))
    assert (job.started, job.scrapped, job.wip) == (3, 1, 2)


def test_finished_units_still_count_against_the_cap() -> None:
    book = make_book()
    released_job(book, "WO-1", quantity=1, buffer=0.0, operations=("OP10",))
    start(book, "WO-1", "S1")
    pass_step(book, "S1", at(10), 1.0)
    assert book.unit("S1").status is UnitStatus.FINISHED
    refused(book, Reason.ORDER_FULFILLED, start, book, "WO-1", "S2")


def test_a_load_that_would_cross_the_cap_is_refused_whole() -> None:
    book = make_book()
    released_job(book, "WO-1", quantity=10, buffer=0.0)
    for n in range(8):
        start(book, "WO-1", f"S{n}")
    error = refused(book, Reason.ORDER_FULFILLED, book.check_new_units, "WO-1", "L1", 3)
    assert "3 more would exceed the cap" in error.message
    assert book.check_new_units("WO-1", "L1", 2).id == "WO-1"


# ---------------------------------------------------------------- split
def costed_job(book: JobBook, quantity: int) -> None:
    """A running WO-001 whose units all passed OP10 and OP20, each with its own elapsed times."""
    released_job(book, "WO-001", quantity=quantity, buffer=2.0)
    for n in range(1, quantity + 1):
        serial = f"S{n:04d}"
        start(book, "WO-001", serial, at(n))
        pass_step(book, serial, at(n + 100), float(100 + n % 7))
        pass_step(book, serial, at(n + 1000), float(850 + n % 13))
        book.add_pallet_time(serial, CostKind.MACHINING, float(870 + n % 13))  # its pallet's time at the mill


def total(costs: list[Cost]) -> Cost:
    result = Cost()
    for cost in costs:
        result.add(cost)
    return result


def test_the_seed_split_900_plus_100_keeps_quantity_and_cost() -> None:
    book = make_book()
    costed_job(book, 1000)
    parent = book.job("WO-001")
    before_total = book.job_cost("WO-001")
    moved = [f"S{n:04d}" for n in range(901, 1001)]
    moved_cost = total([book.unit(s).cost for s in moved])
    assert moved_cost.elapsed_labor > 0
    assert moved_cost.elapsed_machine > 0

    child = book.split("WO-001", moved, REWORK_OPS, "engineer", at(5000))

    assert child.id == "WO-001-R1"
    assert (parent.quantity, child.quantity) == (900, 100)
    assert (parent.started, parent.wip, child.started, child.wip) == (900, 900, 100, 100)
    assert parent.max_quantity == 918
    assert child.max_quantity == 100
    assert (child.part, child.revision, child.parent_id) == (parent.part, parent.revision, "WO-001")
    assert ops(child) == list(REWORK_OPS)
    assert child.source.kind is RoutingSourceKind.CUSTOM
    assert child.state is JobState.RUNNING
    assert ops(parent) == list(PROCESS_OPS)

    # The child inherits exactly the accumulated cost of the units it took.
    assert book.job_cost(child.id) == moved_cost
    parent_cost = book.job_cost("WO-001")
    combined = total([parent_cost, book.job_cost(child.id)])
    assert combined == before_total
    assert parent_cost.expected_machine == 900 * 900.0
    assert book.job_cost(child.id).expected_labor == 100 * 120.0

    assert {u.serial for u in book.units_of(child.id)} == set(moved)
    assert all(u.next_step == 0 for u in book.units_of(child.id))
    assert [e for e in book.events if isinstance(e, JobStateChanged)][-1] == JobStateChanged(
        "WO-001-R1", None, JobState.RUNNING, "split from WO-001: 100 unit(s)", "engineer", at(5000)
    )
    assert book.events[-1] == UnitsMoved(tuple(moved), "WO-001", "WO-001-R1", at(5000))

    # The rework loop starts at OP25 with its own program; the parent's units go on to wash.
    book.enter_step("S0950", "M2", at(5100), OP25.program)
    book.enter_step("S0001", "W1", at(5100), "PRG-WASH-1")
    refused(book, Reason.WRONG_PROGRAM, book.enter_step, "S0951", "M2", at(5100), "PRG-MILL-100")


def test_a_second_split_numbers_the_next_child() -> None:
    book = make_book()
    costed_job(book, 4)
    assert book.split("WO-001", ["S0001"], REWORK_OPS, "engineer", T0).id == "WO-001-R1"
    assert book.split("WO-001", ["S0002"], REWORK_OPS, "engineer", T0).id == "WO-001-R2"
    assert book.job("WO-001").quantity == 2


def test_a_split_without_steps_takes_the_parents_remaining_routing() -> None:
    book = make_book()
    released_job(book, "WO-1", quantity=5)
    for serial in ("A", "B", "C"):
        start(book, "WO-1", serial)
    pass_step(book, "A", at(10), 1.0)  # A needs OP20 next
    pass_step(book, "B", at(10), 1.0)
    pass_step(book, "B", at(20), 1.0)  # B needs OP30 next
    book.enter_step("B", "W1", at(30), "PRG-WASH-1")
    book.leave_step("B", "W1", False, at(40), 5.0)  # ... and failed it once
    pass_step(book, "C", at(10), 1.0)

    child = book.split("WO-1", ["B", "A"], (), "engineer", at(50))
    assert ops(child) == ["OP20", "OP30", "OP40", "OP50"]
    assert (book.unit("A").next_step, book.unit("B").next_step) == (0, 1)
    assert book.unit("B").failed_attempts == 0
    # Each unit still needs the same operation it needed before.
    refused(book, Reason.INVALID_PROCESS_STEP, book.enter_step, "B", "M1", at(60), "PRG-MILL-100")
    book.enter_step("B", "W1", at(60), "PRG-WASH-1")
    book.enter_step("A", "M1", at(60), "PRG-MILL-100")


def test_units_in_a_step_cannot_be_split() -> None:
    book = make_book()
    costed_job(book, 3)
    book.enter_step("S0002", "W1", at(9000), "PRG-WASH-1")
    error = refused(book, Reason.INVALID_TRANSITION, book.split, "WO-001", ["S0001", "S0002"], REWORK_OPS, "e", T0)
    assert "S0002 is in OP30 at W1; split it after it leaves" in error.message


def test_a_split_is_refused_whole_for_any_bad_serial_or_step() -> None:
    book = make_book()
    costed_job(book, 3)
    released_job(book, "WO-2", quantity=1)
    start(book, "WO-2", "X1")
    book.scrap("S0003", "crash", at(9000))

    refused(book, Reason.INVALID_ARGUMENT, book.split, "WO-001", [], REWORK_OPS, "e", T0)
    refused(book, Reason.INVALID_ARGUMENT, book.split, "WO-001", ["S0001", "S0001"], REWORK_OPS, "e", T0)
    error = refused(book, Reason.INVALID_ARGUMENT, book.split, "WO-001", ["S0001", "X1"], REWORK_OPS, "e", T0)
    assert "X1 belongs to WO-2, not WO-001" in error.message
    refused(book, Reason.INVALID_TRANSITION, book.split, "WO-001", ["S0001", "S0003"], REWORK_OPS, "e", T0)
    refused(book, Reason.NOT_FOUND, book.split, "WO-001", ["S0001", "S404"], REWORK_OPS, "e", T0)
    refused(book, Reason.NOT_FOUND, book.split, "WO-001", ["S0001"], ("OP25", "OP99"), "e", T0)
    refused(book, Reason.NOT_FOUND, book.split, "WO-404", ["S0001"], REWORK_OPS, "e", T0)
    book.close("WO-2", "done", "erp", T0)
    refused(book, Reason.JOB_CLOSED, book.split, "WO-2", ["X1"], REWORK_OPS, "e", T0)


def test_a_split_never_takes_the_id_of_an_existing_job() -> None:
    book = make_book()
    costed_job(book, 2)
    new_job(book, "WO-001-R1")
    refused(book, Reason.DUPLICATE_ID, book.split, "WO-001", ["S0001"], REWORK_OPS, "e", T0)


# ---------------------------------------------------------------- merge
def two_batches(book: JobBook, target_revision: str = "A", source_revision: str = "A") -> None:
    released_job(book, "WO-A", quantity=3, revision=target_revision)
    released_job(book, "WO-B", quantity=4, revision=source_revision)
    for serial in ("A1", "A2"):
        start(book, "WO-A", serial)
        pass_step(book, serial, at(10), 10.0)
    for serial in ("B1", "B2", "B3"):
        start(book, "WO-B", serial)
        pass_step(book, serial, at(10), 10.0)
    pass_step(book, "B1", at(20), 20.0)  # B1 needs OP30
    book.scrap("B3", "crash", at(30))


def test_a_merge_combines_units_counts_and_history_and_closes_the_source() -> None:
    book = make_book()
    two_batches(book)
    history = [e for e in book.events if isinstance(e, StepRecorded) and e.serial in ("B1", "B2")]

    target = book.merge("WO-A", "WO-B", "engineer", at(100))
    source = book.job("WO-B")

    assert (target.quantity, target.started, target.scrapped, target.finished, target.wip) == (7, 5, 1, 0, 4)
    assert {u.serial for u in book.units_of("WO-A")} == {"A1", "A2", "B1", "B2", "B3"}
    assert book.units_of("WO-B") == []
    assert (source.state, source.quantity, source.started, source.wip) == (JobState.CLOSED, 0, 0, 0)
    assert [e for e in book.events if isinstance(e, JobStateChanged)][-1] == JobStateChanged(
        "WO-B", JobState.RUNNING, JobState.CLOSED, "merged into WO-A", "engineer", at(100)
    )
    assert book.events[-1] == UnitsMoved(("B1", "B2", "B3"), "WO-B", "WO-A", at(100))
    assert [e for e in book.events if isinstance(e, StepRecorded) and e.serial in ("B1", "B2")] == history
    assert book.job_cost("WO-A").elapsed_labor == 5 * 10.0
    # The moved units go on where they were, now under WO-A.
    book.enter_step("B1", "W1", at(110), "PRG-WASH-1")
    book.enter_step("B2", "M1", at(110), "PRG-MILL-100")
    assert book.wip_by_step("WO-A")[1][1] == 3


def test_a_merged_unit_needs_the_same_operation_in_the_targets_routing() -> None:
    book = make_book()
    released_job(book, "WO-A", quantity=3, operations=("OP10", "OP20", "OP25", "OP30", "OP40", "OP50"))
    released_job(book, "WO-B", quantity=3)
    start(book, "WO-B", "B1")
    pass_step(book, "B1", at(10), 1.0)
    pass_step(book, "B1", at(20), 1.0)
    book.merge("WO-A", "WO-B", "engineer", at(30))
    unit = book.unit("B1")
    assert (unit.job_id, unit.next_step) == ("WO-A", 3)
    assert book.jobs["WO-A"].routing[unit.next_step].operation == "OP30"


def test_a_merge_of_another_revision_is_refused_as_mixed() -> None:
    book = make_book()
    two_batches(book, target_revision="B", source_revision="A")
    error = refused(book, Reason.MIXED_MERGE, book.merge, "WO-A", "WO-B", "engineer", at(100))
    assert "only the same part number and revision merge" in error.message
    assert "PX-1 rev A" in error.message
    assert "PX-1 rev B" in error.message


def test_a_merge_of_another_part_is_refused_as_mixed() -> None:
    book = make_book()
    released_job(book, "WO-A", part="PX-1")
    released_job(book, "WO-B", part="PX-2")
    refused(book, Reason.MIXED_MERGE, book.merge, "WO-A", "WO-B", "engineer", T0)


def test_merge_refusals_change_nothing() -> None:
    book = make_book()
    two_batches(book)
    new_job(book, "WO-C")
    refused(book, Reason.INVALID_ARGUMENT, book.merge, "WO-A", "WO-A", "engineer", T0)
    refused(book, Reason.NOT_FOUND, book.merge, "WO-A", "WO-404", "engineer", T0)
    refused(book, Reason.JOB_NOT_RELEASED, book.merge, "WO-A", "WO-C", "engineer", T0)
    book.enter_step("B2", "M1", at(40), "PRG-MILL-100")
    error = refused(book, Reason.INVALID_TRANSITION, book.merge, "WO-A", "WO-B", "engineer", T0)
    assert "B2 is in a step at M1" in error.message
    book.leave_step("B2", "M1", True, at(50), 5.0)
    released_job(book, "WO-D", operations=("OP10", "OP20"))
    error = refused(book, Reason.INVALID_PROCESS_STEP, book.merge, "WO-D", "WO-B", "engineer", T0)
    assert "B1 needs OP30 next, which WO-D's routing does not contain" in error.message
    book.close("WO-D", "done", "erp", T0)
    refused(book, Reason.JOB_CLOSED, book.merge, "WO-D", "WO-B", "engineer", T0)


def test_a_released_target_starts_running_when_running_units_join_it() -> None:
    book = make_book()
    target = released_job(book, "WO-A")
    released_job(book, "WO-B")
    start(book, "WO-B", "B1")
    book.leave_step("B1", "L1", True, at(10), 10.0)
    book.merge("WO-A", "WO-B", "engineer", at(20))
    assert target.state is JobState.RUNNING
    assert (
        JobStateChanged("WO-A", JobState.RELEASED, JobState.RUNNING, "merged running units of WO-B", "engineer", at(20))
        in book.events
    )


def test_a_held_released_target_resumes_running_when_running_units_joined_it() -> None:
    book = make_book()
    target = released_job(book, "WO-A")
    released_job(book, "WO-B")
    start(book, "WO-B", "B1")
    book.leave_step("B1", "L1", True, at(10), 10.0)
    book.hold("WO-A", "waiting for fixtures", "quality", at(15))
    book.merge("WO-A", "WO-B", "engineer", at(20))
    assert book.job("WO-A").state is JobState.HOLD  # merging does not lift the hold
    refused(book, Reason.JOB_ON_HOLD, book.enter_step, "B1", "M1", at(25), "PRG-MILL-100")
    book.resume("WO-A", "quality", at(30))
    assert target.state is JobState.RUNNING  # it has running units now, not Released with units
    assert [e for e in book.events if isinstance(e, JobStateChanged)][-1] == JobStateChanged(
        "WO-A", JobState.HOLD, JobState.RUNNING, "resumed", "quality", at(30)
    )


def test_a_split_by_quantity_moves_unstarted_units_to_a_released_child() -> None:
    """product.md: "Split: move N units (or a quantity) to a child job (J-001-R) with its own routing".
    A quantity split takes ordered units not started yet; the parent's order shrinks by as much."""
    book = make_book()
    parent = released_job(book, "WO-1", quantity=10, buffer=10.0)
    for n in range(1, 4):
        start(book, "WO-1", f"S{n}")
    refused(book, Reason.INVALID_ARGUMENT, book.split, "WO-1", (), (), "planner", at(5), 8)  # 7 not started
    refused(book, Reason.INVALID_ARGUMENT, book.split, "WO-1", ("S1",), (), "planner", at(5), 2)
    child = book.split("WO-1", (), ("OP10", "OP20", "OP40"), "planner", at(5), 4)
    assert (child.id, child.state, child.quantity, child.started) == ("WO-1-R1", JobState.RELEASED, 4, 0)
    assert child.max_quantity == 4  # the child plans no buffer
    assert [s.operation for s in child.routing] == ["OP10", "OP20", "OP40"]
    assert (parent.quantity, parent.started, parent.unstarted) == (6, 3, 3)
    assert parent.started - parent.scrapped <= parent.max_quantity
    # control: a held parent gives a held child
    book.hold("WO-1", "material", "quality", at(6))
    held = book.split("WO-1", (), (), "planner", at(7), 1)
    assert held.state is JobState.HOLD
    book.resume(held.id, "quality", at(8))
    assert held.state is JobState.RELEASED


def test_a_merge_that_would_break_the_targets_cap_is_refused() -> None:
    """Seed 002: "Max_Qty = Ordered_Qty + Yield_Buffer"; once started - scrapped reaches it, no more
    starts ("Order Fulfilled"). A source that used its own buffer cannot carry its extras into a target
    whose cap has no room for them; a merge within the cap goes through (control)."""
    book = make_book()
    released_job(book, "T", quantity=2, buffer=0.0)
    released_job(book, "S", quantity=2, buffer=50.0)  # max 3
    start(book, "T", "T1")
    for n in range(1, 4):
        start(book, "S", f"S{n}")  # its buffer used: 3 started of 2 ordered
        pass_step(book, f"S{n}", at(5))  # loaded: waiting for the mill
    book.merge("T", "S", "engineer", at(10))  # 4 ordered, cap 4 with T's 0 %: 1 + 3 started fit
    assert (book.job("T").quantity, book.job("T").max_quantity, book.job("T").started) == (4, 4, 4)

    released_job(book, "V", quantity=1, buffer=0.0)  # max 1
    released_job(book, "U", quantity=1, buffer=100.0)  # max 2
    start(book, "V", "V1")
    start(book, "U", "U1")
    start(book, "U", "U2")
    error = refused(book, Reason.ORDER_FULFILLED, book.merge, "V", "U", "engineer", at(20))
    assert "3 started units under a cap of 2" in error.message
