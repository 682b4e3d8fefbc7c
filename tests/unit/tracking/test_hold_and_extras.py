"""Seed rules at the tracking level: a hold blocks all movement, the buffer is never offered.

Each test quotes the seed it comes from and runs a control case beside the rule.
"""

from __future__ import annotations

import json

import pytest

from gateway.errors import Reason, Refused
from gateway.jobs.commands import HoldJob, MergeJobs, ResumeJob, SplitJob
from gateway.jobs.events import JobTargetReached
from gateway.jobs.model import JobState, UnitStatus
from gateway.tracking.anomalies import Anomaly
from gateway.tracking.reports import (
    CycleEnded,
    CycleResult,
    CycleStarted,
    LoadCompleted,
    PalletArrived,
    PalletDeparted,
    ScanIn,
    ScanOut,
    ScanResult,
    Scrap,
)
from tests.unit.tracking.demo_model import Sim

MILL, WASH = "PRG-MILL-100", "PRG-WASH-1"


def loaded(sim: Sim, job: str, pallet: str = "P1", station: str = "L1") -> list[str]:
    sim.apply(PalletArrived(station, sim.eid(), None, pallet))
    serials: list[str] = sim.apply(LoadCompleted(station, sim.eid(), None, pallet, job, 1), after=60).outputs["Serials"]
    sim.apply(PalletDeparted(station, sim.eid(), None, pallet), after=5)
    return serials


def cycle(sim: Sim, station: str, pallet: str, program: str) -> None:
    sim.apply(PalletArrived(station, sim.eid(), None, pallet), after=10)
    sim.apply(CycleStarted(station, sim.eid(), None, pallet, program), after=5)
    sim.apply(CycleEnded(station, sim.eid(), None, pallet, program, CycleResult.OK), after=100)
    sim.apply(PalletDeparted(station, sim.eid(), None, pallet), after=5)


def anomalies(outcome: object) -> set[str]:
    return {f.anomaly.value for f in outcome.flags}  # type: ignore[attr-defined]


def test_a_cycle_end_without_a_start_moves_no_unit_of_a_held_job() -> None:
    """Seed 002: "Block all transactional movement (Move/Consume) until the hold is formally released"."""
    sim = Sim()
    held, free = sim.job(), sim.job()
    [h] = loaded(sim, held, "P1")
    [f] = loaded(sim, free, "P2")
    sim.apply(HoldJob(held, "quality"))
    for pallet in ("P1", "P2"):
        sim.apply(PalletArrived("M1", sim.eid(), None, pallet), after=10)
        outcome = sim.apply(CycleEnded("M1", sim.eid(), None, pallet, MILL, CycleResult.OK), after=100)
        sim.apply(PalletDeparted("M1", sim.eid(), None, pallet), after=5)
        if pallet == "P1":
            assert anomalies(outcome) == {Anomaly.END_WITHOUT_START, Anomaly.HELD_NOT_MOVED}
    assert sim.book.units[h].next_step == 1  # still needs OP20
    assert sim.book.units[f].next_step == 2  # control: a job not on hold passes the end without start
    sim.apply(ResumeJob(held))
    cycle(sim, "M1", "P1", MILL)
    assert sim.book.units[h].next_step == 2


def test_a_cycle_begun_before_the_hold_ends_and_passes_its_units() -> None:
    """Seed 002: the hold blocks movement from then on; work under way when it came may complete."""
    sim = Sim()
    job = sim.job()
    [serial] = loaded(sim, job)
    sim.apply(PalletArrived("M1", sim.eid(), None, "P1"), after=10)
    sim.apply(CycleStarted("M1", sim.eid(), None, "P1", MILL))
    sim.apply(HoldJob(job, "quality"), after=50)
    outcome = sim.apply(CycleEnded("M1", sim.eid(), None, "P1", MILL, CycleResult.OK), after=50)
    assert not outcome.flags
    assert sim.book.units[serial].next_step == 2


