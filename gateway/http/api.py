"""The ERP API: orders in, the daily schedule, workorders out, cost reports (seed ``001``).

Every change is a command submitted to the one writer and answered only after it is committed; a
refusal is a problem with the same reason code OPC UA gives. Reads go to the store (what was
committed). Lists are pages in id order: ``?limit=`` (1..500) and ``?after=`` the previous page's
``next_after``.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the handlers' annotations at run time,
# and the dependencies they name (``Who``) are local to create_app.
from collections.abc import Awaitable, Callable, Sequence
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

from gateway import __version__, limits
from gateway.config import CellConfig, User
from gateway.errors import Reason
from gateway.http import models as M
from gateway.http.auth import REALM, Authenticator, BasicScheme, authenticated_user
from gateway.http.docs_pages import add_docs
from gateway.http.edge import Edge, RequestLog
from gateway.http.problems import PROBLEM_RESPONSES, install, refused
from gateway.orders.commands import (
    AddReplacementBooking,
    AssignSerials,
    BackOutJob,
    EditBooking,
    EditWorkorder,
    MarkWorkorderFilled,
    OrderCommand,
    ReceiveOrder,
    RunSchedule,
    SetScheduledWithoutBooking,
    UnassignSerial,
    UpdateOrder,
)
from gateway.security.logins import LoginGuard, login_guard
from gateway.service.writer import Answer, Writer
from gateway.storage import erp_queries as erp

Limit = Annotated[int, Query(ge=1, le=500, description="page size")]
After = Annotated[str | None, Query(max_length=2 * limits.MAX_ID_LENGTH, description="next_after of the previous page")]
WriteId = Annotated[str, Path(min_length=1, max_length=limits.MAX_ID_LENGTH, pattern=M.ID_PATTERN)]
JobId = Annotated[str, Path(min_length=1, max_length=limits.MAX_JOB_ID_LENGTH, pattern=M.ID_PATTERN)]
BookingId = Annotated[str, Path(min_length=1, max_length=2 * limits.MAX_ID_LENGTH, pattern=M.ID_PATTERN)]

DESCRIPTION = """\
The ERP boundary of one machining cell: bookings (demand in), the daily schedule of part jobs, and
workorders (finished serials out) with their cost reports. See docs/erp.md for a worked day.

