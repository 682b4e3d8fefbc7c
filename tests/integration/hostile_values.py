"""Hostile OPC UA values for the hostile-input suite: Hypothesis strategies, one ``@st.composite`` per family.

Each strategy draws a :class:`Hostile` value: the variant to send and, when a correct gateway must refuse
it whatever the cell's state, why (``must_refuse``). The families follow what an attacker or a broken PLC
sends: wrong variant types, arrays for scalars and scalars for arrays, matrices (String[][]), empty and
very long strings, unicode with NUL, control characters and invalid UTF-8, numbers at and beyond the
limits, DateTime extremes. Arguments are drawn from a method's declared ``InputArguments`` (their
DataType and ValueRank), so a new method gets hostile arguments without a change here.

Invalid UTF-8 on the wire: asyncua encodes strings with ``surrogateescape``, so a ``str`` holding
U+DC80..U+DCFF goes out as the raw bytes 0x80..0xFF (a lone continuation byte, ``\\xff``, an encoded
surrogate ``ED A0 80``), and the server decodes them back to those lone surrogates.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from asyncua import ua
from hypothesis import strategies as st

V = ua.VariantType

#: No id, reason or program of any length above this is ever taken (gateway/limits.py allows at most
#: 500 characters of free text); anything longer must be refused, never stored.
MAX_TEXT_ANY = 4096
#: No count, quantity or priority above this is ever taken (the largest limit, a job's quantity).
MAX_NUMBER_ANY = 1_000_000
#: No list of more entries than this is taken in one call.
MAX_LIST_ANY = 1000
#: A string of about 1 MB, sent in a few examples only.
HUGE = 1_000_000

#: Ids that exist in the cell the suite prepares (see the test module), so a well-typed call can reach
#: the domain and not stop at "not found"; and words the methods take.
PLAUSIBLE_TEXTS = (
    "P1",
    "P2",
    "P8",
    "J1",
    "PN-1",
    "A",
    "L1",
    "M1",
    "T-1",
    "ok",
    "fail",
    "pass",
    "interrupted",
    "found",
    "lost",
    "PRG-MILL-100",
    "OP10",
    "dropped",
)

_INTEGER_RANGES = {
    V.SByte: (-(2**7), 2**7 - 1),
    V.Byte: (0, 2**8 - 1),
    V.Int16: (-(2**15), 2**15 - 1),
    V.UInt16: (0, 2**16 - 1),
    V.Int32: (-(2**31), 2**31 - 1),
    V.UInt32: (0, 2**32 - 1),
    V.Int64: (-(2**63), 2**63 - 1),
    V.UInt64: (0, 2**64 - 1),
}
#: Integers at and beyond every limit a 32-bit argument has.
EDGE_INTEGERS = (
    0,
    1,
    -1,
    2,
    3,
    1000,
    1001,
    MAX_NUMBER_ANY,
    MAX_NUMBER_ANY + 1,
    100_000,
    2**31 - 1,
    2**31,
    -(2**31),
    -(2**31) - 1,
    2**32 - 1,
    2**32,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
)
EDGE_FLOATS = (
    0.0,
    -0.0,
    -1.0,
    100.0,
    100.000001,
    1e308,
    -1e308,
    5e-324,
    float("nan"),
    float("inf"),
    float("-inf"),
)
EDGE_DATETIMES = (
    datetime(1, 1, 1),  # DateTime.MinValue
    datetime(1601, 1, 1, tzinfo=UTC),  # the OPC UA epoch: "no time"
    datetime(1601, 1, 2, tzinfo=UTC),
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(2026, 12, 4, 12, 0, tzinfo=UTC),
    datetime(2026, 12, 4, 12, 0),  # naive
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),  # DateTime.MaxValue
)
#: Strings that are ids of other nodes, paths, format strings, injections.
NASTY_IDS = (
    "/",
    "..",
    "Cell/Jobs/CreateJob",
    "CreateJob",
    "Release",
    "ns=2;s=Cell",
    "#deadbeef",
    "J1/../L1",
    "{cell}{seq}",
    "%s%s%n",
    "'; DROP TABLE jobs; --",
    "<script>alert(1)</script>",
    "J1 ",
    " J1",
)
_CONTROL = "".join(chr(c) for c in (*range(0x01, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F))
#: Invalid UTF-8 as asyncua sends it: each U+DCxx goes out as the byte xx.
INVALID_UTF8 = (
    "\udcff",  # 0xFF: never valid in UTF-8
    "\udc80",  # a lone continuation byte
    "\udced\udca0\udc80",  # ED A0 80: an encoded surrogate (U+D800)
    "\udcc0\udcaf",  # C0 AF: an overlong "/"
    "\udce2\udc82",  # E2 82: a truncated sequence
)


@dataclass(frozen=True, slots=True)
class Hostile:
    """A value to send; ``must_refuse`` says why a correct gateway refuses it in any state (or None)."""

    variant: ua.Variant
    must_refuse: str | None = None
    label: str = ""

    def __repr__(self) -> str:  # short, for Hypothesis' falsifying examples
        return f"Hostile({self.label or _short(self.variant)}, must_refuse={self.must_refuse!r})"


def _short(variant: ua.Variant) -> str:
    value = variant.Value
    text = repr(value)
    if len(text) > 120:
        size = len(value) if isinstance(value, str | bytes | list) else "?"
        text = f"{text[:60]}...<{size} long>"
    shape = f"{variant.Dimensions}" if variant.Dimensions else ("[]" if variant.is_array else "")
    return f"{variant.VariantType.name}{shape} {text}"


def text_problem(value: str) -> str | None:
    """Why no text argument may ever hold ``value`` (None when it might be fine)."""
    if len(value) > MAX_TEXT_ANY:
        return f"{len(value)} characters"
    if "\x00" in value:
        return "a NUL character"
    if any("\ud800" <= c <= "\udfff" for c in value):
        return "invalid UTF-8"
    if any(c in _CONTROL for c in value):
        return "a control character"
    return None


# --------------------------------------------------------------------------------------- texts
@st.composite
def hostile_texts(draw: st.DrawFn) -> str:
    """A string for a String argument or tag: empty, odd unicode, NUL, control characters, invalid
    UTF-8, node paths and injections, long (past every limit) and, rarely, about 1 MB."""
    family = draw(st.integers(0, 9))
    if family == 0:
        return draw(st.sampled_from(("", " ", "\t", "\n", "\u00a0", "\u200b", "\ufeff")))
    if family == 1:
        return draw(st.text(min_size=1, max_size=12))  # any unicode but surrogates: RTL, combining, emoji
    if family == 2:
        return draw(st.sampled_from(PLAUSIBLE_TEXTS)) + "\x00" + draw(st.text(max_size=4))
    if family == 3:
        return draw(st.sampled_from(PLAUSIBLE_TEXTS)) + draw(st.sampled_from(INVALID_UTF8))
    if family == 4:
        return draw(st.sampled_from(PLAUSIBLE_TEXTS)) + draw(st.sampled_from(_CONTROL))
    if family == 5:
        return draw(st.sampled_from(NASTY_IDS))
    if family == 6:
        return draw(st.sampled_from(("J", "x", "\u00e9", "\U0001f600"))) * draw(st.sampled_from((63, 64, 65, 129, 501)))
    if family == 7:
        return "S" * draw(st.sampled_from((MAX_TEXT_ANY + 1, 70_000)))
    if family == 8 and draw(st.integers(0, 9)) == 9:
        return draw(st.sampled_from(("J", "\u00e9"))) * HUGE  # rare: about 1 MB (2 MB of UTF-8 for e-acute)
    return draw(st.sampled_from(PLAUSIBLE_TEXTS))


@st.composite
def fresh_ids(draw: st.DrawFn) -> str:
    """A well-formed id nobody used yet (EventIds), so a call is not answered as a retry."""
    return f"hx-{uuid.UUID(int=draw(st.integers(0, 2**64)))}"


# ------------------------------------------------------------------------------------ variants
def _text_variant(text: str) -> Hostile:
    return Hostile(ua.Variant(text, V.String), text_problem(text))


@st.composite
def integer_variants(draw: st.DrawFn, declared: ua.VariantType | None = None) -> Hostile:
    """An integer at or beyond a limit, in the declared type when it fits, else in any integer type."""
    value = draw(st.sampled_from(EDGE_INTEGERS))
    fitting = [t for t, (low, high) in _INTEGER_RANGES.items() if low <= value <= high]
    vtype = declared if declared in fitting else draw(st.sampled_from(fitting))
    problem = None
    if declared in _INTEGER_RANGES:
        low, high = _INTEGER_RANGES[declared]
        if not low <= value <= high:
            problem = f"{value} is outside {declared.name}"
    if abs(value) > MAX_NUMBER_ANY:
        problem = f"{value} is above every limit"
    return Hostile(ua.Variant(value, vtype), problem)


@st.composite
def float_variants(draw: st.DrawFn) -> Hostile:
    value = draw(st.sampled_from(EDGE_FLOATS))
    vtype = draw(st.sampled_from((V.Double, V.Float)))
    if vtype is V.Float and value == value and abs(value) not in (0.0, float("inf")) and not 1e-30 < abs(value) < 1e30:
        vtype = V.Double  # not representable as a Float
    problem = None if value - value == 0 else f"{value} is not a finite number"
    return Hostile(ua.Variant(value, vtype), problem)


@st.composite
def datetime_variants(draw: st.DrawFn) -> Hostile:
    if draw(st.booleans()):
        return Hostile(ua.Variant(None, V.Null))  # "no time given" (asyncua cannot send a Null DateTime)
    return Hostile(ua.Variant(draw(st.sampled_from(EDGE_DATETIMES)), V.DateTime))


@st.composite
def wrong_type_variants(draw: st.DrawFn) -> Hostile:
    """A scalar of some built-in type (the declared type is excluded by the caller)."""
    vtype = draw(
        st.sampled_from(
            (
                V.Boolean,
                V.SByte,
                V.Byte,
                V.Int16,
                V.UInt16,
                V.Int32,
                V.UInt32,
                V.Int64,
                V.UInt64,
                V.Float,
                V.Double,
                V.String,
                V.DateTime,
                V.Guid,
                V.ByteString,
                V.NodeId,
                V.StatusCode,
                V.QualifiedName,
                V.LocalizedText,
            )
        )
    )
    value: Any
    if vtype is V.Boolean:
        value = draw(st.booleans())
    elif vtype in _INTEGER_RANGES:
        low, high = _INTEGER_RANGES[vtype]
        value = draw(st.sampled_from([v for v in EDGE_INTEGERS if low <= v <= high]))
    elif vtype in (V.Float, V.Double):
        value = draw(st.sampled_from((0.0, 1.0, float("nan"))))
    elif vtype is V.String:
        value = draw(hostile_texts())
    elif vtype is V.DateTime:
        value = draw(st.sampled_from(EDGE_DATETIMES))
    elif vtype is V.Guid:
        value = uuid.UUID(int=draw(st.integers(0, 2**128 - 1)))
    elif vtype is V.ByteString:
        value = draw(st.sampled_from((b"", b"P1", b"\xff\xfe\x00", b"\x00" * 64, "J1".encode("utf-16"))))
    elif vtype is V.NodeId:
        value = ua.NodeId(draw(st.sampled_from(("Cell/Stations/L1", "Cell/Jobs", "J1"))), draw(st.integers(0, 3)))
    elif vtype is V.StatusCode:
        value = ua.StatusCode(draw(st.sampled_from((0, 0x80020000, 0x80000000))))
    elif vtype is V.QualifiedName:
        value = ua.QualifiedName(draw(st.sampled_from(PLAUSIBLE_TEXTS)), draw(st.integers(0, 3)))
    else:
        value = ua.LocalizedText(draw(st.sampled_from(PLAUSIBLE_TEXTS)), draw(st.sampled_from((None, "en", "\x00"))))
    return Hostile(ua.Variant(value, vtype))


@st.composite
def string_arrays(draw: st.DrawFn, *, plausible: bool = False) -> Hostile:
    """A String[]: empty, Null, hostile entries, entries repeated past every list limit."""
    if plausible:
        items = draw(st.lists(st.sampled_from(("T-1", "T-2", "T-3", "OP10", "OP20", "P1")), max_size=3, unique=True))
        return Hostile(ua.Variant(items, V.String, is_array=True))
    family = draw(st.integers(0, 3))
    if family == 0:
        return Hostile(ua.Variant(None, V.String, is_array=True))  # a Null array
    if family == 1:
        count = draw(st.sampled_from((MAX_LIST_ANY + 1, 5000)))
        return Hostile(
            ua.Variant(["T-1"] * count, V.String, is_array=True), f"{count} entries", label=f"String[{count}]"
        )
    items = draw(st.lists(hostile_texts(), max_size=4))
    problems = [p for p in map(text_problem, items) if p]
    return Hostile(ua.Variant(items, V.String, is_array=True), problems[0] if problems else None)


@st.composite
def matrices(draw: st.DrawFn, element: ua.VariantType = V.String) -> Hostile:
    """A two- or three-dimensional array (String[][] and the like), with Dimensions."""
    rows, cols = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sample: Any = draw(st.sampled_from(("T-1", "P1", "J1", ""))) if element is V.String else 1
    if element not in (V.String, *_INTEGER_RANGES, V.Boolean):
        element, sample = V.String, "T-1"
    if element is V.Boolean:
        sample = True
    value: Any = [[sample] * cols for _ in range(rows)]
    if draw(st.booleans()):
        value = [value]
    return Hostile(ua.Variant(value, element), "a matrix where a scalar or a one-dimensional array is declared")


@st.composite
def arrays_of(draw: st.DrawFn, element: ua.VariantType) -> Hostile:
    """A one-dimensional array of a scalar argument's type (an array where a scalar is declared)."""
    sample = draw(plausible_scalars(element)).variant.Value
    if sample is None:  # a Null scalar has no array of its kind: a time, or text
        sample, element = (datetime(2026, 12, 4, tzinfo=UTC), element) if element is V.DateTime else ("T-1", V.String)
    count = draw(st.integers(0, 3))
    return Hostile(ua.Variant([sample] * count, element, is_array=True), "an array where a scalar is declared")


