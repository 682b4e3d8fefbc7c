"""Retiring stored jobs and units from memory changes no answer: a lean model against one that keeps
everything.

Both models get the same commands. After each command the lean one retires every job it may and
sheds the finished and scrapped units of the jobs that stay (with an in-memory "store" of everything
it changed, as the writer saves it) and, before each command, adopts back from that store what
:meth:`CellModel.references` names, as the writer does. Every answer (outputs, flags, or refusal
reason and message), every event and every set of changed entities must be the same, memory plus store
must hold exactly the full model's jobs and units (the units of a job in the same order), and
workorder cost reports must be identical. Then stored rows (as rows.py and orders_rows.py make them)
restore a fresh model with only the live state.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import replace
from datetime import date, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import hypothesis
import pytest
from hypothesis import HealthCheck, currently_in_test_context, given, settings
from hypothesis import strategies as st

from gateway.app import build_model
from gateway.cell.commands import Command
from gateway.cell.model import CellModel, Changes
from gateway.config import load_config
from gateway.errors import Refused
from gateway.jobs.commands import (
    CloseJob,
    CreateJob,
    FlagStaleUnits,
    HoldJob,
    MergeJobs,
    ReleaseJob,
    ResolveAudit,
    ResumeJob,
    SplitJob,
)
from gateway.jobs.events import JobEvent, UnitsMoved
from gateway.jobs.model import Job, JobState, Unit, UnitStatus
from gateway.orders import cost_report
from gateway.orders.commands import (
    AssignSerials,
    BackOutJob,
    MarkWorkorderFilled,
    ReceiveOrder,
    UnassignSerial,
)
from gateway.storage import orders_rows as O
from gateway.storage import rows as R
from gateway.storage.store import restore_model
from gateway.tracking.reports import LoadCompleted, PalletArrived, ScanIn, ScanOut, ScanResult, Scrap, StartUnit
from tests.support import DEMO_CONFIG, T0

STATION_FOR = {"OP10": "L1", "OP20": "M1", "OP30": "W1", "OP40": "L1", "OP50": "C1"}
JOB_IDS = ["", "", "J-0001", "J-0002", "X1"]
SERIALS = ["", "", "S1", "S2", "DEMO-000004"]


def event(value: str) -> None:
    """Hypothesis statistics (pytest --hypothesis-show-statistics), outside a Hypothesis test too."""
    if currently_in_test_context():
        hypothesis.event(value)


def _model(assign_at_unload: bool) -> CellModel:
    config = load_config(DEMO_CONFIG, env={})
    if assign_at_unload:
        data = config.model_dump()
        data["cell"]["assign_workorder_at_unload"] = True
        config = type(config).model_validate(data)
    return build_model(config)


class Store:
    """What the writer saved: every job and unit the lean model changed, as it was then."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.units: dict[str, Unit] = {}

    def save(self, model: CellModel) -> Changes:
        changes = model.drain()
        for job_id in changes.jobs.jobs:
            self.jobs[job_id] = copy.deepcopy(model.book.jobs[job_id])
        for serial in changes.jobs.units:
            self.units[serial] = copy.deepcopy(model.book.units[serial])
        return changes

    def fetch(self, job_ids: frozenset[str], serials: frozenset[str]) -> tuple[list[Job], list[Unit]]:
        """As storage.store.fetch_retired: the jobs named, the jobs of the serials, all their units."""
        wanted = set(job_ids) | {self.units[s].job_id for s in serials if s in self.units}
        jobs = [copy.deepcopy(self.jobs[j]) for j in sorted(wanted) if j in self.jobs]
        found = {j.id for j in jobs}
        return jobs, [copy.deepcopy(u) for u in self.units.values() if u.job_id in found]