Authentication: HTTP Basic, a user of the cell config with role `erp` or `engineer`.
Errors: `application/problem+json` (RFC 9457) with `reason`, the same stable code as the OPC UA
contract (`NotFound`, `DuplicateId`, `InvalidTransition`, `OrderFulfilled`, `InvalidArgument`, ...).
"""


def create_app(
    writer: Writer,
    engine: AsyncEngine,
    config: CellConfig,
    *,
    routers: Sequence[APIRouter] = (),
    logins: LoginGuard | None = None,
) -> FastAPI:
    """The ERP API on this writer (changes) and engine (reads), with the users, capacity and limits of ``config``.

    ``routers`` are served on the same port without the ERP credentials (the status page, metrics).
    ``logins`` checks the passwords (default: a guard of its own from ``config``; the gateway passes
    the one its OPC UA server uses, so back-offs and remembered logins are shared).
    """
    app = FastAPI(
        title="cell-gateway ERP API",
        version=__version__,
        description=DESCRIPTION,
        responses=PROBLEM_RESPONSES,
        docs_url=None,
        redoc_url=None,
    )
    add_docs(app)
    install(app)
    authenticator = Authenticator(config.users, logins if logins is not None else login_guard(config))
    api_routes: list[BaseRoute] = []

    def protected(scope: Scope) -> bool:
        # A path of the ERP API, whatever the method: its credentials are checked before anything else.
        return any(route.matches(scope)[0] is not Match.NONE for route in api_routes)

    app.add_middleware(
        Edge,
        authenticator=authenticator,
        protected=protected,
        max_body=config.limits.http_max_body_bytes,
        max_concurrent=config.limits.http_max_concurrent_requests,
    )
    app.add_middleware(RequestLog)  # outermost: it logs the edge's refusals too
    basic = BasicScheme(
        scheme_name="HTTPBasic", auto_error=False, realm=REALM, description="a user with role erp or engineer"
    )

    async def current_user(request: Request, _: Annotated[None, Depends(basic)]) -> User:
        # Authenticated by the Edge before the body was read; the scheme shows in the OpenAPI description.
        return authenticated_user(request)

    Who = Annotated[User, Depends(current_user)]
    api = APIRouter(dependencies=[Depends(current_user)])

    async def submit(command: OrderCommand, who: User) -> Answer:
        answer = await writer.submit(command, who.name)
        if answer.reason is not None:
            raise refused(answer.reason, answer.message)
        return answer

    async def read(query: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        async with engine.connect() as conn:
            return await query(conn, *args, **kwargs)

    async def page(query: Callable[..., Awaitable[tuple[list[Any], str | None]]], **kwargs: Any) -> dict[str, Any]:
        items, next_after = await read(query, **kwargs)
        return {"items": items, "next_after": next_after}

    # ------------------------------------------------------------------------------------- orders
    @api.post("/orders", status_code=201, response_model=M.Order, tags=["orders"])
    async def receive_order(body: M.OrderIn, who: Who) -> dict[str, Any]:
        """Receive an order: a booking and a workorder with the same id, due date, priority and parts."""
        await submit(ReceiveOrder(body.id, body.due, body.priority, dict(body.parts), body.casting), who)
        return {
            "booking": await read(erp.get_booking, body.id),
            "workorder": await read(erp.get_workorder, body.id),
        }

    @api.patch("/orders/{order_id}", response_model=M.OrderUpdated, tags=["orders"])
    async def update_order(order_id: WriteId, body: M.OrderUpdate, who: Who) -> dict[str, Any]:
        """New quantities for an order. An unscheduled booking is edited; once scheduled, the increase
        goes to an ``<id>-extra`` booking. The workorder takes the new quantities, never below the serials
        it holds. A filled workorder may be raised, not lowered: it is unfilled again (its cost report is
        dropped) and fills again from new serials, with a new report covering all of them.
        """
        answer = await submit(UpdateOrder(order_id, dict(body.parts), body.reason), who)
        return {
            "bookings": [await read(erp.get_booking, b) for b in answer.outputs["Bookings"]],
            "workorder": await read(erp.get_workorder, order_id),
        }

    # ----------------------------------------------------------------------------------- bookings
    @api.get("/bookings", response_model=M.Page[M.Booking], tags=["bookings"])
    async def list_bookings(
        scheduled: bool | None = None,
        due_before: date | None = None,
        part: Annotated[str | None, Query(max_length=limits.MAX_ID_LENGTH)] = None,
        after: After = None,
        limit: Limit = 100,
    ) -> dict[str, Any]:
        return await page(
            erp.list_bookings, scheduled=scheduled, due_before=due_before, part=part, after=after, limit=limit
        )

    @api.get("/bookings/{booking_id}", response_model=M.Booking, tags=["bookings"])
    async def get_booking(booking_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await read(erp.get_booking, booking_id)
        return result

    @api.patch("/bookings/{booking_id}", response_model=M.BookingEdited, tags=["bookings"])
    async def edit_booking(booking_id: BookingId, body: M.QuantityFix, who: Who) -> dict[str, Any]:
        """Quantity fix-up of an unscheduled booking (0 drops the part; a booking left empty is removed)."""
        answer = await submit(EditBooking(booking_id, body.part, body.quantity, body.reason), who)
        removed = bool(answer.outputs.get("Removed"))
        return {"booking": None if removed else await read(erp.get_booking, booking_id), "removed": removed}

    @api.post("/replacement-bookings", status_code=201, response_model=M.Booking, tags=["bookings"])
    async def add_replacement_booking(body: M.ReplacementIn, who: Who) -> dict[str, Any]:
        """A booking for scrapped parts (id ``<replaces or part>-repl-<n>``); workorders stay as they are."""
        command = AddReplacementBooking(
            part=body.part,
            due=body.due,
            reason=body.reason,
            quantity=body.quantity,
            priority=body.priority,
            replaces=body.replaces,
            casting=body.casting,
        )
        answer = await submit(command, who)
        result: dict[str, Any] = await read(erp.get_booking, answer.outputs["BookingId"])
        return result

    @api.get("/scheduled-without-bookings", response_model=M.Page[M.ScheduledWithoutBookings], tags=["bookings"])
    async def list_scheduled_without_bookings(after: After = None, limit: Limit = 100) -> dict[str, Any]:
        return await page(erp.list_scheduled_without_bookings, after=after, limit=limit)

    @api.get("/scheduled-without-bookings/{part}", response_model=M.ScheduledWithoutBookings, tags=["bookings"])
    async def get_scheduled_without_bookings(part: str) -> dict[str, Any]:
        """Scheduled parts without a booking for one part (0 when the table has no row for it)."""
        table: dict[str, int] = await read(erp.scheduled_without_bookings)
        return {"part": part, "quantity": table.get(part, 0)}

    @api.put("/scheduled-without-bookings/{part}", response_model=M.ScheduledWithoutBookings, tags=["bookings"])
    async def set_scheduled_without_bookings(part: WriteId, body: M.TableFix, who: Who) -> dict[str, Any]:
        """Quantity fix-up of the table, e.g. +1 for an extra or re-machined part at the outbound."""
        await submit(SetScheduledWithoutBooking(part, body.quantity, body.reason), who)
        table: dict[str, int] = await read(erp.scheduled_without_bookings)
        return {"part": part, "quantity": table.get(part, 0)}

    # ---------------------------------------------------------------------------------- schedules
    @api.post("/schedules", status_code=201, response_model=M.Schedule, tags=["schedules"])
    async def run_schedule(body: M.ScheduleIn, who: Who) -> dict[str, Any]:
        """The daily schedule: demand = unscheduled bookings (due before ``due_before``) - scheduled parts
        without bookings; filled by due date then priority into each resource group's capacity for the
        period (config: stations x hours_per_day x efficiency x expected_hours / 24); a released job per
        part that fits; bookings now covered marked scheduled; the table replaced. One transaction.
        """
        command = RunSchedule(
            capacity=erp.capacity_seconds(config, body.expected_hours),
            expected_hours=body.expected_hours,
            due_before=body.due_before,
            schedule_id=body.schedule_id or "",
        )
        answer = await submit(command, who)
        result: dict[str, Any] = await read(erp.get_schedule, answer.outputs["ScheduleId"])
        return result

    @api.get("/schedules", response_model=M.Page[M.Schedule], tags=["schedules"])
    async def list_schedules(after: After = None, limit: Limit = 100) -> dict[str, Any]:
        return await page(erp.list_schedules, after=after, limit=limit)

    @api.get("/schedules/{schedule_id}", response_model=M.Schedule, tags=["schedules"])
    async def get_schedule(schedule_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await read(erp.get_schedule, schedule_id)
        return result

    # --------------------------------------------------------------------------------- workorders
    @api.get("/workorders", response_model=M.Page[M.Workorder], tags=["workorders"])
    async def list_workorders(
        filled: bool | None = None,
        due_before: date | None = None,
        part: Annotated[str | None, Query(max_length=limits.MAX_ID_LENGTH)] = None,
        after: After = None,
        limit: Limit = 100,
    ) -> dict[str, Any]:
        return await page(
            erp.list_workorders, filled=filled, due_before=due_before, part=part, after=after, limit=limit
        )

    @api.get("/workorders/{workorder_id}", response_model=M.Workorder, tags=["workorders"])
    async def get_workorder(workorder_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await read(erp.get_workorder, workorder_id)
        return result

    @api.patch("/workorders/{workorder_id}", response_model=M.Workorder, tags=["workorders"])
    async def edit_workorder(workorder_id: WriteId, body: M.QuantityFix, who: Who) -> dict[str, Any]:
        """Quantity fix-up of an unfilled workorder (0 drops a part, never below the serials it holds)."""
        await submit(EditWorkorder(workorder_id, body.part, body.quantity, body.reason), who)
        result: dict[str, Any] = await read(erp.get_workorder, workorder_id)
        return result

    @api.post("/workorders/{workorder_id}/serials", response_model=M.Workorder, tags=["workorders"])
    async def assign_serials(workorder_id: WriteId, body: M.SerialsIn, who: Who) -> dict[str, Any]:
        """A supervisor assigns finished serials (GET /finished-serials) to this workorder, all or none."""
        await submit(AssignSerials(workorder_id, tuple(body.serials), body.reason), who)
        result: dict[str, Any] = await read(erp.get_workorder, workorder_id)
        return result

    @api.delete("/workorders/{workorder_id}/serials/{serial}", response_model=M.Workorder, tags=["workorders"])
    async def unassign_serial(
        workorder_id: WriteId,
        serial: Annotated[str, Path(min_length=1, max_length=limits.MAX_SERIAL_LENGTH)],
        reason: Annotated[str, Query(min_length=1, max_length=limits.MAX_TEXT_LENGTH)],
        who: Who,
    ) -> dict[str, Any]:
        """Take a tentatively assigned serial back out of an unfilled workorder."""
        await submit(UnassignSerial(serial, reason, workorder_id), who)
        result: dict[str, Any] = await read(erp.get_workorder, workorder_id)
        return result

    @api.post("/workorders/{workorder_id}/fill", response_model=M.Workorder, tags=["workorders"])
    async def fill_workorder(workorder_id: WriteId, body: M.FillIn, who: Who) -> dict[str, Any]:
        """Mark the workorder filled (short of its quantities too: audited). Its cost report is taken now."""
        await submit(MarkWorkorderFilled(workorder_id, body.reason), who)
        result: dict[str, Any] = await read(erp.get_workorder, workorder_id)
        return result

    @api.get("/workorders/{workorder_id}/cost-report", response_model=M.CostReport, tags=["workorders"])
    async def cost_report(workorder_id: str) -> dict[str, Any]:
        """Serials, accumulated elapsed and expected labor, elapsed machining and program cycle time."""
        result: dict[str, Any] = await read(erp.cost_report, workorder_id)
        return result

    @api.get("/reports/overruns", response_model=M.Overruns, tags=["workorders"])
    async def overruns(
        min_workorders: Annotated[int, Query(ge=2, le=100_000)] = 5,
        threshold: Annotated[float, Query(ge=0, le=1000, allow_inf_nan=False)] = 0.10,
        majority: Annotated[float, Query(gt=0.5, le=1, allow_inf_nan=False)] = 0.75,
        filled_since: datetime | None = None,
    ) -> dict[str, Any]:
        """Is elapsed time (labor; machining) *consistently* above expected over the filled workorders?

        Per kind, over all parts and per part: flagged when at least ``min_workorders`` count, their
        median overrun (elapsed/expected - 1) is above ``threshold`` and at least ``majority`` of them
        ran over. One workorder far over is never a finding on its own.
        """
        if filled_since is not None and filled_since.tzinfo is None:
            raise refused(Reason.INVALID_ARGUMENT, "filled_since needs a time zone (e.g. ...Z)")
        count, findings = await read(
            erp.overruns,
            min_workorders=min_workorders,
            threshold=threshold,
            majority=majority,
            filled_since=filled_since,
        )
        return {
            "workorders": count,
            "findings": [
                {
                    "kind": f.kind.value,
                    "part": f.part,
                    "workorders": f.workorders,
                    "skipped": f.skipped,
                    "above_expected": f.above_expected,
                    "share_above": f.share_above,
                    "median_overrun": f.median_overrun,
                    "mean_overrun": f.mean_overrun,
                    "consistent": f.consistent,
                }
                for f in findings
            ],
        }

    @api.get("/finished-serials", response_model=M.Page[M.FinishedSerial], tags=["workorders"])
    async def finished_serials(
        part: Annotated[str | None, Query(max_length=limits.MAX_ID_LENGTH)] = None,
        after: After = None,
        limit: Limit = 100,
    ) -> dict[str, Any]:
        """Finished serials not in any workorder yet, for the supervisor's fill."""
        return await page(erp.finished_serials, part=part, after=after, limit=limit)

    # --------------------------------------------------------------------------------------- jobs
    @api.get("/jobs", response_model=M.Page[M.Job], tags=["jobs"])
    async def list_jobs(
        state: Annotated[str | None, Query(max_length=16)] = None,
        part: Annotated[str | None, Query(max_length=limits.MAX_ID_LENGTH)] = None,
        after: After = None,
        limit: Limit = 100,
    ) -> dict[str, Any]:
        return await page(erp.list_jobs, state=state, part=part, after=after, limit=limit)

    @api.get("/jobs/{job_id}", response_model=M.Job, tags=["jobs"])
    async def get_job(job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await read(erp.get_job, job_id)
        return result

    @api.post("/jobs/{job_id}/back-out", response_model=M.BackOut, tags=["jobs"])
    async def back_out(job_id: JobId, body: M.BackOutIn, who: Who) -> dict[str, Any]:
        """Close the job and book what it had not started again (``<job>-backout-<n>``), in one step."""
        answer = await submit(BackOutJob(job_id, body.reason, body.due, body.priority), who)
        booking_id = answer.outputs["BookingId"]
        return {
            "job_id": job_id,
            "quantity": answer.outputs["Quantity"],
            "booking": await read(erp.get_booking, booking_id) if booking_id else None,
            "variance": answer.outputs["Variance"],
        }

    # -------------------------------------------------------------------------------------- audit
    @api.get("/audit", response_model=M.Page[M.AuditEntry], tags=["audit"])
    async def audit(
        subject: Annotated[str | None, Query(max_length=128)] = None,
        action: Annotated[str | None, Query(max_length=40)] = None,
        after: Annotated[int | None, Query(ge=0, le=2**62)] = None,
        limit: Limit = 100,
    ) -> dict[str, Any]:
        """Every manual edit of bookings, the table and workorders: who, when, why, before and after."""
        return await page(erp.list_audit, subject=subject, action=action, after=after, limit=limit)

    app.include_router(api)
    api_routes.extend(api.routes)
    for router in routers:
        app.include_router(router)
    return app