@st.composite
def plausible_scalars(draw: st.DrawFn, vtype: ua.VariantType) -> Hostile:
    """A well-formed value of the declared type that names things the cell has (it may still be refused
    by the cell's rules, as any report may)."""
    if vtype is V.String:
        return Hostile(ua.Variant(draw(st.one_of(st.sampled_from(PLAUSIBLE_TEXTS), fresh_ids())), V.String))
    if vtype in (V.UInt32, V.UInt16, V.Byte, V.UInt64):
        return Hostile(ua.Variant(draw(st.integers(0, 4)), vtype))
    if vtype in _INTEGER_RANGES:
        return Hostile(ua.Variant(draw(st.integers(-2, 4)), vtype))
    if vtype in (V.Double, V.Float):
        return Hostile(ua.Variant(float(draw(st.integers(-1, 10))), vtype))
    if vtype is V.DateTime:
        if draw(st.booleans()):
            return Hostile(ua.Variant(None, V.Null))
        return Hostile(
            ua.Variant(datetime(2026, 12, 4, tzinfo=UTC) + timedelta(seconds=draw(st.integers(0, 60))), V.DateTime)
        )
    if vtype is V.Boolean:
        return Hostile(ua.Variant(draw(st.booleans()), V.Boolean))
    return Hostile(ua.Variant(None, V.Null))


