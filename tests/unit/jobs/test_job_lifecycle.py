"""The job state machine Created -> Released -> Running -> Closed with Hold, its record, and the counts."""

from __future__ import annotations

from gateway.errors import Reason
from gateway.jobs.book import JobBook, NewJob
from gateway.jobs.events import JobStateChanged, UnitFinished, UnitScrapped, UnitStarted
from gateway.jobs.model import CostKind, JobState, UnitStatus, Variance
from tests.support import T0

from .demo_book import OP10, OP20, OP30, OP40, OP50, at, make_book, new_job, pass_step, refused, released_job, start

CREATED, RELEASED, RUNNING, HOLD, CLOSED = (
    JobState.CREATED,
    JobState.RELEASED,
    JobState.RUNNING,
    JobState.HOLD,
    JobState.CLOSED,
)


def state_changes(book: JobBook) -> list[JobStateChanged]:
    """The book's record of job state changes, in order."""
    return [e for e in book.events if isinstance(e, JobStateChanged)]


# ---------------------------------------------------------------- creation
def test_a_new_job_is_created_with_a_generated_id_and_recorded() -> None:
    book = make_book()
    first = new_job(book, quantity=5)
    second = new_job(book)
    assert (first.id, second.id) == ("J-0001", "J-0002")
    assert first.state is CREATED
    assert not first.shop_floor_visible
    created = JobStateChanged("J-0001", None, CREATED, "created (automatic)", "planner", T0)
    assert book.events[0] == state_changes(book)[0] == created


def test_a_supplied_job_id_must_be_new_and_generated_ids_skip_past_it() -> None:
    book = make_book()
    new_job(book, "J-0007")
    error = refused(book, Reason.DUPLICATE_ID, new_job, book, "J-0007")
    assert "J-0007" in error.message
    assert new_job(book).id == "J-0008"


def test_creation_arguments_are_checked() -> None:
    book = make_book()
    refused(book, Reason.INVALID_ARGUMENT, new_job, book, quantity=0)
    refused(book, Reason.INVALID_ARGUMENT, new_job, book, buffer=-1.0)
    refused(book, Reason.INVALID_ARGUMENT, new_job, book, buffer=100.5)
    refused(book, Reason.INVALID_ARGUMENT, new_job, book, part="")
    refused(book, Reason.NOT_FOUND, new_job, book, operations=("OP10", "OP11"))
    refused(book, Reason.NOT_FOUND, book.create_job, NewJob("PX-1", "A", 5, pallets=("P1", "P9")), T0, "planner")
    assert book.jobs == {}


def test_the_cell_default_yield_buffer_applies_when_none_is_given() -> None:
    book = make_book(default_yield_buffer_percent=5.0)
    job = new_job(book, quantity=100, buffer=None)
    assert job.yield_buffer_percent == 5.0
    assert job.max_quantity == 105
    assert new_job(book, quantity=100, buffer=0.0).max_quantity == 100


def test_pallets_are_kept_once_each_in_order() -> None:
    book = make_book()
    job = book.create_job(NewJob("PX-1", "A", 5, pallets=("P3", "P1", "P3")), T0, "planner")
    assert job.pallets == ("P3", "P1")


# ---------------------------------------------------------------- the happy path
def test_a_job_goes_created_released_running_closed_and_every_step_is_recorded() -> None:
    book = make_book()
    job = new_job(book, "WO-1", quantity=2)
    book.release("WO-1", "manager", at(60))
    assert job.state is RELEASED
    assert job.released_at == at(60)
    assert job.shop_floor_visible

    start(book, "WO-1", "S1", at(120))
    assert job.state is RUNNING
    start(book, "WO-1", "S2", at(130))  # only the first unit starts the clock
    book.close("WO-1", "target reached", "erp", at(999))
    assert job.state is CLOSED
    assert job.closed_at == at(999)

    assert state_changes(book) == [
        JobStateChanged("WO-1", None, CREATED, "created (automatic)", "planner", T0),
        JobStateChanged("WO-1", CREATED, RELEASED, "released", "manager", at(60)),
        JobStateChanged("WO-1", RELEASED, RUNNING, "first unit S1 started at L1", "cell", at(120)),
        JobStateChanged("WO-1", RUNNING, CLOSED, "target reached", "erp", at(999)),
    ]
    assert [e for e in book.events if isinstance(e, UnitStarted)] == [
        UnitStarted("S1", "WO-1", "L1", at(120)),
        UnitStarted("S2", "WO-1", "L1", at(130)),
    ]


