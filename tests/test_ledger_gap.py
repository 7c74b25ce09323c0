"""Completion events delivered to someone else and never acked (a ledger that died with them, or a
delivery lost in transit with a NATS node) are stored by the live ledger from the stream itself,
not after JetStream's `ack_wait` (services/ledger/main.py `_fill_gap`): with one ack for a whole
batch, the stored events behind them would otherwise wait unacked, and the rows be missing,
for as long as the redelivery takes (CI, stop 24: one completed request had no row within the
chaos test's 40 s). Real nats-server with the bus users' permissions, a real ledger, real chDB."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import nats

from services.ledger.consumer import ensure_consumer
from switchyard import subjects
from switchyard.bus import ensure_events_stream
from switchyard.testing.stack import Stack, ledger_sql
from tests.support.ledger_seed import completion_event

ACK_WAIT_S = 600  # far beyond the test: JetStream's redelivery can be no part of what it sees


async def test_events_held_elsewhere_are_read_from_the_stream(tmp_path: Path) -> None:
    stack = Stack.create(
        tmp_path, SWITCHYARD_LEDGER_ACK_WAIT_S=str(ACK_WAIT_S), SWITCHYARD_LEDGER_BATCH_WAIT_S="0.05"
    )
    nc = None
    try:
        nc = await nats.connect(stack.nats.url)
        js = nc.jetstream()
        await ensure_events_stream(js)
        await ensure_consumer(js, "batch", ACK_WAIT_S, 100)
        now = datetime.now(UTC)
        ids = [f"req_gap_{n}" for n in range(6)]
        for n, request_id in enumerate(ids):
            event = completion_event(request_id, at=now)
            await js.publish(
                subjects.COMPLETION, event.SerializeToString(), headers={"Nats-Msg-Id": request_id}
            )
            if n == 0:  # another subject of the stream between them: not a completion, skipped
                await js.publish("events.test.other", b"not a completion")
        # A consumer that takes the first two and is never heard of again.
        gone = await js.pull_subscribe_bind(durable=subjects.LEDGER_DURABLE, stream=subjects.EVENTS_STREAM)
        held = await gone.fetch(2, timeout=5)
        assert [m.headers["Nats-Msg-Id"] for m in held if m.headers] == ids[:2]
        await gone.unsubscribe()

        ledger = stack.spawn("ledger", "services.ledger")
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            rows = await ledger_sql(stack.nats.url, "SELECT request_id FROM requests ORDER BY request_id")
            info = await js.consumer_info(subjects.EVENTS_STREAM, subjects.LEDGER_DURABLE)
            if len(rows) == len(ids) and info.num_ack_pending == 0:
                break
            assert asyncio.get_running_loop().time() < deadline, (rows, info, stack.logs())
            await asyncio.sleep(0.2)
        # Each once (no FINAL: physically once), the held ones included, and all of it acked:
        # nothing is delivered again later.
        assert [r["request_id"] for r in rows] == ids
        assert info.num_pending == 0 and info.ack_floor.stream_seq == len(ids) + 1
        assert "read from the stream, 2 of them not stored before" in ledger.log()
    finally:
        if nc is not None:
            await nc.close()
        stack.stop()