#: Variant types a scalar slot may take besides its own: any integer for an integer, any number for a
#: Double (a PLC sends what its language has); a wrong type outside these must be refused.
_NUMBERS = {*_INTEGER_RANGES, V.Float, V.Double}
_COMPATIBLE: dict[ua.VariantType, set[ua.VariantType]] = {
    **{t: set(_INTEGER_RANGES) for t in _INTEGER_RANGES},
    V.Double: _NUMBERS,
    V.Float: _NUMBERS,
}


def declared_type(argument: ua.Argument) -> ua.VariantType:
    """The built-in type an Argument (or a variable's DataType) declares; Null when it is not built-in."""
    data_type = argument.DataType
    if data_type.NamespaceIndex == 0 and isinstance(data_type.Identifier, int) and 0 < data_type.Identifier <= 25:
        return V(data_type.Identifier)
    return V.Null


@st.composite
def values_for(draw: st.DrawFn, vtype: ua.VariantType, array: bool, *, plausible_weight: int = 3) -> Hostile:
    """A value for a slot declared ``vtype`` (array or scalar): plausible, or hostile in one of the families."""
    family = draw(st.integers(0, 6 + plausible_weight))
    if family >= 7:  # plausible: lets a call reach the domain with hostile values elsewhere
        return draw(string_arrays(plausible=True)) if array else draw(plausible_scalars(vtype))
    if family == 0:  # another type
        hostile = draw(wrong_type_variants())
        if not array and hostile.variant.VariantType in _COMPATIBLE.get(vtype, {vtype}):
            return draw(plausible_scalars(vtype))
        if array:
            return Hostile(hostile.variant, "a scalar where an array is declared")
        return Hostile(hostile.variant, f"{hostile.variant.VariantType.name} where {vtype.name} is declared")
    if family == 1:  # the wrong shape: an array for a scalar, a scalar for an array
        if array:
            return Hostile(draw(plausible_scalars(vtype)).variant, "a scalar where an array is declared")
        return draw(arrays_of(vtype))
    if family == 2:
        return draw(matrices(vtype))
    if family == 3:  # Null
        return Hostile(ua.Variant(None, V.Null))
    # hostile contents of the right type
    if array:
        return draw(string_arrays())
    if vtype is V.String:
        return _text_variant(draw(hostile_texts()))
    if vtype in _INTEGER_RANGES:
        return draw(integer_variants(vtype))
    if vtype in (V.Double, V.Float):
        return draw(float_variants())
    if vtype is V.DateTime:
        return draw(datetime_variants())
    return draw(wrong_type_variants())


