"""Hostile input over OPC UA: every method and every writable tag, against a real running gateway.

The methods and tags are found the way any client finds them: by browsing ``Objects/Cell`` with an
asyncua client and reading each method's ``InputArguments`` and each variable's DataType, ValueRank and
UserAccessLevel; a new method or tag is covered without a change here. Hypothesis draws the arguments
(``tests/integration/hostile_values.py``): wrong variant types, arrays for scalars and scalars for
arrays, String[][] matrices, empty and very long strings (about 1 MB in a few examples), unicode with
NUL, control characters and invalid UTF-8, numbers at and beyond the limits, DateTime extremes, too
few and too many arguments, and methods called with another object's ObjectId.

Every call and write is checked for what a client and an operator would notice:

- a specific status code: never BadInternalError or BadUnexpectedError, and nothing logged as an error
  by the server (an escaping exception, a failed commit);
- input that no correct gateway takes (``must_refuse``: a wrong type or shape, text with NUL, control
  characters or invalid UTF-8, more than 4096 characters, numbers above every limit, a method under
  the wrong object) is refused;
- a refusal changes no state; an argument-level refusal (the call never reached the writer) stores
  nothing at all: every table of the gateway's SQLite file, read through its own connection, has the
  rows it had;
- a healthy PLC on another session is still served: a report of its own is answered Good, in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from asyncua import Client, ua
from asyncua.ua.ua_binary import variant_to_binary
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from gateway.config import CellConfig
from tests.integration.hostile_values import (
    HUGE,
    INVALID_UTF8,
    MAX_LIST_ANY,
    MAX_NUMBER_ANY,
    Arguments,
    Hostile,
    Slot,
    argument_lists,
    declared_type,
    text_problem,
    values_for,
)
from tests.integration.opcua_client import NOW, CellClient, i32
from tests.integration.opcua_support import Session, cell_toml, good, model_state, serving

V = ua.VariantType
INTERNAL = {"BadInternalError", "BadUnexpectedError"}
#: Refusals made before a call reaches the writer: nothing of them is stored.
UNSTORED = {
    "BadTypeMismatch",
    "BadArgumentsMissing",
    "BadTooManyArguments",
    "BadMethodInvalid",
    "BadNodeIdUnknown",
    "BadNodeIdInvalid",
    "BadUserAccessDenied",
    "BadNotWritable",
    "BadWriteNotSupported",
    "BadAttributeIdInvalid",
    "BadIndexRangeInvalid",
    "BadEncodingLimitsExceeded",
    "BadRequestTooLarge",
}
#: BadInvalidArgument and BadOutOfRange come from the argument checks (nothing stored) and from the
#: cell's rules (a well-formed command refused: recorded in the audit log, opcua-contract.md): for
#: them the event log may hold one more refusal, and nothing else may change.
CALL_TIMEOUT = 10.0  # seconds: no call may keep a client (or the event loop) that long
HEALTHY_TIMEOUT = 2.0
HEALTHY_EVERY = 10  # examples between two calls of the healthy PLC


# ---------------------------------------------------------------------------- the address space
@dataclass(frozen=True, slots=True)
class MethodNode:
    object_id: ua.NodeId
    method_id: ua.NodeId
    path: str
    slots: tuple[Slot, ...]

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def kind(self) -> str:
        """The method and where it is, without the object's own name: ``Stations/*/PalletArrived``."""
        parts = self.path.split("/")
        return "/".join([*parts[:-2], "*", parts[-1]]) if len(parts) > 3 else self.path

    def __repr__(self) -> str:
        return self.path


@dataclass(frozen=True, slots=True)
class VariableNode:
    node_id: ua.NodeId
    path: str
    vtype: ua.VariantType
    array: bool
    writable: bool

    def __repr__(self) -> str:
        return f"{self.path} ({self.vtype.name}{'[]' if self.array else ''}{', writable' if self.writable else ''})"