def test_a_release_reason_is_recorded_when_given() -> None:
    book = make_book()
    new_job(book, "WO-1")
    book.release("WO-1", "manager", T0, "material picked")
    assert state_changes(book)[-1].reason == "material picked"


# ---------------------------------------------------------------- hold
def test_hold_from_released_resumes_to_released() -> None:
    book = make_book()
    job = released_job(book, "WO-1")
    book.hold("WO-1", "material shortage", "quality", at(10))
    assert (job.state, job.held_from) == (HOLD, RELEASED)
    book.resume("WO-1", "quality", at(20))
    assert (job.state, job.held_from) == (RELEASED, None)
    assert state_changes(book)[-2:] == [
        JobStateChanged("WO-1", RELEASED, HOLD, "material shortage", "quality", at(10)),
        JobStateChanged("WO-1", HOLD, RELEASED, "resumed", "quality", at(20)),
    ]


def test_hold_from_running_resumes_to_running() -> None:
    book = make_book()
    job = released_job(book, "WO-1")
    start(book, "WO-1", "S1")
    book.hold("WO-1", "machine breakdown", "engineer", at(10))
    assert job.held_from is RUNNING
    book.resume("WO-1", "engineer", at(20), "M1 repaired")
    assert job.state is RUNNING
    assert state_changes(book)[-1] == JobStateChanged("WO-1", HOLD, RUNNING, "M1 repaired", "engineer", at(20))


def test_hold_blocks_new_starts_and_entries_but_a_step_already_begun_still_ends() -> None:
    book = make_book()
    job = released_job(book, "WO-1")
    start(book, "WO-1", "S1")
    start(book, "WO-1", "S2")
    pass_step(book, "S2", at(10), 10.0)
    book.enter_step("S2", "M1", at(20), "PRG-MILL-100")  # S2 is milling when the hold comes
    book.hold("WO-1", "quality issue", "quality", at(30))

    error = refused(book, Reason.JOB_ON_HOLD, start, book, "WO-1", "S3", at(40))
    assert "on hold" in error.message
    refused(book, Reason.JOB_ON_HOLD, book.check_new_units, "WO-1", "L1")
    # S1 is in its load step, S2 in its mill step: both end, as facts, and are recorded.
    record = book.leave_step("S2", "M1", True, at(50), 30.0)
    assert record is not None
    assert (record.operation, record.passed, record.elapsed) == ("OP20", True, 30.0)
    assert book.leave_step("S1", "L1", True, at(50), 50.0) is not None
    # ...but neither may enter the next step until the hold is released.
    refused(book, Reason.JOB_ON_HOLD, book.enter_step, "S1", "M2", at(60), "PRG-MILL-100")
    refused(book, Reason.JOB_ON_HOLD, book.enter_step, "S2", "W1", at(60), "PRG-WASH-1")

    book.resume("WO-1", "quality", at(70))
    book.enter_step("S2", "W1", at(80), "PRG-WASH-1")
    assert book.unit("S2").station == "W1"
    assert job.started == 2


def test_illegal_transitions_are_refused_with_their_reason() -> None:
    book = make_book()
    job = new_job(book, "WO-1")
    refused(book, Reason.JOB_NOT_RELEASED, book.hold, "WO-1", "why", "quality", T0)
    refused(book, Reason.JOB_NOT_RELEASED, book.resume, "WO-1", "quality", T0)

    book.release("WO-1", "manager", T0)
    error = refused(book, Reason.INVALID_TRANSITION, book.release, "WO-1", "manager", T0)
    assert "Released" in error.message
    refused(book, Reason.INVALID_TRANSITION, book.resume, "WO-1", "quality", T0)

    book.hold("WO-1", "why", "quality", T0)
    refused(book, Reason.JOB_ON_HOLD, book.hold, "WO-1", "again", "quality", T0)
    refused(book, Reason.JOB_ON_HOLD, book.release, "WO-1", "manager", T0)

    book.close("WO-1", "cancelled", "erp", T0)
    for call, args in (
        (book.release, ("WO-1", "manager", T0)),
        (book.hold, ("WO-1", "why", "quality", T0)),
        (book.resume, ("WO-1", "quality", T0)),
        (book.close, ("WO-1", "again", "erp", T0)),
    ):
        refused(book, Reason.JOB_CLOSED, call, *args)
    assert job.held_from is None
    refused(book, Reason.NOT_FOUND, book.release, "WO-404", "manager", T0)


