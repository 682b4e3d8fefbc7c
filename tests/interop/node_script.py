"""Running one of the node-opcua scripts of this folder: its JSON lines (``{"step": ...}``) by step."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


async def run_script(node: str, script: str, env: dict[str, str], within: float) -> dict[str, list[dict[str, Any]]]:
    """Run ``script`` with ``env``; fails with its whole output unless it exits 0 within ``within`` s."""
    proc = await asyncio.create_subprocess_exec(
        node, str(HERE / script), cwd=HERE, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with asyncio.timeout(within):
            out, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode()
    assert proc.returncode == 0, text
    steps: dict[str, list[dict[str, Any]]] = {}
    for line in text.splitlines():
        if line.startswith('{"step"'):
            fields = json.loads(line)
            steps.setdefault(fields.pop("step"), []).append(fields)
    return steps