async def browse(client: Client, root: ua.NodeId) -> tuple[list[MethodNode], list[VariableNode], list[ua.NodeId]]:
    """Every method (with its declared inputs), variable and object of the contract under ``root``, as a
    client sees them: the nodes in the gateway's namespace. The standard faces beside them (JobManagement,
    the Machinery building blocks, in the companion namespaces) take ISA-95 structures and LocalizedText
    that these families do not generate; test_job_management.py and test_machinery_faces.py refuse
    their malformed calls."""
    methods: list[MethodNode] = []
    variables: list[VariableNode] = []
    objects = [root]
    queue = [(root, "Cell")]
    while queue:
        parent, path = queue.pop()
        node = client.get_node(parent)
        for ref in await node.get_children_descriptions(refs=ua.ObjectIds.HierarchicalReferences):
            if ref.BrowseName.NamespaceIndex != root.NamespaceIndex:
                continue  # a standard face's node
            child = client.get_node(ref.NodeId)
            child_path = f"{path}/{ref.BrowseName.Name}"
            if ref.NodeClass == ua.NodeClass.Method:
                inputs: list[ua.Argument] = []
                for prop in await child.get_children_descriptions(refs=ua.ObjectIds.HasProperty):
                    if prop.BrowseName.Name == "InputArguments":
                        inputs = list(await client.get_node(prop.NodeId).read_value() or [])
                methods.append(MethodNode(parent, ref.NodeId, child_path, tuple(Slot.of(a) for a in inputs)))
            elif ref.NodeClass == ua.NodeClass.Variable:
                data_type, rank, access = await child.read_attributes(
                    [ua.AttributeIds.DataType, ua.AttributeIds.ValueRank, ua.AttributeIds.UserAccessLevel]
                )
                declared = ua.Argument(DataType=data_type.Value.Value)
                writable = bool(access.Value.Value & (1 << ua.AccessLevel.CurrentWrite))
                variables.append(
                    VariableNode(ref.NodeId, child_path, declared_type(declared), rank.Value.Value >= 0, writable)
                )
            elif ref.NodeClass == ua.NodeClass.Object:
                objects.append(ref.NodeId)
                queue.append((ref.NodeId, child_path))
    return methods, variables, objects


# ---------------------------------------------------------------------------- the running cell
class ErrorLog(logging.Handler):
    """Keeps every record logged at ERROR or above, or with an exception, while the cell runs."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)

    def take(self) -> list[str]:
        taken = [f"{r.name} {r.levelname}: {str(r.msg)[:300]}" for r in self.records]
        self.records.clear()
        return taken


@dataclass(slots=True)
class Cell:
    """A running gateway prepared for hostile calls, its hostile client and a healthy PLC's client."""

    session: Session
    plc: CellClient
    methods: list[MethodNode]
    variables: list[VariableNode]
    objects: list[ua.NodeId]
    errors: ErrorLog
    db_path: str
    examples: int = 0
    healthy_calls: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def hostile(self) -> Client:
        return self.session.cell.client

    def counts(self) -> dict[str, int]:
        with closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)) as conn:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}

    def new_rows_are_refusals(self, before: dict[str, int]) -> bool:
        with closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)) as conn:
            rows = conn.execute(
                "SELECT reason FROM cell_events ORDER BY counter DESC LIMIT ?",
                (self.counts()["cell_events"] - before["cell_events"],),
            ).fetchall()
        return all(reason is not None for (reason,) in rows)

    async def healthy_plc_is_served(self) -> None:
        """The healthy PLC's own report, on its own session: Good, and in time."""
        self.healthy_calls += 1
        event_id = f"healthy-{self.healthy_calls}"
        try:
            async with asyncio.timeout(HEALTHY_TIMEOUT):
                result = await self.plc.station("L1", "PalletArrived", event_id, "P8", NOW)
        except TimeoutError:
            raise AssertionError(f"a healthy PLC's PalletArrived was not answered within {HEALTHY_TIMEOUT} s") from None
        assert result.ok, f"a healthy PLC's PalletArrived was answered {result.code}"

    async def reconnect(self) -> None:
        client = self.hostile
        with contextlib.suppress(Exception):  # the session may be gone already
            await client.disconnect()
        await client.connect()
        self.session.cell = await CellClient(client).setup()


