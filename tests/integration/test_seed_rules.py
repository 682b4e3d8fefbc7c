"""Rules of the seeds, through the gateway's public interfaces, against a real gateway on the demo cell.

Every test drives the cell the way its users do: PLC reports and job methods with an asyncua client,
the ERP over HTTP where the rule is the ERP's. What is asserted is what those users see: status codes,
job and station variables, events on Cell with their fields, ``Units.Trace`` and HTTP bodies.

Each test first exercises what the rule allows (the control) and then what it forbids, so a control
that stopped working is told apart from a rule that does not hold.

The demo routing (automatic mode): OP10 Load (L1, L2) -> OP20 Mill (M1..M4, PRG-MILL-100) -> OP30 Wash
(W1, PRG-WASH-1) -> OP40 Unload (L1, L2) -> OP50 Inspect (scan in/out at C1); ``units_per_pallet`` 2.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from asyncua import ua

from gateway.config import CellConfig
from simulators.gateway_process import free_port
from tests.integration.opcua_client import NOW, CellClient, i32
from tests.integration.opcua_support import EventLog, Session, cell_toml, good, refused, serving

MILL, WASH = "PRG-MILL-100", "PRG-WASH-1"
PART, REV = "PN-1", "A"

_ids = itertools.count(1)


def next_id(station: str) -> str:
    """A new EventId for a report of ``station`` (unique in the run)."""
    return f"{station}-{next(_ids):05d}"


@pytest.fixture
def config(tmp_path: Path, make_config: Callable[..., CellConfig]) -> CellConfig:
    """The demo cell, with its ERP API open on a free port."""
    return make_config(cell_toml(tmp_path), CELL_GATEWAY_HTTP_PORT=str(free_port()))


@pytest.fixture
async def session(config: CellConfig) -> AsyncIterator[Session]:
    async with serving(config) as running:  # anonymous: the engineer role in the demo profile
        yield running


@pytest.fixture
async def erp(session: Session) -> AsyncIterator[httpx.AsyncClient]:
    """The ERP's HTTP client of the session's gateway."""
    base_url = f"http://127.0.0.1:{session.gateway.config.server.http_port}"
    async with httpx.AsyncClient(base_url=base_url, auth=("erp", "erp"), timeout=30) as http:
        yield http


# ------------------------------------------------------------------------------------ the shop floor
async def report(cell: CellClient, station: str, method: str, *args: Any) -> str:
    """A station report that must be answered Good; its EventId (the events' ReportEventId)."""
    event_id = next_id(station)
    result = await cell.station(station, method, event_id, *args)
    assert result.ok, f"{method} {args} at {station} refused with {result.code}"
    return event_id


async def new_job(
    cell: CellClient,
    job: str,
    quantity: int,
    *,
    buffer: float = 0.0,
    part: str = PART,
    pallets: Sequence[str] = (),
) -> str:
    """A released job of the demo's automatic routing."""
    await good(cell.jobs("CreateJob", job, part, REV, quantity, None, i32(0), buffer, [], list(pallets)))
    await good(cell.jobs("Release", job))
    return job


async def load(cell: CellClient, station: str, pallet: str, job: str, serials: Sequence[str]) -> None:
    """The pallet comes to the load station, the units are loaded (OP10), the pallet leaves."""
    await report(cell, station, "PalletArrived", pallet, NOW)
    await report(cell, station, "LoadCompleted", pallet, job, len(serials), list(serials), NOW)
    await report(cell, station, "PalletDeparted", pallet, NOW)


async def cycle(cell: CellClient, station: str, pallet: str, program: str) -> None:
    """The pallet comes to a machine, a whole cycle runs, the pallet leaves."""
    await report(cell, station, "PalletArrived", pallet, NOW)
    await report(cell, station, "CycleStarted", pallet, program, NOW)
    await report(cell, station, "CycleEnded", pallet, program, "ok", NOW)
    await report(cell, station, "PalletDeparted", pallet, NOW)


async def through_wash(cell: CellClient, pallet: str) -> None:
    """OP20 at M1 and OP30 at W1."""
    await cycle(cell, "M1", pallet, MILL)
    await cycle(cell, "W1", pallet, WASH)


async def unload(cell: CellClient, station: str, pallet: str) -> None:
    """OP40: an unload-only report at a load station."""
    await report(cell, station, "PalletArrived", pallet, NOW)
    await report(cell, station, "LoadCompleted", pallet, "", 0, [], NOW)
    await report(cell, station, "PalletDeparted", pallet, NOW)


async def to_inspection(cell: CellClient, pallet: str, job: str, serials: Sequence[str]) -> None:
    """Units loaded at L1, milled, washed and unloaded at L2: they need OP50 (C1) next."""
    await load(cell, "L1", pallet, job, serials)
    await through_wash(cell, pallet)
    await unload(cell, "L2", pallet)


async def inspect(cell: CellClient, serial: str) -> None:
    """OP50: scanned in and out at C1, passed."""
    await report(cell, "C1", "ScanIn", serial, NOW)
    await report(cell, "C1", "ScanOut", serial, "pass", NOW)


async def trace(cell: CellClient, serial: str) -> dict[str, Any]:
    """Units.Trace: the unit as stored (committed before any answer), as a client reads it."""
    (text,) = await good(cell.units("Trace", serial))
    found: dict[str, Any] = json.loads(text)
    return found


async def instruction(cell: CellClient, station: str, pallet: str, within: float = 5.0) -> dict[str, Any]:
    """The load station's LoadInstruction once it is the one for ``pallet`` (published after commit)."""
    path = f"Cell/Stations/{station}/LoadInstruction"
    text = ""
    try:
        async with asyncio.timeout(within):
            while True:
                text = await cell.read(path)
                if text and json.loads(text)["pallet"] == pallet:
                    found: dict[str, Any] = json.loads(text)
                    return found
    except TimeoutError:
        raise AssertionError(f"{station}'s LoadInstruction never named {pallet}: {text!r}") from None


async def instruction_until(
    cell: CellClient, station: str, pallet: str, holds: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    """Wait (at most 3 s) until the station's LoadInstruction for ``pallet`` satisfies ``holds``."""
    path = f"Cell/Stations/{station}/LoadInstruction"
    seen: dict[str, Any] = {}
    try:
        async with asyncio.timeout(3.0):
            while True:
                text = await cell.read(path)
                seen = json.loads(text) if text else {}
                if seen.get("pallet") == pallet and holds(seen):
                    return seen
    except TimeoutError:
        raise AssertionError(f"{station}'s LoadInstruction never showed {what}; it shows {seen}") from None


async def variable(cell: CellClient, path: str) -> Any:
    """A variable's value, or a marker string when the address space has no such variable."""
    try:
        return await cell.read(path)
    except ua.uaerrors.BadNodeIdUnknown:
        return f"<no variable {path}>"


async def job_values(cell: CellClient, job: str, *names: str) -> dict[str, Any]:
    return {name: await cell.read(f"Cell/Jobs/{job}/{name}") for name in names}


async def subscribe_types(session: Session, *names: str) -> list[str]:
    """Subscribe to more of the gateway's event types on Cell (found under BaseEventType by browse
    name), into the session's event log; the names the gateway has no event type for are returned."""
    cell, log = session.cell, session.events
    base = cell.client.get_node(ua.NodeId(ua.ObjectIds.BaseEventType))
    found = {
        ref.BrowseName.Name: cell.client.get_node(ref.NodeId)
        for ref in await base.get_children_descriptions(refs=ua.ObjectIds.HasSubtype)
        if ref.BrowseName.Name in names
    }
    fresh = {name: node for name, node in found.items() if name not in log.names.values()}
    if fresh:
        log.names.update({node.nodeid: name for name, node in fresh.items()})
        subscription = await cell.client.create_subscription(20, log)
        await subscription.subscribe_events(cell.node("Cell"), list(fresh.values()), queuesize=0)
    return sorted(set(names) - set(found))


def anomalies(log: EventLog, event_id: str, reason: str) -> list[Any]:
    """The AnomalyEventTypes received so far for one report, with one Reason."""
    return [
        e for e in log.of("AnomalyEventType") if getattr(e, "ReportEventId", None) == event_id and e.Reason == reason
    ]


async def job_state(session: Session, job: str, mark: int) -> str:
    """The job's State variable once a JobStateChangedEventType for it came after ``mark``."""
    await session.events.wait_for("JobStateChangedEventType", after=mark, Job=job)
    state: str = await session.cell.read(f"Cell/Jobs/{job}/State")
    return state


# ------------------------------------------------------------------------------------------ hold
async def test_an_end_without_start_moves_no_unit_of_a_held_job(session: Session) -> None:
    """Seed 002, Hold: "Block all transactional movement (Move/Consume) until the hold is formally
    released." (recap: "All transactional movement (Move/Consume) blocked.")

    A CycleEnded is a fact: it is answered Good and recorded whatever the job's state. For a pallet
    whose units never had a recorded CycleStarted it would move them on (EndWithoutStart); for a held
    job it moves nothing (HeldNotMoved) and the units still need OP20 until the hold is released and a
    real cycle runs. Control: the same end without a start for a job that is not held moves its units
    on to OP30.
    """
    cell, events = session.cell, session.events
    # Control: not held, the end without a start passes OP20.
    await new_job(cell, "J-RUN", 2)
    await load(cell, "L2", "P2", "J-RUN", ["R-1", "R-2"])
    await report(cell, "M2", "PalletArrived", "P2", NOW)
    control = await report(cell, "M2", "CycleEnded", "P2", MILL, "ok", NOW)
    await events.wait_for("AnomalyEventType", ReportEventId=control, Reason="EndWithoutStart")
    for serial in ("R-1", "R-2"):
        unit = await trace(cell, serial)
        assert (unit["status"], unit["next_step"]) == ("waiting", "OP30"), unit
        assert [s["operation"] for s in unit["steps"]] == ["OP10", "OP20"]

    # Held: the same fact is answered Good, flagged, and moves no unit.
    await new_job(cell, "J-HOLD", 2)
    await load(cell, "L1", "P1", "J-HOLD", ["H-1", "H-2"])
    await report(cell, "M1", "PalletArrived", "P1", NOW)
    mark = events.mark()
    await good(cell.jobs("Hold", "J-HOLD", "quality check"))
    assert await job_state(session, "J-HOLD", mark) == "Hold"
    ended = await report(cell, "M1", "CycleEnded", "P1", MILL, "ok", NOW)
    await events.wait_for("AnomalyEventType", ReportEventId=ended, Reason="EndWithoutStart")
    for serial in ("H-1", "H-2"):
        unit = await trace(cell, serial)
        assert (unit["status"], unit["next_step"]) == ("waiting", "OP20"), f"{serial} of a held job moved: {unit}"
        assert [s["operation"] for s in unit["steps"]] == ["OP10"], unit["steps"]
    held = await events.wait_for("AnomalyEventType", ReportEventId=ended, Reason="HeldNotMoved")
    assert held.Station == "M1"
    assert await job_values(cell, "J-HOLD", "Wip", "Finished") == {"Wip": 2, "Finished": 0}

    # Released formally, a real cycle moves them.
    await good(cell.jobs("Resume", "J-HOLD"))
    await cell.wait_for("Cell/Jobs/J-HOLD/State", "Running")
    await report(cell, "M1", "CycleStarted", "P1", MILL, NOW)
    await report(cell, "M1", "CycleEnded", "P1", MILL, "ok", NOW)
    for serial in ("H-1", "H-2"):
        assert (await trace(cell, serial))["next_step"] == "OP30"
    assert not anomalies(events, control, "HeldNotMoved")


async def test_a_cycle_begun_before_the_hold_passes_its_units(session: Session) -> None:
    """Seed 002, Hold: "Block all transactional movement (Move/Consume) until the hold is formally
    released."

    What the hold allows: a cycle that started before the hold is a movement already under way; its
    end after the hold passes its units (they go on to OP30), with its measured time, and is not
    flagged. The hold still stands for what comes next: the washer's cycle start is refused JobOnHold.
    """
    cell, events, clock = session.cell, session.events, session.clock
    await new_job(cell, "J-1", 2)
    await load(cell, "L1", "P1", "J-1", ["U-1", "U-2"])
    await report(cell, "M1", "PalletArrived", "P1", NOW)
    await report(cell, "M1", "CycleStarted", "P1", MILL, NOW)
    await cell.wait_for("Cell/Stations/M1/State", "running")
    mark = events.mark()
    await good(cell.jobs("Hold", "J-1", "material check"))
    assert await job_state(session, "J-1", mark) == "Hold"
    clock.advance(600)
    ended = await report(cell, "M1", "CycleEnded", "P1", MILL, "ok", NOW)
    for serial in ("U-1", "U-2"):
        unit = await trace(cell, serial)
        assert (unit["status"], unit["next_step"]) == ("waiting", "OP30"), unit
        (mill,) = [s for s in unit["steps"] if s["operation"] == "OP20"]
        assert (mill["station"], mill["result"], mill["elapsed"]) == ("M1", "pass", 300.0)  # 600 s shared by two
    await report(cell, "M1", "PalletDeparted", "P1", NOW)

    await report(cell, "W1", "PalletArrived", "P1", NOW)
    await refused(
        session.gateway,
        events,
        cell.station("W1", "CycleStarted", next_id("W1"), "P1", WASH, NOW),
        "BadInvalidState",
        "JobOnHold",
    )
    assert not anomalies(events, ended, "HeldNotMoved")
    assert not anomalies(events, ended, "EndWithoutStart")


async def test_a_scan_out_without_scan_in_finishes_no_unit_of_a_held_job(session: Session) -> None:
    """Seed 002, Hold: "Block all transactional movement (Move/Consume) until the hold is formally
    released." (recap: "Block scans until hold is formally released.")

    A ScanOut at C1 for a unit that needs OP50 but was never scanned in is a fact (Good). For a job
    that is not held it passes the step and finishes the unit (control); for a held job it is flagged
    HeldNotMoved and the unit is not finished: it still needs OP50 and the job's Finished stays 0, until
    the job is resumed and the unit is inspected.
    """
    cell, events = session.cell, session.events
    await new_job(cell, "J-OK", 1)
    await new_job(cell, "J-HOLD", 1)
    await to_inspection(cell, "P2", "J-OK", ["OK-1"])
    await to_inspection(cell, "P1", "J-HOLD", ["HOLD-1"])
    assert (await trace(cell, "HOLD-1"))["next_step"] == "OP50"

    # Control: not held, the scan out finishes the unit.
    mark = events.mark()
    control = await report(cell, "C1", "ScanOut", "OK-1", "pass", NOW)
    await events.wait_for("UnitFinishedEventType", after=mark, Serial="OK-1", Job="J-OK")
    await cell.wait_for("Cell/Jobs/J-OK/Finished", 1)
    assert (await trace(cell, "OK-1"))["status"] == "finished"

    # Held: recorded, flagged, not finished.
    mark = events.mark()
    await good(cell.jobs("Hold", "J-HOLD", "quality check"))
    assert await job_state(session, "J-HOLD", mark) == "Hold"
    scanned = await report(cell, "C1", "ScanOut", "HOLD-1", "pass", NOW)
    unit = await trace(cell, "HOLD-1")
    assert (unit["status"], unit["next_step"]) == ("waiting", "OP50"), f"a held unit was moved: {unit}"
    flagged = await events.wait_for("AnomalyEventType", ReportEventId=scanned, Reason="HeldNotMoved")
    assert (flagged.Serial, flagged.Job, flagged.Station) == ("HOLD-1", "J-HOLD", "C1")
    assert await job_values(cell, "J-HOLD", "Finished", "Wip") == {"Finished": 0, "Wip": 1}

    # Resumed, the unit is inspected and finishes, once.
    await good(cell.jobs("Resume", "J-HOLD"))
    await cell.wait_for("Cell/Jobs/J-HOLD/State", "Running")
    mark = events.mark()
    await inspect(cell, "HOLD-1")
    await events.wait_for("UnitFinishedEventType", after=mark, Serial="HOLD-1", Job="J-HOLD")
    assert len([e for e in events.of("UnitFinishedEventType") if e.Serial == "HOLD-1"]) == 1
    assert await job_values(cell, "J-HOLD", "Finished", "Wip") == {"Finished": 1, "Wip": 0}
    assert not anomalies(events, control, "HeldNotMoved")


async def test_held_units_stay_on_the_pallet_at_unload(session: Session) -> None:
    """Seed 002, Hold: "Block all transactional movement (Move/Consume) until the hold is formally
    released."

    At a load station the LoadInstruction lists the units whose next step (OP40 Unload) it serves under
    "unload", and a LoadCompleted passes them (control). Units of a held job are listed under "stay" with
    "hold": true instead; a LoadCompleted does not unload them: they stay on the pallet, still need OP40,
    are flagged HeldNotMoved and are not finished.
    """
    cell, events = session.cell, session.events
    await new_job(cell, "J-OK", 1)
    await new_job(cell, "J-HOLD", 1)

    # Control: not held, listed under "unload" and unloaded.
    await load(cell, "L1", "P2", "J-OK", ["OK-1"])
    await through_wash(cell, "P2")
    await report(cell, "L2", "PalletArrived", "P2", NOW)
    shown = await instruction(cell, "L2", "P2")
    assert [(u["serial"], u["job"], u["next"]) for u in shown["unload"]] == [("OK-1", "J-OK", "OP40")]
    assert shown["stay"] == []
    await report(cell, "L2", "LoadCompleted", "P2", "", 0, [], NOW)
    unit = await trace(cell, "OK-1")
    assert (unit["next_step"], unit["pallet"]) == ("OP50", ""), unit
    await report(cell, "L2", "PalletDeparted", "P2", NOW)

    # Held: told to stay, and stays.
    await load(cell, "L1", "P1", "J-HOLD", ["HOLD-1"])
    await through_wash(cell, "P1")
    mark = events.mark()
    await good(cell.jobs("Hold", "J-HOLD", "quality check"))
    assert await job_state(session, "J-HOLD", mark) == "Hold"
    await report(cell, "L2", "PalletArrived", "P1", NOW)
    shown = await instruction(cell, "L2", "P1")
    assert "HOLD-1" not in [u["serial"] for u in shown["unload"]], f"a held unit is to be unloaded: {shown}"
    (stay,) = [u for u in shown["stay"] if u["serial"] == "HOLD-1"]
    assert (stay["job"], stay["next"], stay.get("hold")) == ("J-HOLD", "OP40", True), shown
    unloaded = await report(cell, "L2", "LoadCompleted", "P1", "", 0, [], NOW)
    unit = await trace(cell, "HOLD-1")
    assert (unit["status"], unit["next_step"], unit["pallet"]) == ("waiting", "OP40", "P1"), unit
    flagged = await events.wait_for("AnomalyEventType", ReportEventId=unloaded, Reason="HeldNotMoved")
    assert (flagged.Serial, flagged.Job) == ("HOLD-1", "J-HOLD")
    assert await job_values(cell, "J-HOLD", "Finished", "Wip") == {"Finished": 0, "Wip": 1}


async def test_a_split_of_a_held_job_is_held(session: Session) -> None:
    """Seed 002, Hold: "Block all transactional movement (Move/Consume) until the hold is formally
    released."; Split: "You must handle partial movements without losing cost traceability."

    A split of a Running job gives a Running child whose units go on (control). A split of a held job
    gives a child on Hold: its units' cycle start is refused JobOnHold until the child is resumed.
    """
    cell, events = session.cell, session.events
    # Control: split of a running job.
    await new_job(cell, "J-RUN", 2)
    await load(cell, "L1", "P1", "J-RUN", ["R-1"])
    await load(cell, "L2", "P2", "J-RUN", ["R-2"])
    mark = events.mark()
    (child,) = await good(cell.jobs("Split", "J-RUN", ["R-2"], []))
    assert child == "J-RUN-R1"
    assert await job_state(session, child, mark) == "Running"
    await report(cell, "M1", "PalletArrived", "P2", NOW)
    await report(cell, "M1", "CycleStarted", "P2", MILL, NOW)
    await report(cell, "M1", "CycleEnded", "P2", MILL, "ok", NOW)
    assert (await trace(cell, "R-2"))["next_step"] == "OP30"

    # Held: the child is held too.
    await new_job(cell, "J-HOLD", 2)
    await load(cell, "L1", "P3", "J-HOLD", ["H-1"])
    await load(cell, "L2", "P4", "J-HOLD", ["H-2"])
    mark = events.mark()
    await good(cell.jobs("Hold", "J-HOLD", "quality check"))
    assert await job_state(session, "J-HOLD", mark) == "Hold"
    mark = events.mark()
    (held_child,) = await good(cell.jobs("Split", "J-HOLD", ["H-2"], []))
    assert held_child == "J-HOLD-R1"
    assert await job_state(session, held_child, mark) == "Hold", "the child of a held job is not held"
    await report(cell, "M2", "PalletArrived", "P4", NOW)
    starting = cell.station("M2", "CycleStarted", next_id("M2"), "P4", MILL, NOW)
    await refused(session.gateway, events, starting, "BadInvalidState", "JobOnHold")

    # Formally released, it runs.
    await good(cell.jobs("Resume", held_child))
    await cell.wait_for(f"Cell/Jobs/{held_child}/State", "Running")
    await report(cell, "M2", "CycleStarted", "P4", MILL, NOW)
    await report(cell, "M2", "CycleEnded", "P4", MILL, "ok", NOW)
    assert (await trace(cell, "H-2"))["next_step"] == "OP30"


async def test_merge_moves_no_held_units_out_of_their_hold(session: Session) -> None:
    """Seed 002, Hold: "Block all transactional movement (Move/Consume) until the hold is formally
    released."; Merge: "Combining multiple partial batches into a full pallet for shipping."

    Merging a running source into a held target is allowed: the moved units are then held (their
    cycle start is refused JobOnHold) (control). Merging a held source into a job that is not held
    would release its units without a formal release: it is refused JobOnHold and changes nothing.
    """
    cell, events, gateway = session.cell, session.events, session.gateway
    # Control: running source into a held target.
    await new_job(cell, "J-TH", 2)
    await load(cell, "L1", "P1", "J-TH", ["TH-1"])
    await good(cell.jobs("Hold", "J-TH", "quality check"))
    await new_job(cell, "J-SR", 1)
    await load(cell, "L2", "P2", "J-SR", ["SR-1"])
    await good(cell.jobs("Merge", "J-TH", "J-SR"))
    await cell.wait_for("Cell/Jobs/J-SR/State", "Closed")
    await cell.wait_for("Cell/Jobs/J-TH/Wip", 2)
    assert (await trace(cell, "SR-1"))["job"] == "J-TH"
    await report(cell, "M1", "PalletArrived", "P2", NOW)
    starting = cell.station("M1", "CycleStarted", next_id("M1"), "P2", MILL, NOW)
    await refused(gateway, events, starting, "BadInvalidState", "JobOnHold")

    # Rule: a held source into a running target.
    await new_job(cell, "J-TR", 2)
    await load(cell, "L1", "P3", "J-TR", ["TR-1"])
    await new_job(cell, "J-SH", 1)
    await load(cell, "L2", "P4", "J-SH", ["SH-1"])
    mark = events.mark()
    await good(cell.jobs("Hold", "J-SH", "quality check"))
    assert await job_state(session, "J-SH", mark) == "Hold"
    before = {
        "J-TR": await job_values(cell, "J-TR", "State", "Quantity", "Started", "Wip"),
        "J-SH": await job_values(cell, "J-SH", "State", "Quantity", "Started", "Wip"),
    }
    await refused(gateway, events, cell.jobs("Merge", "J-TR", "J-SH"), "BadInvalidState", "JobOnHold")
    assert (await trace(cell, "SH-1"))["job"] == "J-SH"
    after = {
        "J-TR": await job_values(cell, "J-TR", "State", "Quantity", "Started", "Wip"),
        "J-SH": await job_values(cell, "J-SH", "State", "Quantity", "Started", "Wip"),
    }
    assert after == before


# ------------------------------------------------------------------------------------------ extras
async def test_load_instructions_offer_only_the_ordered_quantity(session: Session) -> None:
    """Seed 002, Quantity control: "Operators often build “extras” to cover potential fallout. This is
    unauthorized inventory." ... "Max_Qty = Ordered_Qty + Yield_Buffer (e.g. 2%)." ... "When an operator
    attempts to launch a new PCB after this point, the system should reject the action with an “Order
    Fulfilled” notice."

    Control (allowed): the buffer is the hard ceiling of a deliberate load: an operator may load up to
    MaxQuantity, and past it the load is refused BadOutOfRange (OrderFulfilled). Rule: the gateway's own
    LoadInstruction never plans extras: it offers a job only while started - scrapped < ordered, for at
    most ordered - (started - scrapped) units (and units_per_pallet); after a scrap, only for the units
    missing.
    """
    cell, events, gateway = session.cell, session.events, session.gateway
    # Control: Quantity 2 with 50 % buffer, on pallets P7 and P8 only; loaded up to its cap by hand.
    await new_job(cell, "J-CAP", 2, buffer=50.0, pallets=["P7", "P8"])
    assert await job_values(cell, "J-CAP", "Quantity", "MaxQuantity") == {"Quantity": 2, "MaxQuantity": 3}
    await report(cell, "L1", "PalletArrived", "P7", NOW)
    assert (await instruction(cell, "L1", "P7"))["load"] == {
        "job": "J-CAP",
        "part": PART,
        "revision": REV,
        "quantity": 2,
        "operation": "OP10",
    }
    await report(cell, "L1", "LoadCompleted", "P7", "J-CAP", 2, ["CAP-1", "CAP-2"], NOW)
    await report(cell, "L1", "PalletDeparted", "P7", NOW)
    await report(cell, "L2", "PalletArrived", "P8", NOW)
    await report(cell, "L2", "LoadCompleted", "P8", "J-CAP", 1, ["CAP-3"], NOW)  # the buffer unit
    await cell.wait_for("Cell/Jobs/J-CAP/Started", 3)
    fourth = cell.station("L2", "LoadCompleted", next_id("L2"), "P8", "J-CAP", 1, ["CAP-4"], NOW)
    await refused(gateway, events, fourth, "BadOutOfRange", "OrderFulfilled")
    await report(cell, "L2", "PalletDeparted", "P8", NOW)

    # Rule: Quantity 2 with 50 % buffer; the instructions offer the 2 ordered, never the extra.
    await new_job(cell, "J-X", 2, buffer=50.0)
    assert await job_values(cell, "J-X", "Quantity", "MaxQuantity") == {"Quantity": 2, "MaxQuantity": 3}
    await report(cell, "L1", "PalletArrived", "P1", NOW)
    offered = (await instruction(cell, "L1", "P1"))["load"]
    assert (offered["job"], offered["quantity"]) == ("J-X", 2)
    await report(cell, "L1", "LoadCompleted", "P1", "J-X", 1, ["X-1"], NOW)
    await report(cell, "L1", "PalletDeparted", "P1", NOW)
    await cell.wait_for("Cell/Jobs/J-X/Started", 1)

    await report(cell, "L2", "PalletArrived", "P2", NOW)  # an empty pallet: room for 2
    offered = (await instruction(cell, "L2", "P2"))["load"]
    assert offered is not None, "1 of 2 ordered started: J-X is still to be offered"
    assert (offered["job"], offered["quantity"]) == ("J-X", 1), f"1 of 2 ordered started: offer 1, not {offered}"
    await report(cell, "L2", "LoadCompleted", "P2", "J-X", 1, ["X-2"], NOW)
    await report(cell, "L2", "PalletDeparted", "P2", NOW)
    await cell.wait_for("Cell/Jobs/J-X/Started", 2)

    def not_offered(shown: dict[str, Any]) -> bool:
        return shown["load"] is None or shown["load"]["job"] != "J-X"

    await report(cell, "L1", "PalletArrived", "P3", NOW)
    await instruction_until(cell, "L1", "P3", not_offered, "J-X no longer offered once its 2 ordered started")
    # An operator's deliberate third unit is still within the cap; a fourth is not.
    await report(cell, "L1", "LoadCompleted", "P3", "J-X", 1, ["X-3"], NOW)
    await report(cell, "L1", "PalletDeparted", "P3", NOW)
    await cell.wait_for("Cell/Jobs/J-X/Started", 3)
    await report(cell, "L1", "PalletArrived", "P4", NOW)
    await instruction_until(cell, "L1", "P4", not_offered, "J-X not offered at its cap")
    fourth = cell.station("L1", "LoadCompleted", next_id("L1"), "P4", "J-X", 1, ["X-4"], NOW)
    await refused(gateway, events, fourth, "BadOutOfRange", "OrderFulfilled")

    # One scrapped: the extra covers it, nothing is missing. Two scrapped: one is missing, offered.
    await good(cell.units("Scrap", next_id("scrap"), "X-3", "dropped", NOW))
    await cell.wait_for("Cell/Jobs/J-X/Scrapped", 1)  # stations are published before jobs
    await instruction_until(cell, "L1", "P4", not_offered, "J-X not offered: 2 of 2 ordered in WIP")
    await good(cell.units("Scrap", next_id("scrap"), "X-1", "dropped", NOW))
    await cell.wait_for("Cell/Jobs/J-X/Scrapped", 2)
    shown = await instruction_until(
        cell, "L1", "P4", lambda s: not not_offered(s), "J-X offered again after a second scrap"
    )
    assert shown["load"]["quantity"] == 1, f"one unit is missing: offer 1, not {shown['load']}"


async def test_a_job_shows_when_its_target_is_reached(session: Session, erp: httpx.AsyncClient) -> None:
    """Seed 002, WO state machine: "Closed (TECO - technical completion) ... Definition: Target quantity
    reached or order short-closed."; Quantity control: "Operators often build “extras” to cover
    potential fallout. This is unauthorized inventory."

    Control: finished units count in the job's Finished (variable and ERP API) and raise
    UnitFinishedEventType. Rule: once Finished reaches the ordered quantity (here while the operator's
    extra is still in WIP), the job's TargetReached variable turns True (False before), a
    JobTargetReachedEventType (Job, Quantity, Finished) is raised on Cell, and GET /jobs/{id} says
    "target_reached": true, so the ERP may close it.
    """
    cell, events = session.cell, session.events
    await new_job(cell, "J-T", 2, buffer=50.0)
    await to_inspection(cell, "P1", "J-T", ["T-1", "T-2"])
    await load(cell, "L1", "P2", "J-T", ["T-3"])  # a deliberate extra, within the cap

    # Control: one finished.
    mark = events.mark()
    await inspect(cell, "T-1")
    await events.wait_for("UnitFinishedEventType", after=mark, Serial="T-1", Job="J-T")
    await cell.wait_for("Cell/Jobs/J-T/Finished", 1)
    job = (await erp.get("/jobs/J-T")).json()
    assert (job["state"], job["quantity"], job["finished"], job["wip"]) == ("Running", 2, 1, 2)

    # Rule: not reached with 1 of 2, reached with 2 of 2.
    missing = await subscribe_types(session, "JobTargetReachedEventType")
    assert await variable(cell, "Cell/Jobs/J-T/TargetReached") is False
    assert job.get("target_reached") is False, job
    mark = events.mark()
    await inspect(cell, "T-2")
    await events.wait_for("UnitFinishedEventType", after=mark, Serial="T-2", Job="J-T")
    await cell.wait_for("Cell/Jobs/J-T/Finished", 2)
    assert await variable(cell, "Cell/Jobs/J-T/TargetReached") is True
    job = (await erp.get("/jobs/J-T")).json()
    assert (job["finished"], job["wip"], job.get("target_reached")) == (2, 1, True), job
    assert not missing, f"the gateway has no {missing}"
    reached = await events.wait_for("JobTargetReachedEventType", after=mark, Job="J-T")
    assert (reached.Quantity, reached.Finished) == (2, 2)
    assert reached.SourceNode == cell.node("Cell").nodeid


# ------------------------------------------------------------------------------------------ back-out
async def test_back_out_leaves_units_in_progress_free_to_finish(session: Session, erp: httpx.AsyncClient) -> None:
    """Seed 001, Backing Out Jobs: "OrderLink can be configured to back out of the 12 non-produced
    parts in the job. OrderLink will remove the job from the cell controller and add a new booking for
    12 ABC123 parts."

    Control: a job with nothing in progress is backed out for ordered - finished. Rule: for a job with
    units in progress, the new booking is ordered - finished - in progress (those are not booked
    twice), the job is Closed and takes no new load (JobClosed), and the units in progress are not
    stranded: their cycles and scans are answered Good and they finish.
    """
    cell, events, gateway = session.cell, session.events, session.gateway

    async def back_out(job: str) -> dict[str, Any]:
        response = await erp.post(f"/jobs/{job}/back-out", json={"reason": "M2 down: start the day fresh"})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    # Control: 3 ordered, 1 finished, none in progress.
    await new_job(cell, "J-DONE", 3, part="PN-C")
    await to_inspection(cell, "P3", "J-DONE", ["D-1"])
    await inspect(cell, "D-1")
    await cell.wait_for("Cell/Jobs/J-DONE/Finished", 1)
    backed = await back_out("J-DONE")
    assert backed["quantity"] == 2
    assert backed["booking"]["parts"] == {"PN-C": 2}
    assert (await erp.get("/jobs/J-DONE")).json()["state"] == "Closed"

    # Rule: 5 ordered, 1 finished, 2 in progress (loaded, waiting for the mill).
    await new_job(cell, "J-B", 5, part="PN-B")
    await to_inspection(cell, "P1", "J-B", ["B-1"])
    await inspect(cell, "B-1")
    await load(cell, "L1", "P2", "J-B", ["B-2", "B-3"])
    await cell.wait_for("Cell/Jobs/J-B/Wip", 2)
    backed = await back_out("J-B")
    assert backed["quantity"] == 5 - 1 - 2
    assert backed["booking"]["parts"] == {"PN-B": 2}
    assert (backed["variance"]["finished"], backed["variance"]["wip"]) == (1, 2)
    assert (await erp.get("/jobs/J-B")).json()["state"] == "Closed"
    await cell.wait_for("Cell/Jobs/J-B/State", "Closed")
    await report(cell, "L2", "PalletArrived", "P4", NOW)
    new_load = cell.station("L2", "LoadCompleted", next_id("L2"), "P4", "J-B", 1, ["B-4"], NOW)
    await refused(gateway, events, new_load, "BadInvalidState", "JobClosed")

    # The units in progress go on to the end.
    await report(cell, "M1", "PalletArrived", "P2", NOW)
    started = await cell.station("M1", "CycleStarted", next_id("M1"), "P2", MILL, NOW)
    assert started.code == "Good", f"a unit in progress of a backed-out job is stranded: {started.code}"
    await report(cell, "M1", "CycleEnded", "P2", MILL, "ok", NOW)
    await report(cell, "M1", "PalletDeparted", "P2", NOW)
    await cycle(cell, "W1", "P2", WASH)
    await unload(cell, "L1", "P2")
    mark = events.mark()
    for serial in ("B-2", "B-3"):
        await inspect(cell, serial)
        await events.wait_for("UnitFinishedEventType", after=mark, Serial=serial, Job="J-B")
    await cell.wait_for("Cell/Jobs/J-B/Finished", 3)
    job = (await erp.get("/jobs/J-B")).json()
    assert (job["state"], job["finished"], job["wip"]) == ("Closed", 3, 0)
    # What the cell made plus what was booked again is what was ordered.
    assert job["finished"] + backed["quantity"] == 5


# ------------------------------------------------------------------------------------------ merge
async def test_a_merge_never_breaks_the_cap(session: Session) -> None:
    """Seed 002, Quantity control: "Max_Qty = Ordered_Qty + Yield_Buffer (e.g. 2%)." ... "Operators
    often build “extras” to cover potential fallout. This is unauthorized inventory."; Merge: "Combining
    multiple partial batches into a full pallet for shipping."

    Control: a source that used its own buffer merges into a target when the merged job stays within
    its cap (started - scrapped <= MaxQuantity of the merged quantity, the target's buffer). Rule: a
    merge after which started - scrapped would exceed the merged MaxQuantity is refused BadOutOfRange
    (OrderFulfilled), and both jobs stay as they were.
    """
    cell, events, gateway = session.cell, session.events, session.gateway
    names = ("State", "Quantity", "MaxQuantity", "Started", "Wip")

    # Control: source 2 + 50 % with 3 started, target 4 + 0 % with 1 started: merged 6, cap 6, 4 started.
    await new_job(cell, "J-SC", 2, buffer=50.0)
    await load(cell, "L1", "P4", "J-SC", ["SC-1", "SC-2"])
    await load(cell, "L2", "P5", "J-SC", ["SC-3"])
    await new_job(cell, "J-TC", 4)
    await load(cell, "L1", "P6", "J-TC", ["TC-1"])
    await cell.wait_for("Cell/Jobs/J-SC/Started", 3)
    await good(cell.jobs("Merge", "J-TC", "J-SC"))
    await cell.wait_for("Cell/Jobs/J-SC/State", "Closed")
    await cell.wait_for("Cell/Jobs/J-TC/Started", 4)
    assert await job_values(cell, "J-TC", *names) == {
        "State": "Running",
        "Quantity": 6,
        "MaxQuantity": 6,
        "Started": 4,
        "Wip": 4,
    }

    # Rule: source 2 + 50 % with 3 started, target 2 + 0 % with 2 started: merged 4, cap 4, 5 started.
    await new_job(cell, "J-S", 2, buffer=50.0)
    await load(cell, "L1", "P1", "J-S", ["S-1", "S-2"])
    await load(cell, "L2", "P2", "J-S", ["S-3"])
    await new_job(cell, "J-T", 2)
    await load(cell, "L1", "P3", "J-T", ["T-1", "T-2"])
    await cell.wait_for("Cell/Jobs/J-S/Started", 3)
    await cell.wait_for("Cell/Jobs/J-T/Started", 2)
    before = {job: await job_values(cell, job, *names) for job in ("J-T", "J-S")}
    assert before == {
        "J-T": {"State": "Running", "Quantity": 2, "MaxQuantity": 2, "Started": 2, "Wip": 2},
        "J-S": {"State": "Running", "Quantity": 2, "MaxQuantity": 3, "Started": 3, "Wip": 3},
    }
    await refused(gateway, events, cell.jobs("Merge", "J-T", "J-S"), "BadOutOfRange", "OrderFulfilled")
    assert {job: await job_values(cell, job, *names) for job in ("J-T", "J-S")} == before
    assert (await trace(cell, "S-1"))["job"] == "J-S"


# ------------------------------------------------------------------------------------------ stale WIP
async def test_a_pallet_movement_is_activity_for_stale_wip(session: Session) -> None:
    """Seed 002, Drift control: "Phantom WIP: Units visibly missing but systemically “at Op 20.”" ...
    "When a unit remains inactive for an extended period (e.g. more than 30 days), the system should
    automatically flag it for a “Lost Audit.”"

    Control: a unit idle for 31 days (stale_wip_days 30) is flagged: LostAuditEventType. Rule: a unit
    whose pallet moved (PalletArrived of the pallet carrying it) was not inactive: 29 days idle, the
    pallet moves, 2 more days, and it is not flagged.
    """
    cell, events, gateway, clock = session.cell, session.events, session.gateway, session.clock
    await new_job(cell, "J-W", 2)
    await load(cell, "L1", "P1", "J-W", ["MOVED-1"])
    await load(cell, "L2", "P2", "J-W", ["IDLE-1"])

    clock.advance(timedelta(days=29))
    assert await gateway.sweep() == []
    await report(cell, "M1", "PalletArrived", "P1", NOW)  # the pallet carrying MOVED-1 moves
    clock.advance(timedelta(days=2))
    flagged = await gateway.sweep()

    # Control: the idle unit is flagged.
    assert "IDLE-1" in flagged
    lost = await events.wait_for("LostAuditEventType", Serial="IDLE-1")
    assert (lost.Job, lost.IdleSeconds) == ("J-W", 31 * 86400.0)
    assert (await trace(cell, "IDLE-1"))["audit_flagged"] is True

    # Rule: the unit whose pallet moved 2 days ago is not.
    assert "MOVED-1" not in flagged, f"a unit whose pallet moved 2 days ago was flagged: {flagged}"
    assert (await trace(cell, "MOVED-1"))["audit_flagged"] is False
    assert not [e for e in events.of("LostAuditEventType") if e.Serial == "MOVED-1"]


async def test_an_open_lost_audit_stays_open_through_activity(session: Session) -> None:
    """Seed 002, Drift control: "When a unit remains inactive for an extended period (e.g. more than 30
    days), the system should automatically flag it for a “Lost Audit.”" (recap: "System automatically
    flags unit for “Lost Audit”.")

    Control: a flagged unit's audit is resolved by an engineer (ResolveAudit 'found' is Good), and a
    flagged unit's pallet may still go to a machine and run its cycle (the cycle passes its units).
    Rule: that activity does not silently close the audit: the unit is still under audit (ResolveAudit
    'found' afterwards is Good), and a LostAuditActivityEventType (Serial, Job, Station) is raised for it.
    """
    cell, events, gateway, clock = session.cell, session.events, session.gateway, session.clock
    await new_job(cell, "J-W", 2)
    await load(cell, "L1", "P1", "J-W", ["ACTIVE-1"])
    await load(cell, "L2", "P2", "J-W", ["QUIET-1"])
    clock.advance(timedelta(days=31))
    assert sorted(await gateway.sweep()) == ["ACTIVE-1", "QUIET-1"]
    await events.wait_for_count("LostAuditEventType", 2)

    # Control: resolved by an engineer.
    await good(cell.units("ResolveAudit", "QUIET-1", "found"))
    assert (await trace(cell, "QUIET-1"))["audit_flagged"] is False

    # The flagged unit's pallet goes to the mill and its cycle runs (allowed; the units move on).
    missing = await subscribe_types(session, "LostAuditActivityEventType")
    mark = events.mark()
    await report(cell, "M1", "PalletArrived", "P1", NOW)
    await report(cell, "M1", "CycleStarted", "P1", MILL, NOW)
    clock.advance(600)
    await report(cell, "M1", "CycleEnded", "P1", MILL, "ok", NOW)
    unit = await trace(cell, "ACTIVE-1")
    assert (unit["status"], unit["next_step"]) == ("waiting", "OP30"), unit

    # Rule: still under audit until an engineer resolves it.
    assert unit["audit_flagged"] is True, "activity closed the unit's Lost Audit without an engineer"
    await good(cell.units("ResolveAudit", "ACTIVE-1", "found"))
    assert (await trace(cell, "ACTIVE-1"))["audit_flagged"] is False
    assert not missing, f"the gateway has no {missing}"
    activity = await events.wait_for("LostAuditActivityEventType", after=mark, Serial="ACTIVE-1", Station="M1")
    assert activity.Job == "J-W"
    assert activity.SourceNode == cell.node("Cell").nodeid
