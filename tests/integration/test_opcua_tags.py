"""The tag path: a PLC that writes Tags/PalletPresent, CycleActive and Program instead of calling methods.

A write is answered after the reports it makes are committed (asyncua awaits the PostWrite callback), so
the model can be read right after it; published variables are waited for.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua

from gateway.config import CellConfig
from tests.integration.opcua_client import NOW, CellClient, i32
from tests.integration.opcua_support import Session, cell_toml, good, model_state, serving


@pytest.fixture
async def session(tmp_path: Path, make_config: Callable[..., CellConfig]) -> AsyncIterator[Session]:
    async with serving(make_config(cell_toml(tmp_path))) as running:
        yield running


async def write(cell: CellClient, station: str, **tags: Any) -> None:
    """Write tags of a station in one WriteRequest, as a PLC's OPC UA client block does."""
    nodes = [cell.node(f"Cell/Stations/{station}/Tags/{name}") for name in tags]
    values = [
        ua.DataValue(ua.Variant(v, ua.VariantType.Boolean if isinstance(v, bool) else ua.VariantType.String))
        for v in tags.values()
    ]
    await cell.client.write_values(nodes, values)


async def test_tag_edges_become_reports_and_repeats_or_missed_edges_are_reconciled(session: Session) -> None:
    cell, gateway = session.cell, session.gateway
    tracker, book = gateway.writer.model.tracker, gateway.writer.model.book
    await good(cell.jobs("CreateJob", "J1", "PN-1", "A", 1, None, i32(0), 0.0, [], []))
    await good(cell.jobs("Release", "J1"))

    async with session.connect("plc-load") as plc:
        await write(plc, "L1", PalletPresent="P1")  # "" -> P1: PalletArrived
        assert tracker.pallets["P1"].station == "L1"
        await cell.wait_for("Cell/Stations/L1/Pallet", "P1")
        await good(plc.station("L1", "LoadCompleted", "L1-1", "P1", "J1", 1, ["T-1"], NOW))
        await write(plc, "L1", PalletPresent="")  # P1 -> "": PalletDeparted
        assert tracker.pallets["P1"].station == ""
        await cell.wait_for("Cell/Stations/L1/State", "idle")

    async with session.connect("plc-mill") as plc:
        await write(plc, "M1", PalletPresent="P1", Program="PRG-MILL-100")
        await cell.wait_for("Cell/Stations/M1/State", "occupied")
        assert await plc.read("Cell/Stations/M1/Tags/PalletPresent") == "P1"
        await write(plc, "M1", CycleActive=True)  # false -> true: CycleStarted with Program
        await cell.wait_for("Cell/Stations/M1/State", "running")
        cycle = tracker.stations["M1"].cycle
        assert cycle is not None
        assert (cycle.program, cycle.serials) == ("PRG-MILL-100", ("T-1",))
        before = model_state(gateway)
        await write(plc, "M1", CycleActive=True)  # a repeated notification: no second cycle
        assert model_state(gateway) == before
        session.clock.advance(500)
        await write(plc, "M1", CycleActive=False)  # true -> false: CycleEnded ok
        await cell.wait_for("Cell/Stations/M1/State", "occupied")
        assert book.units["T-1"].next_step == 2  # OP20 passed
        session.clock.advance(20)
        await write(plc, "M1", PalletPresent="")  # the departure: the pallet's time at the machine counts
        await cell.wait_for("Cell/Stations/M1/State", "idle")
        assert book.units["T-1"].cost.elapsed_machine == 500.0 + 20.0

        # A PLC that never wrote "" between two pallets: the first is taken as departed.
        await write(plc, "M2", PalletPresent="P2")
        await write(plc, "M2", PalletPresent="P3")
        assert (tracker.pallets["P2"].station, tracker.pallets["P3"].station) == ("", "M2")
        await cell.wait_for("Cell/Stations/M2/Pallet", "P3")

    async with session.connect("plc-wash") as plc:
        await write(plc, "W1", PalletPresent="P1", Program="PRG-WASH-1", CycleActive=True)
        await cell.wait_for("Cell/Stations/W1/State", "running")
        # Cycle end and departure in one write: the cycle ends ok before the pallet leaves.
        await write(plc, "W1", CycleActive=False, PalletPresent="")
        assert book.units["T-1"].next_step == 3  # OP30 passed
        assert tracker.stations["W1"].cycle is None
        await cell.wait_for("Cell/Stations/W1/State", "idle")

        before = model_state(gateway)
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await write(plc, "M3", PalletPresent="P4")
        assert model_state(gateway) == before
        assert await plc.read("Cell/Stations/M3/Tags/PalletPresent") == ""


async def test_a_tag_write_the_store_cannot_commit_fails_and_its_retry_records_the_edge_once(
    tmp_path: Path, make_config: Callable[..., CellConfig], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holds the SQLite write lock: the write is answered BadResourceUnavailable, the
    model is as before, and the PLC's retry of the same block makes the one PalletArrived it meant."""
    monkeypatch.setattr("gateway.storage.database.BUSY_TIMEOUT_MS", 100)  # wait 0.1 s for the lock, not 5
    path = db_url.removeprefix("sqlite+aiosqlite:///")
    async with serving(make_config(cell_toml(tmp_path))) as session:
        cell, gateway = session.cell, session.gateway
        before = model_state(gateway)
        locker = sqlite3.connect(path, timeout=5, isolation_level=None)
        try:
            locker.execute("BEGIN IMMEDIATE")
            async with session.connect("plc-mill") as plc:
                with pytest.raises(ua.uaerrors.BadResourceUnavailable):
                    await write(plc, "M1", PalletPresent="P1")
                assert model_state(gateway) == before
                locker.execute("ROLLBACK")

                await write(plc, "M1", PalletPresent="P1")  # the PLC writes its block again
                assert gateway.writer.model.tracker.pallets["P1"].station == "M1"  # reloaded after the failure
                await cell.wait_for("Cell/Stations/M1/Pallet", "P1")
        finally:
            locker.close()
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT kind FROM cell_events WHERE source = 'M1'").fetchall()
    assert rows == [("PalletArrived",)]


async def test_the_order_of_the_tags_in_one_write_does_not_matter(session: Session) -> None:
    """A block written CycleActive before Program starts the cycle with the Program of that block."""
    cell, gateway = session.cell, session.gateway
    tracker = gateway.writer.model.tracker
    await good(cell.jobs("CreateJob", "J1", "PN-1", "A", 1, None, i32(0), 0.0, [], []))
    await good(cell.jobs("Release", "J1"))
    async with session.connect("plc-load") as plc:
        await good(plc.station("L1", "PalletArrived", "L1-1", "P1", NOW))
        await good(plc.station("L1", "LoadCompleted", "L1-2", "P1", "J1", 1, ["T-1"], NOW))
        await good(plc.station("L1", "PalletDeparted", "L1-3", "P1", NOW))

    async with session.connect("plc-mill") as plc:
        await write(plc, "M1", PalletPresent="P1", CycleActive=True, Program="PRG-MILL-100")
        cycle = tracker.stations["M1"].cycle
        assert cycle is not None
        assert (cycle.pallet, cycle.program) == ("P1", "PRG-MILL-100")
        assert not gateway.writer.stats.refusals  # no cycle start with the old Program was tried first
        await write(plc, "M1", Program="", CycleActive=False, PalletPresent="")
        assert tracker.stations["M1"].cycle is None
        assert tracker.pallets["P1"].station == ""
        assert gateway.writer.model.book.units["T-1"].next_step == 2  # OP20 passed with the right program
