"""Benchmark: the time failover adds beyond the failed attempt itself, and the router's decision
time per request. A script, not a test: `python -m bench.failover [--requests N] [--json]`.

It starts a real stack (NATS, budget, two provider worker pools, router) on loopback with demo
upstreams and, acting as the ingress does, publishes InvokeRequests on `llm.invoke` one at a
time, cycling over three routes (so machine noise hits all three alike):

  direct       one healthy deployment (no failover)
  same-pool    a failing deployment (HTTP 503 at once), then a healthy one in the same worker pool
  cross-pool   a failing deployment, then a healthy one served by another worker pool (the worker
               hands the dispatch on over NATS)

What failover adds is measured two ways:
  gap       the next attempt's start minus the failed attempt's end, per request (Attempt
            started_unix_ms + latency_ms, one clock: every process runs on this machine);
  overhead  gateway time (latency at the answering worker minus time inside upstream attempts,
            the failed one included) of failover requests minus that of direct ones.
The router's decision time is the rationale's decision_us (rule, health snapshot, scoring,
ranking) of every request, plus an in-process measurement of `Router.decide` with 2 and 10
candidates.

The bench config pins the failing deployment first (quality 1.0 against 0.01, a tiny error-rate
alpha and a breaker that never opens) so every request really fails over; that is what is being
measured. Numbers go in docs/routing.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import nats
import orjson

if TYPE_CHECKING:
    from switchyard.busauth import BusCredentials

CONFIG = """
[demo]
enabled = false

[router]
error_alpha = 0.0001
breaker_failures = 1000000000

[[deployments]]
id = "bench/ok"
provider = "demo"
model = "ok"
adapter = "demo"
quality = 0.01
options = { latency_ms = 1 }

[[deployments]]
id = "bench/broken"
provider = "demo"
model = "broken"
adapter = "demo"
quality = 1.0
options = { fail_status = 503 }

[[deployments]]
id = "bench/ok-elsewhere"
provider = "demo2"
model = "ok"
adapter = "demo"
quality = 0.01
options = { latency_ms = 1 }

[routes.direct]
deployments = ["bench/ok"]
weights = { quality = 1 }

[routes.same-pool]
deployments = ["bench/broken", "bench/ok"]
weights = { quality = 1 }

