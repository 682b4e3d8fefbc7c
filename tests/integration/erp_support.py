"""Shared by the ERP API tests: a real gateway in-process with its HTTP port open, an httpx client, a shop.

The gateway runs on a manual clock (``T0``), so due dates, schedule ids and elapsed times are exact;
finished parts come from station reports submitted to the writer (``tests/service/shop.py``), the same
path OPC UA calls take.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx

from gateway.app import Gateway, running_gateway
from gateway.clock import ManualClock
from gateway.config import CellConfig
from simulators.gateway_process import free_port
from tests.service.shop import Shop
from tests.support import DEMO_CONFIG, ROOT, T0

TODAY = T0.date()
ERP_CELL = ROOT / "tests" / "data" / "config" / "erp_cell.toml"


def day(n: int) -> str:
    """The ISO date ``n`` days after the test's today."""
    return (TODAY + timedelta(days=n)).isoformat()


def demo_toml(tmp_path: Path, *, assign_at_unload: bool) -> Path:
    text = DEMO_CONFIG.read_text()
    old = "assign_workorder_at_unload = false"
    assert old in text, "config/cell.toml no longer contains " + old
    path = tmp_path / "cell-erp.toml"
    path.write_text(text.replace(old, f"assign_workorder_at_unload = {str(assign_at_unload).lower()}"))
    return path


@dataclass
class Erp:
    gateway: Gateway
    http: httpx.AsyncClient
    clock: ManualClock
    shop: Shop
    base_url: str

    async def ok(self, method: str, url: str, expect: int = 200, **kwargs: Any) -> Any:
        response = await self.http.request(method, url, **kwargs)
        assert response.status_code == expect, f"{method} {url}: {response.status_code} {response.text}"
        return response.json()

    async def problem(self, method: str, url: str, status: int, reason: str, **kwargs: Any) -> dict[str, Any]:
        response = await self.http.request(method, url, **kwargs)
        assert response.status_code == status, f"{method} {url}: {response.status_code} {response.text}"
        assert response.headers["content-type"].startswith("application/problem+json")
        body: dict[str, Any] = response.json()
        assert body["reason"] == reason, body
        assert body["status"] == status
        return body

    async def order(self, order_id: str, parts: dict[str, int], *, due: str, priority: int = 0) -> Any:
        return await self.ok(
            "POST", "/orders", 201, json={"id": order_id, "due": due, "priority": priority, "parts": parts}
        )

    async def schedule(self, **body: Any) -> Any:
        return await self.ok("POST", "/schedules", 201, json=body)

    async def all(self, url: str, **params: Any) -> list[Any]:
        """Every item of a paginated list, page by page."""
        items: list[Any] = []
        after: str | None = None
        while True:
            query = {**params, "limit": 2, **({"after": after} if after is not None else {})}
            page = await self.ok("GET", url, params=query)
            items.extend(page["items"])
            after = page["next_after"]
            if after is None:
                return items

    async def job_of(self, schedule: dict[str, Any], part: str) -> str:
        (line,) = [j for j in schedule["jobs"] if j["part"] == part]
        job_id: str = line["job_id"]
        return job_id


@asynccontextmanager
async def erp_gateway(
    make_config: Callable[..., CellConfig],
    path: Path = DEMO_CONFIG,
    *,
    user: str = "erp",
    limits: Mapping[str, Any] | None = None,
) -> AsyncIterator[Erp]:
    """``limits``: settings of the config's ``[limits]`` table to change (e.g. ``http_max_body_bytes``)."""
    port = free_port()
    config = make_config(path, CELL_GATEWAY_HTTP_PORT=str(port))
    if limits:
        changed = config.limits.model_validate({**config.limits.model_dump(), **limits})
        config = config.model_copy(update={"limits": changed})
    clock = ManualClock(T0)
    async with running_gateway(config, clock=clock) as gateway:
        base_url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base_url, auth=(user, user), timeout=30) as http:
            yield Erp(gateway, http, clock, Shop(gateway.writer, clock), base_url)


def iso(value: date) -> str:
    return value.isoformat()
