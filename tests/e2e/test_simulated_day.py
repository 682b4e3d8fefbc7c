"""A simulated production day with every fault against a real gateway process; afterwards every count
reconciles with the gateway's database (simulators/reconcile.py lists the checks)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from simulators.clock import SimClock
from simulators.gateway_process import GatewayProcess
from simulators.reconcile import reconcile
from simulators.scenario import ALL_FAULTS, Scenario
from simulators.simulation import CellSimulation

pytestmark = pytest.mark.slow

SPEED = 3600.0  # a 24-hour day in 24 s of wall time


async def test_a_day_with_faults_reconciles_with_the_gateways_log(gateway: GatewayProcess, scenario: Scenario) -> None:
    # Rates high enough that every fault strikes in one day whatever the interleaving.
    rates = replace(
        scenario.faults,
        breakdown=0.1,
        cycle_fail=0.08,
        inspection_fail=0.2,
        duplicate=0.04,
        retry=0.015,
        tagdrop=0.2,
        skews=3,
    )
    sim = CellSimulation(
        gateway.load_config(),
        replace(scenario, faults=rates),
        endpoint=gateway.endpoint,
        clock=SimClock(speed=SPEED),
        hours=24,
        faults=ALL_FAULTS,
        seed=20,
        gateway=gateway,
    )
    result = await sim.run()
    assert await gateway.stop() == 0
    assert gateway.stopped_cleanly

    checked = reconcile(gateway.database, result)
    assert checked.ok, checked.report()

    # The day happened, with its faults.
    ledger = result.ledger
    finished = sum(1 for u in result.units.values() if u.status == "finished")
    # A day of the demo cell finishes ~130-160 units; a slow machine costs simulated time while PLCs
    # wait for answers, so the bound is loose.
    assert finished >= 40, f"only {finished} units finished in a simulated day"
    assert result.restarts == 1
    stations = result.stations
    assert sum(s.results["interrupted"] for s in stations.values()) >= 1  # a breakdown
    assert sum(s.results["fail"] for s in stations.values()) >= 1  # failed cycles and inspections
    assert any(job.parent for job in result.jobs.values())  # a rework split
    assert any(u.status == "scrapped" for u in result.units.values())
    assert any(a.attempts > 1 for a in ledger.acks)  # answers lost, retried with the same EventId
    assert sum(a.duplicates for a in ledger.acks) >= 1
    assert any(w.dropped for w in ledger.tag_writes)
    assert result.monitor_anomalies["ClockSkew"] >= 1
    assert any("disconnected" in line for line in result.fault_log)
    assert not ledger.problems
    assert not gateway.errors, gateway.errors[:3]