class Pair:
    def __init__(self, assign_at_unload: bool) -> None:
        self.full = _model(assign_at_unload)
        self.lean = _model(assign_at_unload)
        self.store = Store()
        self.now = T0
        self.ids = 0
        self.retired = 0
        self.shed = 0
        self.events: list[JobEvent] = []  # of the last command

    def send(self, command: Command) -> None:
        self.now += timedelta(seconds=60)
        lean = self.lean.book
        job_ids, serials = self.lean.references(command)
        # held jobs are named only when the command needs all of their units and memory lacks some
        assert all(not lean.complete(j) for j in job_ids & set(lean.jobs))
        assert not (serials & set(lean.units))
        jobs, units = self.store.fetch(job_ids, serials)
        if any(j.id not in lean.jobs for j in jobs):
            event("adopted a retired job")
        returned = any(u.job_id in lean.jobs for u in units if u.serial not in lean.units)
        if returned:
            event(f"adopted units of a held job for {type(command).__name__}")
        self.lean.adopt(jobs, units)
        assert all(lean.complete(j.id) for j in jobs)
        assert not lean.dirty.jobs
        assert not lean.dirty.units
        expected = _answer(self.full, command, self.now)
        got = _answer(self.lean, command, self.now)
        assert got == expected, command
        if returned and isinstance(command, MergeJobs) and got[0] == "done":
            event("merged units that had left memory")
        full_changes = self.full.drain()
        self.events = list(full_changes.jobs.events)
        lean_changes = self.store.save(self.lean)
        assert lean_changes.jobs.events == full_changes.jobs.events, command  # the merge's units in the same order
        assert (lean_changes.jobs.jobs, lean_changes.jobs.units) == (full_changes.jobs.jobs, full_changes.jobs.units), (
            command
        )
        held = len(lean.units)
        retired = self.lean.retire(sorted(lean.jobs))
        self.retired += len(retired)
        for job_id in retired:
            assert self.full.book.jobs[job_id].state is JobState.CLOSED
            if any(u.status is UnitStatus.FINISHED for u in self.full.book.units_of(job_id)):
                event("retired a job with finished units")
        shed = held - len(lean.units) - sum(len(self.full.book.units_of(j)) for j in retired)
        if shed:
            event("shed units of a job that stays")
        self.shed += shed
        self.check()

    def eid(self) -> str:
        self.ids += 1
        return f"e{self.ids}"

    def check(self) -> None:
        full, lean = self.full.book, self.lean.book
        for job_id, job in full.jobs.items():
            held = lean.jobs.get(job_id)
            assert (held if held is not None else self.store.jobs[job_id]) == job, job_id
        for serial, unit in full.units.items():
            held_unit = lean.units.get(serial)
            assert (held_unit if held_unit is not None else self.store.units[serial]) == unit, serial
            if held_unit is None:
                assert not unit.live
                assert serial not in {s for p in self.lean.tracker.pallets.values() for s in p.units}
        assert set(lean.jobs) <= set(full.jobs)
        assert set(lean.units) <= set(full.units)
        on_pallets = {s for p in self.lean.tracker.pallets.values() for s in p.units}
        for job_id in lean.jobs:  # a job is held with its units in memory, in the same order
            every = full.units_of(job_id)
            assert [u.serial for u in lean.units_of(job_id)] == [u.serial for u in every if u.serial in lean.units]
            assert lean.complete(job_id) == all(u.serial in lean.units for u in every)
            for unit in every:  # what left memory: neither live, nor on a pallet, nor a serial to generate
                if unit.serial not in lean.units:
                    assert unit.serial not in on_pallets
                    assert not self.lean.tracker.may_generate(unit.serial)
        assert [j.id for j in lean.open_jobs()] == [j.id for j in full.open_jobs()]
        assert [u.serial for u in lean.live_units()] == [u.serial for u in full.live_units()]
        assert [u.serial for u in lean.open_audits()] == [u.serial for u in full.open_audits()]
        assert repr(self.lean.tracker.pallets) == repr(self.full.tracker.pallets)
        assert self.lean.orders.workorders == self.full.orders.workorders
        for lean_wo, full_wo in zip(self.lean.orders.workorders, self.full.orders.workorders, strict=True):
            if full_wo.filled:
                # as the report was made before workorders kept times: from the units in the book
                from_units = cost_report(full_wo, O.unit_costs(full, full_wo.all_serials))
                assert O.report_for(lean_wo, lean) == O.report_for(full_wo, full) == from_units
                if full_wo.serials:
                    event("a workorder filled with serials")


