"""Ledger process: a durable JetStream pull consumer that batches completion events into
ClickHouse, acking a batch only after its insert; and the read API of the store over NATS.

In the embedded mode this process owns the chDB folder (one process per store), so every
other reader (CLI, dashboard, budget rebuild) asks it on `ledger.query`.
"""

from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal
from typing import Any

import orjson
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import FetchTimeoutError

from switchyard import subjects
from switchyard.bus import ensure_events_stream
from switchyard.service import BusService, run
from switchyard.v1 import events_pb2

from .quotas import QuotaRecorder
from .rows import ATTEMPT_COLUMNS, REQUEST_COLUMNS, attempt_rows, request_row
from .store import LedgerStore, is_read_only

# Longer than the slowest insert we tolerate; an unacked batch is redelivered after it.
ACK_WAIT_S = 30


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    raise TypeError


def dedupe(events: list[events_pb2.Completion], existing: set[str]) -> list[events_pb2.Completion]:
    """Drop events already stored or repeated in the batch: a replay changes no count."""
    seen = set(existing)
    fresh = []
    for event in events:
        if event.request_id not in seen:
            seen.add(event.request_id)
            fresh.append(event)
    return fresh


class Ledger(BusService):
    name = "ledger"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.store = LedgerStore(self.settings.ledger_dsn)
        self._consumer: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.inserted = 0

    async def start(self) -> None:
        await self.store.open()
        nc = await self.connect()
        js = nc.jetstream()
        await ensure_events_stream(js, self.settings.stream_replicas)
        self._psub = await js.pull_subscribe(
            subjects.COMPLETION,
            durable=subjects.LEDGER_DURABLE,
            stream=subjects.EVENTS_STREAM,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=ACK_WAIT_S,
                max_ack_pending=self.settings.ledger_batch_size * 4,
            ),
        )
        self._query_sub = await nc.subscribe(subjects.LEDGER_QUERY, cb=self._on_query)
        self.quotas = QuotaRecorder(nc, self.store, self.settings.ledger_quota_sample_s)
        await self.quotas.start()
        self._consumer = asyncio.create_task(self._consume(), name="ledger-consumer")
        self.ready = True

    async def _consume(self) -> None:
        while not self._stopping.is_set():
            try:
                msgs = await self._psub.fetch(
                    self.settings.ledger_batch_size, timeout=self.settings.ledger_batch_wait_s
                )
            except (FetchTimeoutError, NatsTimeoutError, TimeoutError):
                continue
            except Exception as exc:  # NATS reconnecting: wait and fetch again
                self.log.warning("fetch failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            try:
                await self.write_batch(msgs)
            except Exception:
                # Not acked: JetStream redelivers after ack_wait, and dedupe keeps it exact.
                self.log.exception("ledger insert failed; %d events will be redelivered", len(msgs))
                await asyncio.sleep(1.0)

    async def write_batch(self, msgs: list[Msg]) -> None:
        events: list[events_pb2.Completion] = []
        for msg in msgs:
            try:
                events.append(events_pb2.Completion.FromString(msg.data))
            except Exception:
                self.log.error("undecodable completion event dropped (seq %s)", msg.metadata.sequence.stream)
                await msg.term()
        existing = await self.store.existing_request_ids([e.request_id for e in events])
        fresh = dedupe(events, existing)
        # Attempts first: if we die between the two inserts the replay writes both again, and
        # the attempts table's ReplacingMergeTree key folds the repeat.
        await self.store.insert("attempts", [row for e in fresh for row in attempt_rows(e)], ATTEMPT_COLUMNS)
        await self.store.insert("requests", [request_row(e) for e in fresh], REQUEST_COLUMNS)
        self.inserted += len(fresh)
        for msg in msgs:
            await msg.ack()

    async def _on_query(self, msg: Msg) -> None:
        try:
            ask = orjson.loads(msg.data)
            sql = str(ask["sql"])
            if not is_read_only(sql):
                raise ValueError(
                    "only a single read-only statement (SELECT, WITH, SHOW, DESCRIBE) is allowed"
                )
            columns, rows = await self.store.query(sql, ask.get("params") or {})
            body = {"columns": columns, "rows": rows}
        except Exception as exc:
            body = {
                "error": str(exc).strip().splitlines()[0][:500] if str(exc).strip() else type(exc).__name__
            }
        await msg.respond(orjson.dumps(body, default=_json_default, option=orjson.OPT_PASSTHROUGH_DATACLASS))

    async def drain(self) -> None:
        self._stopping.set()
        await self.quotas.stop()
        if self._consumer:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._consumer, self.settings.drain_timeout_s)
        # A pull subscription never empties its pending queue, so nc.drain() would wait on it
        # until the timeout: unsubscribe first (unacked messages are redelivered anyway).
        with contextlib.suppress(Exception):
            await self._psub.unsubscribe()
        await super().drain()
        await self.store.close()


def main() -> None:
    run("ledger", Ledger)
