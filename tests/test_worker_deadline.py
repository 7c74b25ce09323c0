"""A worker bounds each upstream attempt by the request's deadline, against a real NATS server.

The worker runs in-process (its real code, its real bus connection); the request is handed to
it as the router would, and the reply is read from the inbox the ingress would listen on.
"""

from __future__ import annotations

import time
from pathlib import Path

import nats

from services.providers.main import ProviderWorker
from switchyard.catalog import build_catalog
from switchyard.natsserver import NatsServer
from switchyard.settings import Settings
from switchyard.v1 import invoke_pb2

CATALOG = build_catalog(
    {
        "demo": {"enabled": False},
        "deployments": [
            {"id": "slow", "provider": "demo", "model": "slow", "options": {"latency_ms": 20_000}},
            {"id": "ok", "provider": "demo", "model": "ok", "options": {"latency_ms": 1}},
        ],
    },
    {},
)


async def test_an_attempt_is_cut_at_the_deadline_and_not_failed_over(
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
        dispatch = invoke_pb2.Dispatch(reply_to=inbox, max_attempts=3)
        dispatch.request.request_id = "req_deadline"
        dispatch.request.model = "x"
        dispatch.request.messages.add(role=invoke_pb2.ROLE_USER).content.add(text="hi")
        dispatch.request.deadline_unix_ms = int(time.time() * 1000) + 300
        dispatch.chain.add(deployment_id="slow", provider="demo", model="slow")
        dispatch.chain.add(deployment_id="ok", provider="demo", model="ok")

        await worker.execute(dispatch)

        reply = invoke_pb2.Reply.FromString((await replies.next_msg(timeout=5)).data)
        # Without the deadline the slow deployment would have answered (after 20 s) or, on a
        # retryable error, the healthy one would have: neither happened.
        assert reply.WhichOneof("frame") == "error"
        assert reply.error.code == "timeout" and not reply.error.retryable
        assert [(a.deployment_id, a.error_code) for a in dispatch.attempts] == [("slow", "timeout")]
    finally:
        await nc.close()
        await worker.drain()