def _answer(model: CellModel, command: Command, at: datetime) -> Any:
    try:
        outcome = model.apply(command, at, "tester")
    except Refused as refused:
        return ("refused", refused.reason, refused.message)
    return ("done", outcome.outputs, outcome.flags, outcome.at)


Step = tuple[int, int, int, int]
steps = st.lists(
    st.tuples(st.integers(0, 22), st.integers(0, 50), st.integers(0, 50), st.integers(0, 3)), min_size=20, max_size=80
)


def _pick(items: list[str], index: int) -> str:
    return items[index % len(items)] if items else "none"


def _finish(pair: Pair, serial: str) -> Iterator[Command]:
    """The unit through every step it has left, at the station for each."""
    for _ in range(8):
        unit = pair.full.book.units[serial]
        step = pair.full.book.next_step(unit) if unit.live else None
        if step is None:
            return
        station = unit.station or STATION_FOR[step.operation]
        if unit.status is UnitStatus.WAITING:
            yield ScanIn(station, pair.eid(), None, serial)
        yield ScanOut(station, pair.eid(), None, serial, ScanResult.PASS)


def _make(pair: Pair, count: int, close: bool) -> Iterator[Command]:
    """A job made start to finish: created, released, its units made, closed if asked."""
    before = set(pair.full.book.jobs)
    yield CreateJob(part="ABC123", revision="A", quantity=count)
    (job,) = set(pair.full.book.jobs) - before
    yield ReleaseJob(job)
    for _ in range(count):
        known = set(pair.full.book.units)
        yield StartUnit("L1", pair.eid(), None, job)
        for serial in set(pair.full.book.units) - known:
            yield from _finish(pair, serial)
    if close:
        yield CloseJob(job, "made")


def _command(pair: Pair, step: Step) -> Iterator[Command]:
    """Commands made from the full model's state as it goes (so retired jobs and serials get named)."""
    yield from _commands(pair, step)


def _commands(pair: Pair, step: Step) -> list[Command] | Iterator[Command]:
    kind, a, b, c = step
    book = pair.full.book
    jobs = sorted(book.jobs)
    serials = sorted(book.units)
    job, serial = _pick(jobs, a), _pick(serials, b)
    match kind:
        case 0:
            return [CreateJob(part="ABC123", revision="A", quantity=1 + c, job_id=JOB_IDS[a % len(JOB_IDS)])]
        case 1:
            return [ReleaseJob(job)]
        case 2:
            return [CloseJob(job, "done")]
        case 3:
            return [StartUnit("L1", pair.eid(), None, job, SERIALS[b % len(SERIALS)])]
        case 4 | 5:  # a unit through its next step at the station for it
            unit = book.units.get(serial)
            step_ = book.next_step(unit) if unit is not None and unit.live else None
            station = STATION_FOR[step_.operation] if step_ is not None else "C1"
            result = ScanResult.PASS if kind == 4 or c else ScanResult.FAIL
            return [ScanIn(station, pair.eid(), None, serial), ScanOut(station, pair.eid(), None, serial, result)]
        case 6:
            return [Scrap("C1", pair.eid(), None, serial, "dropped")]
        case 7:
            pallet = f"P{1 + c}"
            given = () if a % 2 else tuple(SERIALS[2 + (b + i) % 3] for i in range(1))
            return [
                PalletArrived("L1", pair.eid(), None, pallet),
                LoadCompleted("L1", pair.eid(), None, pallet, job, 1, given),
            ]
        case 8:
            return [SplitJob(job, (serial,))]
        case 9:
            return [MergeJobs(job, _pick(jobs, b))]
        case 10:
            return [FlagStaleUnits(threshold_seconds=600.0 * (1 + c)), ResolveAudit(serial, "lost" if c else "found")]
        case 11:
            return [HoldJob(job, "wait") if c % 2 else ResumeJob(job)]
        case 12:
            return [ReceiveOrder(f"O{a % 4}", date(2026, 3, 10), c, {"ABC123": 1 + b % 2})]
        case 13:
            finished = [s for s in serials if book.units[s].status is UnitStatus.FINISHED]
            return [AssignSerials(f"O{a % 4}", (_pick(finished, b),))]
        case 14:
            return [MarkWorkorderFilled(f"O{a % 4}")]
        case 15:
            return [UnassignSerial(serial, "mistake")]
        case 16:
            return [BackOutJob(job, "no material")]
        case 17:
            live = [u.serial for u in book.live_units()]
            return _finish(pair, _pick(live, b)) if live else []
        case 18:  # a finished or scrapped serial scanned, scrapped or split off again
            done = [s for s in serials if not book.units[s].live]
            gone = _pick(done, b)
            owner = book.units[gone].job_id if gone in book.units else job
            return [
                [ScanIn(STATION_FOR["OP20"], pair.eid(), None, gone)],
                [ScanOut("C1", pair.eid(), None, gone, ScanResult.PASS)],
                [Scrap("C1", pair.eid(), None, gone, "dropped")],
                [SplitJob(owner, (gone,))],
            ][c]
        case 19:  # two open jobs with finished units merged, one way or the other
            open_jobs = [j.id for j in book.open_jobs() if j.state is not JobState.CREATED]
            if len(open_jobs) < 2:
                return []
            target = _pick(open_jobs, a)
            return [MergeJobs(target, _pick([j for j in open_jobs if j != target], b))]
        case _:
            return _make(pair, 1 + c % 3, close=a % 3 != 0)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(assign_at_unload=st.booleans(), script=steps)
