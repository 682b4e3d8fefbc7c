"""gateway/limits.py: every limit answers a readable reason, or None for a value it takes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import limits
from gateway.config import CellSettings


def test_ids_are_taken_up_to_their_length_and_refused_beyond_it() -> None:
    assert limits.SERIAL.problem("S" * limits.MAX_SERIAL_LENGTH) is None
    assert limits.SERIAL.problem("S" * (limits.MAX_SERIAL_LENGTH + 1)) == (
        "serial is 65 characters long; at most 64 are allowed"
    )
    assert limits.REASON.problem("a sentence, with spaces.\n" * 20) is None
    assert "at most 500" in (limits.REASON.problem("r" * 501) or "")


@pytest.mark.parametrize(
    ("rule", "value", "why"),
    [
        (limits.SERIAL, "S\x001", "NUL"),
        (limits.SERIAL, "S\t1", "control characters"),
        (limits.PART, "ABC/12", "letters, digits"),  # parts name templates: <Part>/<Revision>/v<n>
        (limits.PALLET, "P\t1", "spaces"),
        (limits.EVENT_ID, "e\udcff", "UTF-8"),  # an OPC UA string that was not UTF-8
        (limits.REASON, "dropped\x07", "control character"),
        (limits.NEW_JOB_ID, "J/1", "letters, digits"),
        (limits.NEW_JOB_ID, "-J1", "letters, digits"),
        (limits.NEW_JOB_ID, "Jö", "letters, digits"),
    ],
)
def test_characters_that_cannot_be_stored_or_become_node_ids_are_refused(
    rule: limits.TextRule, value: str, why: str
) -> None:
    problem = rule.problem(value)
    assert problem is not None
    assert why in problem


def test_serials_and_event_ids_may_hold_spaces_and_split_children_of_long_ids_are_named() -> None:
    """A serial made from a cell name with a space, an EventId that is a timestamp, and the child of a
    split of a job with a 64-character id are all things the gateway itself makes or took before."""
    assert limits.SERIAL.problem("Cell 3-000001") is None
    assert limits.EVENT_ID.problem("2026-05-01 12:00:00.123") is None
    longest_new = "J" * limits.MAX_ID_LENGTH
    assert limits.new_job_id_problem(longest_new) is None
    assert limits.JOB_ID.problem(f"{longest_new}-R1-R12") is None


def test_new_job_ids_are_plain_and_name_no_method_under_jobs() -> None:
    assert limits.new_job_id_problem("J-0001") is None
    assert limits.new_job_id_problem("ERP:4711.a_b") is None
    assert limits.new_job_id_problem("Merge") == "job id 'Merge' is the name of a method under Cell/Jobs"
    assert limits.new_job_id_problem("splitquantity") is not None


def test_counts_and_quantities_over_their_limit_are_named() -> None:
    assert limits.count_problem("serials", limits.MAX_SERIALS_PER_CALL, limits.MAX_SERIALS_PER_CALL) is None
    assert limits.count_problem("serials", 1001, 1000) == "1001 serials given; at most 1000 are allowed in one call"
    assert limits.quantity_problem("Quantity", 100_000, limits.MAX_UNITS_PER_LOAD) == (
        "Quantity 100000 is above the limit of 1000"
    )


def test_the_largest_load_is_the_largest_pallet_the_config_allows() -> None:
    upper = next(m.le for m in CellSettings.model_fields["units_per_pallet"].metadata if hasattr(m, "le"))
    assert upper == limits.MAX_UNITS_PER_LOAD


def test_the_node_id_pattern_is_the_one_regex_of_new_job_ids() -> None:
    import re

    pattern = limits.NEW_JOB_ID.pattern
    assert pattern is not None
    for value in ("J-1", "ERP:1.a_b", "J/1", " J", "", "Jö"):
        assert (re.fullmatch(pattern, value) is not None) == (value != "" and limits.NEW_JOB_ID.problem(value) is None)


@given(st.text(max_size=80))
def test_any_text_gets_an_answer_and_a_taken_text_can_be_stored(value: str) -> None:
    for rule in (limits.SERIAL, limits.REASON, limits.NEW_JOB_ID):
        if rule.problem(value) is None:
            value.encode("utf-8")  # never raises for a value a rule takes
            assert "\x00" not in value
            assert len(value) <= rule.max_length
