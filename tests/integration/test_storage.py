"""The store: migrations reach the models' schema, on a real SQLite file, with the pragmas we rely on."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event, text

from gateway.storage.database import create_engine
from gateway.storage.migrate import current_revision, head_revision, upgrade
from gateway.storage.schema import cell_events, metadata
from gateway.storage.store import find_answers


async def test_upgrade_of_an_empty_database_matches_the_models(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        before, after = await upgrade(engine)
        assert before is None
        assert after == head_revision()
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync, opts={"compare_type": True}), metadata)
            )
        assert diff == [], f"migrations and schema.py disagree: {diff}"
    finally:
        await engine.dispose()


async def test_upgrade_twice_is_a_no_op(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        await upgrade(engine)
        before, after = await upgrade(engine)
        assert before == after == head_revision()
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


async def test_sqlite_runs_in_wal_with_foreign_keys(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'sub' / 'dir' / 'cell.db'}", synchronous="FULL")
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
            assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar() == 5000
            assert (await conn.execute(text("PRAGMA synchronous"))).scalar() == 2  # FULL
        assert (tmp_path / "sub" / "dir" / "cell.db").exists()
    finally:
        await engine.dispose()


async def test_stored_answers_are_found_by_station_and_event_id_from_the_index(db_url: str) -> None:
    """Retries older than the writer's cache are answered from the log: exactly the asked keys, in
    queries SQLite answers from the (source, event_id) index, never by scanning the log."""
    engine = create_engine(db_url)
    try:
        await upgrade(engine)
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
                "answer": {},
                "flags": [],
            }
            for n in range(1, 2101)
        ]
        async with engine.begin() as conn:
            await conn.execute(cell_events.insert(), rows)
        # 700 stored keys over 7 stations (more than one query's worth), plus keys never stored:
        # the same EventIds at an unknown station, and unknown EventIds at known stations.
        wanted = [(r["source"], r["event_id"]) for r in rows[::3]]
        asked = [*wanted, *((f"X{i}", f"e{i}") for i in range(50)), *((f"M{i % 7}", f"z{i}") for i in range(50))]
        statements: list[str] = []

        def record(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
            statements.append(statement)

        event.listen(engine.sync_engine, "before_cursor_execute", record)
        async with engine.connect() as conn:
            found = await find_answers(conn, asked)
            event.remove(engine.sync_engine, "before_cursor_execute", record)
            plans = [
                (await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {s}", _params(s))).fetchall() for s in statements[:1]
            ]
        assert set(found) == set(wanted)
        by_key = {(r["source"], r["event_id"]): r for r in rows}
        assert all(found[k].counter == by_key[k]["counter"] for k in wanted)
        assert all(found[k].args == by_key[k]["args"] for k in wanted)
        assert 2 <= len(statements) <= 3  # 800 keys in queries of at most 500
        details = [row[-1] for plan in plans for row in plan]
        assert details, "no query plan"
        assert all("SCAN" not in d for d in details), details
    finally:
        await engine.dispose()


def _params(statement: str) -> tuple[str, ...]:
    """Placeholder values for EXPLAIN QUERY PLAN (the plan does not depend on them)."""
    return tuple("x" for _ in range(statement.count("?")))
