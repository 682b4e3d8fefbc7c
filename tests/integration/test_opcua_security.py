"""Who may connect and who may call what: the production profile, roles and stations, and who called.

The production profile offers only signed and encrypted endpoints, no anonymous access, and trusts the
client applications whose certificates are in ``<pki_dir>/trusted/``. asyncua does not tell a method
callback who called it; the gateway's session subclass publishes the session in a ContextVar for each
request, and the last test checks that concurrent callers each see themselves.
"""

from __future__ import annotations

import asyncio
import copy
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyNone
from sqlalchemy import select

from gateway.app import Gateway, running_gateway
from gateway.config import CellConfig
from gateway.storage import schema as S
from tests.integration.opcua_client import NOW, CellClient, i32
from tests.integration.opcua_support import (
    ClientCertificate,
    cell_toml,
    client_certificate,
    good,
    model_state,
    refused,
    secure_client,
    serving,
    subscribe_cell_events,
    trust,
)

SECURE_ENDPOINTS = {
    (policy, mode)
    for policy in ("Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss")
    for mode in ("Sign", "SignAndEncrypt")
}


class Production:
    """A production-profile gateway and what a client needs to reach it."""

    def __init__(self, gateway: Gateway, certificate: ClientCertificate, maintenance: ClientCertificate) -> None:
        self.gateway = gateway
        self.certificate = certificate
        self.maintenance = maintenance  # the X.509 user certificate of the "maintenance" engineer
        self.pki = gateway.config.server.pki_dir
        self.server_certificate = self.pki / "own" / "server_cert.der"  # created on first start

    async def client(self, user: str | None, password: str | None = None, **kwargs: Any) -> Client:
        endpoint = self.gateway.config.server.endpoint
        return await secure_client(endpoint, self.certificate, self.server_certificate, user, password, **kwargs)


@pytest.fixture
async def production(tmp_path: Path, make_config: Callable[..., CellConfig]) -> AsyncIterator[Production]:
    certificate = await client_certificate(tmp_path / "client")
    maintenance = await client_certificate(tmp_path / "users", "maintenance")  # an X.509 *user* certificate
    extra = f'\n[[users]]\nname = "maintenance"\ncertificate = "{maintenance.der}"\nroles = ["engineer"]\n'
    config = make_config(cell_toml(tmp_path, profile="production", extra=extra))
    assert config.server.pki_dir == tmp_path / "pki"
    async with running_gateway(config) as gateway:
        yield Production(gateway, certificate, maintenance)


