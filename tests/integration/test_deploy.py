"""What deploy/ ships, checked with the tools a plant uses: systemd-analyze, promtool, a real /metrics,
and the wheel installed into a fresh virtualenv.

systemd-analyze (Debian's ``systemd``) and promtool (Debian's ``prometheus``) are installed by
``.ci/run``; without them these tests are skipped locally and fail in CI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway import __version__
from gateway.app import running_gateway
from gateway.clock import ManualClock
from gateway.config import CellConfig
from gateway.tracking.reports import CycleStarted, PalletArrived
from simulators.gateway_process import free_port
from tests.service.harness import Cell
from tests.support import DEMO_CONFIG, ROOT, T0

DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "cell-gateway.service"
RULES = DEPLOY / "prometheus" / "cell-gateway.rules.yml"
DASHBOARD = DEPLOY / "grafana" / "cell-gateway.json"
# Metric names in PromQL: the gateway's own, prometheus_client's process and platform metrics.
METRIC_NAME = re.compile(r"\b(?:cellgw|process|python)_[a-zA-Z0-9_]+\b")


def _tool(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        message = f"{name} is not installed (apt-get install {package}; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture
def systemd_analyze() -> str:
    return _tool("systemd-analyze", "systemd")


@pytest.fixture
def promtool() -> str:
    return _tool("promtool", "prometheus")


def _run(*args: str | Path, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )  # fmt: skip


# systemd unit


def test_the_systemd_unit_verifies_and_runs_the_gateway_hardened_as_its_own_user(
    systemd_analyze: str, tmp_path: Path
) -> None:
    text = UNIT.read_text()
    service = dict(
        line.split("=", 1) for line in text.split("[Service]")[1].split("[Install]")[0].splitlines()
        if "=" in line and not line.startswith("#")
    )  # fmt: skip
    assert service["ExecStart"] == "/opt/cell-gateway/bin/cell-gateway run --config /etc/cell-gateway/cell.toml"
    assert service["User"] == "cell-gateway"
    assert service["Restart"] == "on-failure"
    assert service["StateDirectory"] == "cell-gateway"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"

    # verify checks that ExecStart's program exists: point it at this machine's cell-gateway
    installed = Path(sys.executable).parent / "cell-gateway"
    assert installed.exists()
    unit = tmp_path / "cell-gateway.service"
    unit.write_text(text.replace("/opt/cell-gateway/bin/cell-gateway", str(installed)))
    verified = _run(systemd_analyze, "verify", unit)
    assert (verified.returncode, verified.stderr, verified.stdout) == (0, "", "")  # no unknown keys either
    # exposure 0 (locked down) .. 10 (unprotected): stay below 2
    security = _run(systemd_analyze, "security", "--offline=yes", "--threshold=20", unit)
    assert security.returncode == 0, security.stdout + security.stderr

    sysusers = shutil.which("systemd-sysusers")
    if sysusers is not None:
        created = _run(sysusers, f"--root={tmp_path}", "--dry-run", DEPLOY / "cell-gateway.sysusers")
        assert created.returncode == 0, created.stderr
        assert "Creating user 'cell-gateway'" in created.stderr + created.stdout


# container recipe


def _instructions(path: Path) -> Iterator[tuple[str, str]]:
    logical = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        logical += line.removesuffix("\\").strip() + " "
        if not line.endswith("\\"):
            keyword, _, rest = logical.strip().partition(" ")
            yield keyword.upper(), rest.strip()
            logical = ""


def test_the_container_recipe_installs_the_wheel_and_runs_unprivileged_on_the_demo_ports() -> None:
    steps = list(_instructions(DEPLOY / "Containerfile"))
    keywords = [k for k, _ in steps]
    by = {k: [v for kk, v in steps if kk == k] for k in keywords}

    assert re.fullmatch(r"python:3\.1[1-9]-slim", by["FROM"][0])
    copy = next(v for v in by["COPY"] if ".whl" in v)
    install = next(v for v in by["RUN"] if "pip install" in v)
    assert "cell_gateway-*.whl" in copy
    assert "cell_gateway-*.whl" in install
    assert " -e " not in install
    # the image switches to the dedicated user after installing, and stays there
    user_at = keywords.index("USER")
    assert by["USER"] == ["cell-gateway"]
    assert user_at > max(i for i, (k, v) in enumerate(steps) if k == "RUN")
    assert "useradd --system" in by["RUN"][0]

    config = tomllib.loads(DEMO_CONFIG.read_text())
    opcua_port = urlparse(config["server"]["endpoint"]).port
    http_port = config["server"]["http_port"]
    assert set(by["EXPOSE"][0].split()) == {str(opcua_port), str(http_port)}
    assert json.loads(by["VOLUME"][0]) == ["/var/lib/cell-gateway"]
    assert json.loads(by["ENTRYPOINT"][0]) == ["cell-gateway"]
    assert json.loads(by["CMD"][0]) == ["run", "--config", "/etc/cell-gateway/cell.toml"]
    assert f"127.0.0.1:{http_port}/healthz" in by["HEALTHCHECK"][0]


# Prometheus rules and the Grafana dashboard


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs


def _rule_exprs() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def test_alert_rules_and_scrape_config_pass_promtool_and_the_rule_tests(promtool: str) -> None:
    checked = _run(promtool, "check", "rules", RULES)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 10 rules found" in checked.stdout
    tested = _run(promtool, "test", "rules", "cell-gateway.rules.test.yml", cwd=RULES.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    config = _run(promtool, "check", "config", "prometheus.example.yml", cwd=RULES.parent)
    assert config.returncode == 0, config.stdout + config.stderr


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    # Grafana's variables replaced by what they expand to, each query a recording rule for promtool
    rules = [
        {"record": f"dashboard:query_{i}", "expr": expr.replace("$__rate_interval", "1m").replace("$instance", ".*")}
        for i, expr in enumerate(e for e in _dashboard_exprs() if not e.startswith("label_values("))
    ]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = _run(promtool, "check", "rules", path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@asynccontextmanager
async def _metrics_text(make_config: Callable[..., CellConfig]) -> AsyncIterator[Callable[[], Any]]:
    config = make_config(CELL_GATEWAY_HTTP_PORT=str(free_port()))
    clock = ManualClock(T0)
    async with running_gateway(config, clock=clock) as gateway:
        assert gateway.http is not None
        cell = Cell(gateway.writer, clock)
        await cell.ok(PalletArrived("L1", "l1-a", None, "P1"))
        assert not (await cell.send(CycleStarted("M3", "m3-a", None, "P9", "NOPE"))).ok
        async with httpx.AsyncClient(base_url=gateway.http.url.rstrip("/")) as http:

            async def scrape() -> str:
                response = await http.get("/metrics")
                assert response.status_code == 200
                return response.text

            yield scrape


def _series_names(text: str) -> set[str]:
    """Every series name /metrics exposes, with those of families that have no sample yet (a labelled
    counter before its first increment)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "info": ("_info",)}
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
        names |= {sample.name for sample in family.samples}
    return names


