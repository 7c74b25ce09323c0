"""The ingress HTTP app (Starlette): thin I/O around the APIs' pure translations.

No routing or provider logic lives here: a request is parsed by its API (dialects.HTTP_APIS,
registered in one loop), stamped with its ids and deadline, published on `llm.invoke`, and its
reply frames relayed as JSON or SSE in the caller's dialect (exchange.py reads them).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from switchyard import bus, subjects, telemetry
from switchyard.completions import completion_event
from switchyard.errors import ErrorCode, GatewayError
from switchyard.inproc import LocalInbox
from switchyard.lifecycle import started
from switchyard.service import load_service_catalog
from switchyard.settings import Settings
from switchyard.tenancy import ANONYMOUS, Identity
from switchyard.tenancy_store import load_or_create_admin_token
from switchyard.v1 import invoke_pb2, ledger_pb2
from switchyard.vocab import Status

from . import admin, anthropic_api, auth, hints, openai_api, usage
from .admission import AdaptiveLimit, admission_tuning
from .api_kit import HttpApi, Parsed, StreamRenderer
from .client import GatewayClient
from .dialects import (
    ANTHROPIC,
    HTTP_APIS,
    NATIVE,
    OPENAI,
    RESPONSES,
    count_refusal,
    dialect_for_path,
    error_headers,
    new_request_id,
    request_id_headers,
)
from .edge import (
    AdmissionMiddleware,
    ASGIApp,
    EdgeMiddleware,
    Message,
    Overload,
    Receive,
    Scope,
    Send,
    limits_from,
    poll_ledger_lag,
)
from .exchange import Exchange, count, open_exchange
from .ledger_row import request_row_json
from .openapi import openapi_document
from .responses_http import ResponsesEndpoints

if TYPE_CHECKING:
    from .colocated import LocalRouter, LocalWorker

log = logging.getLogger("switchyard.ingress")
# What a stopping ingress answers the requests it still holds when its drain time is over:
# retryable, so the client's retry reaches another ingress (its upstream call is cancelled).
DRAIN_REFUSAL = GatewayError(
    ErrorCode.UNAVAILABLE, "the gateway is restarting; retry the request", retry_after_s=1.0
)


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(error: GatewayError, request_id: str = "", dialect: HttpApi = NATIVE) -> JSONResponse:
    status, body = dialect.render_error(error, request_id)
    return JSONResponse(body, status_code=status, headers=error_headers(error, request_id, dialect))


Relay = Callable[[HttpApi, Parsed], Awaitable[Response]]


class IngressApp(Starlette):
    """Starlette, except that the APIs' POSTs go straight to `hot` (Ingress._serve_hot: the
    same edge chain, then the API): a route lookup among ~30 routes, a Request, and three
    exception layers per request bought nothing on the path every model call takes. Every other
    path and method (probes, reads, admin, a 405 or 404) is Starlette's as before."""

    def __init__(self, hot_paths: frozenset[str], hot: ASGIApp, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hot_paths = hot_paths
        self.hot = hot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self.hot_paths:
            await self.hot(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class Ingress:
    """Holds the bus connection and the handlers; `app` is the Starlette application."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: GatewayClient | None = None
        self._reports: set[asyncio.Future[None]] = set()  # refusals being reported (record_refusal)
        # Read for GET /v1/models only: the ingress lists names, the router resolves them.
        self.catalog = load_service_catalog(settings)
        # SWITCHYARD_ROUTER_MODE=ingress: this process routes its own requests; with
        # SWITCHYARD_WORKER_MODE=ingress it also calls the providers (colocated.py). Imported
        # only then: an ingress in the default mode loads no router or worker code (nor metrics).
        self.router: LocalRouter | None = None
        self.worker: LocalWorker | None = None
        self._inbox = LocalInbox()  # frames from the router and worker here (switchyard/inproc.py)
        if settings.worker_mode == "ingress":
            from .colocated import LocalWorker

            self.worker = LocalWorker(settings, self.catalog, self._inbox)
        if settings.router_mode == "ingress":
            from .colocated import LocalRouter

            self.router = LocalRouter(settings, self.catalog, self._inbox)
        self.ready = False
        self.draining = False
        self._drain_task: asyncio.Task[None] | None = None
        self.limits = limits_from(settings)
        # The adaptive concurrency limit (admission.py), on unless configured off.
        self.overload = Overload(
            AdaptiveLimit(admission_tuning(settings)) if settings.admission_adaptive else None
        )
        self.auth = auth.Authenticator(settings)
        self.admin_token = ""
        self.admin = admin.AdminApi(lambda: self.admin_token, self.auth.view)
        self.admin.read_usage = lambda project, period: usage.read_usage(
            self.client.nc, self.settings, project, period
        )
        self.responses = ResponsesEndpoints(self, RESPONSES)  # stored responses (KV)
        # The APIs' POSTs (the hot path) and what relays each (the Responses API keeps state
        # between requests, responses_http.py): they pass the same edge chain as every other
        # route, then `_serve_api`, without Starlette's router and exception layers.
        self._apis: dict[str, tuple[HttpApi, Relay]] = {
            api.path: (api, self.responses.relay if api is RESPONSES else self.relay) for api in HTTP_APIS
        }
        self._hot_chain = self._edge_chain(self._serve_api)
        self.app = IngressApp(
            frozenset(self._apis),
            self._serve_hot,
            middleware=[Middleware(self._edge_chain)],
            routes=[
                *(Route(api.path, self._endpoint(api), methods=["POST"], name=api.name) for api in HTTP_APIS),
                Route("/v1/models", self.list_models, methods=["GET"]),
                Route("/v1/models/{model:path}", self.get_model, methods=["GET"]),
                Route("/v1/requests/{request_id}", self.get_request, methods=["GET"]),
                Route("/v1/usage", self.get_usage, methods=["GET"]),
                Route("/openapi.json", self.openapi, methods=["GET"]),
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/readyz", self.readyz, methods=["GET"]),
                Route("/metrics", self.metrics, methods=["GET"]),
                *self.responses.routes(),
                *self.admin.routes(),
            ],
            lifespan=self.lifespan,
            exception_handlers={
                GatewayError: self._on_gateway_error,
                HTTPException: self._on_http_exception,
                Exception: self._on_exception,
            },
        )

    def _edge_chain(self, app: ASGIApp) -> ASGIApp:
        """The edge's pure-ASGI layers around `app`: header limits first (they need no
        identity), then API-key authentication, and only then the body and admission, so no
        slot is held by a client that has not authenticated or has not finished sending (edge.py)."""
        admission = AdmissionMiddleware(
            app, limits=self.limits, overload=self.overload, on_too_large=self._body_too_large
        )
        authenticated = auth.AuthMiddleware(
            admission, authenticator=self.auth, admin_token=lambda: self.admin_token
        )
        return EdgeMiddleware(authenticated, limits=self.limits)

    async def _serve_hot(self, scope: Scope, receive: Receive, send: Send) -> None:
        """An API's POST: the edge chain, then `_serve_api`, inside the error boundary that
        Starlette's ServerErrorMiddleware was on the other routes: an unhandled error before
        the answer started is a 500 in the caller's dialect (`_internal_error`), then re-raised
        so that the server logs its traceback, once."""
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self._hot_chain(scope, receive, watched)
        except Exception as exc:
            if not started:
                await self._internal_error(scope["path"], exc)(scope, receive, send)
            raise

    async def _serve_api(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One API's POST once the edge admitted it: parse, admit, relay, as `_endpoint` does
        through Starlette's router and Request on the other routes. A GatewayError is answered
        as `_on_gateway_error` answers it there."""
        path = scope["path"]
        try:
            body = await _whole_body(receive)
            if body is None:  # the client went away before its body was in: nobody to answer
                return
            response = await self._answer(self._apis[path][0], body, Headers(scope=scope))
        except GatewayError as error:
            count_refusal(path, error)
            response = error_response(error, new_request_id(), dialect_for_path(path))
        await response(scope, receive, send)

    def begin_drain(self) -> None:
        """SIGTERM: report not ready at once, answer what is held for `ingress_drain` seconds
        (the request deadline by default, so nothing is cut), then refuse the rest cleanly."""
        self.draining = True
        self._drain_task = asyncio.get_running_loop().create_task(self._refuse_after_drain())

    async def _refuse_after_drain(self) -> None:
        await asyncio.sleep(self.settings.ingress_drain)
        if self._client is None:
            return
        refused = await self._client.refuse_all(DRAIN_REFUSAL)
        if refused:
            log.warning("drain time over: %d request(s) refused with 503", refused)

    @property
    def client(self) -> GatewayClient:
        """The bus client the lifespan made (NotStartedError before then)."""
        return started(self._client, "the ingress's bus client")

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        nc = await bus.connect(
            self.settings.nats_url,
            "switchyard-ingress",
            self.settings.nats_credentials,
            self.settings.nats_tls_ca_file,
        )
        if self.worker is not None:
            await self.worker.start()
        if self.router is not None:
            await self.router.start(self.worker)
        self._client = GatewayClient(nc, self.router.hand_over if self.router else None, self._inbox)
        await self.client.start()
        if nc.max_payload < 2 * self.settings.max_body_bytes:
            log.warning(
                "the NATS server carries messages of up to %d bytes, less than twice "
                "SWITCHYARD_MAX_BODY_BYTES (%d): bodies near the limit will be refused with 413 "
                "(set max_payload in the server's config, docs/architecture.md)",
                nc.max_payload,
                self.settings.max_body_bytes,
            )

        await self.auth.start(nc)
        self.admin.bind(nc, started(self.auth.watcher, "the tenancy watcher").kv)
        await self.responses.start(nc)
        self.admin_token = load_or_create_admin_token(
            self.settings.configured_admin_token, self.settings.data_dir
        )
        lag_poller = asyncio.create_task(
            poll_ledger_lag(
                nc.jetstream(),
                self.overload,
                subjects.EVENTS_STREAM,
                subjects.LEDGER_DURABLE,
                grace_s=self.limits.ledger_lag_grace_s,
            )
        )
        grpc = None
        if self.settings.grpc_port:
            from .grpc_server import start_grpc_server

            grpc = await start_grpc_server(self, self.settings.host, self.settings.grpc_port)
        self.ready = True
        # What start-up built lives as long as the process: out of the collector's sight, so a
        # full collection scans only what requests left behind, not the ~71k objects of the
        # imports and the app (30-34 ms per collection, measured: a pause every request in the
        # loop, refusals included, waits behind; docs/performance.md).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            lag_poller.cancel()
            self.draining = True
            if grpc is not None:
                await grpc.stop(self.settings.drain_timeout_s)
            await self.auth.stop()
            if self.router is not None:  # its leases go back, its events are flushed
                await self.router.drain()
            if self.worker is not None:  # what it holds finishes, its records are flushed
                await self.worker.drain()
            with contextlib.suppress(*bus.NATS_ERRORS):
                await nc.drain()

    # Errors raised before a request is published (a malformed body, a bad hint header, an
    # unknown path or method) get a request id of their own, as the edge's refusals do.
    # Each is counted here (these requests were never published, so no exchange counts them).
    async def _on_gateway_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        count_refusal(request.url.path, exc)
        return error_response(exc, new_request_id(), dialect_for_path(request.url.path))

    async def _on_http_exception(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED}.get(
            exc.status_code, ErrorCode.INVALID_REQUEST
        )
        error = GatewayError(code, f"{request.method} {request.url.path}: {exc.detail}")
        count_refusal(request.url.path, error)
        return error_response(error, new_request_id(), dialect_for_path(request.url.path))

    async def _on_exception(self, request: Request, exc: Exception) -> Response:
        return self._internal_error(request.url.path, exc)

    def _internal_error(self, path: str, exc: Exception) -> Response:
        # One line with the id the caller was given; not the traceback: the exception is
        # re-raised after this answer and uvicorn logs it with its traceback, once.
        request_id = new_request_id()
        log.error("unhandled %s on %s, answered 500 as %s", type(exc).__name__, path, request_id)
        error = GatewayError(ErrorCode.INTERNAL, "internal error")
        count_refusal(path, error)
        return error_response(error, request_id, dialect_for_path(path))

    def admit(
        self, request: invoke_pb2.InvokeRequest, headers: Mapping[str, str]
    ) -> invoke_pb2.InvokeRequest:
        """Every API's requests pass here, with their headers (or gRPC metadata, lowercase):
        the caller's identity, routing hints from the headers, then ids and deadline."""
        hints.apply_hints(request, hints.hints_from_headers(headers))
        hints.check_metadata(request.metadata)  # body and headers together, on every API
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
            raise GatewayError(ErrorCode.UNAUTHORIZED, "missing API key")
        now_ns = time.time_ns()
        request.request_id = new_request_id()
        request.received_unix_ms = now_ns / 1e6
        request.deadline_unix_ms = now_ns // 1_000_000 + int(self.settings.request_timeout_s * 1000)
        request.project_id = identity.project_id
        request.agent_id = identity.agent_id
        request.key_id = identity.key_id
        # Sent upstream as is by OpenAI deployments: only the Responses API sets it, after this.
        request.responses_json = ""
        return request

    def _endpoint(self, api: HttpApi) -> Callable[[Request], Awaitable[Response]]:
        # Reached only where IngressApp does not take the POST itself (a path behind a
        # root_path, which Starlette's router strips); served as `_serve_api` serves it.

        async def endpoint(http: Request) -> Response:
            return await self._answer(api, await http.body(), http.headers)

        return endpoint

    async def _answer(self, api: HttpApi, body: bytes, headers: Mapping[str, str]) -> Response:
        """An API's request body, parsed, admitted (stamped in place) and relayed by that API's
        relay (`_apis`): the one path of both `_serve_api` and Starlette's `_endpoint`."""
        parsed = api.parse(body, self.settings.max_json_depth)
        self.admit(parsed.request, headers)
        return await self._apis[api.path][1](api, parsed)

    async def list_models(self, http: Request) -> Response:
        # Anthropic's SDKs list models at the same path; they always send anthropic-version.
        if "anthropic-version" in http.headers:
            return JSONResponse(anthropic_api.models_json(self.catalog))
        return JSONResponse(openai_api.models_json(self.catalog))

    async def get_model(self, http: Request) -> Response:
        name = http.path_params["model"]
        anthropic = "anthropic-version" in http.headers
        if name not in self.catalog.model_names():
            error = GatewayError(ErrorCode.MODEL_NOT_FOUND, f"unknown model {name!r}", param="model")
            count_refusal(http.url.path, error)
            return error_response(error, new_request_id(), ANTHROPIC if anthropic else OPENAI)
        if anthropic:
            return JSONResponse(anthropic_api.model_json(name))
        return JSONResponse(openai_api.model_json(self.catalog, name))

    async def openapi(self, http: Request) -> Response:
        return JSONResponse(openapi_document())

    async def open(self, request: invoke_pb2.InvokeRequest) -> Exchange:
        """Publish the request and wait for its first frame (exchange.open_exchange). One the
        bus refused (too large) never reached the router, so its ledger row is written here."""
        exchange = await open_exchange(
            self.client, request, self.settings.request_timeout_s, self.overload.observe
        )
        if exchange.unpublished and isinstance(exchange.first, GatewayError):
            self.record_refusal(request, exchange.first)
        return exchange

    def record_refusal(self, request: invoke_pb2.InvokeRequest, error: GatewayError) -> None:
        """Report a request the ingress refused itself, so it has a ledger row under the request
        id the client got: a router records it as `rejected` (the ingress may not publish
        billing events itself: switchyard/busauth.py)."""
        if self._client is None:  # no bus (an app without its lifespan, in tests)
            return
        event = completion_event(
            request,
            status=Status.REJECTED,
            trace_id=telemetry.current_trace_id(),
            error=error.to_proto(request.request_id),
        )
        task = asyncio.ensure_future(
            self.client.nc.publish(
                subjects.INGRESS_REFUSED, event.SerializeToString(), headers=telemetry.inject_headers()
            )
        )
        self._reports.add(task)  # held until sent (a core publish only buffers)
        task.add_done_callback(self._reports.discard)

    def _body_too_large(self, scope: Scope, error: GatewayError, request_id: str) -> None:
        """The edge refused an authenticated caller's body as too large: record it (only the
        APIs' endpoints; the body was never parsed, so the row has no model)."""
        path = scope.get("path", "")
        api = next((a for a in HTTP_APIS if a.path == path), None)
        identity = auth.current_identity.get()
        if api is None or identity is None:
            return
        now_ns = time.time_ns()
        request = invoke_pb2.InvokeRequest(
            request_id=request_id,
            api=api.name,
            received_unix_ms=now_ns / 1e6,
            project_id=identity.project_id,
            agent_id=identity.agent_id,
            key_id=identity.key_id,
        )
        self.record_refusal(request, error)

    def count(self, request: invoke_pb2.InvokeRequest, status: str) -> None:
        """A request refused before it was published (no exchange, no span)."""
        count(request.api, status)

    async def relay(self, api: HttpApi, parsed: Parsed) -> Response:
        """Publish, then answer with the final answer (JSON) or stream the frames (SSE), in the
        caller's API dialect. All HTTP APIs share this path. An error before the first frame is
        an error response with its status; a streamed request's span ends with the stream."""
        request = parsed.request
        exchange = await self.open(request)
        if not request.stream or isinstance(exchange.first, GatewayError):
            answer = exchange.settle()
            if isinstance(answer, GatewayError):
                return error_response(answer, request.request_id, api)
            headers = request_id_headers(request.request_id, api)
            if answer.cache_hit:  # docs/routing.md, "Response cache"
                headers[hints.CACHE_HEADER] = "hit"
            return JSONResponse(api.render_final(request, answer), headers=headers)
        return StreamingResponse(
            _sse(exchange, api.render_stream(parsed)),
            media_type="text/event-stream",
            headers={
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
                **request_id_headers(request.request_id, api),
            },
        )

    async def get_request(self, http: Request) -> Response:
        """One request's ledger row (rationale, attempts, tokens, cost), read via the ledger.
        Only the caller's own project's rows: another project's request answers 404, exactly
        as an unknown id does, so a key cannot even learn that the id exists."""
        request_id = http.path_params["request_id"]
        project_id = self.identity(http.headers).project_id
        ask = ledger_pb2.RequestLookup(request_id=request_id, project_id=project_id)
        try:
            reply = await self.client.nc.request(
                subjects.LEDGER_READ_REQUEST, ask.SerializeToString(), timeout=5
            )
            result = ledger_pb2.RequestLookupReply.FromString(reply.data)
        except Exception:
            raise GatewayError(ErrorCode.UNAVAILABLE, "the ledger did not answer", retry_after_s=1) from None
        if result.HasField("error"):  # the store's own text stays in the ledger's log
            raise GatewayError(
                ErrorCode.INTERNAL, f"the ledger could not read this request ({result.error.code})"
            )
        if not result.found:
            raise GatewayError(ErrorCode.NOT_FOUND, f"no ledger row for {request_id} (yet)")
        return JSONResponse(request_row_json(result.request))

    async def get_usage(self, http: Request) -> Response:
        """The caller's project's spend, caps, burn rates and agent roll-ups (services/ingress/
        usage.py). A key reads its own project only: naming another one is a 403."""
        identity = self.identity(http.headers)
        if identity is ANONYMOUS and self.settings.auth_required:
            raise GatewayError(ErrorCode.UNAUTHORIZED, "missing API key")
        asked = http.query_params.get("project") or identity.project_id
        if asked != identity.project_id:
            raise GatewayError(
                ErrorCode.PERMISSION_DENIED,
                f"this API key reads the usage of project {identity.project_id} only, not {asked}",
            )
        period = http.query_params.get("period", "month")
        return JSONResponse(
            await usage.read_usage(self.client.nc, self.settings, identity.project_id, period)
        )

    async def healthz(self, http: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, http: Request) -> Response:
        ready = self.ready and not self.draining
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    async def metrics(self, http: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def _whole_body(receive: Receive) -> bytes | None:
    """The request body (edge.AdmissionMiddleware read it and hands it on in one message), or
    None when the client went away first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)  # one chunk: that object itself, no copy


async def _sse(exchange: Exchange, render: StreamRenderer) -> AsyncIterator[bytes]:
    """A streamed request's frames as its API's SSE events, one write per frame (a frame of
    coalesced chunks is many events); a client that goes away mid-stream stops the upstream
    call (Exchange.frames)."""
    async with contextlib.aclosing(exchange.frames()) as frames:
        async for frame in frames:
            data = b"".join(render(frame))
            if data:
                yield data