def test_a_scan_out_without_a_scan_in_finishes_no_unit_of_a_held_job() -> None:
    """Seed 002: "Block all transactional movement (Move/Consume) until the hold is formally released"."""
    sim = Sim()
    jobs = sim.job(), sim.job()
    serials = []
    for job, pallet in zip(jobs, ("P1", "P2"), strict=True):
        [serial] = loaded(sim, job, pallet)
        cycle(sim, "M1", pallet, MILL)
        cycle(sim, "W1", pallet, WASH)
        sim.apply(PalletArrived("L1", sim.eid(), None, pallet), after=10)
        sim.apply(LoadCompleted("L1", sim.eid(), None, pallet, "", 0), after=60)
        sim.apply(PalletDeparted("L1", sim.eid(), None, pallet), after=5)
        serials.append(serial)
    sim.apply(HoldJob(jobs[0], "quality"))
    outcome = sim.apply(ScanOut("C1", sim.eid(), None, serials[0], ScanResult.PASS), after=30)
    assert Anomaly.HELD_NOT_MOVED in anomalies(outcome)
    assert sim.book.units[serials[0]].status is UnitStatus.WAITING
    sim.apply(ScanOut("C1", sim.eid(), None, serials[1], ScanResult.PASS), after=30)
    assert sim.book.units[serials[1]].status is UnitStatus.FINISHED  # control
    # scanned in before a hold: the step ends
    sim.apply(ResumeJob(jobs[0]))
    sim.apply(ScanIn("C1", sim.eid(), None, serials[0]))
    sim.apply(HoldJob(jobs[0], "quality"))
    sim.apply(ScanOut("C1", sim.eid(), None, serials[0], ScanResult.PASS), after=30)
    assert sim.book.units[serials[0]].status is UnitStatus.FINISHED


def test_held_units_stay_on_the_pallet_at_the_load_station() -> None:
    """Seed 002: no Move/Consume while on hold: the unload of a held unit does not pass its step."""
    sim = Sim()
    held, other = sim.job(), sim.job()
    [serial] = loaded(sim, held)
    cycle(sim, "M1", "P1", MILL)
    cycle(sim, "W1", "P1", WASH)
    sim.apply(HoldJob(held, "quality"))
    sim.apply(PalletArrived("L1", sim.eid(), None, "P1"), after=10)
    instruction = json.loads(sim.tracker.instruction_json("L1"))
    assert instruction["unload"] == []
    assert instruction["stay"] == [{"serial": serial, "job": held, "next": "OP40", "hold": True}]
    assert instruction["load"] is None  # a pallet carrying held units is blocked: nothing new onto it
    with pytest.raises(Refused) as refusal:
        sim.apply(LoadCompleted("L1", sim.eid(), None, "P1", other, 1), after=60)
    assert refusal.value.reason is Reason.JOB_ON_HOLD
    outcome = sim.apply(LoadCompleted("L1", sim.eid(), None, "P1", "", 0), after=60)
    assert Anomaly.HELD_NOT_MOVED in anomalies(outcome)
    assert sim.book.units[serial].next_step == 3
    assert sim.tracker.pallets["P1"].units == [serial]
    # control: resumed, the same unload passes the step
    sim.apply(ResumeJob(held))
    instruction = json.loads(sim.tracker.instruction_json("L1"))
    assert [u["serial"] for u in instruction["unload"]] == [serial]
    sim.apply(LoadCompleted("L1", sim.eid(), None, "P1", other, 1), after=60)
    assert sim.book.units[serial].next_step == 4


def test_a_split_of_a_held_job_is_held_and_a_merge_never_releases_held_units() -> None:
    """Seed 002: "Block all transactional movement (Move/Consume) until the hold is formally released"."""
    sim = Sim()
    held, running = sim.job(), sim.job()
    [a] = loaded(sim, held, "P1")
    [b] = loaded(sim, held, "P2")
    sim.apply(HoldJob(held, "quality"))
    child = sim.apply(SplitJob(held, (a,), ())).outputs["ChildJobId"]
    assert sim.book.jobs[child].state is JobState.HOLD
    with pytest.raises(Refused) as refusal:
        sim.apply(MergeJobs(running, held))
    assert refusal.value.reason is Reason.JOB_ON_HOLD
    assert sim.book.units[b].job_id == held
    assert sim.book.jobs[held].state is JobState.HOLD
    # control: a running job's units merged into a held job become held
    sim.apply(ResumeJob(held))
    sim.apply(HoldJob(running, "quality"))
    sim.apply(MergeJobs(running, held))
    assert sim.book.units[b].job_id == running
    assert sim.book.jobs[running].state is JobState.HOLD


