"""`python -m bench` (or `make bench`): gateway overhead over a direct upstream call.

1. Starts the fast fake upstream (bench/upstream.py) with a fixed delay.
2. Starts the gateway exactly as `switchyard up` does (every service its own process, NATS
   between them), with one deployment pointing at the upstream through the OpenAI-compatible
   adapter — or uses --target-url to measure any other OpenAI-compatible gateway.
3. For each rate: open-loop load (bench/loadgen.py) directly against the upstream, then
   through the gateway, alternating for --rounds rounds; reports p50/p90/p99/max, overhead at
   each percentile, errors and achieved throughput; then streaming time-to-first-token
   overhead; then the maximum sustainable throughput; and CPU and memory of each service.
4. Overload mode (--overload-factor 3, or --overload-rate): offers that multiple of the max
   sustainable rate with clients that give up at --deadline-ms, from --clients (16) loopback
   addresses (bench/peerload.py's overload, the same as bench.peer's), and reports the rate answered within the deadline, the refusals (503/529 +
   Retry-After) and how fast they came.

By default the load generator and the upstream run on CPU 1 and the gateway on CPU 0.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import psutil

from switchyard.children import tied_to_parent
from switchyard.natsserver import free_port
from switchyard.tenancy_store import DEV_KEY_FILE

from . import peerload
from .loadgen import run_module

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PLAIN = {
    "model": "{model}",
    "messages": [{"role": "user", "content": "Say something short."}],
    "max_tokens": 32,
}


def body_for(model: str, stream: bool) -> bytes:
    body = dict(PLAIN, model=model)
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return orjson.dumps(body)


def run_loadgen(url: str, body: bytes, rate: float, duration: float, cpu: int, headers: list[str]) -> dict:
    """bench/loadgen.py's open loop at `rate` for `duration` s in its own process."""
    return run_module(["bench.loadgen"], url, body, cpu, headers, rate=rate, duration=duration)


def parse_settings(items: list[str]) -> dict[str, str]:
    """`--gateway-env` values (`SWITCHYARD_X=VALUE`) as environment entries."""
    return dict(item.split("=", 1) for item in items)


def run_probe(
    parser: argparse.ArgumentParser,
    measure: Callable[[argparse.Namespace], dict],
    show: Callable[[dict], None],
) -> int:
    """A single-figure probe's command line (bench.refusal, bench.coresplit): its own flags in
    `parser`, and these three; the report `measure` returns, as JSON (`--json`) or `show`n."""
    parser.add_argument(
        "--gateway-env", action="append", default=[], help="SWITCHYARD_X=VALUE for the gateway"
    )
    parser.add_argument("--no-pin", action="store_true", help="leave every process on any CPU (tests)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    report = measure(args)
    if args.json:
        print(orjson.dumps(report).decode())
    else:
        show(report)
    return 0


class Gateway:
    """`switchyard up` in a temp folder with the bench catalog, pinned to one CPU."""

    def __init__(
        self,
        upstream_url: str,
        cpu: int,
        workdir: Path,
        settings: dict[str, str] | None = None,
        extra_deployments: str = "",
    ) -> None:
        self.port = free_port()
        self.workdir = workdir
        config = workdir / "bench.toml"
        config.write_text(
            "[demo]\nenabled = false\n\n[[deployments]]\n"
            'id = "bench/echo"\nprovider = "bench"\nadapter = "openai_compat"\nmodel = "echo"\n'
            f'base_url = "{upstream_url}/v1"\napi_key = "bench-upstream-key"\n'
            "price = { input = 0.15, output = 0.60 }\n" + extra_deployments
        )
        # The caller's SWITCHYARD_* are dropped so a stray setting cannot skew a run; pass
        # settings to compare explicitly (--gateway-env).
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
        env |= settings or {}
        env |= {
            "SWITCHYARD_PORT": str(self.port),
            "SWITCHYARD_NATS_PORT": "0",
            "SWITCHYARD_NATS_MONITOR_PORT": "0",
            # Its own dashboard port: `switchyard up` refuses a taken port, and bench.cpu
            # --against runs two gateways side by side.
            "SWITCHYARD_DASHBOARD_PORT": "0",
            "SWITCHYARD_CONFIG_FILE": str(config),
            "SWITCHYARD_LOG_LEVEL": "WARNING",
            "SWITCHYARD_LOG_DIR": str(workdir / "logs"),
        }
        self.out = workdir / "up.out"
        with open(self.out, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "switchyard.cli", "up"],
                cwd=workdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_child_setup(cpu),
            )
        deadline = time.monotonic() + 90
        while "Switchyard is up." not in self.out.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gateway did not start:\n{self.out.read_text()}")
            time.sleep(0.2)
        # The development key `switchyard up` minted (the banner also shows other sy- tokens,
        # such as the dashboard login link, so read the key's own file).
        key_file = workdir / ".switchyard" / DEV_KEY_FILE
        key = key_file.read_text().strip() if key_file.exists() else ""
        self.headers = [f"Authorization: Bearer {key}"] if key else []
        self.url = f"http://127.0.0.1:{self.port}"
        # nats-server's monitoring endpoint, as the banner prints it (bench.cpu counts messages).
        monitor = re.search(r"NATS monitoring\s+(http://\S+)", self.out.read_text())
        self.nats_monitor_url = monitor.group(1) if monitor else ""

    def services(self) -> dict[str, psutil.Process]:
        procs = {}
        for child in psutil.Process(self.process.pid).children(recursive=True):
            cmd = " ".join(child.cmdline())
            match = re.search(r"-m (services\.\w+)(?: --provider (\w+))?", cmd)
            name = (
                match.group(1).split(".")[1] + (f"-{match.group(2)}" if match and match.group(2) else "")
                if match
                else "nats-server"
            )
            procs[name] = child
        return procs

    def stop(self) -> None:
        """Stop `switchyard up` and remove its folder (its NATS store, chDB ledger and logs, up to
        ~12 MB a run): every benchmark run used to leave one in the temp folder."""
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _child_setup(cpu: int) -> Callable[[], None]:
    """The gateway's `preexec_fn`: it dies with the benchmark (a benchmark killed by a timeout
    left whole gateways running) and, when pinned, runs on `cpu`."""
    tie = tied_to_parent()

    def setup() -> None:
        if tie is not None:
            tie()
        if cpu >= 0:
            os.sched_setaffinity(0, {cpu})

    return setup


