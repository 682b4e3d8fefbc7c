"""Input limits at the OPC UA and HTTP edges (gateway/limits.py), through a real gateway.

Each refusal is made by an asyncua client (or httpx for the ERP API): a specific status code, a
readable reason (in the RejectionEventType and the log), and nothing changed in the database. Each
group has a control: the largest value the limit allows goes through.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua

from gateway import limits
from gateway.config import CellConfig
from gateway.opcua.contract import JOB_METHODS
from tests.integration.erp_support import day, erp_gateway
from tests.integration.opcua_client import NOW, CellClient, i32
from tests.integration.opcua_support import Session, cell_toml, good, model_state, refused, serving

GOOD = ua.StatusCode(ua.StatusCodes.Good)
BAD_INVALID = ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
BAD_RANGE = ua.StatusCode(ua.StatusCodes.BadOutOfRange)
BAD_TYPE = ua.StatusCode(ua.StatusCodes.BadTypeMismatch)
MEGABYTE = "x" * 2**20


@pytest.fixture
async def session(tmp_path: Path, make_config: Callable[..., CellConfig]) -> AsyncIterator[Session]:
    async with serving(make_config(cell_toml(tmp_path))) as running:  # anonymous = engineer in the demo
        yield running


def create_job(cell: CellClient, job_id: str, quantity: int = 5) -> Any:
    return cell.jobs("CreateJob", job_id, "PN-1", "A", quantity, None, i32(0), 0.0, [], [])


async def released_job(cell: CellClient, job_id: str, quantity: int = 5) -> None:
    await good(create_job(cell, job_id, quantity))
    await good(cell.jobs("Release", job_id))


def logged(caplog: pytest.LogCaptureFixture, event: str) -> list[str]:
    return [str(r.msg) for r in caplog.records if event in str(r.msg)]


# ------------------------------------------------------------------------------------ finding 1: ids
@pytest.mark.parametrize(
    ("job_id", "why"),
    [
        ("J\x001", "NUL character"),
        ("J/1", "letters, digits"),
        ("J 1", "letters, digits"),
        (MEGABYTE, "at most 64"),
        ("J" * 65, "at most 64"),
        ("CreateJob", "name of a method"),
        ("release", "name of a method"),
        ("SplitQuantity", "name of a method"),
    ],
    ids=["nul", "slash", "space", "1MB", "65-chars", "CreateJob", "release", "SplitQuantity"],
)
async def test_create_job_refuses_an_id_that_cannot_be_a_node_id(session: Session, job_id: str, why: str) -> None:
    gw, cell, log = session.gateway, session.cell, session.events
    result, event = await refused(gw, log, create_job(cell, job_id), "BadInvalidArgument", "InvalidArgument")
    assert result.input_results[0] == BAD_INVALID
    assert why in event.Message.Text
    assert len(event.Message.Text) < 1000  # the reason never echoes a megabyte back


async def test_create_job_takes_a_plain_id_of_the_longest_length(session: Session) -> None:
    cell = session.cell
    longest = "J-" + "9" * (limits.MAX_ID_LENGTH - 2)
    assert await good(create_job(cell, longest)) == [longest]
    assert await good(create_job(cell, "ERP:4711.a_b")) == ["ERP:4711.a_b"]
    await good(cell.jobs("Release", longest))
    await cell.wait_for(f"Cell/Jobs/{longest}/State", "Released")


async def test_the_child_of_a_split_of_a_longest_id_job_is_addressable(session: Session) -> None:
    """Split children are ``<JobId>-R<n>``: ids the gateway makes may be longer than a client may
    choose, and every method naming a job takes them (control: the parent itself)."""
    cell = session.cell
    longest = "J-" + "9" * (limits.MAX_ID_LENGTH - 2)
    await released_job(cell, longest, quantity=10)
    (child,) = await good(cell.jobs("SplitQuantity", longest, 4, []))
    assert child == f"{longest}-R1"
    (grandchild,) = await good(cell.jobs("SplitQuantity", child, 2, []))
    assert len(grandchild) > limits.MAX_ID_LENGTH
    for job in (longest, child, grandchild):
        await good(cell.jobs("Hold", job, "check the fixture"))
        await good(cell.jobs("Resume", job))
    await good(cell.station("L1", "LoadCompleted", "L1-1", "P1", grandchild, 1, [], NOW))


def test_reserved_job_ids_are_the_methods_under_jobs() -> None:
    assert {m.name.casefold() for m in JOB_METHODS} == limits.RESERVED_JOB_IDS


async def test_oversized_or_unprintable_text_in_station_reports_is_refused_and_not_stored(session: Session) -> None:
    gw, cell, log = session.gateway, session.cell, session.events
    await released_job(cell, "J1")
    calls = [
        (cell.station("L1", "PalletArrived", MEGABYTE, "P1", NOW), 0),
        (cell.station("L1", "PalletArrived", "L1-1", "P" * 65, NOW), 1),
        (cell.station("L1", "PalletArrived", "L1-1", "P\x001", NOW), 1),
        (cell.station("L1", "LoadCompleted", "L1-1", "P1", "J1", 1, ["S" * 65], NOW), 4),
        (cell.station("L1", "LoadCompleted", "L1-1", "P1", "J1", 1, ["S\t1"], NOW), 4),
        (cell.station("L1", "StartUnit", "L1-1", "J1", MEGABYTE, NOW), 2),
        (cell.station("M1", "CycleStarted", "M1-1", "P1", "O" * 129, NOW), 2),
        (cell.units("Scrap", "X-1", "S-1", "r" * 501, NOW), 2),
        (cell.units("Scrap", "X-1", "S-1", "dropped\x07", NOW), 2),
        (cell.jobs("Hold", "J1", MEGABYTE), 1),
        (cell.units("Trace", MEGABYTE), 0),
    ]
    for call, culprit in calls:
        before = model_state(gw)
        result = await call
        assert result.code == "BadInvalidArgument"
        assert result.input_results[culprit] == BAD_INVALID
        assert all(r == GOOD for i, r in enumerate(result.input_results) if i != culprit)
        assert model_state(gw) == before
    event = await log.wait_for("RejectionEventType", Reason="InvalidArgument")
    assert "at most 64" in event.Message.Text

    # Control: the longest serial and reason the limits allow are taken.
    serial = "S" * limits.MAX_SERIAL_LENGTH
    assert await good(cell.station("L1", "LoadCompleted", "L1-1", "P1", "J1", 1, [serial], NOW)) == [[serial]]
    await good(cell.units("Scrap", "X-1", serial, "r" * limits.MAX_TEXT_LENGTH, NOW))
    await good(cell.jobs("Hold", "J1", "x" * limits.MAX_TEXT_LENGTH))


# ------------------------------------------------------------------------------ finding 2: quantities
async def test_a_load_quantity_over_the_limit_is_out_of_range_at_once(session: Session) -> None:
    gw, cell, log = session.gateway, session.cell, session.events
    await released_job(cell, "J1", quantity=200_000)
    started = time.perf_counter()
    result, event = await refused(
        gw,
        log,
        cell.station("L1", "LoadCompleted", "L1-1", "P1", "J1", 100_000, [], NOW),
        "BadOutOfRange",
        "InvalidArgument",
    )
    assert time.perf_counter() - started < 2.0  # was 16 s of a blocked event loop
    assert result.input_results == [GOOD, GOOD, GOOD, BAD_RANGE, GOOD, GOOD]
    assert f"0..{limits.MAX_UNITS_PER_LOAD}" in event.Message.Text

    result, _ = await refused(
        gw,
        log,
        cell.jobs("CreateJob", "J2", "PN-1", "A", limits.MAX_JOB_QUANTITY + 1),
        "BadOutOfRange",
        "InvalidArgument",
    )
    assert result.input_results[3] == BAD_RANGE


async def test_a_load_beyond_units_per_pallet_is_refused_whole(session: Session) -> None:
    gw, cell, log = session.gateway, session.cell, session.events
    per_pallet = gw.config.cell.units_per_pallet
    assert per_pallet == 2  # the demo cell
    await released_job(cell, "J1")
    await good(cell.station("L1", "PalletArrived", "L1-1", "P1", NOW))
    _, event = await refused(
        gw,
        log,
        cell.station("L1", "LoadCompleted", "L1-2", "P1", "J1", per_pallet + 1, [], NOW),
        "BadInvalidArgument",
        "InvalidArgument",
        Pallet="P1",
        ReportEventId="L1-2",
    )
    assert "units_per_pallet" in event.Message.Text
    assert "at most 2" in event.Message.Text
    assert gw.writer.model.book.jobs["J1"].started == 0

    # Control: a full pallet is fine.
    serials = await good(cell.station("L1", "LoadCompleted", "L1-3", "P1", "J1", per_pallet, [], NOW))
    assert len(serials[0]) == per_pallet
    assert gw.writer.model.tracker.pallets["P1"].units == serials[0]


# ------------------------------------------------------------------------------------ finding 3: types
async def test_a_matrix_of_serials_is_a_type_mismatch(session: Session) -> None:
    gw, cell, log = session.gateway, session.cell, session.events
    await released_job(cell, "J1")
    matrix = ua.Variant([["S-1", "S-2"], ["S-3", "S-4"]], ua.VariantType.String, Dimensions=[2, 2])
    result, event = await refused(
        gw,
        log,
        cell.station("L1", "LoadCompleted", "L1-1", "P1", "J1", 2, matrix, NOW),
        "BadTypeMismatch",
        "InvalidArgument",
    )
    assert result.input_results == [GOOD, GOOD, GOOD, GOOD, BAD_TYPE, GOOD]
    assert "String[][]" in event.Message.Text
    result = await cell.jobs("Split", "J1", matrix, [])
    assert (result.code, result.input_results[1]) == ("BadTypeMismatch", BAD_TYPE)

    # Control: the same serials as a list.
    assert await good(cell.station("L1", "LoadCompleted", "L1-1", "P1", "J1", 2, ["S-1", "S-2"], NOW)) == [
        ["S-1", "S-2"]
    ]


async def write_tag(cell: CellClient, station: str, tag: str, variant: ua.Variant) -> ua.StatusCode:
    node = cell.node(f"Cell/Stations/{station}/Tags/{tag}").nodeid
    (status,) = await cell.client.uaclient.write_attributes([node], [ua.DataValue(variant)])
    return status


async def test_a_tag_write_of_the_wrong_shape_type_or_size_is_refused_and_changes_nothing(
    session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    gw = session.gateway
    async with session.connect("plc-load") as plc:
        tag = "Cell/Stations/L1/Tags/PalletPresent"
        writes = [
            ("PalletPresent", ua.Variant(["P1", "P2"], ua.VariantType.String), "BadTypeMismatch"),
            ("PalletPresent", ua.Variant(1, ua.VariantType.Int32), "BadTypeMismatch"),
            ("CycleActive", ua.Variant([True], ua.VariantType.Boolean), "BadTypeMismatch"),
            ("PalletPresent", ua.Variant("P" * 65, ua.VariantType.String), "BadOutOfRange"),
            ("PalletPresent", ua.Variant(MEGABYTE, ua.VariantType.String), "BadOutOfRange"),
            ("Program", ua.Variant("P\x00RG", ua.VariantType.String), "BadOutOfRange"),
        ]
        for name, variant, code in writes:
            before = model_state(gw)
            mark = session.events.mark()
            status = await write_tag(plc, "L1", name, variant)
            assert status.name == code, (name, variant.VariantType, status.name)
            assert model_state(gw) == before
            # The PLC programmer's screen: a Rejection event naming the tag and why.
            event = await session.events.wait_for("RejectionEventType", after=mark, Station="L1")
            assert event.Reason == "InvalidArgument"
            assert f"write of {name} at L1" in event.Message.Text
        assert await plc.read(tag) == ""
        assert await plc.read("Cell/Stations/L1/Tags/CycleActive") is False
        assert len(logged(caplog, "tag_write_refused")) == len(writes)
        assert any("at most 64" in line for line in logged(caplog, "tag_write_refused"))

        # Control: a plain pallet id is taken and becomes an arrival.
        assert (await write_tag(plc, "L1", "PalletPresent", ua.Variant("P1", ua.VariantType.String))).is_good()
        assert await plc.read(tag) == "P1"
        assert gw.writer.model.tracker.pallets["P1"].station == "L1"


# ------------------------------------------------------------------------ finding 4: the method's object
async def test_a_method_called_on_another_object_is_method_invalid(
    session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    gw, cell = session.gateway, session.cell

    async def call(obj: str, method: str, *args: Any) -> ua.CallMethodResult:
        request = ua.CallMethodRequest(
            ObjectId=ua.NodeId(obj, cell.ns),
            MethodId=ua.NodeId(method, cell.ns),
            InputArguments=[ua.Variant(a, ua.VariantType.String) if isinstance(a, str) else a for a in args],
        )
        (result,) = await cell.client.uaclient.call([request])
        return result

    before = model_state(gw)
    for obj, method, args in [
        ("Cell/Stations/L2", "Cell/Stations/L1/PalletArrived", ("L1-1", "P1", ua.Variant())),
        ("Cell", "Cell/Stations/L1/PalletArrived", ("L1-1", "P1", ua.Variant())),
        ("Cell/Units", "Cell/Jobs/CreateJob", ("J9", "PN-1", "A", ua.Variant(1, ua.VariantType.UInt32))),
        ("Cell/Jobs", "Cell/Units/Trace", ("S-1",)),
    ]:
        result = await call(obj, method, *args)
        assert result.StatusCode.name == "BadMethodInvalid", (obj, method)
    assert model_state(gw) == before
    assert gw.writer.model.tracker.stations["L2"].pallet == ""
    assert any("belongs to Cell/Stations/L1" in line for line in logged(caplog, "method_called_on_wrong_object"))

    # Control: the method on its own object.
    result = await call("Cell/Stations/L1", "Cell/Stations/L1/PalletArrived", "L1-1", "P1", ua.Variant())
    assert result.StatusCode.is_good()
    assert gw.writer.model.tracker.stations["L1"].pallet == "P1"


# ------------------------------------------------------------------------------------------- HTTP
async def test_the_erp_api_answers_422_with_the_reason_from_the_same_limits(
    make_config: Callable[..., CellConfig],
) -> None:
    async with erp_gateway(make_config) as erp:
        long_id = "O" * (limits.MAX_ID_LENGTH + 1)
        body = await erp.problem(
            "POST", "/orders", 422, "InvalidArgument", json={"id": long_id, "due": day(3), "parts": {"ABC123": 1}}
        )
        assert str(limits.MAX_ID_LENGTH) in str(body)
        body = await erp.problem(
            "POST",
            "/orders",
            422,
            "InvalidArgument",
            json={"id": "O-1", "due": day(3), "parts": {"ABC123": 1}, "casting": "C\x07"},
        )
        assert "control character" in str(body)
        await erp.problem(
            "POST",
            "/orders",
            422,
            "InvalidArgument",
            json={"id": "O-1", "due": day(3), "parts": {"ABC123": limits.MAX_JOB_QUANTITY + 1}},
        )
        assert await erp.all("/bookings") == []  # nothing was stored
        # Control: the longest id and largest quantity the limits allow.
        longest = "O" * limits.MAX_ID_LENGTH
        await erp.ok(
            "POST", "/orders", 201, json={"id": longest, "due": day(3), "parts": {"ABC123": limits.MAX_JOB_QUANTITY}}
        )
