"""ISA-95 Job Control values (OPC 10031-4) <-> the gateway's jobs: what a job order becomes, which
ISA-95 state a job is in, what a refusal answers in ReturnStatus, and the structures a client reads.

No I/O. The structure classes (``ua.ISA95JobOrderDataType`` ...) exist once the companion NodeSets
are imported (companion.py registers them in ``ua``), so they are looked up when used.

A job order (ISA95JobOrderDataType) -> the gateway's CreateJob:

==========================================  =====================================================
JobOrderID                                  job id (a new job id's rules: gateway/limits.py)
MaterialRequirements[MaterialUse=Produced]  part = MaterialDefinitionID, quantity = Quantity (a
                                            DecimalString holding a whole number >= 1); exactly
                                            one Produced entry
JobOrderParameters[ID="Revision"].Value     revision (a String); required, as CreateJob's is
EndTime                                     due date (left out or DateTime.MinValue = none)
Priority                                    priority (Int16; larger = more urgent, as the gateway)
everything else                             not used (WorkMasterID, StartTime, Personnel ...)
==========================================  =====================================================

The gateway's job states -> ISA-95 job order states (StateNumber as in the ISA-95 state machine):

============  =====================  ========================================================
Created       NotAllowedToStart (1)
Released      AllowedToStart (2)
Running       Running (3)
Hold          Interrupted (4)
Closed        Ended (5)              its ordered quantity was finished
Closed        Aborted (6)            closed short: fewer finished than ordered
============  =====================  ========================================================

A job closed before any unit of it started was cancelled: it is not in JobOrderList (the standard's
Cancel leaves no entry), though JobOrderResults still answers for it while the gateway holds it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

from asyncua import ua

from gateway import limits
from gateway.errors import Reason
from gateway.jobs.commands import CreateJob
from gateway.jobs.model import JobState
from gateway.service.views import JobView

# ReturnStatus bits (OPC 10031-4 Annex B.2, Table 95).
NO_ERROR = 1 << 0
UNKNOWN_JOB_ORDER_ID = 1 << 1
INVALID_JOB_ORDER_STATUS = 1 << 3
UNABLE_TO_ACCEPT = 1 << 4
INVALID_REQUEST = 1 << 32

_NO_TIME = datetime(1601, 1, 2, tzinfo=UTC)  # DateTime.MinValue and before: no time given
_WHOLE_NUMBER = re.compile(r"^\+?0*(\d{1,7})(?:\.0*)?$")
_INT16 = 2**15 - 1


class Isa95State(IntEnum):
    """The job order states of ISA95JobOrderReceiverObjectType, by StateNumber."""

    NotAllowedToStart = 1
    AllowedToStart = 2
    Running = 3
    Interrupted = 4
    Ended = 5
    Aborted = 6


_STATE_OF = {
    JobState.CREATED: Isa95State.NotAllowedToStart,
    JobState.RELEASED: Isa95State.AllowedToStart,
    JobState.RUNNING: Isa95State.Running,
    JobState.HOLD: Isa95State.Interrupted,
}


def isa95_state(job: JobView) -> Isa95State:
    if job.state is JobState.CLOSED:
        return Isa95State.Ended if job.finished >= job.quantity else Isa95State.Aborted
    return _STATE_OF[job.state]


def cancelled(job: JobView) -> bool:
    """Closed before any unit of it started: not in JobOrderList."""
    return job.state is JobState.CLOSED and job.started == 0


def bits_of(reason: Reason, *, names_job: bool) -> int:
    """The ReturnStatus of a refusal: ``names_job`` for a method on an existing job's id (a job not
    found is then an unknown job order id; for Store it is something the order names, e.g. no process)."""
    if reason is Reason.NOT_FOUND and names_job:
        return UNKNOWN_JOB_ORDER_ID
    if reason in (Reason.JOB_NOT_RELEASED, Reason.JOB_ON_HOLD, Reason.JOB_CLOSED, Reason.INVALID_TRANSITION):
        return INVALID_JOB_ORDER_STATUS
    if reason is Reason.INVALID_ARGUMENT:
        return INVALID_REQUEST
    return UNABLE_TO_ACCEPT  # DuplicateId, ApprovalRequired, NotFound (of Store), InternalError ...


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a call's arguments are not a request the gateway can take (answered Invalid request)."""

    message: str


def _structure(name: str) -> Any:
    return getattr(ua, name)


def text_of(variant: Any) -> str | Problem:
    """A String argument (JobOrderID), trimmed."""
    value = getattr(variant, "Value", None)
    if getattr(variant, "VariantType", None) is not ua.VariantType.String or not isinstance(value, str):
        return Problem("JobOrderID: expected a String")
    return value.strip()


def job_id_of(variant: Any) -> str | Problem:
    """The JobOrderID of a method on an existing job."""
    text = text_of(variant)
    if isinstance(text, Problem):
        return text
    if not text:
        return Problem("JobOrderID: must not be empty")
    problem = limits.JOB_ID.problem(text)
    return Problem(f"JobOrderID: {problem}") if problem else text


def comment_of(variant: Any, default: str) -> str | Problem:
    """The first text of a Comment (LocalizedText[]; empty, Null or left out = ``default``)."""
    value = getattr(variant, "Value", None) if variant is not None else None
    if value is None:
        return default
    if not isinstance(value, list) or not all(isinstance(v, ua.LocalizedText) for v in value):
        return Problem("Comment: expected LocalizedText[]")
    texts = [(v.Text or "").strip() for v in value if (v.Text or "").strip()]
    if not texts:
        return default
    problem = limits.REASON.problem(texts[0])
    return Problem(f"Comment: {problem}") if problem else texts[0]


