"""Every command the cell applies, in one union, and the one registry of their kinds.

A command is a station report (:mod:`gateway.tracking.reports`), a job command (:mod:`gateway.jobs.commands`)
or an order command (:mod:`gateway.orders.commands`). Each class names its ``kind``; the event log stores
that name, and :mod:`gateway.cell.codec` finds the class again through :data:`COMMAND_TYPES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from gateway.jobs.commands import JOB_COMMAND_TYPES, JobCommand
from gateway.orders.commands import ORDER_COMMAND_TYPES, OrderCommand
from gateway.tracking.reports import REPORT_TYPES, Report

Command = Report | JobCommand | OrderCommand


def _registry() -> Mapping[str, type[Command]]:
    merged: dict[str, type[Command]] = {}
    for table in (REPORT_TYPES, JOB_COMMAND_TYPES, ORDER_COMMAND_TYPES):
        for kind, cls in table.items():
            if kind in merged:  # a kind names one class, or the log could not be read back
                raise RuntimeError(f"command kind {kind!r} is defined twice")
            merged[kind] = cls
    return MappingProxyType(merged)


#: kind -> class, for every command; built once at import, never changed.
COMMAND_TYPES: Mapping[str, type[Command]] = _registry()

__all__ = ["COMMAND_TYPES", "Command", "JobCommand", "OrderCommand", "Report"]
