"""Benchmark: what hedged requests do to the tail of time to first token, and what they cost.
A script, not a test: `python -m bench.hedge [--requests N] [--rate R] [--json]`.

Fake OpenAI-compatible upstreams (bench/upstream.py) on loopback, a pair per mode: `primary`
answers in `--delay-ms` but delays its first token by `--slow-ms` (2 s) on every
`--slow-every`th (10th) request it gets; `backup` always answers in `--delay-ms`. A real stack
(NATS, ledger, budget, router, and the provider workers) serves two routes, each over its own
pair, pinned in that order (quality weights only): `plain` (no hedge) and `hedged` (hedge after
the p90 of the primary's observed TTFT, at least `--min-delay-ms`; at most `--max-share` (15 %)
of the route's requests). By default one worker serves both upstreams (provider `bench`); with
`--cross-pool` the primaries and the backups are two providers, each served by its own worker
pool (the default topology), so every hedge runs in the other pool (hedge_remote.py).

Acting as the ingress does, it publishes streaming InvokeRequests on `llm.invoke`, open loop at
`--rate` requests per second in all, the two routes interleaved (so machine noise hits both
alike), and measures each request's time to first token at the caller (publish to first
chunk). Then it reads the ledger: upstream attempts per request (extra calls = attempts /
requests - 1) and the total cost of the requests against the sum of their attempt rows.

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
from switchyard.v1 import invoke_pb2

if TYPE_CHECKING:
    from switchyard.busauth import BusCredentials

DEPLOYMENT = """
[[deployments]]
id = "{mode}/{role}"
provider = "{provider}"
adapter = "openai_compat"
model = "{role}"
base_url = "{url}/v1"
api_key = "bench-upstream-key"
quality = {quality}
price = {{ input = 1.0, output = 2.0 }}
"""

# Each mode has its own pair of deployments over the same two upstreams, so what the router
# learned of the primary's speed in one mode does not set the other's hedge delay.
CONFIG = """
[demo]
enabled = false
{deployments}
[routes.plain]
deployments = ["plain/primary", "plain/backup"]
weights = {{ quality = 1 }}

[routes.hedged]
deployments = ["hedged/primary", "hedged/backup"]
weights = {{ quality = 1 }}
hedge = {{ percentile = {percentile:g}, min_delay_ms = {min_delay_ms:g}, max_share = {max_share:g}, window_s = 60 }}
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


async def one(nc: nats.NATS, route: str, i: int) -> tuple[float, invoke_pb2.HedgeNote]:
    """Time to first chunk (ms) of one streamed request, and its rationale's hedge note."""
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
                return ttft, reply.final.rationale.hedge
            elif kind == "error":
                raise RuntimeError(f"{route} {i}: {reply.error}")
    finally:
        await sub.unsubscribe()