def create_job_of(variant: Any) -> CreateJob | Problem:
    """The CreateJob an ISA95JobOrderDataType asks for (see the module's table), or why not."""
    order = getattr(variant, "Value", None)
    if not isinstance(order, _structure("ISA95JobOrderDataType")):
        return Problem("JobOrder: expected an ISA95JobOrderDataType")
    job_id = (order.JobOrderID or "").strip() if isinstance(order.JobOrderID, str | None) else None
    if not job_id:
        return Problem("JobOrderID: must not be empty")
    problem = limits.new_job_id_problem(job_id)
    if problem:
        return Problem(f"JobOrderID: {problem}")
    produced = [m for m in order.MaterialRequirements or () if (m.MaterialUse or "").strip().casefold() == "produced"]
    if len(produced) != 1:
        return Problem(
            f"MaterialRequirements: {len(produced)} entries with MaterialUse Produced; exactly one names the part"
        )
    part = (produced[0].MaterialDefinitionID or "").strip()
    problem = "must not be empty" if not part else limits.PART.problem(part)
    if problem:
        return Problem(f"MaterialRequirements (Produced).MaterialDefinitionID: {problem}")
    quantity = _quantity(produced[0].Quantity)
    if isinstance(quantity, Problem):
        return quantity
    revision = _revision(order.JobOrderParameters or ())
    if isinstance(revision, Problem):
        return revision
    due = order.EndTime
    if due is not None and not isinstance(due, datetime):
        return Problem("EndTime: expected a DateTime")
    if due is not None:
        due = due if due.tzinfo else due.replace(tzinfo=UTC)
        due = None if due < _NO_TIME else due.astimezone(UTC)
    priority = order.Priority or 0
    if not isinstance(priority, int) or isinstance(priority, bool):
        return Problem("Priority: expected an Int16")
    return CreateJob(part=part, revision=revision, quantity=quantity, job_id=job_id, due=due, priority=priority)


def _quantity(text: Any) -> int | Problem:
    found = _WHOLE_NUMBER.match(text.strip()) if isinstance(text, str) else None
    quantity = int(found.group(1)) if found else 0
    if not 1 <= quantity <= limits.MAX_JOB_QUANTITY:
        return Problem(
            f"MaterialRequirements (Produced).Quantity: {str(text)[:40]!r} is not a whole number "
            f"from 1 to {limits.MAX_JOB_QUANTITY}"
        )
    return quantity


def _revision(parameters: Any) -> str | Problem:
    found = [p for p in parameters if (p.ID or "").strip() == "Revision"]
    if len(found) != 1:
        return Problem(f"JobOrderParameters: {len(found)} parameters with ID Revision; the part's revision is required")
    value = getattr(found[0].Value, "Value", None)
    revision = value.strip() if isinstance(value, str) else ""
    problem = "must be a String, not empty" if not revision else limits.REVISION.problem(revision)
    return Problem(f"JobOrderParameters (Revision): {problem}") if problem else revision


# ------------------------------------------------------------------ what a client reads
def state_value(state: Isa95State) -> Any:
    """The one-entry ISA95StateDataType[] of a job order (top-level state: empty BrowsePath)."""
    return [_structure("ISA95StateDataType")(ua.RelativePath(), ua.LocalizedText(state.name, "en"), int(state))]


def job_order_value(job: JobView) -> Any:
    """A job as the ISA95JobOrderDataType it would be stored from (the module's table, backwards)."""
    return _structure("ISA95JobOrderDataType")(
        JobOrderID=job.id,
        EndTime=job.due,
        Priority=max(-_INT16 - 1, min(_INT16, job.priority)),
        JobOrderParameters=[_structure("ISA95ParameterDataType")(ID="Revision", Value=ua.Variant(job.revision))],
        MaterialRequirements=[_material(job.part, "Produced", job.quantity)],
    )


def job_order_and_state(job: JobView) -> Any:
    return _structure("ISA95JobOrderAndStateDataType")(job_order_value(job), state_value(isa95_state(job)))


def job_response(job: JobView) -> Any:
    """A job's ISA95JobResponseDataType: its state, and what it produced (finished) and scrapped."""
    return _structure("ISA95JobResponseDataType")(
        JobResponseID=job.id,
        JobOrderID=job.id,
        EndTime=job.closed_at,
        JobState=state_value(isa95_state(job)),
        MaterialActuals=[_material(job.part, "Produced", job.finished), _material(job.part, "Scrapped", job.scrapped)],
    )


def empty_response(job_id: str) -> Any:
    """The JobResponse output of a request that found no job (the output is there; its fields empty)."""
    return _structure("ISA95JobResponseDataType")(JobResponseID="", JobOrderID=job_id, JobState=[])


def _material(part: str, use: str, quantity: int) -> Any:
    return _structure("ISA95MaterialDataType")(MaterialDefinitionID=part, MaterialUse=use, Quantity=str(quantity))


def wanted_states(variant: Any) -> set[Isa95State] | Problem:
    """The states a RequestJobResponseByJobOrderState asks for (by StateNumber, else by StateText)."""
    value = getattr(variant, "Value", None)
    kind = _structure("ISA95StateDataType")
    if not isinstance(value, list) or not value or not all(isinstance(v, kind) for v in value):
        return Problem("JobOrderState: expected a non-empty ISA95StateDataType[]")
    names = {s.name.casefold(): s for s in Isa95State}
    found: set[Isa95State] = set()
    for entry in value:
        if entry.StateNumber in Isa95State._value2member_map_:
            found.add(Isa95State(entry.StateNumber))
        elif entry.StateText is not None and (entry.StateText.Text or "").casefold() in names:
            found.add(names[(entry.StateText.Text or "").casefold()])
        else:
            return Problem(f"JobOrderState: state {entry.StateNumber} ({entry.StateText}) is not a job order state")
    return found
