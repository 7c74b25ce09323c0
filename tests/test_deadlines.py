"""Deadlines and departed clients at every hop (switchyard/deadlines.py, docs/reliability.md).

The pure book first; then a real router and a real worker (in this process, on a real NATS
server) given requests whose deadline passed or whose client left while they waited: neither
asks the budget nor calls the upstream.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats

from services.providers.main import ProviderWorker
from services.router.main import Router
from switchyard import metrics, subjects
from switchyard.catalog import build_catalog
from switchyard.deadlines import GoneBook, expired, skip_reason
from switchyard.natsserver import NatsServer
from switchyard.settings import Settings
from switchyard.v1 import invoke_pb2


def test_a_deadline_passes_only_when_there_is_one() -> None:
    assert not expired(0, 10_000.0)
    assert not expired(10_001, 10_000.0)
    assert expired(10_000, 10_000.0)


def test_the_gone_book_forgets_after_its_time_and_stays_bounded() -> None:
    book = GoneBook(ttl_s=10, max_ids=3)
    book.add("a", 0.0)
    book.add("b", 5.0)
    assert "a" in book and "b" in book
    book.add("c", 11.0)  # "a" is older than 10 s now
    assert "a" not in book and "b" in book and "c" in book
    for name in ("d", "e", "f"):
        book.add(name, 12.0)
    assert len(book) == 3 and "b" not in book and "f" in book
    assert skip_reason("f", 0, 0.0, book) == "client_gone"
    assert skip_reason("x", 5, 6.0, book) == "deadline"
    assert skip_reason("x", 0, 6.0, book) is None


def skipped(service: str, reason: str) -> float:
    return metrics.SKIPPED.labels(service, reason)._value.get()


CATALOG = build_catalog(
    {
        "demo": {"enabled": False},
        "deployments": [
            {"id": "slow", "provider": "demo", "model": "slow", "options": {"latency_ms": 1500}},
            {"id": "ok", "provider": "demo", "model": "ok", "options": {"latency_ms": 1}},
        ],
    },
    {},
)


def dispatch_for(inbox: str, request_id: str, deployment: str, deadline_ms: int) -> invoke_pb2.Dispatch:
    dispatch = invoke_pb2.Dispatch(reply_to=inbox, max_attempts=1)
    dispatch.request.request_id = request_id
    dispatch.request.model = deployment
    dispatch.request.messages.add(role=invoke_pb2.ROLE_USER).content.add(text="hi")
    dispatch.request.deadline_unix_ms = deadline_ms
    dispatch.chain.add(deployment_id=deployment, provider="demo", model=deployment)
    return dispatch


async def test_a_worker_never_calls_upstream_for_a_request_past_its_deadline(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    worker = ProviderWorker(
        Settings(nats_url=nats_server.url, data_dir=tmp_path), CATALOG, providers=["demo"]
    )
    await worker.start()
    nc = await nats.connect(nats_server.url)
    try:
        inbox = nc.new_inbox()
        replies = await nc.subscribe(inbox)
        await nc.flush()  # the worker answers on its own connection: the server must know the inbox
        dispatch = dispatch_for(inbox, "req_late", "ok", int(time.time() * 1000) - 1)
        before = skipped("providers", "deadline")
        assert await worker.execute(dispatch) == "timeout"
        reply = invoke_pb2.Reply.FromString((await replies.next_msg(timeout=5)).data)
        assert reply.WhichOneof("frame") == "error" and reply.error.code == "timeout"
        assert list(dispatch.attempts) == []  # no upstream call was made
        assert skipped("providers", "deadline") == before + 1
    finally:
        await nc.close()
        await worker.drain()


async def test_a_worker_drops_a_queued_request_whose_client_left(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    # One slot: the second dispatch waits behind the first (1.5 s upstream) for its turn.
    settings = Settings(nats_url=nats_server.url, data_dir=tmp_path, worker_concurrency=1)
    worker = ProviderWorker(settings, CATALOG, providers=["demo"])
    await worker.start()
    nc = await nats.connect(nats_server.url)
    try:
        inbox = nc.new_inbox()
        replies = await nc.subscribe(inbox)
        deadline = int(time.time() * 1000) + 30_000
        before = skipped("providers", "client_gone")
        # Handed off as routers do (switchyard/handoff.py): published, no acknowledgement awaited.
        for dispatch in (
            dispatch_for(inbox, "req_first", "slow", deadline),
            dispatch_for(inbox, "req_queued", "ok", deadline),
        ):
            await nc.publish(
                subjects.provider_invoke("demo"), dispatch.SerializeToString(), reply=nc.new_inbox()
            )
        await nc.flush()
        await nc.publish(subjects.cancel("req_queued"), b"")  # the ingress: its client left
        await nc.flush()
        for _ in range(100):  # bounded: 100 x 100 ms
            if skipped("providers", "client_gone") > before:
                break
            await asyncio.sleep(0.1)
        assert skipped("providers", "client_gone") == before + 1
        first = invoke_pb2.Reply.FromString((await replies.next_msg(timeout=10)).data)
        assert first.WhichOneof("frame") == "final" and first.final.deployment_id == "slow"
        ok_adapter = worker.adapters.get("ok")
        assert ok_adapter is None or ok_adapter._calls == 0  # the queued request was never called
    finally:
        await nc.close()
        await worker.drain()


async def test_a_router_drops_a_request_past_its_deadline_or_whose_client_left(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    # No budget authority runs: a request that reached authorization would fail with 503.
    router = Router(Settings(nats_url=nats_server.url, data_dir=tmp_path), CATALOG)
    await router.start()
    nc = await nats.connect(nats_server.url)
    try:
        inbox = nc.new_inbox()
        replies = await nc.subscribe(f"{inbox}.*")
        late = invoke_pb2.InvokeRequest(
            request_id="req_late", model="ok", deadline_unix_ms=int(time.time() * 1000) - 1
        )
        late.messages.add(role=invoke_pb2.ROLE_USER).content.add(text="hi")
        gone = invoke_pb2.InvokeRequest()
        gone.CopyFrom(late)
        gone.request_id, gone.deadline_unix_ms = "req_gone", int(time.time() * 1000) + 30_000
        before_late, before_gone = skipped("router", "deadline"), skipped("router", "client_gone")
        await nc.publish(subjects.cancel("req_gone"), b"")
        await nc.flush()
        for _ in range(50):  # the router heard the cancel (bounded: 50 x 50 ms)
            if "req_gone" in router.gone:
                break
            await asyncio.sleep(0.05)
        await nc.publish(subjects.INVOKE, gone.SerializeToString(), reply=f"{inbox}.req_gone")
        await nc.publish(subjects.INVOKE, late.SerializeToString(), reply=f"{inbox}.req_late")
        msg = await replies.next_msg(timeout=10)
        reply = invoke_pb2.Reply.FromString(msg.data)
        assert msg.subject.endswith("req_late")  # the departed client's request got no frame
        assert reply.WhichOneof("frame") == "error" and reply.error.code == "timeout"
        assert skipped("router", "deadline") == before_late + 1
        assert skipped("router", "client_gone") == before_gone + 1
    finally:
        await nc.close()
        await router.drain()
