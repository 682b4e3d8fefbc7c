"""Property: retries, duplicates and reorderings of independent reports never change the outcome.

Each recorded day is played clean once; Hypothesis then plays it with adjacent independent reports
swapped (different station, pallet and unit, close in time) and with retries of random reports
inserted later (same EventId, same arguments, as a PLC repeats after a timeout). Counts, times, unit
scans and pallet/station state must come out the same as the clean run, and replaying the log into a
fresh model must reproduce the state.
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.app import build_model
from gateway.config import CellConfig, load_config
from gateway.service.replay import replay
from gateway.tracking.reports import REPORT_TYPES
from tests.service.days import DAYS, play, read_day, summary
from tests.service.harness import running_cell, whole_book
from tests.support import DEMO_CONFIG

TOLERANCE_S = 300  # the demo config's source_time_tolerance_seconds


def scenario(name: str) -> list[dict[str, Any]]:
    """A recorded day with absolute times and the serials its loads got, supplied explicitly.

    Supplied serials make the outcome independent of the order in which loads are processed (a
    generated serial depends on it, by design).
    """
    expected = json.loads((DAYS / f"{name}.expected.json").read_text())
    day = read_day(DAYS / f"{name}.jsonl")
    t = 0.0
    out = []
    for line, answer in zip(day, expected["answers"], strict=True):
        t += line["after"]
        line = dict(line, at=t)
        if line["cmd"] == "LoadCompleted" and answer[1] == "ok" and not line["serials"]:
            line["serials"] = answer[4]["Serials"]
        out.append(line)
    return out


def config_for(tmp: str) -> CellConfig:
    return load_config(DEMO_CONFIG, env={"CELL_GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/cell.db"})


def _keys(line: dict[str, Any]) -> set[str]:
    return {f"{k}:{line[k]}" for k in ("station", "pallet", "serial") if line.get(k)} | {
        f"serial:{s}" for s in line.get("serials", [])
    }


def independent(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a["cmd"] not in REPORT_TYPES or b["cmd"] not in REPORT_TYPES:
        return False  # job commands change what every later report may do
    if "job" in a and "job" in b and (a["job"] or b["job"]) and a["cmd"] == b["cmd"] == "LoadCompleted":
        return False  # two loads of one job compete for its cap
    if (a.get("pallet") and b.get("serial")) or (a.get("serial") and b.get("pallet")):
        return False  # the units on that pallet may include that serial (a load's unload moves them)
    return not (_keys(a) & _keys(b)) and abs(a["at"] - b["at"]) < TOLERANCE_S / 2


async def run(lines: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    with tempfile.TemporaryDirectory() as tmp:
        config = config_for(tmp)
        async with running_cell(config) as cell:
            played = []
            now = 0.0
            for line in lines:
                # the gateway's clock never runs backwards; a report's own time travels as SourceTime
                after = max(0.0, line["at"] - now)
                now += after
                step = dict(line, after=after)
                step["source_offset"] = line["at"] - now  # <= 0: the PLC's time of the event
                played.append(step)
            for step in played:
                step.pop("at")
            answers = await play(cell, played)  # SourceTime = receipt time + offset = the event's own time
            result = await summary(cell, answers)
            replayed, outcome = await replay(cell.writer.store.engine, lambda: build_model(config))
            jobs, units = await whole_book(cell)
            assert repr(sorted(replayed.book.units.items())) == repr(sorted(units.items()))
            assert repr(sorted(replayed.book.jobs.items())) == repr(sorted(jobs.items()))
            state = [repr(sorted(cell.tracker.pallets.items())), repr(sorted(cell.tracker.stations.items()))]
            return result, outcome.mismatches + state


def comparable(result: dict[str, Any]) -> dict[str, Any]:
    scans = sorted(json.dumps(s, default=str) for s in result["scans"])
    return {"jobs": result["jobs"], "units": result["units"], "scans": scans}


_CLEAN: dict[str, tuple[dict[str, Any], list[str]]] = {}


async def clean(name: str) -> tuple[dict[str, Any], list[str]]:
    if name not in _CLEAN:
        _CLEAN[name] = await run(scenario(name))
    return _CLEAN[name]


def perturb(lines: list[dict[str, Any]], swaps: list[int], retries: list[tuple[int, int]]) -> list[dict[str, Any]]:
    out = copy.deepcopy(lines)
    for i in swaps:
        i %= len(out) - 1
        if independent(out[i], out[i + 1]):
            out[i], out[i + 1] = out[i + 1], out[i]  # delivered out of order; each keeps its own time
    reports = [i for i, line in enumerate(out) if line["cmd"] in REPORT_TYPES]
    for pick, gap in retries:
        original = out[reports[pick % len(reports)]]
        position = min(len(out), out.index(original) + 1 + gap)
        out.insert(position, dict(original))
    return out


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(["day1_clean", "day2_messy"]),
    swaps=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
    retries=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 6)), max_size=8),
)
async def test_retries_and_reorderings_do_not_change_the_outcome(
    name: str, swaps: list[int], retries: list[tuple[int, int]]
) -> None:
    reference, reference_state = await clean(name)
    result, state = await run(perturb(scenario(name), swaps, retries))
    assert comparable(result) == comparable(reference)
    assert state[-2:] == reference_state[-2:]  # pallets and stations
    assert state[:-2] == []  # the replay found no answer that came out differently
    for job in result["jobs"].values():
        assert job["wip"] == job["started"] - job["scrapped"] - job["finished"]


def test_the_scenarios_exist() -> None:
    assert Path(DAYS / "day1_clean.expected.json").exists()
    assert len(scenario("day1_clean")) > 40
