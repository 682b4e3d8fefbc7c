"""The answer look-up over a real log, shared by the SQLite and PostgreSQL tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.storage.schema import cell_events
from gateway.storage.store import find_answers


async def check_answer_lookup(engine: AsyncEngine) -> list[str]:
    """Store 2,100 reports over 7 stations, look up 800 keys (700 stored, 100 never stored: the same
    EventIds at an unknown station, unknown EventIds at known stations) and check exactly the stored
    ones come back with their own answers. Returns the SQL the look-up ran."""
    now = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
    rows = [
        {
            "counter": n,
            "source": f"M{n % 7}",
            "event_id": f"e{n // 7}",
            "kind": "PalletArrived",
            "args": {"pallet": f"P{n}"},
            "source_time": None,
            "received_at": now,
            "actor": "plc",
            "reason": None,
            "message": "",
            "answer": {"n": n},
            "flags": [],
        }
        for n in range(1, 2101)
    ]
    async with engine.begin() as conn:
        await conn.execute(cell_events.insert(), rows)
    wanted = [(r["source"], r["event_id"]) for r in rows[::3]]
    asked = [*wanted, *((f"X{i}", f"e{i}") for i in range(50)), *((f"M{i % 7}", f"z{i}") for i in range(50))]
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        async with engine.connect() as conn:
            found = await conn.run_sync(find_answers, asked)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
    assert set(found) == set(wanted)
    by_key = {(r["source"], r["event_id"]): r for r in rows}
    assert all(found[k].counter == by_key[k]["counter"] for k in wanted)
    assert all(found[k].args == by_key[k]["args"] for k in wanted)
    assert all(found[k].outputs == by_key[k]["answer"] for k in wanted)
    assert len(statements) == 4  # 800 keys: three statements of 256 keys, then 32 padded to 64
    assert len(set(statements)) == 2
    return statements
