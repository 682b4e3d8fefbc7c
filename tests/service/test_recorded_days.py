"""Hand-written production days replayed against expected scans, times and counts.

The expected files were produced by the gateway and then checked by hand line by line (see the notes in
the day files); set UPDATE_GOLDEN=1 to rewrite them after a deliberate change, and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gateway.app import build_model
from gateway.config import CellConfig
from gateway.service.replay import replay
from tests.service.days import DAYS, play, read_day, summary
from tests.service.harness import running_cell, whole_book

DAY_FILES = sorted(DAYS.glob("*.jsonl"))


@pytest.mark.parametrize("path", DAY_FILES, ids=lambda p: p.stem)
async def test_recorded_day_gives_the_expected_scans_times_and_counts(demo_config: CellConfig, path: Path) -> None:
    day = read_day(path)
    async with running_cell(demo_config) as cell:
        answers = await play(cell, day)
        result = json.loads(json.dumps(await summary(cell, answers), default=str))
        expected_path = path.with_suffix(".expected.json")
        if os.environ.get("UPDATE_GOLDEN") == "1":
            expected_path.write_text(json.dumps(result, indent=1) + "\n")
        expected = json.loads(expected_path.read_text())
        assert result["answers"] == expected["answers"]
        assert result["jobs"] == expected["jobs"]
        assert result["units"] == expected["units"]
        assert result["scans"] == expected["scans"]
        for job in result["jobs"].values():
            assert job["wip"] == job["started"] - job["scrapped"] - job["finished"]

        # the log alone rebuilds the same state, answer for answer
        replayed, outcome = await replay(cell.writer.store.engine, lambda: build_model(demo_config))
        assert outcome.mismatches == []
        jobs, units = await whole_book(cell)
        assert repr(sorted(replayed.book.jobs.items())) == repr(sorted(jobs.items()))
        assert repr(sorted(replayed.book.units.items())) == repr(sorted(units.items()))
        assert repr(sorted(replayed.tracker.pallets.items())) == repr(sorted(cell.tracker.pallets.items()))
        assert repr(sorted(replayed.tracker.stations.items())) == repr(sorted(cell.tracker.stations.items()))
