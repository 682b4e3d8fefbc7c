"""What the OPC UA server publishes, only after a commit: the stations' and jobs' variables from the
committed view, the events of each applied command, and each command's canonical log line.

Jobs' objects come and go: a job is published once the shop floor may see it, and leaves the address
space ``closed_job_retention_hours`` after it closed (or, done and never closed, after it last changed).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from asyncua import Node, ua

from gateway.jobs.model import JobState
from gateway.logging import get_logger
from gateway.opcua.address_space import JOB_VARIABLES, AddressSpace, add_job, job_values
from gateway.opcua.calls import canonical_line
from gateway.opcua.events import raise_events
from gateway.opcua.transport import GatewayServer
from gateway.service.answers import safe_text
from gateway.service.views import CellView, JobView
from gateway.service.writer import Committed, Writer

log = get_logger(__name__)


class Publisher:
    """Writes the address space's values after each commit, and keeps what it wrote last."""

    def __init__(self, server: GatewayServer, writer: Writer, retention: timedelta) -> None:
        self.server = server
        self.writer = writer
        self.retention = retention
        self.space: AddressSpace | None = None  # once built
        self._published: dict[ua.NodeId, Any] = {}
        self._closed_since: dict[str, datetime] = {}  # published jobs closed or done: since when
        self._initial: asyncio.Task[None] | None = None  # publishing the jobs loaded at start

    def publish_loaded_jobs(self, view: CellView) -> None:
        """Start publishing the jobs loaded at start, in a task of its own."""
        self._initial = asyncio.create_task(self._publish_jobs(view), name="opcua-publish-jobs")

    async def jobs_published(self) -> None:
        """Until the jobs loaded at start are in the address space (they are published after listening)."""
        if self._initial is not None:
            await asyncio.shield(self._initial)

    async def stop(self) -> None:
        if self._initial is not None:
            self._initial.cancel()
            await asyncio.gather(self._initial, return_exceptions=True)

    async def _write(self, node: Node, value: Any, vtype: ua.VariantType) -> None:
        if self._published.get(node.nodeid, object()) == value:
            return
        self._published[node.nodeid] = value
        # SourceTimestamp: when the gateway produced the value (its clock); ServerTimestamp: when the
        # server took it. Clients (historians, SCADA) read both.
        produced = self.writer.clock.now()
        data = ua.DataValue(ua.Variant(value, vtype), SourceTimestamp=produced, ServerTimestamp=datetime.now(UTC))
        await self.server.write_attribute_value(node.nodeid, data)

    async def _publish_jobs(self, view: CellView) -> None:
        """The jobs loaded at start; a done job that nobody closed is published again only when it
        changes (it would leave the address space after the retention anyway)."""
        started = asyncio.get_running_loop().time()
        for job in view.jobs.values():
            if job.done or (job.state is JobState.CLOSED and not job.wip):
                continue
            await self._publish_job(job)
            await asyncio.sleep(0)  # a turn for the PLCs' calls between two jobs
        log.info(
            "opcua_jobs_published", jobs=len(view.jobs), seconds=round(asyncio.get_running_loop().time() - started, 3)
        )

    async def publish_stations(self, view: CellView, station_ids: set[str]) -> None:
        assert self.space is not None
        for station_id in station_ids:
            nodes = self.space.stations.get(station_id)
            state = view.stations.get(station_id)
            if nodes is None or state is None:
                continue
            await self._write(nodes.state, state.state, ua.VariantType.String)
            await self._write(nodes.pallet, state.pallet, ua.VariantType.String)
            await self._write(nodes.expected_program, state.expected_program, ua.VariantType.String)
            await self._write(nodes.load_instruction, state.load_instruction, ua.VariantType.String)

    async def _publish_job(self, job: JobView) -> None:
        """A job's object and variables; one job that cannot be published never stops the others."""
        try:
            await self._publish_job_nodes(job)
        except Exception:
            log.exception("job_publish_failed", job=safe_text(job.id))

    async def _publish_job_nodes(self, job: JobView) -> None:
        assert self.space is not None
        if not job.shop_floor_visible:
            return
        nodes = self.space.jobs.get(job.id)
        values = job_values(job)
        if nodes is None:
            nodes = await add_job(self.space, job.id, values)
        for var_name, vtype in JOB_VARIABLES:
            if values[var_name] is not None:
                await self._write(nodes[var_name], values[var_name], vtype)
        if job.state is JobState.CLOSED:
            self._closed_since.setdefault(job.id, job.closed_at or self.writer.clock.now())
        elif job.done:
            self._closed_since.setdefault(job.id, self.writer.clock.now())
        else:
            self._closed_since.pop(job.id, None)  # it has work again: it stays

    async def remove_expired_jobs(self, now: datetime) -> list[str]:
        """Closed jobs' objects leave the address space ``closed_job_retention_hours`` after they
        closed; so do done jobs (ordered quantity finished, nothing in WIP) that nobody closed, after
        the same time without a change. A job that changes again is published again."""
        assert self.space is not None
        expired = [j for j, since in self._closed_since.items() if now - since >= self.retention]
        for job_id in expired:
            del self._closed_since[job_id]
            nodes = self.space.jobs.pop(job_id, None)
            if nodes is None:
                continue
            for node in nodes.values():
                self._published.pop(node.nodeid, None)
            try:
                await self.server.delete_nodes([nodes[""]], recursive=True)
            except Exception:
                log.exception("job_node_removal_failed", job=safe_text(job_id))
        if expired:
            log.info("closed_jobs_removed_from_address_space", jobs=len(expired))
        return expired

    async def on_commit(self, batch: Committed) -> None:
        """After a commit (in the feed's task): variables from the committed view, events, log lines."""
        if self._initial is not None and not self._initial.done():
            await asyncio.wait([self._initial])  # the jobs loaded at start first (never raises: stop cancels it)
        view = batch.view
        try:
            await self.publish_stations(view, batch.stations | {s for s, st in view.stations.items() if st.pallet})
        except Exception:  # the jobs, events and log lines below still come
            log.exception("station_publish_failed")
        for job_id in batch.jobs:
            job = view.jobs.get(job_id)
            if job is not None:
                await self._publish_job(job)
        for item in batch.applied:
            canonical_line(item.command, item.actor, item.answer)
            if item.answer.replayed or self.space is None:
                continue
            try:
                await raise_events(self.space.events, item)
            except Exception:  # one event that cannot be raised never costs the others theirs
                log.exception("events_failed", kind=item.command.kind)
