"""End-to-end harness: a real ``cell-gateway run`` process on a derived demo config, driven by the simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from simulators.gateway_process import GatewayProcess, derive_config
from simulators.scenario import Scenario, load_scenario
from tests.support import DEMO_CONFIG

# Simulated time runs ahead of the gateway's wall clock (docs/simulator.md, "Two clocks"): a tolerance
# of ten years keeps every SourceTime of a fast run within it; the skew fault goes beyond what the
# config says, so the simulation reads the tolerance from the derived config.
WIDE_TOLERANCE = 10 * 365 * 86400.0


@pytest.fixture
def scenario() -> Scenario:
    return load_scenario()


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Callable[..., GatewayProcess]:
    def make(tolerance_seconds: float = WIDE_TOLERANCE, name: str = "gw") -> GatewayProcess:
        workdir = tmp_path / name
        config = derive_config(DEMO_CONFIG, workdir / "cell.toml", tolerance_seconds=tolerance_seconds)
        return GatewayProcess(config, workdir)

    return make


@pytest.fixture
async def gateway(gateway_factory: Callable[..., GatewayProcess]) -> AsyncIterator[GatewayProcess]:
    process = gateway_factory(tolerance_seconds=26 * 3600)
    await process.start()
    try:
        yield process
    finally:
        await process.kill()
