"""Part specs and routing templates: approval, the default, freezing, promotion, and routing snapshots."""

from __future__ import annotations

import dataclasses

from gateway.errors import Reason
from gateway.jobs.book import JobBook
from gateway.jobs.model import RoutingSource, RoutingSourceKind, TemplateStatus

from .demo_book import (
    OP10,
    OP20,
    OP30,
    OP35,
    OP40,
    OP50,
    PROCESS,
    PROCESS_OPS,
    T0,
    at,
    make_book,
    make_layout,
    new_job,
    ops,
    refused,
)

SHORT_OPS = ("OP10", "OP20", "OP40")


def approved_default(book: JobBook, operations: tuple[str, ...], part: str = "PX-1", revision: str = "A") -> str:
    template = book.create_template(part, revision, operations, T0)
    book.approve_template(template.id)
    book.set_default_template(part, revision, template.id)
    return template.id


# ---------------------------------------------------------------- creating and approving
def test_a_new_template_is_a_numbered_draft_of_its_part_revision() -> None:
    book = make_book()
    first = book.create_template("PX-1", "A", SHORT_OPS, T0)
    second = book.create_template("PX-1", "A", PROCESS_OPS, at(60))
    other_revision = book.create_template("PX-1", "B", PROCESS_OPS, at(60))

    assert (first.id, first.version, first.status) == ("PX-1/A/v1", 1, TemplateStatus.DRAFT)
    assert (second.id, second.version) == ("PX-1/A/v2", 2)
    assert other_revision.id == "PX-1/B/v1"
    assert first.steps == (OP10, OP20, OP40)
    assert first.created_at == T0
    assert book.specs[("PX-1", "A")].template_versions == 2
    assert book.specs[("PX-1", "A")].default_template_id == ""


def test_a_template_with_an_unknown_operation_is_refused_whole() -> None:
    book = make_book()
    error = refused(book, Reason.NOT_FOUND, book.create_template, "PX-1", "A", ("OP10", "OP99", "OP98"), T0)
    assert "OP99, OP98" in error.message
    assert "OP10" in error.message  # the known codes are listed to help
    assert book.specs == {}


def test_a_template_needs_steps_and_a_part() -> None:
    book = make_book()
    refused(book, Reason.INVALID_ARGUMENT, book.create_template, "PX-1", "A", (), T0)
    refused(book, Reason.INVALID_ARGUMENT, book.create_template, " ", "A", SHORT_OPS, T0)


def test_only_a_draft_is_approved_once() -> None:
    book = make_book()
    template = book.create_template("PX-1", "A", SHORT_OPS, T0)
    assert book.approve_template(template.id).status is TemplateStatus.APPROVED
    error = refused(book, Reason.INVALID_TRANSITION, book.approve_template, template.id)
    assert "Approved" in error.message
    refused(book, Reason.NOT_FOUND, book.approve_template, "PX-1/A/v9")


def test_a_draft_can_be_edited_and_an_approved_template_cannot() -> None:
    book = make_book()
    template = book.create_template("PX-1", "A", SHORT_OPS, T0)
    assert book.edit_template(template.id, PROCESS_OPS).steps == PROCESS
    book.approve_template(template.id)
    error = refused(book, Reason.INVALID_TRANSITION, book.edit_template, template.id, SHORT_OPS)
    assert "create a new version" in error.message


# ---------------------------------------------------------------- the default template
def test_only_an_approved_template_can_be_the_default() -> None:
    book = make_book()
    draft = book.create_template("PX-1", "A", SHORT_OPS, T0)
    error = refused(book, Reason.TEMPLATE_NOT_APPROVED, book.set_default_template, "PX-1", "A", draft.id)
    assert "Draft" in error.message

    book.approve_template(draft.id)
    book.deprecate_template(draft.id)
    refused(book, Reason.TEMPLATE_NOT_APPROVED, book.set_default_template, "PX-1", "A", draft.id)


def test_a_template_cannot_be_the_default_of_another_part_or_revision() -> None:
    book = make_book()
    template = book.create_template("PX-1", "A", SHORT_OPS, T0)
    book.approve_template(template.id)
    error = refused(book, Reason.INVALID_ARGUMENT, book.set_default_template, "PX-1", "B", template.id)
    assert "PX-1 rev A" in error.message
    refused(book, Reason.INVALID_ARGUMENT, book.set_default_template, "PX-2", "A", template.id)


