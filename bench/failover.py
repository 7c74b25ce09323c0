"""Benchmark: the time failover adds beyond the failed attempt itself, and the router's decision
time per request. A script, not a test: `python -m bench.failover [--requests N] [--json]`.

It starts a real stack (NATS, budget, two provider worker pools, router, ingress) on loopback
with demo upstreams, and sends requests one at a time to three routes:

  direct       one healthy deployment (no failover)
  same-pool    a failing deployment (HTTP 503 at once), then a healthy one in the same worker pool
  cross-pool   a failing deployment, then a healthy one served by another worker pool (the worker
               hands the dispatch on over NATS)

For each answer, gateway time = end-to-end latency as seen by the worker that answered, minus
the time spent inside upstream attempts (the failed one included). What failover adds is the
gateway time of a failover request minus that of a direct one. The router's decision time is
the rationale's decision_us (rule, health snapshot, scoring, ranking), plus an in-process
measurement of `Router.decide` with 2 and 10 candidates.

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
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import orjson

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


async def run_route(url: str, route: str, requests: int, warmup: int) -> dict:
    gateway_ms: list[float] = []
    decision_us: list[float] = []
    failed_ms: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        for i in range(warmup + requests):
            r = await http.post(
                "/llm.invoke",
                json={
                    "model": route,
                    "max_tokens": 4,
                    "messages": [{"role": "user", "content": f"bench {i}"}],
                },
            )
            if r.status_code != 200:
                raise RuntimeError(f"{route}: HTTP {r.status_code} {r.text}")
            body = r.json()
            expected = 1 if route == "direct" else 2
            if len(body["attempts"]) != expected:
                raise RuntimeError(f"{route}: expected {expected} attempts, got {body['attempts']}")
            if i < warmup:
                continue
            upstream = sum(a["latency_ms"] for a in body["attempts"])
            gateway_ms.append(body["latency_ms"] - upstream)
            decision_us.append(body["rationale"]["decision_us"])
            if expected == 2:
                failed_ms.append(body["attempts"][0]["latency_ms"])
    return {"gateway_ms": gateway_ms, "decision_us": decision_us, "failed_attempt_ms": failed_ms}


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
        request.messages.add(role="user").content.add(text="how fast is the decision? " * 8)
        samples = []
        for _ in range(iterations):
            started = time.perf_counter_ns()
            router.decide(request)
            samples.append((time.perf_counter_ns() - started) / 1000)
        out[f"{size} candidates"] = (percentile(samples, 50), percentile(samples, 99))
    return out


async def main_async(args: argparse.Namespace) -> dict:
    from tests.support.procs import Stack

    workdir = Path(tempfile.mkdtemp(prefix="switchyard-bench-failover-"))
    config = workdir / "switchyard.toml"
    config.write_text(CONFIG)
    stack = Stack.create(workdir, SWITCHYARD_CONFIG_FILE=str(config), SWITCHYARD_LOG_LEVEL="WARNING")
    try:
        started = [
            stack.spawn("budget", "services.budget", wait=False),
            stack.spawn("worker-demo", "services.providers", "--provider", "demo", wait=False),
            stack.spawn("worker-demo2", "services.providers", "--provider", "demo2", wait=False),
            stack.spawn("router", "services.router", wait=False),
            stack.spawn("ingress", "services.ingress", wait=False),
        ]
        for service in started:
            stack.wait_ready(service)
        results = {}
        for route in ROUTES:
            results[route] = await run_route(stack.ingress_url, route, args.requests, args.warmup)
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
            entry["failed_attempt_ms_p50"] = percentile(data["failed_attempt_ms"], 50)
            entry["failover_added_ms_p50"] = entry["gateway_ms_p50"] - percentile(direct, 50)
            entry["failover_added_ms_p99"] = entry["gateway_ms_p99"] - percentile(direct, 99)
        report["routes"][route] = entry
    report["decide_in_process_us"] = {
        k: {"p50": p50, "p99": p99} for k, (p50, p99) in decide_in_process(args.decide_iterations).items()
    }
    return report


def print_report(report: dict) -> None:
    print(f"machine: {report['machine']}")
    print(f"requests per route: {report['requests_per_route']} (sequential, after warm-up)")
    print(f"{'route':<12} {'gateway p50':>12} {'gateway p99':>12} {'failover +p50':>14} {'failover +p99':>14} "
          f"{'decision p50':>13} {'decision p99':>13}")  # fmt: skip
    for route, e in report["routes"].items():
        added50 = f"{e['failover_added_ms_p50']:.3f} ms" if "failover_added_ms_p50" in e else "-"
        added99 = f"{e['failover_added_ms_p99']:.3f} ms" if "failover_added_ms_p99" in e else "-"
        print(
            f"{route:<12} {e['gateway_ms_p50']:>9.3f} ms {e['gateway_ms_p99']:>9.3f} ms {added50:>14} "
            f"{added99:>14} {e['decision_us_p50']:>10.1f} us {e['decision_us_p99']:>10.1f} us"
        )
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
