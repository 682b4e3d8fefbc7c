"""The cell's jobs as a Machinery Job Management object (OPC 40001-3) over ISA-95 Job Control (OPC
10031-4): ``Objects/Cell/JobManagement`` (JobManagementType) with its JobOrderControl (an
ISA95JobOrderReceiverObjectType) and JobOrderResults (an ISA95JobResponseProviderObjectType).

An adapter only, like the gateway's own job methods (gateway/opcua/calls.py): each method becomes the
gateway's own command, submitted to the writer as the calling user, with the same roles (JOB_ROLES;
the results, READ_ROLES). A writer's refusal is logged and raised as a RejectionEventType after its
commit (publishing.py), as for the contract's methods; a call refused before the writer (access,
malformed arguments, a Cancel of a started job) is logged (``report_refused``) and raised here.

Every answer carries ReturnStatus (UInt64 bits, isa95.py): Good with No Error, or Uncertain with the
bits of the refusal, never Bad, as the standard asks, malformed arguments included (Invalid request).
Bad codes remain for what is not a refusal: a caller without the role (BadUserAccessDenied, as the
contract's methods), a call on another object (BadMethodInvalid), and a request the gateway did not
take (BadTooManyOperations when overloaded, BadResourceUnavailable when the store cannot write: retry).

What each method does (the mapping of states and job orders: isa95.py):

- Store -> CreateJob; StoreAndStart -> CreateJob then ReleaseJob (a refused release leaves the job
  Created, answered Uncertain with the release's bits); Start -> ReleaseJob; Pause -> HoldJob (the
  Comment is the reason); Resume -> ResumeJob.
- Stop and Abort -> CloseJob (the gateway has one close: it frees the unstarted quantity, units in WIP
  may finish). They differ in the reason logged; the state shown after is Ended if the ordered
  quantity was finished, else Aborted, whichever was called.
- Cancel -> CloseJob of a job nothing of which has started (Created or Released, none started); any
  other job is refused with Invalid Job Order Status. A cancelled job leaves JobOrderList.
- Update, RevokeStart, Clear: the gateway's jobs cannot do them (a job's order is fixed once created,
  there is no way back from Released to Created, and the gateway keeps every job's record: a closed
  job leaves JobOrderList on its own once nothing of it is in the cell). Answered Uncertain with
  Unable to accept (Unknown Job Order ID for a job the gateway does not hold), and a log line.

JobOrderList is the committed view's jobs (``writer.view``), rewritten only when a job's state or order
changes, or a job comes or goes; unit counts are read through JobOrderResults.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from asyncua import Node, Server, ua

from gateway.cell.commands import Command
from gateway.errors import Reason
from gateway.jobs.commands import CloseJob, CreateJob, HoldJob, ReleaseJob, ResumeJob
from gateway.jobs.model import JobState
from gateway.logging import get_logger
from gateway.opcua.address_space import AddressSpace
from gateway.opcua.calls import CallGate
from gateway.opcua.contract import JOB_ROLES, READ_ROLES
from gateway.opcua.identity import current_user
from gateway.opcua.standard import isa95
from gateway.opcua.standard.companion import Namespaces
from gateway.opcua.standard.isa95 import NO_ERROR, UNABLE_TO_ACCEPT, UNKNOWN_JOB_ORDER_ID, Problem
from gateway.opcua.status import OVERLOADED, STORE_UNAVAILABLE
from gateway.service.answers import safe_text
from gateway.service.views import JobView
from gateway.service.writer import Committed, Overloaded, StoreUnavailable, Writer

log = get_logger(__name__)

JOB_MANAGEMENT_TYPE = 1003  # Machinery Jobs' JobManagementType
RECEIVER_TYPE = 1002  # ISA-95's ISA95JobOrderReceiverObjectType

Answer = Callable[[str, Sequence[Any]], Awaitable[Any]]  # (user name, input variants) -> the call's result


def _answer(bits: int, *outputs: ua.Variant) -> Any:
    """The call's result: the outputs and ReturnStatus; Good with No Error, else Uncertain."""
    variants = [*outputs, ua.Variant(bits, ua.VariantType.UInt64)]
    if bits == NO_ERROR:
        return variants
    return ua.CallMethodResult(StatusCode=ua.StatusCode(ua.StatusCodes.Uncertain), OutputArguments=variants)