def test_a_spec_has_one_default_and_the_last_designated_wins() -> None:
    book = make_book()
    first = approved_default(book, SHORT_OPS)
    second = approved_default(book, ("OP10", "OP20", "OP30", "OP40"))
    assert book.specs[("PX-1", "A")].default_template_id == second != first

    job = new_job(book)
    assert job.source == RoutingSource(RoutingSourceKind.TEMPLATE, second)
    assert ops(job) == ["OP10", "OP20", "OP30", "OP40"]


def test_a_job_snapshots_its_default_template_and_freezes_it() -> None:
    book = make_book()
    template_id = approved_default(book, SHORT_OPS)
    job = new_job(book)

    assert job.routing == (OP10, OP20, OP40)
    assert str(job.source) == f"template:{template_id}"
    assert book.template(template_id).status is TemplateStatus.FROZEN
    error = refused(book, Reason.TEMPLATE_FROZEN, book.edit_template, template_id, PROCESS_OPS)
    assert "deprecate it and create a new version" in error.message
    # Frozen is still approved: it stays the default and feeds the next job.
    assert str(new_job(book).source) == f"template:{template_id}"


def test_custom_operations_win_over_the_default_and_do_not_freeze_it() -> None:
    book = make_book()
    template_id = approved_default(book, SHORT_OPS)
    job = new_job(book, operations=("OP10", "OP20", "OP25", "OP40"))
    assert job.source.kind is RoutingSourceKind.CUSTOM
    assert ops(job) == ["OP10", "OP20", "OP25", "OP40"]
    assert book.template(template_id).status is TemplateStatus.APPROVED


def test_deprecating_the_default_returns_the_part_to_automatic_mode() -> None:
    book = make_book()
    template_id = approved_default(book, SHORT_OPS)
    curated = new_job(book)
    book.deprecate_template(template_id)

    assert book.template(template_id).status is TemplateStatus.DEPRECATED
    assert book.specs[("PX-1", "A")].default_template_id == ""
    automatic = new_job(book)
    assert automatic.source.kind is RoutingSourceKind.AUTOMATIC
    assert automatic.routing == PROCESS
    assert curated.routing == (OP10, OP20, OP40)  # the job made from it keeps its snapshot
    refused(book, Reason.INVALID_TRANSITION, book.deprecate_template, template_id)


def test_deprecating_a_template_that_is_not_the_default_keeps_the_default() -> None:
    book = make_book()
    default_id = approved_default(book, SHORT_OPS)
    other = book.create_template("PX-1", "A", PROCESS_OPS, T0)
    book.deprecate_template(other.id)
    assert book.specs[("PX-1", "A")].default_template_id == default_id
    assert new_job(book).source.template_id == default_id


# ---------------------------------------------------------------- snapshots never change
def test_a_template_replaced_after_a_job_was_created_leaves_the_job_unchanged() -> None:
    book = make_book()
    v1 = approved_default(book, SHORT_OPS)
    old_job = new_job(book, "WO-OLD")
    old_routing = old_job.routing

    # The frozen v1 cannot be edited: the engineer deprecates it and makes v2 the default.
    book.deprecate_template(v1)
    v2 = approved_default(book, ("OP10", "OP20", "OP25", "OP30", "OP40", "OP50"))
    new = new_job(book, "WO-NEW")

    assert book.job("WO-OLD").routing == old_routing == (OP10, OP20, OP40)
    assert book.job("WO-OLD").source.template_id == v1
    assert ops(new) == ["OP10", "OP20", "OP25", "OP30", "OP40", "OP50"]
    assert new.source.template_id == v2


def test_a_draft_edited_after_a_promoted_job_leaves_the_job_unchanged() -> None:
    book = make_book()
    job = new_job(book, operations=SHORT_OPS)
    template = book.promote_routing(job.id, T0)
    book.edit_template(template.id, PROCESS_OPS)
    assert job.routing == (OP10, OP20, OP40)
    assert template.steps == PROCESS


def test_a_new_operation_in_the_process_configuration_reaches_the_next_automatic_job_only() -> None:
    book = make_book()
    curated_id = approved_default(book, SHORT_OPS, part="PX-CURATED")
    old = new_job(book, "WO-OLD")
    assert old.source.kind is RoutingSourceKind.AUTOMATIC

    book.layout = make_layout((OP10, OP20, OP30, OP35, OP40, OP50))
    new = new_job(book, "WO-NEW")
    curated = new_job(book, "WO-CURATED", part="PX-CURATED")

    assert old.routing == PROCESS
    assert ops(new) == ["OP10", "OP20", "OP30", "OP35", "OP40", "OP50"]
    assert new.routing[3] == OP35
    assert ops(curated) == list(SHORT_OPS)  # a curated part does not follow the process
    assert curated.source.template_id == curated_id


