"""A pure cell model of the demo config, driven by reports at explicit times."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from gateway.app import build_model
from gateway.cell.commands import Command
from gateway.cell.model import CellModel
from gateway.config import load_config
from gateway.jobs.commands import CreateJob, ReleaseJob
from gateway.tracking.tracker import Outcome
from tests.support import DEMO_CONFIG, T0, ModelParts


class Sim(ModelParts):
    """Applies commands to a CellModel with a clock that only moves when told to."""

    def __init__(self, **overrides: Any) -> None:
        config = load_config(DEMO_CONFIG, env={})
        if overrides:
            data = config.model_dump()
            for section, values in overrides.items():
                data[section].update(values)
            config = type(config).model_validate(data)
        self.config = config
        self.model: CellModel = build_model(config)
        self.now = T0
        self._ids = 0

    def at(self, seconds: float) -> datetime:
        """Move the clock forward by ``seconds`` and return the new time."""
        self.now += timedelta(seconds=seconds)
        return self.now

    def eid(self) -> str:
        self._ids += 1
        return f"e{self._ids}"

    def apply(self, command: Command, *, after: float = 0.0) -> Outcome:
        self.at(after)
        outcome = self.model.apply(command, self.now, "test")
        self.changes = self.model.drain()  # what the last command changed, events included
        return outcome

    def job(self, quantity: int = 10, **kwargs: Any) -> str:
        job_id: str = self.apply(
            CreateJob(part=kwargs.pop("part", "ABC123"), revision="A", quantity=quantity, **kwargs)
        ).outputs["JobId"]
        self.apply(ReleaseJob(job_id))
        return job_id
