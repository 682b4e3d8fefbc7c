"""The domain packages stay pure: no I/O libraries, no asyncio, no clock reads (style.md, rule 1)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PURE = ["gateway/cell", "gateway/jobs", "gateway/tracking", "gateway/orders"]
FORBIDDEN_MODULES = {
    "asyncio", "asyncua", "sqlalchemy", "aiosqlite", "asyncpg", "alembic", "fastapi", "starlette",
    "uvicorn", "structlog", "logging", "socket", "time", "os", "threading", "gateway.storage",
    "gateway.opcua", "gateway.app", "gateway.config",
}  # fmt: skip
CLOCK_READS = {"now", "utcnow", "today", "time", "monotonic"}


def _modules() -> list[Path]:
    return sorted(p for d in PURE for p in (ROOT / d).rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_domain_module_is_pure(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    problems = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            if any(name == m or name.startswith(m + ".") for m in FORBIDDEN_MODULES):
                problems.append(f"line {node.lineno}: imports {name}")
        if isinstance(node, ast.AsyncFunctionDef | ast.Await):
            problems.append(f"line {node.lineno}: async code")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in CLOCK_READS
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id in {"datetime", "date", "time"}
        ):
            problems.append(f"line {node.lineno}: reads the clock ({node.func.value.id}.{node.func.attr})")
    assert not problems, f"{path.relative_to(ROOT)} is meant to be pure domain:\n" + "\n".join(problems)


def test_the_check_sees_every_domain_package() -> None:
    assert len(_modules()) >= 10
