"""The command line a maintenance engineer uses: check-config, hash-password, db upgrade/current."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import app
from gateway.security.passwords import verify_password
from tests.conftest import DEMO_CONFIG

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
    before = runner.invoke(app, ["db", "current", "--config", str(DEMO_CONFIG)])
    assert before.exit_code == 0, before.output
    assert "current empty" in before.output
    assert "upgrade needed" in before.output
    upgraded = runner.invoke(app, ["db", "upgrade", "--config", str(DEMO_CONFIG)])
    assert upgraded.exit_code == 0, upgraded.output
    assert "(was empty)" in upgraded.output
    after = runner.invoke(app, ["db", "current", "--config", str(DEMO_CONFIG)])
    assert "upgrade needed" not in after.output
