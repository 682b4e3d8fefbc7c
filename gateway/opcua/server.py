"""The gateway's OPC UA server: the address space of docs/opcua.md, built from the cell's config.

An adapter only: it checks who calls and what they send, turns calls into commands for the writer,
and turns answers into OPC UA results. Node ids are string ids under the gateway namespace that follow
the browse path (``Cell/Stations/L1``), so a PLC programmer can write them down; they are the same
across restarts.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

from asyncua import Node, ua
from asyncua.common.callback import CallbackType
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway import __version__, limits
from gateway.cell.commands import Command
from gateway.config import CellConfig
from gateway.errors import Reason
from gateway.jobs.commands import (
    ApproveTemplate,
    CloseJob,
    CreateJob,
    CreateTemplate,
    DeprecateTemplate,
    HoldJob,
    MergeJobs,
    PromoteRouting,
    ReleaseJob,
    ResolveAudit,
    ResumeJob,
    SetDefaultTemplate,
    SplitJob,
)
from gateway.jobs.events import (
    JobStateChanged,
    JobTargetReached,
    LostAuditActivity,
    LostAuditFlagged,
    UnitFinished,
)
from gateway.jobs.model import JobState
from gateway.logging import get_logger
from gateway.opcua.arguments import Arg, Kind, Malformed, argument_descriptions, parse
from gateway.opcua.events import EventTypes, create_event_types
from gateway.opcua.identity import (
    ConfigUserManager,
    GatewayInternalServer,
    GatewayUser,
    current_user,
    session_class,
)
from gateway.opcua.status import OVERLOADED, STORE_UNAVAILABLE, status_of
from gateway.opcua.transport import Edge, GatewayServer, install
from gateway.security.logins import LoginGuard, login_guard
from gateway.service.answers import safe_text
from gateway.service.views import CellView, JobView
from gateway.service.writer import Answer, Applied, Committed, Overloaded, StoreUnavailable, Writer
from gateway.tracking.reports import (
    CycleEnded,
    CycleResult,
    CycleStarted,
    LoadCompleted,
    PalletArrived,
    PalletDeparted,
    Report,
    ScanIn,
    ScanOut,
    ScanResult,
    Scrap,
    StartUnit,
)

log = get_logger(__name__)

NAMESPACE_URI = "urn:cell-gateway"
# The server's BuildInfo (Server/ServerStatus/BuildInfo) and the ProductUri of its endpoints.
PRODUCT_NAME = "cell-gateway"
PRODUCT_URI = "urn:cell-gateway"
MANUFACTURER_NAME = "cell-gateway project"

SECURE_POLICIES = [
    ua.SecurityPolicyType.Basic256Sha256_Sign,
    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
]

# A station's writable tags (contract: Tags).
TAG_TYPES = {
    "PalletPresent": ua.VariantType.String,
    "CycleActive": ua.VariantType.Boolean,
    "Program": ua.VariantType.String,
}
EVENT_ID = Arg("EventId", Kind.ID, "unique per station, e.g. the PLC's own counter", rule=limits.EVENT_ID)
SOURCE_TIME = Arg(
    "SourceTime", Kind.TIME, "when it happened by the PLC's clock; Null or left out = time of receipt", optional=True
)
PALLET = Arg("Pallet", Kind.ID, "pallet id, e.g. P3", rule=limits.PALLET)
SERIAL = Arg("Serial", Kind.ID, "unit serial", rule=limits.SERIAL)
JOB_ID = Arg("JobId", Kind.ID, "job id", rule=limits.JOB_ID)
REASON = Arg("Reason", Kind.ID, rule=limits.REASON)
PROGRAM = limits.PROGRAM

STATION_ROLES = ("plc", "operator", "engineer")
JOB_ROLES = ("engineer", "erp")
PART_ROLES = ("engineer",)
READ_ROLES = ("plc", "operator", "engineer", "erp")


@dataclass(frozen=True, slots=True)
class Method:
    """One OPC UA method: its arguments, who may call it, and how a call becomes a command."""

    name: str
    inputs: tuple[Arg, ...]
    outputs: tuple[Arg, ...]
    roles: tuple[str, ...]
    build: Callable[[str, list[Any]], Command | str]  # (station or "", values) -> command, or a refusal text
    station_scoped: bool = False


def _no_outputs(answer: Answer) -> list[ua.Variant]:
    return []


def _load(station: str, v: list[Any]) -> Command | str:
    event_id, pallet, job, quantity, serials, when = v
    if job and quantity == 0:
        return "Quantity: a load of a job needs a quantity of at least 1"
    if not job and (quantity or serials):
        return 'Job: an unload-only report has Job "", Quantity 0 and no Serials'
    if serials and len(serials) != quantity:
        return f"Serials: {len(serials)} given for a Quantity of {quantity}"
    return LoadCompleted(station, event_id, when, pallet, job, quantity, serials)


STATION_METHODS: tuple[Method, ...] = (
    Method(
        "PalletArrived",
        (EVENT_ID, PALLET, SOURCE_TIME),
        (),
        STATION_ROLES,
        lambda s, v: PalletArrived(s, v[0], v[2], v[1]),
        True,
    ),
    Method(
        "PalletDeparted",
        (EVENT_ID, PALLET, SOURCE_TIME),
        (),
        STATION_ROLES,
        lambda s, v: PalletDeparted(s, v[0], v[2], v[1]),
        True,
    ),
    Method(
        "LoadCompleted",
        (
            EVENT_ID,
            PALLET,
            Arg("Job", Kind.TEXT, 'job whose units were loaded; "" = unload only', rule=limits.JOB_ID),
            Arg("Quantity", Kind.UINT32, "number of new units loaded", maximum=limits.MAX_UNITS_PER_LOAD),
            Arg(
                "Serials",
                Kind.TEXTS,
                "serials of the loaded units; empty or left out = the gateway assigns them",
                optional=True,
                default=(),
                rule=limits.SERIAL,
                max_items=limits.MAX_UNITS_PER_LOAD,
            ),
            SOURCE_TIME,
        ),
        (Arg("Serials", Kind.TEXTS, "serials of the loaded units"),),
        STATION_ROLES,
        _load,
        True,
    ),
    Method(
        "CycleStarted",
        (EVENT_ID, PALLET, Arg("Program", Kind.TEXT, "program the machine runs", rule=PROGRAM), SOURCE_TIME),
        (),
        STATION_ROLES,
        lambda s, v: CycleStarted(s, v[0], v[3], v[1], v[2]),
        True,
    ),
    Method(
        "CycleEnded",
        (
            EVENT_ID,
            PALLET,
            Arg("Program", Kind.TEXT, "program that ran", rule=PROGRAM),
            Arg("Result", Kind.WORD, "ok, fail or interrupted", words=("ok", "fail", "interrupted")),
            SOURCE_TIME,
        ),
        (),
        STATION_ROLES,
        lambda s, v: CycleEnded(s, v[0], v[4], v[1], v[2], CycleResult(v[3])),
        True,
    ),
    Method(
        "StartUnit",
        (
            EVENT_ID,
            Arg("Job", Kind.ID, "job of the new unit", rule=limits.JOB_ID),
            Arg("Serial", Kind.TEXT, '"" = gateway assigns', rule=limits.SERIAL),
            SOURCE_TIME,
        ),
        (Arg("Serial", Kind.TEXT, "serial of the new unit"),),
        STATION_ROLES,
        lambda s, v: StartUnit(s, v[0], v[3], v[1], v[2]),
        True,
    ),
    Method(
        "ScanIn", (EVENT_ID, SERIAL, SOURCE_TIME), (), STATION_ROLES, lambda s, v: ScanIn(s, v[0], v[2], v[1]), True
    ),
    Method(
        "ScanOut",
        (EVENT_ID, SERIAL, Arg("Result", Kind.WORD, "pass or fail", words=("pass", "fail")), SOURCE_TIME),
        (),
        STATION_ROLES,
        lambda s, v: ScanOut(s, v[0], v[3], v[1], ScanResult(v[2])),
        True,
    ),
)


SERIALS = Arg("Serials", Kind.TEXTS, rule=limits.SERIAL, max_items=limits.MAX_SERIALS_PER_CALL)
STEPS_LIMITS: dict[str, Any] = {"rule": limits.OPERATION, "max_items": limits.MAX_STEPS}


def _create_job(_: str, v: list[Any]) -> Command | str:
    job_id, part, revision, quantity, due, priority, buffer, steps, pallets = v
    problem = limits.new_job_id_problem(job_id) if job_id else None
    if problem:
        return f"JobId: {problem}"
    if quantity < 1:
        return "Quantity: must be at least 1"
    return CreateJob(
        part=part,
        revision=revision,
        quantity=quantity,
        job_id=job_id,
        due=due,
        priority=priority,
        yield_buffer_percent=None if buffer < 0 else buffer,
        operations=steps,
        pallets=pallets,
    )


JOB_METHODS: tuple[Method, ...] = (
    Method(
        "CreateJob",
        (
            Arg("JobId", Kind.TEXT, '"" = generated', rule=limits.NEW_JOB_ID),
            Arg("Part", Kind.ID, "part number", rule=limits.PART),
            Arg("Revision", Kind.ID, "part revision", rule=limits.REVISION),
            Arg("Quantity", Kind.UINT32, "ordered quantity", maximum=limits.MAX_JOB_QUANTITY),
            Arg("DueDate", Kind.TIME, "due date; Null or left out = none", optional=True),
            Arg(
                "Priority",
                Kind.INT32,
                "larger = more urgent; left out = 0",
                optional=True,
                default=0,
                maximum=limits.MAX_PRIORITY,
            ),
            Arg(
                "YieldBufferPercent",
                Kind.DOUBLE,
                "extra units allowed, %; negative or left out = the cell's default",
                optional=True,
                default=-1.0,
            ),
            Arg(
                "Steps",
                Kind.TEXTS,
                "operation codes; empty or left out = default template or automatic mode",
                optional=True,
                default=(),
                rule=limits.OPERATION,
                max_items=limits.MAX_STEPS,
            ),
            Arg(
                "Pallets",
                Kind.TEXTS,
                "allowed pallets; empty or left out = any",
                optional=True,
                default=(),
                rule=limits.PALLET,
                max_items=limits.MAX_PALLETS_PER_JOB,
            ),
        ),
        (Arg("JobId", Kind.TEXT),),
        JOB_ROLES,
        _create_job,
    ),
    Method("Release", (JOB_ID,), (), JOB_ROLES, lambda _, v: ReleaseJob(v[0])),
    Method("Hold", (JOB_ID, REASON), (), JOB_ROLES, lambda _, v: HoldJob(v[0], v[1])),
    Method("Resume", (JOB_ID,), (), JOB_ROLES, lambda _, v: ResumeJob(v[0])),
    Method("Close", (JOB_ID, REASON), (), JOB_ROLES, lambda _, v: CloseJob(v[0], v[1])),
    Method(
        "Split",
        (JOB_ID, SERIALS, Arg("Steps", Kind.TEXTS, "empty = the parent's remaining steps", **STEPS_LIMITS)),
        (Arg("ChildJobId", Kind.TEXT),),
        JOB_ROLES,
        lambda _, v: SplitJob(v[0], v[1], v[2]),
    ),
    Method(
        "SplitQuantity",
        (
            JOB_ID,
            Arg(
                "Quantity",
                Kind.UINT32,
                "ordered units not started yet, to move to the child",
                maximum=limits.MAX_JOB_QUANTITY,
            ),
            Arg("Steps", Kind.TEXTS, "empty = the parent's routing", **STEPS_LIMITS),
        ),
        (Arg("ChildJobId", Kind.TEXT),),
        JOB_ROLES,
        lambda _, v: SplitJob(v[0], (), v[2], quantity=v[1]),
    ),
    Method(
        "Merge",
        (Arg("TargetJobId", Kind.ID, rule=limits.JOB_ID), Arg("SourceJobId", Kind.ID, rule=limits.JOB_ID)),
        (),
        JOB_ROLES,
        lambda _, v: MergeJobs(v[0], v[1]),
    ),
)

TEMPLATE_ID = Arg("TemplateId", Kind.ID, rule=limits.TEMPLATE_ID)
PART = Arg("Part", Kind.ID, rule=limits.PART)
REVISION = Arg("Revision", Kind.ID, rule=limits.REVISION)
PART_METHODS: tuple[Method, ...] = (
    Method(
        "CreateTemplate",
        (PART, REVISION, Arg("Steps", Kind.TEXTS, "operation codes", **STEPS_LIMITS)),
        (TEMPLATE_ID,),
        PART_ROLES,
        lambda _, v: CreateTemplate(v[0], v[1], v[2]),
    ),
    Method("ApproveTemplate", (TEMPLATE_ID,), (), PART_ROLES, lambda _, v: ApproveTemplate(v[0])),
    Method("DeprecateTemplate", (TEMPLATE_ID,), (), PART_ROLES, lambda _, v: DeprecateTemplate(v[0])),
    Method(
        "SetDefaultTemplate",
        (PART, REVISION, TEMPLATE_ID),
        (),
        PART_ROLES,
        lambda _, v: SetDefaultTemplate(v[0], v[1], v[2]),
    ),
    Method("PromoteRouting", (JOB_ID,), (TEMPLATE_ID,), PART_ROLES, lambda _, v: PromoteRouting(v[0])),
)

UNIT_METHODS: tuple[Method, ...] = (
    Method(
        "Scrap",
        (EVENT_ID, SERIAL, REASON, SOURCE_TIME),
        (),
        ("operator", "engineer"),
        lambda s, v: Scrap(s or "cell", v[0], v[3], v[1], v[2]),
    ),
    Method(
        "ResolveAudit",
        (SERIAL, Arg("Outcome", Kind.WORD, "found or lost", words=("found", "lost"))),
        (),
        ("engineer",),
        lambda _, v: ResolveAudit(v[0], v[1]),
    ),
)


def node_id(ns: int, path: str) -> ua.NodeId:
    return ua.NodeId(path, ns)


_PLAIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_JOBS_CHILDREN = frozenset(method.name for method in JOB_METHODS)


def job_path(job_id: str) -> str:
    """The node id path of a job's object: ``Cell/Jobs/<JobId>`` when the id is plain and names no
    other node there; otherwise a digest of the id, so no id a client chooses can collide with another
    node or make the address space fail (the browse name is still the id)."""
    if _PLAIN_ID.fullmatch(job_id) and job_id not in _JOBS_CHILDREN:
        return f"Cell/Jobs/{job_id}"
    digest = hashlib.sha256(job_id.encode("utf-8", "surrogatepass")).hexdigest()[:24]
    return f"Cell/Jobs/#{digest}"


@dataclass(slots=True)
class StationNodes:
    node: Node
    state: Node
    pallet: Node
    load_instruction: Node
    expected_program: Node
    tags: dict[str, Node]


@dataclass(slots=True)
class AddressSpace:
    namespace_index: int
    cell: Node
    jobs_folder: Node
    stations: dict[str, StationNodes] = field(default_factory=dict)
    jobs: dict[str, dict[str, Node]] = field(default_factory=dict)
    tag_nodes: dict[ua.NodeId, tuple[str, str]] = field(default_factory=dict)  # node -> (station, tag)


JOB_VARIABLES: tuple[tuple[str, ua.VariantType], ...] = (
    ("Part", ua.VariantType.String),
    ("Revision", ua.VariantType.String),
    ("State", ua.VariantType.String),
    ("Quantity", ua.VariantType.UInt32),
    ("MaxQuantity", ua.VariantType.UInt32),
    ("Started", ua.VariantType.UInt32),
    ("Scrapped", ua.VariantType.UInt32),
    ("Finished", ua.VariantType.UInt32),
    ("Wip", ua.VariantType.UInt32),
    ("DueDate", ua.VariantType.DateTime),
    ("Priority", ua.VariantType.Int32),
    ("Routing", ua.VariantType.String),
    ("RoutingSource", ua.VariantType.String),
    ("TargetReached", ua.VariantType.Boolean),
)


def job_values(job: JobView) -> dict[str, Any]:
    return {
        "Part": job.part,
        "Revision": job.revision,
        "State": job.state.value,
        "Quantity": job.quantity,
        "MaxQuantity": job.max_quantity,
        "Started": job.started,
        "Scrapped": job.scrapped,
        "Finished": job.finished,
        "Wip": job.wip,
        "DueDate": job.due,
        "Priority": job.priority,
        "Routing": list(job.routing),
        "RoutingSource": job.routing_source,
        "TargetReached": job.target_reached,
    }


def build_date() -> datetime:
    """When this copy of the gateway was built or installed: the time of its package metadata (an
    installed wheel or an editable install), else of the ``gateway`` package's files (a source tree)."""
    try:
        dist = metadata.distribution("cell-gateway")
        record = next((f for f in dist.files or () if f.name == "METADATA"), None)
        if record is not None:
            return datetime.fromtimestamp(Path(str(dist.locate_file(record))).stat().st_mtime, UTC)
    except (metadata.PackageNotFoundError, OSError):
        pass
    return datetime.fromtimestamp(Path(__file__).parent.parent.joinpath("__init__.py").stat().st_mtime, UTC)