@dataclass(frozen=True, slots=True)
class Slot:
    """One declared input of a method (from its InputArguments property)."""

    name: str
    vtype: ua.VariantType
    array: bool
    optional: bool

    @classmethod
    def of(cls, argument: ua.Argument) -> Slot:
        description = argument.Description.Text or "" if argument.Description else ""
        return cls(argument.Name, declared_type(argument), argument.ValueRank >= 0, description.endswith("(optional)"))


@dataclass(frozen=True, slots=True)
class Arguments:
    """The arguments of one call and why a correct gateway must refuse them (None: it may accept)."""

    values: tuple[Hostile, ...]
    must_refuse: str | None

    @property
    def variants(self) -> list[ua.Variant]:
        return [v.variant for v in self.values]


@st.composite
def argument_lists(draw: st.DrawFn, slots: tuple[Slot, ...]) -> Arguments:
    """Arguments for a method: one per declared input, each plausible or hostile; sometimes too few or
    too many; the first String input is often a fresh id (an EventId nobody used)."""
    values: list[Hostile] = []
    for index, slot in enumerate(slots):
        if index == 0 and slot.vtype is V.String and not slot.array and draw(st.booleans()):
            values.append(Hostile(ua.Variant(draw(fresh_ids()), V.String)))
        else:
            values.append(draw(values_for(slot.vtype, slot.array)))
    reasons = [f"{slot.name}: {v.must_refuse}" for slot, v in zip(slots, values, strict=True) if v.must_refuse]
    count = draw(st.integers(0, 9))
    if count == 0 and slots:  # too few
        keep = draw(st.integers(0, len(slots) - 1))
        values = values[:keep]
        missing = [s.name for s in slots[keep:] if not s.optional]
        reasons = [r for r in reasons if r.split(":")[0] in {s.name for s in slots[:keep]}]
        if missing:
            reasons.append(f"missing {', '.join(missing)}")
    elif count == 1:  # too many
        values.append(draw(st.one_of(plausible_scalars(V.String), wrong_type_variants())))
        reasons.append(f"{len(values)} arguments for {len(slots)}")
    return Arguments(tuple(values), "; ".join(reasons) or None)
