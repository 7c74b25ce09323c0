"""The Responses API's I/O around the shared path: a previous response's history spliced in
before the request is published, the answer stored after it, `GET` / `DELETE
/v1/responses/{id}`, its `input_items` and `cancel`.

Everything else is the path every HTTP API takes (Ingress.admit, Ingress.open, the reply loop
in exchange.py), so routing, failover, budgets, quotas, the ledger and traces treat a Responses
request exactly as a chat completion. Only the rendering differs: the answer echoes fields of
the body the contract does not carry, so it is rendered from the parsed body here rather than
by HttpApi.render_final.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson
from nats.aio.client import Client as NATS
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from switchyard import subjects
from switchyard.errors import ErrorCode, GatewayError
from switchyard.lifecycle import started
from switchyard.tenancy_store import open_bucket

from . import response_items
from .api_kit import HttpApi, Parsed
from .dialects import error_headers, request_id_headers
from .exchange import Exchange
from .response_store import ResponseStore, StoredResponse
from .responses_api import (
    ParsedResponses,
    ResponsesApi,
    ResponseStream,
    final_json,
    native_json,
    not_found,
    replayed_messages,
    with_history,
)

if TYPE_CHECKING:
    from .app import Ingress

# Room for the KV message's headers within the server's max payload.
_HEADROOM_BYTES = 4096


class _Json(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ResponsesEndpoints:
    """POST (through the shared path), GET and DELETE of the Responses API."""

    def __init__(self, ingress: Ingress, api: ResponsesApi) -> None:
        self.ingress = ingress
        self.api = api
        self._store: ResponseStore | None = None

    @property
    def store(self) -> ResponseStore:
        return started(self._store, "the responses store")

    async def start(self, nc: NATS) -> None:
        settings = self.ingress.settings
        kv = await open_bucket(
            nc.jetstream(),
            subjects.RESPONSES_BUCKET,
            settings.stream_replicas,
            ttl_s=settings.responses_ttl_s,
        )
        self._store = ResponseStore(kv, nc.max_payload - _HEADROOM_BYTES)

    def routes(self) -> list[Route]:
        return [
            Route(f"{self.api.path}/{{response_id}}", self.retrieve, methods=["GET"]),
            Route(f"{self.api.path}/{{response_id}}", self.delete, methods=["DELETE"]),
            Route(f"{self.api.path}/{{response_id}}/input_items", self.input_items, methods=["GET"]),
            Route(f"{self.api.path}/{{response_id}}/cancel", self.cancel, methods=["POST"]),
        ]

    # --- POST /v1/responses (after Ingress.admit stamped the request) ---

    async def relay(self, api: HttpApi, parsed: Parsed) -> Response:
        """Ingress.relay for this API: the history first, the answer stored after."""
        assert api is self.api and isinstance(parsed, ParsedResponses)  # ResponsesApi.parse made it
        parsed = await self._resume(parsed)
        request = parsed.request
        # OpenAI deployments pass it through natively; the others use the messages. The body
        # then travels twice: one too large for the bus with both goes translated only.
        request.responses_json = native_json(parsed.raw, parsed.items)
        if request.ByteSize() > self.store.max_bytes:
            request.responses_json = ""
        exchange = await self.ingress.open(request)
        if not request.stream or isinstance(exchange.first, GatewayError):
            answer = exchange.settle()
            if isinstance(answer, GatewayError):
                status, payload = self.api.render_error(answer, request.request_id)
                headers = error_headers(answer, request.request_id, self.api)
                return _Json(payload, status_code=status, headers=headers)
            body = final_json(parsed, answer)
            await self._save(parsed, body)
            return _Json(body, headers=request_id_headers(request.request_id, self.api))
        return StreamingResponse(
            self._events(exchange, parsed),
            media_type="text/event-stream",
            headers={
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
                **request_id_headers(request.request_id, self.api),
            },
        )

    async def _resume(self, parsed: ParsedResponses) -> ParsedResponses:
        """With `previous_response_id`: that response's conversation (in this project) put
        before the new input, in the request and in the items this one will store."""
        previous_id = parsed.validated.previous_response_id
        if not previous_id:
            return parsed
        record = await self.store.get(parsed.request.project_id, previous_id)
        if record is None:
            raise GatewayError(
                ErrorCode.NOT_FOUND,
                f"previous response {previous_id!r} not found (never stored, expired, deleted, "
                "or another project's)",
                param="previous_response_id",
            )
        history = record.history()
        try:
            messages = replayed_messages(history)
        except ValueError:
            raise GatewayError(
                ErrorCode.INTERNAL, f"stored response {previous_id!r} cannot be replayed"
            ) from None
        with_history(parsed.request, messages, bool(parsed.validated.instructions))
        return dataclasses.replace(parsed, items=[*history, *parsed.items])

    async def _events(self, exchange: Exchange, parsed: ParsedResponses) -> AsyncIterator[bytes]:
        """The stream's events; the finished response is stored before its last event is sent,
        so a client that retrieves it right after the stream finds it."""
        render = ResponseStream(parsed)
        async with contextlib.aclosing(exchange.frames()) as frames:
            async for frame in frames:
                events = render(frame)
                if render.finished is not None:
                    await self._save(parsed, render.finished)
                for event in events:
                    yield event

    async def _save(self, parsed: ParsedResponses, response: dict[str, Any]) -> None:
        if parsed.validated.stores:
            await self.store.put(StoredResponse(parsed.request.project_id, response, parsed.items))

    # --- GET and DELETE /v1/responses/{id} ---

    async def retrieve(self, http: Request) -> Response:
        response_id = http.path_params["response_id"]
        record = await self.store.get(self._project(http), response_id)
        if record is None:
            raise not_found(response_id)
        return _Json(record.response)

    async def delete(self, http: Request) -> Response:
        response_id = http.path_params["response_id"]
        if not await self.store.delete(self._project(http), response_id):
            raise not_found(response_id)
        return _Json({"id": response_id, "object": "response", "deleted": True})

    async def input_items(self, http: Request) -> Response:
        """The stored conversation's input items, a page at a time (OpenAI's list shape)."""
        response_id = http.path_params["response_id"]
        query = response_items.parse_query(dict(http.query_params))
        record = await self.store.get(self._project(http), response_id)
        if record is None:
            raise not_found(response_id)
        return _Json(response_items.items_page(response_id, record.items, query))

    async def cancel(self, http: Request) -> Response:
        """Only background responses can be cancelled, and the gateway runs none: a stored
        response is a 400 as at OpenAI, an unknown one a 404."""
        response_id = http.path_params["response_id"]
        if await self.store.get(self._project(http), response_id) is None:
            raise not_found(response_id)
        raise response_items.cannot_cancel()

    def _project(self, http: Request) -> str:
        return self.ingress.identity(http.headers).project_id
