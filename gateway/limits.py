"""The limits of every input the gateway takes, defined once.

OPC UA method arguments (``gateway/opcua/arguments.py``), tag writes (``gateway/opcua/tags.py``)
and the ERP API's bodies (``gateway/http/models.py``) all check their inputs against these numbers and
rules, so a value that one edge refuses is refused by every other one with the same words.

Each check returns a readable reason (``"longer than 64 characters"``) or ``None`` when the value is
fine; the adapters turn a reason into their own answer (BadInvalidArgument / BadOutOfRange with
per-argument results, BadTypeMismatch for a tag, HTTP 422).

The numbers are generous for real shop-floor ids (a serial from a laser marker, an ERP job number, a
CNC program path) and small enough that no single call can make the gateway store, cache or publish
megabytes, or keep the event loop busy for long.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# ------------------------------------------------------------------------------------------ lengths
#: Job ids, part numbers, revisions, template ids, operation codes, pallet ids: ERP and MES ids are
#: rarely over 30 characters; 64 leaves room for prefixes (``<JobId>-R<n>`` of a split, site codes).
MAX_ID_LENGTH = 64
#: A job id that names an existing job: split children are ``<JobId>-R<n>`` and may be split again,
#: so ids the gateway makes grow beyond what a client may choose.
MAX_JOB_ID_LENGTH = 2 * MAX_ID_LENGTH
#: Unit serials: laser-marked DataMatrix serials run to about 40 characters; 64 as for other ids.
MAX_SERIAL_LENGTH = 64
#: A report's EventId: a PLC counter, a timestamp or a GUID (36 characters) with a station prefix.
MAX_EVENT_ID_LENGTH = 64
#: Station ids come from the config file (``gateway/config/``): they are OPC UA browse names.
MAX_STATION_ID_LENGTH = 32
#: CNC program names: sometimes a path on the controller (``//CNC_MEM/USER/PATH1/O1234.NC``).
MAX_PROGRAM_LENGTH = 128
#: A reason (hold, close, scrap, fix-up) or any free-text comment: a sentence or two by an operator.
MAX_TEXT_LENGTH = 500
#: User names (config ``[[users]]``, HTTP Basic, OPC UA UserName tokens).
MAX_USER_NAME_LENGTH = 64

# ----------------------------------------------------------------------------------------- numbers
#: Units loaded onto one pallet in one call: the largest ``cell.units_per_pallet`` the config allows.
#: A load creates one unit (and its rows) per unit of quantity, all in one transaction; 1000 keeps
#: the largest call well under a second of work.
MAX_UNITS_PER_LOAD = 1000
#: A job's or order's quantity: a year of a busy cell's output for one part; units are created only
#: when loaded, so a large order costs nothing until then.
MAX_JOB_QUANTITY = 1_000_000
#: Job priority, either way (larger = more urgent).
MAX_PRIORITY = 1_000_000

# ---------------------------------------------------------------------------------------- array sizes
#: Serials in one call (LoadCompleted, Split, ERP serial lists): a whole pallet or a whole order.
MAX_SERIALS_PER_CALL = 1000
#: Operation codes in one routing: real routings have 3 to 30 steps.
MAX_STEPS = 100
#: Pallets a job may use: a cell has tens of pallets, a large FMS a few hundred.
MAX_PALLETS_PER_JOB = 500
#: Parts in one ERP order.
MAX_PARTS_PER_ORDER = 100
#: Any other list of ids in one call.
MAX_LIST_LENGTH = 1000

# -------------------------------------------------------------------------------------- characters
#: Ids that become OPC UA node ids and URL path segments (job ids a client chooses): a letter or
#: digit, then letters, digits and ``. _ : -``; never ``/`` (the node id path separator), spaces,
#: control characters or anything a PLC programmer cannot type. Config ids (stations, groups, users)
#: have a stricter rule of their own (``gateway/config/``: a letter first, no ``.`` or ``:``).
NODE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
_NODE_ID = re.compile(NODE_ID_PATTERN)
#: Every other id (pallets, parts, operation codes): any printable characters without spaces.
PRINTABLE_ID_PATTERN = r"^[^\s\x00-\x1f\x7f]+$"
#: Serials and EventIds: any printable characters, spaces included (a serial made from a cell name
#: with a space, an EventId that is a timestamp such as ``2026-05-01 12:00:00.123``).
PRINTABLE_PATTERN = r"^[^\x00-\x1f\x7f]+$"
#: Job ids that are the names of methods under ``Cell/Jobs``: a job so named would share its browse
#: name with a method there.
RESERVED_JOB_IDS = frozenset(
    name.casefold() for name in ("CreateJob", "Release", "Hold", "Resume", "Close", "Split", "SplitQuantity", "Merge")
)

# C0 control characters other than tab, line feed and carriage return, and DEL: never in any text.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_WHITESPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")
_ANY_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored, logged or published as text at all; None when it can.

    OPC UA strings that are not valid UTF-8 arrive with lone surrogates; JSON may carry them too."""
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8 text"
    if _CONTROL.search(value):
        return "contains a control character"
    return None


