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

`--gateway-env` settings go to both gateways; `--this-env` and `--against-env` to one side
only, to measure a setting against the other side's default. Each side reports the processes
it runs (with SWITCHYARD_ROUTER_MODE=ingress there is no router process: its CPU is the
ingress's).
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


def nats_counts(monitor_url: str) -> dict[str, int]:
    """nats-server's message counters (/varz): `in_msgs` counts messages clients published to
    it (JetStream's own acks and deliveries count as its internal clients' publishes too),
    `out_msgs` messages it delivered to subscribers."""
    if not monitor_url:
        return {}
    varz = httpx.get(f"{monitor_url}/varz", timeout=5).json()
    return {"in_msgs": int(varz["in_msgs"]), "out_msgs": int(varz["out_msgs"])}


def published_by_connection(monitor_url: str) -> collections.Counter[str]:
    """Messages each service's connections published (/connz, by connection name): which
    service sends what share of a request's messages."""
    out: collections.Counter[str] = collections.Counter()
    if monitor_url:
        connz = httpx.get(f"{monitor_url}/connz", params={"limit": 1024}, timeout=5).json()
        for conn in connz.get("connections") or []:
            out[conn.get("name") or "?"] += int(conn.get("in_msgs", 0))
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
        self.messages: list[dict[str, float]] = []  # per request, per window
        self.by_connection: list[dict[str, float]] = []
        self.idle_messages_per_s: dict[str, float] = {}

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

    def idle(self, seconds: float) -> None:
        """Messages per second with no request in flight (beats, quota state, pulls): the share
        of each window's count that is not per request."""
        before = nats_counts(self.gateway.nats_monitor_url)
        time.sleep(seconds)
        after = nats_counts(self.gateway.nats_monitor_url)
        self.idle_messages_per_s = {k: round((after[k] - v) / seconds, 2) for k, v in before.items()}

    def window(self, count: int) -> None:
        counts = nats_counts(self.gateway.nats_monitor_url)
        by_connection = published_by_connection(self.gateway.nats_monitor_url)
        started = time.monotonic()
        before = snapshot(self.procs)
        latencies = self.send(count)
        time.sleep(1.5)  # the ledger's last batch of the window lands inside it (its wait is 1 s)
        self.windows.append((per_request(before, snapshot(self.procs), count), latencies))
        after = nats_counts(self.gateway.nats_monitor_url)
        idle = {k: rate * (time.monotonic() - started) for k, rate in self.idle_messages_per_s.items()}
        self.messages.append(
            {k: (after[k] - v) / count for k, v in counts.items()}
            | {f"{k}_net_of_idle": (after[k] - v - idle.get(k, 0.0)) / count for k, v in counts.items()}
        )
        published = published_by_connection(self.gateway.nats_monitor_url)
        published.subtract(by_connection)
        self.by_connection.append({k: round(v / count, 2) for k, v in sorted(published.items()) if v})

    def report(self) -> dict:
        totals = {name: [sum(w[name].values()) for w, _ in self.windows] for name in self.procs}
        return {
            "ms_cpu_per_request": {name: round(statistics.median(v), 2) for name, v in totals.items()},
            "total_ms": round(statistics.median(sum(w) for w in zip(*totals.values(), strict=True)), 2),
            "total_ms_per_window": [round(sum(w), 2) for w in zip(*totals.values(), strict=True)],
            "sequential_p50_ms": round(statistics.median(statistics.median(lat) for _, lat in self.windows), 2),
            "threads": self.windows[len(self.windows) // 2][0],
            # NATS messages per request over each whole window (median of the windows), idle
            # traffic included; "in_msgs" (messages published) is what issue 15's "<= 6" counts.
            "messages_per_request": {
                k: round(statistics.median(m[k] for m in self.messages), 2) for k in self.messages[0]
            } if self.messages and self.messages[0] else {},
            "idle_messages_per_s": self.idle_messages_per_s,
            # Published per request by each service's connections (the middle window); the rest
            # of in_msgs is JetStream's own (stored-message acks, deliveries to consumers).
            "published_per_request_by": self.by_connection[len(self.by_connection) // 2]
            if self.by_connection else {},
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
    messages = report["messages_per_request"]
    if messages:
        print(
            f"  NATS messages per request: {messages['in_msgs']} published (in_msgs), "
            f"{messages['out_msgs']} delivered (out_msgs); net of the idle rate "
            f"{messages['in_msgs_net_of_idle']} / {messages['out_msgs_net_of_idle']} "
            f"(idle {report['idle_messages_per_s']} per s)"
        )
        print(f"  published per request by connection: {report['published_per_request_by']}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--requests", type=int, default=300, help="requests per window")
    parser.add_argument("--windows", type=int, default=3, help="measured windows (median reported)")
    parser.add_argument("--warmup", type=int, default=50, help="requests sent before measuring")
    parser.add_argument(
        "--idle-s", type=float, default=2.0, help="seconds of the idle message rate (before the windows)"
    )
    parser.add_argument("--delay-ms", type=float, default=20.0, help="upstream's fixed delay")
    parser.add_argument(
        "--gateway-env", action="append", default=[], metavar="SWITCHYARD_X=VALUE", help="both gateways"
    )
    parser.add_argument(
        "--this-env",
        action="append",
        default=[],
        metavar="SWITCHYARD_X=VALUE",
        help="this checkout's gateway only (after --gateway-env): compare a setting against the "
        "other side's default, e.g. SWITCHYARD_ROUTER_MODE=ingress",
    )
    parser.add_argument(
        "--against-env", action="append", default=[], metavar="SWITCHYARD_X=VALUE", help="--against's only"
    )
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
        sides = [("this checkout", str(ROOT), parse_settings(args.this_env))]
        if args.against:
            against = (f"against {args.against}", str(Path(args.against).resolve()))
            sides.insert(0, (*against, parse_settings(args.against_env)))
        for label, code, side_settings in sides:
            workdir = Path(tempfile.mkdtemp(prefix="switchyard-cpu-"))
            gateway = Gateway(upstream_url, -1, workdir, settings | side_settings | {"PYTHONPATH": code})
            probes.append(Probe(label, gateway, args.stream))
        for probe in probes:
            probe.send(args.warmup)  # warm-up: connections, caches, the first ledger parts
        for probe in probes:
            probe.idle(args.idle_s)  # also lets the warm-up's ledger batch land
        for index in range(args.windows):
            # Alternate which goes first, so neither always follows the other's ledger insert.
            for probe in probes if index % 2 == 0 else probes[::-1]:
                probe.window(args.requests)
        report = {
            "requests_per_window": args.requests,
            "gateway_env": args.gateway_env,
            "this_env": args.this_env,
            "against_env": args.against_env,
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
