"""The writer's guarantees through the public interfaces (OPC UA and HTTP) of a real gateway:

- no reader (OPC UA variables, /api/status, /metrics) shows what a batch blocked by the database's
  write lock applied, and all of them show it once it commits;
- a report whose EventId holds invalid UTF-8 is stored (escaped), answered, and answered the same on
  retry, while other PLCs' reports in the same moment are answered Good;
- job ids that name other nodes or hold characters no node id should hold are published safely, and
  the gateway restarts on that database.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import Gateway, running_gateway
from gateway.config import CellConfig
from gateway.jobs.commands import CreateJob, ReleaseJob
from gateway.service.writer import Writer
from simulators.gateway_process import free_port
from tests.integration.opcua_client import NOW, i32
from tests.integration.opcua_support import cell_toml, good, serving
from tests.service.shop import Shop


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - a condition on the gateway's state, no event to wait on
            await asyncio.sleep(0)


def _metric(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"no {name} in /metrics")


async def test_no_reader_shows_what_a_batch_waiting_for_the_write_lock_applied(
    tmp_path: Path, make_config: Callable[..., CellConfig], db_url: str
) -> None:
    config = make_config(cell_toml(tmp_path), CELL_GATEWAY_HTTP_PORT=str(free_port()))
    path = db_url.removeprefix("sqlite+aiosqlite:///")
    async with serving(config) as session, session.connect("plc-load") as plc:
        gateway, cell = session.gateway, session.cell
        assert gateway.http is not None
        await good(plc.station("L1", "PalletArrived", "warm", "P2", NOW))
        await gateway.writer.wait_idle()
        before = gateway.writer.counter
        locker = sqlite3.connect(path, timeout=5, isolation_level=None)
        async with httpx.AsyncClient(base_url=gateway.http.url.rstrip("/")) as http:
            try:
                locker.execute("BEGIN IMMEDIATE")  # another connection holds the write lock
                call = asyncio.ensure_future(plc.station("L1", "PalletDeparted", "d1", "P2", NOW))
                # The writer applied the report and waits to commit it.
                await until(lambda: gateway.writer.model.tracker.stations["L1"].pallet == "")
                status = (await http.get("/api/status")).json()
                metrics = (await http.get("/metrics")).text
                assert status["counter"] == before
                assert {s["station"]: s["pallet"] for s in status["stations"]}["L1"] == "P2"
                assert _metric(metrics, "cellgw_event_log_counter") == before
                assert await cell.read("Cell/Stations/L1/Pallet") == "P2"
                assert not call.done()
            finally:
                locker.execute("ROLLBACK")
                locker.close()
            assert (await call).ok  # the control: committed once the lock is free, then visible everywhere
            await gateway.writer.wait_idle()
            status = (await http.get("/api/status")).json()
            assert status["counter"] == before + 1
            assert {s["station"]: s["pallet"] for s in status["stations"]}["L1"] == ""
            assert _metric((await http.get("/metrics")).text, "cellgw_event_log_counter") == before + 1
            await cell.wait_for("Cell/Stations/L1/Pallet", "")


async def test_an_event_id_with_invalid_utf8_is_answered_and_other_plcs_are_served(
    tmp_path: Path, make_config: Callable[..., CellConfig], db_url: str
) -> None:
    """asyncua sends a string with lone surrogates as the raw bytes (0xff here): invalid UTF-8, refused
    (gateway/limits.py) without being stored, while another PLC is served."""
    config = make_config(cell_toml(tmp_path))
    async with (
        serving(config) as session,
        session.connect("plc-load") as load,
        session.connect("plc-mill") as mill,
    ):
        bad, fine = await asyncio.gather(
            load.station("L1", "PalletArrived", "evt-\udcff", "P1", NOW),
            mill.station("M1", "PalletArrived", "m-1", "P2", NOW),
        )
        assert bad.code == "BadInvalidArgument"
        assert fine.ok
        corrected = await load.station("L1", "PalletArrived", "evt-1", "P1", NOW)  # the PLC's corrected call
        assert corrected.ok
    with sqlite3.connect(db_url.removeprefix("sqlite+aiosqlite:///")) as conn:
        rows = conn.execute("SELECT event_id FROM cell_events WHERE source = 'L1'").fetchall()
    assert rows == [("evt-1",)]
    async with running_gateway(config) as gateway:  # a restart on that database
        assert gateway.writer.model.tracker.pallets["P1"].station == "L1"


async def test_job_ids_that_collide_with_nodes_or_hold_odd_characters_are_published_and_survive_a_restart(
    tmp_path: Path, make_config: Callable[..., CellConfig]
) -> None:
    """Such ids are refused by Jobs.CreateJob (gateway/limits.py); a database written before that may
    hold them, made here through the writer."""
    config = make_config(cell_toml(tmp_path))
    odd = ["Release", "a/b", "nul\x00id", "J 1"]
    async with serving(config) as session:
        cell = session.cell
        for job_id in odd:
            assert (await cell.jobs("CreateJob", job_id, "PN-1", "A", 2, None, i32(0), 0.0, [], [])).code == (
                "BadInvalidArgument"
            )
            for command in (CreateJob("PN-1", "A", 2, job_id=job_id), ReleaseJob(job_id)):
                assert (await session.gateway.writer.submit(command, "test")).ok
        await good(cell.jobs("CreateJob", "J-PLAIN", "PN-1", "A", 2, None, i32(0), 0.0, [], []))
        await good(cell.jobs("Release", "J-PLAIN"))  # the control: a plain id keeps its browse-path node id
        await cell.wait_for("Cell/Jobs/J-PLAIN/State", "Released")
        await session.gateway.writer.wait_idle()
        names = {(await node.read_browse_name()).Name for node in await cell.node("Cell/Jobs").get_children()}
        assert set(odd) - {"nul\x00id"} <= names
        assert "nul\\x00id" in names  # the browse name is the id, escaped where no client could read it
        assert (await cell.jobs("Hold", "Release", "maintenance")).ok  # the job, not the method
    async with serving(config) as session:  # a restart publishes them all again
        await session.cell.wait_for("Cell/Jobs/J-PLAIN/State", "Released")
        names = {(await node.read_browse_name()).Name for node in await session.cell.node("Cell/Jobs").get_children()}
        assert {"Release", "a/b", "J 1", "J-PLAIN"} <= names


async def test_a_closed_jobs_object_leaves_the_address_space_after_the_retention(
    tmp_path: Path, make_config: Callable[..., CellConfig]
) -> None:
    """server.closed_job_retention_hours (24 h by default) after it closed; its history stays readable."""
    async with serving(make_config(cell_toml(tmp_path))) as session:
        cell, gateway, clock = session.cell, session.gateway, session.clock
        for job_id in ("J-OLD", "J-OPEN"):
            await good(cell.jobs("CreateJob", job_id, "PN-1", "A", 2, None, i32(0), 0.0, [], []))
            await good(cell.jobs("Release", job_id))
        await good(cell.jobs("Close", "J-OLD", "done"))
        await cell.wait_for("Cell/Jobs/J-OLD/State", "Closed")

        async def jobs_in_space() -> set[str]:
            return {(await n.read_browse_name()).Name for n in await cell.node("Cell/Jobs").get_children()}

        clock.advance(timedelta(hours=23))
        assert await gateway.opcua.remove_expired_jobs(clock.now()) == []
        assert {"J-OLD", "J-OPEN"} <= await jobs_in_space()
        clock.advance(timedelta(hours=2))
        assert await gateway.opcua.remove_expired_jobs(clock.now()) == ["J-OLD"]
        names = await jobs_in_space()
        assert "J-OLD" not in names
        assert "J-OPEN" in names  # the control: an open job stays
        trace = await good(cell.jobs("Hold", "J-OPEN", "check"))
        assert trace == []


class _Fatal(BaseException):
    """Not an Exception: nothing in the writer catches it, so its task ends."""


async def test_if_the_writer_task_ever_ends_the_gateway_stops_with_one_log_line(
    make_config: Callable[..., CellConfig], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = Gateway(make_config())
    stop = asyncio.Event()
    run = asyncio.create_task(gateway.run(stop))
    async with asyncio.timeout(30):
        await gateway.ready.wait()

    async def fatal(self: Writer) -> None:
        raise _Fatal("the writer's task ends")

    monkeypatch.setattr(Writer, "_cycle", fatal)
    gateway.writer.intake.wake()  # wake the writer, as a report would
    async with asyncio.timeout(30):
        await run  # the gateway stopped by itself: nobody set ``stop``
    assert stop.is_set()
    lines = [str(r.msg) for r in caplog.records if "gateway_stopping" in str(r.msg)]
    assert len(lines) == 1
    assert "_Fatal" in lines[0]
    assert "writer" in lines[0]


async def test_a_done_job_nobody_closes_leaves_the_address_space_and_comes_back_when_it_changes(
    tmp_path: Path, make_config: Callable[..., CellConfig]
) -> None:
    """A year of jobs the ERP never closed must not pile up as OPC UA objects (14 nodes each), nor
    as rows of the status page (counted there instead)."""
    config = make_config(cell_toml(tmp_path), CELL_GATEWAY_HTTP_PORT=str(free_port()))
    async with serving(config) as session:
        cell, gateway, clock = session.cell, session.gateway, session.clock
        for job_id in ("J-DONE", "J-BUSY"):
            await good(cell.jobs("CreateJob", job_id, "PN-1", "A", 1, None, i32(0), 0.0, [], []))
            await good(cell.jobs("Release", job_id))
        await Shop(gateway.writer, clock).make("J-DONE", 1)  # its one unit through every step
        await gateway.writer.wait_idle()
        assert gateway.writer.view.jobs["J-DONE"].done
        assert not gateway.writer.view.jobs["J-BUSY"].done  # the control: nothing made yet
        assert gateway.http is not None
        async with httpx.AsyncClient(base_url=gateway.http.url.rstrip("/")) as http:
            status = (await http.get("/api/status")).json()
        assert [j["job"] for j in status["jobs"]] == ["J-BUSY"]
        assert status["jobs_done"] == 1
        clock.advance(timedelta(hours=25))
        assert await gateway.opcua.remove_expired_jobs(clock.now()) == ["J-DONE"]
        names = {(await n.read_browse_name()).Name for n in await cell.node("Cell/Jobs").get_children()}
        assert "J-DONE" not in names
        assert "J-BUSY" in names
        await good(cell.jobs("Close", "J-DONE", "target reached"))  # it changes: published again
        await cell.wait_for("Cell/Jobs/J-DONE/State", "Closed")
