"""One request in flight through the ingress, and the one loop that reads its reply frames.

Every API comes through here: the HTTP APIs (a JSON answer or an SSE stream, app.py) and gRPC
(grpc_server.py). `open_exchange` publishes the request and waits for its first frame. A request
that does not stream (or that failed before its first frame) ends there with `settle`; a
streamed one is read with `frames` until its final frame, an error or its deadline. Either way
the request is finished exactly once: metrics and the root span's outcome, then its inbox closed
or, when the caller went away first, its upstream call cancelled.

Errors stay GatewayError values inside the process (see client.Frame); only the edge renders
them (an HTTP body in the caller's dialect, a gRPC status, an error frame to a gRPC stream).

`count` is the one place an answered request is counted, with its real outcome: `ok`, the
neutral error code it was answered with, or `cancelled` when the caller went away. Published
requests are counted when they finish; requests refused before they were published (by the
edge, authentication, a malformed body) are counted where the refusal is rendered
(dialects.reject, the app's error handlers, the gRPC interceptor and servicer).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable

from opentelemetry import trace
from prometheus_client import Counter, Histogram

from switchyard import genai, metrics, telemetry
from switchyard.errors import ErrorCode, GatewayError
from switchyard.v1 import invoke_pb2
from switchyard.vocab import Status

from .admission import own_time_ms
from .client import Frame, GatewayClient, ReplyStream

REQUESTS = Counter("switchyard_ingress_requests_total", "Requests by API and outcome", ["api", "status"])
LATENCY = Histogram(
    "switchyard_ingress_latency_seconds",
    "End-to-end latency at the ingress (to the final frame)",
    ["api"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
tracer = telemetry.tracer("switchyard.ingress")
log = logging.getLogger("switchyard.ingress")
SERVICE = "ingress"
# Told of each finished request: (the gateway's own ms, time.monotonic()); admission.py learns
# the gateway's load from it.
Observer = Callable[[float, float], None]


def count(api: str, status: str) -> None:
    """One answered request: `status` is "ok", "cancelled" or the error code it was answered
    with. Both request families move together, and an error also moves the error family."""
    REQUESTS.labels(api, status).inc()
    metrics.REQUESTS.labels(SERVICE, status).inc()
    if status != Status.OK:
        metrics.ERRORS.labels(SERVICE, status).inc()


class Exchange:
    """One published request: its reply frames, root span and clock."""

    def __init__(
        self,
        request: invoke_pb2.InvokeRequest,
        span: trace.Span,
        client: GatewayClient,
        replies: ReplyStream,
        observe: Observer | None = None,
    ) -> None:
        self.request = request
        self.observe = observe
        self.span = span
        self.client = client
        self.replies = replies
        self.started = time.perf_counter()
        self.first: Frame = invoke_pb2.Reply()  # set by open_exchange
        self.finished = False
        self.unpublished = False  # refused before it reached the bus: no service will record it
        metrics.IN_FLIGHT.labels(SERVICE).inc()

    def settle(self) -> invoke_pb2.InvokeResponse | GatewayError:
        """End the request on its first frame: the answer of a request that does not stream,
        or the error that ended a request before it sent anything."""
        first = self.first
        self.client.close(self.request.request_id)
        if isinstance(first, GatewayError):
            self.finish(first.code)
            return first
        self.finish(Status.OK, first.final)
        return first.final

    async def frames(self) -> AsyncGenerator[Frame, None]:
        """The frames from the first on, ending with the final frame or an error (a passed
        deadline is a `timeout` error). The request is finished when its last frame is read;
        a consumer that stops before that (the client went away) cancels the upstream call.
        Iterate inside `contextlib.aclosing`, so that happens at once."""
        frame = self.first
        outcome: str = Status.CANCELLED  # how an unfinished request ends: the consumer stopped
        try:
            while True:
                if isinstance(frame, GatewayError):
                    self.finish(frame.code)
                elif frame.WhichOneof("frame") == "final":
                    self.finish(Status.OK, frame.final)
                yield frame
                if self.finished:
                    return
                frame = await self.replies.next()
        except Exception:
            outcome = ErrorCode.INTERNAL  # our failure, not the caller's going away
            raise
        finally:
            if self.finished:
                self.client.close(self.request.request_id)
            else:
                self.finish(outcome)
                await self.client.cancel(self.request.request_id)

    def finish(self, status: str, final: invoke_pb2.InvokeResponse | None = None) -> None:
        """Metrics and the root span's outcome, once per request (later calls do nothing)."""
        if self.finished:
            return
        self.finished = True
        elapsed = time.perf_counter() - self.started
        if self.observe is not None:
            if final is not None:  # the gateway's own time: without the upstream calls
                attempts = ((a.started_unix_ms, a.latency_ms) for a in final.attempts)
                self.observe(own_time_ms(elapsed * 1000, attempts), time.monotonic())
            elif status == ErrorCode.TIMEOUT:  # a passed deadline: all of it counts as overload
                self.observe(elapsed * 1000, time.monotonic())
        count(self.request.api, status)
        metrics.IN_FLIGHT.labels(SERVICE).dec()
        metrics.DURATION.labels(SERVICE).observe(elapsed)
        if final is not None:
            LATENCY.labels(self.request.api).observe(elapsed)
            self.span.set_attributes(genai.response_attributes(final))
        else:
            self.span.set_attribute("error.type", status)
            self.span.set_status(trace.StatusCode.ERROR, status)
        self.span.end()


async def open_exchange(
    client: GatewayClient,
    request: invoke_pb2.InvokeRequest,
    timeout_s: float,
    observe: Observer | None = None,
) -> Exchange:
    """Publish the request and wait for its first frame (a chunk, the final answer or an
    error). The request's root span starts here and its context rides the NATS headers, so the
    router, the worker and the ledger continue one trace. A caller that goes away while this
    waits (an HTTP client disconnecting, a gRPC call cancelled or past its deadline) cancels
    the upstream call. A request that cannot be sent (the bus refuses it) becomes an error
    frame like any other, so it is answered in its caller's dialect with its request id and
    counted once as what it is, not as a caller who went away."""
    span = tracer.start_span(
        genai.span_name(request.model),
        kind=trace.SpanKind.SERVER,
        attributes={**genai.request_attributes(request), "switchyard.api": request.api},
    )
    exchange = Exchange(request, span, client, client.expect(request.request_id, timeout_s), observe)
    try:
        try:
            with trace.use_span(span, end_on_exit=False):
                await client.publish(request)
        except GatewayError as error:  # too large for the bus: answered like any error frame
            exchange.first, exchange.unpublished = error, True
            return exchange
        exchange.first = await exchange.replies.next()
    except GatewayError as error:
        exchange.first = error
    except Exception:
        log.exception("request %s could not be sent", request.request_id)
        exchange.first = GatewayError(ErrorCode.INTERNAL, "internal error: the request could not be sent")
        with contextlib.suppress(Exception):
            await client.cancel(request.request_id)  # in case it went out before the failure
    except BaseException:
        exchange.finish(Status.CANCELLED)
        await client.cancel(request.request_id)
        raise
    return exchange