[routes.cross-pool]
deployments = ["bench/broken", "bench/ok-elsewhere"]
weights = { quality = 1 }
"""

ROUTES = ("direct", "same-pool", "cross-pool")


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model or platform.processor() or 'unknown CPU'}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def invoke_request(route: str, i: int) -> bytes:
    """What the ingress would publish: the request stamped with its ids and deadline."""
    from switchyard.v1 import invoke_pb2

    now_ns = time.time_ns()
    request = invoke_pb2.InvokeRequest(
        request_id=f"req_bench_{route}_{i}",
        model=route,
        max_tokens=4,
        project_id="bench",
        received_unix_ms=now_ns / 1e6,
        deadline_unix_ms=now_ns // 1_000_000 + 30_000,
        api="native",
    )
    request.messages.add(role=invoke_pb2.ROLE_USER).content.add(text=f"bench {i}")
    return request.SerializeToString()


async def run_routes(
    nats_url: str, ingress: BusCredentials, requests: int, warmup: int
) -> dict[str, dict[str, list[float]]]:
    from switchyard import subjects, units
    from switchyard.v1 import invoke_pb2

    results = {
        route: {"gateway_ms": [], "decision_us": [], "gap_ms": [], "failed_ms": []} for route in ROUTES
    }
    # As the ingress: workers answer only into the ingress's inbox (docs/reliability.md).
    nc = await nats.connect(
        nats_url, user=ingress.user, password=ingress.password, inbox_prefix=ingress.inbox_prefix
    )
    try:
        for i in range(warmup + requests):
            for route in ROUTES:
                msg = await nc.request(subjects.INVOKE, invoke_request(route, i), timeout=30)
                reply = invoke_pb2.Reply.FromString(msg.data)
                if reply.WhichOneof("frame") != "final":
                    raise RuntimeError(f"{route}: {reply}")
                final = reply.final
                expected = 1 if route == "direct" else 2
                if len(final.attempts) != expected:
                    raise RuntimeError(f"{route}: expected {expected} attempts, got {list(final.attempts)}")
                if i < warmup:
                    continue
                data = results[route]
                upstream = sum(a.latency_ms for a in final.attempts)
                data["gateway_ms"].append(final.latency_ms - upstream)
                data["decision_us"].append(units.microseconds(final.rationale.decision_ms))
                if expected == 2:
                    failed, next_ = final.attempts
                    failed_end_ms = failed.started_unix_ms + failed.latency_ms
                    data["gap_ms"].append(next_.started_unix_ms - failed_end_ms)
                    data["failed_ms"].append(failed.latency_ms)
    finally:
        await nc.close()
    return results


def decide_in_process(iterations: int) -> dict[str, tuple[float, float]]:
    """p50/p99 of Router.decide (no I/O) with 2 and 10 candidates, in microseconds."""
    from services.router.main import Router
    from switchyard.catalog import build_catalog
    from switchyard.settings import Settings
    from switchyard.v1 import invoke_pb2

    out: dict[str, tuple[float, float]] = {}
    for size in (2, 10):
        config = {
            "demo": {"enabled": False},
            "deployments": [
                {"id": f"d{i}", "provider": "demo", "model": f"m{i}", "quality": i / size}
                for i in range(size)
            ],
            "routes": {"r": {"deployments": [f"d{i}" for i in range(size)]}},
            "rules": [{"name": "classify", "route": "r", "match": {"metadata": {"task": "classification"}}}],
        }
        router = Router(Settings(), build_catalog(config, {}))
        request = invoke_pb2.InvokeRequest(model="r", max_tokens=100)
        request.messages.add(role=invoke_pb2.ROLE_USER).content.add(text="how fast is the decision? " * 8)
        samples = []
        for _ in range(iterations):
            started = time.perf_counter_ns()
            router.decide(request)
            samples.append((time.perf_counter_ns() - started) / 1000)
        out[f"{size} candidates"] = (percentile(samples, 50), percentile(samples, 99))
    return out


async def main_async(args: argparse.Namespace) -> dict:
    from switchyard import busauth
    from switchyard.testing.stack import Stack

    workdir = Path(tempfile.mkdtemp(prefix="switchyard-bench-failover-"))
    config = workdir / "switchyard.toml"
    config.write_text(CONFIG)
    stack = Stack.create(workdir, SWITCHYARD_CONFIG_FILE=str(config), SWITCHYARD_LOG_LEVEL="WARNING")
    try:
        stack.start(
            # The budget authority rebuilds its counters from the ledger before it is ready.
            ("ledger", "services.ledger"),
            ("budget", "services.budget"),
            ("worker-demo", "services.providers", "--provider", "demo"),
            ("worker-demo2", "services.providers", "--provider", "demo2"),
            ("router", "services.router"),
        )
        results = await run_routes(
            stack.nats.address,
            busauth.credentials(stack.bus_dir, busauth.INGRESS),
            args.requests,
            args.warmup,
        )
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    direct = results["direct"]["gateway_ms"]
    report: dict = {"machine": machine(), "requests_per_route": args.requests, "routes": {}}
    for route in ROUTES:
        data = results[route]
        entry = {
            "gateway_ms_p50": percentile(data["gateway_ms"], 50),
            "gateway_ms_p99": percentile(data["gateway_ms"], 99),
            "decision_us_p50": percentile(data["decision_us"], 50),
            "decision_us_p99": percentile(data["decision_us"], 99),
        }
        if route != "direct":
            entry["failed_attempt_ms_p50"] = percentile(data["failed_ms"], 50)
            entry["gap_ms_p50"] = percentile(data["gap_ms"], 50)
            entry["gap_ms_p99"] = percentile(data["gap_ms"], 99)
            entry["overhead_added_ms_p50"] = entry["gateway_ms_p50"] - percentile(direct, 50)
        report["routes"][route] = entry
    report["decide_in_process_us"] = {
        k: {"p50": p50, "p99": p99} for k, (p50, p99) in decide_in_process(args.decide_iterations).items()
    }
    return report


def print_report(report: dict) -> None:
    print(f"machine: {report['machine']}")
    print(f"requests per route: {report['requests_per_route']} (one at a time, routes interleaved)")
    print(f"{'route':<11} {'gateway p50':>11} {'gateway p99':>11} {'gap p50':>9} {'gap p99':>9} "
          f"{'overhead +p50':>13} {'decision p50':>12} {'decision p99':>12}")  # fmt: skip

    def ms(e: dict, key: str) -> str:
        return f"{e[key]:.3f}" if key in e else "-"

    for route, e in report["routes"].items():
        print(
            f"{route:<11} {ms(e, 'gateway_ms_p50'):>11} {ms(e, 'gateway_ms_p99'):>11} {ms(e, 'gap_ms_p50'):>9} "
            f"{ms(e, 'gap_ms_p99'):>9} {ms(e, 'overhead_added_ms_p50'):>13} "
            f"{e['decision_us_p50']:>9.1f} us {e['decision_us_p99']:>9.1f} us"
        )
    print("(gateway, gap and overhead in ms; gap = next attempt start - failed attempt end)")
    for size, e in report["decide_in_process_us"].items():
        print(f"Router.decide in process, {size}: p50 {e['p50']:.1f} us, p99 {e['p99']:.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=500, help="measured requests per route")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured requests per route first")
    parser.add_argument("--decide-iterations", type=int, default=20000)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    report = asyncio.run(main_async(args))
    if args.json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        print_report(report)


if __name__ == "__main__":
    main()
