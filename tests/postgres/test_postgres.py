"""PostgreSQL by changing one URL: the same migrations, the same writer, the same answers."""

from __future__ import annotations

import json

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from gateway.app import build_model
from gateway.config import CellConfig, load_config
from gateway.service.replay import replay
from gateway.storage.database import create_engine
from gateway.storage.migrate import head_revision, upgrade
from gateway.storage.schema import metadata
from tests.answer_lookup import check_answer_lookup
from tests.service.days import DAYS, play, read_day, summary
from tests.service.harness import running_cell, whole_book
from tests.support import DEMO_CONFIG


def _config(url: str) -> CellConfig:
    return load_config(DEMO_CONFIG, env={"CELL_GATEWAY_DATABASE_URL": url})


async def test_migrations_reach_the_models_schema_on_postgresql(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    try:
        before, after = await upgrade(engine)
        assert (before, after) == (None, head_revision())
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync, opts={"compare_type": True}), metadata)
            )
        assert diff == []
    finally:
        await engine.dispose()


@pytest.mark.parametrize("day", ["day1_clean", "day2_messy"])
async def test_recorded_days_give_the_same_results_on_postgresql(postgres_url: str, day: str) -> None:
    config = _config(postgres_url)
    async with running_cell(config) as cell:
        answers = await play(cell, read_day(DAYS / f"{day}.jsonl"))
        result = json.loads(json.dumps(await summary(cell, answers), default=str))
        expected = json.loads((DAYS / f"{day}.expected.json").read_text())
        assert result == expected
        replayed, outcome = await replay(cell.writer.store.engine, lambda: build_model(config))
        assert outcome.mismatches == []
        _, units = await whole_book(cell)  # finished units may have left memory: the store has them
        assert repr(sorted(replayed.book.units.items())) == repr(sorted(units.items()))
        clock = cell.clock
        state = repr(sorted(units.items())), repr(sorted(cell.tracker.pallets.items()))
    async with running_cell(config, clock) as again:
        _, units = await whole_book(again)
        assert (repr(sorted(units.items())), repr(sorted(again.tracker.pallets.items()))) == state


async def test_stored_answers_are_found_on_postgresql(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    try:
        await upgrade(engine)
        await check_answer_lookup(engine)
    finally:
        await engine.dispose()
