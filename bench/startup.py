"""``python -m bench.startup``: what the companion NodeSets cost a gateway at start (issue 16).

The demo cell with ``server.companion_specs`` true and false, started as ``cell-gateway run`` on a
fresh database each time, alternately (on, off, on, off, ...) after one warm-up start of each that is
not counted (it makes the PKI and warms the file cache). Start-up: process start until the
``gateway_started`` log line; RSS (VmRSS) and its peak (VmHWM) read from /proc just after it; the
NodeSets' own load time from the ``companion_specs_loaded`` line. A figure on this machine, not a test:
other work on it skews absolute numbers (the load average is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from simulators.gateway_process import GatewayProcess, derive_config

ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = ROOT / "config" / "cell.toml"
SWITCH = "companion_specs = true"


@dataclass(frozen=True, slots=True)
class Start:
    companion_specs: bool
    seconds: float  # process start to gateway_started
    rss_mib: float
    hwm_mib: float
    nodesets_s: float | None  # the companion_specs_loaded line's seconds


def configs(folder: Path) -> dict[bool, Path]:
    """The demo cell with the companion specs on and off (both under ``folder/config``: one PKI)."""
    text = DEMO_CONFIG.read_text(encoding="utf-8")
    if SWITCH not in text:
        raise RuntimeError(f"the demo config no longer contains {SWITCH!r}")
    on = derive_config(DEMO_CONFIG, folder / "config" / "on.toml")
    off = derive_config(DEMO_CONFIG, folder / "config" / "off.toml")
    off.write_text(text.replace(SWITCH, "companion_specs = false"), encoding="utf-8")
    return {True: on, False: off}


def memory_mib(pid: int) -> dict[str, float]:
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            found[key] = int(value.split()[0]) / 1024
    return found


def nodesets_seconds(log: Path) -> float | None:
    for line in log.read_text(errors="replace").splitlines():
        if '"companion_specs_loaded"' in line:
            return float(json.loads(line)["seconds"])
    return None


async def start_once(config: Path, workdir: Path, companion_specs: bool) -> Start:
    gateway = GatewayProcess(config, workdir)
    began = time.perf_counter()
    await gateway.start(within=120)
    seconds = time.perf_counter() - began
    try:
        assert gateway.pid is not None
        memory = memory_mib(gateway.pid)
    finally:
        await gateway.stop()
    return Start(companion_specs, seconds, memory["VmRSS"], memory["VmHWM"], nodesets_seconds(gateway.log_path))


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def table(starts: list[Start]) -> str:
    lines = [
        "| companion_specs | runs | start-up s (median, min-max) | RSS after start MiB (median) "
        "| peak RSS MiB (median) | NodeSets load s (median) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    medians: dict[bool, tuple[float, float]] = {}
    for switch in (False, True):
        runs = [s for s in starts if s.companion_specs is switch]
        seconds = [s.seconds for s in runs]
        rss = statistics.median(s.rss_mib for s in runs)
        loads = [s.nodesets_s for s in runs if s.nodesets_s is not None]
        medians[switch] = (statistics.median(seconds), rss)
        lines.append(
            f"| {str(switch).lower()} | {len(runs)} | {statistics.median(seconds):.2f} "
            f"({min(seconds):.2f}-{max(seconds):.2f}) | {rss:.1f} | {statistics.median(s.hwm_mib for s in runs):.1f} "
            f"| {f'{statistics.median(loads):.2f}' if loads else '-'} |"
        )
    (off_s, off_rss), (on_s, on_rss) = medians[False], medians[True]
    lines.append(f"\nthe companion specs cost {on_s - off_s:+.2f} s at start and {on_rss - off_rss:+.1f} MiB RSS")
    return "\n".join(lines)


async def measure(runs: int, folder: Path) -> list[Start]:
    paths = configs(folder)
    for switch in (True, False):  # warm-up: the PKI is made, the files are cached
        await start_once(paths[switch], folder / f"warmup-{switch}", switch)
    starts = []
    for i in range(runs):
        for switch in (True, False):
            start = await start_once(paths[switch], folder / f"run-{i}-{switch}", switch)
            print(
                f"run {i} companion_specs {str(switch).lower():5}: start-up {start.seconds:5.2f} s  "
                f"RSS {start.rss_mib:6.1f} MiB  peak {start.hwm_mib:6.1f} MiB  "
                f"NodeSets {start.nodesets_s if start.nodesets_s is not None else '-'} s",
                flush=True,
            )
            starts.append(start)
    return starts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="starts of each variant, after one warm-up each")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the runs' folders here (default: a temp)")
    args = parser.parse_args(argv)
    print(f"load average before: {loadavg()} (other work on this machine skews absolute figures)", flush=True)
    if args.workdir is not None:
        starts = asyncio.run(measure(args.runs, args.workdir))
    else:
        with tempfile.TemporaryDirectory(prefix="bench-startup-") as folder:
            starts = asyncio.run(measure(args.runs, Path(folder)))
    print("\n" + table(starts), flush=True)
    print(f"load average after: {loadavg()}", flush=True)


if __name__ == "__main__":
    main()