async def test_production_offers_only_secure_endpoints_and_refuses_whom_it_does_not_know(
    production: Production, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    before = model_state(production.gateway)

    # A client application whose certificate is not trusted yet: refused, its certificate kept for review.
    untrusted = await production.client("plc-mill", "plc-mill")
    with pytest.raises(ua.uaerrors.BadCertificateUntrusted):
        await untrusted.connect()
    rejected = list((production.pki / "rejected").iterdir())
    assert len(rejected) == 1
    assert rejected[0].read_bytes() == production.certificate.der.read_bytes()

    trust(production.pki, production.certificate)  # re-read on change, no restart
    async with await production.client("plc-mill", "plc-mill") as client:
        endpoints = await client.get_endpoints()
        offered = {(e.SecurityPolicyUri.split("#")[1], e.SecurityMode.name) for e in endpoints}
        assert offered == SECURE_ENDPOINTS
        tokens = {t.TokenType for e in endpoints for t in e.UserIdentityTokens}
        assert tokens == {ua.UserTokenType.UserName, ua.UserTokenType.Certificate}

    anonymous = await production.client(None)
    with pytest.raises(ua.uaerrors.BadIdentityTokenRejected):
        await anonymous.connect()
    for user, password in (("plc-mill", "wrong"), ("engineer", "plc-mill"), ("nobody", "nobody")):
        client = await production.client(user, password)
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await client.connect()

    # A client that ignores the offered endpoints and opens a SecurityPolicy None channel anyway.
    def none_endpoint(endpoints: list[ua.EndpointDescription], mode: Any, policy_uri: Any) -> Any:
        endpoint = copy.copy(endpoints[0])
        endpoint.SecurityMode = ua.MessageSecurityMode.None_
        endpoint.SecurityPolicyUri = SecurityPolicyNone.URI
        endpoint.UserIdentityTokens = [copy.copy(t) for t in endpoint.UserIdentityTokens]
        for token in endpoint.UserIdentityTokens:
            token.SecurityPolicyUri = SecurityPolicyNone.URI
        return endpoint

    monkeypatch.setattr(Client, "find_endpoint", staticmethod(none_endpoint))
    plain = Client(production.gateway.config.server.endpoint, timeout=10)
    plain.set_user("engineer")
    plain.set_password("engineer")
    with pytest.raises(ua.uaerrors.BadSecurityModeRejected):
        await plain.connect()
    monkeypatch.undo()
    await plain.disconnect()

    # An X.509 user token: refused for a certificate no user has, accepted for the configured one.
    stranger = await client_certificate(tmp_path / "users", "stranger")
    unknown = await production.client(None)
    await unknown.load_client_certificate(str(stranger.der))
    await unknown.load_private_key(stranger.key)
    with pytest.raises(ua.uaerrors.BadUserAccessDenied):
        await unknown.connect()
    assert model_state(production.gateway) == before

    signed = await production.client(None, mode=ua.MessageSecurityMode.Sign)  # Sign only is offered too
    await signed.load_client_certificate(str(production.maintenance.der))
    await signed.load_private_key(production.maintenance.key)
    async with signed:
        cell = await CellClient(signed).setup()
        assert await good(cell.jobs("CreateJob", "J1", "PN-1", "A", 1, None, i32(0), 0.0, [], [])) == ["J1"]
    assert production.gateway.writer.model.book.jobs["J1"].state == "Created"


async def test_a_plc_at_another_station_and_an_operator_creating_a_job_are_refused(production: Production) -> None:
    gateway = production.gateway
    trust(production.pki, production.certificate)
    denied = ("BadUserAccessDenied", "AccessDenied")
    async with await production.client("engineer", "engineer") as watcher:
        cell = await CellClient(watcher).setup()
        log = await subscribe_cell_events(cell)
        async with await production.client("plc-load", "plc-load") as client:
            plc = await CellClient(client).setup()
            _, event = await refused(
                gateway,
                log,
                plc.station("M1", "PalletArrived", "M1-1", "P1", NOW),
                *denied,
                Station="M1",
                ReportEventId="M1-1",
            )
            assert "plc-load" in event.Message.Text
            assert "L1, L2" in event.Message.Text  # the stations it may report for
            assert await cell.read("Cell/Stations/M1/Pallet") == ""
            await good(plc.station("L1", "PalletArrived", "L1-1", "P1", NOW))  # its own station
            await cell.wait_for("Cell/Stations/L1/Pallet", "P1")
        async with await production.client("operator", "operator") as client:
            operator = await CellClient(client).setup()
            await refused(
                gateway, log, operator.jobs("CreateJob", "J1", "PN-1", "A", 5, None, i32(0), 0.0, [], []), *denied
            )
            assert gateway.writer.model.book.jobs == {}
            await good(operator.station("M1", "PalletArrived", "M1-2", "P2", NOW))  # station methods: anywhere
        async with await production.client("erp", "erp") as client:
            erp = await CellClient(client).setup()
            await good(erp.jobs("CreateJob", "J1", "PN-1", "A", 5, None, i32(0), 0.0, [], []))


async def test_concurrent_calls_as_different_users_each_see_their_own_user(
    tmp_path: Path, make_config: Callable[..., CellConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each handler reads its caller from the ContextVar: the logged actor and the refusals show whom it saw."""
    calls = 24  # per user, half allowed and half refused, all in flight at once
    # user -> (allowed call, refused call): ("station", station, pallet) or ("job",) for CreateJob
    plans: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
        "plc-load": (("station", "L1", "P1"), ("station", "M1", "P1")),
        "plc-mill": (("station", "M2", "P2"), ("station", "W1", "P2")),
        "plc-wash": (("station", "W1", "P3"), ("station", "L2", "P3")),
        "operator": (("station", "C1", "P4"), ("job",)),
        "erp": (("job",), ("station", "M3", "P5")),
    }

    def call(cell: CellClient, plan: tuple[str, ...], key: str) -> Any:
        if plan[0] == "job":
            return cell.jobs("CreateJob", key, "PN-1", "A", 1, None, i32(0), 0.0, [], [])
        return cell.station(plan[1], "PalletArrived", key, plan[2], NOW)

    async def storm(cell: CellClient, user: str) -> list[tuple[str, bool, str]]:
        allowed, not_allowed = plans[user]
        keys = [(f"{user}-{i}", i % 2 == 0) for i in range(calls)]
        results = await asyncio.gather(*(call(cell, allowed if ok else not_allowed, key) for key, ok in keys))
        return [(key, ok, result.code) for (key, ok), result in zip(keys, results, strict=True)]

    async with serving(make_config(cell_toml(tmp_path))) as session, AsyncExitStack() as stack:
        cells = {user: await stack.enter_async_context(session.connect(user)) for user in plans}
        handle = session.gateway.opcua.calls.answer

        async def after_others(method: Any, station: str, variants: Any) -> Any:
            await asyncio.sleep(0)  # let other sessions' requests run first: a shared variable would be theirs now
            return await handle(method, station, variants)

        monkeypatch.setattr(session.gateway.opcua.calls, "answer", after_others)
        outcomes = await asyncio.gather(*(storm(cells[user], user) for user in plans))
        assert [code for per_user in outcomes for _, _, code in per_user] == [
            "Good" if ok else "BadUserAccessDenied" for per_user in outcomes for _, ok, _ in per_user
        ]

        # Every refusal names the user it was refused for, and that user made the call.
        refusals = await session.events.wait_for_count("RejectionEventType", len(plans) * calls // 2)
        named: Counter[str] = Counter()
        for event in refusals:
            user = re.search(r"user '([^']+)'", event.Message.Text)
            assert user is not None, event.Message.Text
            named[user[1]] += 1
            if event.ReportEventId:
                assert event.ReportEventId.rsplit("-", 1)[0] == user[1], event.Message.Text
        assert named == {user: calls // 2 for user in plans}

        # Every accepted call is logged with the user who made it.
        async with session.gateway.engine.connect() as conn:
            rows = (
                await conn.execute(select(S.cell_events.c.kind, S.cell_events.c.event_id, S.cell_events.c.actor))
            ).all()
        actors = Counter((kind, actor) for kind, _, actor in rows)
        assert actors == {("PalletArrived", u): calls // 2 for u in plans if u != "erp"} | {
            ("CreateJob", "erp"): calls // 2
        }
        for kind, event_id, actor in rows:
            if kind == "PalletArrived":
                assert event_id.rsplit("-", 1)[0] == actor

        # Outside of an OPC UA request (the gateway calling its own node), the caller is the gateway itself.
        ns = session.cell.ns
        m4 = session.gateway.opcua.server.get_node(ua.NodeId("Cell/Stations/M4", ns))
        await m4.call_method(ua.NodeId("Cell/Stations/M4/PalletArrived", ns), "self-1", "P6", None)
        async with session.gateway.engine.connect() as conn:
            actor = (
                await conn.execute(select(S.cell_events.c.actor).where(S.cell_events.c.event_id == "self-1"))
            ).one()
        assert actor == ("gateway",)