def test_a_model_that_retires_answers_like_one_that_keeps_everything(
    assign_at_unload: bool, script: list[Step]
) -> None:
    pair = Pair(assign_at_unload)
    for step in script:
        for command in _command(pair, step):
            pair.send(command)
    event(f"jobs retired: {min(pair.retired, 3)}")
    _restore_and_compare(pair)


def _restore_and_compare(pair: Pair) -> None:
    """Every stored row, as an in-memory store hands them over, restores exactly the live state."""
    lean, full = pair.lean, pair.full
    tables: dict[str, list[dict[str, Any]]] = {
        "jobs": [R.job_row(j) for j in pair.store.jobs.values()],
        "units": [R.unit_row(u) for u in pair.store.units.values()],
        "pallets": [R.pallet_row(p) for p in lean.tracker.pallets.values()],
        "stations": [R.station_row(s) for s in lean.tracker.stations.values()],
        "gateway_meta": [{"key": "serial_seq", "value": str(lean.tracker.serial_seq)}],
        "workorders": [O.workorder_row(w) for w in lean.orders.workorders],
        "workorder_parts": [r for w in lean.orders.workorders for r in O.workorder_part_rows(w)],
        "workorder_serials": [r for w in lean.orders.workorders for r in O.workorder_serial_rows(w)],
        "bookings": [O.booking_row(b) for b in lean.orders.bookings],
        "booking_parts": [r for b in lean.orders.bookings for r in O.booking_part_rows(b)],
    }
    fresh = _model(lean.assign_workorder_at_unload)
    restore_model(fresh, {name: [SimpleNamespace(**row) for row in rows] for name, rows in tables.items()})
    on_pallets = {s for p in full.tracker.pallets.values() for s in p.units}

    def held(unit: Unit) -> bool:
        return unit.live or unit.audit_flagged or unit.serial in on_pallets or fresh.tracker.may_generate(unit.serial)

    live = {
        j.id
        for j in full.book.jobs.values()
        if j.state is not JobState.CLOSED or any(held(u) for u in full.book.units_of(j.id))
    }
    assert set(fresh.book.jobs) == live
    for job_id in live:
        assert fresh.book.jobs[job_id] == full.book.jobs[job_id]
        assert not fresh.book.complete(job_id)  # storage may hold more of its units
        assert sorted(u.serial for u in fresh.book.units_of(job_id)) == sorted(
            u.serial for u in full.book.units_of(job_id) if held(u)
        )
    assert fresh.tracker.serial_seq == full.tracker.serial_seq
    assert fresh.orders.workorders == full.orders.workorders
    for fresh_wo, full_wo in zip(fresh.orders.workorders, full.orders.workorders, strict=True):
        if not full_wo.filled:
            # the times its cost report will be made of, without the units in memory
            assert fresh_wo.costs == {s: c for s, c in full_wo.costs.items() if s in full.book.units}
            filled = replace(full_wo, filled=True, filled_at=T0)
            assert O.report_for(replace(fresh_wo, filled=True, filled_at=T0), fresh.book) == O.report_for(
                filled, full.book
            )
    # generated job ids continue after every stored one, retired or not
    create = CreateJob(part="ABC123", revision="A", quantity=1)
    assert _answer(fresh, create, pair.now) == _answer(full, create, pair.now)