def test_a_created_job_blocks_execution() -> None:
    book = make_book()
    new_job(book, "WO-1")
    error = refused(book, Reason.JOB_NOT_RELEASED, start, book, "WO-1", "S1")
    assert "WO-1 is not released" in error.message
    refused(book, Reason.JOB_NOT_RELEASED, book.check_new_units, "WO-1", "L1", 3)


# ---------------------------------------------------------------- close
def test_close_reports_the_variance_and_stops_new_starts() -> None:
    book = make_book()
    job = released_job(book, "WO-1", quantity=10, buffer=10.0)
    for n in range(1, 7):
        start(book, "WO-1", f"S{n}")
    for serial in ("S1", "S2"):
        for _ in range(5):
            pass_step(book, serial, at(100), 1.0)
    book.scrap("S3", "crash", at(200))

    variance = book.close("WO-1", "short-closed", "erp", at(300))
    assert variance == Variance("WO-1", ordered=10, started=6, finished=2, scrapped=1, wip=3, freed=5)
    assert variance.shortfall == 8
    assert job.state is CLOSED
    refused(book, Reason.JOB_CLOSED, start, book, "WO-1", "S7")
    refused(book, Reason.JOB_CLOSED, book.check_new_units, "WO-1", "L1")


def test_units_in_wip_of_a_closed_job_may_finish_their_routing() -> None:
    """Seed 001: "back out of the 12 non-produced parts ... add a new booking for 12": a close (or a
    back-out) frees what was not started; the units already in progress are not stranded."""
    book = make_book()
    job = released_job(book, "WO-1", quantity=3)
    for serial in ("S1", "S2"):
        start(book, "WO-1", serial)
    book.close("WO-1", "backed out", "erp", at(10))
    for _ in range(5):
        pass_step(book, "S1", at(20), 1.0)
    assert book.unit("S1").status is UnitStatus.FINISHED
    assert (job.started, job.finished, job.wip) == (2, 1, 1)
    # control: nothing new starts in it
    refused(book, Reason.JOB_CLOSED, start, book, "WO-1", "S3")


def test_units_of_a_closed_job_still_record_what_they_do() -> None:
    book = make_book()
    job = released_job(book, "WO-1", quantity=1)
    start(book, "WO-1", "S1")
    book.close("WO-1", "done", "erp", at(10))
    assert book.leave_step("S1", "L1", True, at(20), 20.0) is not None
    assert book.unit("S1").next_step == 1
    book.scrap("S1", "dropped", at(30))
    assert (job.started, job.scrapped, job.wip) == (1, 1, 0)


def test_a_created_job_can_be_cancelled_freeing_its_whole_quantity() -> None:
    book = make_book()
    new_job(book, "WO-1", quantity=25)
    variance = book.close("WO-1", "cancelled", "erp", T0)
    assert variance == Variance("WO-1", 25, 0, 0, 0, 0, 25)
    assert state_changes(book)[-1].from_state is CREATED


def test_close_from_hold_clears_the_hold() -> None:
    book = make_book()
    job = released_job(book, "WO-1")
    book.hold("WO-1", "why", "quality", T0)
    book.close("WO-1", "", "erp", at(5))
    assert (job.state, job.held_from) == (CLOSED, None)
    assert state_changes(book)[-1] == JobStateChanged("WO-1", HOLD, CLOSED, "closed", "erp", at(5))


