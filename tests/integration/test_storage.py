"""The store: migrations reach the models' schema, on a real SQLite file, with the pragmas we rely on."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from gateway.storage.database import create_engine
from gateway.storage.migrate import current_revision, head_revision, upgrade
from gateway.storage.schema import metadata
from tests.answer_lookup import check_answer_lookup


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
    """Retries older than the writer's cache are answered from the log: exactly the asked keys, from
    the (source, event_id) index (never a scan of the log), in statements of a few fixed shapes."""
    engine = create_engine(db_url)
    try:
        await upgrade(engine)
        statements = await check_answer_lookup(engine)
        async with engine.connect() as conn:
            plans = [(await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {s}", _params(s))).fetchall() for s in statements]
        details = [row[-1] for plan in plans for row in plan]
        assert any(d.startswith("SEARCH cell_events USING INDEX") for d in details), details
        assert not any("SCAN cell_events" in d for d in details), details
    finally:
        await engine.dispose()


def _params(statement: str) -> tuple[str, ...]:
    """Placeholder values for EXPLAIN QUERY PLAN (the plan does not depend on them)."""
    return tuple("x" for _ in range(statement.count("?")))


async def test_start_up_finds_the_units_under_audit_through_their_partial_index(db_url: str) -> None:
    """Start-up reads the units under an open Lost Audit (a few among a year's units) by the partial
    index the migration made, never by a scan of the whole table."""
    from sqlalchemy.dialects import sqlite

    from gateway.storage.store import AUDITED_UNITS

    engine = create_engine(db_url)
    try:
        await upgrade(engine)
        query = str(AUDITED_UNITS.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
        async with engine.connect() as conn:
            plan = " ".join(str(row[-1]) for row in await conn.execute(text(f"EXPLAIN QUERY PLAN {query}")))
        assert "ix_units_audit_flagged" in plan, plan
    finally:
        await engine.dispose()