def cpu_snapshot(procs: dict[str, psutil.Process]) -> dict[str, float]:
    snap = {}
    for name, proc in procs.items():
        try:
            times = proc.cpu_times()
            snap[name] = times.user + times.system
        except psutil.NoSuchProcess:
            snap[name] = 0.0
    return snap


def resources(
    procs: dict[str, psutil.Process], before: dict[str, float], after: dict[str, float], seconds: float
) -> dict:
    out = {}
    for name, proc in procs.items():
        try:
            rss = proc.memory_info().rss / 2**20
        except psutil.NoSuchProcess:
            rss = 0.0
        out[name] = {
            "cpu_pct": round(100 * (after.get(name, 0) - before.get(name, 0)) / seconds, 1),
            "rss_mib": round(rss, 1),
        }
    return out


def overhead(gateway: dict, direct: dict) -> dict:
    """Gateway minus direct at each percentile; None where a side had no successful request."""
    return {
        q: None if gateway[q] is None or direct[q] is None else round(gateway[q] - direct[q], 3)
        for q in ("p50", "p90", "p99", "max")
    }


def ms(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def merge(runs: list[dict]) -> dict:
    """Median of each statistic across alternating rounds (robust to one noisy round)."""

    def med(values: list[float | None]) -> float | None:
        present = sorted(v for v in values if v is not None)  # None: a round with no success
        return present[len(present) // 2] if present else None

    return {
        "sent": sum(r["sent"] for r in runs),
        "ok": sum(r["ok"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "achieved_rps": med([r["achieved_rps"] for r in runs]),
        "latency_ms": {q: med([r["latency_ms"][q] for r in runs]) for q in ("p50", "p90", "p99", "max")},
        "ttft_ms": {q: med([r["ttft_ms"][q] for r in runs]) for q in ("p50", "p90", "p99", "max")}
        if runs[0]["ttft_ms"]
        else None,
    }


def sustainable(result: dict, rate: float) -> bool:
    return (
        result["errors"] <= 0.001 * result["sent"]
        and result["achieved_rps"] >= 0.97 * rate
        and result["latency_ms"]["p99"] is not None
        and result["latency_ms"]["p99"] < 1000
    )


def overload_verdict(overload: dict, max_rps: float) -> dict:
    """The issue's goal for offered ~3x the max (`overload`: bench.peerload's report): at least
    90 % of the max answered within the deadline, and the rest refused (503/529 with
    Retry-After) in under 50 ms at p99. Unanswered: answered late, or not at all."""
    refused = overload["refusal_latency_ms"]
    unanswered = overload["late"] + overload["failed"]
    not_served = overload["refused"] + unanswered
    return {
        "in_time_share_of_max": round(overload["goodput_rps"] / max_rps, 3) if max_rps else None,
        "in_time_goal_met": bool(max_rps) and overload["goodput_rps"] >= 0.9 * max_rps,
        "refusals_fast": refused is not None and refused["p99"] < 50,
        "refusals_with_retry_after": overload["refused_with_retry_after"] == overload["refused"],
        "unanswered_share": round(unanswered / not_served, 3) if not_served else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", default="100,250,500", help="comma-separated request rates")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating direct/gateway rounds per rate")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="upstream's fixed delay")
    parser.add_argument(
        "--stream-rate", type=float, default=100.0, help="rate of the streaming TTFT run (0: skip)"
    )
    parser.add_argument(
        "--max-search",
        default="750,1000,1250,1500,2000",
        help="rates tried for max sustainable throughput ('' skips)",
    )
    parser.add_argument(
        "--target-url",
        default="",
        help="an OpenAI-compatible gateway base URL to measure instead of starting ours",
    )
    parser.add_argument("--target-model", default="bench/echo")
    parser.add_argument(
        "--target-header",
        action="append",
        default=[],
        help="extra header for --target-url, e.g. 'Authorization: Bearer …'",
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin load+upstream to CPU 1 and the gateway to CPU 0"
    )
    parser.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="SWITCHYARD_X=VALUE",
        help="a setting for the gateway's processes (repeatable), to compare configurations",
    )
    parser.add_argument(
        "--overload-factor",
        type=float,
        default=0.0,
        help="overload mode: offer this times the max sustainable rate found by --max-search (e.g. 3)",
    )
    parser.add_argument(
        "--overload-rate",
        type=float,
        default=0.0,
        help="overload mode: offer this rate (instead of a factor)",
    )
    parser.add_argument(
        "--overload-max",
        type=float,
        default=0.0,
        help="the max sustainable rate to judge the overload run by (default: the one --max-search found)",
    )
    parser.add_argument(
        "--deadline-ms", type=float, default=1000.0, help="overload mode: the clients' deadline"
    )
    parser.add_argument(
        "--clients", type=int, default=16, help="overload mode: source addresses on loopback (127.0.0.2 on)"
    )
    parser.add_argument(
        "--out", default="", help="write the JSON report here (default bench/results/<time>.json)"
    )
    args = parser.parse_args()

    load_cpu, gateway_cpu = (-1, -1) if args.no_pin or os.cpu_count() < 2 else (1, 0)
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-bench-"))
    upstream_port = free_port()
    upstream = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.upstream",
            "--port",
            str(upstream_port),
            "--delay-ms",
            str(args.delay_ms),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        preexec_fn=(lambda: os.sched_setaffinity(0, {load_cpu})) if load_cpu >= 0 else None,
    )
    upstream_url = f"http://127.0.0.1:{upstream_port}"
    gateway = None
    report: dict = {
        "machine": {"cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
                    "pinned": load_cpu >= 0},
        "upstream_delay_ms": args.delay_ms,
        "gateway_env": args.gateway_env,
        "duration_s": args.duration,
        "rates": {},
    }  # fmt: skip
    try:
        for _ in range(100):
            try:
                httpx.post(f"{upstream_url}/v1/chat/completions", content=body_for("x", False), timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        if args.target_url:
            gateway_url, model, headers, procs = (
                args.target_url.rstrip("/"),
                args.target_model,
                args.target_header,
                {},
            )
        else:
            gateway = Gateway(upstream_url, gateway_cpu, workdir, parse_settings(args.gateway_env))
            gateway_url, model, headers, procs = (
                gateway.url,
                "bench/echo",
                gateway.headers,
                gateway.services(),
            )
        direct_url = f"{upstream_url}/v1/chat/completions"
        via_url = f"{gateway_url}/v1/chat/completions"
        print(f"gateway {gateway_url}  upstream {upstream_url} (delay {args.delay_ms} ms)", flush=True)
        first_rate = float(args.rates.split(",")[0]) if args.rates else 10.0
        run_loadgen(via_url, body_for(model, False), first_rate, 3, load_cpu, headers)  # warm-up
        entry: dict = {}

        for rate in [float(r) for r in args.rates.split(",") if r]:
            direct_runs, gateway_runs = [], []
            before = cpu_snapshot(procs)
            gateway_seconds = 0.0
            for _ in range(args.rounds):
                direct_runs.append(
                    run_loadgen(direct_url, body_for("echo", False), rate, args.duration, load_cpu, [])
                )
                t0 = time.monotonic()
                gateway_runs.append(
                    run_loadgen(via_url, body_for(model, False), rate, args.duration, load_cpu, headers)
                )
                gateway_seconds += time.monotonic() - t0
            after = cpu_snapshot(procs)
            direct, via = merge(direct_runs), merge(gateway_runs)
            entry = {
                "direct": direct,
                "gateway": via,
                "overhead_ms": overhead(via["latency_ms"], direct["latency_ms"]),
                "resources": resources(procs, before, after, gateway_seconds) if procs else {},
            }
            report["rates"][str(int(rate))] = entry
            o = entry["overhead_ms"]
            print(
                f"{rate:>6.0f} req/s  direct p50 {ms(direct['latency_ms']['p50'])} p99 {ms(direct['latency_ms']['p99'])}  "
                f"gateway p50 {ms(via['latency_ms']['p50'])} p99 {ms(via['latency_ms']['p99'])}  "
                f"overhead p50 {ms(o['p50'])} p90 {ms(o['p90'])} p99 {ms(o['p99'])} max {ms(o['max'])} ms  "
                f"errors {via['errors']}  achieved {via['achieved_rps']:.0f}/s",
                flush=True,
            )

        if args.stream_rate:
            direct_runs, gateway_runs = [], []
            for _ in range(args.rounds):
                direct_runs.append(
                    run_loadgen(
                        direct_url, body_for("echo", True), args.stream_rate, args.duration, load_cpu, []
                    )
                )
                gateway_runs.append(
                    run_loadgen(
                        via_url, body_for(model, True), args.stream_rate, args.duration, load_cpu, headers
                    )
                )
            direct, via = merge(direct_runs), merge(gateway_runs)
            report["stream"] = {
                "rate": args.stream_rate,
                "direct": direct,
                "gateway": via,
                "ttft_overhead_ms": overhead(via["ttft_ms"], direct["ttft_ms"]),
                "total_overhead_ms": overhead(via["latency_ms"], direct["latency_ms"]),
            }
            t = report["stream"]["ttft_overhead_ms"]
            print(
                f"stream {args.stream_rate:.0f} req/s  TTFT overhead p50 {ms(t['p50'])} p99 {ms(t['p99'])} ms  errors {via['errors']}",
                flush=True,
            )

        best = 0.0
        for rate in [float(r) for r in args.max_search.split(",") if r]:
            result = run_loadgen(
                via_url, body_for(model, False), rate, max(5.0, args.duration / 2), load_cpu, headers
            )
            ok = sustainable(result, rate)
            print(
                f"max search {rate:.0f} req/s: achieved {result['achieved_rps']:.0f}, p99 {ms(result['latency_ms']['p99'], 1)} ms, errors {result['errors']} -> {'ok' if ok else 'not sustained'}",
                flush=True,
            )
            report.setdefault("max_search", []).append({"rate": rate, **result})
            if not ok:
                break
            best = rate
        if args.max_search:
            report["max_sustainable_rps"] = best
            print(
                f"max sustainable throughput: {best:.0f} req/s (highest tried rate with <0.1% errors, >=97% achieved, p99 < 1 s)"
            )
        max_rps = args.overload_max or best
        overload_rate = args.overload_rate or args.overload_factor * max_rps
        if overload_rate:
            before, t0 = cpu_snapshot(procs), time.monotonic()
            # The same open loop with a client deadline as bench.peer's overload run.
            overload = peerload.run(
                "overload",
                via_url,
                body_for(model, False),
                load_cpu,
                headers,
                rate=overload_rate,
                duration=args.duration,
                deadline_ms=args.deadline_ms,
                clients=args.clients,
            )
            seconds = time.monotonic() - t0
            verdict = overload_verdict(overload, max_rps)
            report["overload"] = {
                "max_rps": max_rps,
                **overload,
                "verdict": verdict,
                "resources": resources(procs, before, cpu_snapshot(procs), seconds) if procs else {},
            }
            refused = overload["refusal_latency_ms"] or {"p50": None, "p99": None}
            print(
                f"overload: offered {overload_rate:.0f} req/s (max {max_rps:.0f}), deadline {args.deadline_ms:.0f} ms: "
                f"in time {overload['goodput_rps']:.0f} req/s ({verdict['in_time_share_of_max']} of max), "
                f"refused {overload['refused']} (p50 {ms(refused['p50'])} p99 {ms(refused['p99'])} ms, "
                f"Retry-After on {overload['refused_with_retry_after']}), answered late {overload['late']}, "
                f"no answer in time {overload['failed']}, statuses {overload['statuses']}",
                flush=True,
            )
        if procs and entry:
            print(
                "resources during the gateway runs of the last rate:",
                orjson.dumps(entry["resources"]).decode(),
            )
    finally:
        if gateway:
            gateway.stop()
        upstream.terminate()
        upstream.wait()
    out = Path(args.out) if args.out else RESULTS / time.strftime("%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