def test_load_instructions_offer_only_the_ordered_quantity() -> None:
    """Seed 002: "Operators often build 'extras' to cover potential fallout. This is unauthorized
    inventory." The buffer stays the ceiling of a deliberate load; the instruction never plans it."""
    sim = Sim()
    job = sim.job(quantity=2, yield_buffer_percent=50.0)
    assert sim.book.jobs[job].max_quantity == 3
    first = loaded(sim, job, "P1")
    loaded(sim, job, "P2")
    sim.apply(PalletArrived("L1", sim.eid(), None, "P3"))
    instruction = json.loads(sim.tracker.instruction_json("L1"))
    assert instruction["load"] is None  # two of two ordered started: the buffer is not offered
    sim.apply(LoadCompleted("L1", sim.eid(), None, "P3", job, 1), after=60)  # deliberate: under the cap
    assert sim.book.jobs[job].started == 3
    sim.apply(PalletDeparted("L1", sim.eid(), None, "P3"))
    sim.apply(Scrap("", sim.eid(), None, first[0], "crash"))
    sim.apply(Scrap("", sim.eid(), None, sim.tracker.pallets["P2"].units[0], "crash"))
    sim.apply(PalletArrived("L1", sim.eid(), None, "P4"))
    instruction = json.loads(sim.tracker.instruction_json("L1"))
    assert instruction["load"]["job"] == job  # control: offered again for what is missing
    assert instruction["load"]["quantity"] == 1


def test_reaching_the_ordered_quantity_is_announced_once() -> None:
    """Seed 002: the job is closed when its target is reached; the gateway says when that is."""
    sim = Sim()
    job = sim.job(quantity=1)
    [serial] = loaded(sim, job)
    cycle(sim, "M1", "P1", MILL)
    cycle(sim, "W1", "P1", WASH)
    sim.apply(PalletArrived("L1", sim.eid(), None, "P1"), after=10)
    sim.apply(LoadCompleted("L1", sim.eid(), None, "P1", "", 0), after=60)
    assert not sim.book.jobs[job].target_reached
    sim.apply(ScanIn("C1", sim.eid(), None, serial))
    sim.at(60)
    sim.model.apply(ScanOut("C1", sim.eid(), None, serial, ScanResult.PASS), sim.now, "test")
    events = sim.model.drain().jobs.events
    assert [e for e in events if isinstance(e, JobTargetReached)] == [JobTargetReached(job, 1, 1, sim.now)]
    assert sim.book.jobs[job].target_reached


def test_a_held_job_with_units_in_wip_is_not_closed_or_backed_out() -> None:
    """Seed 002: "Block all transactional movement (Move/Consume) until the hold is formally released".
    A close would let its units finish (a Closed job's WIP may), so it waits for the release; a held
    job without WIP may be closed (control)."""
    from gateway.jobs.commands import CloseJob
    from gateway.orders.commands import BackOutJob

    sim = Sim()
    held, empty = sim.job(), sim.job()
    loaded(sim, held)
    sim.apply(HoldJob(held, "quality"))
    sim.apply(HoldJob(empty, "material"))
    for command in (CloseJob(held, "short"), BackOutJob(held, "castings short")):
        with pytest.raises(Refused) as refusal:
            sim.apply(command)
        assert refusal.value.reason is Reason.JOB_ON_HOLD
    assert sim.book.jobs[held].state is JobState.HOLD
    assert not sim.model.orders.bookings  # the back-out booked nothing
    sim.apply(CloseJob(empty, "cancelled"))
    assert sim.book.jobs[empty].state is JobState.CLOSED
