"""The command line a maintenance engineer uses: check-config, hash-password, db upgrade/current,
--version, and where a config file's paths lead."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway import __version__
from gateway.cli.main import app
from gateway.security.passwords import verify_password
from tests.support import DEMO_CONFIG, ROOT

runner = CliRunner()


def test_check_config_accepts_the_demo_cell() -> None:
    result = runner.invoke(app, ["check-config", str(DEMO_CONFIG)])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output
    assert "8 stations in 4 groups" in result.output


@pytest.mark.parametrize(
    ("edit", "path", "words"),
    [
        (('group = "MILL"', 'group = "MILLL"'), "operations[1].group", "MILLL"),
        (('id = "M2"', 'id = "M1"'), "stations[3].id", "duplicate"),
        (('stations = ["L1", "L2"]', 'stations = ["L1", "L9"]'), "users[0].stations[1]", "L9"),
        (("expected_seconds = 900", "expected_seconds = -900"), "operations[1].expected_seconds", ">= 0"),
    ],
    ids=["unknown-group", "duplicate-station", "user-unknown-station", "negative-time"],
)
def test_check_config_names_each_problem_with_its_key_path(
    tmp_path: Path, edit: tuple[str, str], path: str, words: str
) -> None:
    text = DEMO_CONFIG.read_text()
    assert edit[0] in text, f"the demo config no longer contains {edit[0]!r}; update this test"
    broken = tmp_path / "cell.toml"
    broken.write_text(text.replace(edit[0], edit[1], 1))
    result = runner.invoke(app, ["check-config", str(broken)])
    assert result.exit_code == 2
    assert path in result.output
    assert words in result.output


def test_check_config_reports_all_problems_at_once(tmp_path: Path) -> None:
    text = DEMO_CONFIG.read_text().replace('group = "MILL"', 'group = "MILLL"', 1)
    text = text.replace("expected_seconds = 900", "expected_seconds = -900", 1)
    broken = tmp_path / "cell.toml"
    broken.write_text(text)
    result = runner.invoke(app, ["check-config", str(broken)])
    assert result.exit_code == 2
    assert "2 problem(s)" in result.output
    assert "operations[1].group" in result.output
    assert "operations[1].expected_seconds" in result.output


def test_check_config_on_a_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["check-config", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert "nope.toml" in result.output


def test_hash_password_prints_a_hash_that_verifies() -> None:
    result = runner.invoke(app, ["hash-password"], input="s3cret\n")
    assert result.exit_code == 0, result.output
    hashed = result.output.strip().splitlines()[-1]
    assert hashed.startswith("$argon2id$")
    assert verify_password(hashed, "s3cret")
    assert not verify_password(hashed, "secret")


def test_hash_password_refuses_an_empty_password() -> None:
    result = runner.invoke(app, ["hash-password"], input="\n")
    assert result.exit_code == 2


def test_db_upgrade_then_current(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELL_GATEWAY_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'cell.db'}")
    missing = runner.invoke(app, ["db", "current", "--config", str(DEMO_CONFIG)])
    assert missing.exit_code == 2
    assert not (tmp_path / "cell.db").exists()
    (tmp_path / "cell.db").touch()
    before = runner.invoke(app, ["db", "current", "--config", str(DEMO_CONFIG)])
    assert before.exit_code == 0, before.output
    assert "current empty" in before.output
    assert "upgrade needed" in before.output
    upgraded = runner.invoke(app, ["db", "upgrade", "--config", str(DEMO_CONFIG)])
    assert upgraded.exit_code == 0, upgraded.output
    assert "(was empty)" in upgraded.output
    after = runner.invoke(app, ["db", "current", "--config", str(DEMO_CONFIG)])
    assert "upgrade needed" not in after.output


def _cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``cell-gateway ARGS`` as a process, in ``cwd``, without the test's database overrides."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CELL_GATEWAY_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], cwd=cwd, env={**environ, **env},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"cell-gateway {__version__}"


@pytest.fixture
def deployment(tmp_path: Path) -> Path:
    """A deployment folder: the demo config in conf/, paths relative to it (its database in var/)."""
    folder = tmp_path / "cell"
    (folder / "conf").mkdir(parents=True)
    shutil.copy(DEMO_CONFIG, folder / "conf" / "cell.toml")
    return folder


def test_paths_in_a_config_file_are_relative_to_its_folder(deployment: Path, tmp_path: Path) -> None:
    config = str(deployment / "conf" / "cell.toml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    upgraded = _cli("db", "upgrade", "--config", config, cwd=deployment / "conf")
    assert upgraded.returncode == 0, upgraded.stderr
    database = deployment / "var" / "cell-gateway.db"
    assert database.exists()

    status = _cli("status", "--config", config, "--json", cwd=elsewhere)
    assert status.returncode == 0, status.stderr
    assert '"stations"' in status.stdout
    checked = _cli("check-config", config, cwd=elsewhere)
    assert checked.returncode == 0, checked.stderr
    assert list(elsewhere.iterdir()) == []  # nothing created where the command ran


def test_an_environment_path_stays_relative_to_the_current_folder(deployment: Path, tmp_path: Path) -> None:
    config = str(deployment / "conf" / "cell.toml")
    here = tmp_path / "here"
    (here / "db").mkdir(parents=True)
    env = {"CELL_GATEWAY_DATABASE_URL": "sqlite+aiosqlite:///db/cell.db"}
    upgraded = _cli("db", "upgrade", "--config", config, cwd=here, **env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert (here / "db" / "cell.db").exists()


@pytest.mark.parametrize("command", [["status"], ["refusals"], ["trace", "DEMO-000001"], ["db", "current"]])
def test_a_reading_command_never_creates_a_database(deployment: Path, tmp_path: Path, command: list[str]) -> None:
    result = _cli(*command, "--config", str(deployment / "conf" / "cell.toml"), cwd=tmp_path)
    assert result.returncode == 2
    database = deployment / "var" / "cell-gateway.db"
    assert result.stderr.strip() == f"no database at {database}; is --config right?"
    assert not database.exists()
    assert not (deployment / "var").exists()


def test_check_config_reports_what_the_production_example_still_needs() -> None:
    result = _cli("check-config", str(ROOT / "config" / "production.example.toml"), cwd=ROOT)
    assert result.returncode == 2
    assert "ok" not in result.stdout
    assert "users[0].certificate" in result.stderr
    assert str(ROOT / "var" / "pki" / "users" / "plc-load.der") in result.stderr
    assert "users[3].password_hash: empty" in result.stderr
    assert "'operator'" in result.stderr


def test_check_config_finds_a_certificate_that_does_not_parse(tmp_path: Path) -> None:
    (tmp_path / "plc.der").write_bytes(b"not a certificate")
    config = tmp_path / "cell.toml"
    extra = '\n[[users]]\nname = "plc-x"\nroles = ["plc"]\nstations = ["L1"]\ncertificate = "plc.der"\n'
    config.write_text(DEMO_CONFIG.read_text() + extra)
    result = runner.invoke(app, ["check-config", str(config)])
    assert result.exit_code == 2
    assert "users[6].certificate" in result.output
    assert "not an X.509 certificate" in result.output


def test_check_config_with_ports_names_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        env = {"CELL_GATEWAY_HTTP_PORT": str(port)}
        busy = _cli("check-config", str(DEMO_CONFIG), "--ports", cwd=tmp_path, **env)
        unchecked = _cli("check-config", str(DEMO_CONFIG), cwd=tmp_path, **env)
    assert busy.returncode == 2
    assert f"server.http_port: 127.0.0.1:{port} is in use" in busy.stderr
    assert unchecked.returncode == 0, unchecked.stderr
    assert ": ok (" in unchecked.stdout
