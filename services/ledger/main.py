"""Ledger process: a durable JetStream pull consumer that batches completion events into
ClickHouse, acking a batch only after its insert; the read API of the store over NATS; and the
dashboard (HTTP), served here because in the embedded mode this process owns the chDB folder
(one process per store), so every other reader (CLI, dashboard, budget rebuild) asks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import orjson
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import FetchTimeoutError
from opentelemetry import trace

from switchyard import genai, metrics, subjects, telemetry
from switchyard.bus import ensure_events_stream
from switchyard.logs import register_secret
from switchyard.service import BusService, run
from switchyard.v1 import events_pb2

from .batching import BatchWindow
from .dashboard.server import DashboardServer
from .quotas import QuotaRecorder
from .rows import ATTEMPT_COLUMNS, REQUEST_COLUMNS, attempt_rows, feed_item, request_row
from .store import LedgerStore, is_read_only

tracer = telemetry.tracer("switchyard.ledger")
# How long an idle fetch waits for the first event of a batch before looping (checks stop).
IDLE_FETCH_S = 1.0
LAG_POLL_S = 1.0


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
        register_secret(urlsplit(self.settings.ledger_dsn).password)  # never in a log line
        self.store = LedgerStore(self.settings.ledger_dsn)
        self._consumer: asyncio.Task[None] | None = None
        self._lag: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.dashboard: DashboardServer | None = None
        self.inserted = 0

    async def start(self) -> None:
        settings = self.settings
        await self.store.open()
        for statement in await self.store.apply_retention(
            settings.ledger_retention_days, settings.ledger_rollup_retention_days
        ):
            self.log.info("retention: %s", statement)
        repaired = await self.store.reconcile_rollups(
            settings.ledger_reconcile_hours, settings.ledger_retention_days
        )
        if repaired:
            self.log.warning(
                "rollups repaired for %d minute(s) that disagreed with the raw rows", len(repaired)
            )
        nc = await self.connect()
        js = nc.jetstream()
        await ensure_events_stream(js, settings.stream_replicas)
        self._psub = await js.pull_subscribe(
            subjects.COMPLETION,
            durable=subjects.LEDGER_DURABLE,
            stream=subjects.EVENTS_STREAM,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=settings.ledger_ack_wait_s,
                max_ack_pending=settings.ledger_batch_size * 4,
            ),
        )
        # A queue group: with several ledger replicas each query gets one answer, not one each.
        self._query_sub = await nc.subscribe(
            subjects.LEDGER_QUERY, queue=subjects.LEDGER_QUERY_QUEUE, cb=self._on_query
        )
        self.quotas = QuotaRecorder(nc, self.store, self.settings.ledger_quota_sample_s)
        await self.quotas.start()
        self.dashboard = DashboardServer(settings, self.store, nc)
        try:
            await self.dashboard.start()
            self.log.info("dashboard http://%s:%d/", settings.dashboard_host, self.dashboard.port)
        except OSError as exc:
            # Recording events matters more than the dashboard: keep consuming without it.
            self.log.error("dashboard not started on port %d: %s", settings.dashboard_port, exc)
            self.dashboard = None
        self._consumer = asyncio.create_task(self._consume(), name="ledger-consumer")
        self._lag = asyncio.create_task(self._watch_lag(), name="ledger-lag")
        self.ready = True

    async def _consume(self) -> None:
        settings = self.settings
        while not self._stopping.is_set():
            msgs = await self._collect(BatchWindow(settings.ledger_batch_size, settings.ledger_batch_wait_s))
            if not msgs:
                continue
            try:
                await self.write_batch(msgs)
            except Exception:
                # Not acked: JetStream redelivers after ack_wait, and dedupe keeps it exact.
                metrics.ERRORS.labels(self.name, "insert_failed").inc()
                self.log.exception("ledger insert failed; %d events will be redelivered", len(msgs))
                await asyncio.sleep(1.0)

    async def _collect(self, window: BatchWindow) -> list[Msg]:
        """Pull until the batch is complete (see batching.BatchWindow)."""
        msgs: list[Msg] = []
        while not self._stopping.is_set():
            pull = window.next_pull(time.monotonic(), IDLE_FETCH_S)
            if pull is None:
                break
            if pull.pause_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), pull.pause_s)
            try:
                got = await self._psub.fetch(pull.count, timeout=pull.wait_s)
            except (FetchTimeoutError, NatsTimeoutError, TimeoutError):
                if msgs:
                    break
                continue
            except Exception as exc:  # NATS reconnecting: wait and fetch again
                self.log.warning("fetch failed: %s", exc)
                if msgs:
                    break
                await asyncio.sleep(0.5)
                continue
            msgs.extend(got)
            window.add(len(got), pull.count, time.monotonic())
        return msgs

    async def write_batch(self, msgs: list[Msg]) -> None:
        started_ns = time.time_ns()
        received: list[tuple[events_pb2.Completion, Msg]] = []
        for msg in msgs:
            try:
                received.append((events_pb2.Completion.FromString(msg.data), msg))
            except Exception:
                self.log.error("undecodable completion event dropped (seq %s)", msg.metadata.sequence.stream)
                await msg.term()
        events = [event for event, _ in received]
        metrics.IN_FLIGHT.labels(self.name).inc(len(events))
        try:
            ids = [e.request_id for e in events]
            fresh = dedupe(events, await self.store.existing_request_ids(ids))
            # Attempts first: if we die between the two inserts the replay finds the request
            # missing and writes it, while the attempts already stored are filtered out here.
            stored_attempts = await self.store.existing_request_ids([e.request_id for e in fresh], "attempts")
            attempts = [row for e in fresh if e.request_id not in stored_attempts for row in attempt_rows(e)]
            with metrics.LEDGER_INSERT.time():
                await self.store.insert("attempts", attempts, ATTEMPT_COLUMNS)
                await self.store.insert("requests", [request_row(e) for e in fresh], REQUEST_COLUMNS)
            for msg in msgs:
                await msg.ack()
        finally:
            metrics.IN_FLIGHT.labels(self.name).dec(len(events))
        self.inserted += len(fresh)
        metrics.LEDGER_BATCH.observe(len(events))
        metrics.LEDGER_ROWS.labels("requests").inc(len(fresh))
        metrics.LEDGER_ROWS.labels("attempts").inc(len(attempts))
        metrics.LEDGER_REPLAYS.inc(len(events) - len(fresh))
        metrics.REQUESTS.labels(self.name, "stored").inc(len(fresh))
        metrics.DURATION.labels(self.name).observe((time.time_ns() - started_ns) / 1e9)
        self._trace_batch(received, {e.request_id for e in fresh}, started_ns)
        if fresh and self.nc is not None:
            await self.nc.publish(subjects.LEDGER_FEED, orjson.dumps([feed_item(e) for e in fresh]))

    @staticmethod
    def _trace_batch(
        received: list[tuple[events_pb2.Completion, Msg]], fresh: set[str], started_ns: int
    ) -> None:
        """One span per event, continuing the trace its completion event carried."""
        if not telemetry.recording():
            return  # the spans would record nothing: skip building their attributes
        ended_ns = time.time_ns()
        for event, msg in received:
            span = tracer.start_span(
                "ledger.record",
                context=telemetry.extract_context(msg.headers),
                kind=trace.SpanKind.CONSUMER,
                start_time=started_ns,
                attributes={
                    **genai.completion_attributes(event),
                    "messaging.system": "nats",
                    "messaging.destination.name": subjects.COMPLETION,
                    "switchyard.replay": event.request_id not in fresh,
                },
            )
            span.end(end_time=ended_ns)

    async def _watch_lag(self) -> None:
        """Queue lag of the durable consumer, for /metrics."""
        while not self._stopping.is_set():
            try:
                info = await self._psub.consumer_info()
                metrics.LEDGER_LAG.set(info.num_pending or 0)
                metrics.LEDGER_ACK_PENDING.set(info.num_ack_pending or 0)
            except Exception as exc:
                self.log.debug("consumer info unavailable: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), LAG_POLL_S)

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
        if self.dashboard:
            await self.dashboard.stop()
        for task in (self._consumer, self._lag):
            if task:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(task, self.settings.drain_timeout_s)
        # A pull subscription never empties its pending queue, so nc.drain() would wait on it
        # until the timeout: unsubscribe first (unacked messages are redelivered anyway).
        with contextlib.suppress(Exception):
            await self._psub.unsubscribe()
        await super().drain()
        await self.store.close()


def main() -> None:
    run("ledger", Ledger)
