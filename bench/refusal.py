"""`python -m bench.refusal`: what one refusal for load costs the ingress, in CPU and in time.

Under overload the ingress refuses most requests (503 + Retry-After) on the core that also
serves the admitted ones, so a refusal's cost decides how much of the core is left for the
answers (docs/performance.md, "What stands in the way", item 7). This measures it alone: the
gateway as `switchyard up` starts it, pinned to CPU 0, with `SWITCHYARD_MAX_IN_FLIGHT=1` and one
request held in flight against an upstream that never answers in time, so that every request
of the load is refused by admission; then `--rounds` rounds of bench.peerload's overload at
`--rate` for `--duration` s from CPU 1 (16 client addresses, keep-alive connections). Reported
per round: refusals, the ingress's CPU per refusal (user and system, from /proc), and the
refusals' latency from their due time. Every answer must be a 503, or the run fails.

Run: python -m bench.refusal --rate 1500 --duration 5 --rounds 3
Compare code by running it from two checkouts in turn (the machine drifts between runs).
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from switchyard.natsserver import free_port

from . import peerload
from .__main__ import Gateway, body_for, parse_settings, run_probe
from .peer import start_upstream

HELD_S = 900  # the held request's upstream delay and deadline: longer than any run


def wait_for_port(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def hold_one(gateway: Gateway, body: bytes) -> threading.Thread:
    """A request the upstream answers only after HELD_S: the ingress's one slot stays taken."""
    headers = dict(h.split(": ", 1) for h in gateway.headers) | {"content-type": "application/json"}

    def call() -> None:
        with contextlib.suppress(httpx.HTTPError):  # it ends with the gateway
            httpx.post(f"{gateway.url}/v1/chat/completions", content=body, headers=headers, timeout=HELD_S)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread


def measure(args: argparse.Namespace) -> dict:
    upstream_port = free_port()
    gateway_cpu, load_cpu = (-1, -1) if args.no_pin else (0, 1)
    upstream = start_upstream(upstream_port, HELD_S * 1000, cpu=load_cpu)
    gateway = None
    try:
        wait_for_port(upstream_port)
        settings = {
            "SWITCHYARD_MAX_IN_FLIGHT": "1",
            "SWITCHYARD_REQUEST_TIMEOUT_S": str(HELD_S),
            "SWITCHYARD_INGRESS_DRAIN_S": "1",  # the held request must not hold the stop
        }
        settings |= parse_settings(args.gateway_env)
        gateway = Gateway(
            f"http://127.0.0.1:{upstream_port}",
            cpu=gateway_cpu,
            workdir=Path(tempfile.mkdtemp(prefix="switchyard-bench-refusal-")),
            settings=settings,
        )
        ingress = gateway.services()["ingress"]
        body = body_for("bench/echo", False)
        hold_one(gateway, body)
        time.sleep(1.0)  # the held request is in flight
        rounds = []
        for _ in range(args.rounds):
            before = ingress.cpu_times()
            result = peerload.run(
                "overload",
                f"{gateway.url}/v1/chat/completions",
                body,
                load_cpu,
                gateway.headers,
                rate=args.rate,
                duration=args.duration,
                deadline_ms=1000,
            )
            after = ingress.cpu_times()
            refused = result["refused"]
            if set(result["statuses"]) != {"503"} or not refused:
                raise RuntimeError(f"every answer should have been a 503: {result['statuses']}")
            user_us = 1e6 * (after.user - before.user) / refused
            sys_us = 1e6 * (after.system - before.system) / refused
            rounds.append(
                {
                    "refused": refused,
                    "with_retry_after": result["refused_with_retry_after"],
                    "ingress_cpu_us_per_refusal": round(user_us + sys_us, 1),
                    "user_us": round(user_us, 1),
                    "system_us": round(sys_us, 1),
                    "latency_ms": result["refusal_latency_ms"],
                }
            )
        return {
            "rate": args.rate,
            "duration_s": args.duration,
            "rounds": rounds,
            "median_ingress_cpu_us_per_refusal": statistics.median(
                r["ingress_cpu_us_per_refusal"] for r in rounds
            ),
        }
    finally:
        if gateway is not None:
            gateway.stop()
        upstream.terminate()
        upstream.wait()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.refusal", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1500.0, help="requests per second offered")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per round")
    parser.add_argument("--rounds", type=int, default=3)
    return run_probe(parser, measure, show)


def show(report: dict) -> None:
    for n, r in enumerate(report["rounds"], 1):
        latency = r["latency_ms"] or {}
        print(
            f"round {n}: {r['refused']} refused ({r['with_retry_after']} with Retry-After), ingress CPU "
            f"{r['ingress_cpu_us_per_refusal']} µs per refusal (user {r['user_us']}, system {r['system_us']}), "
            f"latency p50 {latency.get('p50', 0):.1f} / p99 {latency.get('p99', 0):.1f} ms"
        )
    print(f"median: {report['median_ingress_cpu_us_per_refusal']} µs of the ingress's CPU per refusal")


if __name__ == "__main__":
    raise SystemExit(main())
