"""The engineer's CLI, run as a process, against a known history: the messy recorded day plus one
refused scan."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import typer

from gateway.app import running_gateway
from gateway.cli.inspection import parse_since, register
from gateway.clock import ManualClock
from gateway.config import CellConfig
from gateway.jobs.commands import CreateJob, ReleaseJob
from gateway.tracking.reports import LoadCompleted, PalletArrived, ScanIn
from simulators.gateway_process import free_port
from tests.service.days import DAYS, play, read_day
from tests.service.harness import running_cell
from tests.support import DEMO_CONFIG, ROOT, T0


async def _messy_day(config: CellConfig, start: datetime = T0) -> None:
    async with running_cell(config, ManualClock(start)) as cell:
        await play(cell, read_day(DAYS / "day2_messy.jsonl"))
        refused = await cell.send(ScanIn("C1", "C1-9", None, "S-3"), after=30)
        assert refused.reason is not None


async def _run(config: CellConfig, *args: str, **env: str) -> tuple[int, str, str]:
    """``cell-gateway ARGS --config config/cell.toml`` as its own process, on the test's database."""
    environment = dict(os.environ, CELL_GATEWAY_DATABASE_URL=config.database.url, **env)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, "--config", str(DEMO_CONFIG),
        cwd=ROOT, env=environment, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _cli(config: CellConfig, *args: str) -> str:
    code, out, err = await _run(config, *args)
    assert code == 0, err
    return out


async def _json(config: CellConfig, *args: str) -> Any:
    return json.loads(await _cli(config, *args, "--json"))


async def _usage_error(config: CellConfig, *args: str) -> str:
    """The one line a command prints for a usage error (exit 2), without a traceback."""
    code, out, err = await _run(config, *args)
    assert code == 2, (out, err)
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()


async def test_status_shows_stations_jobs_wip_and_refusals(demo_config: CellConfig) -> None:
    await _messy_day(demo_config)
    data, table = await asyncio.gather(_json(demo_config, "status"), _cli(demo_config, "status"))
    # every configured station, in config order, also those that never reported (C1 scans only)
    assert [(s["station"], s["kind"]) for s in data["stations"]] == [(s.id, s.kind) for s in demo_config.stations]
    stations = {s["station"]: s for s in data["stations"]}
    assert stations["C1"]["kind"] == "inspection"
    assert stations["C1"]["state"] == "idle"
    assert stations["W1"]["state"] == "occupied"
    assert stations["W1"]["pallet"] == "P2"
    assert stations["W1"]["jobs"] == ["J-300"]
    jobs = {j["job"]: j for j in data["jobs"]}
    assert (jobs["J-300"]["started"], jobs["J-300"]["finished"], jobs["J-300"]["wip"]) == (2, 1, 1)
    assert jobs["J-300-R1"]["wip"] == 1
    assert data["wip"] == 2
    assert "J-300-R1" in table
    assert "C1" in table
    assert "inspection" in table
    assert "WIP 2" in table


async def test_trace_follows_a_unit_across_its_rework_split(demo_config: CellConfig) -> None:
    await _messy_day(demo_config)
    data, table = await asyncio.gather(_json(demo_config, "trace", "S-2"), _cli(demo_config, "trace", "S-2"))
    assert data["job"] == "J-300-R1"
    assert [(s["operation"], s["job"], s["result"]) for s in data["steps"]] == [
        ("OP10", "J-300", "pass"),
        ("OP20", "J-300", "pass"),
        ("OP30", "J-300", "pass"),
        ("OP40", "J-300", "pass"),
        ("OP50", "J-300", "fail"),
    ]
    assert data["next_step"] == "OP20"
    assert {"kind": "moved", "job": "J-300-R1", "from_job": "J-300"}.items() <= data["events"][-1].items()
    assert "J-300-R1" in table
    assert "OP50" in table


async def test_trace_lists_every_refusal_that_named_the_unit_with_its_message(demo_config: CellConfig) -> None:
    await _messy_day(demo_config)
    data, table = await asyncio.gather(_json(demo_config, "trace", "S-3"), _cli(demo_config, "trace", "S-3"))
    (refusal,) = data["refusals"]
    assert refusal["result"] == "InvalidProcessStep"
    assert "S-3" in refusal["message"]
    assert "OP40" in refusal["message"]
    assert [s["flags"] for s in data["steps"]] == [[], ["interrupted"], ["EndWithoutStart"], []]
    # its pallet reached M2 and M3 unseen (no arrival reported): two machine visits not measurable
    assert data["elapsed"]["unknown"] == 2
    assert data["unknown"] == {"elapsed_machining": 2}
    assert "refused" in table
    assert "InvalidProcessStep" in table


