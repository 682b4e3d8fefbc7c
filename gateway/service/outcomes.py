"""What the writer tells besides answers: the errors a caller gets instead of one, how the last write
ended (what /healthz reports), the message of an InternalError refusal, and the writer's counters.

A caller gets :class:`StoreUnavailable` when the batch holding its command could not be committed
(nothing of it was acknowledged; it retries with the same EventId) and :class:`Overloaded` when the
queue was full. A command the gateway itself failed on is refused with reason InternalError and the
words of :func:`internal_message`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from gateway.service.answers import safe_text


class StoreUnavailable(Exception):
    """The batch holding this command could not be committed: nothing was acknowledged, retry it."""


class Overloaded(StoreUnavailable):
    """The writer's queue is full: the command was not taken; retry it later."""


@dataclass(frozen=True, slots=True)
class CommitOutcome:
    """How the writer's last attempt to write to the store ended (what a PLC's report got).

    ``at`` is ``time.monotonic()`` when it ended; ``error`` is the store's own message ("database or
    disk is full", "attempt to write a readonly database", "database is locked"), empty when it
    succeeded; ``failing_since`` is when the attempts started failing (None while they succeed).
    """

    ok: bool
    at: float
    error: str = ""
    failing_since: float | None = None


@dataclass(slots=True)
class WriterStats:
    batches: int = 0
    commands: int = 0
    replays: int = 0
    refusals: Counter[str] = field(default_factory=Counter)
    internal_errors: int = 0  # commands refused because the gateway failed on them
    splits: int = 0  # batches split to find a command whose rows could not be stored
    overloaded: int = 0  # commands turned away because the queue was full
    reloads: int = 0
    last_batch_size: int = 0
    last_commit_seconds: float = 0.0


def store_message(error: BaseException) -> str:
    """The store's own words for a failure: the database driver's message, without SQLAlchemy's wrapping."""
    cause = getattr(error, "orig", None) or error
    return safe_text(str(cause).strip() or type(cause).__name__)[:500]


def internal_message(error: BaseException, *, stored: bool = True) -> str:
    what = "could not be processed" if stored else "could not be stored"
    return safe_text(
        f"the gateway failed on this command ({type(error).__name__}: {error}); it {what}, nothing of it "
        "changed the cell, and it is logged as refused (retrying it gets this same answer)"
    )[:2000]
