"""`python -m bench.cpu`: milliseconds of CPU each gateway process spends per request.

The throughput ceiling of a gateway whose processes share the machine's cores is set by its
total CPU per request, so this is the figure that says which change pays. It starts the fake
upstream and the gateway (as `python -m bench` does, unpinned), sends requests one at a time
(nothing queued, no contention), and reads every process's CPU time before and after each
window. On Linux each process is broken down by thread name (the ledger's embedded ClickHouse
works in its own threads).

To compare two commits, run it from a worktree of each with PYTHONPATH set to that worktree,
alternating runs: the machine's speed drifts, so compare within one sitting.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson
import psutil

from switchyard.natsserver import free_port

from .__main__ import ROOT, Gateway, body_for


def cpu_by_thread(proc: psutil.Process) -> dict[str, float]:
    """CPU seconds per thread name (Linux /proc); elsewhere the process total under "all"."""
    task_dir = Path(f"/proc/{proc.pid}/task")
    if not task_dir.is_dir():
        times = proc.cpu_times()
        return {"all": times.user + times.system}
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = collections.Counter()
    for task in task_dir.iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended between listing and reading
        out[name] += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return out


def snapshot(procs: dict[str, psutil.Process]) -> dict[str, dict[str, float]]:
    return {name: cpu_by_thread(proc) for name, proc in procs.items()}


def per_request(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], requests: int
) -> dict[str, dict[str, float]]:
    """ms of CPU per request, per process and thread name (threads that used none left out)."""
    out = {}
    for name, threads in after.items():
        spent = {t: (s - before[name].get(t, 0.0)) * 1000 / requests for t, s in threads.items()}
        out[name] = {t: round(ms, 3) for t, ms in sorted(spent.items(), key=lambda kv: -kv[1]) if ms > 0}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--requests", type=int, default=300, help="requests per window")
    parser.add_argument("--windows", type=int, default=3, help="measured windows (median reported)")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="upstream's fixed delay")
    parser.add_argument("--gateway-env", action="append", default=[], metavar="SWITCHYARD_X=VALUE")
    parser.add_argument("--out", default="", help="also write the JSON report here")
    args = parser.parse_args()

    port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "bench.upstream", "--port", str(port), "--delay-ms", str(args.delay_ms)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-cpu-"))
    gateway = None
    try:
        settings = dict(item.split("=", 1) for item in args.gateway_env)
        gateway = Gateway(f"http://127.0.0.1:{port}", -1, workdir, settings)
        procs = gateway.services()
        headers = dict(h.split(": ", 1) for h in gateway.headers) | {"content-type": "application/json"}
        body = body_for("bench/echo", False)
        windows = []
        with httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as client:
            for _ in range(50):  # warm-up: connections, caches, the first ledger parts
                client.post("/v1/chat/completions", content=body)
            time.sleep(2)
            for _ in range(args.windows):
                before, latencies = snapshot(procs), []
                for _ in range(args.requests):
                    started = time.perf_counter()
                    response = client.post("/v1/chat/completions", content=body)
                    latencies.append((time.perf_counter() - started) * 1000)
                    if response.status_code != 200:
                        raise RuntimeError(f"the gateway answered {response.status_code}: {response.text}")
                # The ledger's last batch of the window lands inside it (its wait is 1 s).
                time.sleep(1.5)
                windows.append((per_request(before, snapshot(procs), args.requests), latencies))
        totals = {name: [sum(w[name].values()) for w, _ in windows] for name in procs}
        report = {
            "requests_per_window": args.requests,
            "gateway_env": args.gateway_env,
            "ms_cpu_per_request": {name: round(statistics.median(v), 2) for name, v in totals.items()},
            "total_ms": round(statistics.median(sum(window) for window in zip(*totals.values(), strict=True)), 2),
            "sequential_p50_ms": round(statistics.median(statistics.median(lat) for _, lat in windows), 2),
            "threads": windows[len(windows) // 2][0],
        }  # fmt: skip
        print(f"{'process':16s} ms of CPU per request (median of {args.windows} windows)")
        for name, ms in sorted(report["ms_cpu_per_request"].items(), key=lambda kv: -kv[1]):
            print(f"{name:16s} {ms:6.2f}   {report['threads'][name]}")
        print(
            f"{'total':16s} {report['total_ms']:6.2f}   sequential latency p50 {report['sequential_p50_ms']} ms"
        )
        if args.out:
            Path(args.out).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        return 0
    finally:
        if gateway is not None:
            gateway.stop()
        upstream.terminate()
        upstream.wait(10)


if __name__ == "__main__":
    sys.exit(main())
