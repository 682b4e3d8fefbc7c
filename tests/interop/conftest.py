"""The node-opcua client for the interop tests: installed once with ``npm ci`` from the committed lock file.

``tests/interop/package.json`` and ``package-lock.json`` pin node-opcua-client (2.182.x runs on Node 20);
``npm ci`` installs it into ``tests/interop/node_modules`` (git-ignored) the first time, and later runs
reuse it while it matches the lock file. Without Node.js and npm the tests fail, they do not skip: CI
installs Node, and a skipped interop test would hide that nobody checked a second OPC UA stack.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
NODE_MODULES = HERE / "node_modules"
STAMP = NODE_MODULES / ".cell-gateway-lock-sha256"  # the lock file the folder was installed from
MIN_NODE = 18


def _lock_digest() -> str:
    return hashlib.sha256((HERE / "package-lock.json").read_bytes()).hexdigest()


def _pinned_version() -> str:
    version: str = json.loads((HERE / "package.json").read_text())["dependencies"]["node-opcua-client"]
    return version


def _installed_version() -> str | None:
    manifest = NODE_MODULES / "node-opcua-client" / "package.json"
    if not manifest.is_file():
        return None
    version: str = json.loads(manifest.read_text())["version"]
    return version


@pytest.fixture(scope="session")
def node() -> str:
    """The node executable, with node-opcua-client installed next to client.js."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail(
            "the interop tests need Node.js (>= 18, with npm) on PATH to run node-opcua; install Node "
            "(CI does) and run the tests again: they install node-opcua-client themselves",
            pytrace=False,
        )
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < MIN_NODE:
        pytest.fail(f"node {version} is too old for node-opcua-client {_pinned_version()}: need >= {MIN_NODE}")
    current = STAMP.is_file() and STAMP.read_text() == _lock_digest()
    if not current or _installed_version() != _pinned_version():
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(
                f"npm ci in {HERE} failed ({result.returncode}); the interop test needs the registry once:\n"
                f"{result.stdout}\n{result.stderr}",
                pytrace=False,
            )
        STAMP.write_text(_lock_digest())
    assert _installed_version() == _pinned_version()
    return node
