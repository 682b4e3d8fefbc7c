"""Times of cell events: the time an event is applied at, how long something lasted by the reported
times, and one elapsed time shared among the units it served. A time that cannot be trusted is flagged
and counted unknown, never invented.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from gateway.tracking.anomalies import Anomaly, Flag
from gateway.tracking.reports import Report


def effective_time(report: Report, received_at: datetime, tolerance: timedelta) -> tuple[datetime, list[Flag]]:
    """The station's own time of the report, or the receipt time when the station's clock is off by
    more than ``tolerance`` (flagged) or it sent none."""
    if report.source_time is None:
        return received_at, []
    skew = report.source_time - received_at
    if abs(skew) > tolerance:
        return received_at, [
            Flag(
                Anomaly.CLOCK_SKEW,
                f"{report.station}'s clock is {skew.total_seconds():+.0f} s off the gateway's "
                f"(tolerance {tolerance.total_seconds():.0f} s): receipt time used",
            )
        ]
    return report.source_time, []


def duration(
    start: datetime | None, end: datetime, what: str, flags: list[Flag], max_plausible: timedelta
) -> float | None:
    """Seconds from ``start`` to ``end``; None if the start is unknown or the span is implausible
    (negative, or longer than ``max_plausible``: flagged)."""
    if start is None:
        return None
    seconds = (end - start).total_seconds()
    if seconds < 0 or seconds > max_plausible.total_seconds():
        flags.append(
            Flag(
                Anomaly.IMPLAUSIBLE_DURATION,
                f"{what} lasted {seconds:.0f} s by the reported times: not counted as elapsed time",
            )
        )
        return None
    return seconds


def split_elapsed(elapsed: float | None, expected: Sequence[float | None]) -> list[float | None]:
    """Share one cycle's elapsed time among its units by expected-time share, by count if any is missing."""
    n = len(expected)
    if elapsed is None or n == 0:
        return [None] * n
    known = [e for e in expected if e is not None]
    total = sum(known)
    if len(known) == n and total > 0:
        return [elapsed * (e or 0.0) / total for e in expected]
    return [elapsed / n] * n
