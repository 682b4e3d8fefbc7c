"""The OPC UA contract of docs/opcua.md as tables: each method's arguments, who may call it, and the
command a call becomes; a station's writable tags.

A method's arguments are declared once, in order, as :class:`Arg` values. A call's values reach the
command by NAME, never by position: an argument fills the command's field of its name in snake_case
(``EventId`` -> ``event_id``; :data:`FIELD_NAMES` lists the few that differ), the way asyncua's own
``uamethod`` maps arguments onto parameters. Every table is checked against the command classes when
this module is imported (each argument names a field, every required field is filled, none twice), so
an argument list out of step with its command cannot start. Checks across arguments that only a
method can make (a load's serials against its quantity) are small functions over the named values and
answer a :class:`Refusal`, a value, never a text to parse.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from asyncua import ua

from gateway import limits
from gateway.cell.commands import Command
from gateway.jobs.commands import (
    ApproveTemplate,
    CloseJob,
    CreateJob,
    CreateTemplate,
    DeprecateTemplate,
    HoldJob,
    MergeJobs,
    PromoteRouting,
    ReleaseJob,
    ResolveAudit,
    ResumeJob,
    SetDefaultTemplate,
    SplitJob,
)
from gateway.opcua.arguments import Arg, Kind
from gateway.tracking.reports import (
    CELL_SOURCE,
    CycleEnded,
    CycleResult,
    CycleStarted,
    LoadCompleted,
    PalletArrived,
    PalletDeparted,
    Report,
    ScanIn,
    ScanOut,
    ScanResult,
    Scrap,
    StartUnit,
)

# A station's writable tags (contract: Tags).
TAG_TYPES = {
    "PalletPresent": ua.VariantType.String,
    "CycleActive": ua.VariantType.Boolean,
    "Program": ua.VariantType.String,
}
EVENT_ID = Arg("EventId", Kind.ID, "unique per station, e.g. the PLC's own counter", rule=limits.EVENT_ID)
SOURCE_TIME = Arg(
    "SourceTime", Kind.TIME, "when it happened by the PLC's clock; Null or left out = time of receipt", optional=True
)
PALLET = Arg("Pallet", Kind.ID, "pallet id, e.g. P3", rule=limits.PALLET)
SERIAL = Arg("Serial", Kind.ID, "unit serial", rule=limits.SERIAL)
JOB_ID = Arg("JobId", Kind.ID, "job id", rule=limits.JOB_ID)
REASON = Arg("Reason", Kind.ID, rule=limits.REASON)
PROGRAM = limits.PROGRAM

STATION_ROLES = ("plc", "operator", "engineer")
JOB_ROLES = ("engineer", "erp")
PART_ROLES = ("engineer",)
READ_ROLES = ("plc", "operator", "engineer", "erp")

# The arguments named in the shop's words whose command field has the domain's name; every other
# argument fills the field of its own name in snake_case.
FIELD_NAMES = {"Steps": "operations", "DueDate": "due"}


def field_name(argument: str) -> str:
    """The command field an argument fills: ``EventId`` -> ``event_id``, ``Steps`` -> ``operations``."""
    return FIELD_NAMES.get(argument) or re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", argument).lower()


@dataclass(frozen=True, slots=True)
class Refusal:
    """A call its method refuses before any command is made: the argument at fault (if one) and why.

    Answered BadInvalidArgument, with that argument's InputArgumentResult bad and the others good.
    """

    argument: str | None
    reason: str

    @property
    def message(self) -> str:
        """The refusal as logged and raised: ``Quantity: must be at least 1``."""
        return f"{self.argument}: {self.reason}" if self.argument else self.reason


# Checks across a call's arguments, over the values by argument name: a refusal, or None to go on.
Check = Callable[[Mapping[str, Any]], Refusal | None]


@dataclass(frozen=True, slots=True)
class Into:
    """The command a method's call becomes: the class, filled by argument name (see the module).

    A report's ``station`` is the station whose object the method is on, or ``cell`` for a method of
    the cell (Units.Scrap).
    """

    command: type[Command]
    convert: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)  # argument -> its value's conversion
    fixed: Mapping[str, Any] = field(default_factory=dict)  # field -> value, for fields no argument fills
    check: Check | None = None  # refusals across arguments, before the command is made


@dataclass(frozen=True, slots=True)
class Method:
    """One OPC UA method: its arguments, who may call it, and how a call becomes a command."""

    name: str
    inputs: tuple[Arg, ...]
    outputs: tuple[Arg, ...]
    roles: tuple[str, ...]
    into: Into
    station_scoped: bool = False
    # For each input, in order: the field it fills and its conversion; made from ``into`` and checked.
    _fills: tuple[tuple[str, Callable[[Any], Any] | None], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_fills", _bind(self.name, self.inputs, self.into))

    def build(self, station: str, values: Sequence[Any]) -> Command | Refusal:
        """The command of a call whose inputs parsed to ``values`` (in order), or why it is refused.

        ``station`` is the station whose object the method is on ("" for the cell's objects)."""
        into = self.into
        if into.check is not None:
            refusal = into.check({arg.name: value for arg, value in zip(self.inputs, values, strict=True)})
            if refusal is not None:
                return refusal
        fields = dict(into.fixed)
        for (name, convert), value in zip(self._fills, values, strict=True):
            fields[name] = value if convert is None else convert(value)
        if issubclass(into.command, Report):
            fields["station"] = station or CELL_SOURCE
        return into.command(**fields)


def _bind(method: str, inputs: Sequence[Arg], into: Into) -> tuple[tuple[str, Callable[[Any], Any] | None], ...]:
    """Each input's field and conversion; a TypeError (at import) when the inputs and the command's
    fields are out of step."""
    names = [arg.name for arg in inputs]
    fields = {f.name: f for f in dataclasses.fields(into.command)}
    filled = [field_name(name) for name in names] + list(into.fixed)
    if issubclass(into.command, Report):
        filled.append("station")
    problems = [f"{name} converts no argument" for name in into.convert if name not in names]
    problems += [f"{name} is not a field of {into.command.__name__}" for name in filled if name not in fields]
    problems += [f"{name} is filled twice" for name in sorted({n for n in filled if filled.count(n) > 1})]
    problems += [
        f"{name} (required) is not filled"
        for name, f in fields.items()
        if name not in filled and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if problems:
        raise TypeError(f"method {method}: {'; '.join(problems)}")
    return tuple((field_name(name), into.convert.get(name)) for name in names)


def _load_refusal(v: Mapping[str, Any]) -> Refusal | None:
    job, quantity, serials = v["Job"], v["Quantity"], v["Serials"]
    if job and quantity == 0:
        return Refusal("Quantity", "a load of a job needs a quantity of at least 1")
    if not job and (quantity or serials):
        return Refusal("Job", 'an unload-only report has Job "", Quantity 0 and no Serials')
    if serials and len(serials) != quantity:
        return Refusal("Serials", f"{len(serials)} given for a Quantity of {quantity}")
    return None


STATION_METHODS: tuple[Method, ...] = (
    Method("PalletArrived", (EVENT_ID, PALLET, SOURCE_TIME), (), STATION_ROLES, Into(PalletArrived), True),
    Method("PalletDeparted", (EVENT_ID, PALLET, SOURCE_TIME), (), STATION_ROLES, Into(PalletDeparted), True),
    Method(
        "LoadCompleted",
        (
            EVENT_ID,
            PALLET,
            Arg("Job", Kind.TEXT, 'job whose units were loaded; "" = unload only', rule=limits.JOB_ID),
            Arg("Quantity", Kind.UINT32, "number of new units loaded", maximum=limits.MAX_UNITS_PER_LOAD),
            Arg(
                "Serials",
                Kind.TEXTS,
                "serials of the loaded units; empty or left out = the gateway assigns them",
                optional=True,
                default=(),
                rule=limits.SERIAL,
                max_items=limits.MAX_UNITS_PER_LOAD,
            ),
            SOURCE_TIME,
        ),
        (Arg("Serials", Kind.TEXTS, "serials of the loaded units"),),
        STATION_ROLES,
        Into(LoadCompleted, check=_load_refusal),
        True,
    ),
    Method(
        "CycleStarted",
        (EVENT_ID, PALLET, Arg("Program", Kind.TEXT, "program the machine runs", rule=PROGRAM), SOURCE_TIME),
        (),
        STATION_ROLES,
        Into(CycleStarted),
        True,
    ),
    Method(
        "CycleEnded",
        (
            EVENT_ID,
            PALLET,
            Arg("Program", Kind.TEXT, "program that ran", rule=PROGRAM),
            Arg("Result", Kind.WORD, "ok, fail or interrupted", words=("ok", "fail", "interrupted")),
            SOURCE_TIME,
        ),
        (),
        STATION_ROLES,
        Into(CycleEnded, convert={"Result": CycleResult}),
        True,
    ),
    Method(
        "StartUnit",
        (
            EVENT_ID,
            Arg("Job", Kind.ID, "job of the new unit", rule=limits.JOB_ID),
            Arg("Serial", Kind.TEXT, '"" = gateway assigns', rule=limits.SERIAL),
            SOURCE_TIME,
        ),
        (Arg("Serial", Kind.TEXT, "serial of the new unit"),),
        STATION_ROLES,
        Into(StartUnit),
        True,
    ),
    Method("ScanIn", (EVENT_ID, SERIAL, SOURCE_TIME), (), STATION_ROLES, Into(ScanIn), True),
    Method(
        "ScanOut",
        (EVENT_ID, SERIAL, Arg("Result", Kind.WORD, "pass or fail", words=("pass", "fail")), SOURCE_TIME),
        (),
        STATION_ROLES,
        Into(ScanOut, convert={"Result": ScanResult}),
        True,
    ),
)


SERIALS = Arg("Serials", Kind.TEXTS, rule=limits.SERIAL, max_items=limits.MAX_SERIALS_PER_CALL)
STEPS_LIMITS: dict[str, Any] = {"rule": limits.OPERATION, "max_items": limits.MAX_STEPS}


def _create_job_refusal(v: Mapping[str, Any]) -> Refusal | None:
    job_id = v["JobId"]
    problem = limits.new_job_id_problem(job_id) if job_id else None
    if problem:
        return Refusal("JobId", problem)
    if v["Quantity"] < 1:
        return Refusal("Quantity", "must be at least 1")
    return None


def _buffer_or_default(buffer: float) -> float | None:
    """YieldBufferPercent: negative = the cell's default (None)."""
    return None if buffer < 0 else buffer


JOB_METHODS: tuple[Method, ...] = (
    Method(
        "CreateJob",
        (
            Arg("JobId", Kind.TEXT, '"" = generated', rule=limits.NEW_JOB_ID),
            Arg("Part", Kind.ID, "part number", rule=limits.PART),
            Arg("Revision", Kind.ID, "part revision", rule=limits.REVISION),
            Arg("Quantity", Kind.UINT32, "ordered quantity", maximum=limits.MAX_JOB_QUANTITY),
            Arg("DueDate", Kind.TIME, "due date; Null or left out = none", optional=True),
            Arg(
                "Priority",
                Kind.INT32,
                "larger = more urgent; left out = 0",
                optional=True,
                default=0,
                maximum=limits.MAX_PRIORITY,
            ),
            Arg(
                "YieldBufferPercent",
                Kind.DOUBLE,
                "extra units allowed, %; negative or left out = the cell's default",
                optional=True,
                default=-1.0,
            ),
            Arg(
                "Steps",
                Kind.TEXTS,
                "operation codes; empty or left out = default template or automatic mode",
                optional=True,
                default=(),
                rule=limits.OPERATION,
                max_items=limits.MAX_STEPS,
            ),
            Arg(
                "Pallets",
                Kind.TEXTS,
                "allowed pallets; empty or left out = any",
                optional=True,
                default=(),
                rule=limits.PALLET,
                max_items=limits.MAX_PALLETS_PER_JOB,
            ),
        ),
        (Arg("JobId", Kind.TEXT),),
        JOB_ROLES,
        Into(CreateJob, convert={"YieldBufferPercent": _buffer_or_default}, check=_create_job_refusal),
    ),
    Method("Release", (JOB_ID,), (), JOB_ROLES, Into(ReleaseJob)),
    Method("Hold", (JOB_ID, REASON), (), JOB_ROLES, Into(HoldJob)),
    Method("Resume", (JOB_ID,), (), JOB_ROLES, Into(ResumeJob)),
    Method("Close", (JOB_ID, REASON), (), JOB_ROLES, Into(CloseJob)),
    Method(
        "Split",
        (JOB_ID, SERIALS, Arg("Steps", Kind.TEXTS, "empty = the parent's remaining steps", **STEPS_LIMITS)),
        (Arg("ChildJobId", Kind.TEXT),),
        JOB_ROLES,
        Into(SplitJob),
    ),
    Method(
        "SplitQuantity",
        (
            JOB_ID,
            Arg(
                "Quantity",
                Kind.UINT32,
                "ordered units not started yet, to move to the child",
                maximum=limits.MAX_JOB_QUANTITY,
            ),
            Arg("Steps", Kind.TEXTS, "empty = the parent's routing", **STEPS_LIMITS),
        ),
        (Arg("ChildJobId", Kind.TEXT),),
        JOB_ROLES,
        Into(SplitJob, fixed={"serials": ()}),
    ),
    Method(
        "Merge",
        (Arg("TargetJobId", Kind.ID, rule=limits.JOB_ID), Arg("SourceJobId", Kind.ID, rule=limits.JOB_ID)),
        (),
        JOB_ROLES,
        Into(MergeJobs),
    ),
)

TEMPLATE_ID = Arg("TemplateId", Kind.ID, rule=limits.TEMPLATE_ID)
PART = Arg("Part", Kind.ID, rule=limits.PART)
REVISION = Arg("Revision", Kind.ID, rule=limits.REVISION)
PART_METHODS: tuple[Method, ...] = (
    Method(
        "CreateTemplate",
        (PART, REVISION, Arg("Steps", Kind.TEXTS, "operation codes", **STEPS_LIMITS)),
        (TEMPLATE_ID,),
        PART_ROLES,
        Into(CreateTemplate),
    ),
    Method("ApproveTemplate", (TEMPLATE_ID,), (), PART_ROLES, Into(ApproveTemplate)),
    Method("DeprecateTemplate", (TEMPLATE_ID,), (), PART_ROLES, Into(DeprecateTemplate)),
    Method("SetDefaultTemplate", (PART, REVISION, TEMPLATE_ID), (), PART_ROLES, Into(SetDefaultTemplate)),
    Method("PromoteRouting", (JOB_ID,), (TEMPLATE_ID,), PART_ROLES, Into(PromoteRouting)),
)

UNIT_METHODS: tuple[Method, ...] = (
    Method("Scrap", (EVENT_ID, SERIAL, REASON, SOURCE_TIME), (), ("operator", "engineer"), Into(Scrap)),
    Method(
        "ResolveAudit",
        (SERIAL, Arg("Outcome", Kind.WORD, "found or lost", words=("found", "lost"))),
        (),
        ("engineer",),
        Into(ResolveAudit),
    ),
)

# Units.Trace: a read answered from the store, not a command for the writer.
TRACE_INPUTS = (SERIAL,)
TRACE_OUTPUTS = (Arg("Json", Kind.TEXT),)
