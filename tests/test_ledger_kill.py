"""Exactly once in effect: the ledger is SIGKILLed in the middle of a load of completion events,
some events are replayed past JetStream's duplicate window, and after a restart the ledger
holds every request exactly once, with token and cost sums equal to what was sent, in the raw
tables and in the rollups alike. Real nats-server, real ledger processes, real chDB."""

from __future__ import annotations

import asyncio
import random
import signal
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import nats
from prometheus_client.parser import text_string_to_metric_families

from switchyard import subjects
from switchyard.bus import ensure_events_stream
from switchyard.testing.stack import Stack, ledger_sql
from tests.support.ledger_seed import completion_event

LOAD = 3000
REPLAYED = 300


def metric(url: str, name: str) -> float:
    for family in text_string_to_metric_families(httpx.get(url, timeout=5).text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    return 0.0


async def stored_count(nats_url: str) -> int:
    return (await ledger_sql(nats_url, "SELECT count() AS n FROM requests"))[0]["n"]


async def test_ledger_killed_mid_load_keeps_every_request_exactly_once(tmp_path: Path) -> None:
    stack = Stack.create(
        tmp_path,
        SWITCHYARD_LEDGER_BATCH_SIZE="200",
        SWITCHYARD_LEDGER_BATCH_WAIT_S="0.05",
        SWITCHYARD_LEDGER_ACK_WAIT_S="2",
    )
    rng = random.Random(6)
    now = datetime.now(UTC) - timedelta(minutes=30)
    events = [
        completion_event(
            f"req_load_{i:05d}",
            at=now + timedelta(milliseconds=400 * i),
            project=f"p{i % 3}",
            agent=f"agent{i % 5}",
            prompt=rng.randint(1, 2000),
            completion=rng.randint(1, 800),
            cost=Decimal(rng.randint(1, 10**7)) / Decimal(10**10),
            failed_first_on="flaky" if i % 7 == 0 else "",
            stream=i % 2 == 0,
        )
        for i in range(LOAD)
    ]
    nc = None
    try:
        first = stack.spawn("ledger", "services.ledger")
        nc = await nats.connect(stack.nats.url)
        js = nc.jetstream()
        await ensure_events_stream(js)

        async def publish(batch, msg_id_suffix: str = "") -> None:
            for event in batch:
                await js.publish(
                    subjects.COMPLETION,
                    event.SerializeToString(),
                    headers={"Nats-Msg-Id": event.request_id + msg_id_suffix},
                )

        async def load() -> None:
            for start in range(0, LOAD, 100):
                await publish(events[start : start + 100])
                await asyncio.sleep(0.02)

        loader = asyncio.create_task(load())
        # Kill the ledger once it has stored some of the load, while events keep arriving.
        while (at_kill := await stored_count(stack.nats.url)) < 400:
            await asyncio.sleep(0.05)
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
        await loader
        # Replays: a publisher resending after JetStream's duplicate window (new msg ids), and
        # within it (same msg ids, dropped by JetStream itself).
        replayed = rng.sample(events, REPLAYED)
        await publish(replayed, msg_id_suffix="-resent")
        await publish(replayed[:50])
        assert 0 < at_kill < LOAD, f"the kill should land mid-load (stored {at_kill})"

        second = stack.spawn("ledger", "services.ledger")
        deadline = asyncio.get_running_loop().time() + 60
        while await stored_count(stack.nats.url) < LOAD:
            assert asyncio.get_running_loop().time() < deadline, stack.logs()
            await asyncio.sleep(0.2)
        # Wait until the consumer has nothing pending or unacked, so every replay was seen.
        while True:
            info = await js.consumer_info(subjects.EVENTS_STREAM, subjects.LEDGER_DURABLE)
            if info.num_pending == 0 and info.num_ack_pending == 0:
                break
            assert asyncio.get_running_loop().time() < deadline, stack.logs()
            await asyncio.sleep(0.2)

        raw = (
            await ledger_sql(
                stack.nats.url,
                "SELECT count() AS rows, uniqExact(request_id) AS ids, sum(prompt_tokens) AS prompt, "
                "sum(completion_tokens) AS completion, sum(cost_usd) AS cost FROM requests",
            )
        )[0]
        assert raw["rows"] == LOAD and raw["ids"] == LOAD  # physically once: no FINAL needed
        assert raw["prompt"] == sum(e.usage.prompt_tokens for e in events)
        assert raw["completion"] == sum(e.usage.completion_tokens for e in events)
        assert Decimal(raw["cost"]) == sum(Decimal(e.cost_usd) for e in events)
        attempts = (await ledger_sql(stack.nats.url, "SELECT count() AS n FROM attempts"))[0]["n"]
        assert attempts == sum(len(e.attempts) for e in events)
        rollup = (
            await ledger_sql(
                stack.nats.url,
                "SELECT sum(requests) AS n, sum(prompt_tokens) AS prompt, sum(cost_usd) AS cost, "
                "sum(failovers) AS failovers, sum(streamed) AS streamed FROM requests_by_minute",
            )
        )[0]
        # The rollup's materialized view runs once per insert, so its sum counts inserts: a
        # duplicate that a merge of `requests` had already collapsed would still show here.
        assert rollup["n"] == LOAD
        assert rollup["prompt"] == raw["prompt"]
        assert Decimal(rollup["cost"]) == Decimal(raw["cost"])
        assert rollup["failovers"] == sum(1 for e in events if len(e.attempts) == 2)
        assert rollup["streamed"] == LOAD // 2
        # The replays reached the ledger and were dropped there (not by JetStream alone).
        assert metric(second.metrics_url, "switchyard_ledger_replays_dropped_total") >= REPLAYED
    except BaseException:
        print(stack.logs())
        raise
    finally:
        if nc is not None:
            await nc.close()
        stack.stop()