def _made(pair: Pair, count: int, *, close: bool = True) -> str:
    for command in _make(pair, count, close):
        pair.send(command)
    return sorted(pair.full.book.jobs)[-1]


def test_a_retired_job_and_its_serials_are_refused_and_answered_as_before() -> None:
    pair = Pair(False)
    job = _made(pair, 2)
    serials = [u.serial for u in pair.full.book.units_of(job)]
    assert pair.retired == 1
    assert job not in pair.lean.book.jobs
    assert not set(serials) & set(pair.lean.book.units)
    other = _made(pair, 1, close=False)
    for command in (
        CreateJob(part="ABC123", revision="A", quantity=1, job_id=job),  # DuplicateId
        StartUnit("L1", pair.eid(), None, other, serials[0]),  # DuplicateSerial
        ScanIn("C1", pair.eid(), None, serials[1]),  # finished: no step left
        ScanOut("C1", pair.eid(), None, serials[1], ScanResult.PASS),  # recorded, flagged UnitNotInWip
        ReleaseJob(job),
        MergeJobs(other, job),
        SplitJob(job, (serials[0],)),
    ):
        pair.send(command)  # the lean model adopts, answers as the full one, and retires again
    assert job not in pair.lean.book.jobs


def test_cost_reports_do_not_need_retired_units() -> None:
    pair = Pair(True)  # finished serials go to workorders at unload
    pair.send(ReceiveOrder("A", date(2026, 3, 10), 1, {"ABC123": 3}))
    job = _made(pair, 2)
    assert job not in pair.lean.book.jobs  # its units are gone from memory
    workorder = pair.lean.orders.workorder("A")
    assert not workorder.filled
    assert set(workorder.costs) == set(workorder.all_serials)
    _made(pair, 1)
    filled = pair.lean.orders.workorder("A")
    assert filled.filled
    assert filled.report is not None
    assert filled.report.elapsed_labor_s > 0
    assert O.report_for(filled, pair.lean.book) == O.report_for(pair.full.orders.workorder("A"), pair.full.book)


def test_a_hand_given_serial_ahead_of_the_counter_stays_until_the_counter_passes_it() -> None:
    pair = Pair(False)
    pair.send(CreateJob(part="ABC123", revision="A", quantity=1, job_id="H"))
    pair.send(ReleaseJob("H"))
    pair.send(StartUnit("L1", pair.eid(), None, "H", "DEMO-000002"))
    for command in _finish(pair, "DEMO-000002"):
        pair.send(command)
    pair.send(CloseJob("H", "made"))
    assert "H" in pair.lean.book.jobs  # the counter would still generate DEMO-000002
    _made(pair, 2)  # generates DEMO-000001 and DEMO-000003, skipping the held one
    assert sorted(pair.full.book.units) == ["DEMO-000001", "DEMO-000002", "DEMO-000003"]
    pair.send(ReleaseJob("H"))  # any command: then "H" may go
    assert "H" not in pair.lean.book.jobs


def _started(pair: Pair, job: str, *, finish: bool) -> str:
    """A new unit of the job, finished or left waiting for its second step."""
    known = set(pair.full.book.units)
    pair.send(StartUnit("L1", pair.eid(), None, job))
    (serial,) = set(pair.full.book.units) - known
    if finish:
        for command in _finish(pair, serial):
            pair.send(command)
    else:
        pair.send(ScanOut("L1", pair.eid(), None, serial, ScanResult.PASS))
    return serial


