"""`python -m bench.peer`: Switchyard and Portkey side by side, in one run, on one harness.

A figure compared across gateways means something only when both are measured the same way,
at the same time, on the same machine. This tool:

1. Installs Portkey's OSS gateway (`@portkey-ai/gateway@1.15.2`, with `hono` 4.9.7 and
   `@hono/node-server` 1.13.5 pinned through npm `overrides`: newer ones answer 500 on streams)
   from the npm registry into a cache folder outside the repository
   (~/.cache/switchyard-bench/portkey), once. No node or npm, or an install that fails: it
   says so and exits (status 2) before starting anything; `--portkey skip` measures Switchyard
   alone.
2. Starts two fake OpenAI upstreams (bench/upstream.py, 20 chunks per stream): one with a fixed
   delay (`--delay-ms`, 50) and one with none, for the throughput ceiling. Starts Switchyard as
   `switchyard up` does (one deployment per upstream) and Portkey (`start-server.js --headless`,
   targeted with `x-portkey-provider: openai` and `x-portkey-custom-host`). Both gateways run
   pinned to CPU 0 (the whole gateway: every process and thread), the load generators and the
   upstreams to CPU 1.
3. Measures, each gateway in turn inside every round (the order alternating), each round's
   direct call first:
   - idle CPU (percent of one core, all of the gateway's processes) before any load;
   - overhead at `--rates` (50 and 100 req/s), open loop: the gateway's p50/p99 minus the
     direct call's in the same round, and CPU per request at the first rate;
   - streaming time-to-first-token overhead at `--stream-rates` (10 and 40 streams/s) and CPU
     per stream;
   - the most each answers in a closed loop against the 0 ms upstream, on one core and with
     everything unpinned (both cores shared), and CPU per request there;
   - offered `--overload-factor` (3) times its own one-core maximum against the delayed
     upstream, with a client deadline: the rate answered within it, and how fast the rest was
     refused (status, Retry-After);
   - resident memory of all its processes after the load, and how much of it is anonymous
     (what the processes allocated; the rest is file-backed: code and mapped libraries).
   CPU per request is summed over all the gateway's processes (Switchyard: nats-server, the
   services and the supervisor; Portkey: node) from /proc, over the gateway's own runs only.
4. Prints the side-by-side table and writes the JSON report to bench/results/.

Medians over `--rounds` rounds; the machine's speed drifts, so only figures from one run
compare. A lighter validation run: `--rates 20,40 --stream-rates 5 --duration 3 --rounds 1
--closed-duration 3 --idle 5`. No figure is checked here: this measures, it does not judge.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import psutil

from switchyard.natsserver import free_port

from . import peerload
from .__main__ import (
    RESULTS,
    ROOT,
    Gateway,
    _child_setup,
    body_for,
    merge,
    overhead,
    parse_settings,
    run_loadgen,
)
from .cpu import cpu_by_thread
from .idle import gateway_processes, idle_report

PORTKEY_VERSION = "1.15.2"
PINNED = {"hono": "4.9.7", "@hono/node-server": "1.13.5"}
DEFAULT_PORTKEY_DIR = Path.home() / ".cache" / "switchyard-bench" / "portkey"
START_SCRIPT = Path("node_modules/@portkey-ai/gateway/build/start-server.js")
UPSTREAM_KEY = "bench-upstream-key"
STREAM_WORDS = 20  # chunks of content per stream (plus role, finish and usage chunks)


class PortkeyUnavailable(Exception):
    """Portkey cannot be run here; the message says why and what to do."""


def portkey_package_json() -> dict:
    """The package.json that installs the pinned Portkey (pure)."""
    return {
        "name": "switchyard-bench-portkey",
        "private": True,
        "description": "Portkey's OSS gateway for Switchyard's side-by-side benchmark (bench/peer.py)",
        "dependencies": {"@portkey-ai/gateway": PORTKEY_VERSION, **PINNED},
        "overrides": dict(PINNED),
    }


def missing_tool(which: Callable[[str], str | None] = shutil.which) -> str | None:
    """Why Portkey cannot be installed or run here (node or npm missing), or None."""
    for tool in ("node", "npm"):
        if which(tool) is None:
            return f"{tool} is not on PATH: install Node.js 18+ (with npm) to run Portkey, or pass --portkey skip"
    return None


def install_portkey(folder: Path, timeout_s: float = 600.0) -> Path:
    """Portkey installed in `folder` (npm, once); the start script's path."""
    reason = missing_tool()
    if reason:
        raise PortkeyUnavailable(reason)
    folder.mkdir(parents=True, exist_ok=True)
    package = folder / "package.json"
    wanted = orjson.dumps(portkey_package_json(), option=orjson.OPT_INDENT_2)
    script = folder / START_SCRIPT
    if script.exists() and package.exists() and package.read_bytes() == wanted:
        return script
    package.write_bytes(wanted)
    print(f"installing Portkey {PORTKEY_VERSION} with npm into {folder} ...", flush=True)
    try:
        done = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired as exc:
        raise PortkeyUnavailable(f"npm install did not finish in {timeout_s:.0f} s") from exc
    if done.returncode != 0 or not script.exists():
        raise PortkeyUnavailable(f"npm install failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return script


class Portkey:
    """Portkey's Node gateway, headless, pinned like Switchyard."""

    def __init__(self, folder: Path, cpu: int, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                ["node", str(START_SCRIPT), f"--port={self.port}", "--headless"],
                cwd=folder,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_child_setup(cpu),
            )
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(self.url + "/", timeout=1)
                break
            except httpx.HTTPError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise PortkeyUnavailable(
                        f"Portkey did not start:\n{log_path.read_text()[-2000:]}"
                    ) from None
                time.sleep(0.2)

    def processes(self) -> dict[str, psutil.Process]:
        main = psutil.Process(self.process.pid)
        return {"node": main} | {f"node-{c.pid}": c for c in main.children(recursive=True)}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Side:
    """One gateway under measurement: how to call it, and its processes."""

    name: str
    url: str
    slow_model: str
    fast_model: str
    slow_headers: list[str]
    fast_headers: list[str]
    processes: Callable[[], dict[str, psutil.Process]]
    figures: dict = field(default_factory=dict)

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self.processes().values():
            with contextlib.suppress(psutil.NoSuchProcess):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def rss_mib(self) -> float:
        total = 0
        for proc in self.processes().values():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += proc.memory_info().rss
        return round(total / 2**20, 1)

    def anon_mib(self) -> float:
        """The processes' anonymous memory (heaps, stacks, caches: what they allocated), without
        the file-backed pages resident memory also counts (code, mapped libraries; clean, and
        given back under memory pressure): chDB's 555 MB library alone keeps ~230 MiB of the
        ledger's resident memory, which says little about what the gateway holds."""
        total = 0
        for proc in self.processes().values():
            with contextlib.suppress(OSError):  # the process ended meanwhile
                total += anonymous_kib(Path(f"/proc/{proc.pid}/smaps_rollup").read_text())
        return round(total / 1024, 1)


def anonymous_kib(smaps_rollup: str) -> int:
    """The `Anonymous:` line of a /proc/<pid>/smaps_rollup, in KiB (0 when absent)."""
    for line in smaps_rollup.splitlines():
        if line.startswith("Anonymous:"):
            return int(line.split()[1])
    return 0


def pin(procs: dict[str, psutil.Process], cpus: set[int]) -> None:
    """Every thread of these processes onto `cpus` (sched_setaffinity is per thread)."""
    for proc in procs.values():
        task_dir = Path(f"/proc/{proc.pid}/task")
        tids = [int(t.name) for t in task_dir.iterdir()] if task_dir.is_dir() else [proc.pid]
        for tid in tids:
            with contextlib.suppress(OSError):  # the thread ended meanwhile
                os.sched_setaffinity(tid, cpus)


def ordered(sides: list[Side], round_index: int) -> list[Side]:
    """Each round the other gateway goes first, so neither always follows the other."""
    return sides if round_index % 2 == 0 else sides[::-1]


def med(values: list[float]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


@dataclass
class Plan:
    rates: list[float]
    stream_rates: list[float]
    duration: float
    rounds: int
    closed_duration: float
    connections: int
    overload_factor: float
    overload_duration: float
    deadline_ms: float
    idle_s: float


class Run:
    """The measurements, in order, over both gateways."""

    def __init__(self, sides: list[Side], plan: Plan, slow_url: str, fast_url: str, load_cpu: int,
                 gateway_cpu: int, upstreams: list[subprocess.Popen[bytes]]) -> None:  # fmt: skip
        self.sides = sides
        self.plan = plan
        self.slow_url = slow_url
        self.fast_url = fast_url
        self.load_cpu = load_cpu
        self.gateway_cpu = gateway_cpu
        self.upstreams = upstreams
        self.direct: dict = {}

    def log(self, text: str) -> None:
        print(text, flush=True)

    def measured(self, side: Side, action: Callable[[], dict]) -> tuple[dict, float]:
        """The action's result and the CPU seconds the gateway spent during it."""
        before = side.cpu_seconds()
        result = action()
        return result, side.cpu_seconds() - before

    def idle(self) -> None:
        procs = {side.name: side.processes() for side in self.sides}
        before = {n: {k: sum(cpu_by_thread(p).values()) for k, p in ps.items()} for n, ps in procs.items()}
        started = time.monotonic()
        time.sleep(self.plan.idle_s)
        elapsed = time.monotonic() - started
        for side in self.sides:
            after = {k: sum(cpu_by_thread(p).values()) for k, p in procs[side.name].items()}
            report = idle_report({k: {"all": v} for k, v in before[side.name].items()},
                                 {k: {"all": v} for k, v in after.items()}, elapsed)  # fmt: skip
            side.figures["idle"] = {
                "total_pct": report["total_pct"],
                "pct_of_one_core": report["pct_of_one_core"],
            }
            self.log(f"idle {side.name}: {report['total_pct']:.2f} % of one core {report['pct_of_one_core']}")

    def open_loop(self, stream: bool) -> None:
        rates = self.plan.stream_rates if stream else self.plan.rates
        key = "stream" if stream else "rates"
        for rate in rates:
            direct_runs: list[dict] = []
            runs: dict[str, list[dict]] = {s.name: [] for s in self.sides}
            cpu: dict[str, float] = {s.name: 0.0 for s in self.sides}
            for r in range(self.plan.rounds):
                direct_runs.append(run_loadgen(f"{self.slow_url}/v1/chat/completions", body_for("echo", stream),
                                               rate, self.plan.duration, self.load_cpu, [f"Authorization: Bearer {UPSTREAM_KEY}"]))  # fmt: skip
                for side in ordered(self.sides, r):
                    body = body_for(side.slow_model, stream)
                    result, spent = self.measured(side, lambda s=side, b=body, q=rate: run_loadgen(
                        f"{s.url}/v1/chat/completions", b, q, self.plan.duration, self.load_cpu, s.slow_headers))  # fmt: skip
                    runs[side.name].append(result)
                    cpu[side.name] += spent
            direct = merge(direct_runs)
            self.direct.setdefault(key, {})[str(int(rate))] = direct
            for side in self.sides:
                via = merge(runs[side.name])
                entry = {
                    "gateway": via,
                    "overhead_ms": overhead(via["latency_ms"], direct["latency_ms"]),
                    "cpu_ms_per_request": round(1000 * cpu[side.name] / via["ok"], 3) if via["ok"] else None,
                }
                if stream:
                    entry["ttft_overhead_ms"] = (
                        overhead(via["ttft_ms"], direct["ttft_ms"]) if via["ttft_ms"] else None
                    )
                side.figures.setdefault(key, {})[str(int(rate))] = entry
                o = entry["ttft_overhead_ms" if stream else "overhead_ms"] or {}
                self.log(f"{'stream' if stream else 'plain'} {rate:g}/s {side.name}: "
                         f"{'TTFT ' if stream else ''}overhead p50 {o.get('p50')} p99 {o.get('p99')} ms, "
                         f"errors {via['errors']}/{via['sent']}, CPU {entry['cpu_ms_per_request']} ms per "
                         f"{'stream' if stream else 'request'}")  # fmt: skip

    def closed(self, label: str) -> None:
        results: dict[str, list[tuple[dict, float]]] = {s.name: [] for s in self.sides}
        for r in range(self.plan.rounds):
            for side in ordered(self.sides, r):
                body = body_for(side.fast_model, False)
                results[side.name].append(self.measured(side, lambda s=side, b=body: peerload.run(
                    "closed", f"{s.url}/v1/chat/completions", b, self.load_cpu if label == "one_core" else -1,
                    s.fast_headers, connections=self.plan.connections, duration=self.plan.closed_duration)))  # fmt: skip
        for side in self.sides:
            runs = results[side.name]
            best = med([run["achieved_rps"] for run, _ in runs])
            cpu = med([1000 * spent / run["ok"] if run["ok"] else None for run, spent in runs])
            side.figures.setdefault("max_rps", {})[label] = {
                "achieved_rps": best,
                "errors": sum(run["errors"] for run, _ in runs),
                "refused_with_retry_after": sum(run.get("refused_with_retry_after", 0) for run, _ in runs),
                "p99_ms": med([run["latency_ms"]["p99"] for run, _ in runs]),
                "cpu_ms_per_request": cpu,
            }
            self.log(f"max {label.replace('_', ' ')} {side.name}: {best} req/s, CPU {cpu} ms per request")

    def overload(self) -> None:
        for side in self.sides:
            most = side.figures["max_rps"]["one_core"]["achieved_rps"] or 0
            rate = max(1.0, round(self.plan.overload_factor * most))
            body = body_for(side.slow_model, False)
            result, spent = self.measured(side, lambda s=side, b=body, r=rate: peerload.run(
                "overload", f"{s.url}/v1/chat/completions", b, self.load_cpu, s.slow_headers, rate=r,
                duration=self.plan.overload_duration, deadline_ms=self.plan.deadline_ms))  # fmt: skip
            result["max_one_core_rps"] = most
            answered = result["in_time"] + result["late"] + result["refused"]
            result["cpu_ms_per_answer"] = round(1000 * spent / answered, 3) if answered else None
            result["goodput_share_of_max"] = round(result["goodput_rps"] / most, 3) if most else None
            side.figures["overload"] = result
            refusal = result["refusal_latency_ms"] or {}
            self.log(f"overload {side.name}: offered {rate:g}/s, answered in time {result['goodput_rps']}/s "
                     f"({result['goodput_share_of_max']} of its max), refused {result['refused']} "
                     f"(p50 {refusal.get('p50')} p99 {refusal.get('p99')} ms, Retry-After on "
                     f"{result['refused_with_retry_after']}), failed {result['failed']}")  # fmt: skip
            time.sleep(2)  # let the backlog clear before the next gateway


def table(sides: list[Side]) -> str:
    """The side-by-side summary, one row per figure."""

    def get(side: Side, *path: str) -> str:
        value: object = side.figures
        for key in path:
            if not isinstance(value, dict) or key not in value:
                return "-"
            value = value[key]
        if value is None:
            return "-"
        return f"{value:.1f}" if isinstance(value, float) else str(value)

    rows: list[tuple[str, list[str]]] = []
    first = sides[0].figures
    for rate in first.get("rates", {}):
        rows.append((f"overhead at {rate} req/s, p50 / p99 (ms)",
                     [f"{get(s, 'rates', rate, 'overhead_ms', 'p50')} / {get(s, 'rates', rate, 'overhead_ms', 'p99')}" for s in sides]))  # fmt: skip
    for label in ("one_core", "two_cores"):
        rows.append((f"max throughput, {label.replace('_', ' ')} (req/s)", [str(get(s, "max_rps", label, "achieved_rps")) for s in sides]))  # fmt: skip
    if first.get("rates"):
        rate = next(iter(first["rates"]))
        rows.append((f"CPU per request at max / at {rate} req/s (ms)",
                     [f"{get(s, 'max_rps', 'one_core', 'cpu_ms_per_request')} / {get(s, 'rates', rate, 'cpu_ms_per_request')}" for s in sides]))  # fmt: skip
    rows.append(("overload: offered / answered in time (req/s)",
                 [f"{get(s, 'overload', 'rate')} / {get(s, 'overload', 'goodput_rps')}" for s in sides]))  # fmt: skip
    rows.append(("overload: refused, p99 latency (ms), with Retry-After",
                 [f"{get(s, 'overload', 'refused')}, {get(s, 'overload', 'refusal_latency_ms', 'p99')}, {get(s, 'overload', 'refused_with_retry_after')}" for s in sides]))  # fmt: skip
    for rate in first.get("stream", {}):
        rows.append((f"stream {rate}/s: TTFT overhead p50 / p99 (ms)",
                     [f"{get(s, 'stream', rate, 'ttft_overhead_ms', 'p50')} / {get(s, 'stream', rate, 'ttft_overhead_ms', 'p99')}" for s in sides]))  # fmt: skip
        rows.append((f"stream {rate}/s: CPU per stream (ms)", [str(get(s, "stream", rate, "cpu_ms_per_request")) for s in sides]))  # fmt: skip
    rows.append(("resident memory (MiB)", [str(get(s, "rss_mib")) for s in sides]))
    rows.append(("of which anonymous (MiB)", [str(get(s, "anon_mib")) for s in sides]))
    rows.append(("idle CPU (% of one core)", [str(get(s, "idle", "total_pct")) for s in sides]))
    lines = ["| | " + " | ".join(s.name for s in sides) + " |", "|---" * (len(sides) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(values) + " |" for label, values in rows]
    return "\n".join(lines)


def start_upstream(port: int, delay_ms: float, cpu: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.upstream", "--port", str(port), "--delay-ms", str(delay_ms),
         "--words", str(STREAM_WORDS)],
        cwd=ROOT, stdout=subprocess.DEVNULL, preexec_fn=_child_setup(cpu),
    )  # fmt: skip


def wait_for_upstream(url: str) -> None:
    for _ in range(200):
        try:
            httpx.post(f"{url}/v1/chat/completions", content=body_for("x", False), timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"the fake upstream at {url} did not start")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--portkey", choices=["auto", "skip"], default="auto",
                        help="auto: install (once) and measure Portkey, or exit 2 saying why not; skip: Switchyard alone")  # fmt: skip
    parser.add_argument(
        "--portkey-dir", default=str(DEFAULT_PORTKEY_DIR), help="Portkey's npm folder (outside the repo)"
    )
    parser.add_argument(
        "--rates",
        default="50,100",
        help="open-loop rates for overhead (the first also gives CPU per request)",
    )
    parser.add_argument("--stream-rates", default="10,40", help="streams per second for TTFT ('' skips)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per open-loop run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per figure (median reported)")
    parser.add_argument("--delay-ms", type=float, default=50.0, help="the delayed upstream's fixed delay")
    parser.add_argument("--closed-duration", type=float, default=10.0, help="seconds per closed-loop run")
    parser.add_argument("--connections", type=int, default=32, help="closed-loop connections")
    parser.add_argument(
        "--overload-factor", type=float, default=3.0, help="offered load, times the one-core max"
    )
    parser.add_argument("--overload-duration", type=float, default=10.0)
    parser.add_argument(
        "--deadline-ms", type=float, default=1000.0, help="the client's deadline under overload"
    )
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle CPU measured (0 skips)")
    parser.add_argument("--gateway-env", action="append", default=[], metavar="SWITCHYARD_X=VALUE")
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin (the one-core figures then are not)"
    )
    parser.add_argument("--out", default="", help="the JSON report (default bench/results/peer-<time>.json)")
    args = parser.parse_args()

    skipped = ""
    script: Path | None = None
    if args.portkey == "skip":
        skipped = "--portkey skip"
    else:
        try:
            script = install_portkey(Path(args.portkey_dir).expanduser())
        except PortkeyUnavailable as exc:
            print(f"Portkey cannot be measured here: {exc}", file=sys.stderr)
            print("Nothing was started. Pass --portkey skip to measure Switchyard alone.", file=sys.stderr)
            return 2
    load_cpu, gateway_cpu = (-1, -1) if args.no_pin or (os.cpu_count() or 1) < 2 else (1, 0)
    plan = Plan(
        rates=[float(r) for r in args.rates.split(",") if r],
        stream_rates=[float(r) for r in args.stream_rates.split(",") if r],
        duration=args.duration, rounds=args.rounds, closed_duration=args.closed_duration,
        connections=args.connections, overload_factor=args.overload_factor,
        overload_duration=args.overload_duration, deadline_ms=args.deadline_ms, idle_s=args.idle,
    )  # fmt: skip
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-peer-"))
    slow_port, fast_port = free_port(), free_port()
    upstreams = [start_upstream(slow_port, args.delay_ms, load_cpu), start_upstream(fast_port, 0, load_cpu)]
    slow_url, fast_url = f"http://127.0.0.1:{slow_port}", f"http://127.0.0.1:{fast_port}"
    gateway: Gateway | None = None
    portkey: Portkey | None = None
    report: dict = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "pinned": load_cpu >= 0,
                    "load_average": os.getloadavg()},
        "plan": {**plan.__dict__, "delay_ms": args.delay_ms, "gateway_env": args.gateway_env},
        "portkey": {"version": PORTKEY_VERSION, "pinned": PINNED, "skipped": skipped},
    }  # fmt: skip
    try:
        wait_for_upstream(slow_url)
        wait_for_upstream(fast_url)
        fast_deployment = (
            '\n[[deployments]]\nid = "bench/fast"\nprovider = "bench"\nadapter = "openai_compat"\n'
            f'model = "echo"\nbase_url = "{fast_url}/v1"\napi_key = "{UPSTREAM_KEY}"\n'
            "price = { input = 0.15, output = 0.60 }\n"
        )
        (workdir / "switchyard").mkdir()
        gateway = sy = Gateway(slow_url, gateway_cpu, workdir / "switchyard", parse_settings(args.gateway_env),
                               extra_deployments=fast_deployment)  # fmt: skip
        sides = [Side("switchyard", sy.url, "bench/echo", "bench/fast", sy.headers, sy.headers,
                      lambda: gateway_processes(sy))]  # fmt: skip
        if script is not None:
            try:
                portkey = Portkey(Path(args.portkey_dir).expanduser(), gateway_cpu, workdir / "portkey.log")
            except PortkeyUnavailable as exc:  # installed, but it would not start: say so, stop all
                print(f"Portkey cannot be measured here: {exc}", file=sys.stderr)
                return 2

            def portkey_headers(upstream: str) -> list[str]:
                return ["x-portkey-provider: openai", f"x-portkey-custom-host: {upstream}/v1",
                        f"Authorization: Bearer {UPSTREAM_KEY}"]  # fmt: skip

            pk = portkey
            sides.append(Side("portkey", pk.url, "echo", "echo", portkey_headers(slow_url),
                              portkey_headers(fast_url), pk.processes))  # fmt: skip
        print(f"upstreams {slow_url} ({args.delay_ms:g} ms) and {fast_url} (0 ms); "
              + ", ".join(f"{s.name} {s.url}" for s in sides), flush=True)  # fmt: skip
        run = Run(sides, plan, slow_url, fast_url, load_cpu, gateway_cpu, upstreams)
        warm_s = min(3.0, plan.duration)
        for side in sides:  # warm-up: connections, caches, JIT
            for stream, rate in ((False, 20), (True, 5)):
                url = f"{side.url}/v1/chat/completions"
                run_loadgen(url, body_for(side.slow_model, stream), rate, warm_s, load_cpu, side.slow_headers)
        if plan.idle_s:
            time.sleep(min(5.0, 2 * plan.idle_s))  # the last ledger batches of the warm-up land first
            run.idle()
        run.open_loop(stream=False)
        if plan.stream_rates:
            run.open_loop(stream=True)
        run.closed("one_core")
        if load_cpu >= 0:  # both cores shared: every process of every party unpinned
            everything = {f"{s.name}-{k}": p for s in sides for k, p in s.processes().items()}
            everything |= {f"upstream-{u.pid}": psutil.Process(u.pid) for u in upstreams}
            both = {0, 1}
            pin(everything, both)
            try:
                run.closed("two_cores")
            finally:
                pin({k: p for k, p in everything.items() if not k.startswith("upstream-")}, {gateway_cpu})
                pin({k: p for k, p in everything.items() if k.startswith("upstream-")}, {load_cpu})
        run.overload()
        for side in sides:
            side.figures["rss_mib"] = side.rss_mib()
            side.figures["anon_mib"] = side.anon_mib()
        report["direct"] = run.direct
        report["gateways"] = {side.name: side.figures for side in sides}
        print()
        print(table(sides))
    finally:
        if portkey is not None:
            portkey.stop()
        if gateway is not None:
            gateway.stop()
        for upstream in upstreams:
            upstream.terminate()
            upstream.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    out = Path(args.out) if args.out else RESULTS / time.strftime("peer-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
