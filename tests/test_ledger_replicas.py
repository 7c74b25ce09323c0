"""Two ledger processes on one NATS: each `ledger.sql` query gets exactly one answer (the replicas
share the queue group `ledger`), and both replicas serve queries.

Embedded chDB allows one process per store folder, so each replica here has its own folder;
the query asks for the store's path, which tells the replicas apart."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path

import nats
import orjson
import pytest

from switchyard import subjects
from switchyard.testing.stack import Stack, running

QUERIES = 30


@pytest.fixture
def two_ledgers() -> Iterator[Stack]:
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-ledgers-"))
    stack = Stack.create(workdir)
    with running(stack):
        started = [
            stack.spawn(
                "ledger", "services.ledger", wait=False, SWITCHYARD_DATA_DIR=str(workdir / f"data-{i}")
            )
            for i in range(2)
        ]
        for service in started:
            stack.wait_ready(service)
        yield stack


async def test_each_query_is_answered_by_exactly_one_replica(two_ledgers: Stack) -> None:
    nc = await nats.connect(two_ledgers.nats.url)
    try:
        inbox = nc.new_inbox()
        replies: list[dict] = []
        all_in = asyncio.Event()

        async def on_reply(msg) -> None:
            replies.append(orjson.loads(msg.data))
            if len(replies) >= QUERIES:
                all_in.set()

        await nc.subscribe(f"{inbox}.*", cb=on_reply)
        ask = orjson.dumps({"sql": "SELECT getServerSetting('path') AS path"})
        admin = {"Authorization": f"Bearer {two_ledgers.admin_token}"}
        for i in range(QUERIES):
            # One reply subject per query, as nc.request makes: a responder may answer each
            # request it received once (allow_responses, docs/reliability.md "The bus boundary").
            await nc.publish(subjects.LEDGER_SQL, ask, reply=f"{inbox}.{i}", headers=admin)
        await asyncio.wait_for(all_in.wait(), 30)
        # A replica outside the queue group would answer every query a second time: give any
        # such extra answers a moment to arrive, then count.
        await nc.flush()
        await asyncio.sleep(1.0)
    finally:
        await nc.close()

    assert len(replies) == QUERIES, f"{len(replies)} answers to {QUERIES} queries"
    paths = {reply["rows"][0][0] for reply in replies}
    # Both replicas answer (the queue group spreads the queries; all 30 on one is ~2e-9 likely).
    assert len(paths) == 2, paths