def _open_job(pair: Pair, job: str) -> None:
    pair.send(CreateJob(part="ABC123", revision="A", quantity=5, job_id=job))
    pair.send(ReleaseJob(job))


def test_a_merge_after_the_finished_units_of_its_jobs_left_memory_moves_them_in_the_same_order() -> None:
    pair = Pair(False)
    _open_job(pair, "A")
    _open_job(pair, "B")
    # made in turns, so that the merged job's order interleaves the two
    a1 = _started(pair, "A", finish=True)
    b1 = _started(pair, "B", finish=True)
    a2 = _started(pair, "A", finish=False)
    b2 = _started(pair, "B", finish=False)
    a3 = _started(pair, "A", finish=True)
    lean = pair.lean.book
    assert {"A", "B"} <= set(lean.jobs)
    assert not {a1, a3, b1} & set(lean.units)  # finished, their jobs open: out of memory
    assert {a2, b2} <= set(lean.units)
    assert not lean.complete("A")
    assert not lean.complete("B")
    assert pair.lean.references(MergeJobs("B", "A"))[0] == {"A", "B"}

    pair.send(MergeJobs("B", "A"))  # answers, events (unit_events rows) and changed entities: as the full one
    (moved,) = [e for e in pair.events if isinstance(e, UnitsMoved)]
    assert moved.serials == (a1, a2, a3)
    assert [u.serial for u in pair.full.book.units_of("B")] == [a1, b1, a2, b2, a3]
    for serial in (a1, a2, a3):  # the rows stored for the moved units
        assert R.unit_row(pair.store.units[serial]) == R.unit_row(pair.full.book.units[serial])
        assert pair.store.units[serial].job_id == "B"
    assert set(lean.units) == {a2, b2}  # shed again once stored
    assert [u.serial for u in lean.units_of("B")] == [a2, b2]
    pair.send(MergeJobs("B", "A"))  # refused: A is closed now (and retired with no unit left)
    assert pair.events == []


def test_a_finished_serial_that_left_memory_is_refused_as_before() -> None:
    pair = Pair(False)
    _open_job(pair, "A")
    done = _started(pair, "A", finish=True)
    live = _started(pair, "A", finish=False)
    lean = pair.lean.book
    assert "A" in lean.jobs
    assert done not in lean.units
    assert live in lean.units
    for command in (
        ScanIn("M1", pair.eid(), None, done),
        Scrap("C1", pair.eid(), None, done, "dropped"),
        SplitJob("A", (done,)),
        StartUnit("L1", pair.eid(), None, "A", done),
        ResolveAudit(done, "found"),
    ):
        assert pair.lean.references(command)[1] == {done}
        full_answer = _answer(copy.deepcopy(pair.full), command, pair.now + timedelta(seconds=60))
        assert full_answer[0] == "refused"
        pair.send(command)  # the same refusal from the lean model, which adopts the unit back
        assert done not in lean.units  # and sheds it again
    pair.send(ScanOut("C1", pair.eid(), None, done, ScanResult.PASS))  # recorded, flagged UnitNotInWip
    assert pair.full.book.jobs["A"].finished == 1 == lean.jobs["A"].finished


def test_the_book_puts_shed_units_back_in_their_places_and_wants_them_for_whole_job_reads() -> None:
    pair = Pair(False)
    _open_job(pair, "A")
    serials = [_started(pair, "A", finish=n != 1) for n in range(3)]
    book = pair.lean.book
    assert [u.serial for u in book.units_of("A")] == [serials[1]]
    with pytest.raises(ValueError, match="not in memory"):
        book.job_cost("A")
    with pytest.raises(ValueError, match="cannot leave memory"):
        book.shed([serials[1]])  # live
    jobs, units = pair.store.fetch(frozenset({"A"}), frozenset())
    book.adopt(jobs, list(reversed(units)))
    assert [u.serial for u in book.units_of("A")] == serials
    assert book.complete("A")
    assert book.job_cost("A") == pair.full.book.job_cost("A")
    assert not book.dirty.units
