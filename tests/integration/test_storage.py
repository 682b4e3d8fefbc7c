"""The store: migrations reach the models' schema, on a real SQLite file, with the pragmas we rely on."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from gateway.storage.database import create_engine
from gateway.storage.migrate import current_revision, head_revision, upgrade
from gateway.storage.schema import metadata


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
