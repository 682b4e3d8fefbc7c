"""Prometheus metrics: counted after each commit, gauges read from the committed view at scrape time.

Served at ``/metrics`` on the gateway's HTTP port. Counting happens in a writer listener (after the
commit, outside the hot path of the OPC UA handler) and costs a few dictionary updates per report.

Besides the gateway's own metrics the registry carries prometheus_client's process metrics
(``process_resident_memory_bytes``, ``process_cpu_seconds_total``, open file descriptors, ...) and
Python platform info, ``cellgw_build_info{version}`` (always 1), ``cellgw_station_state{station,
state}`` (1 for each station's current state, 0 for the others, read from the committed view) and
``cellgw_station_last_report_age_seconds{station}``: seconds, on the gateway's clock, since the
receipt of the station's last committed report. A station that has not reported since the gateway
started has no age sample (the metric tracks receipts seen by this process).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway import __version__
from gateway.opcua.transport import EdgeStats
from gateway.security.logins import LoginStats
from gateway.service.writer import Committed, Writer
from gateway.tracking.reports import Report

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Every value StationView.state takes; each station gets one sample per state (1 for the current one).
STATION_STATES = ("idle", "occupied", "running", "down")


class _Live(Collector):
    """Gauges computed when scraped: nothing to keep in step."""

    def __init__(
        self,
        writer: Writer,
        sessions: Callable[[], int],
        last_reports: dict[str, datetime],
        logins: LoginStats | None,
        connections: EdgeStats | None,
    ) -> None:
        self.writer = writer
        self.sessions = sessions
        self.last_reports = last_reports
        self.logins = logins
        self.connections = connections

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        view = self.writer.view
        queue = GaugeMetricFamily("cellgw_writer_queue_depth", "Commands waiting for the writer.")
        queue.add_metric([], self.writer.queue_depth)
        yield queue
        counter = GaugeMetricFamily("cellgw_event_log_counter", "Position of the last committed command.")
        counter.add_metric([], view.counter)
        yield counter
        sessions = GaugeMetricFamily("cellgw_opcua_sessions", "Open OPC UA sessions.")
        sessions.add_metric([], self.sessions())
        yield sessions
        wip = GaugeMetricFamily(
            "cellgw_wip_units", "Units in WIP (started - scrapped - finished) per job.", labels=["job"]
        )
        for job in view.jobs.values():
            if job.wip or job.state.value != "Closed":
                wip.add_metric([job.id], job.wip)
        yield wip
        audits = GaugeMetricFamily("cellgw_open_lost_audits", "Units flagged for a Lost Audit.")
        audits.add_metric([], len(view.audits))
        yield audits
        states = GaugeMetricFamily(
            "cellgw_station_state", "1 for the station's current state, 0 for its other states.",
            labels=["station", "state"],
        )  # fmt: skip
        for station in view.stations.values():
            for state in STATION_STATES:
                states.add_metric([station.id, state], 1.0 if station.state == state else 0.0)
        yield states
        now = self.writer.clock.now()
        age = GaugeMetricFamily(
            "cellgw_station_last_report_age_seconds",
            "Seconds since the station's last committed report was received (gateway clock).",
            labels=["station"],
        )
        for station_id, at in sorted(self.last_reports.items()):
            age.add_metric([station_id], max(0.0, (now - at).total_seconds()))
        yield age
        stats = self.writer.stats
        internal = CounterMetricFamily(
            "cellgw_internal_errors", "Commands refused because the gateway failed on them (InternalError)."
        )
        internal.add_metric([], stats.internal_errors)
        yield internal
        overloaded = CounterMetricFamily(
            "cellgw_overloaded", "Commands turned away because the writer's queue was full (BadTooManyOperations)."
        )
        overloaded.add_metric([], stats.overloaded)
        yield overloaded
        behind = CounterMetricFamily(
            "cellgw_publish_merged_batches", "Committed batches merged because publishing was behind the writer."
        )
        behind.add_metric([], self.writer.feed.behind)
        yield behind
        yield from self._edges()

    def _edges(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """Password logins (OPC UA and HTTP) and OPC UA connection limits (docs/operations.md)."""
        if self.logins is not None:
            logins = CounterMetricFamily(
                "cellgw_logins", "Password logins answered, by verdict (ok, refused, backed_off, busy).",
                labels=["verdict"],
            )  # fmt: skip
            for verdict, count in sorted(self.logins.verdicts.items()):
                logins.add_metric([verdict], count)
            yield logins
            checks = CounterMetricFamily("cellgw_login_checks", "Password hashes checked (argon2 runs).")
            checks.add_metric([], self.logins.checks)
            yield checks
            backoffs = CounterMetricFamily(
                "cellgw_login_backoffs", "Login back-off episodes started, per user name or per peer address.",
                labels=["kind"],
            )  # fmt: skip
            for kind, count in sorted(self.logins.backoffs.items()):
                backoffs.add_metric([kind], count)
            yield backoffs
        if self.connections is not None:
            stats = self.connections
            open_now = GaugeMetricFamily("cellgw_opcua_connections_open", "OPC UA connections open now.")
            open_now.add_metric([], stats.open)
            yield open_now
            closed = CounterMetricFamily(
                "cellgw_opcua_connections_limited",
                "OPC UA connections turned away or closed by a limit, by what happened.",
                labels=["what"],
            )
            for what, count in (
                ("evicted", stats.evicted),
                ("refused", stats.refused),
                ("hello_timeout", stats.hello_timeouts),
                ("activation_timeout", stats.activation_timeouts),
                ("session_refused", stats.refused_sessions),
            ):
                closed.add_metric([what], count)
            yield closed


class Metrics:
    def __init__(
        self,
        writer: Writer,
        sessions: Callable[[], int] = lambda: 0,
        *,
        logins: LoginStats | None = None,
        connections: EdgeStats | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.reports = Counter(
            "cellgw_reports", "Reports and commands committed, by station and kind.", ["station", "kind"],
            registry=self.registry,
        )  # fmt: skip
        self.refusals = Counter("cellgw_refusals", "Refused commands by reason.", ["reason"], registry=self.registry)
        self.anomalies = Counter(
            "cellgw_anomalies", "Anomaly flags raised, by name.", ["anomaly"], registry=self.registry
        )
        self.replays = Counter("cellgw_replayed_reports", "Retries answered from the log.", registry=self.registry)
        self.batch_size = Histogram(
            "cellgw_commit_batch_size", "Commands per committed batch.",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000), registry=self.registry,
        )  # fmt: skip
        self.commit_seconds = Histogram(
            "cellgw_commit_seconds", "Time to save and commit one batch.",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0), registry=self.registry,
        )  # fmt: skip
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.build_info = Gauge(
            "cellgw_build_info", "Always 1; the gateway's version in a label.", ["version"], registry=self.registry
        )
        self.build_info.labels(__version__).set(1)
        self.last_reports: dict[str, datetime] = {}
        self.registry.register(_Live(writer, sessions, self.last_reports, logins, connections))
        self._writer = writer
        writer.subscribe(self.on_commit)

    def on_commit(self, batch: Committed) -> None:
        for size, seconds in batch.commits:
            self.batch_size.observe(size)
            self.commit_seconds.observe(seconds)
        for item in batch.applied:
            command = item.command
            answer = item.answer
            if isinstance(command, Report):
                station = command.station
                # refused reports count too (the station is talking); unknown station ids do not
                if not answer.replayed and station in batch.view.stations:
                    self.last_reports[station] = answer.at
            else:
                station = command.source
            self.reports.labels(station, command.kind).inc()
            if answer.replayed:
                self.replays.inc()
            elif answer.reason is not None:
                self.refusals.labels(answer.reason.value).inc()
            for flag in answer.flags:
                self.anomalies.labels(flag.anomaly.value).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def opcua_session_count(server: Any) -> Callable[[], int]:
    """Open sessions of the gateway's asyncua server."""

    def count() -> int:
        sessions = getattr(server.iserver, "_external_sessions", None)
        return len(sessions) if sessions is not None else 0

    return count
