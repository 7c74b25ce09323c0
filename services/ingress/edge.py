"""Edge protection for the ingress, as pure-ASGI middlewares (no per-request allocation of a
Starlette Request): header and body limits, load shedding, and the request-body deadline.
Connection limits and the header deadline live one level lower, in connections.py.

The order matters, so that a slow or unauthenticated client cannot hold what paying work needs:

1. `EdgeMiddleware` (outermost, no identity needed): headers larger than `max_header_bytes`
   -> 431; a Content-Length that is not a number -> 400.
2. Authentication (auth.AuthMiddleware): an unknown or missing key -> 401 before any body is
   read (the connection is then closed, see connections.py).
3. `AdmissionMiddleware`: an announced Content-Length above `max_body_bytes` -> 413 at once;
   else the whole body is read within `body_timeout_s` in total (not per chunk; -> 408) and
   within `max_body_bytes` (-> 413). A 413 comes after authentication so that it can be
   recorded: `on_too_large` (the ingress) writes its ledger row under the request id the
   client gets; an unauthenticated upload gets 401 and leaves no row. Only then is an invocation admitted:
   when the requests this process has in flight reach `max_in_flight` or the adaptive limit
   (admission.py: a concurrency limit driven by the gateway's measured latency), or the
   ledger's consumer lags more than `max_ledger_lag` events (or its lag cannot be read for
   longer than `ledger_lag_grace_s`), it gets 503 with Retry-After, counted by reason in
   `switchyard_ingress_shed_total`. In-flight counts only admitted requests, so slow uploads
   never take a slot. Health and metrics are never shed.

gRPC calls pass the same admission (shared `Overload`) in grpc_edge.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge

from switchyard.errors import ErrorCode, GatewayError

from .admission import AdaptiveLimit

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("switchyard.ingress.edge")

# While idle with an empty backlog, the ledger lag is read this often (or when a request comes).
LAG_QUIET_POLL_S = 15.0
NEVER_SHED = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})

SHED = Counter(
    "switchyard_ingress_shed_total",
    "Requests refused with 503 before they were published, by reason "
    "(capacity, adaptive_limit, ledger_lag, ledger_unknown)",
    ["reason"],
)
# Added to every refusal for load (HTTP; gRPC has it as trailing metadata).
SHED_HEADERS = ((b"retry-after", b"1"),)
CONCURRENCY_LIMIT = Gauge(
    "switchyard_ingress_concurrency_limit", "The adaptive admission limit of this ingress (admission.py)"
)


@dataclass
class EdgeLimits:
    max_body_bytes: int = 32 * 1024 * 1024
    max_header_bytes: int = 16 * 1024
    body_timeout_s: float = 15.0  # the whole body, from the end of the headers
    max_in_flight: int = 2048
    max_ledger_lag: int = 200_000
    ledger_lag_grace_s: float = 30.0


class Overload:
    """What the shedder looks at: requests admitted and not yet answered (HTTP and gRPC alike),
    the adaptive concurrency limit (None: off) and the ledger consumer's lag (kept current by
    `poll_ledger_lag`; None = unknown for longer than the grace, which sheds like a lag over
    the limit).

    Reading `ledger_lag` also marks it as consulted: the poller keeps it fresh while requests
    look at it and rests while none do (an idle gateway should not ask NATS every second)."""

    def __init__(self, limiter: AdaptiveLimit | None = None) -> None:
        self.in_flight = 0
        self._ledger_lag: int | None = 0
        self.consulted = asyncio.Event()
        self.limiter = limiter
        if limiter is not None:
            CONCURRENCY_LIMIT.set(int(limiter.limit))

    def observe(self, own_ms: float, now: float) -> None:
        """A published request finished after `own_ms` of the gateway's own time."""
        if self.limiter is not None:
            self.limiter.observe(own_ms, self.in_flight, now)
            CONCURRENCY_LIMIT.set(int(self.limiter.limit))

    @property
    def ledger_lag(self) -> int | None:
        if not self.consulted.is_set():
            self.consulted.set()
        return self._ledger_lag

    @ledger_lag.setter
    def ledger_lag(self, value: int | None) -> None:
        self._ledger_lag = value

    @property
    def polled_lag(self) -> int | None:
        """The lag as last read, without marking it consulted (for the poller itself)."""
        return self._ledger_lag


async def _reject(
    scope: Scope,
    send: Send,
    status: int,
    code: str,
    message: str,
    headers: Sequence[tuple[bytes, bytes]] = (),
    request_id: str = "",
) -> None:
    """Refuse in the caller's API dialect (OpenAI's error shape on /v1/chat/completions,
    Anthropic's on /v1/messages, the native one elsewhere) with a request id: with `status`
    where the code's own status differs (431 and 408 have no code of their own), else with the
    dialect's status for the code (so an overload is 529 on the Anthropic API, as Anthropic's
    own is)."""
    # Imported here, not at the top: the dialect modules import this one (via validation.py).
    from .dialects import reject

    error = GatewayError(code, message)
    await reject(scope, send, error, status if status != error.http_status else 0, headers, request_id)


def shed(limits: EdgeLimits, overload: Overload) -> tuple[str, str]:
    """Why new work should be refused now, as (reason label, message), or ("", "") (pure)."""
    if overload.in_flight >= limits.max_in_flight:
        return "capacity", "the gateway is at capacity (too many requests in flight); retry shortly"
    if overload.limiter is not None and not overload.limiter.admits(overload.in_flight):
        return "adaptive_limit", "the gateway is overloaded (its latency is rising); retry shortly"
    if overload.ledger_lag is None:
        return "ledger_unknown", "the ledger's backlog cannot be read (is the ledger running?); retry shortly"
    if overload.ledger_lag > limits.max_ledger_lag:
        return "ledger_lag", "the ledger is falling behind; retry shortly"
    return "", ""


