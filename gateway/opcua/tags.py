"""A station's writable tags (contract: Tags): which writes are taken, and the reports they make.

A tag PLC writes a block of tags (PalletPresent, CycleActive, Program) instead of calling methods. A
write is checked before asyncua takes it (:meth:`Tags.may_write`); after it, the station's tag state is
reconciled with the station state the gateway has recorded, and the difference becomes reports for
the writer (:meth:`Tags.written`): the edges come from the state, not from the order of the writes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from asyncua import ua

from gateway import limits
from gateway.errors import Reason
from gateway.logging import get_logger
from gateway.opcua.address_space import AddressSpace
from gateway.opcua.contract import TAG_TYPES
from gateway.opcua.identity import GatewayUser
from gateway.opcua.status import STORE_UNAVAILABLE
from gateway.service.writer import StoreUnavailable, Writer
from gateway.tracking.reports import (
    CycleEnded,
    CycleResult,
    CycleStarted,
    PalletArrived,
    PalletDeparted,
    Report,
)

log = get_logger(__name__)

_ACCESS_DENIED: int = ua.StatusCodes.BadUserAccessDenied
_HALTED: int = ua.StatusCodes.BadServerHalted

# What a tag's value may be, past its type: the same limits as the method arguments of the same name.
_TAG_RULES = {"PalletPresent": limits.PALLET, "Program": limits.PROGRAM}


class Tags:
    """The stations' tag state (the values last written), and the checks and reports of tag writes."""

    def __init__(self, writer: Writer, closing: asyncio.Event) -> None:
        self.writer = writer
        self.closing = closing  # shutting down: as for method calls, nothing new is taken
        self.space: AddressSpace | None = None  # once built: the tag nodes, and the event types
        self._tag_state: dict[str, dict[str, Any]] = {}
        self._tag_seq = 0

    def start_from(self, station_id: str) -> dict[str, Any]:
        """The tag block that matches the station state the gateway has recorded: the station's tags
        start from it."""
        recorded = self.writer.view.stations.get(station_id)
        pallet = recorded.pallet if recorded is not None else ""
        if recorded is None or not pallet or recorded.cycle_pallet != pallet:
            known = {"PalletPresent": pallet, "CycleActive": False, "Program": ""}
        else:
            known = {"PalletPresent": pallet, "CycleActive": True, "Program": recorded.cycle_program}
        self._tag_state[station_id] = known
        return known

    async def may_write(self, user: GatewayUser, value: ua.WriteValue) -> int | None:
        """Why ``user`` may not make this write (the status code to answer), or None: only a station's
        tags are writable, by the users who may report for the station, with a value of the tag's type
        and within the limits of the method argument of the same name. A refused write changes nothing."""
        assert self.space is not None
        if self.closing.is_set():  # shutting down: as for method calls, nothing new is taken
            return _HALTED
        found = self.space.tag_nodes.get(value.NodeId)
        if found is None or not user.may_report_for(found[0]):
            return _ACCESS_DENIED
        station, tag = found
        if value.AttributeId != ua.AttributeIds.Value:
            return None  # asyncua's access levels answer writes of other attributes
        refusal = _tag_write_problem(tag, value.Value.Value if value.Value else None)
        if refusal is None:
            return None
        status, message = refusal
        log.warning("tag_write_refused", station=station, tag=tag, status=ua.StatusCode(status).name, message=message)
        await self.space.events.raise_event(
            "RejectionEventType",
            f"write of {tag} at {station} refused ({Reason.INVALID_ARGUMENT.value}): {message}",
            {"Reason": Reason.INVALID_ARGUMENT.value, "Station": station, "ReportEventId": ""},
        )
        return status

    async def written(self, event: Any, dispatcher: Any) -> None:
        """PostWrite: turn edges of a station's tags into reports (from the tag state, not the edge).

        All tags a request writes are taken into the tag state first, then each station is reconciled
        once: the order of the nodes in a PLC's block does not matter (a cycle that starts in the same
        write as its Program starts with that program).
        """
        if not event.is_external or self.space is None:
            return
        written: dict[str, list[int]] = {}
        writes = zip(event.request_params.NodesToWrite, event.response_params, strict=False)
        for index, (write, result) in enumerate(writes):
            found = self.space.tag_nodes.get(write.NodeId)
            if found is None or not result.is_good():
                continue
            station, tag = found
            self._tag_state[station][tag] = write.Value.Value.Value if write.Value and write.Value.Value else None
            written.setdefault(station, []).append(index)
        user = event.user if isinstance(event.user, GatewayUser) else None
        for station, indexes in written.items():
            try:
                await self._reconcile_tags(station, user.name if user else "")
            except StoreUnavailable as exc:
                # The tags keep the values written, but their reports were not stored: the writes are
                # answered as failed, so the PLC writes the block again and the next write derives
                # the missing reports from the recorded state (nothing acknowledged is lost).
                log.error("tag_report_not_stored", station=station, error=str(exc))
                for index in indexes:
                    event.response_params[index] = ua.StatusCode(STORE_UNAVAILABLE)
            except Exception:
                log.exception("tag_reconcile_failed", station=station)
                for index in indexes:
                    event.response_params[index] = ua.StatusCode(ua.StatusCodes.BadInternalError)

    async def _reconcile_tags(self, station: str, actor: str) -> None:
        state = self._tag_state[station]
        # The committed view: a tag write is reconciled against what the gateway has stored, never
        # against a batch that is still being committed.
        recorded = self.writer.view.stations[station]
        present = str(state["PalletPresent"] or "")
        active = bool(state["CycleActive"])
        cycle_pallet, cycle_program = recorded.cycle_pallet, recorded.cycle_program
        reports: list[Report] = []
        if recorded.pallet and recorded.pallet != present:
            if cycle_pallet and cycle_pallet == recorded.pallet and not active:
                reports.append(self._tag_report(CycleEnded, station, recorded.pallet, cycle_program, CycleResult.OK))
            reports.append(self._tag_report(PalletDeparted, station, recorded.pallet))
        if present and recorded.pallet != present:
            reports.append(self._tag_report(PalletArrived, station, present))
        if present:
            if active and cycle_pallet != present:
                reports.append(self._tag_report(CycleStarted, station, present, str(state["Program"] or "")))
            elif not active and cycle_pallet and cycle_pallet == present:
                reports.append(self._tag_report(CycleEnded, station, present, cycle_program, CycleResult.OK))
        for report in reports:
            answer = await self.writer.submit(report, actor)
            if not answer.ok:
                log.warning(
                    "tag_report_refused",
                    station=station,
                    kind=report.kind,
                    reason=answer.reason,
                    message=answer.message,
                )

    def _tag_report(self, cls: type[Report], station: str, *args: Any) -> Report:
        self._tag_seq += 1
        return cls(station, f"tag:{self.writer.counter}:{self._tag_seq}", None, *args)


def _tag_write_problem(tag: str, variant: Any) -> tuple[int, str] | None:
    """Why a value may not be written to a station's tag, with the status code to answer; or None."""
    expected = TAG_TYPES[tag]
    vtype = getattr(variant, "VariantType", None)
    value = getattr(variant, "Value", None)
    if vtype is None or vtype is ua.VariantType.Null:
        return None  # asyncua's own rules: a Null value clears the tag
    if vtype is not expected or getattr(variant, "is_array", False) or isinstance(value, list):
        shape = "[]" if getattr(variant, "is_array", False) or isinstance(value, list) else ""
        return ua.StatusCodes.BadTypeMismatch, f"{tag} is a scalar {expected.name}; got {vtype.name}{shape}"
    rule = _TAG_RULES.get(tag)
    if rule is not None and isinstance(value, str):
        problem = rule.problem(value.strip())
        if problem:
            return ua.StatusCodes.BadOutOfRange, problem
    return None
