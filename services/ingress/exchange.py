"""One request in flight through the ingress, and the one loop that reads its reply frames.

Every API comes through here: the HTTP APIs (a JSON answer or an SSE stream, app.py) and gRPC
(grpc_server.py). `open_exchange` publishes the request and waits for its first frame. A request
that does not stream (or that failed before its first frame) ends there with `settle`; a
streamed one is read with `frames` until its final frame, an error or its deadline. Either way
the request is finished exactly once: metrics and the root span's outcome, then its inbox closed
or, when the caller went away first, its upstream call cancelled.

Errors stay GatewayError values inside the process (see client.Frame); only the edge renders
them (an HTTP body in the caller's dialect, a gRPC status, an error frame to a gRPC stream).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator

from opentelemetry import trace
from prometheus_client import Counter, Histogram

from switchyard import genai, metrics, telemetry
from switchyard.errors import GatewayError
from switchyard.v1 import invoke_pb2
from switchyard.vocab import Status

from .client import Frame, GatewayClient, ReplyStream

REQUESTS = Counter("switchyard_ingress_requests_total", "Requests by API and outcome", ["api", "status"])
LATENCY = Histogram(
    "switchyard_ingress_latency_seconds",
    "End-to-end latency at the ingress (to the final frame)",
    ["api"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
tracer = telemetry.tracer("switchyard.ingress")
SERVICE = "ingress"


class Exchange:
    """One published request: its reply frames, root span and clock."""

    def __init__(
        self, request: invoke_pb2.InvokeRequest, span: trace.Span, client: GatewayClient, replies: ReplyStream
    ) -> None:
        self.request = request
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
        finally:
            if self.finished:
                self.client.close(self.request.request_id)
            else:
                self.finish(Status.CANCELLED)
                await self.client.cancel(self.request.request_id)

    def finish(self, status: str, final: invoke_pb2.InvokeResponse | None = None) -> None:
        """Metrics and the root span's outcome, once per request (later calls do nothing)."""
        if self.finished:
            return
        self.finished = True
        elapsed = time.perf_counter() - self.started
        REQUESTS.labels(self.request.api, status).inc()
        metrics.IN_FLIGHT.labels(SERVICE).dec()
        metrics.REQUESTS.labels(SERVICE, status).inc()
        metrics.DURATION.labels(SERVICE).observe(elapsed)
        if final is not None:
            LATENCY.labels(self.request.api).observe(elapsed)
            self.span.set_attributes(genai.response_attributes(final))
        else:
            metrics.ERRORS.labels(SERVICE, status).inc()
            self.span.set_attribute("error.type", status)
            self.span.set_status(trace.StatusCode.ERROR, status)
        self.span.end()


async def open_exchange(
    client: GatewayClient, request: invoke_pb2.InvokeRequest, timeout_s: float
) -> Exchange:
    """Publish the request and wait for its first frame (a chunk, the final answer or an
    error). The request's root span starts here and its context rides the NATS headers, so the
    router, the worker and the ledger continue one trace. A caller that goes away while this
    waits (an HTTP client disconnecting, a gRPC call cancelled or past its deadline) cancels
    the upstream call."""
    span = tracer.start_span(
        genai.span_name(request.model),
        kind=trace.SpanKind.SERVER,
        attributes={**genai.request_attributes(request), "switchyard.api": request.api},
    )
    exchange = Exchange(request, span, client, client.expect(request.request_id, timeout_s))
    try:
        try:
            with trace.use_span(span, end_on_exit=False):
                await client.publish(request)
        except GatewayError as error:  # too large for the bus: answered like any error frame
            exchange.first, exchange.unpublished = error, True
            return exchange
        exchange.first = await exchange.replies.next()
    except BaseException:
        exchange.finish(Status.CANCELLED)
        await client.cancel(request.request_id)
        raise
    return exchange
