"""``make bench``: the gateway against a bare asyncua server, in one run, on this machine.

(a) the baseline: a bare asyncua server with no-op station methods (bench/baseline.py);
(b) the gateway (``cell-gateway run``), each report committed before it is answered;
both with 1, 10 and 50 PLC clients, each in its own process, calling in a closed loop after a
warm-up; reports/s, p50 and p99 latency, and gateway/baseline ratios, as the median of A/B rounds.
(c) peak RSS of a fresh gateway before and after a long run of at least 1M reports.
With py-spy installed, the gateway is also profiled under the largest client count.
(d) with --history (or --history-only): the gateway on a fresh database against the same gateway
after N reports of real units through real jobs (bench/history.py): start-up, RSS, reports/s, CPU,
/api/status and CLI latency. Not run by default: its 1M fill alone takes about as long as (a)-(c),
which fill the default budget.

Everything runs on 127.0.0.1. Results: a table on stdout, ``bench/results/latest.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench import client
from simulators.gateway_process import derive_config, free_port

ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = ROOT / "config" / "cell.toml"
RESULTS = ROOT / "bench" / "results"
TICKS = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------- processes


class WorkerPool:
    """Benchmark PLCs, forked once (before anything starts a thread or an event loop)."""

    def __init__(self, size: int, target: Callable[[int, Connection], None] = client.serve) -> None:
        ctx = mp.get_context("fork")
        self.conns: list[Connection] = []
        self.procs = []
        for i in range(size):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=target, args=(i, child), daemon=True, name=f"bench-plc-{i}")
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    def run(self, count: int, job: client.Job, timeout: float) -> list[client.Outcome]:
        for conn in self.conns[:count]:
            conn.send(job)
        return self.collect(count, timeout)

    def collect(self, count: int, timeout: float) -> list[client.Outcome]:
        """The outcomes of the first ``count`` workers, each within ``timeout`` seconds from now."""
        outcomes = []
        deadline = time.monotonic() + timeout
        for conn in self.conns[:count]:
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                raise RuntimeError("a benchmark client did not finish in time")
            answer = conn.recv()
            if isinstance(answer, Exception):
                raise RuntimeError(f"a benchmark client failed: {answer!r}")
            outcomes.append(answer)
        return outcomes

    def close(self) -> None:
        for conn in self.conns:
            with suppress(OSError):
                conn.send(None)
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()


class Server:
    """A server process, ready when its port accepts connections (within ``within`` seconds)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        port: int,
        workdir: Path,
        env: dict[str, str] | None = None,
        within: float = 60.0,
    ) -> None:
        self.name = name
        self.log = workdir / f"{name}.log"
        self._out = self.log.open("wb")
        self.proc = subprocess.Popen(
            argv, cwd=workdir, env={**os.environ, **(env or {})}, stdout=self._out, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + within
        while not _listening(port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{name} did not start: {self.log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime

    def memory_kib(self) -> dict[str, int]:
        found = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                found[key] = int(value.split()[0])
        return found

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


def bench_config(workdir: Path, stations: int) -> Path:
    """The demo cell plus one bench station (B000...) and one pallet (X000...) per client."""
    config = derive_config(DEMO_CONFIG, workdir / "bench.toml")
    text = config.read_text()
    pallets = ", ".join(f'"X{i:03d}"' for i in range(stations))
    text, found = re.subn(r"^pallets = \[(.*)\]$", rf"pallets = [\1, {pallets}]", text, count=1, flags=re.MULTILINE)
    if not found:
        raise RuntimeError("the demo config has no top-level pallets line")
    # Every bench client connects from 127.0.0.1, up to 100 sessions at once: room beyond the defaults
    # of one peer address and of the session count (a cell's PLCs come from many addresses).
    room = "[limits]\nmax_connections = 1000\nmax_connections_per_peer = 1000\nmax_sessions = 1000\n"
    text, found = re.subn(r"^\[limits\]\n", room, text, count=1, flags=re.MULTILINE)
    if not found:
        text += "\n" + room
    for i in range(stations):
        text += f'\n[[stations]]\nid = "B{i:03d}"\nkind = "manual"\ngroups = ["BENCH"]\n'
    config.write_text(text)
    return config


def start_gateway(workdir: Path, config: Path, port: int, log_level: str) -> Server:
    env = {
        "CELL_GATEWAY_ENDPOINT": f"opc.tcp://127.0.0.1:{port}/cell-gateway/",
        "CELL_GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'bench.db'}",
        "CELL_GATEWAY_HTTP_PORT": "0",
    }
    argv = [sys.executable, "-m", "gateway", "run", "--config", str(config), "--json-logs", "--log-level", log_level]
    workdir.mkdir(parents=True, exist_ok=True)
    return Server("gateway", argv, port, workdir, env)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


# ---------------------------------------------------------------------------------------------- measuring


@dataclass(slots=True)
class Run:
    target: str
    clients: int
    round: int
    reports_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cpu_us_per_report: float
    latencies: array[float] = field(repr=False, default_factory=lambda: array("f"))


def percentile(values: list[float] | array[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def measure(pool: WorkerPool, server: Server, target: str, endpoint: str, clients: int, rnd: int, args: Any) -> Run:
    start_at = time.time() + 1.0 + 0.04 * clients
    job = client.Job(endpoint, f"{target}{rnd}c{clients}t{time.time_ns()}", start_at, args.warmup, args.duration)
    # The server's CPU time is read over the measured window only.
    wait = start_at + args.warmup - time.time()
    for conn in pool.conns[:clients]:
        conn.send(job)
    if wait > 0:
        time.sleep(wait)
    cpu0 = server.cpu_seconds()
    time.sleep(max(0.0, start_at + args.warmup + args.duration - time.time()))
    cpu1 = server.cpu_seconds()
    outcomes = pool.collect(clients, 60)
    latencies = array("f")
    for outcome in outcomes:
        latencies.frombytes(outcome.latencies_ms)
    calls = sum(o.calls for o in outcomes)
    rate = calls / args.duration
    return Run(
        target=target,
        clients=clients,
        round=rnd,
        reports_per_s=rate,
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
        errors=sum(o.errors for o in outcomes),
        server_cpu_us_per_report=(cpu1 - cpu0) / calls * 1e6 if calls else float("nan"),
        latencies=latencies,
    )


def _figures(mine: list[Run]) -> dict[str, Any]:
    pooled: array[float] = array("f")
    for r in mine:
        pooled.extend(r.latencies)
    return {
        "reports_per_s": round(statistics.median(r.reports_per_s for r in mine), 1),
        "p50_ms": round(percentile(pooled, 0.50), 2),
        "p99_ms": round(percentile(pooled, 0.99), 2),
        "cpu_us_per_report": round(statistics.median(r.server_cpu_us_per_report for r in mine), 1),
        "errors": sum(r.errors for r in mine),
        "rounds": [round(r.reports_per_s, 1) for r in mine],
    }


def summarize(runs: list[Run], clients: list[int]) -> list[dict[str, Any]]:
    rows = []
    for n in clients:
        row: dict[str, Any] = {"clients": n}
        for target in ("baseline", "gateway", "gateway-warning"):
            mine = [r for r in runs if r.target == target and r.clients == n]
            if mine:
                row[target] = _figures(mine)
        b, g = row["baseline"], row["gateway"]
        row["throughput_ratio"] = round(g["reports_per_s"] / b["reports_per_s"], 3)
        row["p99_ratio"] = round(g["p99_ms"] / b["p99_ms"], 2)
        if "gateway-warning" in row:
            q = row["gateway-warning"]
            row["warning_throughput_ratio"] = round(q["reports_per_s"] / b["reports_per_s"], 3)
            row["warning_p99_ratio"] = round(q["p99_ms"] / b["p99_ms"], 2)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------- memory


def memory_run(
    pool: WorkerPool,
    workdir: Path,
    clients: int,
    total: int,
    log_level: str,
    per_request: int,
    sessions: int,
    deadline: float,
    chunks: int = 10,
) -> dict[str, Any]:
    """A fresh gateway fed ``total`` reports in ``chunks``; RSS and rate after each.

    "Before" is the sample after a fifth of the run (the gateway's answer cache is full by then),
    "after" the last one. A chunk is not started if it would likely end after ``deadline``
    (time.monotonic()): the run then stops short and says so.
    """
    config = bench_config(workdir, len(pool.conns) * sessions)
    port = free_port()
    gateway = start_gateway(workdir, config, port, log_level)
    endpoint = f"opc.tcp://127.0.0.1:{port}/cell-gateway/"
    samples: list[dict[str, Any]] = [{"reports": 0, "seconds": 0.0, **gateway.memory_kib()}]
    stopped = ""
    try:
        done = 0
        began = time.monotonic()
        last_chunk = 0.0
        for chunk in range(chunks):
            if last_chunk and time.monotonic() + last_chunk * 1.25 > deadline:
                stopped = f"stopped after {done:,} of {total:,} reports: the next part would overrun the time budget"
                break
            count = total // chunks
            per_session = -(-count // (clients * sessions))
            per_session = -(-per_session // per_request) * per_request
            job = client.Job(
                endpoint, f"rss{chunk}t{time.time_ns()}", time.time() + 1.0 + 0.04 * clients, 0.0, 0.0,
                per_session, per_request, sessions, len(pool.conns),
            )  # fmt: skip
            started = time.monotonic()
            outcomes = pool.run(clients, job, timeout=max(60.0, deadline - started + 120))
            last_chunk = time.monotonic() - started
            calls = sum(o.calls for o in outcomes)
            done += calls
            samples.append(
                {
                    "reports": done,
                    "seconds": round(time.monotonic() - began, 1),
                    "reports_per_s": round(calls / max(o.seconds for o in outcomes), 1),
                    **gateway.memory_kib(),
                }
            )
            print(
                f"  {done:>9,} reports  {samples[-1]['reports_per_s']:7,.0f}/s  "
                f"RSS {samples[-1]['VmRSS'] / 1024:6.1f} MiB  peak {samples[-1]['VmHWM'] / 1024:6.1f} MiB",
                flush=True,
            )
            errors = sum(o.errors for o in outcomes)
            if errors:
                raise RuntimeError(f"{errors} reports were refused in the memory run")
        fifth = next(s for s in samples if s["reports"] >= total // 5) if done >= total // 5 else samples[-1]
        after = samples[-1]
        return {
            "clients": clients * sessions,
            "processes": clients,
            "reports_per_request": per_request,
            "log_level": log_level,
            "target": total,
            "reports": done,
            "complete": not stopped,
            "note": stopped,
            "seconds": after["seconds"],
            "reports_per_s": round(done / after["seconds"], 1) if after["seconds"] else 0.0,
            "samples": samples,
            "before_at": fifth["reports"],
            "before_hwm_mib": round(fifth["VmHWM"] / 1024, 1),
            "after_hwm_mib": round(after["VmHWM"] / 1024, 1),
            "before_rss_mib": round(fifth["VmRSS"] / 1024, 1),
            "after_rss_mib": round(after["VmRSS"] / 1024, 1),
            "growth_percent": round((after["VmHWM"] / fifth["VmHWM"] - 1) * 100, 1),
            "database_mib": round((workdir / "bench.db").stat().st_size / 2**20, 1),
        }
    finally:
        gateway.stop()


# ---------------------------------------------------------------------------------------------- profile


# Where a main-thread sample's own time is spent: the innermost frame that names one of these.
LAYERS = [
    ("socket writes (answers)", ("_SelectorSocketTransport.write", "sock_send")),
    ("structlog / logging", ("structlog/", "/logging/__init__", "gateway/logging.py")),
    ("SQLAlchemy + aiosqlite, loop side", ("sqlalchemy/", "aiosqlite/")),
    ("gateway writer", ("gateway/service/",)),
    (
        "gateway domain (cell, tracking, jobs, orders)",
        ("gateway/cell/", "gateway/tracking/", "gateway/jobs/", "gateway/orders/"),
    ),
    ("gateway OPC UA adapter", ("gateway/opcua/",)),
    ("asyncua encode/decode", ("asyncua/ua/",)),
    ("asyncua server", ("asyncua/server/", "asyncua/common/")),
    ("asyncio event loop", ("asyncio/",)),
]
# What a sample is part of: the share of samples with this frame anywhere in the stack.
WITHIN = [
    ("decode a request, dispatch (UaProcessor)", "UaProcessor._process_message"),
    ("method handler (gateway/opcua/calls.py answer)", "Calls.answer"),
    ("argument checks (parse)", "gateway/opcua/arguments.py"),
    ("writer cycle (Writer._cycle)", "Writer._cycle"),
    ("apply to the cell model (prepare.py _apply)", "_apply (gateway/service/prepare.py"),
    ("rows of the batch (batch_rows)", "batch_rows"),
    ("committed view (views.refresh)", "refresh (gateway/service/views.py"),
    ("write the batch (write_batch)", "write_batch"),
    ("publish after commit (on_commit)", "Publisher.on_commit"),
    ("canonical log line", "canonical_line"),
    ("send the answers (transport.write)", "_SelectorSocketTransport.write"),
    ("metrics", "metrics"),
]


def profile_gateway(pool: WorkerPool, gateway: Server, endpoint: str, clients: int, seconds: float, out: Path) -> Any:
    """py-spy (if installed) on the gateway under load; main-thread samples by the layer they are in."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return {"skipped": "py-spy is not installed (pip install py-spy)"}
    raw = out / "profile-gateway.txt"
    job = client.Job(endpoint, f"prof{time.time_ns()}", time.time() + 1.0 + 0.04 * clients, 1.0, seconds + 1.0)
    for conn in pool.conns[:clients]:
        conn.send(job)
    time.sleep(max(0.0, job.start_at + job.warmup - time.time()))
    result = subprocess.run(
        [spy, "record", "--pid", str(gateway.pid), "--duration", str(int(seconds)), "--rate", "250",
         "--format", "raw", "--nonblocking", "--output", str(raw)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    for conn in pool.conns[:clients]:
        conn.poll(60)
        conn.recv()
    if result.returncode != 0 or not raw.exists():
        return {"skipped": f"py-spy failed: {result.stderr.strip()[-300:]}"}
    return classify(raw)


def classify(raw: Path) -> dict[str, Any]:
    """py-spy's collapsed stacks -> the main thread's samples by layer (own time) and by work (inclusive)."""
    layers: Counter[str] = Counter()
    within: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    main = threads = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        if "threading.py" in stack or not stack.startswith("_run_module_as_main"):
            threads += count  # aiosqlite's worker thread and partial stacks
            continue
        main += count
        frames = stack.split(";")
        layer = next(
            (name for frame in reversed(frames) for name, marks in LAYERS if any(m in frame for m in marks)), "other"
        )
        layers[layer] += count
        for name, mark in WITHIN:
            if mark in stack:
                within[name] += count
        leaf = frames[-1]
        leaves[leaf.split(" (")[0] + " (" + leaf.rsplit("/", 1)[-1]] += count

    def share(counter: Counter[str], top: int = 20) -> dict[str, float]:
        return {k: round(v / main * 100, 1) for k, v in counter.most_common(top)} if main else {}

    return {
        "main_thread_samples": main,
        "other_thread_samples": threads,
        "layers": share(layers),
        "within": share(within),
        "top_functions": share(leaves, 15),
        "raw": str(raw.relative_to(ROOT)) if raw.is_relative_to(ROOT) else str(raw),
    }


# ---------------------------------------------------------------------------------------------- report


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| PLCs | gateway | baseline reports/s | gateway reports/s | ratio | baseline p50 / p99 ms "
        "| gateway p50 / p99 ms | p99 ratio | server CPU us/report (baseline / gateway) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        b = r["baseline"]
        variants = [("log INFO", r["gateway"], r["throughput_ratio"], r["p99_ratio"])]
        if "gateway-warning" in r:
            variants.append(
                ("log WARNING", r["gateway-warning"], r["warning_throughput_ratio"], r["warning_p99_ratio"])
            )
        for label, g, ratio, p99_ratio in variants:
            lines.append(
                f"| {r['clients']} | {label} | {b['reports_per_s']:,.0f} | {g['reports_per_s']:,.0f} | {ratio:.2f}x "
                f"| {b['p50_ms']:.2f} / {b['p99_ms']:.2f} | {g['p50_ms']:.2f} / {g['p99_ms']:.2f} | {p99_ratio:.2f}x "
                f"| {b['cpu_us_per_report']:.0f} / {g['cpu_us_per_report']:.0f} |"
            )
    return "\n".join(lines)


def markdown(result: dict[str, Any]) -> str:
    from bench import history

    out = ["# cell-gateway benchmark", ""]
    if "throughput" in result:
        out += _throughput_sections(result)
    else:
        out += ["No throughput and memory run recorded yet (`python -m bench` without --history-only).", ""]
    if result.get("history"):
        out += ["", *history.markdown(result["history"])]
    return "\n".join(out).rstrip("\n") + "\n"


def _throughput_sections(result: dict[str, Any]) -> list[str]:
    m = result["memory"]
    out = [
        f"{result['when']} on {result['machine']} (load average {result['load_average']['before']} before, "
        f"{result['load_average']['after']} after); {result['rounds']} A/B round(s), warm-up {result['warmup']} s, "
        f"{result['duration']} s measured per run; gateway log level {result['log_level']}; median of rounds "
        "for reports/s, latencies pooled over rounds. Target (a benchmark figure, not a test): gateway >= 0.8x "
        "the baseline's reports/s at 10 and 50 PLCs, p99 <= 2x.",
        "",
        table(result["throughput"]),
        "",
        "## Memory over a long run",
        "",
    ]
    if "skipped" in m:
        out.append(m["skipped"])
    else:
        out += [
            f"{m['reports']:,} reports (target {m['target']:,}) from {m['clients']} PLC sessions in {m['processes']} "
            f"processes, {m['reports_per_request']} reports per OPC UA request, gateway log level {m['log_level']}, "
            f"in {m['seconds']:.0f} s ({m['reports_per_s']:,.0f}/s on average); database {m['database_mib']} MiB "
            "at the end." + (f" **{m['note']}.**" if m["note"] else ""),
            "",
            f"| | after {m['before_at']:,} reports | after {m['reports']:,} | growth |",
            "| --- | ---: | ---: | ---: |",
            f"| peak RSS (VmHWM) | {m['before_hwm_mib']} MiB | {m['after_hwm_mib']} MiB "
            f"| {m['growth_percent']:+.1f}% |",
            f"| RSS (VmRSS) | {m['before_rss_mib']} MiB | {m['after_rss_mib']} MiB | |",
            "",
            "| reports | reports/s in that part | RSS MiB | peak RSS MiB |",
            "| ---: | ---: | ---: | ---: |",
        ]
        out += [
            f"| {x['reports']:,} | {x.get('reports_per_s', 0):,.0f} | {x['VmRSS'] / 1024:.1f} "
            f"| {x['VmHWM'] / 1024:.1f} |"
            for x in m["samples"]
        ]
    p = result.get("profile") or {}
    out += ["", "## Where the gateway's main thread spends its time (py-spy, largest client count)", ""]
    if "layers" in p:
        out += [
            f"{p['main_thread_samples']} samples of the main thread (py-spy, not counting idle time; "
            f"{p['other_thread_samples']} in other threads: aiosqlite's).",
            "",
            "| own time in | share |",
            "| --- | ---: |",
        ]
        out += [f"| {k} | {v}% |" for k, v in p["layers"].items()]
        out += ["", "| time within | share |", "| --- | ---: |"]
        out += [f"| {k} | {v}% |" for k, v in p["within"].items()]
        out += ["", "Top functions (innermost frame):", "", "| function | share |", "| --- | ---: |"]
        out += [f"| `{k}` | {v}% |" for k, v in p["top_functions"].items()]
    else:
        out.append(str(p.get("skipped", "not profiled")))
    return out


# ---------------------------------------------------------------------------------------------- main


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def report_run(run: Run) -> None:
    print(
        f"round {run.round} {run.target:14} {run.clients:3} PLCs: {run.reports_per_s:8,.0f} reports/s  "
        f"p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:7.2f} ms  {run.server_cpu_us_per_report:5.0f} us CPU/report  "
        f"errors {run.errors}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    from bench import history  # it imports this module

    parser = argparse.ArgumentParser(prog="python -m bench", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", default="1,10,50", help="comma list of PLC counts")
    parser.add_argument("--warmup", type=float, default=1.5, help="seconds of calls before measuring")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds measured per run")
    parser.add_argument("--rounds", type=int, default=2, help="A/B rounds (baseline, then gateway)")
    parser.add_argument("--log-level", default="INFO", help="the gateway's log level (INFO: a line per report)")
    parser.add_argument(
        "--quiet-row",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure a gateway at log level WARNING with the most PLCs (what per-report logging costs)",
    )
    parser.add_argument("--rss-reports", type=int, default=1_000_000, help="reports in the memory run (0: skip)")
    parser.add_argument(
        "--rss-clients", type=int, default=0, help="client processes in the memory run (default: the most)"
    )
    parser.add_argument("--rss-sessions", type=int, default=2, help="OPC UA sessions per client process, memory run")
    parser.add_argument("--rss-per-request", type=int, default=20, help="reports per OPC UA request, memory run")
    parser.add_argument("--rss-log-level", default="WARNING", help="the gateway's log level in the memory run")
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True, help="py-spy, if installed")
    parser.add_argument(
        "--budget", type=float, default=560.0, help="seconds for the whole bench; the memory run stops short to keep it"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    history.add_options(parser)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    saved = args.out / "latest.json"
    previous: dict[str, Any] = json.loads(saved.read_text()) if saved.exists() else {}
    workdir = Path(tempfile.mkdtemp(prefix="cell-bench-"))
    try:
        if args.history_only:
            result = {k: v for k, v in previous.items() if k != "history"}
        else:
            result = throughput_and_memory(args, workdir / "main")
        # The history section of the last run that had one stays until a run measures it again.
        if previous.get("history") and not (args.history or args.history_only):
            result["history"] = previous["history"]
        write_results(args.out, result)
        if args.history or args.history_only:
            result["history"] = history.run(args, workdir)
            write_results(args.out, result)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    p = result.get("profile")
    if not args.history_only and p and "layers" in p:
        print("\ngateway main thread, own time: " + ", ".join(f"{k} {v}%" for k, v in p["layers"].items()))
    print(f"\nwritten {args.out / 'latest.md'} and latest.json", flush=True)


def write_results(out: Path, result: dict[str, Any]) -> None:
    (out / "latest.json").write_text(json.dumps(result, indent=2))
    (out / "latest.md").write_text(markdown(result))


def throughput_and_memory(args: Any, workdir: Path) -> dict[str, Any]:
    """Parts (a), (b) and (c): the A/B throughput rounds, the profile and the memory run."""
    workdir.mkdir(parents=True)
    clients = [int(c) for c in args.clients.split(",")]
    most = max([*clients, args.rss_clients])
    began = time.monotonic()
    load_before = loadavg()
    print(f"load average before: {load_before} (other work on this machine skews absolute figures)", flush=True)
    pool = WorkerPool(most)
    runs: list[Run] = []
    profile: Any = None
    servers: list[Server] = []
    try:
        ports = {name: free_port() for name in ("baseline", "gateway", "gateway-warning")}
        endpoints = {name: f"opc.tcp://127.0.0.1:{port}/cell-gateway/" for name, port in ports.items()}
        baseline = Server(
            "baseline",
            [sys.executable, "-m", "bench.baseline", "--port", str(ports["baseline"]), "--stations", str(most)],
            ports["baseline"],
            workdir,
            {"PYTHONPATH": str(ROOT)},
        )
        servers.append(baseline)
        gateway = start_gateway(workdir / "gw", bench_config(workdir / "gw", most), ports["gateway"], args.log_level)
        servers.append(gateway)
        by_name = {"baseline": baseline, "gateway": gateway}
        if args.quiet_row:
            quiet = start_gateway(
                workdir / "gwq", bench_config(workdir / "gwq", most), ports["gateway-warning"], "WARNING"
            )
            servers.append(quiet)
            by_name["gateway-warning"] = quiet
        for rnd in range(1, args.rounds + 1):
            for n in clients:
                targets = ["baseline", "gateway"]
                if args.quiet_row and n == max(clients):
                    targets.append("gateway-warning")
                for target in targets:
                    run = measure(pool, by_name[target], target, endpoints[target], n, rnd, args)
                    runs.append(run)
                    report_run(run)
        if args.profile:
            profile = profile_gateway(pool, gateway, endpoints["gateway"], max(clients), 8, args.out)
        for server in servers:
            server.stop()
        rows = summarize(runs, clients)
        print("\n" + table(rows), flush=True)
        memory: dict[str, Any] = {"skipped": "--rss-reports 0"}
        if args.rss_reports:
            rss_clients = args.rss_clients or most
            print(
                f"\nmemory run: {args.rss_reports:,} reports from {rss_clients * args.rss_sessions} PLC sessions "
                f"({args.rss_per_request} per request) ...",
                flush=True,
            )
            memory = memory_run(
                pool, workdir / "rss", rss_clients, args.rss_reports, args.rss_log_level, args.rss_per_request,
                args.rss_sessions, began + args.budget,
            )  # fmt: skip
            print(
                f"peak RSS {memory['before_hwm_mib']} MiB after {memory['before_at']:,} reports, "
                f"{memory['after_hwm_mib']} MiB after {memory['reports']:,} ({memory['growth_percent']:+.1f}%), "
                f"{memory['reports_per_s']:,.0f} reports/s on average. {memory['note']}",
                flush=True,
            )
    finally:
        for server in servers:
            server.stop()
        pool.close()
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "load_average": {"before": load_before, "after": loadavg()},
        "rounds": args.rounds,
        "warmup": args.warmup,
        "duration": args.duration,
        "log_level": args.log_level,
        "throughput": rows,
        "memory": memory,
        "profile": profile,
        "runs": [{k: v for k, v in asdict(r).items() if k != "latencies"} for r in runs],
        "seconds": round(time.monotonic() - began, 1),
    }
