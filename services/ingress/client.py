"""The ingress side of the bus: publish an InvokeRequest, receive its reply frames.

One wildcard subscription per process (`_INBOX.<id>.*`) receives every reply; frames are
routed to the waiting request by the last subject token. This is what nats-py's own request
does, extended to many frames per request (streaming).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from switchyard import codec, subjects, telemetry
from switchyard.errors import GatewayError
from switchyard.v1 import invoke_pb2

NO_RESPONDERS = "503"


class ReplyStream:
    """The frames of one request, in order, ending with a final or an error frame."""

    def __init__(self, queue: asyncio.Queue[Msg], deadline: float) -> None:
        self._queue = queue
        self._deadline = deadline

    async def next(self) -> invoke_pb2.Reply:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise GatewayError("timeout", "the request took longer than its deadline")
        try:
            msg = await asyncio.wait_for(self._queue.get(), remaining)
        except TimeoutError:
            raise GatewayError("timeout", "the request took longer than its deadline") from None
        if msg.headers and msg.headers.get("Status") == NO_RESPONDERS:
            raise GatewayError(
                "unavailable",
                "no router or provider worker is available right now",
                retry_after_s=1.0,
            )
        return codec.decode_reply(msg.data)

    async def frames(self) -> AsyncIterator[invoke_pb2.Reply]:
        while True:
            frame = await self.next()
            yield frame
            if frame.WhichOneof("frame") != "chunk":
                return


class GatewayClient:
    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        # Under the connection's own inbox prefix: the only one its bus user may subscribe to.
        self._prefix = nc.new_inbox()
        self._pending: dict[str, asyncio.Queue[Msg]] = {}

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def start(self) -> None:
        await self.nc.subscribe(f"{self._prefix}.*", cb=self._on_frame, pending_msgs_limit=1_000_000)

    async def _on_frame(self, msg: Msg) -> None:
        queue = self._pending.get(msg.subject[len(self._prefix) + 1 :])
        if queue is not None:
            queue.put_nowait(msg)

    async def open(self, request: invoke_pb2.InvokeRequest, timeout_s: float) -> ReplyStream:
        """Publish the request; the returned stream yields its frames. Call `close` after."""
        queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._pending[request.request_id] = queue
        await self.nc.publish(
            subjects.INVOKE,
            request.SerializeToString(),
            reply=f"{self._prefix}.{request.request_id}",
            headers=telemetry.inject_headers(),
        )
        return ReplyStream(queue, time.monotonic() + timeout_s)

    def close(self, request_id: str) -> None:
        self._pending.pop(request_id, None)

    async def cancel(self, request_id: str) -> None:
        """Tell the worker serving this request that the client went away."""
        self.close(request_id)
        await self.nc.publish(subjects.cancel(request_id), b"")
