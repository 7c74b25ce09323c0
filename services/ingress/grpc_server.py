"""The gRPC ingress: the `Gateway` service (Invoke, InvokeStream) on SWITCHYARD_GRPC_PORT, served
from the ingress process over the same path as the HTTP APIs (Ingress.admit + Ingress.open, then
the reply loop of exchange.py).

Errors end the call with a gRPC status (grpc_api.status_for) and trailing metadata carrying the
neutral code and the request id. On InvokeStream, an error after frames were sent is first sent
as an error frame too (the contract's stream ends with a final or an error frame), then the
call ends with the status.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, NoReturn

import grpc

from switchyard.errors import GatewayError
from switchyard.v1 import gateway_pb2_grpc, invoke_pb2
from switchyard.vocab import Api

from . import grpc_api, hints
from .grpc_edge import EdgeInterceptor, server_options

if TYPE_CHECKING:
    from .app import Ingress

log = logging.getLogger("switchyard.ingress.grpc")


async def _abort(context: grpc.aio.ServicerContext, error: GatewayError, request_id: str) -> NoReturn:
    await context.abort(
        grpc_api.status_for(error.code),
        error.message,
        trailing_metadata=grpc_api.trailing_metadata(error, request_id),
    )
    raise AssertionError("context.abort returns only by raising")


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    def __init__(self, ingress: Ingress) -> None:
        self.ingress = ingress

    async def _admit(
        self, request: invoke_pb2.InvokeRequest, context: grpc.aio.ServicerContext, stream: bool
    ) -> invoke_pb2.InvokeRequest:
        try:
            grpc_api.validate(request)
            request.api = Api.GRPC
            request.stream = stream
            metadata = hints.lowercase_headers(context.invocation_metadata() or ())
            return self.ingress.admit(request, metadata)
        except GatewayError as error:
            self.ingress.count(invoke_pb2.InvokeRequest(api=Api.GRPC), error.code)
            await _abort(context, error, "")

    async def Invoke(
        self, request: invoke_pb2.InvokeRequest, context: grpc.aio.ServicerContext
    ) -> invoke_pb2.InvokeResponse:
        request = await self._admit(request, context, stream=False)
        exchange = await self.ingress.open(request)
        answer = exchange.settle()
        if isinstance(answer, GatewayError):
            await _abort(context, answer, request.request_id)
        await context.send_initial_metadata(((grpc_api.REQUEST_ID_KEY, request.request_id),))
        return answer

    async def InvokeStream(
        self, request: invoke_pb2.InvokeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[invoke_pb2.Reply]:
        request = await self._admit(request, context, stream=True)
        exchange = await self.ingress.open(request)
        first = exchange.first
        if isinstance(first, GatewayError):  # before any frame: the status alone
            exchange.settle()
            await _abort(context, first, request.request_id)
        await context.send_initial_metadata(((grpc_api.REQUEST_ID_KEY, request.request_id),))
        # A call cancelled (or past its deadline) mid-stream closes this generator, which
        # cancels the upstream call (Exchange.frames).
        async with contextlib.aclosing(exchange.frames()) as frames:
            async for frame in frames:
                if isinstance(frame, GatewayError):
                    # The contract's stream ends with a final or an error frame; then the status.
                    yield invoke_pb2.Reply(error=frame.to_proto(request.request_id))
                    await _abort(context, frame, request.request_id)
                if frame.WhichOneof("frame") == "chunks":
                    # Coalesced on the bus; the gRPC contract streams one chunk per Reply.
                    for chunk in frame.chunks.chunks:
                        yield invoke_pb2.Reply(chunk=chunk)
                    continue
                yield frame


async def start_grpc_server(ingress: Ingress, host: str, port: int) -> grpc.aio.Server:
    # The HTTP edge's limits apply to gRPC too (grpc_edge.py).
    server = grpc.aio.server(
        interceptors=[EdgeInterceptor(ingress)], options=server_options(ingress.settings)
    )
    gateway_pb2_grpc.add_GatewayServicer_to_server(GatewayServicer(ingress), server)
    address = f"{host}:{port}"
    if server.add_insecure_port(address) == 0:
        raise RuntimeError(f"cannot listen for gRPC on {address}")
    await server.start()
    log.info("gRPC Gateway listening on %s", address)
    return server
