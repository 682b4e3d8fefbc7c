"""The gateway's HTTP face for people and monitoring: /metrics, /healthz, /api/status and the status page.

The status page is checked in a real headless Chromium (Debian's ``chromium``, driven by Playwright
with that executable; no browser download).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import Gateway, running_gateway
from gateway.clock import ManualClock
from gateway.config import CellConfig
from gateway.tracking.reports import REPORT_TYPES, ScanIn
from simulators.gateway_process import free_port
from tests.service.days import DAYS, play, read_day
from tests.service.harness import Cell
from tests.support import T0


@asynccontextmanager
async def gateway_with_http(make_config: Callable[..., CellConfig]) -> AsyncIterator[tuple[Gateway, str, Cell]]:
    config = make_config(CELL_GATEWAY_HTTP_PORT=str(free_port()))
    clock = ManualClock(T0)
    async with running_gateway(config, clock=clock) as gateway:
        assert gateway.http is not None
        yield gateway, gateway.http.url.rstrip("/"), Cell(gateway.writer, clock)


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


async def test_metrics_count_the_days_reports_and_refusals(make_config: Callable[..., CellConfig]) -> None:
    day = read_day(DAYS / "day2_messy.jsonl")
    async with gateway_with_http(make_config) as (_gateway, url, cell):
        answers = await play(cell, day)
        async with httpx.AsyncClient(base_url=url) as http:
            response = await http.get("/metrics")
        assert response.status_code == 200
        text = response.text

    reports: Counter[tuple[str, str]] = Counter()
    for line in day:
        source = line["station"] if line["cmd"] in REPORT_TYPES else ("jobs")
        reports[(source, line["cmd"])] += 1
    got = {(dict(k)["station"], dict(k)["kind"]): v for k, v in _samples(text, "cellgw_reports_total").items()}
    expected = {k: float(v) for k, v in reports.items()}
    # job commands are counted under their source ("jobs"), whatever the day file calls them
    assert {k: v for k, v in got.items() if k[0] != "jobs"} == {k: v for k, v in expected.items() if k[0] != "jobs"}
    assert sum(v for k, v in got.items() if k[0] == "jobs") == sum(v for k, v in expected.items() if k[0] == "jobs")

    refusals = Counter(a[1] for a in answers if a[1] != "ok" and not a[3])
    got_refusals = {dict(k)["reason"]: v for k, v in _samples(text, "cellgw_refusals_total").items()}
    assert got_refusals == {k: float(v) for k, v in refusals.items()}
    assert _samples(text, "cellgw_replayed_reports_total") == {(): 1.0}
    anomalies = Counter(name for a in answers for name in a[2])
    got_anomalies = {dict(k)["anomaly"]: v for k, v in _samples(text, "cellgw_anomalies_total").items()}
    assert got_anomalies == {k: float(v) for k, v in anomalies.items()}
    wip = {dict(k)["job"]: v for k, v in _samples(text, "cellgw_wip_units").items()}
    assert wip == {"J-300": 1.0, "J-300-R1": 1.0}
    assert _samples(text, "cellgw_writer_queue_depth") == {(): 0.0}
    batches = _samples(text, "cellgw_commit_batch_size_count")[()]
    assert batches == len(day)  # the day was played one report at a time


async def test_healthz_reports_each_check(make_config: Callable[..., CellConfig]) -> None:
    async with gateway_with_http(make_config) as (gateway, url, _):
        async with httpx.AsyncClient(base_url=url) as http:
            healthy = await http.get("/healthz")
            assert healthy.status_code == 200
            assert healthy.json() == {"status": "ok", "checks": {"database": "ok", "opcua": "ok", "writer": "ok"}}
            await gateway.opcua.stop()
            failing = await http.get("/healthz")
        assert failing.status_code == 503
        assert failing.json()["checks"]["opcua"] == "not listening"


async def test_api_status_shows_the_cell_from_memory(make_config: Callable[..., CellConfig]) -> None:
    async with gateway_with_http(make_config) as (gateway, url, cell):
        await play(cell, read_day(DAYS / "day2_messy.jsonl"))
        async with httpx.AsyncClient(base_url=url) as http:
            data = (await http.get("/api/status")).json()
    stations = {s["station"]: s for s in data["stations"]}
    assert stations["W1"] == {
        "station": "W1",
        "kind": "wash",
        "state": "occupied",
        "pallet": "P2",
        "jobs": ["J-300"],
        "program": "",
    }
    jobs = {j["job"]: j for j in data["jobs"]}
    assert (jobs["J-300"]["started"], jobs["J-300"]["finished"], jobs["J-300"]["wip"]) == (2, 1, 1)
    assert (jobs["J-300"]["quantity"], jobs["J-300"]["target_reached"]) == (2, False)  # 1 of 2 finished
    assert [s for s in jobs["J-300"]["wip_by_step"] if s["wip"]] == [{"operation": "OP40", "wip": 1}]
    assert [r["result"] for r in data["refusals"]] == ["OrderFulfilled", "WrongProgram", "JobOnHold"]
    assert data["counter"] == gateway.writer.counter


async def test_status_page_in_a_real_browser_shows_a_new_refusal_without_reload(
    make_config: Callable[..., CellConfig], chromium: str
) -> None:
    from playwright.async_api import async_playwright

    async with gateway_with_http(make_config) as (_gateway, url, cell), async_playwright() as pw:
        await play(cell, read_day(DAYS / "day2_messy.jsonl"))
        browser = await pw.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"],
        )  # fmt: skip
        try:
            page = await browser.new_page()
            await page.goto(url + "/")
            await page.wait_for_selector('[data-station="M4"]', timeout=5000)
            names = await page.locator(".station .id").all_inner_texts()
            assert names == ["C1", "L1", "L2", "M1", "M2", "M3", "M4", "W1"]
            w1 = page.locator('[data-station="W1"]')
            assert "occupied" in (await w1.inner_text()).lower()
            row = page.locator('tr[data-job="J-300"]')
            assert await row.locator("td.started").inner_text() == "2"
            assert await row.locator("td.finished").inner_text() == "1"
            assert await row.locator("td.wip").inner_text() == "1"
            before = await page.locator("#refusals tr").count()
            navigations: list[Any] = []
            page.on("framenavigated", lambda frame: navigations.append(frame))

            answer = await cell.send(ScanIn("C1", "late-1", None, "NOPE-1"))
            assert answer.reason is not None
            new = page.locator(f'#refusals tr[data-counter="{answer.counter}"]')
            await new.wait_for(timeout=2000)  # within 2 s, without a reload
            text = await new.inner_text()
            assert "NotFound" in text
            assert "NOPE-1" in text
            assert await page.locator("#refusals tr").count() == before + 1
            assert navigations == []
        finally:
            await browser.close()
