"""docs/opcua.md's worked session, step 5, replayed as a new user would: its console commands (asyncua's
``uacall``/``uaread``) and its script run, as written there, against a ``cell-gateway run`` process started
from the demo config, and print what the page shows. Only the endpoint's port is changed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import DEMO_CONFIG, ROOT, spawn_gateway

DOCS = ROOT / "docs" / "opcua.md"
SECTION = "## A worked session for a PLC programmer"
DOCS_ENDPOINT = "opc.tcp://127.0.0.1:4840/cell-gateway/"
COMMAND_TIMEOUT = 15.0  # each command takes about a second; the margin is for a loaded CI machine
REPORTS = {
    "PalletArrived",
    "PalletDeparted",
    "LoadCompleted",
    "CycleStarted",
    "CycleEnded",
    "StartUnit",
    "ScanIn",
    "ScanOut",
    "Scrap",
}


def _section() -> str:
    text = DOCS.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start : end if end >= 0 else len(text)]


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", _section(), flags=re.DOTALL | re.MULTILINE)


def _console_steps() -> list[tuple[str, list[str]]]:
    """(command, expected output lines) for every ``$ `` line of the section's console blocks."""
    steps: list[tuple[str, list[str]]] = []
    for block in _blocks("console"):
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            else:
                assert steps, f"output before the first command in a console block: {line!r}"
                steps[-1][1].append(line)
    return steps


def _matches(expected: list[str], actual: list[str]) -> bool:
    """Line by line; ``...`` in an expected line stands for any text (a host name, say)."""
    patterns = [re.compile(".*".join(re.escape(part) for part in line.split("...")) + r"\Z") for line in expected]
    return len(patterns) == len(actual) and all(p.match(line) for p, line in zip(patterns, actual, strict=True))


def _program(name: str) -> str:
    """``.venv/bin/uacall`` as the docs write it: the tool of the virtualenv the tests run in."""
    if name.startswith(".venv/bin/"):
        return str(Path(sys.executable).parent / name.removeprefix(".venv/bin/"))
    return name


async def _run(argv: list[str], env: dict[str, str]) -> tuple[int, list[str]]:
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(COMMAND_TIMEOUT):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert b"Traceback" not in err, f"{shlex.join(argv)}:\n{err.decode()}"
    assert proc.returncode is not None
    return proc.returncode, out.decode().splitlines()


class Gateway:
    """``cell-gateway run`` on the demo config, its JSON log lines collected as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []
        self.started = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while raw := await self.proc.stdout.readline():
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            self.lines.append(line)
            if line.get("event") == "gateway_started":
                self.started.set()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                async with asyncio.timeout(10):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self.reader


async def _start(tmp_path: Path, port: int, shared_pki: Path) -> Gateway:
    # The demo config as shipped, but beside a fresh database and with the tests' server certificate.
    config = tmp_path / "cell.toml"
    text, found = re.subn(r'^pki_dir = ".*"$', f'pki_dir = "{shared_pki}"', DEMO_CONFIG.read_text(), flags=re.MULTILINE)
    assert found == 1, "config/cell.toml no longer sets server.pki_dir"
    config.write_text(text)
    env = dict(os.environ)
    env.update(
        CELL_GATEWAY_ENDPOINT=f"opc.tcp://127.0.0.1:{port}/cell-gateway/",
        CELL_GATEWAY_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'cell.db'}",
        CELL_GATEWAY_HTTP_PORT="0",
    )
    proc = await spawn_gateway(config, tmp_path, env)
    gateway = Gateway(proc)
    started = asyncio.ensure_future(gateway.started.wait())
    try:  # started, or ended (a broken start): whichever comes first
        await asyncio.wait([started, gateway.reader], timeout=60, return_when=asyncio.FIRST_COMPLETED)
        assert gateway.started.is_set(), f"the gateway did not start: {gateway.lines}"
    except BaseException:
        await gateway.stop()
        raise
    finally:
        started.cancel()
    return gateway


def test_the_docs_hold_a_console_session_and_a_script_with_its_output() -> None:
    steps = _console_steps()
    assert len(steps) > 10
    assert all(shlex.split(command)[0].startswith(".venv/bin/ua") for command, _ in steps)
    assert all(DOCS_ENDPOINT in command for command, _ in steps)
    assert any("Jobs" in command and "CreateJob" in command for command, _ in steps)
    assert any("Jobs" in command and "Release" in command for command, _ in steps)
    (script,) = _blocks("python")
    assert DOCS_ENDPOINT in script
    assert len(_blocks("text")) == 1


@pytest.mark.slow
@pytest.mark.timeout(300)  # some 25 tool processes, a second or two each
async def test_the_worked_session_of_the_docs_replays_verbatim_on_a_fresh_demo_cell(
    tmp_path: Path, port: int, shared_pki: Path
) -> None:
    endpoint = f"opc.tcp://127.0.0.1:{port}/cell-gateway/"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    gateway = await _start(tmp_path, port, shared_pki)
    try:
        for command, expected in _console_steps():
            argv = [_program(word) for word in shlex.split(command.replace(DOCS_ENDPOINT, endpoint))]
            code, output = await _run(argv, env)
            assert _matches(expected, output), f"$ {command}\nexpected {expected}\ngot      {output}"
            refused = any("(Bad" in line for line in expected)
            assert code == (1 if refused else 0), f"$ {command}: exit code {code}"

        (script,) = _blocks("python")
        path = tmp_path / "walk.py"
        path.write_text(script.replace(DOCS_ENDPOINT, endpoint))
        code, output = await _run([sys.executable, str(path)], env)
        (expected,) = _blocks("text")
        assert code == 0
        assert _matches(expected.splitlines(), output), f"expected {expected.splitlines()}\ngot      {output}"
    finally:
        await gateway.stop()

    # Every report left SourceTime out: its log line says the time of receipt was used.
    events = [line for line in gateway.lines if line.get("event") == "cell_event"]
    reports = [line for line in events if line["kind"] in REPORTS]
    assert reports
    assert all(line.get("source_time") == "receipt" for line in reports), reports
    assert all("source_time" not in line for line in events if line["kind"] not in REPORTS)
    refusals = [(line["kind"], line["station"], line["reason"]) for line in reports if line["result"] == "refused"]
    assert refusals == [("CycleStarted", "M1", "WrongProgram")] * 2  # the console's and the script's
    assert not [line for line in gateway.lines if line.get("level") in ("error", "critical")]
