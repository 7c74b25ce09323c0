"""Connection limits and the header deadline of the ingress's HTTP server.

uvicorn (httptools) has neither: a connection that sends nothing, or its headers one byte at a
time, is held for as long as the client likes, and nothing bounds how many connections one
address opens. The ASGI app only runs once the headers are complete, so both limits live here,
in the protocol that uvicorn runs per connection:

- `max_connections` in total and `max_connections_per_client` per client address (0 = no
  limit): a connection over either is closed at once, before a byte is read.
- `header_timeout_s`: from the connection's start (or the first byte of the next request on a
  kept-alive connection) to the end of the request headers; past it -> 408 and closed.
- A response sent before the request body was fully received (401, 408, 413, ...) ends the
  connection, so a client refused mid-upload cannot keep dripping bytes into it: a "lingering
  close" (as nginx does) — our side is shut for writing, whatever else arrives is discarded
  unparsed for at most `LINGER_S`, then the socket is closed. Closing at once would make the
  kernel answer the unread bytes with a reset, and the client could lose the response. The
  response's head says `connection: close` (`_AnnouncingTransport`), so that no client sends
  its next request into the closing connection.

- A request that admission would refuse for load is answered here, from its head, without
  the ASGI app (early_shed.py): its body is discarded as it arrives and the whole refusal
  written once it is in (or 408 and closed past `body_timeout_s`).

The body's own deadline is in edge.AdmissionMiddleware.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

import httptools
import orjson
from prometheus_client import Counter as MetricCounter
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from .early_shed import EarlyShed

log = logging.getLogger("switchyard.ingress.connections")
LINGER_S = 2.0
CLOSED = MetricCounter(
    "switchyard_ingress_connections_closed_total",
    "HTTP connections the ingress refused or cut: connection limits, header deadline",
    ["reason"],
)


def _timeout_response(message: str) -> bytes:
    """A whole 408 that ends the connection, written by the protocol itself (no app)."""
    body = orjson.dumps({"error": {"code": "timeout", "message": message}})
    return (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )


TIMEOUT_RESPONSE = _timeout_response("the request headers took too long")
BODY_TIMEOUT_RESPONSE = _timeout_response("the request body took too long to arrive")


@dataclass
class ConnectionGuard:
    """Open connections per client address and in total (pure bookkeeping, no I/O)."""

    max_connections: int = 4096
    max_connections_per_client: int = 256
    header_timeout_s: float = 10.0
    body_timeout_s: float = 15.0  # for a body refused from its head (the app has its own deadline)
    total: int = 0
    by_client: Counter[str] = field(default_factory=Counter)

    def admit(self, client: str) -> str:
        """Count a new connection from `client`: "" when admitted, else which limit it is over
        (and nothing is counted)."""
        if self.max_connections and self.total >= self.max_connections:
            return "max_connections"
        if self.max_connections_per_client and self.by_client[client] >= self.max_connections_per_client:
            return "max_connections_per_client"
        self.total += 1
        self.by_client[client] += 1
        return ""

    def release(self, client: str) -> None:
        self.total -= 1
        self.by_client[client] -= 1
        if self.by_client[client] <= 0:
            del self.by_client[client]


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the guard's limits; `guard` is set by `guarded_protocol`,
    and `early_shed` (early_shed.py: refusals for load without the app) when the ingress gives one."""

    guard: ConnectionGuard
    early_shed: EarlyShed | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard_client = ""
        self._counted = False
        self._header_timer: asyncio.TimerHandle | None = None
        self._lingering = False
        self._early_answer: bytes | None = None  # a refusal to write once its request's body is in
        self._body_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._guard_client = self.client[0] if self.client else ""
        over = self.guard.admit(self._guard_client)
        if over:
            CLOSED.labels(over).inc()
            transport.abort()
            return
        self._counted = True
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        self._cancel_body_timer()
        if self._counted:
            self._counted = False
            self.guard.release(self._guard_client)
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:
            self._arm_header_timer()  # the next request on a kept-alive connection

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        answer = self._early_refusal()
        if answer is None:
            super().on_headers_complete()
            if self.cycle is not None:
                self.cycle.transport = cast(
                    asyncio.Transport, _AnnouncingTransport(self.transport, self.cycle)
                )
            return
        # Refused for load from its head (early_shed.py): no ASGI cycle; the body is discarded
        # as it comes and the answer written once it is in, within the body deadline.
        self._early_answer = answer
        self._body_timer = self.loop.call_later(self.guard.body_timeout_s, self._body_timeout)

    def _early_refusal(self) -> bytes | None:
        if self.early_shed is None or not self.early_shed.shedding():
            return None
        if self.cycle is not None and not self.cycle.response_complete:
            return None  # a pipelined request: answers must keep their order, the app's path does
        parser = self.parser
        if parser.get_http_version() != "1.1" or not parser.should_keep_alive() or parser.should_upgrade():
            return None
        path = httptools.parse_url(self.url).path
        if b"%" in path:
            return None  # the app decodes it
        return self.early_shed.refusal(
            parser.get_method(), path.decode("ascii"), self.headers, self.server_state.default_headers
        )

    def on_body(self, body: bytes) -> None:
        if self._early_answer is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._early_answer is None:
            super().on_message_complete()
            return
        answer, self._early_answer = self._early_answer, None
        self._cancel_body_timer()
        if self.transport.is_closing():
            return
        self.transport.write(answer)
        self.server_state.total_requests += 1
        # As uvicorn after a response: the connection waits for the next request.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def _body_timeout(self) -> None:
        self._body_timer = None
        if self._early_answer is None or self.transport.is_closing():
            return
        self._early_answer = None
        CLOSED.labels("body_timeout").inc()
        self.transport.write(BODY_TIMEOUT_RESPONSE)
        self.transport.close()

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # the rest of a refused request: discarded, never parsed
        super().data_received(data)

    def on_response_complete(self) -> None:
        if self.cycle is not None and self.cycle.more_body and not self.transport.is_closing():
            # Answered before the body was in (a refusal): no more requests on this connection.
            self._linger()
            return
        super().on_response_complete()

    def _linger(self) -> None:
        self._lingering = True
        self._cancel_header_timer()
        self.flow.resume_reading()
        try:
            self.transport.write_eof()
        except (OSError, NotImplementedError, RuntimeError):
            self.transport.close()
            return
        self.loop.call_later(LINGER_S, self._end_linger)

    def _end_linger(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.guard.header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        CLOSED.labels("header_timeout").inc()
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(TIMEOUT_RESPONSE)
        self.transport.close()


class _AnnouncingTransport:
    """The transport as a request's cycle sees it. A response head written before the request's
    body is in gets `connection: close`: the connection ends after that response (the lingering
    close above), and a client not told so may send its next request into it and see it cut."""

    __slots__ = ("_cycle", "_head_sent", "_transport")

    def __init__(self, transport: asyncio.Transport, cycle: RequestResponseCycle) -> None:
        self._transport = transport
        self._cycle = cycle
        self._head_sent = False

    def write(self, data: bytes) -> None:
        if not self._head_sent and not data.startswith(b"HTTP/1.1 100 "):
            self._head_sent = True
            if self._cycle.more_body and self._cycle.keep_alive and data.endswith(b"\r\n\r\n"):
                data = data[:-2] + b"connection: close\r\n\r\n"
        self._transport.write(data)

    def close(self) -> None:
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()


def guarded_protocol(
    guard: ConnectionGuard, early_shed: EarlyShed | None = None
) -> type[GuardedHttpToolsProtocol]:
    """A protocol class for `uvicorn.run(http=...)` bound to this process's guard (and its
    admission state, to refuse for load without the app)."""
    return type(
        "SwitchyardHttpProtocol", (GuardedHttpToolsProtocol,), {"guard": guard, "early_shed": early_shed}
    )


def guard_from(settings: Any) -> ConnectionGuard:
    return ConnectionGuard(
        max_connections=settings.max_connections,
        max_connections_per_client=settings.max_connections_per_client,
        header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s,
    )