async def test_dashboard_and_alerts_use_only_metrics_the_gateway_exposes(
    make_config: Callable[..., CellConfig],
) -> None:
    async with _metrics_text(make_config) as scrape:
        text = await scrape()
    exposed = _series_names(text)

    dashboard = {name for expr in _dashboard_exprs() for name in METRIC_NAME.findall(expr)}
    rules = {name for expr in _rule_exprs() for name in METRIC_NAME.findall(expr)}
    assert dashboard - exposed == set()
    assert rules - exposed == set()
    # what an operator looks for first is on the dashboard
    assert {
        "cellgw_reports_total", "cellgw_refusals_total", "cellgw_commit_seconds_bucket", "cellgw_wip_units",
        "cellgw_station_state", "cellgw_station_last_report_age_seconds", "process_resident_memory_bytes",
        "process_cpu_seconds_total", "cellgw_build_info",
    } <= dashboard  # fmt: skip
    # the only other series: Prometheus' own up{} for a gateway down
    assert all(re.search(r"\bup\{", e) or METRIC_NAME.search(e) for e in _rule_exprs())


# the wheel


def _ignore_for_copy(_folder: str, names: list[str]) -> set[str]:
    skip = {".venv", "var", "build", "dist", "node_modules", "__pycache__", ".git", ".mypy_cache", ".ruff_cache"}
    return {n for n in names if n in skip or n.endswith((".egg-info", ".pyc"))}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_built_wheel_installs_into_a_fresh_venv_and_its_cli_starts(tmp_path: Path) -> None:
    # build from a copy: nothing is written into the working tree
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=_ignore_for_copy)
    dist = tmp_path / "dist"
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", dist, source, timeout=300)
    assert built.returncode == 0, built.stderr
    [wheel] = dist.glob("*.whl")
    assert wheel.name == f"cell_gateway-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert "gateway/http/status.html" in names
    assert "gateway/py.typed" in names
    assert any(n.startswith("gateway/storage/migrations/versions/") and n.endswith(".py") for n in names)
    assert "gateway/storage/migrations/script.py.mako" in names
    assert any(n.startswith("simulators/scenarios/") for n in names)
    assert not any(n.startswith("tests/") for n in names)

    # a fresh venv (no pip of its own, this pip installs into it; --no-compile saves seconds)
    venv = tmp_path / "venv"
    assert _run(sys.executable, "-m", "venv", "--without-pip", venv).returncode == 0
    bin_ = venv / "bin"
    installed = _run(
        sys.executable, "-m", "pip", "--python", bin_ / "python", "install", "--quiet", "--no-compile",
        "--disable-pip-version-check", "-c", ROOT / "constraints.txt", wheel, timeout=480,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr

    elsewhere = tmp_path / "elsewhere"  # not the source folder: only the installed package can be imported
    elsewhere.mkdir()
    where = _run(bin_ / "python", "-c", "import gateway; print(gateway.__file__)", cwd=elsewhere)
    assert where.stdout.strip().startswith(str(venv)), where
    version = _run(bin_ / "cell-gateway", "--version", cwd=elsewhere)
    assert version.returncode == 0, version.stderr
    assert __version__ in version.stdout
    checked = _run(bin_ / "cell-gateway", "check-config", DEMO_CONFIG, cwd=elsewhere)
    assert checked.returncode == 0, checked.stderr
    assert ": ok (cell " in checked.stdout