@pytest.fixture
async def cell(tmp_path: Path, make_config: Callable[..., CellConfig]) -> AsyncIterator[Cell]:
    """A demo gateway with job J1 released and pallet P1 at L1, so well-typed calls reach the cell's rules."""
    config = make_config(cell_toml(tmp_path))
    db_path = make_url(config.database.url).database
    assert db_path
    errors = ErrorLog()
    async with serving(config) as session:
        engineer = session.cell  # anonymous = engineer in the demo: may call every method
        await good(engineer.jobs("CreateJob", "J1", "PN-1", "A", 50, None, i32(0), 0.0, [], []))
        await good(engineer.jobs("Release", "J1"))
        await good(engineer.station("L1", "PalletArrived", "setup-1", "P1", NOW))
        methods, variables, objects = await browse(engineer.client, ua.NodeId("Cell", engineer.ns))
        async with session.connect("plc-load") as plc:
            logging.getLogger().addHandler(errors)
            try:
                running = Cell(session, plc, methods, variables, objects, errors, db_path)
                await running.healthy_plc_is_served()
                yield running
                await running.healthy_plc_is_served()
            finally:
                logging.getLogger().removeHandler(errors)


# ---------------------------------------------------------------------------- one hostile call
def _describe(values: list[ua.Variant] | tuple[Hostile, ...]) -> str:
    return ", ".join(repr(v) if isinstance(v, Hostile) else repr(Hostile(v)) for v in values)


async def hostile_call(
    cell: Cell, method: MethodNode, arguments: Arguments, object_id: ua.NodeId | None = None
) -> list[str]:
    """Call ``method`` with ``arguments`` (on ``object_id`` instead of its own object if given); what
    went wrong, each as a line for the report (empty: the gateway behaved)."""
    wrong_object = object_id is not None and object_id != method.object_id
    must_refuse = f"called on {object_id}" if wrong_object else arguments.must_refuse
    request = ua.CallMethodRequest(
        ObjectId=object_id or method.object_id, MethodId=method.method_id, InputArguments=arguments.variants
    )
    what = f"{method.path}({_describe(arguments.values)})" + (f" on ObjectId {object_id}" if wrong_object else "")
    for variant in request.InputArguments:
        variant_to_binary(variant)  # a value the client cannot send is a mistake of this test, not a finding
    before_counts, before_state = cell.counts(), model_state(cell.session.gateway)
    try:
        async with asyncio.timeout(CALL_TIMEOUT):
            (result,) = await cell.hostile.uaclient.call([request])
    except Exception as exc:  # a dropped session or a timeout is a finding
        await cell.reconnect()
        return [f"{what}: no answer ({exc!r})"]
    code = result.StatusCode.name
    problems = [f"{what}: logged {line}" for line in cell.errors.take()]
    if code in INTERNAL:
        problems.append(f"{what}: answered {code}")
    if must_refuse and result.StatusCode.is_good():
        problems.append(f"{what}: answered {code}, expected a refusal ({must_refuse})")
    if result.StatusCode.is_good():
        problems += _oracles(cell, method, arguments, result)
        return problems
    if model_state(cell.session.gateway) != before_state:
        problems.append(f"{what}: refused {code} but the cell's state changed")
    after_counts = cell.counts()
    unstored = code in UNSTORED or wrong_object
    if unstored and after_counts != before_counts:
        grown = {t: after_counts[t] - n for t, n in before_counts.items() if after_counts.get(t) != n}
        problems.append(f"{what}: refused {code} before the writer but rows changed: {grown}")
    elif not unstored:
        others = {t: n for t, n in after_counts.items() if t != "cell_events"}
        if others != {t: n for t, n in before_counts.items() if t != "cell_events"}:
            problems.append(f"{what}: refused {code} but tables other than the event log changed")
        elif not cell.new_rows_are_refusals(before_counts):
            problems.append(f"{what}: refused {code} but an accepted report was stored")
    return problems


def _oracles(cell: Cell, method: MethodNode, arguments: Arguments, result: ua.CallMethodResult) -> list[str]:
    """What a Good answer must respect whatever the arguments: a load never puts more units on a
    pallet than it holds."""
    if method.name != "LoadCompleted" or not result.OutputArguments:
        return []
    serials = result.OutputArguments[0].Value or []
    capacity = cell.session.gateway.config.cell.units_per_pallet
    if len(serials) > capacity:
        return [
            f"{method.path}({_describe(arguments.values)}): answered Good with {len(serials)} units on one "
            f"pallet, expected a refusal (units_per_pallet = {capacity})"
        ]
    return []


