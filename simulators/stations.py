"""The station kinds of the simulated cell, each station a worker driven by its own virtual PLC.

- Load stations do what the gateway's LoadInstruction says: unload the units whose next step is off
  the pallet or who are done, load new units of the job offered.
- Machines and washers (by methods or by tags) run the program of ExpectedProgram; with the faults on,
  a machine breaks down mid-cycle or fails a cycle (the operator scraps its units).
- Inspection and manual stations scan units in and out after they leave the pallet; a unit that fails
  is scrapped, split off to a rework job, or inspected again.

Stopping: at the end of the simulated period stations finish the visit they are in (every report they
began is answered) and take no new work; what is on pallets and in queues stays WIP.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from gateway.config import Station
from simulators.floor import Floor, WorkQueue
from simulators.link import SimulationError
from simulators.model import SimPallet, SimUnit
from simulators.plc import Plc, TagPlc
from simulators.scenario import Fault


def station_worker(floor: Floor, station: Station, plc: Plc) -> Coroutine[Any, Any, None]:
    """The work of one station, by its kind, until the simulation stops."""
    match station.kind:
        case "load":
            return load_station(floor, station, plc)
        case "machine" | "wash":
            return cycle_station(floor, station, plc)
        case _:
            return scan_station(floor, station, plc)


# ------------------------------------------------------------------ load stations
async def _arrivals(floor: Floor, station: Station) -> AsyncIterator[SimPallet]:
    """The pallets that come to this station, one visit each, until the simulation stops."""
    queue = floor.queues[station.groups[0]]
    while (pallet := await queue.take(floor.stop)) is not None:
        floor.stats[station.id].visits += 1
        yield pallet


async def load_station(floor: Floor, station: Station, plc: Plc) -> None:
    rng = plc.rng
    async for pallet in _arrivals(floor, station):
        await _load_visit(floor, station, plc, pallet, rng)


async def _instruction(plc: Plc, station: str, pallet: str, done: set[str]) -> dict[str, Any]:
    """The LoadInstruction for this pallet, once it no longer lists units already unloaded."""

    def fits(value: Any) -> bool:
        if not value:
            return False
        data = json.loads(value)
        return bool(data.get("pallet") == pallet and not done & {u["serial"] for u in data["unload"]})

    value = await plc.wait_for(f"Cell/Stations/{station}/LoadInstruction", fits)
    if not fits(value):
        raise SimulationError(f"{station}: no LoadInstruction for {pallet} (last: {value!r})")
    found: dict[str, Any] = json.loads(value)
    return found


async def _load_visit(floor: Floor, station: Station, plc: Plc, pallet: SimPallet, rng: random.Random) -> None:
    await plc.report("PalletArrived", pallet=pallet.id)
    instruction = await _instruction(plc, station.id, pallet.id, set())
    unload = [u["serial"] for u in instruction["unload"]]
    expected = sorted(
        u.serial for u in floor.live_units(pallet) if (s := floor.next_step(u)) and s.group in station.groups
    )
    if sorted(unload) != expected:
        floor.ledger.problem(
            f"{station.id}: instruction unloads {sorted(unload)} from {pallet.id}, expected {expected}"
        )
    load = instruction["load"]
    labor = sum(s.seconds for u in unload if u in floor.units and (s := floor.next_step(floor.units[u])) is not None)
    if load is not None:
        job = floor.jobs.get(load["job"])
        labor += (job.routing[0].seconds if job else floor.timing.default_operation_seconds) * load["quantity"]
    await floor.work(station.id, floor.vary(rng, labor) + floor.delay(rng))

    if load is not None and load["job"] in floor.jobs:
        loaded = await _load_completed(floor, station, plc, pallet, unload, load)
        if not loaded and unload:  # the load part was refused: report the unload alone (new EventId)
            await _load_completed(floor, station, plc, pallet, unload, None)
        if not loaded:  # the offer went to someone else: ask again for what the pallet may take now
            again = await _instruction(plc, station.id, pallet.id, set(unload))
            if again["load"] is not None and again["load"]["job"] in floor.jobs:
                await _load_completed(floor, station, plc, pallet, [], again["load"])
    elif load is not None:
        floor.ledger.problem(f"{station.id}: instruction offers unknown job {load['job']}")
        if unload:
            await _load_completed(floor, station, plc, pallet, unload, None)
    elif unload:
        await _load_completed(floor, station, plc, pallet, unload, None)
    await plc.report("PalletDeparted", pallet=pallet.id)
    floor.dispatch(pallet, rng)


async def _load_completed(
    floor: Floor, station: Station, plc: Plc, pallet: SimPallet, unload: list[str], load: dict[str, Any] | None
) -> bool:
    job = floor.jobs[load["job"]] if load else None
    quantity = int(load["quantity"]) if load else 0
    supplied = floor.new_serials(job, quantity) if job else []
    ack = await plc.report(
        "LoadCompleted",
        pallet=pallet.id,
        job=job.id if job else "",
        quantity=quantity,
        serials=supplied,
    )
    if not ack.ok:
        if job is None:
            floor.ledger.problem(f"{station.id}: unload of {pallet.id} refused ({ack.status})")
        return False
    for serial in unload:
        unit = floor.units.get(serial)
        if unit is None or not unit.live:
            continue
        floor.pass_step(unit, station.id, True)
        pallet.units.remove(serial)
        if unit.live:
            floor.to_off_pallet_step(unit)
    if job is not None:
        serials = list(ack.outputs[0]) if ack.outputs else []
        if len(serials) != quantity:
            floor.ledger.problem(f"{station.id}: load of {quantity} answered with serials {serials}")
        for serial in serials:
            unit = SimUnit(serial, job.id, next_step=0)
            floor.units[serial] = unit
            floor.pass_step(unit, station.id, True)
            pallet.units.append(serial)
    return True


# ------------------------------------------------------------------ machines and wash
async def cycle_station(floor: Floor, station: Station, plc: Plc) -> None:
    rng = plc.rng
    async for pallet in _arrivals(floor, station):
        # Tag stations keep working across a gateway restart: it restores their tag state.
        repair = await _cycle_visit(floor, station, plc, pallet, rng)
        if repair:
            floor.stats[station.id].down += repair
            await floor.clock.sleep(repair)


async def _cycle_visit(floor: Floor, station: Station, plc: Plc, pallet: SimPallet, rng: random.Random) -> float:
    """One pallet at a machine or washer; returns the repair time if it broke down."""
    tags = isinstance(plc, TagPlc)
    stats = floor.stats[station.id]
    if isinstance(plc, TagPlc):
        await plc.set_tags(("PalletArrived",), PalletPresent=pallet.id)
    else:
        await plc.report("PalletArrived", pallet=pallet.id)
    units = floor.live_units(pallet)
    steps = [floor.next_step(u) for u in units]
    nominal = sum(s.seconds for s in steps if s is not None)
    planned = steps[0].program if steps and steps[0] is not None else ""
    program = await plc.wait_for(f"Cell/Stations/{station.id}/ExpectedProgram", bool, within=5.0)
    if program != planned:
        floor.ledger.problem(f"{station.id}: ExpectedProgram {program!r} for {pallet.id}, routing says {planned!r}")
        program = program or planned

    if isinstance(plc, TagPlc):
        await plc.set_tags(("CycleStarted",), Program=program, CycleActive=True)
        state = await plc.wait_for(f"Cell/Stations/{station.id}/State", lambda v: v == "running", within=5.0)
        started = state == "running"
    else:
        started = (await plc.report("CycleStarted", pallet=pallet.id, program=program)).ok
    if not started:
        floor.ledger.problem(f"{station.id}: cycle start of {pallet.id} ({program}) refused")
        await _depart(plc, pallet)
        floor.later(_retry_later(floor, pallet, station.groups[0]))
        return 0.0

    duration = floor.vary(rng, nominal)
    breakdown = not tags and Fault.BREAKDOWN in floor.faults and rng.random() < floor.rates.breakdown
    fail = not tags and not breakdown and Fault.SCRAP in floor.faults and rng.random() < floor.rates.cycle_fail
    repair = 0.0
    if breakdown:
        await floor.work(station.id, duration * rng.uniform(0.2, 0.8))
        await plc.report("CycleEnded", pallet=pallet.id, program=program, result="interrupted")
        result = "interrupted"
        repair = rng.uniform(*floor.timing.repair_seconds)
        floor.fault_log.append(
            f"{floor.hhmm()} {station.id} broke down mid-cycle ({pallet.id}), repair {repair / 60:.0f} min"
        )
    else:
        await floor.work(station.id, duration)
        result = "fail" if fail else "ok"
        if isinstance(plc, TagPlc):
            await plc.set_tags(("CycleEnded",), droppable=True, CycleActive=False)
        else:
            await plc.report("CycleEnded", pallet=pallet.id, program=program, result=result)
    stats.results[result] += 1
    for unit in units:
        floor.pass_step(unit, station.id, result == "ok")
    if fail:
        for unit in units:  # the operator takes the bad parts off the pallet
            if (await floor.operator.report("Scrap", method="Scrap", serial=unit.serial, reason="machining")).ok:
                unit.status = "scrapped"
        floor.fault_log.append(
            f"{floor.hhmm()} {station.id} cycle failed on {pallet.id}: {len(units)} unit(s) scrapped"
        )
    await _depart(plc, pallet)
    floor.dispatch(pallet, rng)
    return repair


async def _depart(plc: Plc, pallet: SimPallet) -> None:
    if isinstance(plc, TagPlc):
        await plc.set_tags(("PalletDeparted",), PalletPresent="")
    else:
        await plc.report("PalletDeparted", pallet=pallet.id)


async def _retry_later(floor: Floor, pallet: SimPallet, group: str) -> None:
    await floor.clock.sleep(3600)
    await floor.queues[group].put(pallet)


# ------------------------------------------------------------------ inspection
async def scan_station(floor: Floor, station: Station, plc: Plc) -> None:
    rng = plc.rng
    queue = floor.inspection.setdefault(station.groups[0], WorkQueue())
    while True:
        serial = await queue.take(floor.stop)
        if serial is None:
            return
        floor.stats[station.id].visits += 1
        await _inspect(floor, station, plc, serial, rng, queue)


async def _inspect(
    floor: Floor, station: Station, plc: Plc, serial: str, rng: random.Random, queue: WorkQueue[str]
) -> None:
    unit = floor.units[serial]
    step = floor.next_step(unit)
    if not unit.live or step is None:
        return
    if not (await plc.report("ScanIn", serial=serial)).ok:
        floor.ledger.problem(f"{station.id}: ScanIn of {serial} refused")
        return
    await floor.work(station.id, floor.vary(rng, step.seconds) + floor.delay(rng))
    failed = Fault.INSPECTION in floor.faults and rng.random() < floor.rates.inspection_fail
    await plc.report("ScanOut", serial=serial, result="fail" if failed else "pass")
    floor.stats[station.id].results["fail" if failed else "pass"] += 1
    floor.pass_step(unit, station.id, not failed)
    if not failed:
        if unit.live:
            floor.to_off_pallet_step(unit)
        return
    # The first failed inspection of a run always goes to rework, so that a run with this fault
    # always shows a split; after that the operator decides at random.
    choice = 0.5 if not floor.reworked else rng.random()
    if unit.failures >= 2 or floor.jobs[unit.job].parent or choice < 0.3:
        if (await floor.operator.report("Scrap", method="Scrap", serial=serial, reason="inspection")).ok:
            unit.status = "scrapped"
        floor.fault_log.append(f"{floor.hhmm()} {serial} failed inspection: scrapped")
    elif choice < 0.7:
        floor.reworked += 1
        floor.helper(_rework(floor, unit, queue, rng))
    else:
        floor.fault_log.append(f"{floor.hhmm()} {serial} failed inspection: inspected again")
        floor.later(_requeue(floor, queue, serial, floor.vary(rng, floor.timing.transport_seconds)))


async def _rework(floor: Floor, unit: SimUnit, queue: WorkQueue[str], rng: random.Random) -> None:
    """Split the unit off to a rework job with the remaining steps, rework it, inspect it again."""
    parent = unit.job
    child = await floor.planner.split(parent, [unit.serial])
    if child not in floor.jobs:
        await floor.learn_job(child, parent=parent)
    unit.job = child
    unit.next_step = 0
    unit.failures = 0
    floor.fault_log.append(f"{floor.hhmm()} {unit.serial} failed inspection: split from {parent} to rework job {child}")
    floor.later(_requeue(floor, queue, unit.serial, rng.uniform(*floor.timing.rework_seconds)))


async def _requeue(floor: Floor, queue: WorkQueue[str], serial: str, seconds: float) -> None:
    await floor.clock.sleep(seconds)
    await queue.put(serial)
