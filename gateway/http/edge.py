"""The HTTP edge: what a request must pass before the app reads its body or a handler runs.

:class:`Edge` is a pure ASGI middleware (it never buffers a body) that, in this order:

1. **Authenticates** a request to the ERP API (``protected``) from its ``Authorization`` header alone,
   before one byte of the body is read: a request without valid credentials is answered 401, 403, 429
   or 503 (:mod:`gateway.http.auth`) and its body is never read. The user is left in the scope's state
   (``request.state``) for the routes, so each request is authenticated once.
2. **Limits the body**: a declared ``Content-Length`` over ``max_body`` is answered 413 at once; a body
   without one (chunked) is counted as the app reads it and answered 413 when it passes ``max_body``,
   the rest is never read.
3. **Caps the requests served at once** at ``max_concurrent``: one more is answered 503 with
   ``Retry-After``. ``/healthz`` and ``/metrics`` are not counted and never refused, so a monitor still
   sees a gateway that is busy. A request refused in 1. or 2. never takes a place.

Every refusal is ``application/problem+json``. A body the app has not read is never held in memory: one
within the limit is read and discarded by the HTTP server (the client, still sending, then gets its
answer on a connection kept open); for a larger body, or one of unknown length, the answer says
``Connection: close`` and the connection is closed after it, so the rest is not read at all. The reason
is left in the scope's state (``why``) for the request log.

:class:`RequestLog`, outside the edge, writes one line per request, the edge's refusals included.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.http.auth import USER_STATE, Authenticator
from gateway.http.problems import BODY_TOO_LARGE, BUSY, ProblemError, problem_response
from gateway.logging import get_logger

log = get_logger(__name__)

# Answered whatever the load, and not counted: the probes of a monitor.
UNCAPPED_PATHS = frozenset({"/healthz", "/metrics"})


class Edge:
    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticator: Authenticator,
        protected: Callable[[Scope], bool],
        max_body: int,
        max_concurrent: int,
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.protected = protected
        self.max_body = max_body
        self.max_concurrent = max_concurrent
        self.in_flight = 0  # requests being served now (not counting UNCAPPED_PATHS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = _content_length(headers)
        # After a refusal, a body within the limit is left to the server to read and discard (so the
        # client, still sending, gets the answer); a larger or unknown one closes the connection.
        close = (declared is None and "chunked" in headers.get("transfer-encoding", "").lower()) or (
            declared is not None and declared > self.max_body
        )
        state = scope.setdefault("state", {})

        if self.protected(scope):
            client = scope.get("client")
            peer = str(client[0]) if client else ""
            try:
                user = await self.authenticator.authenticate(headers.get("authorization"), peer)
            except ProblemError as exc:
                await _refuse(scope, send, exc.status, exc.reason, exc.detail, exc.headers, close=close)
                return
            state[USER_STATE] = user
            state["user"] = user.name

        if declared is not None and declared > self.max_body:
            await _refuse(scope, send, 413, BODY_TOO_LARGE, self._too_large(f"{declared} bytes"), close=close)
            return

        counted = scope.get("path", "") not in UNCAPPED_PATHS
        if counted and self.in_flight >= self.max_concurrent:
            detail = f"{self.max_concurrent} requests are being served at once; try again shortly"
            await _refuse(scope, send, 503, BUSY, detail, {"Retry-After": "1"}, close=close)
            return
        if counted:
            self.in_flight += 1
        try:
            await self._serve(scope, receive, send)
        finally:
            if counted:
                self.in_flight -= 1

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        received = 0
        started = False
        refused = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    # The app sees the client gone; the client gets the 413 (unless a response began).
                    refused = True
                    if not started:
                        detail = self._too_large(f"more than {self.max_body} bytes")
                        await _refuse(scope, send, 413, BODY_TOO_LARGE, detail, close=True)
                    return {"type": "http.disconnect"}
            return message

        async def checked_send(message: Message) -> None:
            nonlocal started
            if refused and not started:
                return  # the 413 is the answer; whatever the app makes of the disconnect is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, limited_receive, checked_send)

    def _too_large(self, size: str) -> str:
        return f"the request body is {size}; this gateway accepts at most {self.max_body} bytes"


def _content_length(headers: Headers) -> int | None:
    value = headers.get("content-length")
    if value is None or not value.strip().isdigit():
        return None  # the HTTP server itself refuses a malformed length
    return int(value)


async def _refuse(
    scope: Scope,
    send: Send,
    status: int,
    reason: str,
    detail: str,
    headers: dict[str, str] | None = None,
    *,
    close: bool,
) -> None:
    scope.setdefault("state", {})["why"] = detail
    headers = dict(headers or {})
    if close:
        headers["Connection"] = "close"
    response = problem_response(Request(scope), status, reason, detail, headers=headers)
    await response(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


class RequestLog:
    """One log line per HTTP request: method, path, status, user, milliseconds."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            fields = {
                "method": scope.get("method", ""),
                "path": scope.get("path", ""),
                "status": status,
                "user": scope.get("state", {}).get("user", ""),
                "ms": round((time.perf_counter() - started) * 1000, 1),
            }
            why = scope.get("state", {}).get("why")
            if why:
                fields["why"] = why
            if status >= 500:
                log.error("http_request", **fields)
            else:
                log.info("http_request", **fields)