def test_a_changed_operation_in_the_process_configuration_does_not_reach_existing_jobs() -> None:
    book = make_book()
    old = new_job(book)
    new_mill = dataclasses.replace(OP20, program="PRG-MILL-200", expected_seconds=700.0)
    book.layout = make_layout((OP10, new_mill, OP30, OP40, OP50))
    new = new_job(book)
    assert old.routing[1].program == "PRG-MILL-100"
    assert old.routing[1].expected_seconds == 900.0
    assert new.routing[1].program == "PRG-MILL-200"


def test_the_routing_of_a_created_job_can_be_replaced_until_release() -> None:
    book = make_book()
    job = new_job(book)
    book.replace_routing(job.id, ("OP10", "OP20", "OP25", "OP30", "OP40", "OP50"), "engineer", T0)
    assert ops(job) == ["OP10", "OP20", "OP25", "OP30", "OP40", "OP50"]
    assert job.source.kind is RoutingSourceKind.CUSTOM

    refused(book, Reason.NOT_FOUND, book.replace_routing, job.id, ("OP10", "OP77"), "engineer", T0)
    book.release(job.id, "manager", at(60))
    error = refused(book, Reason.INVALID_TRANSITION, book.replace_routing, job.id, SHORT_OPS, "engineer", at(90))
    assert "locked at release" in error.message
    assert ops(job) == ["OP10", "OP20", "OP25", "OP30", "OP40", "OP50"]


# ---------------------------------------------------------------- promotion
def test_a_customised_routing_is_promoted_to_a_new_draft_template() -> None:
    book = make_book()
    first = approved_default(book, SHORT_OPS)
    job = new_job(book, operations=("OP10", "OP20", "OP25", "OP30", "OP40", "OP50"))
    promoted = book.promote_routing(job.id, at(30))

    assert promoted.id == "PX-1/A/v2" != first
    assert promoted.status is TemplateStatus.DRAFT
    assert promoted.steps == job.routing
    assert promoted.created_at == at(30)
    assert book.specs[("PX-1", "A")].default_template_id == first  # a draft does not become the default

    book.approve_template(promoted.id)
    book.set_default_template("PX-1", "A", promoted.id)
    assert new_job(book).routing == job.routing
    refused(book, Reason.NOT_FOUND, book.promote_routing, "WO-NONE", T0)


# ---------------------------------------------------------------- approval required for production
def test_release_needs_an_approved_template_when_the_cell_requires_one() -> None:
    book = make_book(require_approved_templates=True)
    job = new_job(book)
    error = refused(book, Reason.APPROVAL_REQUIRED, book.release, job.id, "manager", T0)
    assert "PX-1 rev A has no approved routing template" in error.message

    draft = book.create_template("PX-1", "A", PROCESS_OPS, T0)
    refused(book, Reason.APPROVAL_REQUIRED, book.release, job.id, "manager", T0)
    book.approve_template(draft.id)
    book.release(job.id, "manager", at(60))
    assert job.state.value == "Released"


def test_a_deprecated_template_no_longer_counts_as_approved_for_production() -> None:
    book = make_book(require_approved_templates=True)
    template_id = approved_default(book, SHORT_OPS)
    job = new_job(book)
    book.deprecate_template(template_id)
    refused(book, Reason.APPROVAL_REQUIRED, book.release, job.id, "manager", T0)


def test_another_revision_approved_does_not_count() -> None:
    book = make_book(require_approved_templates=True)
    approved_default(book, SHORT_OPS, revision="B")
    job = new_job(book, revision="A")
    refused(book, Reason.APPROVAL_REQUIRED, book.release, job.id, "manager", T0)
    released = new_job(book, revision="B")
    book.release(released.id, "manager", T0)
    assert released.state.value == "Released"


def test_without_the_requirement_an_automatic_part_releases() -> None:
    book = make_book()
    job = new_job(book)
    book.release(job.id, "manager", T0)
    assert job.state.value == "Released"
    assert job.routing == PROCESS


def test_promote_copies_the_jobs_own_snapshot_even_after_the_process_changed() -> None:
    from gateway.jobs.book import NewJob

    book = make_book()
    job = book.create_job(NewJob("P-9", "A", 5), at(0), "planner")
    steps = job.routing
    # the integrator re-times every operation afterwards
    book.layout = make_layout(tuple(dataclasses.replace(s, expected_seconds=1.0) for s in PROCESS))
    template = book.promote_routing(job.id, at(1))
    assert template.steps == steps
    assert template.steps[1].expected_seconds != 1.0
