"""/metrics of a running gateway: process metrics, build info, station state and last-report age."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
import pytest
from asyncua import Client, ua
from prometheus_client.parser import text_string_to_metric_families

from gateway import __version__
from gateway.app import running_gateway
from gateway.clock import ManualClock
from gateway.config import CellConfig
from gateway.tracking.reports import CycleStarted, PalletArrived
from simulators.gateway_process import free_port
from tests.service.harness import Cell
from tests.support import T0

STATIONS = {"C1", "L1", "L2", "M1", "M2", "M3", "M4", "W1"}


@asynccontextmanager
async def gateway_metrics(make_config: Callable[..., CellConfig]) -> AsyncIterator[tuple[Cell, Callable[..., object]]]:
    config = make_config(CELL_GATEWAY_HTTP_PORT=str(free_port()))
    clock = ManualClock(T0)
    async with running_gateway(config, clock=clock) as gateway:
        assert gateway.http is not None
        async with httpx.AsyncClient(base_url=gateway.http.url.rstrip("/")) as http:

            async def scrape() -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
                response = await http.get("/metrics")
                assert response.status_code == 200
                return _samples(response.text)

            yield Cell(gateway.writer, clock), scrape


def _samples(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def _by(samples: dict[tuple[tuple[str, str], ...], float], *labels: str) -> dict[tuple[str, ...], float]:
    return {tuple(dict(k)[name] for name in labels): v for k, v in samples.items()}


async def test_metrics_carry_process_metrics_build_info_and_the_station_states_of_the_committed_view(
    make_config: Callable[..., CellConfig],
) -> None:
    async with gateway_metrics(make_config) as (cell, scrape):
        metrics = await scrape()
        await cell.ok(PalletArrived("M1", "m1-a", None, "P1"))
        after = _by((await scrape())["cellgw_station_state"], "station", "state")

    assert metrics["cellgw_build_info"] == {(("version", __version__),): 1.0}
    assert metrics["process_resident_memory_bytes"][()] > 10_000_000
    assert metrics["process_cpu_seconds_total"][()] > 0
    assert metrics["process_open_fds"][()] > 0
    assert "python_info" in metrics

    before = _by(metrics["cellgw_station_state"], "station", "state")

    # one sample per station and state, exactly one of them 1
    assert {station for station, _ in before} == STATIONS
    assert len(before) == len(STATIONS) * 4
    for station in STATIONS:
        assert sum(v for (s, _), v in after.items() if s == station) == 1.0
    assert {s for (s, state), v in before.items() if v == 1.0 and state == "idle"} == STATIONS
    assert after[("M1", "occupied")] == 1.0
    assert after[("M1", "idle")] == 0.0
    assert {s for (s, state), v in after.items() if v == 1.0 and state == "idle"} == STATIONS - {"M1"}


async def test_last_report_age_counts_from_each_stations_last_report_on_the_gateway_clock(
    make_config: Callable[..., CellConfig],
) -> None:
    async with gateway_metrics(make_config) as (cell, scrape):
        assert "cellgw_station_last_report_age_seconds" not in await scrape()  # nothing reported yet

        await cell.ok(PalletArrived("L1", "l1-a", None, "P1"))
        await cell.ok(PalletArrived("M2", "m2-a", None, "P2"), after=30)
        refused = await cell.send(CycleStarted("M3", "m3-a", None, "P9", "NOPE"), after=5)
        assert not refused.ok  # a refused report still shows the station is talking
        unknown = await cell.send(PalletArrived("X9", "x9-a", None, "P3"), after=5)
        assert not unknown.ok
        cell.clock.advance(20)
        # a retry is answered from the log: it is not a new report
        replay = await cell.send(PalletArrived("L1", "l1-a", None, "P1"), after=0)
        assert replay.replayed
        ages = _by((await scrape())["cellgw_station_last_report_age_seconds"], "station")

    assert ages == {("L1",): 60.0, ("M2",): 30.0, ("M3",): 25.0}


async def test_one_login_guard_counts_failures_across_opcua_and_http_and_shows_them_in_metrics(
    make_config: Callable[..., CellConfig],
) -> None:
    """A peer guessing over OPC UA and then over HTTP is one guesser: its fifth failure (the default
    ``limits.login_failures``) starts a back-off that HTTP answers 429, and /metrics counts the verdicts,
    the argon2 checks and the back-off. Control: the first four failures are plain 401s / refusals."""
    config = make_config(CELL_GATEWAY_HTTP_PORT=str(free_port()))
    async with running_gateway(config, clock=ManualClock(T0)) as gateway:
        assert gateway.http is not None
        async with httpx.AsyncClient(base_url=gateway.http.url.rstrip("/")) as http:
            for attempt in range(3):
                client = Client(gateway.opcua.endpoint, timeout=10)
                client.set_user("plc-load")
                client.set_password(f"wrong-{attempt}")
                with pytest.raises(ua.UaStatusCodeError) as refused:
                    await client.connect()
                assert refused.value.code == ua.StatusCodes.BadUserAccessDenied
            answers = [(await http.get("/jobs", auth=("erp", f"wrong-{i}"))).status_code for i in range(3)]
            metrics = _samples((await http.get("/metrics")).text)

    assert answers == [401, 401, 429]
    logins = _by(metrics["cellgw_logins_total"], "verdict")
    assert logins[("refused",)] == 5
    assert logins[("backed_off",)] == 1
    assert logins[("ok",)] == 0
    assert _by(metrics["cellgw_login_backoffs_total"], "kind")[("peer",)] == 1
    assert metrics["cellgw_login_checks_total"][()] == 5  # five distinct guesses, each a full argon2 check
    limited = _by(metrics["cellgw_opcua_connections_limited_total"], "what")
    assert set(limited) >= {("evicted",), ("refused",), ("hello_timeout",), ("activation_timeout",)}
