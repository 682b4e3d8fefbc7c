"""Jobs and routings through the writer on a real SQLite file, across restarts: the seeds' own cases."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from gateway.config import CellConfig, load_config
from gateway.errors import Reason
from gateway.jobs.commands import (
    ApproveTemplate,
    CloseJob,
    CreateJob,
    CreateTemplate,
    DeprecateTemplate,
    EditTemplate,
    MergeJobs,
    PromoteRouting,
    ReleaseJob,
    SetDefaultTemplate,
    SplitJob,
)
from gateway.jobs.model import JobState, TemplateStatus
from gateway.storage import schema as S
from gateway.tracking.reports import (
    CycleEnded,
    CycleResult,
    CycleStarted,
    LoadCompleted,
    PalletArrived,
    PalletDeparted,
)
from tests.service.harness import Cell, running_cell
from tests.support import DEMO_CONFIG


async def test_a_template_edited_after_a_job_was_created_leaves_the_job_unchanged(demo_config: CellConfig) -> None:
    async with running_cell(demo_config) as cell:
        v1 = (await cell.ok(CreateTemplate("ABC123", "A", ("OP10", "OP20", "OP40")))).outputs["TemplateId"]
        await cell.ok(ApproveTemplate(v1))
        await cell.ok(SetDefaultTemplate("ABC123", "A", v1))
        first = (await cell.ok(CreateJob(part="ABC123", revision="A", quantity=10))).outputs["JobId"]
        frozen = await cell.send(EditTemplate(v1, ("OP10", "OP20", "OP30", "OP40")))
        assert frozen.reason is Reason.TEMPLATE_FROZEN
        v2 = (await cell.ok(CreateTemplate("ABC123", "A", ("OP10", "OP20", "OP30", "OP40")))).outputs["TemplateId"]
        await cell.ok(ApproveTemplate(v2))
        await cell.ok(SetDefaultTemplate("ABC123", "A", v2))
        await cell.ok(DeprecateTemplate(v1))
        second = (await cell.ok(CreateJob(part="ABC123", revision="A", quantity=10))).outputs["JobId"]
        clock = cell.clock
    async with running_cell(demo_config, clock) as again:
        book = again.book
        assert [s.operation for s in book.jobs[first].routing] == ["OP10", "OP20", "OP40"]
        assert str(book.jobs[first].source) == f"template:{v1}"
        assert [s.operation for s in book.jobs[second].routing] == ["OP10", "OP20", "OP30", "OP40"]
        assert book.templates[v1].status is TemplateStatus.DEPRECATED
        assert book.templates[v2].status is TemplateStatus.FROZEN


async def test_a_new_operation_in_the_process_configuration_reaches_the_next_automatic_job_only(
    demo_config: CellConfig, tmp_path: Path
) -> None:
    async with running_cell(demo_config) as cell:
        old = (await cell.ok(CreateJob(part="XYZ", revision="1", quantity=5))).outputs["JobId"]
        clock = cell.clock
    # the integrator adds a deburring step between wash and unload, and restarts the gateway
    text = DEMO_CONFIG.read_text()
    marker = '[[operations]]\ncode = "OP40"'
    assert marker in text
    extra = '[[operations]]\ncode = "OP35"\nname = "deburr"\ngroup = "CMM"\nkind = "manual"\nexpected_seconds = 60\n\n'
    changed = tmp_path / "cell.toml"
    changed.write_text(text.replace(marker, extra + marker, 1))
    config = load_config(changed, env={"CELL_GATEWAY_DATABASE_URL": demo_config.database.url})
    async with running_cell(config, clock) as again:
        new = (await again.ok(CreateJob(part="XYZ", revision="1", quantity=5))).outputs["JobId"]
        assert [s.operation for s in again.book.jobs[old].routing] == ["OP10", "OP20", "OP30", "OP40", "OP50"]
        assert [s.operation for s in again.book.jobs[new].routing] == ["OP10", "OP20", "OP30", "OP35", "OP40", "OP50"]


async def _load_units(cell: Cell, job: str, count: int) -> list[str]:
    """Load ``count`` units two per pallet visit and machine them (so they carry cost)."""
    serials: list[str] = []
    n = 0
    while len(serials) < count:
        n += 1
        pallet = f"P{(n % 8) + 1}"
        take = min(2, count - len(serials))
        await cell.ok(PalletArrived("L1", f"a{n}", None, pallet))
        got = (await cell.ok(LoadCompleted("L1", f"l{n}", None, pallet, job, take), after=100)).outputs["Serials"]
        await cell.ok(PalletDeparted("L1", f"d{n}", None, pallet))
        await cell.ok(PalletArrived("M1", f"ma{n}", None, pallet), after=10)
        await cell.ok(CycleStarted("M1", f"ms{n}", None, pallet, "PRG-MILL-100"))
        await cell.ok(CycleEnded("M1", f"me{n}", None, pallet, "PRG-MILL-100", CycleResult.OK), after=900 + n % 7)
        await cell.ok(PalletDeparted("M1", f"md{n}", None, pallet))
        serials += got
    return serials


async def test_a_job_of_1000_split_900_and_100_with_cost_inheritance(demo_config: CellConfig) -> None:
    async with running_cell(demo_config) as cell:
        job = (await cell.ok(CreateJob(part="ABC123", revision="A", quantity=1000))).outputs["JobId"]
        assert cell.book.jobs[job].max_quantity == 1020  # 2 % yield buffer
        await cell.ok(ReleaseJob(job))
        serials = await _load_units(cell, job, 120)
        total_before = cell.book.job_cost(job)
        moved = serials[:100]
        moved_cost = sum(cell.book.units[s].cost.elapsed_machine for s in moved)
        unknown = await cell.send(SplitJob(job, tuple(moved), ("OP25", "OP30")))
        assert unknown.reason is Reason.NOT_FOUND  # OP25 is no operation of this cell: refused whole
        assert cell.book.jobs[job].quantity == 1000
        child = (await cell.ok(SplitJob(job, tuple(moved), ("OP20", "OP30", "OP40", "OP50")))).outputs["ChildJobId"]
        assert child == f"{job}-R1"
        parent, rework = cell.book.jobs[job], cell.book.jobs[child]
        assert (parent.quantity, rework.quantity) == (900, 100)
        assert (parent.started, rework.started) == (20, 100)
        assert rework.state is JobState.RUNNING
        assert cell.book.job_cost(child).elapsed_machine == moved_cost
        after = cell.book.job_cost(job).elapsed_machine + cell.book.job_cost(child).elapsed_machine
        assert after == total_before.elapsed_machine
        assert all(cell.book.units[s].next_step == 0 for s in moved)  # the rework loop starts at OP20
        async with cell.writer.store.engine.connect() as conn:
            moves = (await conn.execute(select(S.unit_events).where(S.unit_events.c.kind == "moved"))).all()
        assert len(moves) == 100
        assert {m.detail["from_job"] for m in moves} == {job}


async def test_merge_of_revision_a_with_b_is_refused_and_changes_nothing(demo_config: CellConfig) -> None:
    async with running_cell(demo_config) as cell:
        a = (await cell.ok(CreateJob(part="ABC123", revision="A", quantity=10))).outputs["JobId"]
        b = (await cell.ok(CreateJob(part="ABC123", revision="B", quantity=10))).outputs["JobId"]
        a2 = (await cell.ok(CreateJob(part="ABC123", revision="A", quantity=5))).outputs["JobId"]
        for job in (a, b, a2):
            await cell.ok(ReleaseJob(job))
        mixed = await cell.send(MergeJobs(a, b))
        assert mixed.reason is Reason.MIXED_MERGE
        assert "revision" in mixed.message
        assert cell.book.jobs[a].quantity == 10
        assert cell.book.jobs[b].state is JobState.RELEASED
        await cell.ok(MergeJobs(a, a2))
        assert cell.book.jobs[a].quantity == 15
        assert cell.book.jobs[a2].state is JobState.CLOSED


async def test_the_cap_of_1000_with_2_percent_is_1020_and_scrap_frees_room(demo_config: CellConfig) -> None:
    # Pallets of 1000 (the most the config allows): the 1020 units take two loads.
    big_pallets = demo_config.cell.model_copy(update={"units_per_pallet": 1000})
    async with running_cell(demo_config.model_copy(update={"cell": big_pallets})) as cell:
        job = (await cell.ok(CreateJob(part="ABC123", revision="A", quantity=1000, yield_buffer_percent=2.0))).outputs[
            "JobId"
        ]
        await cell.ok(ReleaseJob(job))
        await cell.ok(PalletArrived("L1", "a", None, "P1"))
        await cell.ok(LoadCompleted("L1", "big", None, "P1", job, 1000), after=60)
        await cell.ok(PalletArrived("L2", "b", None, "P2"))
        await cell.ok(LoadCompleted("L2", "rest", None, "P2", job, 20), after=60)
        refused = await cell.send(LoadCompleted("L1", "one-more", None, "P1", job, 1), after=60)
        assert refused.reason is Reason.ORDER_FULFILLED
        assert cell.book.jobs[job].started == 1020
        assert cell.tracker.load_instruction("L1")["load"] is None
        from gateway.tracking.reports import Scrap

        serial = cell.tracker.pallets["P1"].units[0]
        await cell.ok(Scrap("cell", "s1", None, serial, "dropped"))
        await cell.ok(LoadCompleted("L1", "one-more-2", None, "P1", job, 1), after=60)
        assert (cell.book.jobs[job].started, cell.book.jobs[job].scrapped) == (1021, 1)


async def test_require_approved_templates_blocks_release_until_one_is_approved(tmp_path: Path, db_url: str) -> None:
    text = DEMO_CONFIG.read_text().replace("require_approved_templates = false", "require_approved_templates = true")
    path = tmp_path / "strict.toml"
    path.write_text(text)
    config = load_config(path, env={"CELL_GATEWAY_DATABASE_URL": db_url})
    async with running_cell(config) as cell:
        job = (await cell.ok(CreateJob(part="NEW1", revision="A", quantity=3, operations=("OP10", "OP20")))).outputs[
            "JobId"
        ]
        refused = await cell.send(ReleaseJob(job))
        assert refused.reason is Reason.APPROVAL_REQUIRED
        template = (await cell.ok(PromoteRouting(job))).outputs["TemplateId"]
        assert cell.book.templates[template].status is TemplateStatus.DRAFT
        assert (await cell.send(ReleaseJob(job))).reason is Reason.APPROVAL_REQUIRED
        await cell.ok(ApproveTemplate(template))
        await cell.ok(ReleaseJob(job))
        variance = (await cell.ok(CloseJob(job, "short-close: customer cancelled"))).outputs["Variance"]
        assert variance == {
            "ordered": 3,
            "started": 0,
            "finished": 0,
            "scrapped": 0,
            "wip": 0,
            "freed": 3,
            "shortfall": 3,
        }
