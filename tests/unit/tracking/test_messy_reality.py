"""Each rule for messy reality (docs/tracking.md): the fact is recorded, flagged, and counts stay right."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway.errors import Reason, Refused
from gateway.jobs.commands import HoldJob, ResumeJob
from gateway.jobs.events import StepRecorded
from gateway.jobs.model import CostKind, JobState, UnitStatus
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
)
from tests.unit.tracking.demo_model import Sim

MILL = "PRG-MILL-100"


def anomalies(outcome) -> list[Anomaly]:  # type: ignore[no-untyped-def]
    return [f.anomaly for f in outcome.flags]


def loaded(sim: Sim, job: str, pallet: str = "P1", quantity: int = 2, station: str = "L1") -> list[str]:
    sim.apply(PalletArrived(station, sim.eid(), None, pallet))
    serials: list[str] = sim.apply(LoadCompleted(station, sim.eid(), None, pallet, job, quantity), after=100).outputs[
        "Serials"
    ]
    sim.apply(PalletDeparted(station, sim.eid(), None, pallet), after=5)
    return serials


def at_mill(sim: Sim, pallet: str = "P1", machine: str = "M1") -> None:
    sim.apply(PalletArrived(machine, sim.eid(), None, pallet), after=30)


def test_end_without_start_passes_the_step_with_elapsed_unknown_never_invented() -> None:
    sim = Sim()
    job = sim.job()
    serials = loaded(sim, job)
    at_mill(sim)
    outcome = sim.apply(CycleEnded("M1", sim.eid(), None, "P1", MILL, CycleResult.OK), after=900)
    assert Anomaly.END_WITHOUT_START in anomalies(outcome)
    [scan] = [e for e in sim.changes.jobs.events if isinstance(e, StepRecorded) and e.serial == serials[0]]
    assert scan.elapsed is None  # the cycle's own time is unknown
    sim.apply(PalletDeparted("M1", sim.eid(), None, "P1"), after=10)
    for serial in serials:
        unit = sim.book.units[serial]
        assert unit.next_step == 2  # OP20 passed
        # machining is the pallet's time at the machine, which is known: arrival to departure, shared
        assert unit.cost.elapsed_machine == (900 + 10) / 2
        assert unit.cost.unknown_elapsed == 0
        assert unit.cost.expected_machine == 900


def test_a_repeated_start_keeps_the_first_start() -> None:
    sim = Sim()
    job = sim.job()
    loaded(sim, job)
    at_mill(sim)
    sim.apply(CycleStarted("M1", sim.eid(), None, "P1", MILL), after=10)
    again = sim.apply(CycleStarted("M1", sim.eid(), None, "P1", MILL), after=60)
    assert anomalies(again) == [Anomaly.REPEATED_START]
    sim.apply(CycleEnded("M1", sim.eid(), None, "P1", MILL, CycleResult.OK), after=840)
    # the cycle lasted 900 s from the first start
    scans = [e for e in sim.changes.jobs.events if isinstance(e, StepRecorded)]
    assert [s.elapsed for s in scans] == [450, 450]


def test_a_pallet_reported_where_it_was_not_recorded_moved_there() -> None:
    sim = Sim()
    sim.apply(PalletArrived("M1", sim.eid(), None, "P2"))
    outcome = sim.apply(PalletArrived("M3", sim.eid(), None, "P2"), after=60)
    assert anomalies(outcome) == [Anomaly.PALLET_MOVED]
    assert sim.tracker.pallets["P2"].station == "M3"
    assert sim.tracker.stations["M1"].pallet == ""
    assert sim.tracker.stations["M3"].pallet == "P2"


def test_an_arrival_where_another_pallet_is_recorded_takes_that_one_as_departed() -> None:
    sim = Sim()
    sim.apply(PalletArrived("M1", sim.eid(), None, "P1"))
    outcome = sim.apply(PalletArrived("M1", sim.eid(), None, "P2"), after=60)
    assert anomalies(outcome) == [Anomaly.STATION_OCCUPIED]
    assert sim.tracker.pallets["P1"].station == ""
    assert sim.tracker.stations["M1"].pallet == "P2"


def test_a_repeated_arrival_changes_nothing() -> None:
    sim = Sim()
    sim.apply(PalletArrived("L1", sim.eid(), None, "P1"))
    window = sim.tracker.pallets["P1"].window_start
    outcome = sim.apply(PalletArrived("L1", sim.eid(), None, "P1"), after=30)
    assert anomalies(outcome) == [Anomaly.REPEATED_ARRIVAL]
    assert sim.tracker.pallets["P1"].window_start == window


def test_a_departure_without_arrival_is_recorded_and_flagged() -> None:
    sim = Sim()
    outcome = sim.apply(PalletDeparted("W1", sim.eid(), None, "P4"))
    assert anomalies(outcome) == [Anomaly.DEPARTURE_WITHOUT_ARRIVAL]
    assert sim.tracker.pallets["P4"].station == ""


def test_source_time_outside_tolerance_uses_receipt_time_and_flags_it() -> None:
    sim = Sim()
    skewed = sim.now + timedelta(hours=2)
    outcome = sim.apply(PalletArrived("L1", sim.eid(), skewed, "P1"))
    assert anomalies(outcome) == [Anomaly.CLOCK_SKEW]
    assert outcome.at == sim.now
    assert sim.tracker.pallets["P1"].arrived_at == sim.now
    close = sim.now + timedelta(seconds=20)
    inside = sim.apply(PalletArrived("L2", sim.eid(), close, "P2"), after=1)
    assert inside.flags == ()
    assert sim.tracker.pallets["P2"].arrived_at == close


def test_a_negative_duration_is_not_counted() -> None:
    sim = Sim()
    job = sim.job()
    serials = loaded(sim, job)
    at_mill(sim)
    sim.apply(CycleStarted("M1", sim.eid(), sim.now + timedelta(seconds=60), "P1", MILL), after=10)
    # the end's source time lies before the start's: the PLC's clock jumped back
    outcome = sim.apply(CycleEnded("M1", sim.eid(), sim.now + timedelta(seconds=10), "P1", MILL, CycleResult.OK))
    assert Anomaly.IMPLAUSIBLE_DURATION in anomalies(outcome)
    unit = sim.book.units[serials[0]]
    assert unit.next_step == 2
    assert [e.elapsed for e in sim.changes.jobs.events if isinstance(e, StepRecorded)] == [None, None]
    assert unit.cost.elapsed_machine == 0  # the pallet has not left yet


def test_an_absurd_duration_is_not_counted() -> None:
    sim = Sim()
    job = sim.job()
    serials = loaded(sim, job)
    at_mill(sim)
    sim.apply(CycleStarted("M1", sim.eid(), None, "P1", MILL), after=10)
    outcome = sim.apply(CycleEnded("M1", sim.eid(), None, "P1", MILL, CycleResult.OK), after=3 * 24 * 3600)
    assert Anomaly.IMPLAUSIBLE_DURATION in anomalies(outcome)
    assert sim.book.units[serials[0]].cost.elapsed_machine == 0


def test_a_cycle_for_an_empty_pallet_is_recorded_and_flagged() -> None:
    sim = Sim()
    at_mill(sim, "P5", "M2")
    outcome = sim.apply(CycleStarted("M2", sim.eid(), None, "P5", MILL))
    assert anomalies(outcome) == [Anomaly.EMPTY_CYCLE]
    assert sim.tracker.stations["M2"].state == "running"
    ended = sim.apply(CycleEnded("M2", sim.eid(), None, "P5", MILL, CycleResult.OK), after=100)
    assert ended.flags == ()
    assert sim.tracker.stations["M2"].state == "occupied"


def test_hold_mid_cycle_lets_the_cycle_end_and_stops_everything_new() -> None:
    sim = Sim()
    job = sim.job()
    serials = loaded(sim, job)
    at_mill(sim)
    sim.apply(CycleStarted("M1", sim.eid(), None, "P1", MILL), after=10)
    sim.apply(HoldJob(job, "quality check"))
    assert sim.book.jobs[job].state is JobState.HOLD
    # the running cycle may end: a fact, recorded and counted
    sim.apply(CycleEnded("M1", sim.eid(), None, "P1", MILL, CycleResult.OK), after=900)
    assert all(sim.book.units[s].next_step == 2 for s in serials)
    sim.apply(PalletDeparted("M1", sim.eid(), None, "P1"))
    sim.apply(PalletArrived("W1", sim.eid(), None, "P1"), after=20)
    # nothing new starts: the wash cycle, a new load, a scan in
    with pytest.raises(Refused) as wash:
        sim.apply(CycleStarted("W1", sim.eid(), None, "P1", "PRG-WASH-1"))
    assert wash.value.reason is Reason.JOB_ON_HOLD
    sim.apply(PalletArrived("L2", sim.eid(), None, "P2"))
    with pytest.raises(Refused) as load:
        sim.apply(LoadCompleted("L2", sim.eid(), None, "P2", job, 1), after=60)
    assert load.value.reason is Reason.JOB_ON_HOLD
    sim.apply(ResumeJob(job))
    assert sim.book.jobs[job].state is JobState.RUNNING
    sim.apply(CycleStarted("W1", sim.eid(), None, "P1", "PRG-WASH-1"))


def test_a_pallet_leaving_mid_cycle_ends_the_cycle_as_interrupted() -> None:
    sim = Sim()
    job = sim.job()
    serials = loaded(sim, job)
    at_mill(sim)
    sim.apply(CycleStarted("M1", sim.eid(), None, "P1", MILL), after=10)
    outcome = sim.apply(PalletDeparted("M1", sim.eid(), None, "P1"), after=300)
    assert anomalies(outcome) == [Anomaly.CYCLE_OPEN_AT_DEPARTURE]
    unit = sim.book.units[serials[0]]
    assert unit.next_step == 1  # OP20 must be repeated
    assert unit.status is UnitStatus.WAITING
    assert unit.cost.elapsed_machine == (10 + 300) / 2  # its time at the machine, shared by two units
    # the machine shows down (its cycle was cut short) until the next pallet arrives
    assert sim.tracker.stations["M1"].state == "down"
    sim.apply(PalletArrived("M1", sim.eid(), None, "P2"), after=60)
    assert sim.tracker.stations["M1"].state == "occupied"


def test_an_interrupted_cycle_leaves_the_step_to_repeat_and_the_machine_down() -> None:
    sim = Sim()
    job = sim.job()
    serials = loaded(sim, job)
    at_mill(sim)
    sim.apply(CycleStarted("M1", sim.eid(), None, "P1", MILL), after=10)
    sim.apply(CycleEnded("M1", sim.eid(), None, "P1", MILL, CycleResult.INTERRUPTED), after=200)
    assert sim.tracker.stations["M1"].state == "down"
    assert sim.book.units[serials[0]].next_step == 1
    sim.apply(CycleStarted("M1", sim.eid(), None, "P1", MILL), after=600)
    sim.apply(CycleEnded("M1", sim.eid(), None, "P1", MILL, CycleResult.OK), after=900)
    sim.apply(PalletDeparted("M1", sim.eid(), None, "P1"), after=5)
    unit = sim.book.units[serials[0]]
    assert unit.next_step == 2
    assert unit.cost.elapsed_machine == (10 + 200 + 600 + 900 + 5) / 2  # the whole visit, shared
    assert unit.cost.expected_machine == 900 * 2  # both attempts planned a full cycle


def test_a_scan_out_without_scan_in_counts_with_elapsed_unknown() -> None:
    sim = Sim()
    job = sim.job(operations=("OP50",))
    # a manual start at the inspection station: the first (and only) step
    from gateway.tracking.reports import StartUnit

    serial = sim.apply(StartUnit("C1", sim.eid(), None, job, "")).outputs["Serial"]
    sim.apply(ScanOut("C1", sim.eid(), None, serial, ScanResult.PASS), after=200)
    assert sim.book.units[serial].status is UnitStatus.FINISHED
    second = sim.apply(StartUnit("C1", sim.eid(), None, job, "")).outputs["Serial"]
    sim.apply(ScanOut("C1", sim.eid(), None, second, ScanResult.FAIL), after=100)
    retry = sim.apply(ScanOut("C1", sim.eid(), None, second, ScanResult.PASS), after=50)
    assert anomalies(retry) == [Anomaly.END_WITHOUT_START]
    unit = sim.book.units[second]
    assert unit.status is UnitStatus.FINISHED
    # one unmeasured step is counted unknown; the measured one is still summed, in its own category
    assert unit.cost.unknown_of("elapsed", CostKind.INSPECTION) == 1
    assert unit.cost.elapsed_inspection == 100
    assert unit.cost.elapsed_labor == 0


def test_a_scan_in_out_of_order_is_refused_with_invalid_process_step() -> None:
    sim = Sim()
    job = sim.job()
    serials = loaded(sim, job)
    with pytest.raises(Refused) as refused:
        sim.apply(ScanIn("C1", sim.eid(), None, serials[0]))
    assert refused.value.reason is Reason.INVALID_PROCESS_STEP
    assert "OP20" in refused.value.message


def test_a_scan_out_for_a_finished_unit_changes_nothing() -> None:
    sim = Sim()
    job = sim.job(operations=("OP50",))
    from gateway.tracking.reports import StartUnit

    serial = sim.apply(StartUnit("C1", sim.eid(), None, job, "")).outputs["Serial"]
    sim.apply(ScanOut("C1", sim.eid(), None, serial, ScanResult.PASS), after=200)
    before = sim.book.units[serial].cost.copy()
    outcome = sim.apply(ScanOut("C1", sim.eid(), None, serial, ScanResult.FAIL), after=10)
    assert anomalies(outcome) == [Anomaly.UNIT_NOT_IN_WIP]
    assert sim.book.units[serial].cost == before
    assert sim.book.jobs[job].finished == 1


def test_a_scan_out_at_another_station_than_the_scan_in_is_flagged() -> None:
    sim = Sim()
    job = sim.job(operations=("OP50",))
    from gateway.tracking.reports import StartUnit

    serial = sim.apply(StartUnit("C1", sim.eid(), None, job, "")).outputs["Serial"]
    outcome = sim.apply(ScanOut("L1", sim.eid(), None, serial, ScanResult.PASS), after=120)
    assert anomalies(outcome) == [Anomaly.STATION_MISMATCH]
    assert sim.book.units[serial].status is UnitStatus.FINISHED
    assert sim.book.units[serial].cost.elapsed_inspection == 120
