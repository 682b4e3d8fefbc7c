"""The load station: unload and load as one report, labor time shared by expected time, load instructions."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway.errors import Reason, Refused
from gateway.jobs.commands import CloseJob, CreateJob, HoldJob
from gateway.jobs.model import UnitStatus
from gateway.tracking.loading import pallet_overfilled
from gateway.tracking.reports import (
    CycleEnded,
    CycleResult,
    CycleStarted,
    LoadCompleted,
    PalletArrived,
    PalletDeparted,
)
from gateway.tracking.timing import split_elapsed
from tests.support import T0
from tests.unit.tracking.demo_model import Sim


def through_machining(sim: Sim, pallet: str, machine: str = "M1") -> None:
    sim.apply(PalletArrived(machine, sim.eid(), None, pallet), after=30)
    sim.apply(CycleStarted(machine, sim.eid(), None, pallet, "PRG-MILL-100"), after=10)
    sim.apply(CycleEnded(machine, sim.eid(), None, pallet, "PRG-MILL-100", CycleResult.OK), after=900)
    sim.apply(PalletDeparted(machine, sim.eid(), None, pallet), after=5)
    sim.apply(PalletArrived("W1", sim.eid(), None, pallet), after=30)
    sim.apply(CycleStarted("W1", sim.eid(), None, pallet, "PRG-WASH-1"))
    sim.apply(CycleEnded("W1", sim.eid(), None, pallet, "PRG-WASH-1", CycleResult.OK), after=180)
    sim.apply(PalletDeparted("W1", sim.eid(), None, pallet), after=5)


def test_split_elapsed_by_expected_share_or_by_count() -> None:
    assert split_elapsed(300.0, [100.0, 200.0]) == [100.0, 200.0]
    assert split_elapsed(300.0, [100.0, None, 200.0]) == [100.0, 100.0, 100.0]
    assert split_elapsed(None, [1.0, 2.0]) == [None, None]
    assert split_elapsed(10.0, [0.0, 0.0]) == [5.0, 5.0]


def test_unload_and_load_in_one_report_share_the_labor_window_by_expected_time() -> None:
    sim = Sim()
    job = sim.job()
    sim.apply(PalletArrived("L1", sim.eid(), None, "P1"))
    first = sim.apply(LoadCompleted("L1", sim.eid(), None, "P1", job, 1), after=120).outputs["Serials"]
    sim.apply(PalletDeparted("L1", sim.eid(), None, "P1"))
    through_machining(sim, "P1")
    sim.apply(PalletArrived("L1", sim.eid(), None, "P1"), after=60)
    # 210 s at the load station: unload one unit (OP40, 90 s expected) and load one new (OP10, 120 s)
    second = sim.apply(LoadCompleted("L1", sim.eid(), None, "P1", job, 1), after=210).outputs["Serials"]
    unloaded = sim.book.units[first[0]]
    new = sim.book.units[second[0]]
    assert unloaded.next_step == 4  # OP40 passed, OP50 inspect next
    assert new.next_step == 1
    assert unloaded.cost.elapsed_labor == pytest.approx(120 + 210 * 90 / 210)
    assert new.cost.elapsed_labor == pytest.approx(210 * 120 / 210)
    assert sim.tracker.pallets["P1"].units == second


def test_a_refused_load_records_nothing_not_even_the_unload() -> None:
    sim = Sim()
    job = sim.job(quantity=1, yield_buffer_percent=0)
    sim.apply(PalletArrived("L1", sim.eid(), None, "P1"))
    (serial,) = sim.apply(LoadCompleted("L1", sim.eid(), None, "P1", job, 1), after=100).outputs["Serials"]
    sim.apply(PalletDeparted("L1", sim.eid(), None, "P1"))
    through_machining(sim, "P1")
    sim.apply(PalletArrived("L1", sim.eid(), None, "P1"), after=60)
    with pytest.raises(Refused) as refused:
        sim.apply(LoadCompleted("L1", sim.eid(), None, "P1", job, 1), after=100)
    assert refused.value.reason is Reason.ORDER_FULFILLED
    assert sim.book.units[serial].next_step == 3  # still waiting to be unloaded
    assert sim.tracker.pallets["P1"].units == [serial]
    # the PLC reports the unload alone with a new EventId
    sim.apply(LoadCompleted("L1", sim.eid(), None, "P1", "", 0), after=5)
    assert sim.book.units[serial].next_step == 4
    assert sim.tracker.pallets["P1"].units == []


def test_a_load_that_would_cross_the_cap_is_refused_whole() -> None:
    sim = Sim()
    job = sim.job(quantity=3, yield_buffer_percent=0)
    sim.apply(PalletArrived("L1", sim.eid(), None, "P1"))
    sim.apply(LoadCompleted("L1", sim.eid(), None, "P1", job, 2), after=60)
    sim.apply(PalletDeparted("L1", sim.eid(), None, "P1"))
    sim.apply(PalletArrived("L2", sim.eid(), None, "P2"))
    with pytest.raises(Refused) as refused:
        sim.apply(LoadCompleted("L2", sim.eid(), None, "P2", job, 2), after=60)
    assert refused.value.reason is Reason.ORDER_FULFILLED
    assert "max 3" in refused.value.message
    assert sim.book.jobs[job].started == 2
    sim.apply(LoadCompleted("L2", sim.eid(), None, "P2", job, 1), after=1)
    assert sim.book.jobs[job].started == 3


def test_supplied_serials_are_used_and_a_duplicate_is_refused() -> None:
    sim = Sim()
    job = sim.job()
    sim.apply(PalletArrived("L1", sim.eid(), None, "P1"))
    out = sim.apply(LoadCompleted("L1", sim.eid(), None, "P1", job, 2, ("LASER-1", "LASER-2")), after=60)
    assert out.outputs["Serials"] == ["LASER-1", "LASER-2"]
    sim.apply(PalletArrived("L2", sim.eid(), None, "P2"))
    with pytest.raises(Refused) as refused:
        sim.apply(LoadCompleted("L2", sim.eid(), None, "P2", job, 1, ("LASER-2",)), after=60)
    assert refused.value.reason is Reason.DUPLICATE_SERIAL


def test_generated_serials_skip_supplied_ones_and_are_never_reused() -> None:
    sim = Sim()
    job = sim.job()
    sim.apply(PalletArrived("L1", sim.eid(), None, "P1"))
    sim.apply(LoadCompleted("L1", sim.eid(), None, "P1", job, 1, ("DEMO-000001",)), after=60)
    sim.apply(PalletArrived("L2", sim.eid(), None, "P2"))
    out = sim.apply(LoadCompleted("L2", sim.eid(), None, "P2", job, 2), after=60)
    assert out.outputs["Serials"] == ["DEMO-000002", "DEMO-000003"]


def test_loads_only_at_load_stations_and_only_allowed_pallets() -> None:
    sim = Sim()
    job = sim.job(pallets=("P1", "P2"))
    sim.apply(PalletArrived("M1", sim.eid(), None, "P1"))
    with pytest.raises(Refused) as machine:
        sim.apply(LoadCompleted("M1", sim.eid(), None, "P1", job, 1))
    assert machine.value.reason is Reason.WRONG_RESOURCE
    sim.apply(PalletArrived("L1", sim.eid(), None, "P3"))
    with pytest.raises(Refused) as pallet:
        sim.apply(LoadCompleted("L1", sim.eid(), None, "P3", job, 1))
    assert pallet.value.reason is Reason.WRONG_RESOURCE
    assert "P1, P2" in pallet.value.message


def test_load_instruction_offers_the_most_urgent_job_that_may_load() -> None:
    sim = Sim()
    low = sim.job(priority=1, due=T0 + timedelta(days=1))
    urgent_later = sim.job(priority=5, due=T0 + timedelta(days=3))
    urgent_sooner = sim.job(priority=5, due=T0 + timedelta(days=2))
    sim.apply(CreateJob(part="XYZ", revision="A", quantity=5, priority=99))  # Created: invisible
    held = sim.job(priority=50)
    sim.apply(HoldJob(held, "material"))
    closed = sim.job(priority=60)
    sim.apply(CloseJob(closed, "cancelled"))
    only_p8 = sim.job(priority=70, pallets=("P8",))
    sim.apply(PalletArrived("L1", sim.eid(), None, "P1"))
    instruction = sim.tracker.load_instruction("L1")
    assert instruction["load"]["job"] == urgent_sooner
    assert instruction["load"]["quantity"] == 2  # two units per pallet in the demo
    order = [j.id for j in sim.tracker.loadable_jobs("L1", "P1")]
    assert order == [urgent_sooner, urgent_later, low]
    assert sim.tracker.loadable_jobs("L1", "P8")[0].id == only_p8


def test_load_instruction_lists_what_to_unload_and_stops_offering_a_capped_job() -> None:
    sim = Sim()
    job = sim.job(quantity=2, yield_buffer_percent=0)
    sim.apply(PalletArrived("L1", sim.eid(), None, "P1"))
    serials = sim.apply(LoadCompleted("L1", sim.eid(), None, "P1", job, 2), after=60).outputs["Serials"]
    instruction = sim.tracker.load_instruction("L1")
    assert instruction["unload"] == []
    assert [u["serial"] for u in instruction["stay"]] == serials
    assert instruction["load"] is None  # the pallet is full, and the job is capped
    sim.apply(PalletDeparted("L1", sim.eid(), None, "P1"))
    through_machining(sim, "P1")
    sim.apply(PalletArrived("L2", sim.eid(), None, "P1"))
    instruction = sim.tracker.load_instruction("L2")
    assert [u["serial"] for u in instruction["unload"]] == serials
    assert all(u["next"] == "OP40" for u in instruction["unload"])
    assert instruction["load"] is None  # started 2 of max 2


def test_machine_expected_program_follows_the_units_next_step() -> None:
    sim = Sim()
    job = sim.job()
    sim.apply(PalletArrived("L1", sim.eid(), None, "P1"))
    sim.apply(LoadCompleted("L1", sim.eid(), None, "P1", job, 2), after=60)
    sim.apply(PalletDeparted("L1", sim.eid(), None, "P1"))
    sim.apply(PalletArrived("M2", sim.eid(), None, "P1"))
    assert sim.tracker.expected_program("M2") == "PRG-MILL-100"
    with pytest.raises(Refused) as refused:
        sim.apply(CycleStarted("M2", sim.eid(), None, "P1", "PRG-OTHER"))
    assert refused.value.reason is Reason.WRONG_PROGRAM
    assert sim.tracker.stations["M2"].cycle is None


def test_a_whole_unit_life_finishes_it_and_counts_once() -> None:
    sim = Sim()
    job = sim.job(quantity=2)
    sim.apply(PalletArrived("L1", sim.eid(), None, "P1"))
    serials = sim.apply(LoadCompleted("L1", sim.eid(), None, "P1", job, 2), after=60).outputs["Serials"]
    sim.apply(PalletDeparted("L1", sim.eid(), None, "P1"))
    through_machining(sim, "P1")
    sim.apply(PalletArrived("L1", sim.eid(), None, "P1"))
    sim.apply(LoadCompleted("L1", sim.eid(), None, "P1", "", 0), after=90)
    from gateway.tracking.reports import ScanIn, ScanOut, ScanResult

    for serial in serials:
        sim.apply(ScanIn("C1", sim.eid(), None, serial), after=10)
        sim.apply(ScanOut("C1", sim.eid(), None, serial, ScanResult.PASS), after=300)
    job_state = sim.book.jobs[job]
    assert (job_state.started, job_state.finished, job_state.wip) == (2, 2, 0)
    assert all(sim.book.units[s].status is UnitStatus.FINISHED for s in serials)


def test_pallet_overfilled_names_the_pallet_and_its_capacity() -> None:
    assert pallet_overfilled("P1", 0, 2, 2) is None
    assert pallet_overfilled("P1", 0, 3, 2) == (
        "loading 3 units onto pallet P1 would put 3 on it; a pallet holds at most 2 (cell.units_per_pallet)"
    )
    assert "with 1 staying on it" in (pallet_overfilled("P1", 1, 2, 2) or "")


@pytest.mark.parametrize("per_pallet", [1, 2, 5])
def test_a_load_beyond_units_per_pallet_is_refused_and_records_nothing(per_pallet: int) -> None:
    sim = Sim(cell={"units_per_pallet": per_pallet})
    job = sim.job(quantity=20)
    sim.apply(PalletArrived("L1", sim.eid(), None, "P1"))
    with pytest.raises(Refused) as refused:
        sim.apply(LoadCompleted("L1", sim.eid(), None, "P1", job, per_pallet + 1), after=60)
    assert refused.value.reason is Reason.INVALID_ARGUMENT
    assert f"at most {per_pallet} (cell.units_per_pallet)" in refused.value.message
    assert sim.book.jobs[job].started == 0
    assert sim.tracker.pallets["P1"].units == []
    # the full pallet is taken
    serials = sim.apply(LoadCompleted("L1", sim.eid(), None, "P1", job, per_pallet), after=5).outputs["Serials"]
    assert sim.tracker.pallets["P1"].units == serials
    assert len(serials) == per_pallet