class JobManagement:
    """Answers JobOrderControl's and JobOrderResults' methods, and keeps JobOrderList."""

    def __init__(self, writer: Writer, space: AddressSpace, order_list: Node, gate: CallGate) -> None:
        self.writer = writer
        self.gate = gate  # shared with the contract's methods: closing, and the calls not answered yet
        self.space = space  # its event types raise the refusals made here
        self.order_list = order_list
        self._entries: dict[str, tuple[tuple[Any, ...], Any]] = {}  # job -> (what the entry shows, entry)
        self._writing = asyncio.Lock()

    # ------------------------------------------------------------------ JobOrderList
    def _note(self, job: JobView | None, job_id: str) -> bool:
        """Keep one job's entry; True when the list changed."""
        if job is None or isa95.cancelled(job):
            return self._entries.pop(job_id, None) is not None
        shown = (isa95.isa95_state(job), job.part, job.revision, job.quantity, job.due, job.priority)
        before = self._entries.get(job_id)
        if before is not None and before[0] == shown:
            return False
        self._entries[job_id] = (shown, isa95.job_order_and_state(job))
        return True

    async def _write_list(self) -> None:
        async with self._writing:
            entries = [self._entries[j][1] for j in sorted(self._entries)]
            await self.order_list.write_value(ua.Variant(entries, ua.VariantType.ExtensionObject))

    async def start(self) -> None:
        """JobOrderList from the committed view, then following each commit."""
        view = self.writer.view
        for job_id, job in view.jobs.items():
            self._note(job, job_id)
        self.writer.subscribe(self.on_commit)  # no await since the view was read: no commit missed
        await self._write_list()

    async def on_commit(self, batch: Committed) -> None:
        try:
            changed = False
            for job_id in batch.jobs:
                changed |= self._note(batch.view.jobs.get(job_id), job_id)
            if changed:
                await self._write_list()
        except Exception:  # never out of a listener: the next commit writes the list again
            log.exception("job_order_list_failed")

    # ------------------------------------------------------------------ calls
    def handler(self, name: str, owner: ua.NodeId, roles: tuple[str, ...], answer: Answer) -> Any:
        async def handle(parent: ua.NodeId, *variants: Any) -> Any:
            if parent != owner:  # asyncua runs a method whatever ObjectId the call names
                log.warning("method_called_on_wrong_object", method=name, object=safe_text(str(parent))[:200])
                return ua.StatusCode(ua.StatusCodes.BadMethodInvalid)
            if self.gate.closing.is_set():  # shutting down: what was taken is committed, nothing new
                log.warning("call_refused_shutting_down", method=name)
                return ua.StatusCode(ua.StatusCodes.BadServerHalted)
            with self.gate.taken():
                return await self._answer(name, roles, answer, variants)

        handle.__name__ = f"ISA95.{name}"
        return handle

    async def _answer(self, name: str, roles: tuple[str, ...], answer: Answer, variants: Sequence[Any]) -> Any:
        try:
            user = current_user()
            if not user.has_any(roles):
                why = f"user {user.name!r} ({', '.join(sorted(user.roles)) or 'no roles'}) may not call {name}"
                await self._refuse(name, "", Reason.ACCESS_DENIED, why)
                return ua.StatusCode(ua.StatusCodes.BadUserAccessDenied)
            return await answer(user.name, variants)
        except Exception:  # an escaping exception would reach the client as BadUnexpectedError
            log.exception("opcua_method_failed", method=name)
            return ua.StatusCode(ua.StatusCodes.BadInternalError)

    async def _refuse(self, method: str, job: str, reason: Reason, message: str) -> None:
        """A refusal that never reached the writer: logged and raised, as calls.py does for its own."""
        log.warning("report_refused", kind=f"ISA95.{method}", job=job, reason=reason.value, message=message)
        await self.space.events.raise_event(
            "RejectionEventType",
            f"ISA95.{method} refused ({reason.value}): {message}",
            {"Reason": reason.value, "Job": job},
        )

    async def _malformed(self, method: str, problem: Problem) -> Any:
        await self._refuse(method, "", Reason.INVALID_ARGUMENT, problem.message)
        return _answer(isa95.INVALID_REQUEST)

    async def _submit(self, method: str, command: Command, actor: str, *, names_job: bool) -> int | ua.StatusCode:
        """The command through the writer: No Error, the refusal's bits, or a Bad code if not taken."""
        job = getattr(command, "job_id", "")
        try:
            answer = await self.writer.submit(command, actor)
        except Overloaded as exc:
            log.error("report_not_taken", kind=f"ISA95.{method}", job=job, error=str(exc))
            return ua.StatusCode(OVERLOADED)
        except StoreUnavailable as exc:
            log.error("report_not_stored", kind=f"ISA95.{method}", job=job, error=str(exc))
            return ua.StatusCode(STORE_UNAVAILABLE)
        if answer.reason is None:
            return NO_ERROR
        # Logged (cell_event) and raised as a RejectionEventType after its commit, by publishing.py.
        bits = isa95.bits_of(answer.reason, names_job=names_job)
        log.info("isa95_refused", method=method, job=job, reason=answer.reason.value, return_status=bits)
        return bits

    @staticmethod
    def _two(variants: Sequence[Any]) -> tuple[Any, Any] | Problem:
        """The two inputs of every control method (the Comment may be left out)."""
        if not 1 <= len(variants) <= 2:
            return Problem(f"{len(variants)} arguments given, 2 expected")
        return variants[0], variants[1] if len(variants) == 2 else None

    async def store(self, actor: str, variants: Sequence[Any], *, start: bool = False) -> Any:
        method = "StoreAndStart" if start else "Store"
        args = self._two(variants)
        if isinstance(args, Problem):
            return await self._malformed(method, args)
        command, comment = isa95.create_job_of(args[0]), isa95.comment_of(args[1], "")
        for problem in (command, comment):
            if isinstance(problem, Problem):
                return await self._malformed(method, problem)
        assert isinstance(command, CreateJob)
        created = await self._submit(method, command, actor, names_job=False)
        if created != NO_ERROR or not start:
            return created if isinstance(created, ua.StatusCode) else _answer(created)
        released = await self._submit(method, ReleaseJob(command.job_id), actor, names_job=True)
        if isinstance(released, ua.StatusCode):
            return released
        if released != NO_ERROR:
            log.warning("isa95_stored_not_started", job=command.job_id, return_status=released)
        return _answer(released)

    async def update(self, actor: str, variants: Sequence[Any]) -> Any:
        args = self._two(variants)
        if isinstance(args, Problem):
            return await self._malformed("Update", args)
        command = isa95.create_job_of(args[0])
        if isinstance(command, Problem):
            return await self._malformed("Update", command)
        return self._unsupported("Update", command.job_id, UPDATE_UNSUPPORTED)

    def _unsupported(self, method: str, job_id: str, why: str) -> Any:
        if job_id not in self.writer.view.jobs:
            log.warning("isa95_unknown_job_order", method=method, job=job_id)
            return _answer(UNKNOWN_JOB_ORDER_ID)
        log.warning("isa95_not_supported", method=method, job=job_id, message=why)
        return _answer(UNABLE_TO_ACCEPT)

    def control(self, method: str) -> Answer:
        """A method on one job order: (JobOrderID, Comment) -> the gateway's command, or not supported."""

        async def answer(actor: str, variants: Sequence[Any]) -> Any:
            args = self._two(variants)
            job_id = isa95.job_id_of(args[0]) if not isinstance(args, Problem) else args
            if isinstance(job_id, Problem):
                return await self._malformed(method, job_id)
            assert not isinstance(args, Problem)
            comment = isa95.comment_of(args[1], f"{method} (ISA-95 JobOrderControl)")
            if isinstance(comment, Problem):
                return await self._malformed(method, comment)
            if method in UNSUPPORTED:
                return self._unsupported(method, job_id, UNSUPPORTED[method])
            command: Command
            if method == "Start":
                command = ReleaseJob(job_id)
            elif method == "Pause":
                command = HoldJob(job_id, comment)
            elif method == "Resume":
                command = ResumeJob(job_id)
            else:  # Stop, Abort, Cancel
                if method == "Cancel":
                    refused = await self._cancel_refusal(job_id)
                    if refused is not None:
                        return _answer(refused)
                command = CloseJob(job_id, comment)
            bits = await self._submit(method, command, actor, names_job=True)
            return bits if isinstance(bits, ua.StatusCode) else _answer(bits)

        return answer

    async def _cancel_refusal(self, job_id: str) -> int | None:
        """Cancel is for a job order that has not started: the bits when it has (or is not known)."""
        job = self.writer.view.jobs.get(job_id)
        if job is None:
            await self._refuse("Cancel", job_id, Reason.NOT_FOUND, f"job {job_id!r} does not exist")
            return UNKNOWN_JOB_ORDER_ID
        if job.state in (JobState.CREATED, JobState.RELEASED) and job.started == 0:
            return None
        message = (
            f"job {job_id} is {job.state.value} with {job.started} unit(s) started; only a job not started is cancelled"
        )
        await self._refuse("Cancel", job_id, Reason.INVALID_TRANSITION, message)
        return isa95.INVALID_JOB_ORDER_STATUS

    # ------------------------------------------------------------------ JobOrderResults
    async def response_by_id(self, actor: str, variants: Sequence[Any]) -> Any:
        job_id = isa95.job_id_of(variants[0]) if len(variants) == 1 else Problem("1 argument expected")
        if isinstance(job_id, Problem):
            log.warning("isa95_request_refused", method="RequestJobResponseByJobOrderID", message=job_id.message)
            return _answer(isa95.INVALID_REQUEST, ua.Variant(isa95.empty_response("")))
        job = self.writer.view.jobs.get(job_id)
        if job is None:
            return _answer(UNKNOWN_JOB_ORDER_ID, ua.Variant(isa95.empty_response(job_id)))
        return _answer(NO_ERROR, ua.Variant(isa95.job_response(job)))

    async def response_by_state(self, actor: str, variants: Sequence[Any]) -> Any:
        wanted = isa95.wanted_states(variants[0]) if len(variants) == 1 else Problem("1 argument expected")
        if isinstance(wanted, Problem):
            log.warning("isa95_request_refused", method="RequestJobResponseByJobOrderState", message=wanted.message)
            return _answer(isa95.INVALID_REQUEST, ua.Variant([], ua.VariantType.ExtensionObject))
        jobs = self.writer.view.jobs
        found = [isa95.job_response(jobs[j]) for j in sorted(jobs) if isa95.isa95_state(jobs[j]) in wanted]
        return _answer(NO_ERROR, ua.Variant(found, ua.VariantType.ExtensionObject))


