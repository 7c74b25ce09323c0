"""Benchmark: what hedged requests do to the tail of time to first token, and what they cost.
A script, not a test: `python -m bench.hedge [--requests N] [--concurrency C] [--json]`.

Two fake OpenAI-compatible upstreams (bench/upstream.py) on loopback: `primary` answers in
`--delay-ms` but delays its first token by `--slow-ms` (2 s) on every `--slow-every`th (10th)
request; `backup` always answers in `--delay-ms`. A real stack (NATS, ledger, budget, one
provider worker serving both, router) serves two routes over the same pair, pinned in that
order (quality weights only): `plain` (no hedge) and `hedged` (hedge after the p90 of the
primary's observed TTFT, at least `--min-delay-ms`; at most 15 % of the route's requests).

Acting as the ingress does, it publishes streaming InvokeRequests on `llm.invoke` (a closed
loop of `--concurrency` callers), first all `plain` then all `hedged`, and measures each
request's time to first token at the caller (publish to first chunk). Then it reads the ledger:
upstream attempts per request (extra calls = attempts / requests - 1) and the total cost of the
requests against the sum of their attempt rows.

Done when: TTFT p99 with hedging is at least 5x lower, at no more than 15 % extra upstream calls,
and the two ledger totals are equal. Numbers go in docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import nats
import orjson

from bench.failover import machine, percentile

if TYPE_CHECKING:
    from switchyard.busauth import BusCredentials

CONFIG = """
[demo]
enabled = false

[[deployments]]
id = "bench/primary"
provider = "bench"
adapter = "openai_compat"
model = "primary"
base_url = "{primary}/v1"
api_key = "bench-upstream-key"
quality = 1.0
price = {{ input = 1.0, output = 2.0 }}

[[deployments]]
id = "bench/backup"
provider = "bench"
adapter = "openai_compat"
model = "backup"
base_url = "{backup}/v1"
api_key = "bench-upstream-key"
quality = 0.5
price = {{ input = 1.0, output = 2.0 }}

[routes.plain]
deployments = ["bench/primary", "bench/backup"]
weights = {{ quality = 1 }}

