"""Checking method arguments: asyncua does not check them against the declared InputArguments.

Each method declares its inputs as :class:`Arg` values; :func:`parse` checks count, types and values and
returns either the Python values or a :class:`Malformed` with per-argument results for the caller.
Lengths, characters, array sizes and quantities are checked against ``gateway/limits.py``: an argument
over a limit is answered BadInvalidArgument (text) or BadOutOfRange (a number or a list too large).
Trailing arguments declared ``optional`` may be left out of a call (generic tools such as asyncua's
``uacall`` cannot send a DateTime): a left-out argument takes its ``default``, as a Null variant does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from asyncua import ua

from gateway import limits
from gateway.limits import TextRule

V = ua.VariantType
_INTEGERS = {V.SByte, V.Byte, V.Int16, V.UInt16, V.Int32, V.UInt32, V.Int64, V.UInt64}
_RANGES = {V.UInt32: (0, 2**32 - 1), V.Int32: (-(2**31), 2**31 - 1)}
# DateTime.MinValue and anything before 1601-01-02 mean "no time given": the gateway uses receipt time.
_NO_TIME = datetime(1601, 1, 2, tzinfo=UTC)


class Kind(Enum):
    TEXT = "String"
    ID = "String (not empty)"
    UINT32 = "UInt32"
    INT32 = "Int32"
    DOUBLE = "Double"
    TIME = "DateTime"
    TEXTS = "String[]"
    WORD = "String (one of a list)"


@dataclass(frozen=True, slots=True)
class Arg:
    name: str
    kind: Kind
    description: str = ""
    words: tuple[str, ...] = ()  # for Kind.WORD: accepted words, matched case-insensitively
    optional: bool = False  # may be left out when every argument after it is left out too
    default: Any = None  # the value of a left-out optional argument
    rule: TextRule | None = None  # text kinds (each entry of TEXTS): length and characters; None = the kind's default
    maximum: int | None = None  # UINT32/INT32: the largest value taken (below the type's own range)
    max_items: int = limits.MAX_LIST_LENGTH  # TEXTS: the most entries taken in one call

    @property
    def text_rule(self) -> TextRule:
        if self.rule is not None:
            return self.rule
        return limits.TEXT if self.kind is Kind.TEXT else limits.ID

    @property
    def variant_type(self) -> ua.VariantType:
        return {
            Kind.UINT32: V.UInt32,
            Kind.INT32: V.Int32,
            Kind.DOUBLE: V.Double,
            Kind.TIME: V.DateTime,
        }.get(self.kind, V.String)

    @property
    def is_array(self) -> bool:
        return self.kind is Kind.TEXTS


@dataclass(frozen=True, slots=True)
class Malformed:
    status: ua.StatusCode
    input_results: list[ua.StatusCode]
    message: str

    def result(self) -> ua.CallMethodResult:
        return ua.CallMethodResult(StatusCode=self.status, InputArgumentResults=self.input_results)


def parse(variants: Sequence[Any], spec: Sequence[Arg]) -> list[Any] | Malformed:
    if len(variants) < len(spec):
        left_out = spec[len(variants) :]
        missing = ", ".join(a.name for a in left_out if not a.optional)
        if missing:
            return Malformed(ua.StatusCode(ua.StatusCodes.BadArgumentsMissing), [], f"missing argument(s): {missing}")
        given = parse(variants, spec[: len(variants)])
        return given if isinstance(given, Malformed) else [*given, *(a.default for a in left_out)]
    if len(variants) > len(spec):
        return Malformed(
            ua.StatusCode(ua.StatusCodes.BadTooManyArguments),
            [],
            f"{len(variants)} arguments given, {len(spec)} expected ({', '.join(a.name for a in spec)})",
        )
    values: list[Any] = []
    results: list[ua.StatusCode] = []
    problems: list[str] = []
    type_mismatch = False
    for variant, arg in zip(variants, spec, strict=True):
        code, value, problem = _one(variant, arg)
        results.append(ua.StatusCode(code))
        values.append(value)
        if problem:
            problems.append(f"{arg.name}: {problem}")
            type_mismatch |= code == ua.StatusCodes.BadTypeMismatch
    if problems:
        if type_mismatch:
            overall = ua.StatusCodes.BadTypeMismatch
        elif all(r.value in (_GOOD, _OUT_OF_RANGE) for r in results):
            overall = ua.StatusCodes.BadOutOfRange  # every problem is a number or a list above its limit
        else:
            overall = ua.StatusCodes.BadInvalidArgument
        return Malformed(ua.StatusCode(overall), results, "; ".join(problems))
    return values


# Looked up once: enum attribute access on a class is slow enough to show in a profile of the hot path.
_GOOD = ua.StatusCodes.Good
_MISMATCH = ua.StatusCodes.BadTypeMismatch
_INVALID = ua.StatusCodes.BadInvalidArgument
_OUT_OF_RANGE = ua.StatusCodes.BadOutOfRange
_TEXT_KINDS = frozenset({Kind.TEXT, Kind.ID, Kind.WORD})


def _one(variant: Any, arg: Arg) -> tuple[int, Any, str]:
    good, mismatch = _GOOD, _MISMATCH
    vtype = getattr(variant, "VariantType", None)
    value = getattr(variant, "Value", variant)
    kind = arg.kind
    if kind in _TEXT_KINDS:
        if vtype is V.Null and kind is Kind.TEXT:
            return good, "", ""
        if vtype is not V.String or not isinstance(value, str | None) or getattr(variant, "is_array", False):
            return mismatch, None, f"expected {kind.value}, got {_describe(variant)}"
        text = (value or "").strip()
        if kind is Kind.ID and not text:
            return _INVALID, None, "must not be empty"
        if kind is Kind.WORD:
            word = text.casefold()
            if word not in arg.words:
                return _INVALID, None, f"{_shown(value or '')} is not one of {', '.join(arg.words)}"
            return good, word, ""
        problem = arg.text_rule.problem(text)
        if problem:
            return _INVALID, None, problem
        return good, text, ""
    if kind in (Kind.UINT32, Kind.INT32):
        if vtype not in _INTEGERS or isinstance(value, bool | list):
            return mismatch, None, f"expected {kind.value}, got {_describe(variant)}"
        low, high = _RANGES[arg.variant_type]
        if arg.maximum is not None:
            low, high = max(low, -arg.maximum), min(high, arg.maximum)
        if not low <= int(value) <= high:
            return _OUT_OF_RANGE, None, f"{value} is outside {low}..{high}"
        return good, int(value), ""
    if kind is Kind.DOUBLE:
        if vtype not in (_INTEGERS | {V.Float, V.Double}) or isinstance(value, bool | list):
            return mismatch, None, f"expected Double, got {_describe(variant)}"
        number = float(value)
        if number != number or number in (float("inf"), float("-inf")):
            return ua.StatusCodes.BadOutOfRange, None, "must be a finite number"
        return good, number, ""
    if kind is Kind.TIME:
        if vtype is V.Null or value is None:
            return good, None, ""
        if vtype is not V.DateTime or not isinstance(value, datetime):
            return mismatch, None, f"expected DateTime, got {_describe(variant)}"
        when = value if value.tzinfo else value.replace(tzinfo=UTC)
        return good, (None if when < _NO_TIME else when.astimezone(UTC)), ""
    # Kind.TEXTS
    if vtype is V.Null or value is None:
        return good, (), ""
    if (
        vtype is not V.String
        or not isinstance(value, list)
        or len(getattr(variant, "Dimensions", None) or ()) > 1  # a matrix (String[][]), not a list
        or not all(isinstance(v, str | None) for v in value)
    ):
        return mismatch, None, f"expected String[], got {_describe(variant)}"
    too_many = limits.count_problem("entries", len(value), arg.max_items)
    if too_many:
        return _OUT_OF_RANGE, None, too_many
    items = tuple((v or "").strip() for v in value)
    if any(not item for item in items):
        return _INVALID, None, "contains an empty entry"
    rule = arg.text_rule
    for index, item in enumerate(items):
        problem = rule.problem(item)
        if problem:
            return _INVALID, None, f"entry {index + 1}: {problem}"
    return good, items, ""


def _shown(text: str) -> str:
    """A client's text in a reason: quoted, and cut short when long (the reason is logged)."""
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _describe(variant: Any) -> str:
    vtype = getattr(variant, "VariantType", None)
    name = vtype.name if vtype is not None else type(variant).__name__
    dimensions = len(getattr(variant, "Dimensions", None) or ())
    value = getattr(variant, "Value", None)
    if dimensions > 1 or (isinstance(value, list) and any(isinstance(v, list) for v in value)):
        return f"{name}[][]"
    return f"{name}[]" if getattr(variant, "is_array", False) or isinstance(value, list) else name


def argument_descriptions(spec: Sequence[Arg]) -> list[ua.Argument]:
    """The InputArguments/OutputArguments property of a method, for browsing clients."""
    out = []
    for arg in spec:
        argument = ua.Argument()
        argument.Name = arg.name
        argument.DataType = ua.NodeId(arg.variant_type.value)
        argument.ValueRank = 1 if arg.is_array else -1
        argument.ArrayDimensions = [0] if arg.is_array else []
        description = arg.description or arg.kind.value
        argument.Description = ua.LocalizedText(f"{description} (optional)" if arg.optional else description)
        out.append(argument)
    return out
