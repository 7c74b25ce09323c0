"""The ingress HTTP app (Starlette): thin I/O around the native API's pure translation.

No routing or provider logic lives here: a request is validated, stamped with its ids and
deadline, published on `llm.invoke`, and its reply frames relayed as JSON or SSE.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from nats.nuid import NUID
from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from switchyard import bus, genai, metrics, subjects, telemetry
from switchyard.errors import GatewayError
from switchyard.service import load_service_catalog
from switchyard.settings import Settings
from switchyard.tenancy import ANONYMOUS, Identity
from switchyard.tenancy_store import load_or_create_admin_token
from switchyard.v1 import invoke_pb2

from . import admin, anthropic_api, auth, hints, native, openai_api
from .client import GatewayClient, ReplyStream
from .dialects import (
    ANTHROPIC,
    NATIVE,
    OPENAI,
    Dialect,
    dialect_for_path,
    error_headers,
    request_id_headers,
)
from .edge import EdgeMiddleware, Overload, limits_from, poll_ledger_lag
from .openapi import openapi_document

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


# Renders one reply frame of a streamed request as SSE bytes; one instance per request.
Streamer = Callable[[invoke_pb2.Reply], list[bytes]]


def error_response(error: GatewayError, request_id: str = "", dialect: Dialect = NATIVE) -> JSONResponse:
    status, body = dialect.error_body(error, request_id)
    return JSONResponse(body, status_code=status, headers=error_headers(error, request_id, dialect))


def new_request_id() -> str:
    return "req_" + _nuid.next().decode()


@dataclass
class Exchange:
    """One request in flight through the ingress: its reply frames, root span and clock."""

    request: invoke_pb2.InvokeRequest
    span: trace.Span
    started: float = field(default_factory=time.perf_counter)
    first: invoke_pb2.Reply = field(default_factory=invoke_pb2.Reply)
    replies: ReplyStream | None = None
    finished: bool = False

    def __post_init__(self) -> None:
        metrics.IN_FLIGHT.labels(SERVICE).inc()

    async def next(self) -> invoke_pb2.Reply:
        """The next frame; a failure to get one (timeout, lost worker) becomes an error frame."""
        assert self.replies is not None
        try:
            return await self.replies.next()
        except GatewayError as error:
            return invoke_pb2.Reply(error=error.to_proto(self.request.request_id))

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


class Ingress:
    """Holds the bus connection and the handlers; `app` is the Starlette application."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client: GatewayClient | None = None
        # Read for GET /v1/models only: the ingress lists names, the router resolves them.
        self.catalog = load_service_catalog(settings)
        self.ready = False
        self.draining = False
        self.overload = Overload()
        self.auth = auth.Authenticator(settings)
        self.admin_token = ""
        self.admin = admin.AdminApi(lambda: self.admin_token, self.auth.view)
        self.app = Starlette(
            # Edge limits first (they need no identity), then API-key authentication.
            middleware=[
                Middleware(EdgeMiddleware, limits=limits_from(settings), overload=self.overload),
                Middleware(auth.AuthMiddleware, authenticator=self.auth),
            ],
            routes=[
                Route("/llm.invoke", self.invoke, methods=["POST"]),
                Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
                Route("/v1/messages", self.messages, methods=["POST"]),
                Route("/v1/models", self.list_models, methods=["GET"]),
                Route("/v1/models/{model:path}", self.get_model, methods=["GET"]),
                Route("/v1/requests/{request_id}", self.get_request, methods=["GET"]),
                Route("/openapi.json", self.openapi, methods=["GET"]),
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/readyz", self.readyz, methods=["GET"]),
                Route("/metrics", self.metrics, methods=["GET"]),
                *self.admin.routes(),
            ],
            lifespan=self.lifespan,
            exception_handlers={
                GatewayError: self._on_gateway_error,
                HTTPException: self._on_http_exception,
                Exception: self._on_exception,
            },
        )

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        nc = await bus.connect(
            self.settings.nats_url,
            "switchyard-ingress",
            self.settings.nats_credentials,
            self.settings.nats_tls_ca_file,
        )
        self.client = GatewayClient(nc)
        await self.client.start()
        await self.auth.start(nc)
        assert self.auth.watcher is not None
        self.admin.bind(nc, self.auth.watcher.kv)
        self.admin_token = load_or_create_admin_token(
            self.settings.configured_admin_token, self.settings.data_dir
        )
        lag_poller = asyncio.create_task(
            poll_ledger_lag(nc.jetstream(), self.overload, subjects.EVENTS_STREAM, subjects.LEDGER_DURABLE)
        )
        grpc = None
        if self.settings.grpc_port:
            from .grpc_server import start_grpc_server

            grpc = await start_grpc_server(self, self.settings.host, self.settings.grpc_port)
        self.ready = True
        try:
            yield
        finally:
            lag_poller.cancel()
            self.draining = True
            if grpc is not None:
                await grpc.stop(self.settings.drain_timeout_s)
            await self.auth.stop()
            with contextlib.suppress(Exception):
                await nc.drain()

    async def _on_gateway_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return error_response(exc, dialect=dialect_for_path(request.url.path))

    async def _on_http_exception(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
        error = GatewayError(code, f"{request.method} {request.url.path}: {exc.detail}")
        return error_response(error, dialect=dialect_for_path(request.url.path))

    async def _on_exception(self, request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        return error_response(
            GatewayError("internal", "internal error"), dialect=dialect_for_path(request.url.path)
        )

    def admit(
        self, request: invoke_pb2.InvokeRequest, headers: Mapping[str, str]
    ) -> invoke_pb2.InvokeRequest:
        """Every API's requests pass here, with their headers (or gRPC metadata, lowercase):
        the caller's identity, routing hints from the headers, then ids and deadline."""
        hints.apply_hints(request, hints.hints_from_headers(headers))
        return self.stamp(request, self.identity(headers))

    def identity(self, headers: Mapping[str, str]) -> Identity:
        """Who is calling. HTTP requests were authenticated by AuthMiddleware; gRPC calls (no
        middleware) present their key in metadata and are checked here the same way."""
        identity = auth.current_identity.get()
        if identity is None:
            identity = self.auth.identify(headers.get("authorization"), headers.get("x-api-key"))
        return identity

    def stamp(
        self, request: invoke_pb2.InvokeRequest, identity: Identity = ANONYMOUS
    ) -> invoke_pb2.InvokeRequest:
        """Ids, identity and deadline, set here and only here (never taken from the client)."""
        if identity is ANONYMOUS and self.settings.auth_required:
            raise GatewayError("unauthorized", "missing API key")
        now_ns = time.time_ns()
        request.request_id = new_request_id()
        request.received_unix_ns = now_ns
        request.deadline_unix_ms = now_ns // 1_000_000 + int(self.settings.request_timeout_s * 1000)
        request.project_id = identity.project_id
        request.agent_id = identity.agent_id
        request.key_id = identity.key_id
        return request

    async def invoke(self, http: Request) -> Response:
        body = native.parse_body(await http.body(), self.settings.max_json_depth)
        request = self.admit(native.to_request(body, api="native"), http.headers)
        return await self.relay(request, NATIVE, native_stream)

    async def chat_completions(self, http: Request) -> Response:
        body = openai_api.parse_body(await http.body(), self.settings.max_json_depth)
        request = self.admit(openai_api.to_request(body), http.headers)
        return await self.relay(request, OPENAI, openai_api.ChunkStream(request, body.include_usage))

    async def messages(self, http: Request) -> Response:
        body = anthropic_api.parse_body(await http.body(), self.settings.max_json_depth)
        request = self.admit(anthropic_api.to_request(body), http.headers)
        return await self.relay(request, ANTHROPIC, anthropic_api.EventStream(request))

    async def list_models(self, http: Request) -> Response:
        # Anthropic's SDKs list models at the same path; they always send anthropic-version.
        if "anthropic-version" in http.headers:
            return JSONResponse(anthropic_api.models_json(self.catalog))
        return JSONResponse(openai_api.models_json(self.catalog))

    async def get_model(self, http: Request) -> Response:
        name = http.path_params["model"]
        anthropic = "anthropic-version" in http.headers
        if name not in self.catalog.model_names():
            error = GatewayError("model_not_found", f"unknown model {name!r}", param="model")
            return error_response(error, dialect=ANTHROPIC if anthropic else OPENAI)
        if anthropic:
            return JSONResponse(anthropic_api.model_json(name))
        return JSONResponse(openai_api.model_json(self.catalog, name))

    async def openapi(self, http: Request) -> Response:
        return JSONResponse(openapi_document())

    async def open(self, request: invoke_pb2.InvokeRequest) -> Exchange:
        """Publish the request and wait for its first frame (a chunk, the final answer or an
        error). The request's root span starts here and its context rides the NATS headers,
        so the router, the worker and the ledger continue one trace. The caller closes the
        request with `client.close` or `client.cancel`, and ends the exchange with `finish`."""
        assert self.client is not None
        span = tracer.start_span(
            genai.span_name(request.model),
            kind=trace.SpanKind.SERVER,
            attributes={**genai.request_attributes(request), "switchyard.api": request.api},
        )
        exchange = Exchange(request, span)
        try:
            with trace.use_span(span, end_on_exit=False):
                replies = await self.client.open(request, self.settings.request_timeout_s)
            exchange.replies = replies
            try:
                exchange.first = await replies.next()
            except GatewayError as error:
                exchange.first = invoke_pb2.Reply(error=error.to_proto(request.request_id))
        except BaseException:
            exchange.finish("cancelled")  # the caller went away while we waited
            raise
        return exchange

    def count(self, request: invoke_pb2.InvokeRequest, status: str) -> None:
        """A request refused before it was published (no exchange, no span)."""
        REQUESTS.labels(request.api, status).inc()

    async def relay(
        self, request: invoke_pb2.InvokeRequest, dialect: Dialect, streamer: Streamer
    ) -> Response:
        """Publish, then answer with the final frame (JSON) or stream the frames (SSE), in the
        caller's API dialect. All HTTP APIs share this path. A streamed request's span ends
        with the stream."""
        assert self.client is not None
        exchange = await self.open(request)
        first = exchange.first
        kind = first.WhichOneof("frame")
        if kind == "error":
            self.client.close(request.request_id)
            exchange.finish(first.error.code)
            return error_response(GatewayError.from_proto(first.error), request.request_id, dialect)
        if not request.stream:
            self.client.close(request.request_id)
            exchange.finish("ok", first.final)
            return JSONResponse(
                dialect.final_json(request, first.final),
                headers=request_id_headers(request.request_id, dialect),
            )
        return StreamingResponse(
            self._stream(exchange, streamer),
            media_type="text/event-stream",
            headers={
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
                **request_id_headers(request.request_id, dialect),
            },
        )

    async def _stream(self, exchange: Exchange, streamer: Streamer) -> AsyncIterator[bytes]:
        assert self.client is not None
        request = exchange.request
        finished = False
        try:
            frame = exchange.first
            while True:
                for out in streamer(frame):
                    yield out
                if frame.WhichOneof("frame") != "chunk":
                    finished = True
                    if frame.WhichOneof("frame") == "final":
                        exchange.finish("ok", frame.final)
                    else:
                        exchange.finish(frame.error.code)
                    return
                frame = await exchange.next()
        finally:
            if finished:
                self.client.close(request.request_id)
            else:  # the client went away mid-stream: stop the upstream call
                exchange.finish("cancelled")
                await self.client.cancel(request.request_id)

    async def get_request(self, http: Request) -> Response:
        """One request's ledger row (rationale, attempts, tokens, cost), read via the ledger.
        Only the caller's own project's rows: another project's request answers 404, exactly
        as an unknown id does, so a key cannot even learn that the id exists."""
        assert self.client is not None
        request_id = http.path_params["request_id"]
        project_id = self.identity(http.headers).project_id
        try:
            reply = await self.client.nc.request(
                subjects.LEDGER_QUERY,
                orjson.dumps(
                    {
                        "sql": "SELECT * FROM requests FINAL "
                        "WHERE request_id = {id:String} AND project_id = {project:String}",
                        "params": {"id": request_id, "project": project_id},
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
        for column in ("attempts", "rationale"):
            row[column] = orjson.loads(row[column] or "null")
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
