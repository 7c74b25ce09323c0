"""The HTTP edge's limits on the gRPC API, as a grpc.aio server interceptor.

Without it a gRPC call skipped every one of them. Now, as on HTTP (edge.py):

- The caller authenticates first (its key in metadata): an unknown or missing key ends the call
  with UNAUTHENTICATED before it is counted; the identity is handed on to the servicer in the
  same context variable the HTTP middleware sets, so the key is checked once.
- Then admission, over the same `Overload` as HTTP (one in-flight count per process): at
  `max_in_flight`, or with the ledger behind, the call ends with UNAVAILABLE and the neutral
  code `overloaded` plus retry-after in the trailing metadata.
- Sizes: a request message over `max_body_bytes` is refused as HTTP's 413 is, after the caller
  authenticated: RESOURCE_EXHAUSTED with the neutral code `payload_too_large`, a request id in
  the trailing metadata and a `rejected` ledger row under it. To see such a message at all the
  server reads up to twice the limit (`grpc.max_receive_message_length`); beyond that grpc
  itself refuses it, unread (RESOURCE_EXHAUSTED, no row: nothing of it was read, not even its
  size). The metadata is capped at `max_header_bytes` by the transport; its entries are checked
  with the HTTP APIs' rule in Ingress.admit.

A unary request message is whole before the handler runs, so "in-flight after the body" holds
by construction; the HTTP/2 handshake is bounded by `header_timeout_s`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from switchyard.errors import ErrorCode, GatewayError
from switchyard.v1 import invoke_pb2
from switchyard.vocab import Api

from . import auth, grpc_api, hints
from .dialects import new_request_id
from .edge import shed_reason

if TYPE_CHECKING:
    from .app import Ingress


def read_limit(max_body_bytes: int) -> int:
    """The largest request message the server reads: over the body limit, so that one a little
    over it is refused by us, with a request id and a ledger row, not by grpc (module docstring)."""
    return 2 * max_body_bytes


class Oversize:
    """A request message over the body limit, in place of the message (never parsed)."""

    def __init__(self, size: int) -> None:
        self.size = size


def server_options(settings: Any) -> list[tuple[str, int]]:
    """gRPC server options that carry the edge's size and time limits."""
    return [
        ("grpc.so_reuseport", 0),  # a port already taken must fail loudly, not be shared silently
        ("grpc.max_receive_message_length", read_limit(settings.max_body_bytes)),
        ("grpc.max_metadata_size", settings.max_header_bytes),
        ("grpc.server_handshake_timeout_ms", int(settings.header_timeout_s * 1000)),
    ]


class EdgeInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, ingress: Ingress) -> None:
        self.ingress = ingress

    async def _refuse(self, context: grpc.aio.ServicerContext, error: GatewayError) -> None:
        self.ingress.count(invoke_pb2.InvokeRequest(api=Api.GRPC), error.code)
        await context.abort(
            grpc_api.status_for(error.code),
            error.message,
            trailing_metadata=grpc_api.trailing_metadata(error, ""),
        )

    async def _admit(self, context: grpc.aio.ServicerContext, request: Any) -> Any:
        """Authenticate, refuse a message over the body limit, then take an in-flight slot;
        returns the context-variable token."""
        metadata = hints.lowercase_headers(context.invocation_metadata() or ())
        try:
            identity = self.ingress.auth.identify(metadata.get("authorization"), metadata.get("x-api-key"))
        except GatewayError as error:
            await self._refuse(context, error)
            raise  # abort raised already; never reached
        if isinstance(request, Oversize):
            await self._refuse_oversize(context, identity, request)
        reason = shed_reason(self.ingress.limits, self.ingress.overload)
        if reason:
            await self._refuse(context, GatewayError(ErrorCode.OVERLOADED, reason, retry_after_s=1))
        self.ingress.overload.in_flight += 1
        return auth.current_identity.set(identity)

    async def _refuse_oversize(
        self, context: grpc.aio.ServicerContext, identity: auth.Identity, oversize: Oversize
    ) -> None:
        """HTTP's 413 in gRPC's dialect: recorded under a request id the caller gets."""
        limit = self.ingress.settings.max_body_bytes
        error = GatewayError(
            ErrorCode.PAYLOAD_TOO_LARGE, f"request message of {oversize.size} bytes exceeds {limit} bytes"
        )
        request = invoke_pb2.InvokeRequest(
            request_id=new_request_id(),
            api=Api.GRPC,
            received_unix_ms=time.time_ns() / 1e6,
            project_id=identity.project_id,
            agent_id=identity.agent_id,
            key_id=identity.key_id,
        )
        self.ingress.count(request, error.code)
        self.ingress.record_refusal(request, error)
        await context.abort(
            grpc_api.status_for(error.code),
            error.message,
            trailing_metadata=grpc_api.trailing_metadata(error, request.request_id),
        )

    def _release(self, token: Any) -> None:
        self.ingress.overload.in_flight -= 1
        auth.current_identity.reset(token)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        limit = self.ingress.settings.max_body_bytes
        parse = handler.request_deserializer

        def deserializer(raw: bytes) -> Any:
            # Measured before parsing: one over the limit is refused in `_admit`, after auth.
            if len(raw) > limit:
                return Oversize(len(raw))
            return parse(raw) if parse is not None else raw

        if handler.unary_unary is not None:
            # grpc.aio handlers are coroutines; the stubs type them as the sync API's.
            inner_unary: Any = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                token = await self._admit(context, request)
                try:
                    return await inner_unary(request, context)
                finally:
                    self._release(token)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            inner_stream: Any = handler.unary_stream

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                token = await self._admit(context, request)
                try:
                    async for reply in inner_stream(request, context):
                        yield reply
                finally:
                    self._release(token)

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # the Gateway service has no client-streaming methods
