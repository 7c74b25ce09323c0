"""`python -m bench.cpu`: milliseconds of CPU each gateway process spends per request.

The throughput ceiling of a gateway whose processes share the machine's cores is set by its
total CPU per request, so this is the figure that says which change pays. It starts the fake
upstream and the gateway (as `python -m bench` does, unpinned), sends requests one at a time
(nothing queued, no contention), and reads every process's CPU time before and after each
window. On Linux each process is broken down by thread name (the ledger's embedded ClickHouse
works in its own threads).

The machine's speed drifts, so two versions are compared in one sitting: `--against CHECKOUT`
starts a second gateway running another checkout's code (`git worktree add /tmp/base <commit>`)
beside this one, and measures them in alternating windows.

`--stream` sends streamed requests instead (the upstream streams `--words` chunks, one every
`--chunk-delay-ms`) and also reports the CPU per chunk: a stream's CPU divided by its chunks,
the figure chunk coalescing (services/providers/coalesce.py) is measured by.
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

from .__main__ import ROOT, Gateway, body_for, parse_settings


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


BODY = body_for("bench/echo", False)
STREAM_BODY = body_for("bench/echo", True)


class Probe:
    """One gateway under measurement, and a keep-alive client to it."""

    def __init__(self, label: str, gateway: Gateway, stream: bool = False) -> None:
        self.label = label
        self.body = STREAM_BODY if stream else BODY
        self.stream = stream
        self.gateway = gateway
        self.procs = gateway.services()
        headers = dict(h.split(": ", 1) for h in gateway.headers) | {"content-type": "application/json"}
        self.client = httpx.Client(base_url=gateway.url, headers=headers, timeout=30)
        self.windows: list[tuple[dict[str, dict[str, float]], list[float]]] = []

    def send(self, count: int) -> list[float]:
        latencies = []
        for _ in range(count):
            started = time.perf_counter()
            response = self.client.post("/v1/chat/completions", content=self.body)
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                raise RuntimeError(f"{self.label} answered {response.status_code}: {response.text}")
            if self.stream and not response.text.rstrip().endswith("data: [DONE]"):
                raise RuntimeError(f"{self.label}: a stream did not end with [DONE]: {response.text[-300:]}")
        return latencies

    def window(self, count: int) -> None:
        before = snapshot(self.procs)
        latencies = self.send(count)
        time.sleep(1.5)  # the ledger's last batch of the window lands inside it (its wait is 1 s)
        self.windows.append((per_request(before, snapshot(self.procs), count), latencies))

    def report(self) -> dict:
        totals = {name: [sum(w[name].values()) for w, _ in self.windows] for name in self.procs}
        return {
            "ms_cpu_per_request": {name: round(statistics.median(v), 2) for name, v in totals.items()},
            "total_ms": round(statistics.median(sum(w) for w in zip(*totals.values(), strict=True)), 2),
            "total_ms_per_window": [round(sum(w), 2) for w in zip(*totals.values(), strict=True)],
            "sequential_p50_ms": round(statistics.median(statistics.median(lat) for _, lat in self.windows), 2),
            "threads": self.windows[len(self.windows) // 2][0],
        }  # fmt: skip

    def close(self) -> None:
        self.client.close()
        self.gateway.stop()


def print_report(label: str, report: dict, windows: int) -> None:
    print(f"{label}: ms of CPU per request (median of {windows} windows)")
    for name, ms in sorted(report["ms_cpu_per_request"].items(), key=lambda kv: -kv[1]):
        print(f"  {name:16s} {ms:6.2f}   {report['threads'][name]}")
    print(f"  {'total':16s} {report['total_ms']:6.2f}   per window {report['total_ms_per_window']}")
    print(f"  sequential latency p50 {report['sequential_p50_ms']} ms")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--requests", type=int, default=300, help="requests per window")
    parser.add_argument("--windows", type=int, default=3, help="measured windows (median reported)")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="upstream's fixed delay")
    parser.add_argument("--gateway-env", action="append", default=[], metavar="SWITCHYARD_X=VALUE")
    parser.add_argument("--stream", action="store_true", help="streamed requests; also report CPU per chunk")
    parser.add_argument("--words", type=int, default=16, help="chunks per streamed answer (upstream)")
    parser.add_argument("--chunk-delay-ms", type=float, default=1.0, help="upstream's gap between chunks")
    parser.add_argument(
        "--against",
        default="",
        metavar="CHECKOUT",
        help="also run the code of another checkout (e.g. a `git worktree` of an older commit) "
        "side by side, alternating windows, and report both",
    )
    parser.add_argument("--out", default="", help="also write the JSON report here")
    args = parser.parse_args()

    port = free_port()
    upstream = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.upstream",
            "--port",
            str(port),
            "--delay-ms",
            str(args.delay_ms),
            "--words",
            str(args.words),
            "--chunk-delay-ms",
            str(args.chunk_delay_ms),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    settings = parse_settings(args.gateway_env)
    upstream_url = f"http://127.0.0.1:{port}"
    probes: list[Probe] = []
    try:
        # PYTHONPATH picks the code each gateway's processes import.
        sides = [("this checkout", str(ROOT))]
        if args.against:
            sides.insert(0, (f"against {args.against}", str(Path(args.against).resolve())))
        for label, code in sides:
            workdir = Path(tempfile.mkdtemp(prefix="switchyard-cpu-"))
            gateway = Gateway(upstream_url, -1, workdir, settings | {"PYTHONPATH": code})
            probes.append(Probe(label, gateway, args.stream))
        for probe in probes:
            probe.send(50)  # warm-up: connections, caches, the first ledger parts
        time.sleep(2)
        for index in range(args.windows):
            # Alternate which goes first, so neither always follows the other's ledger insert.
            for probe in probes if index % 2 == 0 else probes[::-1]:
                probe.window(args.requests)
        report = {
            "requests_per_window": args.requests,
            "gateway_env": args.gateway_env,
            "stream": args.stream,
        }
        report["runs"] = {probe.label: probe.report() for probe in probes}
        if args.stream:
            report["chunks_per_stream"] = args.words
            for run in report["runs"].values():
                run["us_cpu_per_chunk"] = {
                    name: round(ms * 1000 / args.words, 1) for name, ms in run["ms_cpu_per_request"].items()
                } | {"total": round(run["total_ms"] * 1000 / args.words, 1)}
        for label, run in report["runs"].items():
            print_report(label, run, args.windows)
            if "us_cpu_per_chunk" in run:
                print(f"  µs of CPU per chunk ({args.words} chunks a stream): {run['us_cpu_per_chunk']}")
        if args.out:
            Path(args.out).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        return 0
    finally:
        for probe in probes:
            probe.close()
        upstream.terminate()
        upstream.wait(10)


if __name__ == "__main__":
    sys.exit(main())
