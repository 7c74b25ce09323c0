"""The ingress HTTP app (Starlette): thin I/O around the native API's pure translation.

No routing or provider logic lives here: a request is validated, stamped with its ids and
deadline, published on `llm.invoke`, and its reply frames relayed as JSON or SSE.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from nats.nuid import NUID
from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from switchyard import bus, genai, metrics, subjects, telemetry
from switchyard.errors import GatewayError
from switchyard.settings import Settings
from switchyard.v1 import invoke_pb2

from . import native
from .client import GatewayClient, ReplyStream

log = logging.getLogger("switchyard.ingress")

REQUESTS = Counter("switchyard_ingress_requests_total", "Requests by API and outcome", ["api", "status"])
LATENCY = Histogram(
    "switchyard_ingress_latency_seconds",
    "End-to-end latency at the ingress (to the final frame)",
    ["api"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
_nuid = NUID()
tracer = telemetry.tracer("switchyard.ingress")
SERVICE = "ingress"


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(error: GatewayError, request_id: str = "") -> JSONResponse:
    headers = {}
    if error.retry_after_s:
        headers["Retry-After"] = str(max(1, round(error.retry_after_s)))
    return JSONResponse(
        native.error_json(error.code, error.message, request_id, error.param),
        status_code=error.http_status,
        headers=headers,
    )


def new_request_id() -> str:
    return "req_" + _nuid.next().decode()


class Ingress:
    """Holds the bus connection and the handlers; `app` is the Starlette application."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client: GatewayClient | None = None
        self.ready = False
        self.draining = False
        self.app = Starlette(
            routes=[
                Route("/llm.invoke", self.invoke, methods=["POST"]),
                Route("/v1/requests/{request_id}", self.get_request, methods=["GET"]),
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/readyz", self.readyz, methods=["GET"]),
                Route("/metrics", self.metrics, methods=["GET"]),
            ],
            lifespan=self.lifespan,
            exception_handlers={
                GatewayError: self._on_gateway_error,
                Exception: self._on_exception,
            },
        )

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        nc = await bus.connect(self.settings.nats_url, "switchyard-ingress")
        self.client = GatewayClient(nc)
        await self.client.start()
        self.ready = True
        try:
            yield
        finally:
            self.draining = True
            with contextlib.suppress(Exception):
                await nc.drain()

    async def _on_gateway_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return error_response(exc)

    async def _on_exception(self, request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        return error_response(GatewayError("internal", "internal error"))

    def stamp(self, request: invoke_pb2.InvokeRequest) -> invoke_pb2.InvokeRequest:
        """Ids and deadline, set here and only here (never taken from the client)."""
        now_ns = time.time_ns()
        request.request_id = new_request_id()
        request.received_unix_ns = now_ns
        request.deadline_unix_ms = now_ns // 1_000_000 + int(self.settings.request_timeout_s * 1000)
        request.project_id = request.project_id or "default"
        return request

    async def invoke(self, http: Request) -> Response:
        body = native.parse_body(await http.body())
        request = self.stamp(native.to_request(body, api="native"))
        return await self.relay(request, native_stream)

    async def relay(self, request: invoke_pb2.InvokeRequest, streamer) -> Response:
        """Publish, then answer with the final frame (JSON) or stream the frames (SSE).

        The request's root span starts here and its context rides the NATS headers, so the
        router, the worker and the ledger continue one trace. A streamed request's span ends
        with the stream.
        """
        assert self.client is not None
        started = time.perf_counter()
        span = tracer.start_span(
            genai.span_name(request.model),
            kind=trace.SpanKind.SERVER,
            attributes={**genai.request_attributes(request), "switchyard.api": request.api},
        )
        metrics.IN_FLIGHT.labels(SERVICE).inc()
        with trace.use_span(span, end_on_exit=False):
            replies = await self.client.open(request, self.settings.request_timeout_s)
        try:
            first = await replies.next()
        except GatewayError as error:
            self.client.close(request.request_id)
            self._finish(request, span, started, error.code)
            return error_response(error, request.request_id)
        kind = first.WhichOneof("frame")
        if kind == "error":
            self.client.close(request.request_id)
            self._finish(request, span, started, first.error.code)
            return error_response(GatewayError.from_proto(first.error), request.request_id)
        if not request.stream:
            self.client.close(request.request_id)
            self._finish(request, span, started, "ok", first.final)
            return JSONResponse(native.response_json(first.final))
        return StreamingResponse(
            self._stream(request, first, replies, streamer, started, span),
            media_type="text/event-stream",
            headers={
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
                "X-Request-Id": request.request_id,
            },
        )

    def _finish(
        self,
        request: invoke_pb2.InvokeRequest,
        span: trace.Span,
        started: float,
        status: str,
        final: invoke_pb2.InvokeResponse | None = None,
    ) -> None:
        """Metrics and the root span's outcome, once per request."""
        elapsed = time.perf_counter() - started
        REQUESTS.labels(request.api, status).inc()
        metrics.IN_FLIGHT.labels(SERVICE).dec()
        metrics.REQUESTS.labels(SERVICE, status).inc()
        metrics.DURATION.labels(SERVICE).observe(elapsed)
        if final is not None:
            LATENCY.labels(request.api).observe(elapsed)
            span.set_attributes(genai.response_attributes(final))
        else:
            metrics.ERRORS.labels(SERVICE, status).inc()
            span.set_attribute("error.type", status)
            span.set_status(trace.StatusCode.ERROR, status)
        span.end()

    async def _stream(
        self, request, first, replies: ReplyStream, streamer, started: float, span: trace.Span
    ) -> AsyncIterator[bytes]:
        assert self.client is not None
        finished = False
        try:
            frame = first
            while True:
                for out in streamer(frame):
                    yield out
                if frame.WhichOneof("frame") != "chunk":
                    finished = True
                    if frame.WhichOneof("frame") == "final":
                        self._finish(request, span, started, "ok", frame.final)
                    else:
                        self._finish(request, span, started, frame.error.code)
                    return
                try:
                    frame = await replies.next()
                except GatewayError as error:
                    frame = invoke_pb2.Reply(error=error.to_proto(request.request_id))
        finally:
            if finished:
                self.client.close(request.request_id)
            else:  # the client went away mid-stream: stop the upstream call
                self._finish(request, span, started, "cancelled")
                await self.client.cancel(request.request_id)

    async def get_request(self, http: Request) -> Response:
        """One request's ledger row (rationale, attempts, tokens, cost), read via the ledger."""
        assert self.client is not None
        request_id = http.path_params["request_id"]
        try:
            reply = await self.client.nc.request(
                subjects.LEDGER_QUERY,
                orjson.dumps(
                    {
                        "sql": "SELECT * FROM requests FINAL WHERE request_id = {id:String}",
                        "params": {"id": request_id},
                    }
                ),
                timeout=5,
            )
        except Exception:
            raise GatewayError("unavailable", "the ledger did not answer", retry_after_s=1) from None
        result = orjson.loads(reply.data)
        if "error" in result:
            raise GatewayError("internal", f"ledger query failed: {result['error']}")
        if not result["rows"]:
            raise GatewayError("not_found", f"no ledger row for {request_id} (yet)")
        row = dict(zip(result["columns"], result["rows"][0], strict=True))
        for field in ("attempts", "rationale"):
            row[field] = orjson.loads(row[field] or "null")
        return JSONResponse(row)

    async def healthz(self, http: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, http: Request) -> Response:
        ready = self.ready and not self.draining
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    async def metrics(self, http: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def native_stream(frame: invoke_pb2.Reply) -> list[bytes]:
    """SSE events of the native API: `chunk` events, then one `final` or `error` event."""
    kind = frame.WhichOneof("frame")
    if kind == "chunk":
        return [native.sse("chunk", native.chunk_json(frame.chunk))]
    if kind == "final":
        return [native.sse("final", native.response_json(frame.final))]
    err = frame.error
    return [native.sse("error", native.error_json(err.code, err.message, err.request_id))]
