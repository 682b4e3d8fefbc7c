"""Schemathesis against the live ERP API's own OpenAPI description: no input makes it answer 5xx.

Runs the ``schemathesis`` command line (coverage and fuzzing phases, positive and negative data: values
the schema allows and values it does not, a bounded number of cases per operation, a fixed seed) as a
subprocess against a gateway running in this process, so the server keeps serving on the test's event
loop while schemathesis' blocking client talks to it. Then every operation that takes a body is sent
one over the gateway's body limit: 413, never read. ``ERP_FUZZ_EXAMPLES=300 ERP_FUZZ_TIMEOUT=1200``
runs a longer search by hand.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.config import CellConfig
from tests.integration.erp_support import day, erp_gateway

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
BODY_LIMIT = 16 * 1024


@pytest.mark.slow
@pytest.mark.timeout(float(os.environ.get("ERP_FUZZ_TIMEOUT", "150")) + 30)
async def test_schemathesis_finds_no_server_error(make_config: Callable[..., CellConfig], tmp_path: Path) -> None:
    async with erp_gateway(make_config, limits={"http_max_body_bytes": BODY_LIMIT}) as erp:
        # Some state for the generated calls to meet: bookings, a schedule with a job, finished serials.
        await erp.order("XYZ", {"ABC123": 3}, due=day(3))
        await erp.order("JKL", {"DEF456": 2}, due=day(5))
        job = await erp.job_of(await erp.schedule(schedule_id="S-1"), "ABC123")
        serials = await erp.shop.make(job, 2)
        await erp.ok("POST", "/workorders/XYZ/serials", json={"serials": serials[:1]})

        report = tmp_path / "schemathesis.json"
        process = await asyncio.create_subprocess_exec(
            str(SCHEMATHESIS), "run", f"{erp.base_url}/openapi.json",
            "--checks", "not_a_server_error",
            "--mode", "all",
            "--auth", "erp:erp",
            "--max-examples", os.environ.get("ERP_FUZZ_EXAMPLES", "25"),
            "--seed", "20260302",
            "--workers", "1",
            "--phases", "examples,coverage,fuzzing",
            "--suppress-health-check", "all",
            "--request-timeout", "20",
            "--no-shrink",
            "--report", "json", "--report-json-path", str(report),
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        async with asyncio.timeout(float(os.environ.get("ERP_FUZZ_TIMEOUT", "150"))):
            output, _ = await process.communicate()
        text = output.decode(errors="replace")
        assert process.returncode == 0, text[-6000:]
        assert "not_a_server_error" in text or report.exists(), text[-2000:]
        if report.exists():
            summary = json.loads(report.read_text())
            assert summary, "schemathesis wrote an empty report"

        # Every operation with a body, sent a valid JSON document just over the limit: 413, nothing stored.
        spec = (await erp.http.get("/openapi.json")).json()
        before = await erp.ok("GET", "/bookings")
        oversized = json.dumps({"reason": "x"}).encode() + b" " * BODY_LIMIT
        taking_bodies = [
            (method.upper(), path)
            for path, operations in spec["paths"].items()
            for method, operation in operations.items()
            if "requestBody" in operation
        ]
        assert len(taking_bodies) >= 8, taking_bodies
        for method, path in taking_bodies:
            url = path.replace("{", "").replace("}", "")  # a path parameter's name stands for its value
            answer = await erp.http.request(
                method, url, content=oversized, headers={"content-type": "application/json"}
            )
            assert answer.status_code == 413, (method, url, answer.status_code, answer.text)
            assert answer.json()["reason"] == "BodyTooLarge"
        assert await erp.ok("GET", "/bookings") == before
