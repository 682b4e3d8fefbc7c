"""The one place where a refusal's reason becomes an OPC UA status code (opcua-contract.md)."""

from __future__ import annotations

from asyncua import ua

from gateway.errors import Reason

_CODES = ua.StatusCodes

STATUS_OF: dict[Reason, int] = {
    Reason.INVALID_ARGUMENT: _CODES.BadInvalidArgument,
    Reason.NOT_FOUND: _CODES.BadNotFound,
    Reason.JOB_NOT_RELEASED: _CODES.BadInvalidState,
    Reason.JOB_ON_HOLD: _CODES.BadInvalidState,
    Reason.JOB_CLOSED: _CODES.BadInvalidState,
    Reason.INVALID_TRANSITION: _CODES.BadInvalidState,
    Reason.TEMPLATE_FROZEN: _CODES.BadInvalidState,
    Reason.TEMPLATE_NOT_APPROVED: _CODES.BadInvalidState,
    Reason.INVALID_PROCESS_STEP: _CODES.BadRequestNotAllowed,
    Reason.WRONG_RESOURCE: _CODES.BadRequestNotAllowed,
    Reason.WRONG_PROGRAM: _CODES.BadRequestNotAllowed,
    Reason.MIXED_MERGE: _CODES.BadRequestNotAllowed,
    Reason.APPROVAL_REQUIRED: _CODES.BadRequestNotAllowed,
    Reason.ORDER_FULFILLED: _CODES.BadOutOfRange,
    Reason.DUPLICATE_EVENT_ID: _CODES.BadEntryExists,
    Reason.DUPLICATE_ID: _CODES.BadEntryExists,
    Reason.DUPLICATE_SERIAL: _CODES.BadEntryExists,
    Reason.ACCESS_DENIED: _CODES.BadUserAccessDenied,
    Reason.INTERNAL: _CODES.BadInternalError,
}

# The store could not commit: nothing was acknowledged; the caller retries with the same EventId.
STORE_UNAVAILABLE = _CODES.BadResourceUnavailable
# The writer's queue is full: nothing was taken; the caller retries later with the same EventId.
OVERLOADED = _CODES.BadTooManyOperations


def status_of(reason: Reason) -> ua.StatusCode:
    return ua.StatusCode(STATUS_OF[reason])
