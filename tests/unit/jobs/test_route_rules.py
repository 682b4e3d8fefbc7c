"""Route enforcement per unit: sequence, resource groups, programs, repeats after a failure, facts."""

from __future__ import annotations

import pytest

from gateway.errors import Reason
from gateway.jobs.book import JobBook, NewJob
from gateway.jobs.events import StepRecorded
from gateway.jobs.model import UnitStatus
from tests.support import T0

from .demo_book import OP20, at, make_book, pass_step, refused, released_job, snapshot, start


def running_job(book: JobBook, operations: tuple[str, ...] = ()) -> None:
    released_job(book, "WO-1", operations=operations)


def unit_waiting_for_mill(book: JobBook, serial: str = "S1") -> None:
    start(book, "WO-1", serial)
    pass_step(book, serial, at(10), 10.0)
    assert book.unit(serial).next_step == 1


# ---------------------------------------------------------------- sequence
def test_a_unit_cannot_enter_a_step_before_the_one_before_it_is_passed() -> None:
    book = make_book()
    running_job(book)
    unit_waiting_for_mill(book)
    error = refused(book, Reason.INVALID_PROCESS_STEP, book.enter_step, "S1", "W1", at(20), "PRG-WASH-1")
    assert error.message == "S1 cannot enter OP30 at W1: it must pass OP20 mill (MILL) first"
    refused(book, Reason.INVALID_PROCESS_STEP, book.enter_step, "S1", "C1", at(20))


def test_a_unit_cannot_enter_a_step_it_passed_already() -> None:
    book = make_book()
    running_job(book)
    unit_waiting_for_mill(book)
    pass_step(book, "S1", at(20), 20.0)
    error = refused(book, Reason.INVALID_PROCESS_STEP, book.enter_step, "S1", "M3", at(30), "PRG-MILL-100")
    assert "it passed OP20 already and needs OP30 wash next" in error.message


def test_a_station_outside_every_step_of_the_routing_is_the_wrong_resource() -> None:
    book = make_book()
    running_job(book, operations=("OP10", "OP20", "OP40"))  # no wash, no CMM in this routing
    unit_waiting_for_mill(book)
    error = refused(book, Reason.WRONG_RESOURCE, book.enter_step, "S1", "W1", at(20), "PRG-WASH-1")
    assert "station W1 (WASH) does not serve OP20 mill" in error.message
    assert "group MILL" in error.message
    refused(book, Reason.NOT_FOUND, book.enter_step, "S1", "M9", at(20), "PRG-MILL-100")


@pytest.mark.parametrize("station", ["M1", "M2", "M3", "M4"])
def test_any_station_of_the_group_satisfies_the_step(station: str) -> None:
    book = make_book()
    running_job(book)
    unit_waiting_for_mill(book)
    book.enter_step("S1", station, at(20), "PRG-MILL-100")
    record = book.leave_step("S1", station, True, at(920), 900.0)
    assert record is not None
    assert (record.station, record.operation, record.step_index) == (station, "OP20", 1)


def test_a_new_unit_enters_only_at_a_station_of_the_first_step() -> None:
    book = make_book()
    running_job(book)
    error = refused(book, Reason.INVALID_PROCESS_STEP, start, book, "WO-1", "S1", T0, "M1")
    assert error.message == "a new unit of WO-1 cannot enter OP20 at M1: it must pass OP10 load (LOAD) first"
    refused(book, Reason.NOT_FOUND, start, book, "WO-1", "S1", T0, "X1")
    start(book, "WO-1", "S1", T0, "L2")
    assert book.unit("S1").station == "L2"


def test_a_unit_in_a_step_or_done_cannot_enter_again() -> None:
    book = make_book()
    running_job(book, operations=("OP10", "OP50"))
    start(book, "WO-1", "S1")
    error = refused(book, Reason.INVALID_PROCESS_STEP, book.enter_step, "S1", "L2", at(5))
    assert "S1 is in OP10 at L1 already" in error.message
    pass_step(book, "S1", at(10), 1.0)
    pass_step(book, "S1", at(20), 1.0)
    assert book.unit("S1").status is UnitStatus.FINISHED
    error = refused(book, Reason.INVALID_PROCESS_STEP, book.enter_step, "S1", "C1", at(30))
    assert "finished" in error.message
    refused(book, Reason.NOT_FOUND, book.enter_step, "S404", "C1", at(30))


# ---------------------------------------------------------------- programs
def test_a_wrong_program_is_refused() -> None:
    book = make_book()
    running_job(book)
    unit_waiting_for_mill(book)
    error = refused(book, Reason.WRONG_PROGRAM, book.enter_step, "S1", "M1", at(20), "PRG-MILL-101")
    assert error.message == "S1 needs program PRG-MILL-100 for OP20, not PRG-MILL-101"
    refused(book, Reason.WRONG_PROGRAM, book.enter_step, "S1", "M1", at(20), "")


@pytest.mark.parametrize("program", ["prg-mill-100", "Prg-Mill-100", "PRG-MILL-100", None])
def test_the_program_matches_case_insensitively_or_may_be_unreported(program: str | None) -> None:
    book = make_book()
    running_job(book)
    unit_waiting_for_mill(book)
    book.enter_step("S1", "M1", at(20), program)
    assert book.unit("S1").status is UnitStatus.IN_STEP


def test_a_step_without_a_program_accepts_any() -> None:
    book = make_book()
    running_job(book)
    start(book, "WO-1", "S1")
    for _ in range(3):
        pass_step(book, "S1", at(10), 1.0)
    book.enter_step("S1", "L1", at(20), "ANYTHING")  # OP40 unload has no program
    assert book.unit("S1").station == "L1"