UPDATE_UNSUPPORTED = "a job's order (part, revision, quantity, due date, priority) is fixed once it is created"
UNSUPPORTED = {
    "RevokeStart": "the gateway has no way back from Released to Created",
    "Clear": "the gateway keeps every job's record; a closed job leaves JobOrderList once nothing of it is in the cell",
}
CONTROL_METHODS = ("Start", "Pause", "Resume", "Stop", "Abort", "Cancel", "RevokeStart", "Clear")


async def build_job_management(
    server: Server, ns: Namespaces, space: AddressSpace, writer: Writer, gate: CallGate
) -> JobManagement:
    """``Cell/JobManagement`` with its methods linked, JobOrderList written and following the commits."""
    gw, isa = space.namespace_index, ns.isa95
    job_management = await space.cell.add_object(
        ua.NodeId("Cell/JobManagement", gw),
        ua.QualifiedName("JobManagement", ns.jobs),
        objecttype=ua.NodeId(JOB_MANAGEMENT_TYPE, ns.jobs),
    )
    # asyncua copies only the children the JobManagementType lists on its own JobOrderControl, which
    # names none of the receiver's (optional) methods: it is replaced by a whole receiver.
    partial = await job_management.get_child(f"{ns.jobs}:JobOrderControl")
    await server.delete_nodes([partial], recursive=True)
    control = await job_management.add_object(
        ua.NodeId("Cell/JobManagement/JobOrderControl", gw),
        ua.QualifiedName("JobOrderControl", ns.jobs),
        objecttype=ua.NodeId(RECEIVER_TYPE, isa),
    )
    await (await control.get_child(f"{isa}:MaxDownloadableJobOrders")).write_value(
        ua.Variant(2**16 - 1, ua.VariantType.UInt16)
    )
    faces_jobs = JobManagement(writer, space, await control.get_child(f"{isa}:JobOrderList"), gate)
    answers: dict[str, Answer] = {
        "Store": faces_jobs.store,
        "StoreAndStart": lambda actor, variants: faces_jobs.store(actor, variants, start=True),
        "Update": faces_jobs.update,
        **{name: faces_jobs.control(name) for name in CONTROL_METHODS},
    }
    for name, answer in answers.items():
        node = await control.get_child(f"{isa}:{name}")
        server.link_method(node, faces_jobs.handler(name, control.nodeid, JOB_ROLES, answer))
    results = await job_management.get_child(f"{ns.jobs}:JobOrderResults")
    for name, answer in (
        ("RequestJobResponseByJobOrderID", faces_jobs.response_by_id),
        ("RequestJobResponseByJobOrderState", faces_jobs.response_by_state),
    ):
        node = await results.get_child(f"{isa}:{name}")
        server.link_method(node, faces_jobs.handler(name, results.nodeid, READ_ROLES, answer))
    await faces_jobs.start()
    return faces_jobs