class OpcUaServer:
    """Owns the asyncua server: security, address space, method handlers, tags and publishing."""

    def __init__(
        self, config: CellConfig, writer: Writer, engine: AsyncEngine, logins: LoginGuard | None = None
    ) -> None:
        self.config = config
        self.writer = writer
        self.engine = engine  # for reads (Trace); every change goes through the writer
        self.retention = timedelta(hours=config.server.closed_job_retention_hours)
        self._closed_since: dict[str, datetime] = {}  # published jobs closed or done: since when
        self._initial: asyncio.Task[None] | None = None  # publishing the jobs loaded at start
        self.demo = config.server.security_profile == "demo"
        self.iserver = GatewayInternalServer(user_manager=ConfigUserManager(config))
        edge_limits = config.limits
        self.iserver.session_type = session_class(
            self._may_write, require_secure_channel=not self.demo, max_sessions=edge_limits.max_sessions
        )
        # Password logins (shared with HTTP when given) and the connection limits: gateway/opcua/transport.py.
        self._own_logins = logins is None
        self.logins = logins or login_guard(config)
        self.edge = Edge(edge_limits, self.logins)
        self.edge_stats = self.edge.stats  # counts for the metrics
        self.iserver.on_sessions_full = self.edge.sessions_full
        self.iserver.live_sessions = self.edge.live_sessions
        install(self.iserver, edge_limits)
        self.server = GatewayServer(iserver=self.iserver, edge=self.edge)
        self.space: AddressSpace | None = None
        self.events: EventTypes | None = None
        self._published: dict[ua.NodeId, Any] = {}
        self._tag_state: dict[str, dict[str, Any]] = {}
        self._tag_seq = 0
        self._listening = False
        self._closing = False  # shutting down: no new connection, no new call
        self._in_calls = 0  # method calls taken and not answered yet
        self._no_calls = asyncio.Event()
        self._no_calls.set()

    @property
    def endpoint(self) -> str:
        return self.config.server.endpoint

    # ------------------------------------------------------------------ start and stop
    async def start(self) -> None:
        server = self.server
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name(f"cell-gateway {self.config.cell.name}")
        server.product_uri = PRODUCT_URI
        server.manufacturer_name = MANUFACTURER_NAME
        await server.set_build_info(
            PRODUCT_URI, MANUFACTURER_NAME, PRODUCT_NAME, __version__, __version__, build_date()
        )
        application_uri = f"urn:{socket.gethostname()}:cell-gateway:{self.config.cell.name}"
        await server.set_application_uri(application_uri)
        await self._security(application_uri)
        self.space = await self._build()
        self.events = await create_event_types(server, self.space.namespace_index, self.space.cell)
        server.iserver.callback_service.addListener(CallbackType.PostWrite, self._tag_written, priority=10)
        view = self.writer.view
        await self._publish_stations(view, set(view.stations))
        self.writer.subscribe(self.on_commit)
        await server.start()
        self._listening = True
        # Jobs' objects are published once listening: PLCs report at once, while asyncua adds a
        # year's open jobs (14 nodes each, each add scanning its parent's references) over seconds.
        self._initial = asyncio.create_task(self._publish_jobs(view), name="opcua-publish-jobs")
        log.info(
            "opcua_listening",
            endpoint=self.endpoint,
            namespace=NAMESPACE_URI,
            profile=self.config.server.security_profile,
            stations=len(self.space.stations),
        )

    async def stop_taking(self) -> None:
        """The first step of a shutdown: no new connection is accepted and every new method call is
        answered BadServerHalted (not stored); sessions stay open, so the calls taken are answered."""
        self._closing = True
        bserver = self.server.bserver
        listener = getattr(bserver, "_server", None) if bserver is not None else None
        if listener is not None:
            listener.close()  # stops accepting; connections made before stay open

    async def calls_answered(self) -> None:
        """Until every method call taken before :meth:`stop_taking` has been answered."""
        await self._no_calls.wait()

    async def stop(self) -> None:
        self._closing = True
        self._listening = False
        if self._initial is not None:
            self._initial.cancel()
            await asyncio.gather(self._initial, return_exceptions=True)
        await self.server.stop()
        if self._own_logins:
            self.logins.close()

    async def jobs_published(self) -> None:
        """Until the jobs loaded at start are in the address space (they are published after listening)."""
        if self._initial is not None:
            await asyncio.shield(self._initial)

    def is_listening(self) -> bool:
        return self._listening

    async def _security(self, application_uri: str) -> None:
        server = self.server
        if self.demo:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity, *SECURE_POLICIES])
            server.set_identity_tokens([ua.AnonymousIdentityToken, ua.UserNameIdentityToken, ua.X509IdentityToken])
        else:
            server.set_security_policy(SECURE_POLICIES)
            server.set_identity_tokens([ua.UserNameIdentityToken, ua.X509IdentityToken])
        from gateway.opcua.pki import prepare_pki

        pki = await prepare_pki(Path(self.config.server.pki_dir), application_uri)
        await server.load_certificate(str(pki.certificate))
        await server.load_private_key(str(pki.private_key))
        if not self.demo:
            server.set_certificate_validator(pki.validator)

    # ------------------------------------------------------------------ address space
    async def _build(self) -> AddressSpace:
        server = self.server
        ns = await server.register_namespace(NAMESPACE_URI)
        cell = await server.nodes.objects.add_object(node_id(ns, "Cell"), ua.QualifiedName("Cell", ns))
        await cell.set_event_notifier([ua.EventNotifier.SubscribeToEvents])
        stations = await cell.add_folder(node_id(ns, "Cell/Stations"), ua.QualifiedName("Stations", ns))
        jobs = await cell.add_object(node_id(ns, "Cell/Jobs"), ua.QualifiedName("Jobs", ns))
        parts = await cell.add_object(node_id(ns, "Cell/Parts"), ua.QualifiedName("Parts", ns))
        units = await cell.add_object(node_id(ns, "Cell/Units"), ua.QualifiedName("Units", ns))
        space = AddressSpace(ns, cell, jobs)
        for method in JOB_METHODS:
            await self._add_method(jobs, ns, "Cell/Jobs", method, "")
        for method in PART_METHODS:
            await self._add_method(parts, ns, "Cell/Parts", method, "")
        for method in UNIT_METHODS:
            await self._add_method(units, ns, "Cell/Units", method, "")
        trace = Method("Trace", (SERIAL,), (Arg("Json", Kind.TEXT),), READ_ROLES, lambda _, v: "")
        await units.add_method(
            node_id(ns, "Cell/Units/Trace"),
            ua.QualifiedName("Trace", ns),
            self._trace_handler,
            argument_descriptions(trace.inputs),
            argument_descriptions(trace.outputs),
        )
        for station in self.config.stations:
            path = f"Cell/Stations/{station.id}"
            obj = await stations.add_object(node_id(ns, path), ua.QualifiedName(station.id, ns))

            async def var(parent: Node, p: str, name: str, value: Any, vtype: ua.VariantType) -> Node:
                return await parent.add_variable(node_id(ns, f"{p}/{name}"), ua.QualifiedName(name, ns), value, vtype)

            await var(obj, path, "Kind", station.kind, ua.VariantType.String)
            groups = await var(obj, path, "Groups", list(station.groups), ua.VariantType.String)
            await _one_dimension(groups)
            state = await var(obj, path, "State", "idle", ua.VariantType.String)
            pallet = await var(obj, path, "Pallet", "", ua.VariantType.String)
            instruction = await var(obj, path, "LoadInstruction", "", ua.VariantType.String)
            program = await var(obj, path, "ExpectedProgram", "", ua.VariantType.String)
            tags_folder = await obj.add_folder(node_id(ns, f"{path}/Tags"), ua.QualifiedName("Tags", ns))
            # A restart must not read a tag PLC's next block as new edges: the tags start from the
            # station state recorded before it (the pallet present, its running cycle and program).
            known = self._recorded_tags(station.id)
            tags = {
                name: await var(tags_folder, f"{path}/Tags", name, known[name], vtype)
                for name, vtype in TAG_TYPES.items()
            }
            for tag_name, tag in tags.items():
                await tag.set_writable()
                space.tag_nodes[tag.nodeid] = (station.id, tag_name)
            self._tag_state[station.id] = known
            space.stations[station.id] = StationNodes(obj, state, pallet, instruction, program, tags)
            for method in STATION_METHODS:
                await self._add_method(obj, ns, path, method, station.id)
        return space

    async def _add_method(self, parent: Node, ns: int, path: str, method: Method, station: str) -> None:
        await parent.add_method(
            node_id(ns, f"{path}/{method.name}"),
            ua.QualifiedName(method.name, ns),
            self._handler(method, station, parent.nodeid),
            argument_descriptions(method.inputs),
            argument_descriptions(method.outputs),
        )

    # ------------------------------------------------------------------ method calls
    def _handler(self, method: Method, station: str, owner: ua.NodeId) -> Callable[..., Awaitable[Any]]:
        async def handle(parent: ua.NodeId, *variants: Any) -> Any:
            if parent != owner:  # asyncua runs a method whatever ObjectId the call names
                return _wrong_object(method.name, parent, owner)
            self._in_calls += 1
            self._no_calls.clear()
            try:
                return await self._call(method, station, variants)
            except Exception:  # an escaping exception would reach the PLC as BadUnexpectedError
                log.exception("opcua_method_failed", method=method.name, station=station)
                return ua.StatusCode(ua.StatusCodes.BadInternalError)
            finally:
                self._in_calls -= 1
                if not self._in_calls:
                    self._no_calls.set()

        handle.__name__ = f"{method.name}@{station or 'cell'}"
        return handle

    async def _call(self, method: Method, station: str, variants: Sequence[Any]) -> Any:
        user = current_user()
        event_id = _first_text(variants) if method.inputs and method.inputs[0] is EVENT_ID else ""
        if self._closing:  # shutting down: what was taken is committed, nothing new is taken
            log.warning("call_refused_shutting_down", method=method.name, station=station, event_id=event_id)
            return ua.StatusCode(ua.StatusCodes.BadServerHalted)
        if not self._allowed(user, method, station):
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
        if isinstance(built, str):
            await self._refuse_unstored(Reason.INVALID_ARGUMENT, built, method, station, event_id)
            return _invalid_argument(method, built)
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

    def _allowed(self, user: GatewayUser, method: Method, station: str) -> bool:
        if not user.has_any(method.roles):
            return False
        if method.station_scoped:
            return user.may_report_for(station)
        return True

    async def _refuse_unstored(self, reason: Reason, message: str, method: Method, station: str, event_id: str) -> None:
        """A refusal that never reached the log (access, malformed, reused EventId): log it and raise the event."""
        log.warning(
            "report_refused", kind=method.name, station=station, event_id=event_id, reason=reason.value, message=message
        )
        if self.events is not None:
            await self.events.raise_event(
                "RejectionEventType",
                f"{method.name} at {station or 'cell'} refused ({reason.value}): {message}",
                {"Reason": reason.value, "Station": station, "ReportEventId": event_id},
            )

    async def _trace_handler(self, parent: ua.NodeId, *variants: Any) -> Any:
        from gateway.storage.queries import trace

        assert self.space is not None
        owner = node_id(self.space.namespace_index, "Cell/Units")
        if parent != owner:
            return _wrong_object("Trace", parent, owner)
        user = current_user()
        if not user.has_any(READ_ROLES):
            return ua.StatusCode(ua.StatusCodes.BadUserAccessDenied)
        parsed = parse(variants, (SERIAL,))
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

    # ------------------------------------------------------------------ tags
    def _recorded_tags(self, station_id: str) -> dict[str, Any]:
        """The tag block that matches the station state the gateway has recorded."""
        recorded = self.writer.view.stations.get(station_id)
        pallet = recorded.pallet if recorded is not None else ""
        if recorded is None or not pallet or recorded.cycle_pallet != pallet:
            return {"PalletPresent": pallet, "CycleActive": False, "Program": ""}
        return {"PalletPresent": pallet, "CycleActive": True, "Program": recorded.cycle_program}

    async def _may_write(self, user: GatewayUser, value: ua.WriteValue) -> int | None:
        """Why ``user`` may not make this write (the status code to answer), or None: only a station's
        tags are writable, by the users who may report for the station, with a value of the tag's type
        and within the limits of the method argument of the same name. A refused write changes nothing."""
        assert self.space is not None
        if self._closing:  # shutting down: as for method calls, nothing new is taken
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
        if self.events is not None:
            await self.events.raise_event(
                "RejectionEventType",
                f"write of {tag} at {station} refused ({Reason.INVALID_ARGUMENT.value}): {message}",
                {"Reason": Reason.INVALID_ARGUMENT.value, "Station": station, "ReportEventId": ""},
            )
        return status

    async def _tag_written(self, event: Any, dispatcher: Any) -> None:
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

    # ------------------------------------------------------------------ publishing after commit
    async def _write(self, node: Node, value: Any, vtype: ua.VariantType) -> None:
        if self._published.get(node.nodeid, object()) == value:
            return
        self._published[node.nodeid] = value
        # SourceTimestamp: when the gateway produced the value (its clock); ServerTimestamp: when the
        # server took it. Clients (historians, SCADA) read both.
        produced = self.writer.clock.now()
        data = ua.DataValue(ua.Variant(value, vtype), SourceTimestamp=produced, ServerTimestamp=datetime.now(UTC))
        await self.server.write_attribute_value(node.nodeid, data)

    async def _publish_jobs(self, view: CellView) -> None:
        """The jobs loaded at start; a done job that nobody closed is published again only when it
        changes (it would leave the address space after the retention anyway)."""
        started = asyncio.get_running_loop().time()
        for job in view.jobs.values():
            if job.done or (job.state is JobState.CLOSED and not job.wip):
                continue
            await self._publish_job(job)
            await asyncio.sleep(0)  # a turn for the PLCs' calls between two jobs
        log.info(
            "opcua_jobs_published", jobs=len(view.jobs), seconds=round(asyncio.get_running_loop().time() - started, 3)
        )

    async def _publish_stations(self, view: CellView, station_ids: set[str]) -> None:
        assert self.space is not None
        for station_id in station_ids:
            nodes = self.space.stations.get(station_id)
            state = view.stations.get(station_id)
            if nodes is None or state is None:
                continue
            await self._write(nodes.state, state.state, ua.VariantType.String)
            await self._write(nodes.pallet, state.pallet, ua.VariantType.String)
            await self._write(nodes.expected_program, state.expected_program, ua.VariantType.String)
            await self._write(nodes.load_instruction, state.load_instruction, ua.VariantType.String)

    async def _publish_job(self, job: JobView) -> None:
        """A job's object and variables; one job that cannot be published never stops the others."""
        try:
            await self._publish_job_nodes(job)
        except Exception:
            log.exception("job_publish_failed", job=safe_text(job.id))

    async def _publish_job_nodes(self, job: JobView) -> None:
        assert self.space is not None
        if not job.shop_floor_visible:
            return
        nodes = self.space.jobs.get(job.id)
        values = job_values(job)
        ns = self.space.namespace_index
        if nodes is None:
            path = job_path(job.id)
            name = ua.QualifiedName(safe_text(job.id), ns)
            obj = await self.space.jobs_folder.add_object(node_id(ns, path), name)
            nodes = {"": obj}
            for var_name, vtype in JOB_VARIABLES:
                initial = values[var_name] if values[var_name] is not None else ua.Variant(None, ua.VariantType.Null)
                nodes[var_name] = await obj.add_variable(
                    node_id(ns, f"{path}/{var_name}"), ua.QualifiedName(var_name, ns), initial, vtype
                )
            await _one_dimension(nodes["Routing"])
            self.space.jobs[job.id] = nodes
        for var_name, vtype in JOB_VARIABLES:
            if values[var_name] is not None:
                await self._write(nodes[var_name], values[var_name], vtype)
        if job.state is JobState.CLOSED:
            self._closed_since.setdefault(job.id, job.closed_at or self.writer.clock.now())
        elif job.done:
            self._closed_since.setdefault(job.id, self.writer.clock.now())
        else:
            self._closed_since.pop(job.id, None)  # it has work again: it stays

    async def remove_expired_jobs(self, now: datetime) -> list[str]:
        """Closed jobs' objects leave the address space ``closed_job_retention_hours`` after they
        closed; so do done jobs (ordered quantity finished, nothing in WIP) that nobody closed, after
        the same time without a change. A job that changes again is published again."""
        assert self.space is not None
        expired = [j for j, since in self._closed_since.items() if now - since >= self.retention]
        for job_id in expired:
            del self._closed_since[job_id]
            nodes = self.space.jobs.pop(job_id, None)
            if nodes is None:
                continue
            for node in nodes.values():
                self._published.pop(node.nodeid, None)
            try:
                await self.server.delete_nodes([nodes[""]], recursive=True)
            except Exception:
                log.exception("job_node_removal_failed", job=safe_text(job_id))
        if expired:
            log.info("closed_jobs_removed_from_address_space", jobs=len(expired))
        return expired

    async def on_commit(self, batch: Committed) -> None:
        """After a commit (in the feed's task): variables from the committed view, events, log lines."""
        if self._initial is not None and not self._initial.done():
            await asyncio.wait([self._initial])  # the jobs loaded at start first (never raises: stop cancels it)
        view = batch.view
        try:
            await self._publish_stations(view, batch.stations | {s for s, st in view.stations.items() if st.pallet})
        except Exception:  # the jobs, events and log lines below still come
            log.exception("station_publish_failed")
        for job_id in batch.jobs:
            job = view.jobs.get(job_id)
            if job is not None:
                await self._publish_job(job)
        for item in batch.applied:
            _canonical_line(item.command, item.actor, item.answer)
            if item.answer.replayed or self.events is None:
                continue
            try:
                await self._raise_events(item)
            except Exception:  # one event that cannot be raised never costs the others theirs
                log.exception("events_failed", kind=item.command.kind)

    async def _raise_events(self, item: Applied) -> None:
        assert self.events is not None
        answer, command = item.answer, item.command
        report_fields = _report_fields(command)
        if answer.reason is not None:
            await self.events.raise_event(
                "RejectionEventType",
                f"{command.kind} {_where(command)} refused ({answer.reason.value}): {answer.message}",
                {**report_fields, "Reason": answer.reason.value},
            )
        for flag in answer.flags:
            fields: dict[str, Any] = {**report_fields, "Reason": flag.anomaly.value}
            named = {"Serial": flag.serial, "Pallet": flag.pallet, "Job": flag.job}
            fields.update({k: v for k, v in named.items() if v})
            await self.events.raise_event("AnomalyEventType", flag.message, fields, severity=300)
        for event in item.events:
            if isinstance(event, JobStateChanged) and event.to_state is not JobState.CREATED:
                # a Created job is invisible to the shop floor, in events as in the address space
                await self.events.raise_event(
                    "JobStateChangedEventType",
                    f"job {event.job}: {event.from_state or 'new'} -> {event.to_state} ({event.reason})",
                    {
                        "Job": event.job,
                        "FromState": event.from_state.value if event.from_state else "",
                        "ToState": event.to_state.value,
                        "Reason": event.reason,
                    },
                )
            elif isinstance(event, UnitFinished):
                await self.events.raise_event(
                    "UnitFinishedEventType",
                    f"{event.serial} of {event.job} finished",
                    {"Serial": event.serial, "Job": event.job},
                    severity=100,
                )
            elif isinstance(event, JobTargetReached):
                await self.events.raise_event(
                    "JobTargetReachedEventType",
                    f"job {event.job}: {event.finished} of {event.quantity} ordered finished; target reached, "
                    "it may be closed",
                    {"Job": event.job, "Quantity": event.quantity, "Finished": event.finished},
                    severity=300,
                )
            elif isinstance(event, LostAuditActivity):
                await self.events.raise_event(
                    "LostAuditActivityEventType",
                    f"{event.serial} of {event.job}, under an open Lost Audit, was active at "
                    f"{event.station or 'the cell'}; the audit stays open until an engineer resolves it",
                    {"Serial": event.serial, "Job": event.job, "Station": event.station},
                    severity=500,
                )
            elif isinstance(event, LostAuditFlagged):
                await self.events.raise_event(
                    "LostAuditEventType",
                    f"{event.serial} of {event.job} idle for {event.idle_seconds / 86400:.1f} days: Lost Audit",
                    {
                        "Serial": event.serial,
                        "Job": event.job,
                        "Station": event.station,
                        "IdleSeconds": event.idle_seconds,
                    },
                    severity=700,
                )