async def test_refusals_filters_by_reason_and_station(demo_config: CellConfig) -> None:
    await _messy_day(demo_config)
    everything, on_hold, at_m2 = await asyncio.gather(
        _json(demo_config, "refusals"),
        _json(demo_config, "refusals", "--reason", "JobOnHold"),
        _json(demo_config, "refusals", "--station", "M2"),
    )
    assert [r["result"] for r in everything] == [
        "OrderFulfilled",
        "WrongProgram",
        "JobOnHold",
        "InvalidProcessStep",
    ]
    assert [(r["source"], r["event_id"]) for r in on_hold] == [("W1", "W1-2")]
    assert "on hold" in on_hold[0]["message"]
    assert [r["result"] for r in at_m2] == ["WrongProgram"]
    assert "PRG-MILL-100" in at_m2[0]["message"]


async def test_pallet_and_job(demo_config: CellConfig) -> None:
    await _messy_day(demo_config)
    p2, job, p8 = await asyncio.gather(
        _json(demo_config, "pallet", "P2"), _json(demo_config, "job", "J-300"), _json(demo_config, "pallet", "P8")
    )
    assert p2["station"] == "W1"
    assert [(u["serial"], u["next_step"]) for u in p2["units"]] == [("S-3", "OP40")]
    assert [s["wip"] for s in job["routing"]] == [0, 0, 0, 1, 0]
    assert [(h["from"], h["to"]) for h in job["history"]] == [
        (None, "Created"),
        ("Created", "Released"),
        ("Released", "Running"),
        ("Running", "Hold"),
        ("Hold", "Running"),
    ]
    assert job["history"][3]["reason"] == "material certificate missing"
    # a configured pallet the gateway has not seen yet: nowhere, empty
    assert (p8["station"], p8["units"]) == ("", [])


async def test_events_from_a_counter(demo_config: CellConfig) -> None:
    await _messy_day(demo_config)
    out = await _cli(demo_config, "events", "--after", "30", "--json")
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["counter"] for e in events] == list(range(31, 31 + len(events)))
    assert events[-1]["kind"] == "ScanIn"
    assert events[-1]["result"] == "InvalidProcessStep"


async def test_audit_list_and_resolve_through_the_running_gateway(demo_config: CellConfig) -> None:
    clock = ManualClock(T0)
    async with running_gateway(demo_config, clock=clock) as gateway:
        writer = gateway.writer
        job = (await writer.submit(CreateJob(part="ABC123", revision="A", quantity=5))).outputs["JobId"]
        await writer.submit(ReleaseJob(job))
        await writer.submit(PalletArrived("L1", "a1", None, "P1"))
        serials = (await writer.submit(LoadCompleted("L1", "a2", None, "P1", job, 2))).outputs["Serials"]
        clock.advance(timedelta(days=31))
        assert sorted(await gateway.sweep()) == sorted(serials)
        # the config names an endpoint nothing listens on: --endpoint says where the gateway is
        nowhere = f"opc.tcp://127.0.0.1:{free_port()}/cell-gateway/"
        listed, (code, _, unreachable), bad_outcome = await asyncio.gather(
            _json(demo_config, "audit", "list"),
            _run(demo_config, "audit", "resolve", serials[1], "found", CELL_GATEWAY_ENDPOINT=nowhere),
            _usage_error(demo_config, "audit", "resolve", serials[1], "missing"),
        )
        assert sorted(a["serial"] for a in listed) == sorted(serials)
        assert code == 1
        assert f"cannot reach the gateway at {nowhere}" in unreachable
        assert bad_outcome == "outcome must be found or lost, not 'missing'"
        assert writer.model.book.units[serials[1]].audit_flagged

        here = demo_config.server.endpoint
        (code, out, err), (json_code, json_out, json_err) = await asyncio.gather(
            _run(demo_config, "audit", "resolve", serials[0], "lost", CELL_GATEWAY_ENDPOINT=here),
            _run(
                demo_config, "audit", "resolve", serials[1], "found", "--endpoint", here, "--json",
                CELL_GATEWAY_ENDPOINT=nowhere,
            ),
        )  # fmt: skip
        assert code == 0, err
        assert "resolved as lost" in out
        assert writer.model.book.units[serials[0]].status.value == "scrapped"
        assert writer.model.book.jobs[job].scrapped == 1
        assert json_code == 0, json_err
        assert json.loads(json_out) == {
            "serial": serials[1],
            "outcome": "found",
            "resolved": True,
            "endpoint": here,
        }
        assert not writer.model.book.units[serials[1]].audit_flagged
        assert writer.model.book.units[serials[1]].status.value != "scrapped"