# ---------------------------------------------------------------- failures are repeated, never skipped
def test_a_failed_step_may_be_repeated_but_never_skipped() -> None:
    book = make_book()
    running_job(book)
    unit_waiting_for_mill(book)
    book.enter_step("S1", "M1", at(20), "PRG-MILL-100")
    failed = book.leave_step("S1", "M1", False, at(30), 10.0)
    assert failed is not None
    assert (failed.passed, failed.step_index) == (False, 1)
    unit = book.unit("S1")
    assert (unit.next_step, unit.failed_attempts, unit.status) == (1, 1, UnitStatus.WAITING)

    error = refused(book, Reason.INVALID_PROCESS_STEP, book.enter_step, "S1", "W1", at(40), "PRG-WASH-1")
    assert "it failed OP20 and must repeat it or be split to rework" in error.message

    book.enter_step("S1", "M2", at(50), "PRG-MILL-100")  # the repeat, on any mill of the group
    book.leave_step("S1", "M2", False, at(60), 10.0)
    assert unit.failed_attempts == 2
    book.enter_step("S1", "M3", at(70), "PRG-MILL-100")
    book.leave_step("S1", "M3", True, at(80), 10.0)
    assert (unit.next_step, unit.failed_attempts) == (2, 0)
    book.enter_step("S1", "W1", at(90), "PRG-WASH-1")
    records = [e for e in book.events if isinstance(e, StepRecorded) and e.serial == "S1"]
    assert [(r.step_index, r.passed) for r in records] == [(0, True), (1, False), (1, False), (1, True)]


def test_units_flow_individually() -> None:
    book = make_book()
    running_job(book)
    start(book, "WO-1", "S1")
    start(book, "WO-1", "S2")
    pass_step(book, "S1", at(10), 1.0)
    pass_step(book, "S1", at(20), 1.0)
    book.enter_step("S1", "W1", at(30), "PRG-WASH-1")  # unit 1 at step 3 ...
    assert book.unit("S2").next_step == 0  # ... while unit 2 is still at step 1
    assert book.unit("S2").station == "L1"
    pass_step(book, "S2", at(40), 1.0)
    book.enter_step("S2", "M4", at(50), "PRG-MILL-100")
    assert (book.unit("S1").station, book.unit("S2").station) == ("W1", "M4")


# ---------------------------------------------------------------- leaving is a fact
def test_leaving_a_step_records_what_happened() -> None:
    book = make_book()
    running_job(book)
    unit_waiting_for_mill(book)
    book.enter_step("S1", "M1", at(20), "PRG-MILL-100")
    record = book.leave_step("S1", "M1", True, at(940), 920.0, flags=("late",))
    assert record == StepRecorded(
        serial="S1",
        job="WO-1",
        step_index=1,
        operation="OP20",
        station="M1",
        entered_at=at(20),
        left_at=at(940),
        passed=True,
        elapsed=920.0,
        expected=OP20.expected_seconds,
        labor=False,
        flags=("late",),
    )
    assert book.events[-1] == record
    assert book.unit("S1").last_activity == at(940)


def test_an_end_without_a_start_counts_where_the_station_serves_the_step() -> None:
    book = make_book()
    running_job(book)
    unit_waiting_for_mill(book)
    record = book.leave_step("S1", "M2", True, at(30), None)
    assert record is not None
    assert (record.entered_at, record.elapsed, record.step_index) == (None, None, 1)
    assert book.unit("S1").next_step == 2


def test_an_end_without_a_start_elsewhere_moves_nothing() -> None:
    book = make_book()
    running_job(book)
    unit_waiting_for_mill(book)
    before = snapshot(book)
    assert book.leave_step("S1", "C1", True, at(30), None) is None
    assert snapshot(book) == before
    refused(book, Reason.NOT_FOUND, book.leave_step, "S1", "X9", True, at(30), None)
    refused(book, Reason.NOT_FOUND, book.leave_step, "S404", "M1", True, at(30), None)


def test_a_finished_unit_leaving_again_changes_nothing() -> None:
    book = make_book()
    running_job(book, operations=("OP10",))
    start(book, "WO-1", "S1")
    pass_step(book, "S1", at(10), 1.0)
    before = snapshot(book)
    assert book.leave_step("S1", "L1", True, at(20), 1.0) is None
    assert snapshot(book) == before


# ---------------------------------------------------------------- new units
def test_serials_must_be_new_and_clean() -> None:
    book = make_book()
    running_job(book)
    start(book, "WO-1", "S1")
    error = refused(book, Reason.DUPLICATE_SERIAL, start, book, "WO-1", "S1")
    assert "S1 exists already" in error.message
    refused(book, Reason.INVALID_ARGUMENT, start, book, "WO-1", " S2")
    refused(book, Reason.INVALID_ARGUMENT, start, book, "WO-1", "")
    refused(book, Reason.DUPLICATE_SERIAL, book.check_serials_free, ["S7", "S7"])


def test_a_job_bound_to_pallets_refuses_others() -> None:
    book = make_book()
    job = book.create_job(NewJob("PX-1", "A", 5, job_id="WO-1", pallets=("P1", "P2")), T0, "planner")
    book.release(job.id, "manager", T0)
    assert book.check_new_units("WO-1", "L1", 2, "P2") is job
    error = refused(book, Reason.WRONG_RESOURCE, book.check_new_units, "WO-1", "L1", 2, "P3")
    assert "only on pallets P1, P2, not P3" in error.message
    refused(book, Reason.INVALID_ARGUMENT, book.check_new_units, "WO-1", "L1", 0)