async def _one_dimension(node: Node) -> None:
    """Declare a String[] variable as one-dimensional (asyncua leaves ValueRank 0 for a list)."""
    await node.write_value_rank(1)
    await node.write_array_dimensions([0])


def _invalid_argument(method: Method, refusal: str) -> ua.CallMethodResult:
    """BadInvalidArgument with per-argument results: the argument a build refusal names ("Quantity: ...")."""
    named = refusal.partition(":")[0]
    bad, good = ua.StatusCode(ua.StatusCodes.BadInvalidArgument), ua.StatusCode(ua.StatusCodes.Good)
    return ua.CallMethodResult(
        StatusCode=bad, InputArgumentResults=[bad if arg.name == named else good for arg in method.inputs]
    )


_ACCESS_DENIED: int = ua.StatusCodes.BadUserAccessDenied
_HALTED: int = ua.StatusCodes.BadServerHalted

# What a tag's value may be, past its type: the same limits as the method arguments of the same name.
_TAG_RULES = {"PalletPresent": limits.PALLET, "Program": limits.PROGRAM}


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


def _where(command: Command) -> str:
    return f"at {command.station}" if isinstance(command, Report) and command.station else ""


def _report_fields(command: Command) -> dict[str, str]:
    if not isinstance(command, Report):
        job = getattr(command, "job_id", "") or getattr(command, "target_job_id", "")
        return {"Job": job, "Serial": getattr(command, "serial", "")}
    return {
        "Station": command.station,
        "ReportEventId": command.event_id,
        "Pallet": getattr(command, "pallet", ""),
        "Serial": getattr(command, "serial", ""),
        "Job": getattr(command, "job", ""),
    }


def _canonical_line(command: Command, actor: str, answer: Answer) -> None:
    """One line per command: what came in, from whom, and what the gateway made of it."""
    fields: dict[str, Any] = {
        "kind": command.kind,
        "counter": answer.counter,
        "actor": actor,
        "result": "refused" if answer.reason else ("replayed" if answer.replayed else "ok"),
    }
    names = {"ReportEventId": "event_id"}
    fields.update({names.get(k, k.lower()): v for k, v in _report_fields(command).items() if v})
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
