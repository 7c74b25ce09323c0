"""Ledger process: a durable JetStream pull consumer that batches completion events into
ClickHouse, acking a batch only after its insert; the read API of the store over NATS; and the
dashboard (HTTP), served here because in the embedded mode this process owns the chDB folder
(one process per store), so every other reader (CLI, dashboard, budget rebuild) asks it.

Reads over NATS: typed protobuf subjects for the services (ledger.read.*, the SQL in reads.py)
and free SQL only on ledger.sql, for the CLI and analysts, behind the admin token and run on the
read-only, capped analyst connection (analyst.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import orjson
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import FetchTimeoutError
from opentelemetry import trace

from switchyard import genai, metrics, subjects, telemetry
from switchyard.bus import NATS_ERRORS, ensure_events_stream, stream_messages
from switchyard.logs import register_secret
from switchyard.service import BusService, run
from switchyard.tenancy_store import load_or_create_admin_token
from switchyard.v1 import events_pb2, ledger_pb2

from . import reads
from .alerts import AlertRecorder
from .analyst import RefusedSql, SqlCaps
from .batching import BatchWindow
from .consumer import ensure_consumer
from .dashboard.server import DashboardServer
from .quotas import QuotaRecorder
from .rows import ATTEMPT_COLUMNS, REQUEST_COLUMNS, attempt_rows, feed_item, request_row
from .store import AnalystReader, LedgerStore

tracer = telemetry.tracer("switchyard.ledger")
# How long an idle fetch waits for the first event of a batch before asking again. An event
# published meanwhile is delivered at once (the pull stays open on the server), so this sets
# only how often an idle ledger wakes itself and NATS; stopping interrupts it (`drain`).
IDLE_FETCH_S = 5.0
# The consumer's lag for /metrics (the ingress reads its own for shedding, edge.py).
LAG_POLL_S = 5.0
# How long stored events may wait unacked behind events this ledger was never given (a delivery
# lost with a NATS node, or held by a ledger that died) before it reads those from the stream
# itself (`_fill_gap`) instead of waiting for JetStream to redeliver them after `ack_wait`.
GAP_FILL_AFTER_S = 2.0


def _json_default(value: Any) -> Any:
    """Decimals as exact text; any other type orjson does not know (IP addresses, ...) as text."""
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def dedupe(events: list[events_pb2.Completion], existing: set[str]) -> list[events_pb2.Completion]:
    """Drop events already stored or repeated in the batch: a replay changes no count."""
    seen = set(existing)
    fresh = []
    for event in events:
        if event.request_id not in seen:
            seen.add(event.request_id)
            fresh.append(event)
    return fresh


class StoreReadError(Exception):
    """A typed read failed in the store (the store's text is in the log, not in the reply)."""


def _error(code: str, message: str) -> ledger_pb2.LedgerError:
    return ledger_pb2.LedgerError(code=code, message=message)


class Ledger(BusService):
    name = "ledger"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = self.settings
        register_secret(urlsplit(settings.ledger_dsn).password)  # never in a log line
        self.store = LedgerStore(settings.ledger_dsn)
        self.analyst = AnalystReader(
            settings.ledger_dsn,
            caps=SqlCaps(
                max_execution_s=settings.ledger_sql_max_execution_s,
                max_memory_bytes=settings.ledger_sql_max_memory_bytes,
                max_result_rows=settings.ledger_sql_max_result_rows,
                max_result_bytes=settings.ledger_sql_max_result_bytes,
                max_threads=settings.ledger_sql_max_threads,
            ),
        )
        self.admin_token = ""
        self._consumer: asyncio.Task[None] | None = None
        self._lag: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._idle_fetch = False
        self.dashboard: DashboardServer | None = None
        # Stored, not yet acknowledged (one ack per batch: `_ack_stored`).
        self._unacked: list[Msg] = []
        # Since when stored events have waited unacked behind events held elsewhere.
        self._held_since: float | None = None

    async def start(self) -> None:
        settings = self.settings
        await self.store.open()
        await self.analyst.open()
        self.admin_token = load_or_create_admin_token(settings.configured_admin_token, settings.data_dir)
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
        await ensure_consumer(
            js, settings.ledger_ack, settings.ledger_ack_wait_s, settings.ledger_batch_size * 4
        )
        self._psub = await js.pull_subscribe(
            subjects.COMPLETION, durable=subjects.LEDGER_DURABLE, stream=subjects.EVENTS_STREAM
        )
        # A queue group: with several ledger replicas each query gets one answer, not one each.
        for subject, handler in (
            (subjects.LEDGER_READ_REQUEST, self._on_request_lookup),
            (subjects.LEDGER_READ_SPEND, self._on_spend_snapshot),
            (subjects.LEDGER_READ_USAGE, self._on_usage),
            (subjects.LEDGER_SQL, self._on_sql),
        ):
            await nc.subscribe(subject, queue=subjects.LEDGER_QUERY_QUEUE, cb=handler)
        self.quotas = QuotaRecorder(nc, self.store, self.settings.ledger_quota_sample_s)
        await self.quotas.start()
        self.alerts = AlertRecorder(nc, self.store)
        await self.alerts.start()
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
            # A batch whose insert failed is retried here before anything newer is pulled: with
            # one ack per batch (consumer.py) a later batch's ack would cover these events too.
            while msgs:
                try:
                    await self.write_batch(msgs)
                    break
                except Exception:  # the consumer loop must outlive anything (a store or NATS failure)
                    # Not acked: retried while this process lives; JetStream redelivers it to
                    # the next ledger if it dies, and dedupe keeps it exact either way.
                    metrics.ERRORS.labels(self.name, "insert_failed").inc()
                    self.log.exception("ledger insert failed; retrying %d events", len(msgs))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), 1.0)
                    if self._stopping.is_set():
                        break

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
                self._idle_fetch = not msgs  # nothing gathered yet: `drain` may cut this wait short
                got = await self._psub.fetch(pull.count, timeout=pull.wait_s)
            except (FetchTimeoutError, NatsTimeoutError, TimeoutError):
                if msgs:
                    break
                await self._ack_stored()  # idle: an ack that had to wait may be safe now
                continue
            except Exception as exc:  # NATS reconnecting: wait and fetch again
                self.log.warning("fetch failed: %s", exc)
                if msgs:
                    break
                await asyncio.sleep(0.5)
                continue
            finally:
                self._idle_fetch = False
            msgs.extend(got)
            window.add(len(got), pull.count, time.monotonic())
        return msgs

    async def write_batch(self, msgs: list[Msg]) -> None:
        started_ns = time.time_ns()
        received: list[tuple[events_pb2.Completion, Msg]] = []
        for msg in msgs:
            try:
                received.append((events_pb2.Completion.FromString(msg.data), msg))
            except DecodeError:
                # Redelivery cannot make it decode: terminated here (it stays in the stream).
                metrics.ERRORS.labels(self.name, "undecodable_event").inc()
                self.log.error(
                    "undecodable completion event dropped (request %s, seq %s)",
                    (msg.headers or {}).get("Nats-Msg-Id", "unknown"),
                    msg.metadata.sequence.stream,
                )
                await msg.term()
        events = [event for event, _ in received]
        metrics.IN_FLIGHT.labels(self.name).inc(len(events))
        try:
            fresh = await self._store(events)
            if self.settings.ledger_ack == "batch":
                self._unacked.extend(m for _, m in received)  # the undecodable were terminated
                await self._ack_stored()
            else:
                for msg in msgs:
                    await msg.ack()
        finally:
            metrics.IN_FLIGHT.labels(self.name).dec(len(events))
        metrics.DURATION.labels(self.name).observe((time.time_ns() - started_ns) / 1e9)
        self._trace_batch(received, {e.request_id for e in fresh}, started_ns)

    async def _store(self, events: list[events_pb2.Completion]) -> list[events_pb2.Completion]:
        """Insert the events not stored yet (a replay changes no count); returns those."""
        ids = [e.request_id for e in events]
        fresh = dedupe(events, await self.store.existing_request_ids(ids))
        # Attempts first: if we die between the two inserts the replay finds the request
        # missing and writes it, while the attempts already stored are filtered out here.
        stored_attempts = await self.store.existing_request_ids([e.request_id for e in fresh], "attempts")
        attempts = [row for e in fresh if e.request_id not in stored_attempts for row in attempt_rows(e)]
        with metrics.LEDGER_INSERT.time():
            await self.store.insert("attempts", attempts, ATTEMPT_COLUMNS)
            await self.store.insert("requests", [request_row(e) for e in fresh], REQUEST_COLUMNS)
        metrics.LEDGER_BATCH.observe(len(events))
        metrics.LEDGER_ROWS.labels("requests").inc(len(fresh))
        metrics.LEDGER_ROWS.labels("attempts").inc(len(attempts))
        metrics.LEDGER_REPLAYS.inc(len(events) - len(fresh))
        metrics.REQUESTS.labels(self.name, "stored").inc(len(fresh))
        if fresh and self.nc is not None:
            await self.nc.publish(subjects.LEDGER_FEED, orjson.dumps([feed_item(e) for e in fresh]))
        return fresh

    async def _ack_stored(self) -> None:
        """One ack for every stored event (AckPolicy.ALL: the highest covers all below it), but
        never over an event not stored: while the consumer counts more events unacked than this
        ledger holds, the others were delivered elsewhere (to a ledger killed mid-batch, or
        lost in transit with a NATS node) and an ack-all would cover them unstored. The stored
        events then wait here unacked; after GAP_FILL_AFTER_S this ledger reads the missing
        ones from the stream and stores them itself (`_fill_gap`), rather than wait for
        JetStream to redeliver them after `ack_wait` (which a consumer leader change can
        delay further: CI, stop 24). A restart redelivers whatever is unacked; dedupe keeps
        every count exact."""
        if not self._unacked:
            return
        try:
            info = await self._psub.consumer_info()
            ours = {m.metadata.sequence.stream for m in self._unacked}  # a redelivery counts once
            if (info.num_ack_pending or 0) > len(ours):
                now = time.monotonic()
                if self._held_since is None:
                    self._held_since = now
                if now - self._held_since < GAP_FILL_AFTER_S:
                    return
                floor = info.ack_floor.stream_seq if info.ack_floor and info.ack_floor.stream_seq else 0
                await self._fill_gap(floor, max(ours), ours, now - self._held_since)
            await max(self._unacked, key=lambda m: m.metadata.sequence.stream).ack()
        except NATS_ERRORS as exc:  # the next batch (or idle pull) tries again
            self.log.warning("batch ack deferred: %s", exc)
            return
        self._held_since = None
        self._unacked.clear()

    async def _fill_gap(self, floor: int, top: int, ours: set[int], held_s: float) -> None:
        """Store the completion events between the ack floor and `top` that this ledger was not
        given, read from the stream by sequence (at most the consumer's max_ack_pending)."""
        assert self.nc is not None
        events: list[events_pb2.Completion] = []
        async for raw in stream_messages(
            self.nc.jetstream(), subjects.EVENTS_STREAM, subjects.COMPLETION, floor + 1, top
        ):
            if raw.seq in ours or not raw.data:
                continue
            try:
                events.append(events_pb2.Completion.FromString(raw.data))
            except DecodeError:
                metrics.ERRORS.labels(self.name, "undecodable_event").inc()
                self.log.error("undecodable completion event skipped (seq %s)", raw.seq)
        fresh = await self._store(events)
        self.log.warning(
            "%d completion events below stream sequence %d were held elsewhere for %.1f s: read "
            "from the stream, %d of them not stored before",
            len(events), top, held_s, len(fresh),
        )  # fmt: skip

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

    # --- reads over NATS ----------------------------------------------------------------

    async def _read(
        self, what: str, sql: str, params: dict[str, Any]
    ) -> tuple[list[str], Sequence[Sequence[Any]]]:
        """A typed read's query; a store failure is logged in full and raised as StoreReadError."""
        try:
            return await self.store.query(sql, params)
        except Exception as exc:
            metrics.ERRORS.labels(self.name, "read_failed").inc()
            self.log.error("ledger read %s failed: %s", what, exc)
            raise StoreReadError from None

    async def _on_request_lookup(self, msg: Msg) -> None:
        """ledger.read.request: one request's row, only within the asking project."""
        try:
            ask = ledger_pb2.RequestLookup.FromString(msg.data)
        except Exception:
            ask = ledger_pb2.RequestLookup()
        if not ask.request_id or not ask.project_id:
            reply = ledger_pb2.RequestLookupReply(
                error=_error("invalid_argument", "request_id and project_id are required")
            )
        else:
            try:
                reply = reads.request_lookup_reply(
                    *await self._read("request", *reads.request_by_id_query(ask))
                )
            except StoreReadError:
                reply = ledger_pb2.RequestLookupReply(
                    error=_error("unavailable", "the ledger could not read the request")
                )
        await msg.respond(reply.SerializeToString())

    async def _on_spend_snapshot(self, msg: Msg) -> None:
        """ledger.read.spend: the budget rebuild's per-scope sums and the journal ids stored."""
        try:
            ask = ledger_pb2.SpendSnapshotQuery.FromString(msg.data)
        except Exception:
            await msg.respond(
                ledger_pb2.SpendSnapshot(error=_error("invalid_argument", "undecodable")).SerializeToString()
            )
            return
        try:
            columns, rows = await self._read("spend", *reads.spend_query(ask))
            stored: list[str] = []
            if ask.journal_request_ids:
                _, found = await self._read(
                    "stored ids", *reads.stored_ids_query(list(ask.journal_request_ids))
                )
                stored = [row[0] for row in found]
            reply = reads.spend_snapshot(columns, rows, stored)
        except StoreReadError:
            reply = ledger_pb2.SpendSnapshot(
                error=_error("unavailable", "the ledger could not read the spend")
            )
        await msg.respond(reply.SerializeToString())

    async def _on_usage(self, msg: Msg) -> None:
        """ledger.read.usage: one project's spend and agent roll-ups (GET /v1/usage)."""
        reply = await self.usage(msg.data)
        await msg.respond(reply.SerializeToString())

    async def usage(self, data: bytes) -> ledger_pb2.UsageReply:
        try:
            ask = ledger_pb2.UsageQuery.FromString(data)
        except DecodeError:
            ask = ledger_pb2.UsageQuery()
        if not ask.project_id:
            return ledger_pb2.UsageReply(error=_error("invalid_argument", "project_id is required"))
        try:
            scopes, agents = [
                await self._read("usage", sql, params) for sql, params in reads.usage_queries(ask)
            ]
        except StoreReadError:
            return ledger_pb2.UsageReply(error=_error("unavailable", "the ledger could not read the usage"))
        return reads.usage_reply(scopes, agents)

    def _is_admin(self, msg: Msg) -> bool:
        given = (msg.headers or {}).get("Authorization", "").removeprefix("Bearer ").strip()
        return bool(self.admin_token) and hmac.compare_digest(given.encode(), self.admin_token.encode())

    async def _on_sql(self, msg: Msg) -> None:
        """ledger.sql: an analyst's SQL (JSON), admin token required, run read-only and capped."""
        if not self._is_admin(msg):
            metrics.ERRORS.labels(self.name, "sql_unauthorized").inc()
            body: dict[str, Any] = {
                "code": "unauthorized",
                "error": "the admin token is required (Authorization: Bearer)",
            }
        else:
            try:
                ask = orjson.loads(msg.data)
                sql, params = str(ask["sql"]), ask.get("params") or {}
                if not isinstance(params, dict):
                    raise RefusedSql("invalid_sql", "params must be an object")
                columns, rows = await self.analyst.query(sql, params)
                body = {"columns": columns, "rows": rows}
            except RefusedSql as refused:
                body = {"code": refused.code, "error": str(refused)}
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                body = {
                    "code": "invalid_sql",
                    "error": 'the request must be JSON: {"sql": "...", "params": {...}}',
                }
            except Exception as exc:  # the analyst thread gone (draining): answer, do not hang
                self.log.error("analyst query not run: %s", exc)
                body = {"code": "unavailable", "error": "the ledger could not run the query"}
        reply = orjson.dumps(body, default=_json_default, option=orjson.OPT_PASSTHROUGH_DATACLASS)
        limit = self.nc.max_payload if self.nc is not None else len(reply)
        if len(reply) > limit:
            reply = orjson.dumps(
                {
                    "code": "cut_off",
                    "error": f"cut off: the result is {len(reply)} bytes, over the bus's {limit}: aggregate or add a LIMIT",
                }
            )
        await msg.respond(reply)

    async def drain(self) -> None:
        self._stopping.set()
        if self._idle_fetch and self._consumer:
            # Waiting for a first event, holding none: stop now rather than at the fetch's end
            # (anything delivered in this instant is unacked, so redelivered, and deduped).
            self._consumer.cancel()
        await self.quotas.stop()
        await self.alerts.stop()
        if self.dashboard:
            await self.dashboard.stop()
        for task in (self._consumer, self._lag):
            if task:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(task, self.settings.drain_timeout_s)
        # A pull subscription never empties its pending queue, so nc.drain() would wait on it
        # until the timeout: unsubscribe first (unacked messages are redelivered anyway).
        with contextlib.suppress(*NATS_ERRORS):
            await self._psub.unsubscribe()
        await super().drain()
        await self.analyst.close()
        await self.store.close()


def main() -> None:
    run("ledger", Ledger)
