"""Random command sequences against the JobBook: refusals change nothing, and the books always balance.

Invariants checked after every command:
- per job: started == its units, scrapped/finished == its scrapped/finished units, WIP == its live units
  (so WIP == started - scrapped - finished holds with real units behind every count);
- over all jobs, sum of WIP == live units of the cell;
- started - scrapped <= max_quantity for every job that was not the parent of a split since its last
  merge (a split recomputes the parent's cap from its lower quantity; for it the cap is checked at each
  start instead: a start needs room before it); a merge that would break the target's cap is refused
  (OrderFulfilled), so a merge target keeps the cap;
- a hold blocks all movement: a unit of a held job that had not begun its step never leaves it (only a
  step begun before the hold ends, passing its unit); a split of a held job gives a held child; a merge
  never moves held units into a job that is not held;
- JobTargetReached is raised exactly when a job's finished count reaches its ordered quantity;
- a unit's next_step never exceeds its job's routing: live units point into it, finished ones just past it,
  a unit in a step is at a station of that step's group;
- no unit skips a step: every StepRecorded is for exactly the step the model expects of that serial
  (0 after a start, +1 after each pass, the same after a fail, the same operation after a merge or a
  split without steps, the first step after a split to new steps);
- a job's routing never changes after release, whatever happens to templates or the process;
- the record of state changes (the JobStateChanged events) chains from None to the job's current state;
  Created and Released jobs (and jobs held from Released) have no units; templates referenced by a job
  are frozen or deprecated; a default template is usable;
- a live unit carries an open Lost Audit exactly when the model saw it flagged and not yet resolved by an
  engineer (activity on it never closes it, and is reported as LostAuditActivity), and no unit is
  flagged again while its audit is open;
- the book's indexes (units per job in the book's order, live units, open Lost Audits, jobs that are not
  Closed) equal what a scan of every job and unit finds, and stay so when a Closed job is retired from
  memory and adopted back from (a copy of) what was stored.
Each rule also checks its own outcome against the state before it (e.g. a Held job refuses starts with
JobOnHold, leaving a step is never refused, a merge of another revision never goes through).
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from gateway.errors import Reason, Refused
from gateway.jobs.book import NewJob
from gateway.jobs.events import (
    JobStateChanged,
    JobTargetReached,
    LostAuditActivity,
    LostAuditFlagged,
    LostAuditResolved,
    StepRecorded,
    UnitFinished,
    UnitScrapped,
    UnitStarted,
)
from gateway.jobs.model import (
    Cost,
    CostKind,
    JobState,
    RoutingSourceKind,
    Step,
    TemplateStatus,
    UnitStatus,
    max_quantity,
)
from tests.support import T0

from .demo_book import OP10, OP20, OP30, OP35, OP40, OP50, REWORK_OPS, STATIONS, make_book, make_layout, snapshot

SPECS = [("PX", "A"), ("PX", "B"), ("PY", "A")]
OPERATION_LISTS: list[tuple[str, ...]] = [
    (),
    ("OP10", "OP20", "OP30", "OP40", "OP50"),
    ("OP10", "OP20", "OP40"),
    ("OP10", "OP25", "OP30", "OP40", "OP50"),
    ("OP10", "OP99"),
]
STATION_IDS = [s.id for s in STATIONS]
GROUPS = {s.id: s.groups for s in STATIONS}
RUNNABLE = (JobState.RELEASED, JobState.RUNNING)
STATE_REASON = {
    JobState.CREATED: Reason.JOB_NOT_RELEASED,
    JobState.HOLD: Reason.JOB_ON_HOLD,
    JobState.CLOSED: Reason.JOB_CLOSED,
}
# A unit in WIP may not enter a step while its job is on hold; a Closed job's units may finish.
ENTRY_REASON = {JobState.CREATED: Reason.JOB_NOT_RELEASED, JobState.HOLD: Reason.JOB_ON_HOLD}


class JobBookMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.book = make_book()
        self.now: datetime = T0
        self.serial_seq = 0
        # Model of each live unit: which job it is in and which step index of that job it needs next.
        self.expected_next: dict[str, tuple[str, int]] = {}
        self.cap_exempt: set[str] = set()
        self.routing_at_release: dict[str, tuple[Step, ...]] = {}
        self.events_seen = 0
        self.open_audits: set[str] = set()
        self.reached: set[str] = set()  # jobs whose finished count reached the ordered quantity

    # ------------------------------------------------------------------ helpers
    def attempt(self, call: Callable[..., Any], *args: Any) -> tuple[Any, Refused | None]:
        """Run a command; a refusal must leave the whole book unchanged."""
        before = snapshot(self.book)
        refusal: Refused | None = None
        try:
            result = call(*args)
        except Refused as error:
            refusal = error
        # See which outcomes a run reached: pytest --hypothesis-show-statistics.
        event(f"{call.__name__}: {refusal.reason.value if refusal else 'done'}")
        if refusal is not None:
            assert refusal.message
            assert snapshot(self.book) == before, f"{call.__name__}{args} refused ({refusal!r}) but changed state"
            return None, refusal
        self.sync_events()
        return result, None

    def tick(self, data: st.DataObject) -> datetime:
        self.now += timedelta(seconds=data.draw(st.integers(0, 3600), label="seconds"))
        return self.now

    def pick_job(self, data: st.DataObject) -> str:
        """Mostly a job of the book, now and then one that does not exist."""
        if not self.book.jobs or data.draw(st.integers(0, 19), label="unknown job?") == 0:
            return "WO-404"
        return data.draw(st.sampled_from(sorted(self.book.jobs)), label="job")

    def pick_serial(self, data: st.DataObject) -> str:
        if not self.book.units or data.draw(st.integers(0, 19), label="unknown serial?") == 0:
            return "S-404"
        return data.draw(st.sampled_from(sorted(self.book.units)), label="serial")

    @initialize()
    def a_cell_at_work(self) -> None:
        """Running batches of two revisions of a part, released ones without units, a planned curated job.

        The running jobs' units passed their load step and wait for the mill: ready to split and merge.
        WO-F is held while Released: resumed, or merged into, it must come back right.
        """
        for job_id, revision, quantity, buffer, units in (
            ("WO-A", "A", 3, 50.0, 2),
            ("WO-B", "A", 2, 0.0, 1),
            ("WO-C", "B", 2, 2.0, 1),
            ("WO-E", "A", 2, 0.0, 0),
            ("WO-F", "A", 2, 0.0, 0),
        ):
            request = NewJob("PX", revision, quantity, job_id=job_id, yield_buffer_percent=buffer)
            self.book.create_job(request, T0, "planner")
            self.book.release(job_id, "manager", T0)
            self.routing_at_release[job_id] = self.book.jobs[job_id].routing
            for n in range(1, units + 1):
                self.book.start_unit(job_id, f"{job_id}-{n}", "L1", T0)
                self.book.leave_step(f"{job_id}-{n}", "L1", True, T0, 60.0)
        self.book.hold("WO-F", "fixture missing", "quality", T0)
        # PY rev A is curated: WO-D is planned from its default template, which that freezes.
        template = self.book.create_template("PY", "A", ("OP10", "OP20", "OP40"), T0)
        self.book.approve_template(template.id)
        self.book.set_default_template("PY", "A", template.id)
        self.book.create_job(NewJob("PY", "A", 2, job_id="WO-D"), T0, "planner")
        # PX rev A has an approved template that is not (yet) its default: the part runs automatic.
        self.book.approve_template(self.book.create_template("PX", "A", ("OP10", "OP20", "OP25", "OP40"), T0).id)
        self.sync_events()

    def sync_events(self) -> None:
        """Check new unit events against the model of where each unit is."""
        for new in self.book.events[self.events_seen :]:
            if isinstance(new, UnitStarted):
                assert new.serial not in self.expected_next
                self.expected_next[new.serial] = (new.job, 0)
            elif isinstance(new, StepRecorded):
                expected = self.expected_next[new.serial]
                assert (new.job, new.step_index) == expected, f"{new.serial} skipped a step: {new}"
                if new.passed:
                    self.expected_next[new.serial] = (new.job, new.step_index + 1)
            elif isinstance(new, UnitFinished):
                del self.expected_next[new.serial]
            elif isinstance(new, UnitScrapped):
                del self.expected_next[new.serial]
                self.open_audits.discard(new.serial)
            elif isinstance(new, LostAuditFlagged):
                assert new.serial not in self.open_audits, f"{new.serial} flagged twice"
                self.open_audits.add(new.serial)
            elif isinstance(new, LostAuditResolved):
                self.open_audits.discard(new.serial)
            elif isinstance(new, LostAuditActivity):
                assert new.serial in self.open_audits, f"activity reported for {new.serial} without an open audit"
            elif isinstance(new, JobTargetReached):
                job = self.book.jobs[new.job]
                assert new.job not in self.reached, f"{new.job} reached its target twice without falling back"
                assert new.finished >= new.quantity == job.quantity
        self.events_seen = len(self.book.events)
        for job_id, job in self.book.jobs.items():
            if job.target_reached:
                self.reached.add(job_id)
            else:
                self.reached.discard(job_id)

    # ------------------------------------------------------------------ templates and the process
    @rule(data=st.data())
    def create_template(self, data: st.DataObject) -> None:
        part, revision = data.draw(st.sampled_from(SPECS))
        operations = data.draw(st.sampled_from(OPERATION_LISTS))
        template, refusal = self.attempt(self.book.create_template, part, revision, operations, self.tick(data))
        if refusal is None:
            assert template.status is TemplateStatus.DRAFT

    @rule(data=st.data())
    def template_command(self, data: st.DataObject) -> None:
        if data.draw(st.integers(0, 19), label="unknown template?") == 0:
            template_id = "PX/A/v99"
        else:
            template_id = data.draw(st.sampled_from(sorted(self.book.templates)), label="template")
        action = data.draw(st.sampled_from(["approve", "default", "deprecate", "edit"]))
        existing = self.book.templates.get(template_id)
        status = existing.status if existing else None
        if action == "approve":
            _, refusal = self.attempt(self.book.approve_template, template_id)
            assert (refusal is None) == (status is TemplateStatus.DRAFT)
        elif action == "default":
            if existing is not None and data.draw(st.booleans(), label="its own spec"):
                part, revision = existing.part, existing.revision
            else:
                part, revision = data.draw(st.sampled_from(SPECS))
            _, refusal = self.attempt(self.book.set_default_template, part, revision, template_id)
            if refusal is None:
                assert existing is not None
                assert existing.usable
            elif existing is not None and (existing.part, existing.revision) == (part, revision):
                assert refusal.reason is Reason.TEMPLATE_NOT_APPROVED
        elif action == "deprecate":
            _, refusal = self.attempt(self.book.deprecate_template, template_id)
            assert (refusal is None) == (existing is not None and status is not TemplateStatus.DEPRECATED)
        else:
            operations = data.draw(st.sampled_from(OPERATION_LISTS))
            _, refusal = self.attempt(self.book.edit_template, template_id, operations)
            if status is TemplateStatus.FROZEN:
                assert refusal is not None
                assert refusal.reason is Reason.TEMPLATE_FROZEN
            if refusal is None:
                assert status is TemplateStatus.DRAFT

    @rule(data=st.data())
    def promote(self, data: st.DataObject) -> None:
        job_id = self.pick_job(data)
        template, refusal = self.attempt(self.book.promote_routing, job_id, self.tick(data))
        if refusal is None:
            assert template.status is TemplateStatus.DRAFT
            assert [s.operation for s in template.steps] == [s.operation for s in self.book.jobs[job_id].routing]

    @rule(extended=st.booleans())
    def change_process(self, extended: bool) -> None:
        """The shop edits its process configuration: add (or drop) OP35 deburr."""
        process = (OP10, OP20, OP30, OP35, OP40, OP50) if extended else (OP10, OP20, OP30, OP40, OP50)
        self.book.layout = make_layout(process)

    # ------------------------------------------------------------------ jobs
    @rule(data=st.data())
    def create_job(self, data: st.DataObject) -> None:
        part, revision = data.draw(st.sampled_from(SPECS))
        request = NewJob(
            part,
            revision,
            quantity=data.draw(st.integers(0, 4), label="quantity"),
            job_id=data.draw(st.sampled_from(["", "", "", "WO-1", "J-0002"]), label="job_id"),
            yield_buffer_percent=data.draw(st.sampled_from([0.0, 2.0, 50.0, None]), label="buffer"),
            operations=data.draw(st.sampled_from(OPERATION_LISTS), label="operations"),
        )
        spec = self.book.specs.get((part, revision))
        default = spec.default_template_id if spec else ""
        job, refusal = self.attempt(self.book.create_job, request, self.tick(data), "planner")
        if refusal is not None:
            return
        assert job.state is JobState.CREATED
        assert request.quantity >= 1
        if request.operations:
            assert job.source.kind is RoutingSourceKind.CUSTOM
            assert tuple(s.operation for s in job.routing) == request.operations
        elif default:
            assert job.source.template_id == default
            assert job.routing == self.book.templates[default].steps
        else:
            assert job.source.kind is RoutingSourceKind.AUTOMATIC
            assert job.routing == self.book.layout.process

    @rule(data=st.data())
    def replace_routing(self, data: st.DataObject) -> None:
        job_id = self.pick_job(data)
        operations = data.draw(st.sampled_from(OPERATION_LISTS))
        state = self.book.jobs[job_id].state if job_id in self.book.jobs else None
        _, refusal = self.attempt(self.book.replace_routing, job_id, operations, "engineer", self.tick(data))
        if refusal is None:
            assert state is JobState.CREATED

    @rule(data=st.data())
    def state_command(self, data: st.DataObject) -> None:
        action = data.draw(st.sampled_from(["release", "hold", "resume", "close"]))
        # Now and then a job the action suits (a held job to resume, a planned one to release).
        suits = {"release": [JobState.CREATED], "hold": list(RUNNABLE), "resume": [JobState.HOLD]}.get(action, [])
        suited = sorted(j.id for j in self.book.jobs.values() if j.state in suits)
        if bool(suited) and data.draw(st.booleans(), label="a job it suits?"):
            job_id = data.draw(st.sampled_from(suited), label="job")
        else:
            job_id = self.pick_job(data)
        job = self.book.jobs.get(job_id)
        state, held_from = (job.state, job.held_from) if job else (None, None)
        now = self.tick(data)
        if action == "release":
            _, refusal = self.attempt(self.book.release, job_id, "manager", now)
            allowed = state is JobState.CREATED
        elif action == "hold":
            _, refusal = self.attempt(self.book.hold, job_id, "quality issue", "quality", now)
            allowed = state in RUNNABLE
        elif action == "resume":
            _, refusal = self.attempt(self.book.resume, job_id, "quality", now)
            allowed = state is JobState.HOLD
        else:
            wip = job.wip if job is not None else 0
            result, refusal = self.attempt(self.book.close, job_id, "short-closed", "erp", now)
            # a held job with units in WIP is not closed: that would release them
            allowed = state is not None and state is not JobState.CLOSED and not (state is JobState.HOLD and wip)
        assert (refusal is None) == allowed, (action, state, refusal)
        if job is None:
            assert refusal is not None
            assert refusal.reason is Reason.NOT_FOUND
            return
        if refusal is not None:
            assert refusal.reason is STATE_REASON.get(state, Reason.INVALID_TRANSITION)  # type: ignore[arg-type]
            return
        last = [e for e in self.book.events if isinstance(e, JobStateChanged)][-1]
        assert (last.job, last.from_state, last.at) == (job_id, state, now)
        if action == "release":
            self.routing_at_release[job_id] = job.routing
        if action == "resume":
            assert job.state is held_from
        if action == "close":
            assert result.wip == job.wip
            assert result.freed == max(0, job.quantity - (job.started - job.scrapped))

    # ------------------------------------------------------------------ units
    @rule(data=st.data())
    def start_unit(self, data: st.DataObject) -> None:
        job_id = self.pick_job(data)
        if data.draw(st.integers(0, 5), label="duplicate serial?") == 0:
            serial = self.pick_serial(data)
        else:
            self.serial_seq += 1
            serial = f"S{self.serial_seq}"
        station = data.draw(st.sampled_from(["L1", "L1", "L1", "L2", "M1", "C1"]), label="station")
        job = self.book.jobs.get(job_id)
        room, state = (job.room, job.state) if job else (0, None)
        unit, refusal = self.attempt(self.book.start_unit, job_id, serial, station, self.tick(data))
        if state in STATE_REASON:
            assert refusal is not None
            assert refusal.reason is STATE_REASON[state]
        if refusal is None:
            assert job is not None
            assert state in RUNNABLE
            assert room >= 1, "a unit started with no room under the cap"
            assert job.state is JobState.RUNNING
            assert (unit.status, unit.next_step, unit.station) == (UnitStatus.IN_STEP, 0, station)
        elif refusal.reason is Reason.ORDER_FULFILLED:
            assert room == 0

    @rule(data=st.data())
    def enter_step(self, data: st.DataObject) -> None:
        serial = self.pick_serial(data)
        station = data.draw(st.sampled_from(STATION_IDS), label="station")
        program = data.draw(st.sampled_from([None, "PRG-MILL-100", "prg-wash-1", "PRG-REWORK", "PRG-X"]))
        self._enter(data, serial, station, program)

    def _enter(self, data: st.DataObject, serial: str, station: str, program: str | None) -> None:
        unit = self.book.units.get(serial)
        job = self.book.jobs[unit.job_id] if unit else None
        status = unit.status if unit else None
        _, refusal = self.attempt(self.book.enter_step, serial, station, self.tick(data), program)
        if job is not None and job.state in ENTRY_REASON:
            assert refusal is not None
            assert refusal.reason is ENTRY_REASON[job.state]
        if refusal is None:
            assert unit is not None
            assert job is not None
            assert status is UnitStatus.WAITING
            step = job.routing[unit.next_step]
            assert step.group in GROUPS[station]
            assert program is None or not step.program or program.casefold() == step.program.casefold()

    @rule(data=st.data(), passed=st.booleans())
    def leave_step(self, data: st.DataObject, passed: bool) -> None:
        serial = self.pick_serial(data)
        station = data.draw(st.sampled_from(STATION_IDS), label="station")
        elapsed = data.draw(st.sampled_from([None, 5.0, 60.0]), label="elapsed")
        self._leave(data, serial, station, passed, elapsed)

    def _leave(self, data: st.DataObject, serial: str, station: str, passed: bool, elapsed: float | None) -> None:
        unit = self.book.units.get(serial)
        held = unit is not None and self.book.jobs[unit.job_id].state is JobState.HOLD
        begun = unit is not None and unit.status is UnitStatus.IN_STEP
        before = (unit.next_step, unit.status, unit.failed_attempts) if unit else None
        record, refusal = self.attempt(self.book.leave_step, serial, station, passed, self.tick(data), elapsed)
        if unit is None:
            assert refusal is not None
            return
        assert refusal is None, f"leaving a step is a fact and was refused: {refusal!r}"
        if held and not begun:
            assert record is None, f"{serial} of a held job left a step it had not begun"
            assert (unit.next_step, unit.status, unit.failed_attempts) == before
        if record is not None:
            assert record.passed is passed

    @rule(data=st.data(), passed=st.booleans())
    def work_unit(self, data: st.DataObject, passed: bool) -> None:
        """A unit does its next step where it should: enter at a station of the step's group, then leave."""
        live = sorted(s for s, u in self.book.units.items() if u.live)
        if not live:
            return
        serial = data.draw(st.sampled_from(live), label="serial")
        unit = self.book.units[serial]
        step = self.book.jobs[unit.job_id].routing[unit.next_step]
        stations = [s for s in STATION_IDS if step.group in GROUPS[s]]
        station = unit.station or data.draw(st.sampled_from(stations), label="station")
        if unit.status is UnitStatus.WAITING:
            self._enter(data, serial, station, step.program.lower() or None)
        self._leave(data, serial, station, passed, 10.0)

    @rule(data=st.data())
    def scrap(self, data: st.DataObject) -> None:
        serial = self.pick_serial(data)
        unit = self.book.units.get(serial)
        live = unit.live if unit else False
        _, refusal = self.attempt(self.book.scrap, serial, "crash", self.tick(data))
        assert (refusal is None) == live

    # ------------------------------------------------------------------ split and merge
    def cost_of_everything(self) -> tuple[float, ...]:
        """Every unit's times summed: a split or merge moves cost with the units, never makes or loses it."""
        total = Cost()
        for unit in self.book.units.values():
            total.add(unit.cost)
        return tuple(round(total.elapsed(k), 6) for k in CostKind) + tuple(
            round(total.expected(k), 6) for k in CostKind
        )

    @rule(data=st.data(), quantity=st.integers(0, 4))
    def split_quantity(self, data: st.DataObject, quantity: int) -> None:
        job_id = self.pick_job(data)
        parent = self.book.jobs.get(job_id)
        before = (parent.quantity, parent.unstarted, parent.state) if parent else None
        operations = data.draw(st.sampled_from([(), ("OP10", "OP20", "OP40")]), label="operations")
        child, refusal = self.attempt(self.book.split, job_id, (), operations, "planner", self.tick(data), quantity)
        if refusal is not None:
            return
        assert parent is not None
        assert before is not None
        assert 1 <= quantity <= before[1]
        assert parent.quantity == before[0] - quantity
        assert (child.quantity, child.started, child.max_quantity) == (quantity, 0, quantity)
        assert child.state is (JobState.HOLD if before[2] is JobState.HOLD else JobState.RELEASED)
        self.routing_at_release[child.id] = child.routing

    @rule(data=st.data())
    def split(self, data: st.DataObject) -> None:
        job_id = self.pick_job(data)
        waiting = sorted(u.serial for u in self.book.units_of(job_id) if u.status is UnitStatus.WAITING)
        if bool(waiting) and data.draw(st.integers(0, 3), label="waiting units only?") != 0:
            serials = data.draw(st.lists(st.sampled_from(waiting), min_size=1, max_size=3, unique=True))
        else:  # mostly refused: in a step, done, of another job, twice, none at all
            candidates = [*sorted(u.serial for u in self.book.units_of(job_id)), self.pick_serial(data)]
            serials = data.draw(st.lists(st.sampled_from(candidates), max_size=3), label="serials")
        operations = data.draw(st.sampled_from([(), REWORK_OPS, ("OP10", "OP99")]), label="operations")
        parent = self.book.jobs.get(job_id)
        needed = {s: self.expected_next.get(s) for s in serials}
        parent_routing = parent.routing if parent else ()
        cost = self.cost_of_everything()
        child, refusal = self.attempt(self.book.split, job_id, serials, operations, "engineer", self.tick(data))
        if refusal is not None:
            return
        assert self.cost_of_everything() == cost
        assert parent is not None
        for serial in serials:
            before = needed[serial]
            assert before is not None
            assert before[0] == job_id
        self.cap_exempt.add(job_id)
        self.routing_at_release[child.id] = child.routing
        assert child.state is (JobState.HOLD if parent.state is JobState.HOLD else JobState.RUNNING)
        offset = min(index for _, index in needed.values())  # type: ignore[misc]
        for serial in serials:
            _, old = needed[serial]  # type: ignore[misc]
            new = 0 if operations else old - offset
            if not operations:
                assert child.routing[new] == parent_routing[old]
            assert self.book.units[serial].next_step == new
            self.expected_next[serial] = (child.id, new)

    @rule(data=st.data())
    def merge(self, data: st.DataObject) -> None:
        target_id = self.pick_job(data)
        target = self.book.jobs.get(target_id)
        same = sorted(
            j.id
            for j in self.book.jobs.values()
            if target and j.id != target_id and (j.part, j.revision) == (target.part, target.revision)
        )
        if bool(same) and data.draw(st.booleans(), label="same part revision?"):
            source_id = data.draw(st.sampled_from(same), label="source")
        else:
            source_id = self.pick_job(data)
        source = self.book.jobs.get(source_id)
        moving = {s: n for s, n in self.expected_next.items() if n[0] == source_id}
        source_routing = source.routing if source else ()
        counts = (source.started, source.scrapped, source.finished) if source else (0, 0, 0)
        target_counts = (target.started, target.scrapped, target.finished) if target else (0, 0, 0)
        states = (target.state if target else None, source.state if source else None)
        in_cap = cap = 0
        if source and target:
            cap = max_quantity(target.quantity + source.quantity, target.yield_buffer_percent)
            in_cap = target.started + source.started - target.scrapped - source.scrapped
        cost = self.cost_of_everything()
        _, refusal = self.attempt(self.book.merge, target_id, source_id, "engineer", self.tick(data))
        assert self.cost_of_everything() == cost
        if refusal is not None:
            if source and target and (source.part, source.revision) != (target.part, target.revision):
                assert refusal.reason in (Reason.MIXED_MERGE, Reason.JOB_CLOSED, Reason.JOB_NOT_RELEASED)
            if refusal.reason is Reason.ORDER_FULFILLED:
                assert in_cap > cap
            return
        assert in_cap <= cap, "a merge broke the target's cap"
        assert not (states[1] is JobState.HOLD and states[0] is not JobState.HOLD), "a merge released held units"
        assert source is not None
        assert target is not None
        assert (source.part, source.revision) == (target.part, target.revision)
        assert source.state is JobState.CLOSED
        assert (target.started, target.scrapped, target.finished) == tuple(
            a + b for a, b in zip(target_counts, counts, strict=True)
        )
        self.cap_exempt.discard(target_id)
        for serial, (_, old) in moving.items():
            unit = self.book.units[serial]
            assert target.routing[unit.next_step].operation == source_routing[old].operation
            self.expected_next[serial] = (target_id, unit.next_step)

    # ------------------------------------------------------------------ stale WIP
    @rule(days=st.integers(0, 40), threshold=st.sampled_from([1, 30]))
    def flag_stale(self, days: int, threshold: int) -> None:
        self.now += timedelta(days=days)
        already = {s for s, u in self.book.units.items() if u.audit_flagged}
        flagged, refusal = self.attempt(self.book.flag_stale, self.now, timedelta(days=threshold))
        assert refusal is None
        for flag in flagged:
            assert flag.serial not in already
            assert flag.idle_seconds > threshold * 86400
            assert self.book.units[flag.serial].live

    @rule(data=st.data(), outcome=st.sampled_from(["found", "LOST", "maybe"]))
    def resolve_audit(self, data: st.DataObject, outcome: str) -> None:
        open_audits = sorted(s for s, u in self.book.units.items() if u.audit_flagged)
        if bool(open_audits) and data.draw(st.booleans(), label="an open audit?"):
            serial = data.draw(st.sampled_from(open_audits), label="serial")
        else:
            serial = self.pick_serial(data)
        unit = self.book.units.get(serial)
        flagged = unit.audit_flagged if unit else False
        result, refusal = self.attempt(self.book.resolve_audit, serial, outcome, "auditor", self.tick(data))
        if refusal is None:
            assert flagged
            assert not result.audit_flagged
            if outcome == "LOST":
                assert result.status is UnitStatus.SCRAPPED

    # ------------------------------------------------------------------ memory
    @rule(data=st.data())
    def retire_and_adopt_back(self, data: st.DataObject) -> None:
        """The writer saved everything (dirty cleared); a retirable job leaves memory and comes back."""
        self.book.dirty.clear()
        retirable = sorted(j for j in self.book.jobs if self.book.retirable(j))
        event(f"retirable jobs: {min(len(retirable), 3)}")
        if not retirable:
            return
        job_id = data.draw(st.sampled_from(retirable), label="retire")
        job = self.book.jobs[job_id]
        assert job.state is JobState.CLOSED
        units = self.book.units_of(job_id)
        assert not any(u.live for u in units)
        stored = copy.deepcopy((job, units))
        assert self.book.retire(job_id) == [u.serial for u in units]
        assert job_id not in self.book.jobs
        assert not any(u.serial in self.book.units for u in units)
        assert self.book.units_of(job_id) == []
        self.indexes_match_a_full_scan()
        before = snapshot(self.book)
        self.book.adopt([stored[0]], stored[1])
        assert self.book.jobs[job_id] == job
        assert self.book.units_of(job_id) == units
        assert not self.book.dirty.jobs
        assert not self.book.dirty.units
        self.book.adopt([copy.deepcopy(job)], copy.deepcopy(units))  # held already: kept as it is
        assert self.book.jobs[job_id] is stored[0]
        assert snapshot(self.book) != before

    # ------------------------------------------------------------------ invariants
    @invariant()
    def indexes_match_a_full_scan(self) -> None:
        book = self.book
        every = list(book.units.values())
        for job_id in book.jobs:
            assert [u.serial for u in book.units_of(job_id)] == [u.serial for u in every if u.job_id == job_id]
            scanned = [u for u in every if u.job_id == job_id]
            assert all(a is b for a, b in zip(book.units_of(job_id), scanned, strict=True))
        assert sum(len(book.units_of(j)) for j in book.jobs) == len(every)
        assert [u.serial for u in book.live_units()] == [u.serial for u in every if u.live]
        assert [u.serial for u in book.open_audits()] == [u.serial for u in every if u.audit_flagged]
        assert [j.id for j in book.open_jobs()] == [j.id for j in book.jobs.values() if j.state is not JobState.CLOSED]

    @invariant()
    def counts_match_the_units(self) -> None:
        by_job: dict[str, Counter[UnitStatus]] = {job_id: Counter() for job_id in self.book.jobs}
        for unit in self.book.units.values():
            by_job[unit.job_id][unit.status] += 1
        live_total = 0
        for job_id, job in self.book.jobs.items():
            units = by_job[job_id]
            live = units[UnitStatus.WAITING] + units[UnitStatus.IN_STEP]
            assert job.started == sum(units.values()), job_id
            assert job.scrapped == units[UnitStatus.SCRAPPED], job_id
            assert job.finished == units[UnitStatus.FINISHED], job_id
            assert job.wip == job.started - job.scrapped - job.finished == live, job_id
            assert sum(count for _, count in self.book.wip_by_step(job_id)) == live
            live_total += job.wip
        assert live_total == sum(1 for u in self.book.units.values() if u.live)

    @invariant()
    def the_cap_holds(self) -> None:
        for job_id, job in self.book.jobs.items():
            if job_id not in self.cap_exempt:
                assert job.started - job.scrapped <= job.max_quantity, job_id

    @invariant()
    def units_stay_on_their_routing(self) -> None:
        for serial, unit in self.book.units.items():
            routing = self.book.jobs[unit.job_id].routing
            assert 0 <= unit.next_step <= len(routing)
            if unit.live:
                assert unit.next_step < len(routing)
                assert self.expected_next[serial] == (unit.job_id, unit.next_step), serial
            if unit.status is UnitStatus.FINISHED:
                assert unit.next_step == len(routing)
            if unit.status is UnitStatus.IN_STEP:
                assert routing[unit.next_step].group in GROUPS[unit.station]
            else:
                assert unit.station == ""
        assert set(self.expected_next) == {s for s, u in self.book.units.items() if u.live}
        assert {s for s, u in self.book.units.items() if u.live and u.audit_flagged} == {
            s for s in self.open_audits if self.book.units[s].live
        }

    @invariant()
    def routings_are_locked_from_release(self) -> None:
        for job_id, routing in self.routing_at_release.items():
            assert self.book.jobs[job_id].routing == routing, job_id

    @invariant()
    def state_changes_chain_to_the_current_state(self) -> None:
        last: dict[str, JobState] = {}
        for change in self.book.events:
            if not isinstance(change, JobStateChanged):
                continue
            assert change.from_state == last.get(change.job)
            last[change.job] = change.to_state
            assert change.actor
            assert change.reason
        for job_id, job in self.book.jobs.items():
            assert last[job_id] is job.state
            if job.state is JobState.HOLD:
                assert job.held_from in RUNNABLE
            else:
                assert job.held_from is None
            if job.state in (JobState.CREATED, JobState.RELEASED) or job.held_from is JobState.RELEASED:
                assert job.started == 0, f"{job_id} is {job.state} with units"

    @invariant()
    def templates_in_use_are_frozen(self) -> None:
        for job in self.book.jobs.values():
            if job.source.kind is RoutingSourceKind.TEMPLATE:
                status = self.book.templates[job.source.template_id].status
                assert status in (TemplateStatus.FROZEN, TemplateStatus.DEPRECATED)
        for spec in self.book.specs.values():
            if spec.default_template_id:
                template = self.book.templates[spec.default_template_id]
                assert template.usable
                assert (template.part, template.revision) == spec.key


JobBookMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestJobBook = JobBookMachine.TestCase
