"""Interop: node-opcua, a second OPC UA stack, as a PLC programmer's client against the production profile.

SignAndEncrypt (Basic256Sha256) with a username, strict certificate checks on both sides: the gateway
trusts the client's certificate from ``<pki_dir>/trusted/``, the client trusts the gateway's certificate
from its own PKI folder. The client browses to the stations, reads a method's InputArguments, subscribes
to RejectionEventType on Cell, calls station methods, and prints JSON lines asserted on here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.app import running_gateway
from gateway.config import CellConfig
from tests.integration.opcua_client import NOW, CellClient, i32
from tests.integration.opcua_support import cell_toml, client_certificate, good, secure_client, trust
from tests.interop.node_script import run_script

HERE = Path(__file__).resolve().parent


def _time(value: str | None) -> list[Any]:
    return ["DateTime", value]


CALLS = [  # as plc-mill, in order; a unit of J1 is on P1 (loaded at L1 by the engineer)
    {"station": "M1", "method": "PalletArrived", "args": [["String", "N-1"], ["String", "P1"], _time(None)]},
    {
        "station": "M1",
        "method": "CycleStarted",
        "args": [["String", "N-2"], ["String", "P1"], ["String", "PRG-WRONG"], _time(None)],
    },
    {
        "station": "M1",
        "method": "CycleStarted",
        "args": [["String", "N-3"], ["String", "P1"], ["String", "PRG-MILL-100"], _time("now")],
    },
    {
        "station": "M1",
        "method": "CycleEnded",
        "args": [["String", "N-4"], ["String", "P1"], ["String", "PRG-MILL-100"], ["String", "maybe"], _time(None)],
    },
    {
        "station": "M1",
        "method": "CycleEnded",
        "args": [["String", "N-5"], ["String", "P1"], ["String", "PRG-MILL-100"], ["String", "ok"], _time(None)],
    },
    {"station": "L1", "method": "PalletArrived", "args": [["String", "N-6"], ["String", "P2"], _time(None)]},
]


async def test_node_opcua_browses_calls_station_methods_and_receives_rejections(
    node: str, tmp_path: Path, make_config: Callable[..., CellConfig]
) -> None:
    config = make_config(cell_toml(tmp_path, profile="production"))
    node_cert = await client_certificate(tmp_path / "node-client", "node-opcua")
    tester = await client_certificate(tmp_path / "tester", "tester")
    async with running_gateway(config) as gateway:
        pki = config.server.pki_dir
        server_cert = pki / "own" / "server_cert.der"
        trust(pki, node_cert)
        trust(pki, tester)
        node_pki = tmp_path / "node-pki"
        (node_pki / "trusted" / "certs").mkdir(parents=True)
        (node_pki / "trusted" / "certs" / "cell-gateway.der").write_bytes(server_cert.read_bytes())

        async with await secure_client(config.server.endpoint, tester, server_cert, "engineer", "engineer") as client:
            cell = await CellClient(client).setup()
            await good(cell.jobs("CreateJob", "J1", "PN-1", "A", 1, None, i32(0), 0.0, [], []))
            await good(cell.jobs("Release", "J1"))
            await good(cell.station("L1", "LoadCompleted", "L1-1", "P1", "J1", 1, ["SN-1"], NOW))

        env = dict(
            os.environ,
            ENDPOINT=config.server.endpoint,
            USER="plc-mill",
            PASSWORD="plc-mill",
            PKI_DIR=str(node_pki),
            CERT_FILE=str(node_cert.pem),
            KEY_FILE=str(node_cert.key),
            APP_URI=node_cert.application_uri,
            CALLS=json.dumps(CALLS).replace('"now"', json.dumps(gateway.clock.now().isoformat())),
            EXPECT_EVENTS="N-2,N-4,N-6",
        )
        steps = await run_script(node, "client.js", env, within=60)

        assert steps["namespace"] == [{"uri": "urn:cell-gateway", "index": cell.ns}]
        (browse,) = steps["browse"]
        assert browse["cell"] == ["Jobs", "Parts", "Stations", "Units"]
        assert browse["stations"] == sorted(s.id for s in config.stations)
        (m1,) = steps["station"]
        assert m1["kind"] == "machine"
        assert "CycleStarted" in m1["methods"]
        assert "LoadCompleted" in m1["methods"]
        assert m1["cycleEndedInputs"] == [
            "EventId:String",
            "Pallet:String",
            "Program:String",
            "Result:String",
            "SourceTime:DateTime",
        ]

        calls = [(c["station"], c["method"], c["status"]) for c in steps["call"]]
        assert calls == [
            ("M1", "PalletArrived", "Good"),
            ("M1", "CycleStarted", "BadRequestNotAllowed"),
            ("M1", "CycleStarted", "Good"),
            ("M1", "CycleEnded", "BadInvalidArgument"),
            ("M1", "CycleEnded", "Good"),
            ("L1", "PalletArrived", "BadUserAccessDenied"),
        ]
        assert steps["call"][3]["inputArgumentResults"] == ["Good", "Good", "Good", "BadInvalidArgument", "Good"]

        events = {e["ReportEventId"]: e for e in steps["event"]}
        assert {k: events[k]["Reason"] for k in ("N-2", "N-4", "N-6")} == {
            "N-2": "WrongProgram",
            "N-4": "InvalidArgument",
            "N-6": "AccessDenied",
        }
        assert (events["N-2"]["Station"], events["N-2"]["Pallet"]) == ("M1", "P1")
        assert "PRG-MILL-100" in events["N-2"]["message"]
        assert events["N-6"]["Station"] == "L1"
        assert "plc-mill" in events["N-6"]["message"]
        assert steps["done"] == [{}]

        # What node-opcua reported is in the cell: the unit passed OP20 at M1, recorded as plc-mill's.
        unit = gateway.writer.model.book.units["SN-1"]
        assert unit.next_step == 2
        assert gateway.writer.model.tracker.stations["L1"].pallet == ""