# ---------------------------------------------------------------- counts
def test_counts_per_job_and_per_step_stay_consistent() -> None:
    book = make_book()
    job = released_job(book, "WO-1", quantity=10)
    for n in range(1, 7):
        start(book, "WO-1", f"S{n}")
    # S1 finishes; S2 waits for OP30; S3 is in OP20; S4 is scrapped; S5, S6 are still loading.
    for _ in range(5):
        pass_step(book, "S1", at(10), 1.0)
    pass_step(book, "S2", at(10), 1.0)
    pass_step(book, "S2", at(20), 1.0)
    pass_step(book, "S3", at(10), 1.0)
    book.enter_step("S3", "M2", at(30), "PRG-MILL-100")
    book.scrap("S4", "fell off the pallet", at(40))

    assert (job.started, job.scrapped, job.finished, job.wip) == (6, 1, 1, 4)
    assert book.wip_by_step("WO-1") == [(OP10, 2), (OP20, 1), (OP30, 1), (OP40, 0), (OP50, 0)]
    statuses = {u.serial: u.status for u in book.units_of("WO-1")}
    assert statuses == {
        "S1": UnitStatus.FINISHED,
        "S2": UnitStatus.WAITING,
        "S3": UnitStatus.IN_STEP,
        "S4": UnitStatus.SCRAPPED,
        "S5": UnitStatus.IN_STEP,
        "S6": UnitStatus.IN_STEP,
    }
    assert [e for e in book.events if isinstance(e, UnitFinished)] == [UnitFinished("S1", "WO-1", at(10))]
    assert [e for e in book.events if isinstance(e, UnitScrapped)] == [
        UnitScrapped("S4", "WO-1", "fell off the pallet", at(40))
    ]


def test_a_finished_or_scrapped_unit_cannot_be_scrapped() -> None:
    book = make_book()
    released_job(book, "WO-1")
    start(book, "WO-1", "S1")
    start(book, "WO-1", "S2")
    for _ in range(5):
        pass_step(book, "S1", at(10), 1.0)
    book.scrap("S2", "crash", at(20))
    error = refused(book, Reason.INVALID_TRANSITION, book.scrap, "S1", "late", at(30))
    assert "finished" in error.message
    refused(book, Reason.INVALID_TRANSITION, book.scrap, "S2", "twice", at(30))
    refused(book, Reason.NOT_FOUND, book.scrap, "S404", "unknown", at(30))


def test_job_cost_sums_elapsed_and_expected_time_per_category() -> None:
    """Seed 001: elapsed labor "is the amount of time a pallet spends at the load station", elapsed
    machining "the amount of time a pallet spends at the machine"; wash and inspection apart."""
    book = make_book()
    released_job(book, "WO-1")
    start(book, "WO-1", "S1")
    pass_step(book, "S1", at(10), 100.0)  # OP10 load: labor
    pass_step(book, "S1", at(20), 800.0)  # OP20 mill: the cycle; the pallet's time there counts
    book.add_pallet_time("S1", CostKind.MACHINING, 830.0)
    book.enter_step("S1", "W1", at(30), "PRG-WASH-1")
    book.leave_step("S1", "W1", False, at(40), 170.0)  # OP30 wash failed: its time still spent
    book.add_pallet_time("S1", CostKind.WASH, 175.0)
    cost = book.job_cost("WO-1")
    assert (cost.elapsed_labor, cost.expected_labor) == (100.0, OP10.expected_seconds)
    assert (cost.elapsed_machine, cost.expected_machine) == (830.0, 900.0)
    assert (cost.elapsed_wash, cost.expected_wash) == (175.0, 180.0)
    assert (cost.unknown_elapsed, cost.unknown_expected) == (0, 0)
    # A pallet time that cannot be measured: counted unknown, the measured ones still summed.
    book.leave_step("S1", "W1", True, at(50), None)
    book.add_pallet_time("S1", CostKind.WASH, None)
    cost = book.job_cost("WO-1")
    assert cost.unknown_elapsed == 1
    assert cost.unknown_of("elapsed", CostKind.WASH) == 1
    assert cost.elapsed_wash == 175.0
    assert book.unit("S1").next_step == 3
