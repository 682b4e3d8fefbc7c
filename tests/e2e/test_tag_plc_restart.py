"""A tag PLC whose pallet is at its machine when the gateway restarts.

The gateway turns tag edges into reports by comparing each write with the tag state it holds. After a
restart that state starts from the recorded station state (pallet present, cycle running, program), so
the first block a tag PLC writes after the restart does not read as the pallet leaving and arriving
again: the cycle that ends after the restart is one CycleEnded, and nothing else is invented.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable

import pytest

from simulators.clock import SimClock
from simulators.gateway_process import GatewayProcess
from simulators.ledger import Ledger
from simulators.link import Link
from simulators.planner import Planner
from simulators.plc import Plc, TagPlc
from simulators.scenario import Account, PlcSettings

pytestmark = pytest.mark.slow


async def test_a_tag_plc_mid_cycle_survives_a_gateway_restart(gateway_factory: Callable[..., GatewayProcess]) -> None:
    gateway = gateway_factory()
    await gateway.start()
    settings = PlcSettings()
    clock, ledger = SimClock(speed=1.0), Ledger()
    links = [Link(gateway.endpoint, name, Account(), settings) for name in ("planner", "L1", "M4")]
    planner = Planner(links[0])
    load = Plc("L1", links[1], ledger, clock, "t", random.Random(1))
    mill = TagPlc("M4", links[2], ledger, clock, "t", random.Random(2))
    try:
        await planner.create_job("J-TAG", "TAG-1", "A", 2, None, 0, -1.0, ())
        await planner.release("J-TAG")
        await load.report("PalletArrived", pallet="P1")
        assert (await load.report("LoadCompleted", pallet="P1", job="J-TAG", quantity=2, serials=[])).ok
        await load.report("PalletDeparted", pallet="P1")
        await mill.set_tags(("PalletArrived",), PalletPresent="P1")
        await mill.set_tags(("CycleStarted",), Program="PRG-MILL-100", CycleActive=True)
        assert await mill.wait_for("Cell/Stations/M4/State", lambda v: v == "running") == "running"

        await gateway.restart()
        await mill.set_tags(("CycleEnded",), CycleActive=False)  # the cycle ends after the restart
        await mill.set_tags(("PalletDeparted",), PalletPresent="")
    finally:
        for link in links:
            await link.drop()
        assert await gateway.stop() == 0

    with sqlite3.connect(gateway.database) as conn:
        kinds = [k for (k,) in conn.execute("SELECT kind FROM cell_events WHERE source = 'M4' ORDER BY counter")]
    assert kinds == ["PalletArrived", "CycleStarted", "CycleEnded", "PalletDeparted"]
