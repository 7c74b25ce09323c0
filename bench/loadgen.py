"""An open-loop HTTP/1.1 load generator on raw asyncio sockets (uvloop).

Open loop: request i is due at start + i/rate whatever happened to earlier ones, and its
latency is measured from that due time. A slow server therefore cannot hide its latency by
slowing the generator down (coordinated omission). Raw sockets because httpx costs 1-2.5 ms
of CPU per request and would saturate this machine before the gateway does (STACK-NOTES.md).

Run: python -m bench.loadgen --url http://127.0.0.1:8080/v1/chat/completions --rate 500 --duration 10
It prints one JSON object with the latency distribution.

Load with a client deadline (overload: answered in time, refused, given up) is
bench/peerload.py's `overload`, on this module's connections and schedule.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import uvloop

ROOT = Path(__file__).resolve().parents[1]


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def summarize(latencies_ms: list[float]) -> dict[str, float]:
    values = sorted(latencies_ms)
    return {
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": values[-1] if values else float("nan"),
        "mean": sum(values) / len(values) if values else float("nan"),
    }


class ResponseParser:
    """Incremental parser of one HTTP/1.1 response (Content-Length or chunked)."""

    def __init__(self) -> None:
        self.buffer = b""
        self.status = 0
        self.headers_done = False
        self.chunked = False
        self.length = -1
        self.body_bytes = 0
        self.first_body_at = 0.0
        self.retry_after = ""  # the header's value, as sent ("" when none)
        self.done = False

    def feed(self, data: bytes, now: float) -> None:
        self.buffer += data
        if not self.headers_done:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1").split("\r\n")
            self.status = int(head[0].split(" ", 2)[1])
            for line in head[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    self.length = int(value.strip())
                elif name == "transfer-encoding" and "chunked" in value.lower():
                    self.chunked = True
                elif name == "retry-after":
                    self.retry_after = value.strip()
            self.headers_done = True
            self.buffer = self.buffer[end + 4 :]
        if self.buffer and not self.first_body_at:
            self.first_body_at = now
        if self.chunked:
            while True:
                line_end = self.buffer.find(b"\r\n")
                if line_end < 0:
                    return
                size = int(self.buffer[:line_end].split(b";")[0], 16)
                if len(self.buffer) < line_end + 2 + size + 2:
                    return
                if size == 0:
                    self.done = True
                    self.buffer = self.buffer[line_end + 4 :]
                    return
                self.body_bytes += size
                self.buffer = self.buffer[line_end + 2 + size + 2 :]
        else:
            if self.length >= 0 and len(self.buffer) >= self.length:
                self.body_bytes = self.length
                self.buffer = self.buffer[self.length :]
                self.done = True


class Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser: ResponseParser | None = None
        self.waiter: asyncio.Future[ResponseParser] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))

    def data_received(self, data: bytes) -> None:
        if self.parser is None or self.waiter is None:
            return
        self.parser.feed(data, time.perf_counter())
        if self.parser.done and not self.waiter.done():
            self.waiter.set_result(self.parser)

    def send(self, request: bytes) -> asyncio.Future[ResponseParser]:
        assert self.transport is not None
        self.parser = ResponseParser()
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.waiter


@dataclass
class LoadResult:
    rate: float
    duration_s: float
    sent: int = 0
    ok: int = 0
    errors: int = 0
    statuses: Counter = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    ttft_ms: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0

    def report(self) -> dict:
        return {
            "rate": self.rate,
            "duration_s": self.duration_s,
            "sent": self.sent,
            "ok": self.ok,
            "errors": self.errors,
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "achieved_rps": self.ok / self.elapsed_s if self.elapsed_s else 0.0,
            "latency_ms": summarize(self.latencies_ms),
            "ttft_ms": summarize(self.ttft_ms) if self.ttft_ms else None,
        }


def build_request(url: str, body: bytes, headers: dict[str, str]) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    lines = [
        f"POST {parts.path or '/'} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *[f"{k}: {v}" for k, v in headers.items()],
    ]
    return host, port, ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def open_loop(
    rate: float, duration_s: float, one: Callable[[float], Awaitable[None]]
) -> tuple[int, float]:
    """Start `one(due)` for request i at `start + i/rate`, whatever the server does (open loop:
    a slow server cannot slow the schedule down), then wait for all. (sent, elapsed seconds)."""
    tasks = []
    start = time.perf_counter() + 0.05
    for i in range(int(rate * duration_s)):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(due)))
    await asyncio.gather(*tasks)
    return len(tasks), time.perf_counter() - start


def source_addresses(host: str, clients: int) -> list[tuple[str, int] | None]:
    """Where the connections come from: `clients` loopback addresses for a loopback target
    (127.0.0.2 onwards; the whole 127/8 is the loopback interface on Linux), else the default.
    A gateway's load comes from many clients: from one address, a gateway that caps connections
    per client (Switchyard's 256) refuses the excess before its admission control sees it."""
    if clients <= 1 or not host.startswith("127."):
        return [None]
    return [(f"127.0.0.{2 + n}", 0) for n in range(min(clients, 250))]


async def run_load(
    url: str,
    body: bytes,
    rate: float,
    duration_s: float,
    headers: dict[str, str] | None = None,
    timeout_s: float = 10.0,
    warm_connections: int = 16,
) -> LoadResult:
    loop = asyncio.get_running_loop()
    host, port, request = build_request(url, body, headers or {})
    idle: list[Connection] = []
    result = LoadResult(rate=rate, duration_s=duration_s)

    async def connect() -> Connection:
        _, conn = await loop.create_connection(Connection, host, port)
        return conn

    for _ in range(warm_connections):
        idle.append(await connect())

    async def one(due: float) -> None:
        conn = None
        try:
            # Skip connections the server closed while they sat idle (keep-alive timeouts).
            while idle and idle[-1].closed:
                idle.pop()
            conn = idle.pop() if idle else await connect()
            response = await asyncio.wait_for(conn.send(request), timeout_s)
            finished = time.perf_counter()
            result.statuses[response.status] += 1
            if 200 <= response.status < 300:
                result.ok += 1
                result.latencies_ms.append((finished - due) * 1000)
                if response.chunked and response.first_body_at:
                    result.ttft_ms.append((response.first_body_at - due) * 1000)
            else:
                result.errors += 1
            if not conn.closed:
                idle.append(conn)
        except (TimeoutError, ConnectionError, OSError, RuntimeError):  # RuntimeError: closed under us
            result.errors += 1
            result.statuses["error"] += 1
            if conn and conn.transport:
                conn.transport.close()

    result.sent, result.elapsed_s = await open_loop(rate, duration_s, one)
    for conn in idle:
        if conn.transport:
            conn.transport.close()
    return result


def run_module(
    module: list[str], url: str, body: bytes, cpu: int, headers: list[str], **options: float
) -> dict:
    """`python -m <module...>` (this load generator, or bench.peerload with its mode) in its own
    process pinned to `cpu` (-1: unpinned), `options` as its flags (`deadline_ms=1000` ->
    `--deadline-ms 1000`); the JSON report it prints last."""
    cmd = [sys.executable, "-m", *module, "--url", url, "--body", body.decode(), "--cpu", str(cpu)]
    for name, value in options.items():
        cmd += [f"--{name.replace('_', '-')}", str(value)]
    for header in headers:
        cmd += ["--header", header]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(module)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return orjson.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", required=True, help="JSON request body")
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--header", action="append", default=[], help="Name: value")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--cpu", type=int, default=-1, help="pin to this CPU")
    args = parser.parse_args()
    if args.cpu >= 0:
        os.sched_setaffinity(0, {args.cpu})
    headers = dict(h.split(": ", 1) for h in args.header)
    result = uvloop.run(
        run_load(args.url, args.body.encode(), args.rate, args.duration, headers, args.timeout)
    )
    print(orjson.dumps(result.report()).decode())


if __name__ == "__main__":
    main()
