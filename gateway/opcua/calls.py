"""Method calls: who calls and what they send checked, the call turned into a command for the writer,
and the writer's answer turned into an OPC UA result; and the one canonical log line each command leaves.

An adapter only. asyncua runs a method whatever ObjectId the call names, and turns an exception that
escapes a handler into BadUnexpectedError: a handler here checks the object, and returns a status code
rather than raise. A refusal that never reaches the writer (access, malformed arguments) is logged and
raised as a RejectionEventType here; the writer's refusals are raised after commit (publishing.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from asyncua import ua
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.cell.commands import Command
from gateway.errors import Reason
from gateway.logging import get_logger
from gateway.opcua.address_space import AddressSpace, MethodHandler
from gateway.opcua.arguments import Malformed, parse
from gateway.opcua.contract import EVENT_ID, READ_ROLES, TRACE_INPUTS, Method, Refusal
from gateway.opcua.events import report_fields
from gateway.opcua.identity import GatewayUser, current_user
from gateway.opcua.status import OVERLOADED, STORE_UNAVAILABLE, status_of
from gateway.service.answers import safe_text
from gateway.service.writer import Answer, Overloaded, StoreUnavailable, Writer
from gateway.storage.queries import trace
from gateway.tracking.reports import Report

log = get_logger(__name__)


class CallGate:
    """Every method handler passes it, the contract's and the standard faces' alike: it knows when the
    server is closing (nothing new is taken) and counts the calls taken and not answered yet."""

    def __init__(self, closing: asyncio.Event) -> None:
        self.closing = closing  # shutting down: what was taken is committed, nothing new is taken
        self._in_calls = 0
        self._no_calls = asyncio.Event()
        self._no_calls.set()

    @contextmanager
    def taken(self) -> Iterator[None]:
        self._in_calls += 1
        self._no_calls.clear()
        try:
            yield
        finally:
            self._in_calls -= 1
            if not self._in_calls:
                self._no_calls.set()

    async def answered(self) -> None:
        """Until every method call taken has been answered."""
        await self._no_calls.wait()


class Calls:
    """Answers the method calls, and counts the calls taken and not answered yet (for a shutdown)."""

    def __init__(self, writer: Writer, engine: AsyncEngine, closing: asyncio.Event) -> None:
        self.writer = writer
        self.engine = engine  # for reads (Trace); every change goes through the writer
        self.gate = CallGate(closing)  # the server's closing, and the calls taken and not answered yet
        self.space: AddressSpace | None = None  # once built: its event types raise the refusals

    async def answered(self) -> None:
        """Until every method call taken has been answered."""
        await self.gate.answered()

    def handler(self, method: Method, station: str, owner: ua.NodeId) -> MethodHandler:
        async def handle(parent: ua.NodeId, *variants: Any) -> Any:
            if parent != owner:  # asyncua runs a method whatever ObjectId the call names
                return _wrong_object(method.name, parent, owner)
            with self.gate.taken():
                try:
                    return await self.answer(method, station, variants)
                except Exception:  # an escaping exception would reach the PLC as BadUnexpectedError
                    log.exception("opcua_method_failed", method=method.name, station=station)
                    return ua.StatusCode(ua.StatusCodes.BadInternalError)

        handle.__name__ = f"{method.name}@{station or 'cell'}"
        return handle

    async def answer(self, method: Method, station: str, variants: Sequence[Any]) -> Any:
        user = current_user()
        event_id = _first_text(variants) if method.inputs and method.inputs[0] is EVENT_ID else ""
        if self.gate.closing.is_set():  # shutting down: what was taken is committed, nothing new is taken
            log.warning("call_refused_shutting_down", method=method.name, station=station, event_id=event_id)
            return ua.StatusCode(ua.StatusCodes.BadServerHalted)
        if not _allowed(user, method, station):
            why = f"user {user.name!r} ({', '.join(sorted(user.roles)) or 'no roles'}) may not call {method.name}"
            if method.station_scoped and "plc" in user.roles:
                why += f" at {station}: its stations are {', '.join(sorted(user.stations)) or 'none'}"
            await self._refuse_unstored(Reason.ACCESS_DENIED, why, method, station, event_id)
            return ua.StatusCode(ua.StatusCodes.BadUserAccessDenied)
        parsed = parse(variants, method.inputs)
        if isinstance(parsed, Malformed):
            await self._refuse_unstored(Reason.INVALID_ARGUMENT, parsed.message, method, station, event_id)
            return parsed.result()
        built = method.build(station, parsed)
        if isinstance(built, Refusal):
            refused = _invalid_argument(method, built)
            await self._refuse_unstored(Reason.INVALID_ARGUMENT, refused.message, method, station, event_id)
            return refused.result()
        try:
            answer = await self.writer.submit(built, user.name)
        except Overloaded as exc:
            log.error("report_not_taken", method=method.name, station=station, event_id=event_id, error=str(exc))
            return ua.StatusCode(OVERLOADED)
        except StoreUnavailable as exc:
            log.error("report_not_stored", method=method.name, station=station, event_id=event_id, error=str(exc))
            return ua.StatusCode(STORE_UNAVAILABLE)
        if not answer.ok:
            # Its RejectionEventType is raised by on_commit, a reused EventId's too (not stored, but in the batch).
            assert answer.reason is not None
            return ua.CallMethodResult(StatusCode=status_of(answer.reason))
        return [
            ua.Variant(_output(answer.outputs.get(arg.name)), arg.variant_type, is_array=arg.is_array)
            for arg in method.outputs
        ]

    async def _refuse_unstored(self, reason: Reason, message: str, method: Method, station: str, event_id: str) -> None:
        """A refusal that never reached the log (access, malformed, reused EventId): log it and raise the event."""
        log.warning(
            "report_refused", kind=method.name, station=station, event_id=event_id, reason=reason.value, message=message
        )
        if self.space is not None:
            await self.space.events.raise_event(
                "RejectionEventType",
                f"{method.name} at {station or 'cell'} refused ({reason.value}): {message}",
                {"Reason": reason.value, "Station": station, "ReportEventId": event_id},
            )

    def trace_handler(self, owner: ua.NodeId) -> MethodHandler:
        """Units.Trace, on the object ``owner``: a unit's history as JSON, read from the store."""

        async def handle(parent: ua.NodeId, *variants: Any) -> Any:
            if parent != owner:
                return _wrong_object("Trace", parent, owner)
            user = current_user()
            if not user.has_any(READ_ROLES):
                return ua.StatusCode(ua.StatusCodes.BadUserAccessDenied)
            parsed = parse(variants, TRACE_INPUTS)
            if isinstance(parsed, Malformed):
                log.warning("trace_refused", reason=Reason.INVALID_ARGUMENT.value, message=parsed.message)
                return parsed.result()
            try:
                found = await trace(self.engine, None, parsed[0])
            except Exception:
                log.exception("trace_failed", serial=parsed[0])
                return ua.StatusCode(ua.StatusCodes.BadInternalError)
            if found is None:
                return ua.CallMethodResult(StatusCode=ua.StatusCode(ua.StatusCodes.BadNotFound))
            return [ua.Variant(json.dumps(found, default=str), ua.VariantType.String)]

        return handle


