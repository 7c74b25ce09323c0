"""Edge protection for the ingress, as one pure-ASGI middleware (no per-request allocation of
a Starlette Request): load shedding, body size, header size and slow-client limits.

- Load shedding: when the requests this process has in flight on the bus reach
  `max_in_flight` (workers are falling behind) or the ledger's consumer lags more than
  `max_ledger_lag` events (the ledger is falling behind), new invocations get 503 with
  Retry-After instead of queueing without bound. Health and metrics are never shed.
- Body: larger than `max_body_bytes` -> 413, whether announced by Content-Length or not.
- Headers: more than `max_header_bytes` in total -> 431.
- Slow clients: a body that stalls longer than `body_timeout_s` between chunks -> 408.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

NEVER_SHED = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})


@dataclass
class EdgeLimits:
    max_body_bytes: int = 4 * 1024 * 1024
    max_header_bytes: int = 16 * 1024
    body_timeout_s: float = 15.0
    max_in_flight: int = 2048
    max_ledger_lag: int = 200_000


class Overload:
    """What the shedder looks at: requests admitted and not yet answered (counted by the
    middleware) and the ledger consumer's lag (kept current by `poll_ledger_lag`)."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.ledger_lag = 0


async def _reject(
    send: Send, status: int, code: str, message: str, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def shed_reason(limits: EdgeLimits, overload: Overload) -> str:
    """Why new work should be refused now, or "" (pure)."""
    if overload.in_flight >= limits.max_in_flight:
        return "the gateway is at capacity (too many requests in flight); retry shortly"
    if overload.ledger_lag > limits.max_ledger_lag:
        return "the ledger is falling behind; retry shortly"
    return ""


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, limits: EdgeLimits, overload: Overload) -> None:
        self.app = app
        self.limits = limits
        self.overload = overload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limits = self.limits
        header_bytes = sum(len(k) + len(v) for k, v in scope["headers"])
        if header_bytes > limits.max_header_bytes:
            await _reject(
                send, 431, "invalid_request", f"request headers exceed {limits.max_header_bytes} bytes"
            )
            return
        if scope["method"] == "POST" and scope["path"] not in NEVER_SHED:
            reason = shed_reason(limits, self.overload)
            if reason:
                await _reject(send, 503, "overloaded", reason, [(b"retry-after", b"1")])
                return
            self.overload.in_flight += 1
            try:
                await self._admitted(scope, receive, send)
            finally:
                self.overload.in_flight -= 1
            return
        await self._admitted(scope, receive, send)

    async def _admitted(self, scope: Scope, receive: Receive, send: Send) -> None:
        limits = self.limits
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    announced = int(value)
                except ValueError:
                    await _reject(send, 400, "invalid_request", "invalid Content-Length")
                    return
                if announced > limits.max_body_bytes:
                    await _reject(
                        send, 413, "payload_too_large", f"request body exceeds {limits.max_body_bytes} bytes"
                    )
                    return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        # Read the whole body here, bounded in size and in time between chunks, so a limit is
        # answered before the app runs; every handler reads the whole body anyway.
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), limits.body_timeout_s)
            except TimeoutError:
                await _reject(
                    send,
                    408,
                    "timeout",
                    f"the request body stalled for more than {limits.body_timeout_s:g} s",
                )
                return
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limits.max_body_bytes:
                await _reject(
                    send, 413, "payload_too_large", f"request body exceeds {limits.max_body_bytes} bytes"
                )
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later: http.disconnect, watched by streaming responses

        await self.app(scope, replay, send)


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """True when `value` nests deeper than `limit` (iterative: no recursion to exhaust)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in item)
    return False


def limits_from(settings: Any) -> EdgeLimits:
    return EdgeLimits(
        max_body_bytes=settings.max_body_bytes,
        max_header_bytes=settings.max_header_bytes,
        body_timeout_s=settings.body_timeout_s,
        max_in_flight=settings.max_in_flight,
        max_ledger_lag=settings.max_ledger_lag,
    )


async def poll_ledger_lag(
    js: Any, overload: Overload, stream: str, durable: str, interval_s: float = 1.0
) -> None:
    """Keep `overload.ledger_lag` current: events the ledger has not yet taken or acked."""
    while True:
        try:
            info = await js.consumer_info(stream, durable)
            overload.ledger_lag = info.num_pending + info.num_ack_pending
        except asyncio.CancelledError:
            raise
        except Exception:
            overload.ledger_lag = 0  # no ledger consumer yet (or NATS reconnecting): do not shed on it
        await asyncio.sleep(interval_s)
