"""The gRPC ingress: the `Gateway` service (Invoke, InvokeStream) on SWITCHYARD_GRPC_PORT, served
from the ingress process over the same path as the HTTP APIs (Ingress.admit + Ingress.open).

Errors end the call with a gRPC status (grpc_api.STATUS) and trailing metadata carrying the
neutral code and the request id. On InvokeStream, an error after frames were sent is first sent
as an error frame too (the contract's stream ends with a final or an error frame), then the
call ends with the status.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc

from switchyard.errors import GatewayError
from switchyard.v1 import gateway_pb2_grpc, invoke_pb2

from . import grpc_api, hints

if TYPE_CHECKING:
    from .app import Ingress

log = logging.getLogger("switchyard.ingress.grpc")


async def _abort(context: grpc.aio.ServicerContext, error: GatewayError, request_id: str) -> None:
    await context.abort(
        grpc_api.status_for(error.code),
        error.message,
        trailing_metadata=grpc_api.trailing_metadata(error, request_id),
    )


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    def __init__(self, ingress: Ingress) -> None:
        self.ingress = ingress

    async def _admit(
        self, request: invoke_pb2.InvokeRequest, context: grpc.aio.ServicerContext, stream: bool
    ) -> invoke_pb2.InvokeRequest:
        try:
            grpc_api.validate(request)
            request.api = "grpc"
            request.stream = stream
            metadata = hints.lowercase_headers(context.invocation_metadata() or ())
            return self.ingress.admit(request, metadata)
        except GatewayError as error:
            self.ingress.count(invoke_pb2.InvokeRequest(api="grpc"), error.code)
            await _abort(context, error, "")
            raise  # abort raises; this line is never reached

    async def Invoke(
        self, request: invoke_pb2.InvokeRequest, context: grpc.aio.ServicerContext
    ) -> invoke_pb2.InvokeResponse:
        request = await self._admit(request, context, stream=False)
        exchange = None
        try:
            exchange = await self.ingress.open(request)
        finally:
            if exchange is not None:
                self.ingress.client.close(request.request_id)
            else:  # the client cancelled or its deadline passed: stop the upstream call
                await self.ingress.client.cancel(request.request_id)
        first = exchange.first
        if first.WhichOneof("frame") == "error":
            exchange.finish(first.error.code)
            await _abort(context, GatewayError.from_proto(first.error), request.request_id)
        exchange.finish("ok", first.final)
        await context.send_initial_metadata(((grpc_api.REQUEST_ID_KEY, request.request_id),))
        return first.final

    async def InvokeStream(
        self, request: invoke_pb2.InvokeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[invoke_pb2.Reply]:
        request = await self._admit(request, context, stream=True)
        client = self.ingress.client
        exchange = await self.ingress.open(request)
        finished = False
        sent = 0
        try:
            frame = exchange.first
            while True:
                kind = frame.WhichOneof("frame")
                if kind == "error":
                    finished = True
                    exchange.finish(frame.error.code)
                    if sent:
                        yield frame
                    await _abort(context, GatewayError.from_proto(frame.error), request.request_id)
                if not sent:
                    await context.send_initial_metadata(((grpc_api.REQUEST_ID_KEY, request.request_id),))
                yield frame
                sent += 1
                if kind == "final":
                    finished = True
                    exchange.finish("ok", frame.final)
                    return
                frame = await exchange.next()
        finally:
            if finished:
                client.close(request.request_id)
            else:  # the client cancelled or its deadline passed: stop the upstream call
                exchange.finish("cancelled")
                await client.cancel(request.request_id)


async def start_grpc_server(ingress: Ingress, host: str, port: int) -> grpc.aio.Server:
    # No SO_REUSEPORT: a port already taken must fail loudly, not be shared silently.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    gateway_pb2_grpc.add_GatewayServicer_to_server(GatewayServicer(ingress), server)
    address = f"{host}:{port}"
    if server.add_insecure_port(address) == 0:
        raise RuntimeError(f"cannot listen for gRPC on {address}")
    await server.start()
    log.info("gRPC Gateway listening on %s", address)
    return server
