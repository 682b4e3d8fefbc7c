"""The stale-WIP sweeper, moved by an injected clock: flags each idle unit once, and the audit resolves."""

from __future__ import annotations

from datetime import timedelta

from gateway.app import running_gateway
from gateway.clock import ManualClock
from gateway.config import CellConfig
from gateway.errors import Reason
from gateway.jobs.commands import CreateJob, ReleaseJob, ResolveAudit
from gateway.jobs.model import UnitStatus
from gateway.tracking.reports import LoadCompleted, PalletArrived
from tests.support import T0


async def test_idle_units_are_flagged_once_and_resolved_found_or_lost(demo_config: CellConfig) -> None:
    clock = ManualClock(T0)
    async with running_gateway(demo_config, clock=clock) as gateway:
        writer = gateway.writer
        job = (await writer.submit(CreateJob(part="ABC123", revision="A", quantity=5))).outputs["JobId"]
        await writer.submit(ReleaseJob(job))
        await writer.submit(PalletArrived("L1", "a1", None, "P1"))
        clock.advance(60)
        serials = (await writer.submit(LoadCompleted("L1", "a2", None, "P1", job, 2))).outputs["Serials"]

        clock.advance(timedelta(days=29))
        assert await gateway.sweep() == []
        clock.advance(timedelta(days=2))
        assert sorted(await gateway.sweep()) == sorted(serials)
        assert await gateway.sweep() == []  # flagged once, not every pass
        assert all(writer.model.book.units[s].audit_flagged for s in serials)

        found, lost = serials
        answer = await writer.submit(ResolveAudit(found, "found"), "engineer")
        assert answer.ok
        answer = await writer.submit(ResolveAudit(lost, "LOST"), "engineer")
        assert answer.ok
        book = writer.model.book
        assert book.units[found].status is UnitStatus.WAITING
        assert not book.units[found].audit_flagged
        assert book.units[lost].status is UnitStatus.SCRAPPED
        assert (book.jobs[job].started, book.jobs[job].scrapped, book.jobs[job].wip) == (2, 1, 1)
        again = await writer.submit(ResolveAudit(found, "found"), "engineer")
        assert again.reason is Reason.INVALID_TRANSITION
        # the found unit's idle time starts again from the audit
        clock.advance(timedelta(days=31))
        assert await gateway.sweep() == [found]
