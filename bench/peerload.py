"""Two load shapes the side-by-side benchmark (bench/peer.py) needs beyond bench/loadgen.py.

- `closed`: N connections, each sending its next request as soon as the last is answered, for
  a fixed time: the most a gateway can answer (its throughput ceiling), whatever the latency.
  A refusal that says Retry-After (429/503/529) is honoured as the official OpenAI and
  Anthropic SDKs do (the connection waits that long, at most `RETRY_AFTER_CAP_S`, before its
  next request): a client resending a refused request at once measures how fast a gateway can
  refuse, not how much it can answer.
- `overload`: open loop (as bench/loadgen.py, due times fixed in advance) with a client
  deadline: each answer is classed as answered in time, answered late, refused (503/429, with
  how fast the refusal came and whether it said Retry-After), or failed (other status, timeout,
  connection error, each by its kind). Goodput is what was answered within the deadline.
  The load comes from `--clients` (16) source addresses on loopback (127.0.0.2 onwards), as a
  gateway's load comes from many clients: from one address, a gateway that caps connections
  per client (Switchyard: 256) cuts the excess connections before admission control sees
  them, which hid a collapse (goodput 3-14 req/s with the cap off, 2026-12-07,
  docs/performance.md).

Both reuse loadgen's raw-socket HTTP/1.1 client, so they cost the machine what it costs; `run`
starts one in its own process (bench.peer and `python -m bench`'s overload mode use it).
Run: python -m bench.peerload closed --url URL --body JSON --connections 32 --duration 10
     python -m bench.peerload overload --url URL --body JSON --rate 600 --duration 10 --deadline-ms 2000
Each prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from dataclasses import dataclass, field

import orjson
import uvloop

from .loadgen import Connection, build_request, open_loop, run_module, source_addresses, summarize

# The longest Retry-After the closed loop waits (an SDK caps its wait as well).
RETRY_AFTER_CAP_S = 2.0
REFUSALS = (429, 503, 529)


def retry_after_seconds(value: str) -> float:
    """A Retry-After value in seconds; an HTTP date (or anything else) waits the cap."""
    try:
        return max(float(value.strip()), 0.0)
    except ValueError:
        return RETRY_AFTER_CAP_S


async def closed_loop(
    url: str, body: bytes, connections: int, duration_s: float, headers: dict[str, str], timeout_s: float
) -> dict:
    """Each connection sends back to back until the time is up (waiting out a refusal's
    Retry-After first); answers per second overall."""
    loop = asyncio.get_running_loop()
    host, port, request = build_request(url, body, headers)
    latencies: list[float] = []
    ok = errors = refused = 0
    stop_at = time.perf_counter() + duration_s

    async def worker() -> None:
        nonlocal ok, errors, refused
        conn: Connection | None = None
        while time.perf_counter() < stop_at:
            try:
                if conn is None or conn.closed:
                    _, conn = await loop.create_connection(Connection, host, port)
                started = time.perf_counter()
                response = await asyncio.wait_for(conn.send(request), timeout_s)
                if 200 <= response.status < 300:
                    ok += 1
                    latencies.append((time.perf_counter() - started) * 1000)
                elif response.status in REFUSALS and response.retry_after:
                    refused += 1
                    wait = min(retry_after_seconds(response.retry_after), RETRY_AFTER_CAP_S)
                    await asyncio.sleep(min(wait, max(stop_at - time.perf_counter(), 0.0)))
                else:
                    errors += 1
            except (TimeoutError, ConnectionError, OSError, RuntimeError):
                errors += 1
                if conn is not None and conn.transport:
                    conn.transport.close()
                conn = None
                await asyncio.sleep(0.01)  # a refused connection must not spin
        if conn is not None and conn.transport:
            conn.transport.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    return {
        "connections": connections,
        "duration_s": duration_s,
        "ok": ok,
        "errors": errors,
        "refused_with_retry_after": refused,
        "elapsed_s": round(elapsed, 3),
        "achieved_rps": round(ok / elapsed, 1) if elapsed else 0.0,
        "latency_ms": summarize(latencies),
    }


@dataclass
class OverloadResult:
    rate: float
    deadline_ms: float
    sent: int = 0
    in_time: int = 0
    late: int = 0
    refused: int = 0
    refused_with_retry_after: int = 0
    failed: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    ok_latency_ms: list[float] = field(default_factory=list)
    refusal_latency_ms: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0

    def report(self) -> dict:
        return {
            "rate": self.rate,
            "deadline_ms": self.deadline_ms,
            "sent": self.sent,
            "in_time": self.in_time,
            "late": self.late,
            "refused": self.refused,
            "refused_with_retry_after": self.refused_with_retry_after,
            "failed": self.failed,
            "statuses": self.statuses,
            "goodput_rps": round(self.in_time / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            "ok_latency_ms": summarize(self.ok_latency_ms),
            "refusal_latency_ms": summarize(self.refusal_latency_ms) if self.refusal_latency_ms else None,
        }


async def overload(
    url: str,
    body: bytes,
    rate: float,
    duration_s: float,
    headers: dict[str, str],
    deadline_ms: float,
    clients: int = 16,
) -> dict:
    """Open loop at `rate` from `clients` addresses; the client gives up at the deadline
    (closing its connection)."""
    loop = asyncio.get_running_loop()
    host, port, request = build_request(url, body, headers)
    sources = source_addresses(host, clients)
    opened = 0
    idle: list[Connection] = []
    result = OverloadResult(rate=rate, deadline_ms=deadline_ms)
    deadline_s = deadline_ms / 1000

    def count(status: str) -> None:
        result.statuses[status] = result.statuses.get(status, 0) + 1

    async def one(due: float) -> None:
        nonlocal opened
        conn: Connection | None = None
        try:
            while idle and idle[-1].closed:
                idle.pop()
            if idle:
                conn = idle.pop()
            else:
                source = sources[opened % len(sources)]
                opened += 1
                _, conn = await loop.create_connection(Connection, host, port, local_addr=source)
            remaining = due + deadline_s - time.perf_counter()
            response = await asyncio.wait_for(conn.send(request), max(remaining, 0.001))
            took_ms = (time.perf_counter() - due) * 1000
            count(str(response.status))
            if 200 <= response.status < 300:
                if took_ms <= deadline_ms:
                    result.in_time += 1
                else:
                    result.late += 1
                result.ok_latency_ms.append(took_ms)
            elif response.status in REFUSALS:
                result.refused += 1
                result.refusal_latency_ms.append(took_ms)
                if response.retry_after:
                    result.refused_with_retry_after += 1
            else:
                result.failed += 1
            if not conn.closed:
                idle.append(conn)
        except TimeoutError:
            count("deadline")
            result.failed += 1
            if conn is not None and conn.transport:
                conn.transport.close()  # the client gives up: the gateway may see it go
        except (ConnectionError, OSError, RuntimeError) as exc:
            count(f"error: {type(exc).__name__}")
            result.failed += 1
            if conn is not None and conn.transport:
                conn.transport.close()

    result.sent, result.elapsed_s = await open_loop(rate, duration_s, one)
    for conn in idle:
        if conn.transport:
            conn.transport.close()
    return result.report()


def run(mode: str, url: str, body: bytes, cpu: int, headers: list[str], **options: float) -> dict:
    """`python -m bench.peerload MODE` in its own process (loadgen.run_module); its JSON report."""
    return run_module(["bench.peerload", mode], url, body, cpu, headers, **options)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peerload")
    parser.add_argument("mode", choices=["closed", "overload"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", required=True, help="JSON request body")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--header", action="append", default=[], help="Name: value")
    parser.add_argument("--connections", type=int, default=32, help="closed: concurrent connections")
    parser.add_argument("--rate", type=float, default=100.0, help="overload: offered requests per second")
    parser.add_argument("--deadline-ms", type=float, default=2000.0, help="overload: the client's deadline")
    parser.add_argument("--clients", type=int, default=16, help="overload: source addresses on loopback")
    parser.add_argument("--timeout", type=float, default=10.0, help="closed: per-request timeout")
    parser.add_argument("--cpu", type=int, default=-1, help="pin to this CPU")
    args = parser.parse_args()
    if args.cpu >= 0:
        os.sched_setaffinity(0, {args.cpu})
    headers = dict(h.split(": ", 1) for h in args.header)
    body = args.body.encode()
    if args.mode == "closed":
        out = uvloop.run(closed_loop(args.url, body, args.connections, args.duration, headers, args.timeout))
    else:
        out = uvloop.run(
            overload(args.url, body, args.rate, args.duration, headers, args.deadline_ms, args.clients)
        )
    print(orjson.dumps(out).decode())


if __name__ == "__main__":
    main()