def shed_reason(limits: EdgeLimits, overload: Overload) -> str:
    """Why new work should be refused now, or "" (pure); counted in SHED when it is."""
    label, message = shed(limits, overload)
    if label:
        SHED.labels(label).inc()
    return message


class EdgeMiddleware:
    """Limits that need neither an identity nor the body: header size, a readable length."""

    def __init__(self, app: ASGIApp, limits: EdgeLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limits = self.limits
        header_bytes = sum(len(k) + len(v) for k, v in scope["headers"])
        if header_bytes > limits.max_header_bytes:
            await _reject(
                scope,
                send,
                431,
                ErrorCode.INVALID_REQUEST,
                f"request headers exceed {limits.max_header_bytes} bytes",
            )
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    int(value)
                except ValueError:
                    await _reject(scope, send, 400, ErrorCode.INVALID_REQUEST, "invalid Content-Length")
                    return
        await self.app(scope, receive, send)


def announced_length(scope: Scope) -> int:
    """The Content-Length the client announced (0 when none; EdgeMiddleware checked it)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value)
    return 0


# Told of a body refused as too large, before the answer: (scope, error, request id). The
# ingress records it in the ledger under that id (app.Ingress.record_refusal).
OnTooLarge = Callable[[Scope, GatewayError, str], None]


class AdmissionMiddleware:
    """After authentication: the body within its deadline and size, then load shedding and
    the in-flight count."""

    def __init__(
        self, app: ASGIApp, limits: EdgeLimits, overload: Overload, on_too_large: OnTooLarge | None = None
    ) -> None:
        self.app = app
        self.limits = limits
        self.overload = overload
        self.on_too_large = on_too_large

    async def _too_large(self, scope: Scope, send: Send) -> None:
        from .dialects import new_request_id  # the dialect modules import this one

        error = GatewayError(
            ErrorCode.PAYLOAD_TOO_LARGE, f"request body exceeds {self.limits.max_body_bytes} bytes"
        )
        request_id = new_request_id()
        if self.on_too_large is not None:
            self.on_too_large(scope, error, request_id)
        await _reject(scope, send, 413, error.code, error.message, request_id=request_id)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        limits = self.limits
        if announced_length(scope) > limits.max_body_bytes:
            await self._too_large(scope, send)
            return
        # Read the whole body here, bounded in size and in total time, so a limit is answered
        # before the app runs; every handler reads the whole body anyway.
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(limits.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limits.max_body_bytes:
                        await self._too_large(scope, send)
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await _reject(
                scope,
                send,
                408,
                ErrorCode.TIMEOUT,
                f"the request body took longer than {limits.body_timeout_s:g} s to arrive",
            )
            return
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later: http.disconnect, watched by streaming responses

        if scope["method"] != "POST" or scope["path"] in NEVER_SHED:
            await self.app(scope, replay, send)
            return
        reason = shed_reason(limits, self.overload)
        if reason:
            await _reject(scope, send, 503, ErrorCode.OVERLOADED, reason, SHED_HEADERS)
            return
        self.overload.in_flight += 1
        try:
            await self.app(scope, replay, send)
        finally:
            self.overload.in_flight -= 1


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
        ledger_lag_grace_s=settings.ledger_lag_grace_s,
    )


class LagReading:
    """The ledger lag the shedder should use, from a series of polls (pure: the clock is
    passed in). A failed poll keeps the last good value for `grace_s` — the first ledger start
    or a NATS reconnect — and then turns unknown (None), which sheds: a gateway that cannot
    see its ledger must not keep taking work whose records may be lost."""

    def __init__(self, grace_s: float, now: float) -> None:
        self.grace_s = grace_s
        self.last_ok = now
        self.value: int | None = 0

    def ok(self, lag: int, now: float) -> int:
        self.last_ok = now
        self.value = lag
        return lag

    def failed(self, now: float) -> int | None:
        if now - self.last_ok > self.grace_s:
            self.value = None
        return self.value


async def poll_ledger_lag(
    js: Any,
    overload: Overload,
    stream: str,
    durable: str,
    grace_s: float = 30.0,
    interval_s: float = 1.0,
    quiet_interval_s: float = LAG_QUIET_POLL_S,
) -> None:
    """Keep `overload.ledger_lag` current: events the ledger has not yet taken or acked.

    Every `interval_s` while requests consult it or the last reading was not a clean zero;
    while the gateway is idle with an empty backlog, every `quiet_interval_s`, or at once when
    a request next consults it (that request is judged on a reading at most that old, which
    said the backlog was empty, and the grace is longer)."""
    reading = LagReading(grace_s, time.monotonic())
    while True:
        overload.consulted.clear()
        clean = False  # read, and nothing waiting
        try:
            info = await js.consumer_info(stream, durable)
            if overload.polled_lag is None:
                log.warning("the ledger's backlog is readable again: no longer shedding on it")
            overload.ledger_lag = reading.ok(info.num_pending + info.num_ack_pending, time.monotonic())
            clean = overload.polled_lag == 0
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # no ledger consumer yet, or NATS reconnecting
            was_known = overload.polled_lag is not None
            overload.ledger_lag = reading.failed(time.monotonic())
            if was_known and overload.polled_lag is None:
                log.warning(
                    "the ledger's backlog has been unreadable for %gs (%s): shedding new requests "
                    "until it can be read",
                    grace_s,
                    type(exc).__name__,
                )
        await asyncio.sleep(interval_s)
        if clean and not overload.consulted.is_set():  # idle: rest until a request looks
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(overload.consulted.wait(), max(quiet_interval_s - interval_s, 0.0))