async def test_refusals_since_a_relative_time_or_an_iso_date(demo_config: CellConfig) -> None:
    # the recorded day played yesterday from 01:00 UTC (it lasts under an hour)
    yesterday = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    await _messy_day(demo_config, yesterday + timedelta(hours=1))
    forms = ["yesterday", "3d", yesterday.date().isoformat(), "today", "2h"]
    answers = await asyncio.gather(*(_json(demo_config, "refusals", "--since", form) for form in forms))
    counts = dict(zip(forms, (len(a) for a in answers), strict=True))
    assert counts == {"yesterday": 4, "3d": 4, yesterday.date().isoformat(): 4, "today": 0, "2h": 0}


async def test_an_unreadable_since_is_a_usage_error_naming_the_accepted_forms(demo_config: CellConfig) -> None:
    message = await _usage_error(demo_config, "refusals", "--since", "lastweek")
    assert message.startswith("--since 'lastweek': expected")
    for form in ("30m", "2h", "3d", "today", "yesterday", "ISO"):
        assert form in message


async def test_unknown_names_are_usage_errors_that_say_what_exists(demo_config: CellConfig) -> None:
    await _messy_day(demo_config)
    station, reason, job, serial, pallet = await asyncio.gather(
        _usage_error(demo_config, "refusals", "--station", "X9"),
        _usage_error(demo_config, "refusals", "--reason", "Tired"),
        _usage_error(demo_config, "job", "J-999"),
        _usage_error(demo_config, "trace", "S-999", "--json"),
        _usage_error(demo_config, "pallet", "P99"),
    )
    assert station == "no station X9 in this cell; stations: L1, L2, M1, M2, M3, M4, W1, C1"
    assert reason.startswith("no reason Tired; reasons: InvalidArgument, ")
    assert "InvalidProcessStep" in reason
    assert job.startswith("no job J-999 in this cell")
    assert serial.startswith("no serial S-999 in this cell")
    assert pallet == "no pallet P99 in this cell; pallets: P1, P2, P3, P4, P5, P6, P7, P8"


def test_every_inspection_command_has_json() -> None:
    inspection = typer.Typer()
    register(inspection)

    def commands(group: Any, prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, cmd in group.commands.items():
            if hasattr(cmd, "commands"):
                out |= commands(cmd, f"{prefix}{name} ")
            else:
                out[prefix + name] = cmd
        return out

    found = commands(typer.main.get_command(inspection))
    assert set(found) >= {"status", "trace", "pallet", "job", "refusals", "events", "audit list", "audit resolve"}
    without = [name for name, cmd in found.items() if not any("--json" in p.opts for p in cmd.params)]
    assert without == []


def test_since_forms() -> None:
    now = datetime(2026, 12, 4, 15, 30, tzinfo=UTC)
    assert parse_since("2h", now) == datetime(2026, 12, 4, 13, 30, tzinfo=UTC)
    assert parse_since("30m", now) == datetime(2026, 12, 4, 15, 0, tzinfo=UTC)
    assert parse_since("3d", now) == datetime(2026, 12, 1, 15, 30, tzinfo=UTC)
    assert parse_since("45s", now) == datetime(2026, 12, 4, 15, 29, 15, tzinfo=UTC)
    assert parse_since("1.5h", now) == datetime(2026, 12, 4, 14, 0, tzinfo=UTC)
    assert parse_since("today", now) == datetime(2026, 12, 4, tzinfo=UTC)
    assert parse_since("Yesterday", now) == datetime(2026, 12, 3, tzinfo=UTC)
    assert parse_since("2026-12-03", now) == datetime(2026, 12, 3, tzinfo=UTC)
    assert parse_since("2026-12-03T14:00", now) == datetime(2026, 12, 3, 14, tzinfo=UTC)
    assert parse_since("2026-12-03T14:00+01:00", now) == datetime(2026, 12, 3, 13, tzinfo=UTC)
    assert parse_since("2026-12-03T14:00Z", now) == datetime(2026, 12, 3, 14, tzinfo=UTC)
    for bad in ("", "soon", "lastweek", "2w", "h", "-3h", "3 days", "2026-13-01"):
        with pytest.raises(ValueError, match="not a --since value"):
            parse_since(bad, now)