[routes.hedged]
deployments = ["bench/primary", "bench/backup"]
weights = {{ quality = 1 }}
hedge = {{ percentile = 90, min_delay_ms = {min_delay_ms}, max_share = 0.15, window_s = 60 }}
"""

MODES = ("plain", "hedged")


def invoke_request(route: str, i: int) -> bytes:
    from switchyard.v1 import invoke_pb2

    now_ns = time.time_ns()
    request = invoke_pb2.InvokeRequest(
        request_id=f"req_hedge_{route}_{i}",
        model=route,
        max_tokens=16,
        stream=True,
        project_id="bench",
        received_unix_ms=now_ns / 1e6,
        deadline_unix_ms=now_ns // 1_000_000 + 30_000,
        api="native",
    )
    request.messages.add(role=invoke_pb2.ROLE_USER).content.add(text=f"bench {i}")
    return request.SerializeToString()


async def one(nc: nats.NATS, route: str, i: int) -> tuple[float, bool]:
    """Time to first chunk (ms) of one streamed request, and whether a hedge fired."""
    from switchyard import subjects
    from switchyard.v1 import invoke_pb2

    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    started = time.perf_counter()
    ttft = 0.0
    try:
        await nc.publish(subjects.INVOKE, invoke_request(route, i), reply=inbox)
        while True:
            msg = await sub.next_msg(timeout=30)
            reply = invoke_pb2.Reply.FromString(msg.data)
            kind = reply.WhichOneof("frame")
            if kind == "chunk" and not ttft:
                ttft = (time.perf_counter() - started) * 1000
            elif kind == "final":
                return ttft, reply.final.rationale.hedge.fired
            elif kind == "error":
                raise RuntimeError(f"{route} {i}: {reply.error}")
    finally:
        await sub.unsubscribe()


async def run_mode(
    nats_url: str, ingress: BusCredentials, route: str, requests: int, concurrency: int
) -> dict:
    # As the ingress: workers answer only into the ingress's inbox (docs/reliability.md).
    nc = await nats.connect(
        nats_url, user=ingress.user, password=ingress.password, inbox_prefix=ingress.inbox_prefix
    )
    ttfts: list[float] = []
    hedged = 0
    queue = iter(range(requests))

    async def caller() -> None:
        nonlocal hedged
        for i in queue:
            ttft, fired = await one(nc, route, i)
            ttfts.append(ttft)
            hedged += fired

    try:
        started = time.monotonic()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    finally:
        await nc.close()
    return {
        "requests": requests,
        "seconds": elapsed,
        "hedges_fired": hedged,
        "ttft_ms_p50": percentile(ttfts, 50),
        "ttft_ms_p90": percentile(ttfts, 90),
        "ttft_ms_p99": percentile(ttfts, 99),
        "ttft_ms_max": max(ttfts),
    }


async def ledger_totals(nats_url: str, route: str, requests: int) -> dict:
    from switchyard.testing.stack import ledger_sql, wait_for_rows

    prefix = f"req_hedge_{route}_%"
    await wait_for_rows(
        nats_url,
        "SELECT request_id FROM requests WHERE request_id LIKE {p:String}",
        requests,
        {"p": prefix},
        timeout_s=60,
    )
    req = await ledger_sql(
        nats_url,
        "SELECT count() AS n, sum(cost_usd) AS cost FROM requests FINAL WHERE request_id LIKE {p:String}",
        {"p": prefix},
    )
    att = await ledger_sql(
        nats_url,
        "SELECT count() AS n, countIf(hedge) AS hedges, sum(cost_usd) AS cost "
        "FROM attempts FINAL WHERE request_id LIKE {p:String}",
        {"p": prefix},
    )
    n, attempts = int(req[0]["n"]), int(att[0]["n"])
    return {
        "ledger_requests": n,
        "upstream_calls": attempts,
        "extra_calls_share": attempts / n - 1 if n else float("nan"),
        "hedge_attempt_rows": int(att[0]["hedges"]),
        "requests_cost_usd": str(Decimal(str(req[0]["cost"]))),
        "attempts_cost_usd": str(Decimal(str(att[0]["cost"]))),
    }


def start_upstream(port: int, delay_ms: float, slow_every: int = 0, slow_ms: float = 0.0) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "bench.upstream", "--port", str(port), "--delay-ms", str(delay_ms)]
    cmd += ["--chunk-delay-ms", "0", "--slow-every", str(slow_every), "--slow-ms", str(slow_ms)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "upstream listening on ..." once it is bound
    if "listening" not in line:
        proc.kill()
        raise RuntimeError(f"upstream did not start: {line}")
    return proc


async def main_async(args: argparse.Namespace) -> dict:
    from switchyard import busauth
    from switchyard.natsserver import free_port
    from switchyard.testing.stack import Stack

    workdir = Path(tempfile.mkdtemp(prefix="switchyard-bench-hedge-"))
    ports = free_port(), free_port()
    upstreams = [
        start_upstream(ports[0], args.delay_ms, args.slow_every, args.slow_ms),
        start_upstream(ports[1], args.delay_ms),
    ]
    config = workdir / "switchyard.toml"
    config.write_text(
        CONFIG.format(
            primary=f"http://127.0.0.1:{ports[0]}",
            backup=f"http://127.0.0.1:{ports[1]}",
            min_delay_ms=args.min_delay_ms,
        )
    )
    stack = Stack.create(workdir, SWITCHYARD_CONFIG_FILE=str(config), SWITCHYARD_LOG_LEVEL="WARNING")
    report: dict = {"machine": machine(), "settings": vars(args), "modes": {}}
    try:
        stack.start(
            ("ledger", "services.ledger"),
            ("budget", "services.budget"),
            ("worker", "services.providers", "--provider", "bench"),
            ("router", "services.router"),
        )
        for mode in MODES:
            ingress = busauth.credentials(stack.bus_dir, busauth.INGRESS)
            entry = await run_mode(stack.nats.address, ingress, mode, args.requests, args.concurrency)
            entry.update(await ledger_totals(stack.nats.url, mode, args.requests))
            report["modes"][mode] = entry
    finally:
        stack.stop()
        for proc in upstreams:
            proc.terminate()
            proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
    plain, hedged = report["modes"]["plain"], report["modes"]["hedged"]
    report["ttft_p99_improvement"] = plain["ttft_ms_p99"] / hedged["ttft_ms_p99"]
    report["checks"] = {
        "ttft_p99_at_least_5x_lower": report["ttft_p99_improvement"] >= 5,
        "extra_calls_at_most_15pct": hedged["extra_calls_share"] <= 0.15,
        "ledger_cost_equals_attempt_sum": all(
            Decimal(m["requests_cost_usd"]) == Decimal(m["attempts_cost_usd"])
            for m in report["modes"].values()
        ),
    }
    return report


def print_report(report: dict) -> None:
    s = report["settings"]
    print(f"machine: {report['machine']}")
    print(
        f"{s['requests']} streamed requests per mode, {s['concurrency']} concurrent callers; upstream first "
        f"token {s['delay_ms']:g} ms, +{s['slow_ms']:g} ms on every {s['slow_every']}th primary request"
    )
    print(
        f"{'mode':<7} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8} {'hedges':>7} {'calls':>6} {'extra':>7} "
        f"{'cost (requests)':>16} {'cost (attempts)':>16}"
    )
    for mode, m in report["modes"].items():
        print(
            f"{mode:<7} {m['ttft_ms_p50']:>8.1f} {m['ttft_ms_p90']:>8.1f} {m['ttft_ms_p99']:>8.1f} "
            f"{m['ttft_ms_max']:>8.1f} {m['hedges_fired']:>7} {m['upstream_calls']:>6} "
            f"{m['extra_calls_share']:>6.1%} {m['requests_cost_usd']:>16} {m['attempts_cost_usd']:>16}"
        )
    print(f"(TTFT in ms at the caller) p99 improvement: {report['ttft_p99_improvement']:.1f}x")
    for name, ok in report["checks"].items():
        print(f"  {'PASS' if ok else 'FAIL'} {name}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hedge", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="streamed requests per mode")
    parser.add_argument("--concurrency", type=int, default=10, help="callers in flight at once")
    parser.add_argument("--delay-ms", type=float, default=10.0, help="upstream first-token delay")
    parser.add_argument("--slow-every", type=int, default=10, help="every Nth primary request is late")
    parser.add_argument("--slow-ms", type=float, default=2000.0, help="how late")
    parser.add_argument("--min-delay-ms", type=float, default=100.0, help="the hedge delay's floor")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 when a done-when check fails")
    args = parser.parse_args()
    report = asyncio.run(main_async(args))
    if args.json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        print_report(report)
    if args.check and not all(report["checks"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
