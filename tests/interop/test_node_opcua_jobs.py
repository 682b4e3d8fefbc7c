"""Interop: node-opcua as an MES using the gateway's Machinery Job Management (ISA-95 Job Control).

The client finds JobManagement by its type (not its name), stores and starts a job order built with
node-opcua's own ISA95JobOrderDataType, produces two units through the station methods (one finished,
one scrapped), reads them back from JobOrderResults, pauses, resumes and aborts the job, reading each
state from JobOrderList; a duplicate Store, a Start of an unknown job and a Resume of a running job are
answered Uncertain with their ReturnStatus bits.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.app import running_gateway
from gateway.config import CellConfig
from gateway.jobs.model import JobState
from tests.integration.opcua_support import cell_toml
from tests.interop.node_script import run_script

HERE = Path(__file__).resolve().parent
NULL_TIME = ["DateTime", None]


def _call(station: str, method: str, *args: Any) -> dict[str, Any]:
    return {"station": station, "method": method, "args": [*args, NULL_TIME]}


def _produce(job: str) -> list[dict[str, Any]]:
    """Two units of ``job`` through the demo cell: SN-N1 finished at C1, SN-N2 scrapped."""
    s = ["String"]
    calls = [
        _call("L1", "PalletArrived", [*s, "L1-1"], [*s, "P1"]),
        _call(
            "L1",
            "LoadCompleted",
            [*s, "L1-2"],
            [*s, "P1"],
            [*s, job],
            ["UInt32", 2],
            ["String[]", ["SN-N1", "SN-N2"]],
        ),
        _call("L1", "PalletDeparted", [*s, "L1-3"], [*s, "P1"]),
    ]
    for station, program in (("M1", "PRG-MILL-100"), ("W1", "PRG-WASH-1")):
        calls += [
            _call(station, "PalletArrived", [*s, f"{station}-1"], [*s, "P1"]),
            _call(station, "CycleStarted", [*s, f"{station}-2"], [*s, "P1"], [*s, program]),
            _call(station, "CycleEnded", [*s, f"{station}-3"], [*s, "P1"], [*s, program], [*s, "ok"]),
            _call(station, "PalletDeparted", [*s, f"{station}-4"], [*s, "P1"]),
        ]
    calls += [
        _call("L2", "PalletArrived", [*s, "L2-1"], [*s, "P1"]),
        _call("L2", "LoadCompleted", [*s, "L2-2"], [*s, "P1"], [*s, ""], ["UInt32", 0], ["String[]", []]),
        _call("L2", "PalletDeparted", [*s, "L2-3"], [*s, "P1"]),
        _call("C1", "ScanIn", [*s, "C1-1"], [*s, "SN-N1"]),
        _call("C1", "ScanOut", [*s, "C1-2"], [*s, "SN-N1"], [*s, "pass"]),
        _call("", "Scrap", [*s, "C1-3"], [*s, "SN-N2"], [*s, "dropped at inspection"]),
    ]
    return calls


async def test_node_opcua_stores_starts_counts_pauses_resumes_and_aborts_a_job(
    node: str, tmp_path: Path, make_config: Callable[..., CellConfig]
) -> None:
    config = make_config(cell_toml(tmp_path))
    async with running_gateway(config) as gateway:
        env = dict(
            os.environ,
            ENDPOINT=config.server.endpoint,
            USER="engineer",
            PASSWORD="engineer",  # the demo profile's password is the user name
            PKI_DIR=str(tmp_path / "node-pki"),
            JOB="J-NODE",
            CALLS=json.dumps(_produce("J-NODE")),
            PAUSED_CALLS=json.dumps(
                [
                    _call("L1", "PalletArrived", ["String", "L1-P"], ["String", "P2"]),
                    _call(
                        "L1",
                        "LoadCompleted",
                        ["String", "L1-Q"],
                        ["String", "P2"],
                        ["String", "J-NODE"],
                        ["UInt32", 1],
                        ["String[]", ["SN-N3"]],
                    ),
                ]
            ),
        )
        steps = await run_script(node, "job_management.js", env, within=90)

        (found,) = steps["found"]
        assert found["browseName"].endswith(":JobManagement")
        assert found["nodeId"].endswith(";s=Cell/JobManagement")
        (methods,) = steps["methods"]
        # The receiver's eleven methods, each linked (an unlinked one would answer BadNotImplemented).
        control_methods = {"Store", "StoreAndStart", "Update", "Start", "RevokeStart", "Pause", "Resume", "Stop"}
        assert control_methods | {"Abort", "Cancel", "Clear", "JobOrderList"} <= set(methods["control"])
        commands = [(c["method"], c["job"], c["status"], c["returnStatus"]) for c in steps["command"]]
        assert commands == [
            ("Store", "J-NODE", "Good", 1),
            ("Store", "J-NODE", "Uncertain", 16),  # exists already: Unable to accept
            ("Start", "J-NODE", "Good", 1),
            ("Start", "NO-SUCH-JOB", "Uncertain", 2),  # Unknown Job Order ID
            ("Pause", "J-NODE", "Good", 1),
            ("Resume", "J-NODE", "Good", 1),
            ("Resume", "J-NODE", "Uncertain", 8),  # running: Invalid Job Order Status
            ("Abort", "J-NODE", "Good", 1),
        ]
        (response,) = steps["response"]
        assert response == {
            "status": "Good",
            "returnStatus": 1,
            "job": "J-NODE",
            "state": "Running",
            "actuals": {"Produced": "1", "Scrapped": "1"},
        }
        assert [(s["job"], s["state"]) for s in steps["listed"]] == [
            ("J-NODE", state)
            for state in ("NotAllowedToStart", "AllowedToStart", "Running", "Interrupted", "Running", "Aborted")
        ]
        # Paused: a unit for the job is refused, and the subscriber on the Server object hears why.
        assert [(c["method"], c["status"]) for c in steps["paused_call"]] == [
            ("PalletArrived", "Good"),  # the control: a pallet still arrives
            ("LoadCompleted", "BadInvalidState"),
        ]
        (event,) = steps["server_event"]
        assert (event["reason"], event["job"], event["reportEventId"]) == ("JobOnHold", "J-NODE", "L1-Q")
        assert event["sourceNode"].endswith(";s=Cell")
        assert steps["done"] == [{}]

        # What node-opcua asked for is in the cell, as the engineer's commands.
        job = gateway.writer.view.jobs["J-NODE"]
        assert (job.part, job.revision, job.quantity, job.priority) == ("PN-100", "C", 2, 3)
        assert (job.state, job.finished, job.scrapped) == (JobState.CLOSED, 1, 1)
