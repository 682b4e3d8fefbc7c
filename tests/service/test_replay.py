"""The replay check against a process configuration edited since the log was written.

Seed 000: "When a work order is created, its routing is snapshotted onto the run. The snapshot is
independent of anything that happens later — editing a part's routing templates, adding a new operation
to your process, or changing a template's steps after the fact has no effect on work orders already in
progress." A replay of the log therefore rebuilds each job with the routing stored for it, whatever the
config it is given says today; only jobs created after the edit get the edited routing.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from gateway.app import build_model, layout_from
from gateway.cell.model import CellModel
from gateway.clock import ManualClock
from gateway.config import CellConfig
from gateway.jobs.commands import ApproveTemplate, CreateJob, CreateTemplate, ReleaseJob, SetDefaultTemplate
from gateway.jobs.model import RoutingSourceKind
from gateway.orders.commands import ReceiveOrder, RunSchedule
from gateway.service.replay import ReplayResult, replay
from tests.service.harness import running_cell, whole_book
from tests.service.shop import Shop
from tests.support import T0

DUE = date(2026, 3, 10)
# Room on the mills for two units at 900 s each, for one at 1000 s.
TIGHT = {"LOAD": 1e6, "MILL": 1800.0, "WASH": 1e6, "CMM": 1e6}


def edited(config: CellConfig) -> CellConfig:
    """The engineering study moved the mill to a new program that takes 1000 s instead of 900 s, and the
    cell's default yield buffer went from 2 % to 5 %."""
    operations = [
        op.model_copy(update={"program": "PRG-MILL-200", "expected_seconds": 1000.0}) if op.code == "OP20" else op
        for op in config.operations
    ]
    cell = config.cell.model_copy(update={"default_yield_buffer_percent": 5.0})
    return config.model_copy(update={"operations": operations, "cell": cell})


async def two_configs(config: CellConfig) -> tuple[dict[str, str], dict[str, Any], CellModel, ReplayResult]:
    """Jobs made under ``config``, a restart under its edited copy and one more job, then the replay of
    the whole log under the edited config. Returns the job ids, every job as the cell holds it, and the
    replay's model and result."""
    ids: dict[str, str] = {}
    async with running_cell(config) as cell:
        ids["automatic"] = (await cell.ok(CreateJob("ABC123", "A", 2))).outputs["JobId"]
        await cell.ok(ReleaseJob(ids["automatic"]))
        await Shop(cell.writer, cell.clock).make(ids["automatic"], 1)  # its cycles ran PRG-MILL-100
        await cell.ok(ReceiveOrder("A", DUE, 1, {"DEF456": 3}))
        ids["scheduled"] = (await cell.ok(RunSchedule(TIGHT))).outputs["Jobs"]["DEF456"]
        template = (await cell.ok(CreateTemplate("GHI789", "A", ("OP10", "OP20", "OP40")))).outputs["TemplateId"]
        await cell.ok(ApproveTemplate(template))
        await cell.ok(SetDefaultTemplate("GHI789", "A", template))
        ids["template"] = (await cell.ok(CreateJob("GHI789", "A", 1))).outputs["JobId"]

    today = edited(config)
    async with running_cell(today, ManualClock(T0 + timedelta(days=1))) as cell:
        ids["after"] = (await cell.ok(CreateJob("ABC123", "A", 1))).outputs["JobId"]
        jobs, _ = await whole_book(cell)
        replayed, result = await replay(cell.writer.store.engine, lambda: build_model(today))
    return ids, jobs, replayed, result


async def test_a_replay_after_the_process_configuration_changed_rebuilds_jobs_from_their_snapshot(
    demo_config: CellConfig,
) -> None:
    ids, jobs, replayed, result = await two_configs(demo_config)
    assert result.mismatches == []  # the old job's PRG-MILL-100 cycles are accepted again
    before = {step.operation: step for step in layout_from(demo_config).process}
    automatic = replayed.book.jobs[ids["automatic"]]
    assert automatic.source.kind is RoutingSourceKind.AUTOMATIC
    assert automatic.routing == jobs[ids["automatic"]].routing == tuple(before.values())
    assert (automatic.routing[1].program, automatic.routing[1].expected_seconds) == ("PRG-MILL-100", 900)
    assert automatic.yield_buffer_percent == jobs[ids["automatic"]].yield_buffer_percent == 2.0
    # The schedule sized its job with the routing of that day: two fit at 900 s, not one at 1000 s.
    assert replayed.book.jobs[ids["scheduled"]].quantity == jobs[ids["scheduled"]].quantity == 2
    assert replayed.book.jobs[ids["scheduled"]].routing == tuple(before.values())
    # A template made then keeps the steps it was made with, and so does its job.
    assert replayed.book.jobs[ids["template"]].routing == (before["OP10"], before["OP20"], before["OP40"])
    assert repr(sorted(replayed.book.jobs.items())) == repr(sorted(jobs.items()))


async def test_a_job_created_after_the_process_configuration_changed_gets_the_new_routing(
    demo_config: CellConfig,
) -> None:
    ids, jobs, replayed, result = await two_configs(demo_config)
    assert result.mismatches == []
    today = layout_from(edited(demo_config)).process
    after = replayed.book.jobs[ids["after"]]
    assert after.routing == jobs[ids["after"]].routing == today
    assert (after.routing[1].program, after.routing[1].expected_seconds) == ("PRG-MILL-200", 1000)
    assert after.yield_buffer_percent == jobs[ids["after"]].yield_buffer_percent == 5.0
    assert replayed.book.layout.process == today  # the replayed cell goes on with today's config