async def hostile_write(cell: Cell, variable: VariableNode, value: Hostile, attribute: ua.AttributeIds) -> list[str]:
    """Write ``value`` to an attribute of ``variable``; what went wrong (empty: the gateway behaved)."""
    must_refuse = value.must_refuse
    if not variable.writable:
        must_refuse = "the variable is not writable"
    elif attribute != ua.AttributeIds.Value:
        must_refuse = f"writing the {attribute.name} attribute"
    what = f"write {variable.path}.{attribute.name} = {value!r}"
    params = ua.WriteParameters(
        NodesToWrite=[ua.WriteValue(NodeId=variable.node_id, AttributeId=attribute, Value=ua.DataValue(value.variant))]
    )
    variant_to_binary(value.variant)
    before_counts, before_state = cell.counts(), model_state(cell.session.gateway)
    try:
        async with asyncio.timeout(CALL_TIMEOUT):
            (status,) = await cell.hostile.uaclient.write(params)
    except Exception as exc:  # a dropped session or a timeout is a finding
        await cell.reconnect()
        return [f"{what}: no answer ({exc!r})"]
    problems = [f"{what}: logged {line}" for line in cell.errors.take()]
    if status.name in INTERNAL:
        problems.append(f"{what}: answered {status.name}")
    if status.is_good():
        if must_refuse:
            problems.append(f"{what}: answered {status.name}, expected a refusal ({must_refuse})")
        return problems
    if model_state(cell.session.gateway) != before_state or cell.counts() != before_counts:
        problems.append(f"{what}: refused {status.name} but the database changed")
    return problems


def report(problems: list[str]) -> str:
    lines = sorted(set(problems))
    return f"{len(lines)} finding(s):\n" + "\n".join(f"- {line[:600]}" for line in lines)


# ---------------------------------------------------------------------------- Hypothesis
SETTINGS = settings(
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
    report_multiple_bugs=False,
)


@settings(SETTINGS, max_examples=250)
@given(data=st.data())
async def test_every_method_answers_hostile_arguments_with_a_specific_code_and_stores_nothing_refused(
    cell: Cell, data: st.DataObject
) -> None:
    method = data.draw(st.sampled_from(cell.methods), label="method")
    arguments = data.draw(argument_lists(method.slots), label="arguments")
    object_id = None
    if data.draw(st.integers(0, 7), label="object") == 0:
        object_id = data.draw(st.sampled_from([o for o in cell.objects if o != method.object_id]), label="ObjectId")
    problems = await hostile_call(cell, method, arguments, object_id)
    cell.examples += 1
    if cell.examples % HEALTHY_EVERY == 0:
        await cell.healthy_plc_is_served()
    assert not problems, report(problems)


@settings(SETTINGS, max_examples=120)
@given(data=st.data())
async def test_every_writable_tag_refuses_hostile_values_and_stores_nothing_refused(
    cell: Cell, data: st.DataObject
) -> None:
    writable = [v for v in cell.variables if v.writable]
    variable = data.draw(
        st.one_of(st.sampled_from(writable), st.sampled_from(cell.variables))
        if writable
        else st.sampled_from(cell.variables),
        label="variable",
    )
    value = data.draw(values_for(variable.vtype, variable.array, plausible_weight=2), label="value")
    attribute = ua.AttributeIds.Value
    if data.draw(st.integers(0, 11), label="attribute") == 0:
        attribute = data.draw(
            st.sampled_from(
                (
                    ua.AttributeIds.DataType,
                    ua.AttributeIds.ValueRank,
                    ua.AttributeIds.AccessLevel,
                    ua.AttributeIds.DisplayName,
                )
            ),
            label="attribute id",
        )
    problems = await hostile_write(cell, variable, value, attribute)
    cell.examples += 1
    if cell.examples % HEALTHY_EVERY == 0:
        await cell.healthy_plc_is_served()
    assert not problems, report(problems)


# ---------------------------------------------------------------------------- every method, every family
_BASE = {
    "Pallet": "P1",
    "Job": "J1",
    "JobId": "J1",
    "TargetJobId": "J1",
    "SourceJobId": "J1",
    "Part": "PN-1",
    "Revision": "A",
    "Serial": "T-1",
    "Result": "ok",
    "Outcome": "found",
    "Program": "PRG-MILL-100",
    "Reason": "dropped",
    "TemplateId": "PN-1/A/v1",
}


