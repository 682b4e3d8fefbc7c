"""Every status code of the contract's table, with the Reason of the RejectionEventType it raises.

Each refusal is made through an asyncua client against a real gateway; ``refused`` checks the status
code, waits for the RejectionEventType with the expected Reason, and compares the cell's whole state
before and after: a refused call changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from asyncua import ua

from gateway.config import CellConfig
from tests.integration.opcua_client import NOW, CellClient, i32
from tests.integration.opcua_support import Session, cell_toml, good, model_state, refused, serving

GOOD = ua.StatusCode(ua.StatusCodes.Good)
BAD_INVALID = ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
BAD_TYPE = ua.StatusCode(ua.StatusCodes.BadTypeMismatch)


@pytest.fixture
async def session(tmp_path: Path, make_config: Callable[..., CellConfig]) -> AsyncIterator[Session]:
    async with serving(make_config(cell_toml(tmp_path))) as running:  # anonymous = engineer in the demo
        yield running


async def job(
    cell: CellClient, job_id: str, *, part: str = "PN-1", quantity: int = 5, steps: list[str] | None = None
) -> None:
    """Create and release a job without a yield buffer (its cap is its quantity)."""
    await good(cell.jobs("CreateJob", job_id, part, "A", quantity, None, i32(0), 0.0, steps or [], []))
    await good(cell.jobs("Release", job_id))


async def test_malformed_calls_are_refused_with_per_argument_results_and_not_stored(session: Session) -> None:
    gw, cell, log = session.gateway, session.cell, session.events
    l1 = "Cell/Stations/L1"

    result, _ = await refused(gw, log, cell.call(l1, "PalletArrived", "L1-1"), "BadArgumentsMissing", "InvalidArgument")
    result, _ = await refused(
        gw, log, cell.call(l1, "PalletArrived", "L1-1", "P1", NOW, "x"), "BadTooManyArguments", "InvalidArgument"
    )
    result, event = await refused(
        gw,
        log,
        cell.station("L1", "LoadCompleted", "L1-1", "P1", "J1", "2", [], NOW),
        "BadTypeMismatch",
        "InvalidArgument",
        Station="L1",
        ReportEventId="L1-1",
    )
    assert result.input_results == [GOOD, GOOD, GOOD, BAD_TYPE, GOOD, GOOD]
    assert "Quantity" in event.Message.Text

    result, _ = await refused(
        gw, log, cell.station("L1", "PalletArrived", "L1-1", "", NOW), "BadInvalidArgument", "InvalidArgument"
    )
    assert result.input_results == [GOOD, BAD_INVALID, GOOD]  # an empty id
    result, _ = await refused(
        gw, log, cell.station("L1", "PalletArrived", " ", "P1", NOW), "BadInvalidArgument", "InvalidArgument"
    )
    assert result.input_results == [BAD_INVALID, GOOD, GOOD]
    result, _ = await refused(
        gw,
        log,
        cell.station("M1", "CycleEnded", "M1-1", "P1", "PRG-MILL-100", "maybe", NOW),
        "BadInvalidArgument",
        "InvalidArgument",
    )
    assert result.input_results == [GOOD, GOOD, GOOD, BAD_INVALID, GOOD]  # an unknown Result word
    result, _ = await refused(
        gw,
        log,
        cell.station("L1", "LoadCompleted", "L1-1", "P1", "J1", 0, [], NOW),
        "BadInvalidArgument",
        "InvalidArgument",
    )
    assert result.input_results == [GOOD, GOOD, GOOD, BAD_INVALID, GOOD, GOOD]  # a quantity of 0 with a job
    result, _ = await refused(
        gw,
        log,
        cell.jobs("CreateJob", "J1", "PN-1", "A", 0, None, i32(0), 0.0, [], []),
        "BadInvalidArgument",
        "InvalidArgument",
        ReportEventId="",  # the JobId is not an EventId
    )
    assert result.input_results[3] == BAD_INVALID

    # Malformed calls are not stored: the EventId is still free.
    await good(cell.station("L1", "PalletArrived", "L1-1", "P1", NOW))
    assert gw.writer.model.tracker.stations["L1"].pallet == "P1"


async def test_unknown_job_serial_pallet_template_and_operation_are_not_found(session: Session) -> None:
    gw, cell, log = session.gateway, session.cell, session.events
    await refused(gw, log, cell.jobs("Release", "J-NOPE"), "BadNotFound", "NotFound", Job="J-NOPE")
    await refused(
        gw,
        log,
        cell.station("L1", "LoadCompleted", "L1-1", "P1", "J-NOPE", 1, [], NOW),
        "BadNotFound",
        "NotFound",
        Station="L1",
        Pallet="P1",
        Job="J-NOPE",
        ReportEventId="L1-1",
    )
    await refused(
        gw, log, cell.station("C1", "ScanIn", "C1-1", "SN-NOPE", NOW), "BadNotFound", "NotFound", Serial="SN-NOPE"
    )
    await refused(gw, log, cell.units("Scrap", "X-1", "SN-NOPE", "dropped", NOW), "BadNotFound", "NotFound")
    await refused(
        gw, log, cell.station("L1", "PalletArrived", "L1-2", "P99", NOW), "BadNotFound", "NotFound", Pallet="P99"
    )
    _, event = await refused(gw, log, cell.parts("ApproveTemplate", "PN-1/A/v9"), "BadNotFound", "NotFound")
    assert "PN-1/A/v9" in event.Message.Text
    _, event = await refused(
        gw,
        log,
        cell.jobs("CreateJob", "J1", "PN-1", "A", 1, None, i32(0), 0.0, ["OP10", "OP99"], []),
        "BadNotFound",
        "NotFound",
    )
    assert "OP99" in event.Message.Text
    await refused(gw, log, cell.parts("CreateTemplate", "PN-1", "A", ["OP98"]), "BadNotFound", "NotFound")
    assert (await cell.units("Trace", "SN-NOPE")).code == "BadNotFound"  # a read: no event


async def test_jobs_not_released_on_hold_or_closed_and_templates_not_approved_are_invalid_states(
    session: Session,
) -> None:
    gw, cell, log = session.gateway, session.cell, session.events
    await good(cell.jobs("CreateJob", "J-C", "PN-1", "A", 5, None, i32(0), 0.0, [], []))
    await refused(
        gw,
        log,
        cell.station("L1", "LoadCompleted", "L1-1", "P1", "J-C", 1, [], NOW),
        "BadInvalidState",
        "JobNotReleased",
        Job="J-C",
    )

    # Hold lets a running cycle finish and stops everything new.
    await job(cell, "J-H")
    await good(cell.station("L1", "LoadCompleted", "L1-2", "P1", "J-H", 1, ["H-1"], NOW))
    await good(cell.station("M1", "CycleStarted", "M1-1", "P1", "PRG-MILL-100", NOW))
    await good(cell.station("L2", "LoadCompleted", "L2-1", "P2", "J-H", 1, ["H-2"], NOW))
    await good(cell.jobs("Hold", "J-H", "quality alert"))
    await refused(
        gw,
        log,
        cell.station("L1", "LoadCompleted", "L1-3", "P3", "J-H", 1, [], NOW),
        "BadInvalidState",
        "JobOnHold",
        Job="J-H",
    )
    await refused(
        gw,
        log,
        cell.station("M2", "CycleStarted", "M2-1", "P2", "PRG-MILL-100", NOW),
        "BadInvalidState",
        "JobOnHold",
        Pallet="P2",
    )
    await good(cell.station("M1", "CycleEnded", "M1-2", "P1", "PRG-MILL-100", "ok", NOW))  # a fact
    assert gw.writer.model.book.units["H-1"].next_step == 2

    await job(cell, "J-X")
    await good(cell.jobs("Close", "J-X", "cancelled"))
    await refused(
        gw,
        log,
        cell.station("L1", "LoadCompleted", "L1-4", "P4", "J-X", 1, [], NOW),
        "BadInvalidState",
        "JobClosed",
        Job="J-X",
    )
    await refused(gw, log, cell.jobs("Release", "J-X"), "BadInvalidState", "JobClosed", Job="J-X")

    (draft,) = await good(cell.parts("CreateTemplate", "PN-2", "A", ["OP10", "OP20", "OP40"]))
    await refused(
        gw, log, cell.parts("SetDefaultTemplate", "PN-2", "A", draft), "BadInvalidState", "TemplateNotApproved"
    )
    # A template referenced by a job is frozen; over OPC UA nothing edits a template, so the refusal a
    # client meets is approving it again (an added reason, allowed by the contract).
    await good(cell.parts("ApproveTemplate", draft))
    await good(cell.parts("SetDefaultTemplate", "PN-2", "A", draft))
    await good(cell.jobs("CreateJob", "J-T", "PN-2", "A", 1, None, i32(0), 0.0, [], []))
    assert gw.writer.model.book.templates[draft].status == "Frozen"
    await refused(gw, log, cell.parts("ApproveTemplate", draft), "BadInvalidState", "InvalidTransition")


async def test_route_violations_and_mixed_merges_are_not_allowed(session: Session) -> None:
    gw, cell, log = session.gateway, session.cell, session.events
    await job(cell, "J1")
    await good(cell.station("L1", "LoadCompleted", "L1-1", "P1", "J1", 1, ["R-1"], NOW))
    await good(cell.station("W1", "PalletArrived", "W1-1", "P1", NOW))
    _, event = await refused(
        gw,
        log,
        cell.station("W1", "CycleStarted", "W1-2", "P1", "PRG-WASH-1", NOW),
        "BadRequestNotAllowed",
        "InvalidProcessStep",
        Station="W1",
        Pallet="P1",
        ReportEventId="W1-2",
    )
    assert "OP20" in event.Message.Text  # the step it must pass first
    await good(cell.station("M1", "PalletArrived", "M1-1", "P1", NOW))
    await refused(
        gw,
        log,
        cell.station("M1", "CycleStarted", "M1-2", "P1", "PRG-OTHER", NOW),
        "BadRequestNotAllowed",
        "WrongProgram",
        Station="M1",
    )

    await job(cell, "J2", steps=["OP10", "OP20", "OP40"])  # no wash step
    await good(cell.station("L2", "LoadCompleted", "L2-1", "P2", "J2", 1, [], NOW))
    await refused(
        gw,
        log,
        cell.station("W1", "CycleStarted", "W1-3", "P2", "PRG-WASH-1", NOW),
        "BadRequestNotAllowed",
        "WrongResource",
    )
    await refused(
        gw,
        log,
        cell.station("M2", "LoadCompleted", "M2-1", "P3", "J2", 1, [], NOW),
        "BadRequestNotAllowed",
        "WrongResource",
    )

    await job(cell, "J3", part="PN-9")
    _, event = await refused(
        gw, log, cell.jobs("Merge", "J1", "J3"), "BadRequestNotAllowed", "MixedMerge", ReportEventId=""
    )
    assert "PN-9" in event.Message.Text


async def test_release_without_an_approved_template_is_not_allowed_where_required(
    tmp_path: Path, make_config: Callable[..., CellConfig]
) -> None:
    config = make_config(cell_toml(tmp_path, require_approved_templates=True))
    async with serving(config) as session:
        gw, cell, log = session.gateway, session.cell, session.events
        await good(cell.jobs("CreateJob", "J1", "PN-1", "A", 5, None, i32(0), 0.0, [], []))
        await refused(gw, log, cell.jobs("Release", "J1"), "BadRequestNotAllowed", "ApprovalRequired", Job="J1")
        (template,) = await good(cell.parts("CreateTemplate", "PN-1", "A", ["OP10", "OP20", "OP30", "OP40"]))
        await good(cell.parts("ApproveTemplate", template))
        await good(cell.jobs("Release", "J1"))


async def test_the_cap_and_reused_ids_are_refused_and_a_retry_gets_the_stored_answer(session: Session) -> None:
    gw, cell, log = session.gateway, session.cell, session.events
    await job(cell, "J1", quantity=2)
    over_cap = ("L1", "LoadCompleted", "L1-1", "P1", "J1", 3, [], NOW)
    await refused(gw, log, cell.station(*over_cap), "BadOutOfRange", "OrderFulfilled", Job="J1", ReportEventId="L1-1")
    assert gw.writer.model.book.jobs["J1"].started == 0  # refused whole

    # The same call again is answered from the log, without a new event; a later refusal shows the order.
    mark = log.mark()
    assert (await cell.station(*over_cap)).code == "BadOutOfRange"
    await refused(gw, log, cell.jobs("Release", "J-NOPE"), "BadNotFound", "NotFound")
    assert [e.ReportEventId for e in log.events[mark:]] == [""]

    assert await good(cell.station("L1", "LoadCompleted", "L1-2", "P1", "J1", 2, ["S-1", "S-2"], NOW)) == [
        ["S-1", "S-2"]
    ]
    await refused(gw, log, cell.station("L2", "StartUnit", "L2-1", "J1", "", NOW), "BadOutOfRange", "OrderFulfilled")

    await good(cell.station("L2", "PalletArrived", "L2-2", "P2", NOW))
    mark = log.mark()
    _, event = await refused(
        gw,
        log,
        cell.station("L2", "PalletArrived", "L2-2", "P3", NOW),
        "BadEntryExists",
        "DuplicateEventId",
        Station="L2",
        ReportEventId="L2-2",
    )
    assert "L2-2" in event.Message.Text
    before = model_state(gw)
    retry = await cell.station("L2", "PalletArrived", "L2-2", "P2", session.clock.now())
    assert retry.ok  # idempotent, SourceTime aside: the stored answer, nothing changed
    assert model_state(gw) == before

    await refused(
        gw,
        log,
        cell.jobs("CreateJob", "J1", "PN-1", "A", 1, None, i32(0), 0.0, [], []),
        "BadEntryExists",
        "DuplicateId",
    )
    assert [e.Reason for e in log.events[mark:]] == ["DuplicateEventId", "DuplicateId"]  # one event per refusal
    await job(cell, "J2")
    await refused(
        gw,
        log,
        cell.station("L1", "LoadCompleted", "L1-3", "P4", "J2", 1, ["S-2"], NOW),
        "BadEntryExists",
        "DuplicateSerial",
    )
    await refused(
        gw, log, cell.station("C1", "StartUnit", "C1-1", "J2", "S-1", NOW), "BadRequestNotAllowed", "InvalidProcessStep"
    )


async def test_calls_outside_a_role_or_its_stations_are_access_denied(session: Session) -> None:
    gw, cell, log = session.gateway, session.cell, session.events
    denied = ("BadUserAccessDenied", "AccessDenied")
    async with session.connect("plc-mill") as mill:
        await good(mill.station("M1", "PalletArrived", "M1-1", "P1", NOW))  # its own station
        _, event = await refused(
            gw, log, mill.station("L1", "PalletArrived", "L1-1", "P2", NOW), *denied, Station="L1", ReportEventId="L1-1"
        )
        assert "plc-mill" in event.Message.Text
        await refused(gw, log, mill.jobs("Release", "J1"), *denied)
        await refused(gw, log, mill.units("Scrap", "X-1", "S-1", "dropped", NOW), *denied)
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):  # another station's tag
            await mill.node("Cell/Stations/W1/Tags/PalletPresent").write_value("P1", ua.VariantType.String)
    async with session.connect("operator") as operator:
        await refused(gw, log, operator.jobs("CreateJob", "J1", "PN-1", "A", 1, None, i32(0), 0.0, [], []), *denied)
        await refused(gw, log, operator.units("ResolveAudit", "S-1", "found"), *denied)
    async with session.connect("erp") as erp:
        await refused(gw, log, erp.station("M2", "PalletArrived", "M2-1", "P3", NOW), *denied)
        await refused(gw, log, erp.parts("CreateTemplate", "PN-1", "A", ["OP10"]), *denied)
        await good(erp.jobs("CreateJob", "J1", "PN-1", "A", 1, None, i32(0), 0.0, [], []))
    with pytest.raises(ua.uaerrors.BadUserAccessDenied):  # a gateway-maintained variable, even for an engineer
        await cell.node("Cell/Stations/M1/State").write_value("down", ua.VariantType.String)


async def test_a_source_time_left_out_null_or_min_value_means_the_time_of_receipt(session: Session) -> None:
    """Generic tools cannot send a DateTime: every report may leave SourceTime out (or send Null/MinValue)."""
    cell = session.cell
    # CreateJob's trailing arguments may be left out too: here its Pallets (any).
    assert await good(cell.jobs("CreateJob", "J-T", "PN-3", "A", 3, None, i32(0), 0.0, ["OP50"])) == ["J-T"]
    await good(cell.jobs("Release", "J-T"))  # a manual line: units start at C1, which serves OP50
    received = session.clock.now()
    min_value = ua.Variant(datetime(1601, 1, 1, tzinfo=UTC), ua.VariantType.DateTime)
    null = ua.Variant(None, ua.VariantType.Null)
    assert await good(cell.station("C1", "StartUnit", "C1-1", "J-T", "T-1")) == ["T-1"]
    assert await good(cell.station("C1", "StartUnit", "C1-2", "J-T", "T-2", null)) == ["T-2"]
    assert await good(cell.station("C1", "StartUnit", "C1-3", "J-T", "T-3", min_value)) == ["T-3"]
    async with session.connect("operator") as operator:
        await good(operator.units("Scrap", "OP-1", "T-1", "dropped"))
        await good(operator.units("Scrap", "OP-1", "T-1", "dropped"))  # a retry gets the stored answer
    for serial, status in (("T-1", "scrapped"), ("T-2", "in_step"), ("T-3", "in_step")):
        (text,) = await good(cell.units("Trace", serial))
        trace = json.loads(text)
        assert trace["status"] == status
        assert {e["at"] for e in trace["events"]} == {received.isoformat()}, trace["events"]

    # A required argument is still required; the declared InputArguments say which may be left out.
    await refused(
        session.gateway,
        session.events,
        cell.station("C1", "StartUnit", "C1-4", "J-T"),
        "BadArgumentsMissing",
        "InvalidArgument",
    )
    declared = await (await cell.node("Cell/Stations/C1/StartUnit").get_child("0:InputArguments")).read_value()
    assert [(a.Name, a.Description.Text.endswith("(optional)")) for a in declared] == [
        ("EventId", False),
        ("Job", False),
        ("Serial", False),
        ("SourceTime", True),
    ]
