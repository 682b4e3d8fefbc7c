"""Problem details (RFC 9457) and the one place where a refusal's reason becomes an HTTP status.

Every error the API returns is ``application/problem+json`` with the stable ``reason`` code of the OPC
UA contract (``NotFound``, ``DuplicateId``, ``InvalidTransition``, ...), so an ERP client acts on the
same codes a PLC programmer reads in a RejectionEvent. A few codes are HTTP-only, and each says the
request changed nothing and may be sent again (after ``Retry-After`` seconds where given):

- ``StoreUnavailable`` (503): the store could not commit;
- ``BodyTooLarge`` (413): the body is over ``limits.http_max_body_bytes``;
- ``Busy`` (503): ``limits.http_max_concurrent_requests`` requests are being served, or too many logins
  are being checked at once;
- ``LoginBackedOff`` (429): too many failed logins for this user name or from this address.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.errors import Reason, Refused
from gateway.logging import get_logger
from gateway.service.writer import StoreUnavailable

log = get_logger(__name__)

MEDIA_TYPE = "application/problem+json"
STORE_UNAVAILABLE = "StoreUnavailable"
BODY_TOO_LARGE = "BodyTooLarge"
BUSY = "Busy"
LOGIN_BACKED_OFF = "LoginBackedOff"

STATUS_OF: dict[Reason, int] = {
    Reason.INVALID_ARGUMENT: 422,
    Reason.NOT_FOUND: 404,
    Reason.JOB_NOT_RELEASED: 409,
    Reason.JOB_ON_HOLD: 409,
    Reason.JOB_CLOSED: 409,
    Reason.INVALID_TRANSITION: 409,
    Reason.TEMPLATE_FROZEN: 409,
    Reason.TEMPLATE_NOT_APPROVED: 409,
    Reason.INVALID_PROCESS_STEP: 409,
    Reason.WRONG_RESOURCE: 409,
    Reason.WRONG_PROGRAM: 409,
    Reason.MIXED_MERGE: 409,
    Reason.APPROVAL_REQUIRED: 409,
    Reason.ORDER_FULFILLED: 409,
    Reason.DUPLICATE_EVENT_ID: 409,
    Reason.DUPLICATE_ID: 409,
    Reason.DUPLICATE_SERIAL: 409,
    Reason.ACCESS_DENIED: 403,
    Reason.INTERNAL: 500,
}

_TITLES = {
    401: "Authentication required",
    403: "Access denied",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict with the current state",
    413: "Request body too large",
    422: "Invalid request",
    429: "Too many failed logins",
    500: "Internal error",
    503: "Service unavailable",
}


class Problem(BaseModel):
    """An error, as RFC 9457 problem details plus the gateway's stable reason code."""

    type: str = Field(description="urn:cell-gateway:reason:<reason>")
    title: str
    status: int
    detail: str = ""
    reason: str = Field(
        description="stable code, the same as the OPC UA contract's Reason, or one of the HTTP-only "
        "StoreUnavailable, BodyTooLarge, Busy, LoginBackedOff"
    )
    instance: str = ""
    errors: list[dict[str, Any]] | None = Field(default=None, description="per-field problems of a 422")


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "description": title, "content": {MEDIA_TYPE: {}}}
    for status, title in _TITLES.items()
    if status != 405
}


class ProblemError(Exception):
    """Raised inside the adapter to answer with a problem (a refusal, or auth)."""

    def __init__(self, status: int, reason: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail
        self.headers = headers


def refused(reason: Reason, message: str) -> ProblemError:
    return ProblemError(STATUS_OF[reason], reason.value, message)


def _text(value: object) -> str:
    """Input echoed back (a dict key, a path) may hold lone surrogates, which JSON as UTF-8 cannot carry."""
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


def problem_response(
    request: Request,
    status: int,
    reason: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    body = Problem(
        type=f"urn:cell-gateway:reason:{reason}",
        title=_TITLES.get(status, "Error"),
        status=status,
        detail=_text(detail),
        reason=reason,
        instance=_text(request.url.path),
        errors=errors,
    )
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, media_type=MEDIA_TYPE, headers=headers)


def install(app: FastAPI) -> None:
    """Answer every error of the app as a problem."""

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProblemError)
        return problem_response(request, exc.status, exc.reason, exc.detail, headers=exc.headers)

    async def on_refused(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Refused)
        return problem_response(request, STATUS_OF[exc.reason], exc.reason.value, exc.message)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {
                "loc": [_text(part) for part in e.get("loc", ())],
                "msg": _text(e.get("msg", "")),
                "type": str(e.get("type")),
            }
            for e in exc.errors()
        ]
        detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors) or "invalid request"
        return problem_response(request, 422, Reason.INVALID_ARGUMENT.value, detail, errors=errors)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        status = exc.status_code
        reason = {401: Reason.ACCESS_DENIED, 403: Reason.ACCESS_DENIED, 404: Reason.NOT_FOUND}.get(
            status, Reason.INVALID_ARGUMENT
        )
        headers = dict(exc.headers) if exc.headers else None
        return problem_response(request, status, reason.value, str(exc.detail), headers=headers)

    async def on_store(request: Request, exc: Exception) -> JSONResponse:
        log.warning("http_store_unavailable", path=request.url.path, error=str(exc))
        return problem_response(request, 503, STORE_UNAVAILABLE, str(exc), headers={"Retry-After": "1"})

    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(Refused, on_refused)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(StoreUnavailable, on_store)
