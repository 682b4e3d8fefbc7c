"""Seed 001's cost categories at the edges: where a pallet's time at a station goes when a routing ends
at a machine, when a departure was never reported, and when a machine step is done by scans."""

from __future__ import annotations

import pytest

from gateway.jobs.model import CostKind, UnitStatus
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


def load(sim: Sim, job: str, pallet: str, quantity: int = 1) -> list[str]:
    sim.apply(PalletArrived("L1", sim.eid(), None, pallet))
    serials: list[str] = sim.apply(LoadCompleted("L1", sim.eid(), None, pallet, job, quantity), after=100).outputs[
        "Serials"
    ]
    sim.apply(PalletDeparted("L1", sim.eid(), None, pallet), after=10)
    return serials


def test_a_unit_whose_routing_ends_at_the_machine_gets_its_time_there_when_it_finishes() -> None:
    """Elapsed machining "is the amount of time a pallet spends at the machine": a unit that finishes
    at the machine keeps its share up to its finish (its cost is reported from then on)."""
    sim = Sim()
    job = sim.job(operations=("OP10", "OP20"))
    [serial] = load(sim, job, "P1")
    sim.apply(PalletArrived("M1", sim.eid(), None, "P1"), after=20)
    sim.apply(CycleStarted("M1", sim.eid(), None, "P1", MILL), after=10)
    sim.apply(CycleEnded("M1", sim.eid(), None, "P1", MILL, CycleResult.OK), after=950)
    unit = sim.book.units[serial]
    assert unit.status is UnitStatus.FINISHED
    assert unit.cost.elapsed_machine == 10 + 950
    sim.apply(PalletDeparted("M1", sim.eid(), None, "P1"), after=300)  # the empty pallet waits: not the unit's
    assert unit.cost.elapsed_machine == 10 + 950
    assert unit.cost.unknown == {}


def test_a_departure_never_reported_leaves_the_visit_unknown_never_invented() -> None:
    """A pallet found at the washer hours after its cycle at the mill: when it left the mill is not
    known, so that visit is counted unknown rather than hours of machining (control: a reported
    departure is measured)."""
    sim = Sim()
    job = sim.job()
    [seen, unseen] = load(sim, job, "P1") + load(sim, job, "P2")
    for pallet, leaves in (("P1", True), ("P2", False)):
        sim.apply(PalletArrived("M1", sim.eid(), None, pallet), after=20)
        sim.apply(CycleStarted("M1", sim.eid(), None, pallet, MILL), after=5)
        sim.apply(CycleEnded("M1", sim.eid(), None, pallet, MILL, CycleResult.OK), after=900)
        if leaves:
            sim.apply(PalletDeparted("M1", sim.eid(), None, pallet), after=5)
        else:
            sim.apply(PalletArrived("W1", sim.eid(), None, pallet), after=6 * 3600)  # moved unseen
    assert sim.book.units[seen].cost.elapsed_machine == 5 + 900 + 5
    unit = sim.book.units[unseen]
    assert unit.cost.elapsed_machine == 0
    assert unit.cost.unknown_of("elapsed", CostKind.MACHINING) == 1


def test_a_machine_step_done_by_scans_counts_the_units_own_time() -> None:
    """A step passed by ScanIn/ScanOut at a machine (no pallet there): its measured time is machining."""
    sim = Sim()
    job = sim.job(operations=("OP10", "OP20"))
    [serial] = load(sim, job, "P1")
    sim.apply(ScanIn("M2", sim.eid(), None, serial), after=30)
    sim.apply(ScanOut("M2", sim.eid(), None, serial, ScanResult.PASS), after=900)
    assert sim.book.units[serial].cost.elapsed_machine == pytest.approx(900)
