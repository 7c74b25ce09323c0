"""The hand-off without a per-request ack (switchyard/handoff.py), through a real nats-server: a
pool with no worker is found from nats-server's no-responders status, a full worker's "busy"
moves the dispatch on, and a dispatch a worker takes gets no answer at all."""

from __future__ import annotations

import asyncio

import nats

from switchyard import subjects
from switchyard.handoff import BUSY_TRIES, HandOff
from switchyard.natsserver import NatsServer
from switchyard.v1 import invoke_pb2


def dispatch_for(*providers: str) -> invoke_pb2.Dispatch:
    dispatch = invoke_pb2.Dispatch(reply_to="_INBOX.test.x")
    dispatch.request.request_id = "req-1"
    for provider in providers:
        dispatch.chain.add(deployment_id=f"{provider}/m", provider=provider, model="m")
    return dispatch


async def test_no_worker_busy_and_taken(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    worker = await nats.connect(nats_server.url)
    try:
        exhausted: asyncio.Queue[tuple[invoke_pb2.Dispatch, str]] = asyncio.Queue()
        moved: list[tuple[int, str]] = []

        async def on_exhausted(dispatch: invoke_pb2.Dispatch, target: invoke_pb2.Target) -> None:
            await exhausted.put((dispatch, target.provider))

        handoff = HandOff(on_exhausted, lambda d, t: moved.append((d.position, t.provider)))
        await handoff.start(nc)

        # A pool nobody serves: nats-server answers 503 at once and the chain runs out.
        lone = dispatch_for("nobody")
        assert await handoff.send(lone)
        dispatch, provider = await asyncio.wait_for(exhausted.get(), 5)
        assert provider == "nobody" and dispatch.position == 1
        assert [a.error_code for a in dispatch.attempts] == ["no_worker"]
        assert not await handoff.send(dispatch)  # nothing left to try

        # Missing, then full, then a worker that takes it (and answers nothing).
        taken: asyncio.Queue[invoke_pb2.Dispatch] = asyncio.Queue()

        async def full(msg: nats.aio.msg.Msg) -> None:
            await msg.respond(subjects.HANDOFF_BUSY)

        async def takes(msg: nats.aio.msg.Msg) -> None:
            await taken.put(invoke_pb2.Dispatch.FromString(msg.data))

        await worker.subscribe(subjects.provider_invoke("full"), queue="full", cb=full)
        await worker.subscribe(subjects.provider_invoke("free"), queue="free", cb=takes)
        await worker.flush()
        chained = dispatch_for("nobody", "full", "free")
        assert await handoff.send(chained)
        got = await asyncio.wait_for(taken.get(), 5)
        assert got.position == 2
        assert [a.error_code for a in got.attempts] == ["no_worker", "overloaded"]
        # Moved on from "nobody", asked "full" BUSY_TRIES times, then on to "free".
        assert moved == [(1, "nobody")] + [(1, "full")] * (BUSY_TRIES - 1) + [(2, "full")]
        await asyncio.sleep(0.2)
        assert exhausted.empty()  # taken: no answer, nothing ended

        # Every pool full: ended once, with an overloaded attempt.
        busy = dispatch_for("full")
        assert await handoff.send(busy)
        dispatch, provider = await asyncio.wait_for(exhausted.get(), 5)
        assert provider == "full" and [a.error_code for a in dispatch.attempts] == ["overloaded"]
        await handoff.stop()
    finally:
        await worker.close()
        await nc.close()
