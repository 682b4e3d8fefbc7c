"""Stale WIP: idle units are flagged once for a Lost Audit, which resolves as found or lost."""

from __future__ import annotations

from datetime import timedelta

from gateway.errors import Reason
from gateway.jobs.book import JobBook
from gateway.jobs.events import LostAuditActivity, LostAuditFlagged, LostAuditResolved, UnitScrapped
from gateway.jobs.model import UnitStatus

from .demo_book import at, make_book, pass_step, refused, released_job, snapshot, start

THIRTY_DAYS = timedelta(days=30)


def floor(book: JobBook) -> None:
    """WO-1 with S1 idle in its load step since day 0, S2 waiting since day 20, S3 finished, S4 scrapped."""
    released_job(book, "WO-1", quantity=4, buffer=0.0)
    for serial in ("S1", "S2", "S3", "S4"):
        start(book, "WO-1", serial, at(0))
    pass_step(book, "S2", at(days=20), 10.0)
    for _ in range(5):
        pass_step(book, "S3", at(60), 1.0)
    book.scrap("S4", "crash", at(60))


def test_units_idle_longer_than_the_threshold_are_flagged_once() -> None:
    book = make_book()
    floor(book)
    flagged = book.flag_stale(at(days=31), THIRTY_DAYS)
    assert flagged == [LostAuditFlagged("S1", "WO-1", "L1", 31 * 86400.0, at(days=31))]
    assert book.events[-1] == flagged[0]
    assert book.unit("S1").audit_flagged
    assert not book.unit("S2").audit_flagged

    before = snapshot(book)
    assert book.flag_stale(at(days=32), THIRTY_DAYS) == []
    assert snapshot(book) == before

    later = book.flag_stale(at(days=51), THIRTY_DAYS)
    assert [(e.serial, e.station, e.idle_seconds) for e in later] == [("S2", "", 31 * 86400.0)]
    assert not book.unit("S3").audit_flagged  # finished and scrapped units are not WIP
    assert not book.unit("S4").audit_flagged


def test_exactly_the_threshold_is_not_yet_stale() -> None:
    book = make_book()
    floor(book)
    assert book.flag_stale(at(days=30), THIRTY_DAYS) == []
    assert [e.serial for e in book.flag_stale(at(days=30, seconds=1), THIRTY_DAYS)] == ["S1"]


def test_a_found_unit_is_back_in_wip_with_its_activity_reset() -> None:
    book = make_book()
    floor(book)
    book.flag_stale(at(days=31), THIRTY_DAYS)
    unit = book.resolve_audit("S1", " Found ", "auditor", at(days=33))

    assert (unit.audit_flagged, unit.status, unit.last_activity) == (False, UnitStatus.IN_STEP, at(days=33))
    assert book.events[-1] == LostAuditResolved("S1", "WO-1", "found", "auditor", at(days=33))
    assert book.job("WO-1").wip == 2
    # Idle for another full period after it was found: flagged again.
    assert [e.serial for e in book.flag_stale(at(days=62), THIRTY_DAYS)] == ["S2"]
    assert [e.serial for e in book.flag_stale(at(days=64), THIRTY_DAYS)] == ["S1"]


def test_a_lost_unit_is_scrapped_as_lost_and_frees_room() -> None:
    book = make_book()
    floor(book)
    job = book.job("WO-1")
    book.flag_stale(at(days=31), THIRTY_DAYS)
    assert job.room == 1  # S4's scrap freed one
    unit = book.resolve_audit("S1", "lost", "auditor", at(days=33))

    assert (unit.status, unit.audit_flagged) == (UnitStatus.SCRAPPED, False)
    assert (job.scrapped, job.wip, job.room) == (2, 1, 2)
    assert book.events[-2:] == [
        UnitScrapped("S1", "WO-1", "lost", at(days=33)),
        LostAuditResolved("S1", "WO-1", "lost", "auditor", at(days=33)),
    ]
    start(book, "WO-1", "S5", at(days=34))
    start(book, "WO-1", "S6", at(days=34))
    refused(book, Reason.ORDER_FULFILLED, start, book, "WO-1", "S7", at(days=34))


def test_audit_resolutions_that_do_not_apply_are_refused() -> None:
    book = make_book()
    floor(book)
    error = refused(book, Reason.INVALID_TRANSITION, book.resolve_audit, "S2", "found", "auditor", at(days=31))
    assert "S2 has no open Lost Audit" in error.message
    book.flag_stale(at(days=31), THIRTY_DAYS)
    error = refused(book, Reason.INVALID_ARGUMENT, book.resolve_audit, "S1", "missing", "auditor", at(days=31))
    assert "'found' or 'lost'" in error.message
    refused(book, Reason.NOT_FOUND, book.resolve_audit, "S404", "lost", "auditor", at(days=31))
    book.resolve_audit("S1", "found", "auditor", at(days=32))
    refused(book, Reason.INVALID_TRANSITION, book.resolve_audit, "S1", "lost", "auditor", at(days=32))


def test_activity_on_a_flagged_unit_leaves_its_audit_open_and_says_so() -> None:
    """Seed 002: WIP that sits > 30 days "without a transaction" is flagged for a Lost Audit; the engineer
    resolves it. A unit that moves again is reported (LostAuditActivity), its audit stays open until the
    engineer answers it, and the answer then works (it used to fail: the activity closed it silently)."""
    book = make_book()
    floor(book)
    book.flag_stale(at(days=31), THIRTY_DAYS)
    assert book.unit("S1").audit_flagged
    pass_step(book, "S1", at(days=33), 5.0)
    unit = book.unit("S1")
    assert unit.audit_flagged
    assert unit.last_activity == at(days=33)
    assert LostAuditActivity("S1", "WO-1", "L1", at(days=33)) in book.events
    assert not any(isinstance(e, LostAuditResolved) for e in book.events)
    assert book.flag_stale(at(days=40), THIRTY_DAYS) == []  # never flagged twice
    book.resolve_audit("S1", "found", "auditor", at(days=41))
    assert not book.unit("S1").audit_flagged


def test_a_pallet_movement_is_activity_for_the_units_on_it() -> None:
    """Seed 002: flag WIP that sits > 30 days "without a transaction": a pallet carrying the unit moving
    is such a transaction. Control: a unit whose pallet does not move is flagged."""
    control = make_book()
    floor(control)
    assert [f.serial for f in control.flag_stale(at(days=31), THIRTY_DAYS)] == ["S1"]

    book = make_book()
    floor(book)
    book.touch(["S1", "S3"], "M1", at(days=29))  # S3 is finished: not in WIP, nothing to touch
    assert book.flag_stale(at(days=31), THIRTY_DAYS) == []
    assert book.unit("S3").last_activity != at(days=29)
    assert [f.serial for f in book.flag_stale(at(days=60), THIRTY_DAYS)] == ["S1", "S2"]