def _allowed(user: GatewayUser, method: Method, station: str) -> bool:
    if not user.has_any(method.roles):
        return False
    if method.station_scoped:
        return user.may_report_for(station)
    return True


def _invalid_argument(method: Method, refusal: Refusal) -> Malformed:
    """BadInvalidArgument with per-argument results: bad for the argument the refusal names."""
    bad, good = ua.StatusCode(ua.StatusCodes.BadInvalidArgument), ua.StatusCode(ua.StatusCodes.Good)
    return Malformed(bad, [bad if arg.name == refusal.argument else good for arg in method.inputs], refusal.message)


def _wrong_object(method: str, parent: ua.NodeId, owner: ua.NodeId) -> ua.StatusCode:
    """A call whose ObjectId is not the object the method belongs to (OPC UA Part 4, Call): refused."""
    log.warning(
        "method_called_on_wrong_object",
        method=method,
        object=safe_text(str(parent.Identifier))[:200],
        message=f"{method} belongs to {owner.Identifier}, not to the object the call names",
    )
    return ua.StatusCode(ua.StatusCodes.BadMethodInvalid)


def _first_text(variants: Sequence[Any]) -> str:
    value = getattr(variants[0], "Value", None) if variants else None
    return value if isinstance(value, str) else ""


def _output(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def canonical_line(command: Command, actor: str, answer: Answer) -> None:
    """One line per command: what came in, from whom, and what the gateway made of it."""
    fields: dict[str, Any] = {
        "kind": command.kind,
        "counter": answer.counter,
        "actor": actor,
        "result": "refused" if answer.reason else ("replayed" if answer.replayed else "ok"),
    }
    names = {"ReportEventId": "event_id"}
    fields.update({names.get(k, k.lower()): v for k, v in report_fields(command).items() if v})
    if isinstance(command, Report) and command.source_time is None:
        fields["source_time"] = "receipt"  # SourceTime Null or left out: the time of receipt is used
    if answer.reason is not None:
        fields["reason"] = answer.reason.value
        fields["message"] = answer.message
    if answer.flags:
        fields["anomalies"] = [f.anomaly.value for f in answer.flags]
    if answer.outputs:
        fields["outputs"] = answer.outputs
    if answer.reason is not None or answer.flags:
        log.warning("cell_event", **fields)
    else:
        log.info("cell_event", **fields)