@dataclass(frozen=True, slots=True)
class TextRule:
    """The limits of one kind of text input: its length and the characters it may hold."""

    what: str  # "job id", "serial", ... for the reason
    max_length: int
    #: "node id": letters, digits and . _ : -; "id": printable, no spaces; "printable": printable,
    #: spaces included; "text": any text (tab and line breaks included)
    characters: str = "id"

    def problem(self, value: str) -> str | None:
        """A readable reason why ``value`` breaks this rule, or None. Empty values are the caller's
        business (an empty id means "none" in some places)."""
        if len(value) > self.max_length:
            return f"{self.what} is {len(value)} characters long; at most {self.max_length} are allowed"
        problem = text_problem(value)
        if problem:
            return f"{self.what} {problem}"
        if self.characters == "node id" and value and not _NODE_ID.match(value):
            return f"{self.what} {value!r} may hold only letters, digits and . _ : - (a letter or digit first)"
        if self.characters == "id" and _WHITESPACE_OR_CONTROL.search(value):
            return f"{self.what} {value!r} must not contain spaces or control characters"
        if self.characters == "printable" and _ANY_CONTROL.search(value):
            return f"{self.what} {value!r} must not contain control characters"
        return None

    @property
    def pattern(self) -> str | None:
        """The regular expression of the allowed characters (for pydantic and OpenAPI), if any."""
        patterns = {"node id": NODE_ID_PATTERN, "id": PRINTABLE_ID_PATTERN, "printable": PRINTABLE_PATTERN}
        return patterns.get(self.characters)


JOB_ID = TextRule("job id", MAX_JOB_ID_LENGTH)  # a job id that names a job (made by a client or a split)
NEW_JOB_ID = TextRule("job id", MAX_ID_LENGTH, "node id")  # a job id a client chooses
# Parts and revisions name templates (``<Part>/<Revision>/v<n>``) and travel in the ERP API's URLs.
PART = TextRule("part", MAX_ID_LENGTH, "node id")
REVISION = TextRule("revision", MAX_ID_LENGTH, "node id")
TEMPLATE_ID = TextRule("template id", 3 * MAX_ID_LENGTH)  # <Part>/<Revision>/v<n>
OPERATION = TextRule("operation code", MAX_ID_LENGTH)
PALLET = TextRule("pallet id", MAX_ID_LENGTH)
SERIAL = TextRule("serial", MAX_SERIAL_LENGTH, "printable")
EVENT_ID = TextRule("EventId", MAX_EVENT_ID_LENGTH, "printable")
STATION = TextRule("station id", MAX_STATION_ID_LENGTH)
PROGRAM = TextRule("program", MAX_PROGRAM_LENGTH, "text")
REASON = TextRule("reason", MAX_TEXT_LENGTH, "text")
TEXT = TextRule("text", MAX_TEXT_LENGTH, "text")
USER_NAME = TextRule("user name", MAX_USER_NAME_LENGTH)
ID = TextRule("id", MAX_ID_LENGTH)  # any other id


def new_job_id_problem(job_id: str) -> str | None:
    """Why a client may not give a new job this id, or None: the id becomes an OPC UA node id."""
    problem = NEW_JOB_ID.problem(job_id)
    if problem is None and job_id.casefold() in RESERVED_JOB_IDS:
        return f"job id {job_id!r} is the name of a method under Cell/Jobs"
    return problem


def count_problem(what: str, count: int, maximum: int) -> str | None:
    """Why a list of ``count`` entries is too long, or None."""
    if count > maximum:
        return f"{count} {what} given; at most {maximum} are allowed in one call"
    return None


def quantity_problem(what: str, quantity: int, maximum: int) -> str | None:
    """Why a quantity is above its limit, or None."""
    if quantity > maximum:
        return f"{what} {quantity} is above the limit of {maximum}"
    return None
