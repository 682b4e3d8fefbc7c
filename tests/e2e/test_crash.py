"""kill -9 under load: the gateway is killed while PLCs report as fast as it answers, started again on
the same database, and the PLCs retry what was not answered. Nothing acknowledged may be lost and
nothing counted twice (simulators/reconcile.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from simulators.clock import SimClock
from simulators.gateway_process import GatewayProcess
from simulators.reconcile import reconcile
from simulators.scenario import Fault, Scenario
from simulators.simulation import CellSimulation

pytestmark = pytest.mark.slow

# Simulated time so fast that stations wait only for the gateway: a 30-minute cycle is 36 ms.
SPEED = 50_000.0
KILLS = 2
REPORTS_BETWEEN_KILLS = 300


async def test_kill_9_under_load_loses_and_doubles_nothing(
    gateway_factory: Callable[..., GatewayProcess], scenario: Scenario
) -> None:
    gateway = gateway_factory()
    await gateway.start()
    try:
        sim = CellSimulation(
            gateway.load_config(),
            scenario,  # M4 and W1 write tags: their state must survive the kills as well
            endpoint=gateway.endpoint,
            clock=SimClock(speed=SPEED),
            hours=10_000,  # ended by finish() below
            faults=frozenset({Fault.DUPLICATE, Fault.RETRY, Fault.INSPECTION, Fault.SCRAP}),
            seed=7,
            monitor=False,
        )
        run = asyncio.create_task(sim.run(), name="simulation")
        try:
            for kill in range(1, KILLS + 1):
                await sim.ledger.wait_for(kill * REPORTS_BETWEEN_KILLS, within=40)
                await gateway.kill()
                await gateway.start()
            await sim.ledger.wait_for((KILLS + 1) * REPORTS_BETWEEN_KILLS, within=40)
        finally:
            sim.finish()
            result = await run
        assert await gateway.stop() == 0
    finally:
        await gateway.kill()

    checked = reconcile(gateway.database, result)
    assert checked.ok, checked.report()
    assert gateway.starts == KILLS + 1
    retried = [a for a in result.ledger.acks if a.attempts > 1]
    assert retried, "no report was in flight when the gateway was killed"
    assert sum(1 for u in result.units.values() if u.status == "finished") > 0