def _base(slot: Slot, index: int, counter: list[int]) -> Hostile:
    """A well-formed value for a slot (the first String input a fresh id: an EventId nobody used)."""
    if slot.array:
        return Hostile(ua.Variant([], slot.vtype, is_array=True))
    if slot.vtype is V.String:
        counter[0] += 1
        return Hostile(ua.Variant(f"sweep-{counter[0]}" if index == 0 else _BASE.get(slot.name, "x1"), V.String))
    if slot.vtype is V.DateTime:
        return Hostile(ua.Variant(None, V.Null))
    if slot.vtype in (V.Double, V.Float):
        return Hostile(ua.Variant(0.0, slot.vtype))
    if slot.vtype is V.Boolean:
        return Hostile(ua.Variant(False, V.Boolean))
    return Hostile(ua.Variant(1, slot.vtype))


def _families(slot: Slot, first_text: bool) -> list[Hostile]:
    """One value of each hostile family that fits the slot's declaration."""
    refuse = "must be refused"
    values = [
        Hostile(ua.Variant([["T-1", "T-2"], ["T-3", "T-4"]], V.String), "a String[][] matrix", "String[2][2]"),
        Hostile(ua.Variant(True, V.Boolean), "Boolean" if slot.vtype is not V.Boolean else None),
        Hostile(ua.Variant(b"\xff\xfe\x00", V.ByteString), "ByteString"),
    ]
    if slot.array:
        values += [
            Hostile(ua.Variant("T-1", slot.vtype), "a scalar for an array"),
            Hostile(ua.Variant(["T-1"] * (MAX_LIST_ANY + 1), V.String, is_array=True), refuse, "String[1001]"),
            Hostile(ua.Variant(["T-1\x00"], V.String, is_array=True), "NUL"),
            Hostile(ua.Variant(["T-1" + INVALID_UTF8[0]], V.String, is_array=True), "invalid UTF-8"),
            Hostile(ua.Variant([""], V.String, is_array=True)),
        ]
        return values
    if slot.vtype is V.String:
        values += [
            Hostile(ua.Variant(["T-1", "T-2"], V.String, is_array=True), "an array for a scalar"),
            Hostile(ua.Variant("J1\x00x", V.String), "NUL"),
            Hostile(ua.Variant("J1" + INVALID_UTF8[2], V.String), "invalid UTF-8"),
            Hostile(ua.Variant("J1\x1b[2J", V.String), "a control character"),
            Hostile(ua.Variant("J" * 70_000, V.String), refuse, "String of 70000"),
            Hostile(ua.Variant("", V.String)),
            Hostile(ua.Variant(None, V.Null)),
        ]
        if first_text:
            values.append(Hostile(ua.Variant("J" * HUGE, V.String), refuse, "String of 1 MB"))
        return values
    if slot.vtype in (V.UInt32, V.Int32, V.UInt16, V.Int16, V.Int64, V.UInt64, V.Byte, V.SByte):
        values += [
            Hostile(ua.Variant([1, 2], slot.vtype), "an array for a scalar"),
            Hostile(ua.Variant("1", V.String), "a String for a number"),
            Hostile(ua.Variant(-1, V.Int32), "-1" if slot.vtype.name.startswith("U") else None),
            Hostile(ua.Variant(0, slot.vtype)),
            Hostile(ua.Variant(MAX_NUMBER_ANY + 1, V.Int32), refuse, "Int32 1000001"),
            Hostile(ua.Variant(2**31, V.UInt32), refuse, "UInt32 2**31"),
            Hostile(ua.Variant(2**32 - 1, V.UInt32), refuse, "UInt32 2**32-1"),
            Hostile(ua.Variant(2**32, V.Int64), refuse, "Int64 2**32"),
            Hostile(ua.Variant(-(2**63), V.Int64), refuse, "Int64 -2**63"),
            Hostile(ua.Variant(2.5, V.Double), "a Double for an integer"),
        ]
        return values
    if slot.vtype in (V.Double, V.Float):
        values += [
            Hostile(ua.Variant(float("nan"), V.Double), "NaN"),
            Hostile(ua.Variant(float("inf"), V.Double), "inf"),
            Hostile(ua.Variant(float("-inf"), V.Float), "-inf"),
            Hostile(ua.Variant(1e308, V.Double)),
            Hostile(ua.Variant([1.0], V.Double), "an array for a scalar"),
            Hostile(ua.Variant("1.0", V.String), "a String for a number"),
        ]
        return values
    if slot.vtype is V.DateTime:
        from tests.integration.hostile_values import EDGE_DATETIMES

        values += [Hostile(ua.Variant(when, V.DateTime)) for when in EDGE_DATETIMES]
        values += [
            Hostile(ua.Variant("2026-12-04T12:00:00Z", V.String), "a String for a DateTime"),
            Hostile(ua.Variant(0, V.Int64), "an Int64 for a DateTime"),
        ]
    return values