async def run_modes(nats_url: str, ingress: BusCredentials, requests: int, rate: float) -> dict[str, dict]:
    """Both modes interleaved (plain, hedged, plain, ...), so machine noise hits them alike."""
    # As the ingress: workers answer only into the ingress's inbox (docs/reliability.md).
    nc = await nats.connect(
        nats_url, user=ingress.user, password=ingress.password, inbox_prefix=ingress.inbox_prefix
    )
    ttfts: dict[str, list[float]] = {mode: [] for mode in MODES}
    notes: dict[str, list[invoke_pb2.HedgeNote]] = {mode: [] for mode in MODES}

    async def call(mode: str, i: int) -> None:
        ttft, note = await one(nc, mode, i)
        ttfts[mode].append(ttft)
        notes[mode].append(note)

    try:
        # Open loop: request k starts at k / rate whatever the others do (a closed loop would
        # slow down with the late requests and so load the gateway less without hedging).
        started = time.monotonic()
        calls = []
        for k in range(requests * len(MODES)):
            await asyncio.sleep(max(started + k / rate - time.monotonic(), 0.0))
            calls.append(asyncio.create_task(call(MODES[k % len(MODES)], k // len(MODES))))
        await asyncio.gather(*calls)
        elapsed = time.monotonic() - started
    finally:
        await nc.close()
    return {
        mode: {
            "requests": requests,
            "seconds": elapsed,
            "hedges_fired": sum(n.fired for n in notes[mode]),
            "hedges_won": sum(n.hedge_won for n in notes[mode]),
            "hedges_capped": sum("cap" in n.skipped for n in notes[mode]),
            "hedge_delay_ms_p50": percentile([n.delay_ms for n in notes[mode] if n.armed], 50),
            "ttft_ms_p50": percentile(ttfts[mode], 50),
            "ttft_ms_p90": percentile(ttfts[mode], 90),
            "ttft_ms_p99": percentile(ttfts[mode], 99),
            "ttft_ms_max": max(ttfts[mode]),
        }
        for mode in MODES
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


def provider_of(role: str, cross_pool: bool) -> str:
    """One provider for both upstreams, or one per role (each its own worker pool)."""
    return f"bench_{role}" if cross_pool else "bench"


def workers(cross_pool: bool) -> list[tuple[str, ...]]:
    if not cross_pool:
        return [("worker", "services.providers", "--provider", "bench")]
    return [
        (f"worker-{role}", "services.providers", "--provider", provider_of(role, True))
        for role in ("primary", "backup")
    ]


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
    # Per mode a primary (late on every slow_every-th request it gets) and a backup.
    ports = {(mode, role): free_port() for mode in MODES for role in ("primary", "backup")}
    upstreams = [
        start_upstream(port, args.delay_ms, *((args.slow_every, args.slow_ms) if role == "primary" else ()))
        for (mode, role), port in ports.items()
    ]
    config = workdir / "switchyard.toml"
    deployments = "".join(
        DEPLOYMENT.format(
            mode=mode,
            role=role,
            provider=provider_of(role, args.cross_pool),
            url=f"http://127.0.0.1:{port}",
            quality=1.0 if role == "primary" else 0.5,
        )
        for (mode, role), port in ports.items()
    )
    config.write_text(
        CONFIG.format(
            deployments=deployments,
            percentile=args.percentile,
            min_delay_ms=args.min_delay_ms,
            max_share=args.max_share,
        )
    )
    stack = Stack.create(
        workdir,
        SWITCHYARD_CONFIG_FILE=str(config),
        SWITCHYARD_LOG_LEVEL="WARNING",
        SWITCHYARD_BUDGET_TIMEOUT_S="10",  # a busy shared machine must not turn into refusals
    )
    report: dict = {
        "machine": machine(),
        "settings": vars(args),
        "topology": "two worker pools (one per provider)" if args.cross_pool else "one worker",
        "modes": {},
    }
    try:
        stack.start(
            ("ledger", "services.ledger"),
            ("budget", "services.budget"),
            *workers(args.cross_pool),
            ("router", "services.router"),
        )
        ingress = busauth.credentials(stack.bus_dir, busauth.INGRESS)
        report["modes"] = await run_modes(stack.nats.address, ingress, args.requests, args.rate)
        for mode in MODES:
            entry = report["modes"][mode]
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
    print(f"topology: {report['topology']}")
    print(
        f"{s['requests']} streamed requests per mode, interleaved, {s['rate']:g}/s in all; upstream first "
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
    h = report["modes"]["hedged"]
    print(
        f"(TTFT in ms at the caller) p99 improvement: {report['ttft_p99_improvement']:.1f}x; "
        f"hedge delay p50 {h['hedge_delay_ms_p50']:.1f} ms, {h['hedges_won']} hedges won, "
        f"{h['hedges_capped']} not fired at the share cap"
    )
    for name, ok in report["checks"].items():
        print(f"  {'PASS' if ok else 'FAIL'} {name}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hedge", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="streamed requests per mode")
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second (open loop)")
    parser.add_argument("--delay-ms", type=float, default=10.0, help="upstream first-token delay")
    parser.add_argument("--slow-every", type=int, default=10, help="every Nth primary request is late")
    parser.add_argument("--slow-ms", type=float, default=2000.0, help="how late")
    parser.add_argument("--percentile", type=float, default=90.0, help="the hedge delay's TTFT percentile")
    parser.add_argument("--min-delay-ms", type=float, default=200.0, help="the hedge delay's floor")
    parser.add_argument("--max-share", type=float, default=0.15, help="the route's cap on hedged requests")
    parser.add_argument(
        "--cross-pool",
        action="store_true",
        help="primary and backup as two providers, each served by its own worker pool",
    )
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
