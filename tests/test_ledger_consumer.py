"""The ledger's durable consumer acks per batch (AckPolicy.ALL), and a ledger upgraded from the
per-event consumer recreates it from its ack floor: what was acked is not delivered again,
nothing unacked is skipped (services/ledger/consumer.py)."""

from __future__ import annotations

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.ledger.consumer import ensure_consumer
from switchyard import subjects
from switchyard.bus import ensure_events_stream
from switchyard.natsserver import NatsServer


async def test_explicit_consumer_is_recreated_as_ack_all_from_its_floor(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await ensure_events_stream(js, 1)
        old = ConsumerConfig(
            durable_name=subjects.LEDGER_DURABLE, filter_subject=subjects.COMPLETION,
            ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL, ack_wait=30,
        )  # fmt: skip
        await js.add_consumer(subjects.EVENTS_STREAM, old)
        for n in range(6):
            await js.publish(subjects.COMPLETION, f"e{n}".encode(), headers={"Nats-Msg-Id": f"r{n}"})
        sub = await js.pull_subscribe_bind(durable=subjects.LEDGER_DURABLE, stream=subjects.EVENTS_STREAM)
        first = await sub.fetch(4, timeout=5)
        for msg in first[:2]:  # e0, e1 stored and acked; e2, e3 delivered, not acked
            # ack_sync: a plain ack is processed by the server after flush() returns, and the
            # floor read below raced it (CI, stop 23: e0 and e1 delivered again)
            await msg.ack_sync()
        await sub.unsubscribe()

        await ensure_consumer(js, "batch", 30, 100)
        info = await js.consumer_info(subjects.EVENTS_STREAM, subjects.LEDGER_DURABLE)
        assert info.config.ack_policy == AckPolicy.ALL
        sub = await js.pull_subscribe_bind(durable=subjects.LEDGER_DURABLE, stream=subjects.EVENTS_STREAM)
        got = await sub.fetch(10, timeout=2)
        assert [m.data for m in got] == [b"e2", b"e3", b"e4", b"e5"]
        await got[-1].ack_sync()  # one ack for the batch
        info = await js.consumer_info(subjects.EVENTS_STREAM, subjects.LEDGER_DURABLE)
        assert info.num_ack_pending == 0 and info.num_pending == 0

        await ensure_consumer(js, "batch", 30, 100)  # already right: left as it is
        again = await js.consumer_info(subjects.EVENTS_STREAM, subjects.LEDGER_DURABLE)
        assert again.ack_floor.stream_seq == info.ack_floor.stream_seq == 6
    finally:
        await nc.close()