def sweep_calls(cell: Cell) -> list[tuple[MethodNode, Arguments, ua.NodeId | None]]:
    """Each kind of method once, with each hostile family in each of its inputs; too few and too many
    arguments; and each method called on other objects (another station, another folder, the cell)."""
    counter = [0]
    seen: set[str] = set()
    calls: list[tuple[MethodNode, Arguments, ua.NodeId | None]] = []
    # A station's methods are swept at the load station where P1 stands (a load reaches the cell's rules).
    for method in sorted(cell.methods, key=lambda m: "/L1/" not in m.path):
        if method.kind in seen:
            continue
        seen.add(method.kind)

        def base() -> list[Hostile]:
            return [_base(slot, i, counter) for i, slot in enumerate(method.slots)]  # noqa: B023

        calls.append(
            (method, Arguments((), "no arguments" if any(not s.optional for s in method.slots) else None), None)
        )
        extra = Hostile(ua.Variant("extra", V.String))
        calls.append((method, Arguments((*base(), extra), "one argument too many"), None))
        first_text = next((i for i, s in enumerate(method.slots) if s.vtype is V.String and not s.array and i), None)
        for index, slot in enumerate(method.slots):
            for value in _families(slot, index == first_text):
                values = base()
                values[index] = value
                why = value.must_refuse and f"{slot.name}: {value.must_refuse}"
                if value.variant.VariantType is V.String and isinstance(value.variant.Value, str):
                    why = why or (
                        text_problem(value.variant.Value) and f"{slot.name}: {text_problem(value.variant.Value)}"
                    )
                calls.append((method, Arguments(tuple(values), why or None), None))
        others = [o for o in cell.objects if o != method.object_id]
        siblings = [m.object_id for m in cell.methods if m.name == method.name and m.object_id != method.object_id]
        for other in [*siblings[:1], *others[:2], ua.NodeId("Cell/Nowhere", method.object_id.NamespaceIndex)]:
            calls.append((method, Arguments(tuple(base()), None), other))
    return calls


async def test_every_kind_of_method_refuses_every_hostile_family_in_every_argument(cell: Cell) -> None:
    """Deterministic: each family in each input of each kind of method, so none is left to chance; all
    findings are listed at once."""
    problems: list[str] = []
    calls = sweep_calls(cell)
    for number, (method, arguments, object_id) in enumerate(calls, 1):
        problems += await hostile_call(cell, method, arguments, object_id)
        if number % 50 == 0:
            await cell.healthy_plc_is_served()
    await cell.healthy_plc_is_served()
    assert len({m.kind for m in cell.methods}) >= 24, "the browse found fewer kinds of method than the contract has"
    assert not problems, report(problems)


async def test_every_writable_tag_refuses_every_hostile_family(cell: Cell) -> None:
    problems: list[str] = []
    writable = [v for v in cell.variables if v.writable]
    assert writable, "the browse found no writable tag"
    for variable in writable:
        slot = Slot(variable.path, variable.vtype, variable.array, optional=False)
        for value in _families(slot, first_text=variable is writable[0]):
            if value.variant.VariantType is V.String and isinstance(value.variant.Value, str) and not value.must_refuse:
                why = text_problem(value.variant.Value)
                value = Hostile(value.variant, why, value.label)
            if value.variant.VariantType is V.Null:
                continue  # Null is "no pallet" / "no program": a PLC may write it
            problems += await hostile_write(cell, variable, value, ua.AttributeIds.Value)
    await cell.healthy_plc_is_served()
    assert not problems, report(problems)


def test_the_value_families_are_what_they_claim() -> None:
    """The oracle itself: texts that no gateway may take are recognised, plausible ones are not."""
    assert text_problem("P1") is None
    assert text_problem("J1\x00") == "a NUL character"
    assert text_problem("J1" + INVALID_UTF8[0]) == "invalid UTF-8"
    assert text_problem("J1\x1b") == "a control character"
    assert text_problem("J" * (HUGE)) is not None
    assert Slot.of(ua.Argument(Name="Serials", DataType=ua.NodeId(V.String.value), ValueRank=1)).array
