"""Building the domain from the config: the one place that knows both."""

from __future__ import annotations

from datetime import timedelta

from gateway.config import CellConfig
from gateway.jobs.book import JobBook
from gateway.jobs.layout import CellLayout, StationInfo
from gateway.jobs.model import Step, StepKind
from gateway.orders.commands import ORDER_COMMAND_TYPES
from gateway.orders.model import OrderBook
from gateway.service.replay import EXTRA_COMMAND_TYPES
from gateway.tracking.cell import CellTracker, TrackingRules
from gateway.tracking.model import CellModel

# The orders commands are logged like job commands; a replay of the log must know them.
EXTRA_COMMAND_TYPES.update(ORDER_COMMAND_TYPES)


def layout_from(config: CellConfig) -> CellLayout:
    stations = [StationInfo(s.id, s.kind, frozenset(s.groups)) for s in config.stations]
    process = [
        Step(
            operation=op.code,
            name=op.name,
            group=op.group,
            kind=StepKind(op.kind),
            program=op.program,
            expected_seconds=op.expected_seconds,
        )
        for op in config.operations
    ]
    return CellLayout.build(stations, process, config.pallets)


def build_model(config: CellConfig) -> CellModel:
    book = JobBook(
        layout_from(config),
        require_approved_templates=config.cell.require_approved_templates,
        default_yield_buffer_percent=config.cell.default_yield_buffer_percent,
    )
    rules = TrackingRules(
        cell_name=config.cell.name,
        serial_format=config.cell.serial_format,
        source_time_tolerance=timedelta(seconds=config.cell.source_time_tolerance_seconds),
        units_per_pallet=config.cell.units_per_pallet,
    )
    return CellModel(
        book,
        CellTracker(book, rules),
        OrderBook(),
        assign_workorder_at_unload=config.cell.assign_workorder_at_unload,
    )
