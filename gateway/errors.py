"""The one error root of the gateway.

Every refusal the domain can give carries a stable :class:`Reason`. Adapters map a reason to their
own vocabulary in exactly one place each (``gateway/opcua/status.py`` for OPC UA status codes, the HTTP
adapter for HTTP statuses); the domain never knows about either.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a command was refused. The values are part of the OPC UA contract (event field ``Reason``)."""

    INVALID_ARGUMENT = "InvalidArgument"
    NOT_FOUND = "NotFound"
    JOB_NOT_RELEASED = "JobNotReleased"
    JOB_ON_HOLD = "JobOnHold"
    JOB_CLOSED = "JobClosed"
    INVALID_TRANSITION = "InvalidTransition"
    TEMPLATE_FROZEN = "TemplateFrozen"
    TEMPLATE_NOT_APPROVED = "TemplateNotApproved"
    INVALID_PROCESS_STEP = "InvalidProcessStep"
    WRONG_RESOURCE = "WrongResource"
    WRONG_PROGRAM = "WrongProgram"
    MIXED_MERGE = "MixedMerge"
    APPROVAL_REQUIRED = "ApprovalRequired"
    ORDER_FULFILLED = "OrderFulfilled"
    DUPLICATE_EVENT_ID = "DuplicateEventId"
    DUPLICATE_ID = "DuplicateId"
    DUPLICATE_SERIAL = "DuplicateSerial"
    ACCESS_DENIED = "AccessDenied"
    # The gateway failed on this command (a defect, or data it could not store): logged, nothing changed.
    INTERNAL = "InternalError"


class Refused(Exception):
    """A command the gateway will not carry out. Raising it must leave all state unchanged.

    ``message`` is a readable sentence for the person who reads the log or the OPC UA event (a PLC
    programmer, an operator); ``reason`` is the stable code machines act on.
    """

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __repr__(self) -> str:
        return f"Refused({self.reason.value!r}, {self.message!r})"
