"""The ingress's one reply loop (services/ingress/exchange.py) over a real NATS server: what the
HTTP SSE path and both gRPC methods rely on. A test responder on `llm.invoke` plays the router
and worker, answering with real Reply frames on the request's inbox."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from services.ingress.client import GatewayClient
from services.ingress.exchange import open_exchange
from switchyard import bus, subjects
from switchyard.deadlines import RECORD_GRACE_S
from switchyard.errors import GatewayError
from switchyard.natsserver import NatsServer
from switchyard.v1 import invoke_pb2
from tests.support.frames import error_frame, final_frame, text_chunk


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NATS]:
    connection = await bus.connect(nats_server.url, "test-reply-loop")
    yield connection
    await connection.close()


@pytest.fixture
async def client(nc: NATS) -> GatewayClient:
    gateway = GatewayClient(nc)
    await gateway.start()
    return gateway


async def respond(nc: NATS, frames: Callable[[], list[invoke_pb2.Reply]]) -> None:
    """Answer every request on llm.invoke with these frames (none: the request waits)."""

    async def on_request(msg: Msg) -> None:
        for frame in frames():
            await nc.publish(msg.reply, frame.SerializeToString())

    await nc.subscribe(subjects.INVOKE, cb=on_request)
    await nc.flush()


def request(request_id: str, stream: bool = True) -> invoke_pb2.InvokeRequest:
    out = invoke_pb2.InvokeRequest(request_id=request_id, model="auto", api="native", stream=stream)
    out.messages.add(role=invoke_pb2.ROLE_USER).content.add(text="hi")
    return out


async def collect(frames: AsyncIterator[invoke_pb2.Reply | GatewayError]) -> list:
    return [frame async for frame in frames]


async def test_a_stream_ends_with_its_final_frame_and_closes_the_inbox(
    nc: NATS, client: GatewayClient
) -> None:
    await respond(nc, lambda: [text_chunk(0, "He"), text_chunk(1, "llo"), final_frame("Hello")])
    exchange = await open_exchange(client, request("req_stream"), timeout_s=5)
    async with contextlib.aclosing(exchange.frames()) as frames:
        got = await collect(frames)
    assert [f.WhichOneof("frame") for f in got] == ["chunk", "chunk", "final"]
    assert exchange.finished and client.in_flight == 0


async def test_an_error_frame_arrives_as_a_gateway_error(nc: NATS, client: GatewayClient) -> None:
    await respond(
        nc, lambda: [text_chunk(0, "x"), error_frame("upstream_error", "fell over", retry_after_s=2)]
    )
    exchange = await open_exchange(client, request("req_error"), timeout_s=5)
    async with contextlib.aclosing(exchange.frames()) as frames:
        got = await collect(frames)
    error = got[-1]
    assert isinstance(error, GatewayError)
    assert (error.code, error.message, error.retry_after_s) == ("upstream_error", "fell over", 2)
    assert exchange.finished and client.in_flight == 0


async def test_an_answer_or_an_early_error_settles_on_the_first_frame(
    nc: NATS, client: GatewayClient
) -> None:
    answers = iter([[final_frame("done")], [error_frame("budget_exceeded", "spent")]])
    await respond(nc, lambda: next(answers))
    answer = (await open_exchange(client, request("req_one", stream=False), timeout_s=5)).settle()
    assert isinstance(answer, invoke_pb2.InvokeResponse) and answer.message.content[0].text == "done"
    refused = (await open_exchange(client, request("req_two", stream=False), timeout_s=5)).settle()
    assert isinstance(refused, GatewayError) and refused.code == "budget_exceeded"
    assert client.in_flight == 0


async def test_a_passed_deadline_is_a_timeout_error(nc: NATS, client: GatewayClient) -> None:
    await respond(nc, lambda: [text_chunk(0, "and then nothing")])
    exchange = await open_exchange(client, request("req_slow"), timeout_s=0.3)
    async with contextlib.aclosing(exchange.frames()) as frames:
        got = await collect(frames)
    assert isinstance(got[-1], GatewayError) and got[-1].code == "timeout"
    assert exchange.finished and client.in_flight == 0


async def test_an_answer_a_moment_past_the_deadline_is_delivered_not_timed_out(
    nc: NATS, client: GatewayClient
) -> None:
    """A worker may answer up to RECORD_GRACE_S past the deadline (an upstream call that ended in
    time, waiting for its record to be stored): that answer reaches the client, billed `ok` as
    it is, instead of a "timeout" for a request the ledger says was served (a chaos run)."""

    async def on_request(msg: Msg) -> None:
        await asyncio.sleep(0.2 + RECORD_GRACE_S * 0.6)  # the deadline (0.2 s), then most of the grace
        await nc.publish(msg.reply, final_frame("late but stored").SerializeToString())

    await nc.subscribe(subjects.INVOKE, cb=on_request)
    await nc.flush()
    answer = (await open_exchange(client, request("req_late", stream=False), timeout_s=0.2)).settle()
    assert isinstance(answer, invoke_pb2.InvokeResponse), answer
    assert answer.message.content[0].text == "late but stored"


async def test_no_router_is_an_unavailable_error(client: GatewayClient) -> None:
    exchange = await open_exchange(client, request("req_nobody"), timeout_s=5)
    assert isinstance(exchange.first, GatewayError) and exchange.first.code == "unavailable"
    assert exchange.settle() is exchange.first


async def test_a_consumer_that_leaves_mid_stream_cancels_the_upstream_call(
    nc: NATS, client: GatewayClient
) -> None:
    cancels: asyncio.Queue[str] = asyncio.Queue()

    async def on_cancel(msg: Msg) -> None:
        await cancels.put(msg.subject)

    await nc.subscribe(subjects.cancel("req_left"), cb=on_cancel)
    await respond(nc, lambda: [text_chunk(0, "a"), text_chunk(1, "b")])
    exchange = await open_exchange(client, request("req_left"), timeout_s=5)
    async with contextlib.aclosing(exchange.frames()) as frames:
        async for _ in frames:
            break  # the client went away after the first frame
    assert await asyncio.wait_for(cancels.get(), 5) == subjects.cancel("req_left")
    assert exchange.finished and client.in_flight == 0


async def test_a_request_the_bus_refuses_is_one_internal_error_not_a_cancelled_one(
    nats_server: NatsServer,
) -> None:
    """A publish that fails (here: a closed connection; in the field: a body over the bus's
    max_payload) was a 500 counted as `cancelled`. It is an error frame like any other now:
    answered with a request id in the caller's dialect, counted once as `internal`."""
    from prometheus_client import REGISTRY

    def counted(status: str) -> float:
        labels = {"api": "native", "status": status}
        return REGISTRY.get_sample_value("switchyard_ingress_requests_total", labels) or 0.0

    nc = await bus.connect(nats_server.url, "test-reply-loop-closed")
    client = GatewayClient(nc)
    await client.start()
    await nc.close()
    internal, cancelled = counted("internal"), counted("cancelled")
    exchange = await open_exchange(client, request("req_unsent", stream=False), timeout_s=5)
    assert isinstance(exchange.first, GatewayError) and exchange.first.code == "internal"
    assert "Error" not in exchange.first.message  # no library class names for the client
    assert exchange.settle() is exchange.first
    assert (counted("internal"), counted("cancelled")) == (internal + 1, cancelled)
    assert exchange.finished and client.in_flight == 0


async def test_closing_the_bus_connection_is_not_a_disconnection(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    """`nats: disconnected` was printed on every start and every CLI call (each closes its
    connection); a connection lost to the server is still warned about."""
    from switchyard import bus

    caplog.set_level(logging.INFO, logger="switchyard.bus")
    nc = await bus.connect(nats_server.url, "test-close")
    await nc.close()
    nc = await bus.connect(nats_server.url, "test-drain")
    await nc.drain()
    assert not [r for r in caplog.records if "disconnected" in r.getMessage()]
    nc = await bus.connect(nats_server.url, "test-lost")
    try:
        nats_server.stop()
        for _ in range(100):  # bounded: the client notices the closed socket at once
            if any("disconnected" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.05)
        assert [r.levelno for r in caplog.records if "disconnected" in r.getMessage()] == [logging.WARNING]
    finally:
        await nc.close()
