"""`python -m bench.idle`: what an idle stack costs, in percent of one core, per process.

A gateway that nobody calls should cost next to nothing: every timer that wakes a process
(heartbeats, pull loops, snapshot and sync timers, metrics, lag polls) is CPU taken from the
machine's other tenants and, on a one-core deployment, from the first request after a quiet
spell. This starts the fake upstream and the gateway as `switchyard up` does (as
`python -m bench` does, unpinned), sends `--warm` requests so that every service has state to
look after (ledger parts, budget spend, provider stats), lets it settle, then reads the CPU time
of every process of the gateway, the supervising `switchyard up` included (utime + stime from
/proc, per thread name on Linux), before and after `--seconds` of idleness.

Run: python -m bench.idle --seconds 30      (add --json for the report on stdout)
     python -m bench.idle --against /tmp/base  (another checkout's code, idle in the same window)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson
import psutil

from switchyard.natsserver import free_port

from .__main__ import ROOT, Gateway, body_for, parse_settings
from .cpu import cpu_by_thread


def gateway_processes(gateway: Gateway) -> dict[str, psutil.Process]:
    """Every process of the gateway: its services, nats-server and the supervisor itself."""
    return gateway.services() | {"supervisor": psutil.Process(gateway.process.pid)}


def warm(gateway: Gateway, requests: int) -> None:
    headers = dict(h.split(": ", 1) for h in gateway.headers) | {"content-type": "application/json"}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as client:
        for _ in range(requests):
            response = client.post("/v1/chat/completions", content=body_for("bench/echo", False))
            if response.status_code != 200:
                raise RuntimeError(f"the gateway answered {response.status_code}: {response.text}")


def measure(procs: dict[str, psutil.Process], seconds: float) -> dict:
    """Percent of one core each process (and each of its thread names) used over `seconds`."""
    return measure_side_by_side({"": procs}, seconds)[""]


def measure_side_by_side(groups: dict[str, dict[str, psutil.Process]], seconds: float) -> dict[str, dict]:
    """`measure` for several gateways over the same window (idle at the same time)."""
    before = {label: {n: cpu_by_thread(p) for n, p in procs.items()} for label, procs in groups.items()}
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    after = {label: {n: cpu_by_thread(p) for n, p in procs.items()} for label, procs in groups.items()}
    return {label: idle_report(before[label], after[label], elapsed) for label in groups}


def idle_report(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], elapsed_s: float
) -> dict:
    """Pure: CPU-second snapshots (per process, per thread name) into percent of one core."""
    processes: dict[str, float] = {}
    threads: dict[str, dict[str, float]] = {}
    for name, now in after.items():
        spent = {t: s - before.get(name, {}).get(t, 0.0) for t, s in now.items()}
        processes[name] = round(100 * sum(spent.values()) / elapsed_s, 2)
        threads[name] = {
            t: round(100 * s / elapsed_s, 2) for t, s in sorted(spent.items(), key=lambda kv: -kv[1]) if s > 0
        }
    return {
        "seconds": round(elapsed_s, 1),
        "pct_of_one_core": processes,
        "total_pct": round(sum(processes.values()), 2),
        "threads": threads,
    }


def print_report(report: dict) -> None:
    print(f"idle for {report['seconds']} s: percent of one core")
    for name, pct in sorted(report["pct_of_one_core"].items(), key=lambda kv: -kv[1]):
        print(f"  {name:16s} {pct:6.2f} %   {report['threads'][name]}")
    print(f"  {'total':16s} {report['total_pct']:6.2f} %")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.idle", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--seconds", type=float, default=30.0, help="idle seconds measured")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds left to start-up work first")
    parser.add_argument("--warm", type=int, default=20, help="requests sent (one at a time) before settling")
    parser.add_argument("--gateway-env", action="append", default=[], metavar="SWITCHYARD_X=VALUE")
    parser.add_argument(
        "--against",
        default="",
        metavar="CHECKOUT",
        help="also run another checkout's code (e.g. a `git worktree` of an older commit) idle in the "
        "same window, and report both",
    )
    parser.add_argument("--json", action="store_true", help="print the JSON report instead of a table")
    parser.add_argument("--out", default="", help="also write the JSON report here")
    args = parser.parse_args()

    port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "bench.upstream", "--port", str(port), "--delay-ms", "5"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    settings = parse_settings(args.gateway_env)
    # PYTHONPATH picks the code each gateway's processes import (as bench.cpu --against).
    sides = [("this checkout", str(ROOT))]
    if args.against:
        sides.insert(0, (f"against {args.against}", str(Path(args.against).resolve())))
    gateways: dict[str, Gateway] = {}
    try:
        for label, code in sides:
            workdir = Path(tempfile.mkdtemp(prefix="switchyard-idle-"))
            env = settings | {"PYTHONPATH": code}
            gateways[label] = Gateway(f"http://127.0.0.1:{port}", -1, workdir, env)
        for gateway in gateways.values():
            warm(gateway, args.warm)
        time.sleep(args.settle)
        reports = measure_side_by_side(
            {label: gateway_processes(g) for label, g in gateways.items()}, args.seconds
        )
        for report in reports.values():
            report["warm_requests"] = args.warm
    finally:
        for gateway in gateways.values():
            gateway.stop()
        upstream.terminate()
        upstream.wait(10)
    result = reports["this checkout"] if len(reports) == 1 else reports
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        for label, report in reports.items():
            if len(reports) > 1:
                print(f"{label}:")
            print_report(report)
    if args.out:
        Path(args.out).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
