"""The ingress side of the bus: publish an InvokeRequest, receive its reply frames.

One wildcard subscription per process (`_INBOX.<id>.*`) receives every reply; frames are
routed to the waiting request by the last subject token. This is what nats-py's own request
does, extended to many frames per request (streaming).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeAlias

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import MaxPayloadError

from switchyard import codec, subjects, telemetry
from switchyard.deadlines import ANSWER_GRACE_S
from switchyard.errors import ErrorCode, GatewayError
from switchyard.inproc import LocalInbox
from switchyard.v1 import invoke_pb2

NO_RESPONDERS = "503"

# One step of a request's reply: a chunk or final frame as it came off the bus, or the error
# that ends the request. An error is a GatewayError from here to the edge that renders it: an
# error frame is decoded once, here; a passed deadline or a missing router is one to begin with.
Frame: TypeAlias = invoke_pb2.Reply | GatewayError
# A router in this process (SWITCHYARD_ROUTER_MODE=ingress, colocated.py): takes the request
# and the reply subject its frames go to, instead of `llm.invoke`.
HandOver: TypeAlias = Callable[[invoke_pb2.InvokeRequest, str], Awaitable[None]]


class LocalFrame:
    """A frame a router or worker in this process handed over (switchyard/inproc.py): read as
    a frame from the bus is, and it has no headers (no NATS status can come this way)."""

    __slots__ = ("data",)
    headers: None = None

    def __init__(self, data: bytes) -> None:
        self.data = data


Arrived: TypeAlias = Msg | LocalFrame | GatewayError


class ReplyStream:
    """The frames of one request, in order, ending with a final frame or an error."""

    def __init__(self, queue: asyncio.Queue[Arrived], deadline: float) -> None:
        self._queue = queue
        self._deadline = deadline

    async def next(self) -> Frame:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            return GatewayError(ErrorCode.TIMEOUT, "the request took longer than its deadline")
        try:
            msg = await asyncio.wait_for(self._queue.get(), remaining)
        except TimeoutError:
            return GatewayError(ErrorCode.TIMEOUT, "the request took longer than its deadline")
        if isinstance(msg, GatewayError):  # put there by this process (`refuse_all`)
            return msg
        if msg.headers and msg.headers.get("Status") == NO_RESPONDERS:
            return GatewayError(
                ErrorCode.UNAVAILABLE,
                "no router or provider worker is available right now",
                retry_after_s=1.0,
            )
        reply = codec.decode_reply(msg.data)
        kind = reply.WhichOneof("frame")
        if kind == "error":
            return GatewayError.from_proto(reply.error)
        if kind is None:  # a sender's bug; without this the request would wait for its deadline
            return GatewayError(ErrorCode.INTERNAL, "a reply frame with no chunk, final or error")
        return reply


class GatewayClient:
    def __init__(self, nc: NATS, hand_over: HandOver | None = None, inbox: LocalInbox | None = None) -> None:
        self.nc = nc
        self.hand_over = hand_over
        self._inbox = inbox  # bound in `start`: frames from services in this process
        # Under the connection's own inbox prefix: the only one its bus user may subscribe to.
        self._prefix = nc.new_inbox()
        self._pending: dict[str, asyncio.Queue[Arrived]] = {}

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def start(self) -> None:
        await self.nc.subscribe(f"{self._prefix}.*", cb=self._on_frame, pending_msgs_limit=1_000_000)
        if self._inbox is not None:
            self._inbox.bind(self._prefix, self._on_local_frame)

    async def _on_frame(self, msg: Msg) -> None:
        queue = self._pending.get(msg.subject[len(self._prefix) + 1 :])
        if queue is not None:
            queue.put_nowait(msg)

    def _on_local_frame(self, request_id: str, frame: bytes) -> None:
        queue = self._pending.get(request_id)
        if queue is not None:
            queue.put_nowait(LocalFrame(frame))

    def expect(self, request_id: str, timeout_s: float) -> ReplyStream:
        """The stream of a request's frames, registered before the request is published (so no
        frame can arrive unseen). Call `close` (or `cancel`) after. Frames are awaited up to
        ANSWER_GRACE_S past `timeout_s`: a worker answers that late only with an upstream call
        that ended in time and a record it had to store first (switchyard/deadlines.py)."""
        queue: asyncio.Queue[Arrived] = asyncio.Queue()
        self._pending[request_id] = queue
        return ReplyStream(queue, time.monotonic() + timeout_s + ANSWER_GRACE_S)

    async def publish(self, request: invoke_pb2.InvokeRequest) -> None:
        """Publish the request on `llm.invoke`, replies to this process's inbox. A request larger
        than the bus carries (a NATS server with a smaller max_payload than the edge's body
        limit assumes) is a `payload_too_large` GatewayError, not an exception. With a router
        in this process the request is handed to it instead, refused alike if the bus could not
        carry it to a worker."""
        if self.hand_over is not None:
            size = request.ByteSize()
            if size > self.nc.max_payload:
                raise GatewayError(
                    ErrorCode.PAYLOAD_TOO_LARGE,
                    f"the request ({size} bytes encoded) is larger than the gateway's message bus "
                    f"carries ({self.nc.max_payload} bytes)",
                )
            await self.hand_over(request, f"{self._prefix}.{request.request_id}")
            return
        payload = request.SerializeToString()
        try:
            await self.nc.publish(
                subjects.INVOKE,
                payload,
                reply=f"{self._prefix}.{request.request_id}",
                headers=telemetry.inject_headers(),
            )
        except MaxPayloadError:
            raise GatewayError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"the request ({len(payload)} bytes encoded) is larger than the gateway's message bus "
                f"carries ({self.nc.max_payload} bytes)",
            ) from None

    def close(self, request_id: str) -> None:
        self._pending.pop(request_id, None)

    async def refuse_all(self, error: GatewayError) -> int:
        """End every request still waiting here with `error` (a stopping ingress whose drain
        time ran out), and cancel their upstream calls. Returns how many."""
        waiting = list(self._pending.items())
        for request_id, queue in waiting:
            queue.put_nowait(error)
            await self.nc.publish(subjects.cancel(request_id), b"")
        return len(waiting)

    async def cancel(self, request_id: str) -> None:
        """Tell the worker serving this request that the client went away."""
        self.close(request_id)
        await self.nc.publish(subjects.cancel(request_id), b"")
