"""Budget authority process: caps, rate limits, settlement and alerts (docs/budgets.md).

Any number of budget processes run; exactly one leads, elected through a KV lease. Only the
leader subscribes to `budget.authorize` (queue group `budget`) and `budget.status`, so every
decision is made by one in-memory Authority on one event loop: exact under any concurrency.
A standby takes over when the lease expires: from the leader's latest snapshot on the bus
(snapshot.py), the completion events after it and the reservation journal, without the ledger;
only when no usable snapshot exists (the first start) from the ledger, the completion events
not yet in it and the journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.errors import NotJSMessageError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import (
    FetchTimeoutError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
)
from nats.nuid import NUID
from prometheus_client import Counter, Gauge

from switchyard import metrics, subjects, telemetry, units
from switchyard.burn import BurnWindows
from switchyard.bus import NATS_ERRORS, ensure_events_stream, ensure_stream
from switchyard.errors import ErrorCode
from switchyard.pricing import format_usd
from switchyard.service import BusService, run
from switchyard.tasks import cancel_and_wait
from switchyard.tenancy import TenancyView
from switchyard.tenancy_store import TenancyWatcher, open_bucket, tenancy_bucket
from switchyard.v1 import budget_pb2, events_pb2, ledger_pb2

from . import escrow
from .alerts import Crossing, alert_event, alert_id, alert_message
from .authority import Authority, Verdict, candidates_of, lease_record
from .burn_watch import watch as watch_burn_rates
from .escrow import LeasePolicy, Waiting
from .lease import Lease
from .pressure import publish as publish_pressure
from .quotas import QuotaBook
from .rebuild import rebuild, scope_rows, snapshot_query
from .snapshot import JournalEntry, Snapshot, decode, encode, restore, take
from .webhook import WebhookSender

DECISIONS = Counter("switchyard_budget_decisions_total", "Authorization decisions", ["outcome"])
# Counted per refusal (the `refusing` alert fires once per budget and period; this says how many).
REFUSALS = Counter(
    "switchyard_budget_refusals_total", "Requests a budget cap refused (budget_exceeded)", ["scope"]
)
LEADER = Gauge("switchyard_budget_leader", "1 while this process is the budget authority")
LEASES = Counter("switchyard_budget_leases_total", "Budget leases (escrow)", ["outcome"])
UNCOUNTED = Counter(
    "switchyard_budget_uncounted_completions_total",
    "Completion events settlement could not decode: their spend is not counted against caps",
)
# Reservations are journaled for at most this long after their deadline.
JOURNAL_MAX_AGE_S = 24 * 3600
# The rebuild passes the tail's ids to the ledger in one NATS message (1 MB by default).
MAX_TAIL = 20_000
EXPIRY_EVERY_S = 1.0
# How often the leader publishes provider-quota state (`quota.state`) for the routers' ranking.
QUOTA_STATE_EVERY_S = 0.5
PRUNE_EVERY_S = 60.0
# How often the leader writes its state to the snapshot bucket: a successor replays at most the
# completion events of this long (plus the lease TTL) before it serves.
SNAPSHOT_EVERY_S = 2.0
# What a snapshot was taken at: journal sequence, last settled event, open reservations.
SnapshotMark = tuple[int, int, int, int]
SNAPSHOT_KEY = "authority"
# The journal header that says what a message is (absent: a reservation, an AuthorizeRequest).
JOURNAL_KIND = "Switchyard-Journal"
LEASE_GRANT = "lease"
LEASE_RETURN = "lease-return"
# A new leader waiting longer than this for the ledger to answer its rebuild warns.
REBUILD_QUIET_S = 30.0
# How often a new leader asks again while the ledger cannot answer its rebuild yet. At start-up
# the ledger (embedded chDB) is usually the last service up, 1 to 3 s after the budget: every
# fraction of this interval past that moment is start-up time. A try costs a snapshot read and
# a request that fails at once when no ledger listens.
REBUILD_RETRY_S = 0.2


def rebuild_wait_level(waited_s: float, tries: int) -> int:
    """How loudly a new leader says its rebuild must wait: at start-up the ledger is usually
    not up yet, so that is said once (INFO), then quietly (DEBUG), and warned only if it lasts
    past REBUILD_QUIET_S."""
    if waited_s > REBUILD_QUIET_S:
        return logging.WARNING
    return logging.INFO if tries == 0 else logging.DEBUG


# An idle settlement fetch waits this long (a completion that comes meanwhile is delivered at
# once: this sets only how often an idle authority asks again); after this many empty fetches
# in a row, it checks that the settlement reader still exists (every 3 s, as before).
SETTLE_IDLE_FETCH_S = 3.0
SETTLE_PROBE_EVERY = 1
SETTLE_BATCH = 256
# After a short pull, let completions gather this long before the next: a nats-py fetch returns
# as soon as the server has delivered what it had, so pulling at once again cost a pull request
# and a status message per completion. Settlement is at most this much later.
SETTLE_GATHER_S = 0.05


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def settleable(msg: Msg, log: logging.Logger) -> events_pb2.Completion | None:
    """The completion event in `msg`, or None when it does not decode. Its spend then cannot be
    counted, which must never pass unseen: it is logged with the request id (the event's
    Nats-Msg-Id) and counted in UNCOUNTED. There is nothing to ack or nak: the settlement
    reader is unacknowledged (AckPolicy.NONE), and no redelivery would make the same bytes
    decode; the event stays in the stream, and the ledger, whose durable consumer owns delivery,
    terminates and logs it as well."""
    try:
        return events_pb2.Completion.FromString(msg.data)
    except DecodeError:
        UNCOUNTED.inc()
        log.error(
            "undecodable completion event: its spend is not counted against caps (request %s, subject %s)",
            (msg.headers or {}).get("Nats-Msg-Id", "unknown"),
            msg.subject,
        )
        return None


def journal_entry(msg: Msg) -> JournalEntry:
    """A journal message as what it records (its header says which kind)."""
    seq = msg.metadata.sequence.stream
    kind = (msg.headers or {}).get(JOURNAL_KIND, "")
    if kind == LEASE_GRANT:
        return JournalEntry(seq, lease=budget_pb2.LeaseRecord.FromString(msg.data))
    if kind == LEASE_RETURN:
        return JournalEntry(seq, returned=budget_pb2.LeaseReturn.FromString(msg.data))
    return JournalEntry(seq, ask=budget_pb2.AuthorizeRequest.FromString(msg.data))


@dataclass(frozen=True)
class Asked:
    """An authorization ask being decided: its message (to answer), itself, its trace context."""

    msg: Msg
    ask: budget_pb2.AuthorizeRequest
    ctx: Any


class RebuildNotReady(Exception):
    """The sources are not ready yet (the ledger is not answering or far behind): retry."""


tracer = telemetry.tracer("switchyard.budget")


class BudgetService(BusService):
    name = "budget"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{NUID().next().decode()[:8]}"
        self.view = TenancyView()
        self.authority: Authority | None = None
        self.standby = False  # a healthy standby: another process holds the lease
        self._term: list[asyncio.Task] = []  # the tasks of this leadership term
        self._inflight: set[asyncio.Task] = set()
        self._subs: list = []
        self._alerts: asyncio.Queue[Crossing] = asyncio.Queue()
        self.webhook: WebhookSender | None = None
        # The EVENTS stream sequence of the last completion settled (the snapshot's position).
        self._settled_seq = 0
        # A snapshot is exact (and written) only once _settled_seq has reached this (_take_over).
        self._exact_from = 0
        self._lease_ids = NUID()
        # Asks denied at a cap or a rate limit, waiting for recalled leases (escrow.Waiting), at
        # most half the router's wait for an answer (docs/budgets.md, "At the cap").
        self._parked: Waiting[Asked] = Waiting()
        self._recall_wait_ms = int(self.settings.budget_timeout_s * 1000 / 2)
        self._waker: asyncio.TimerHandle | None = None
        self.lease_policy = LeasePolicy(
            ttl_ms=int(self.settings.budget_escrow_ttl_s * 1000),
            share=self.settings.budget_escrow_share,
            max_requests=self.settings.budget_escrow_max_requests,
            min_requests=self.settings.budget_escrow_min_requests,
            request_timeout_ms=int(self.settings.request_timeout_s * 1000),
        )

    # --- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        nc = await self.connect()
        self.js: JetStreamContext = nc.jetstream()
        replicas = self.settings.stream_replicas
        await ensure_events_stream(self.js, replicas)
        await self._ensure_journal(replicas)
        self.watcher = TenancyWatcher(await tenancy_bucket(self.js, replicas), self.view, self._revoke_leases)
        await self.watcher.start()
        self.alerts_kv = await open_bucket(self.js, subjects.BUDGET_ALERTS_BUCKET, replicas)
        lease_kv = await open_bucket(
            self.js, subjects.BUDGET_LEASE_BUCKET, replicas, ttl_s=self.settings.budget_lease_ttl_s
        )
        self.lease = Lease(lease_kv, self.holder, self.settings.budget_lease_ttl_s)
        self.snapshot_kv = await open_bucket(self.js, subjects.BUDGET_SNAPSHOT_BUCKET, replicas)
        if self.settings.budget_webhook_url:
            self.webhook = WebhookSender(nc, self.settings.budget_webhook_url)
            await self.webhook.start()
        self._alert_task = asyncio.create_task(self._send_alerts(), name="budget-alerts")
        self._lease_task = asyncio.create_task(self._lead(), name="budget-lease")
        self.ready = True

    def is_ready(self) -> bool:
        serving = self.authority is not None and self.lease.valid()
        return self.ready and not self.draining and (serving or self.standby)

    async def _ensure_journal(self, replicas: int) -> None:
        config = StreamConfig(
            name=subjects.BUDGET_JOURNAL_STREAM,
            subjects=[subjects.BUDGET_JOURNAL],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            num_replicas=replicas,
            max_age=JOURNAL_MAX_AGE_S,
        )
        await ensure_stream(self.js, config, update=False)

    # --- leadership ---------------------------------------------------------------------

    async def _lead(self) -> None:
        ttl = self.settings.budget_lease_ttl_s
        while not self.draining:
            try:
                if not self.lease.held:
                    if await self.lease.try_acquire():
                        self.log.info("leading the budget authority (%s)", self.holder)
                        self.standby = False
                        self._term.append(asyncio.create_task(self._take_over(), name="budget-takeover"))
                    else:
                        self.standby = bool(await self.lease.current_holder())
                        await asyncio.sleep(ttl / 4)
                        continue
                await asyncio.sleep(ttl / 3)
                if not await self.lease.renew():
                    self.log.warning("lost the budget lease: stepping down")
                    await self._step_down()
            except asyncio.CancelledError:
                raise
            # NATS reconnecting (and the loop must outlive anything): keep trying, the lease fences us
            except Exception as exc:
                self.log.warning("lease loop: %s", exc)
                await asyncio.sleep(0.5)

    async def _take_over(self) -> None:
        since, tries = time.monotonic(), 0
        while self.lease.valid():
            try:
                restored = await self._restore_from_snapshot()
                exact_from = 0
                if restored is None:
                    authority, consumer, read_up_to = await self._rebuild()
                    # The ledger's sum includes events after the tail (its "recent" ids, marked
                    # settled): a snapshot is exact only once settlement has passed them all.
                    exact_from = (await self.js.stream_info(subjects.EVENTS_STREAM)).state.last_seq
                else:
                    authority, consumer, read_up_to = restored
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a leader that cannot rebuild retries rather than exits
                level = rebuild_wait_level(time.monotonic() - since, tries)
                self.log.log(level, "rebuild not possible yet (%s): retrying", exc)
                tries += 1
                await asyncio.sleep(REBUILD_RETRY_S)
        else:
            return
        self._settled_seq, self._exact_from = read_up_to, exact_from
        self.authority = authority
        LEADER.set(1)
        nc = self.bus
        self._subs = [
            await nc.subscribe(subjects.BUDGET_AUTHORIZE, queue=subjects.BUDGET_QUEUE, cb=self._on_authorize),
            await nc.subscribe(subjects.BUDGET_LEASE, queue=subjects.BUDGET_QUEUE, cb=self._on_lease),
            await nc.subscribe(subjects.BUDGET_STATUS, cb=self._on_status),
        ]
        self._term.append(
            asyncio.create_task(self._settle(authority, consumer, read_up_to), name="budget-settle")
        )
        if authority.quotas.quotas:  # some deployment declares provider limits (docs/quotas.md)
            # Fan-out: the providers' rate-limit headers and 429s lower the quota buckets.
            self._subs.append(await nc.subscribe(subjects.PROVIDER_STATS, cb=self._on_provider_stat))
            self._term.append(asyncio.create_task(self._publish_quotas(authority), name="budget-quotas"))
        self._term.append(asyncio.create_task(self._expire(authority), name="budget-expire"))
        self._term.append(asyncio.create_task(self._snapshots(authority), name="budget-snapshots"))
        self._term.append(asyncio.create_task(self._burn_rates(authority), name="budget-burn"))
        self._term.append(
            asyncio.create_task(publish_pressure(authority, self._send_pressure), name="budget-pressure")
        )
        for crossing in authority.all_reached(now_ms()):  # alerts a crashed leader may have owed
            self._alerts.put_nowait(crossing)
        self.log.info(
            "authority ready: %d scopes counted, %d open reservations",
            len({slot[0] for slot in authority.book.counters}),
            len(authority.book.reservations),
        )

    async def _step_down(self) -> None:
        LEADER.set(0)
        self.authority = None
        for parked in self._parked.take_all():  # not ours to decide any more: fail closed
            self._spawn(self._unavailable(parked.item.msg, parked.item.ask))
        for sub in self._subs:
            with contextlib.suppress(*NATS_ERRORS):
                await sub.unsubscribe()
        self._subs = []
        # Awaited only to end them: a task's own failure was logged by its loop.
        await asyncio.gather(*(cancel_and_wait(task) for task in self._term))
        self._term = []
        self.lease.drop()

    # --- snapshots ----------------------------------------------------------------------

    async def _snapshots(self, authority: Authority) -> None:
        """Write the authority's state every SNAPSHOT_EVERY_S (at once after a takeover); an
        idle authority, whose state has not moved since the last one, writes nothing."""
        written: SnapshotMark | None = None
        while True:
            try:
                written = await self._write_snapshot(authority, written)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS away, or a snapshot too large: log, the next tick tries again
                self.log.warning("budget snapshot not written: %s", exc)
            await asyncio.sleep(SNAPSHOT_EVERY_S)

    async def _write_snapshot(
        self, authority: Authority, unless: SnapshotMark | None = None
    ) -> SnapshotMark | None:
        """Write a snapshot unless the state is still the one `unless` marks; the mark of what
        is now stored (None: nothing written by this call, nor known)."""
        journal_seq = (await self.js.stream_info(subjects.BUDGET_JOURNAL_STREAM)).state.last_seq
        # From here to `take`, no await: the copy is exact at both positions (snapshot.py).
        if not self.lease.valid() or self.authority is not authority:
            return None  # not (or no longer) the leader: never overwrite a successor's snapshot
        if self._settled_seq < self._exact_from:
            return None  # rebuilt from the ledger: settlement has not passed its recent ids yet
        # Every change of the book is a journal write (reservations, lease grants and returns),
        # a settled event (spend, releases, lease admissions) or an expiry (the reservation and
        # lease counts): the same four, the same state.
        mark = (journal_seq, self._settled_seq, len(authority.book.reservations), len(authority.leases))
        if mark == unless:
            return unless
        snapshot = take(
            authority.book, self._settled_seq, journal_seq, now_ms(), tuple(authority.leases.values())
        )
        await self.snapshot_kv.put(SNAPSHOT_KEY, encode(snapshot))
        return mark

    async def _read_snapshot(self) -> Snapshot | None:
        try:
            entry = await self.snapshot_kv.get(SNAPSHOT_KEY)
        except (KeyNotFoundError, KeyDeletedError):
            return None
        try:
            return decode(entry.value or b"")
        except ValueError as exc:
            self.log.warning("budget snapshot not usable (%s): rebuilding from the ledger", exc)
            return None

    async def _restore_from_snapshot(
        self,
    ) -> tuple[Authority, JetStreamContext.PullSubscription, int] | None:
        """The authority from the latest snapshot, the journal and the completion events after
        it (settled here, before any request is decided); None when there is no usable one."""
        snapshot = await self._read_snapshot()
        if snapshot is None:
            self.log.info("no budget snapshot yet: rebuilding spend from the ledger")
            return None
        state = (await self.js.stream_info(subjects.EVENTS_STREAM)).state
        if state.messages and state.first_seq > snapshot.events_seq + 1:
            self.log.warning(
                "the completion events after the budget snapshot (sequence %d) have left the stream "
                "(it starts at %d): rebuilding spend from the ledger instead; month and total caps "
                "count only what the ledger retains",
                snapshot.events_seq,
                state.first_seq,
            )
            return None
        journal = await self._read_journal()
        grace_ms = int(self.settings.budget_reservation_grace_s * 1000)
        quotas = QuotaBook({d.id: d.limits for d in self.catalog.deployments.values()}, now_ms() / 1000)
        authority = restore(self.view, snapshot, journal, now_ms(), grace_ms, quotas)
        consumer = await self._completion_reader(snapshot.events_seq + 1)
        read_up_to = snapshot.events_seq
        try:
            pending = (await consumer.consumer_info()).num_pending or 0
            while pending > 0:
                msgs = await consumer.fetch(min(pending, 1000), timeout=5)
                for msg in msgs:
                    read_up_to = msg.metadata.sequence.stream
                    event = settleable(msg, self.log)
                    if event is not None:
                        authority.settle(event, now_ms())
                pending = msgs[-1].metadata.num_pending
        except BaseException:
            with contextlib.suppress(*NATS_ERRORS):
                await consumer.unsubscribe()
            raise
        self.log.info(
            "restored from the budget snapshot of %d ms ago: %d events after it, %d journaled reservations",
            now_ms() - snapshot.taken_ms,
            read_up_to - snapshot.events_seq,
            len(journal),
        )
        return authority, consumer, read_up_to

    # --- rebuild ------------------------------------------------------------------------

    async def _rebuild(self) -> tuple[Authority, JetStreamContext.PullSubscription, int]:
        js = self.js
        try:
            floor = (await js.consumer_info(subjects.EVENTS_STREAM, subjects.LEDGER_DURABLE)).ack_floor
            floor_seq = floor.stream_seq if floor else 0
        except NotFoundError:
            floor_seq = 0
        consumer = await self._completion_reader(floor_seq + 1)
        try:
            tail_msgs = await self._read_all(consumer, MAX_TAIL)
            tail = [events_pb2.Completion.FromString(m.data) for m in tail_msgs]
            # Where settlement goes on from (and starts again from, if its reader is lost).
            read_up_to = tail_msgs[-1].metadata.sequence.stream if tail_msgs else floor_seq
            tail_read_ms = now_ms()
            entries = await self._read_journal()
            journal = [e.ask for e in entries if e.ask is not None]
            leases = [e.lease or e.returned for e in entries if e.ask is None]
            tail_ids = sorted({e.request_id for e in tail})
            # Journaled ids the tail settles need no lookup; those the snapshot lists as recent
            # are settled by it too, so asking for them as well changes nothing.
            journal_ids = sorted({a.request_id for a in journal} - set(tail_ids))
            snapshot = await self._spend_snapshot(
                snapshot_query(tail_ids, tail_read_ms, tail_read_ms, journal_ids)
            )
            rows = scope_rows(snapshot)
            done = set(snapshot.stored_journal_ids)
            grace_ms = int(self.settings.budget_reservation_grace_s * 1000)
            quotas = QuotaBook({d.id: d.limits for d in self.catalog.deployments.values()}, now_ms() / 1000)
            authority = rebuild(
                self.view, rows, tail, journal, done, now_ms(), grace_ms, quotas, [e for e in leases if e]
            )
        except BaseException:
            with contextlib.suppress(*NATS_ERRORS):
                await consumer.unsubscribe()
            raise
        self.log.info(
            "rebuilt from the ledger (%d groups), %d events after its ack floor %d, %d journaled reservations",
            len(rows),
            len(tail),
            floor_seq,
            len(journal),
        )
        return authority, consumer, read_up_to

    async def _read_all(self, consumer: JetStreamContext.PullSubscription, limit: int) -> list[Msg]:
        """Every message the consumer has pending now."""
        pending = (await consumer.consumer_info()).num_pending or 0
        if pending > limit:
            raise RebuildNotReady(f"{pending} events are not in the ledger yet (limit {limit})")
        out: list[Msg] = []
        while pending > 0:
            msgs = await consumer.fetch(min(pending, 1000), timeout=5)
            out.extend(msgs)
            pending = msgs[-1].metadata.num_pending
        return out

    async def _read_journal(self) -> list[JournalEntry]:
        """The reservations, lease grants and lease returns journaled in the window a request
        can still be open, with their journal sequence, oldest first."""
        window = self.settings.request_timeout_s + self.settings.budget_reservation_grace_s + 60
        consumer = await self.js.pull_subscribe(
            subjects.BUDGET_JOURNAL,
            stream=subjects.BUDGET_JOURNAL_STREAM,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_TIME,
                opt_start_time=datetime.now(UTC) - timedelta(seconds=window),
                ack_policy=AckPolicy.NONE,
                inactive_threshold=30.0,
            ),
        )
        try:
            msgs = await self._read_all(consumer, 10 * MAX_TAIL)
        finally:
            with contextlib.suppress(*NATS_ERRORS):
                await consumer.unsubscribe()
        return [journal_entry(m) for m in msgs]

    async def _spend_snapshot(self, ask: ledger_pb2.SpendSnapshotQuery) -> ledger_pb2.SpendSnapshot:
        try:
            reply = await self.bus.request(subjects.LEDGER_READ_SPEND, ask.SerializeToString(), timeout=15)
            snapshot = ledger_pb2.SpendSnapshot.FromString(reply.data)
        except Exception as exc:
            raise RebuildNotReady(f"the ledger did not answer: {type(exc).__name__}") from exc
        if snapshot.HasField("error"):
            raise RebuildNotReady(f"the ledger could not read the spend: {snapshot.error.message}")
        return snapshot

    # --- the request path ---------------------------------------------------------------

    async def _on_authorize(self, msg: Msg) -> None:
        authority = self.authority
        ask = budget_pb2.AuthorizeRequest.FromString(msg.data)
        if authority is None or not self.lease.valid():
            await self._unavailable(msg, ask)
            return
        # Decided here, synchronously and in arrival order; only the journal write and the
        # reply are awaited, in their own task, so the next ask is decided at once.
        ctx = telemetry.extract_context(msg.headers)
        returned = self._give_back(authority, list(ask.returns))  # before deciding: their rest is free
        if returned:
            self._spawn(self._journal_returns(returned))
            self._wake_parked(authority)
        self._decide(authority, Asked(msg, ask, ctx), now_ms() + self._recall_wait_ms)

    def _decide(self, authority: Authority, asked: Asked, recall_until_ms: int) -> None:
        """Decide one ask, synchronously; a denial (at a cap or a rate limit) that recalled
        leases could lift waits for them (until `recall_until_ms` at most) instead of being
        answered now."""
        msg, ask = asked.msg, asked.ask
        with (
            metrics.track(self.name) as outcome,
            tracer.start_as_current_span("budget.authorize", context=asked.ctx) as span,
        ):
            at_ms = now_ms()
            verdict = authority.authorize(ask, at_ms)
            span.set_attribute("switchyard.request_id", ask.request_id)
            span.set_attribute("switchyard.project_id", ask.project_id)
            span.set_attribute("switchyard.allow", verdict.allow)
            if verdict.recall and at_ms < recall_until_ms:
                outcome["status"] = "recalling"
                self._park(authority, asked, verdict.recall, at_ms, recall_until_ms)
                return
            if not verdict.allow:
                outcome["status"] = verdict.code
        if verdict.code == ErrorCode.BUDGET_EXCEEDED:
            REFUSALS.labels(verdict.scope).inc()
        if verdict.alert is not None:  # the first refusal of this budget in its period
            self._alerts.put_nowait(verdict.alert)
        if verdict.reservation is None:
            DECISIONS.labels("allow" if verdict.allow else verdict.code).inc()
            self._spawn(self._respond(msg, verdict.to_proto(ask.request_id).SerializeToString()))
            return
        ask.received_unix_ms = verdict.reservation.at_ms
        ask.deployment_id = verdict.deployment_id  # a successor restores the quota it took
        grant = None
        if ask.lease_for and not any(c.deployment_id in authority.quotas.quotas for c in candidates_of(ask)):
            lease_ask = budget_pb2.LeaseAsk(
                router_id=ask.lease_for,
                project_id=ask.project_id,
                agent_id=ask.agent_id,
                key_id=ask.key_id,
                unit_usd=format_usd(verdict.reservation.amount),
                want=True,
                tokens_per_request=ask.estimated_tokens,
            )
            grant = self._grant(authority, lease_ask)
        self._spawn(self._journal_then_reply(msg, ask, authority, verdict, grant))

    def _park(
        self, authority: Authority, asked: Asked, lease_ids: tuple[str, ...], at_ms: int, until_ms: int
    ) -> None:
        """Recall the leases (those not recalled yet: their routers give them back at once) and
        hold the ask until they are back or `until_ms`; nothing else waits meanwhile."""
        fresh = authority.recall(lease_ids, at_ms, self._recall_wait_ms)
        if fresh:
            LEASES.labels("recalled").inc(len(fresh))
            revoke = budget_pb2.LeaseRevoke(lease_ids=fresh)
            self._spawn(self._publish_quietly(subjects.BUDGET_LEASE_REVOKE, revoke.SerializeToString()))
        self._parked.park(asked, lease_ids, until_ms)
        self._schedule_wake(authority)

    def _schedule_wake(self, authority: Authority) -> None:
        """One timer, at the soonest moment a parked ask is due without a return arriving (a
        recalled lease no longer waited for, or an ask's wait over)."""
        due_ms = self._parked.next_due_ms(authority.awaited_until)
        if due_ms is None:
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + max(due_ms - now_ms(), 0) / 1000
        if self._waker is not None and not self._waker.cancelled() and self._waker.when() <= when:
            return
        if self._waker is not None:
            self._waker.cancel()
        self._waker = loop.call_at(when, self._wake_parked_now)

    def _wake_parked_now(self) -> None:
        self._waker = None
        authority = self.authority
        if authority is not None:  # after a step-down nothing is parked (answered then)
            self._wake_parked(authority)

    def _wake_parked(self, authority: Authority) -> None:
        """Decide again, in the order they came, the asks whose recalled leases are back (or
        are no longer waited for), or whose wait is over; before anything else is decided."""
        if not self._parked.parked:
            return
        at_ms = now_ms()
        for parked in self._parked.due(lambda ids: authority.awaiting(ids, at_ms), at_ms):
            if self.authority is authority and self.lease.valid():
                self._decide(authority, parked.item, parked.until_ms)
            else:
                self._spawn(self._unavailable(parked.item.msg, parked.item.ask))
        self._schedule_wake(authority)

    async def _respond(self, msg: Msg, data: bytes) -> None:
        with contextlib.suppress(*NATS_ERRORS):
            await msg.respond(data)

    def _revoke_leases(self, kv_key: str) -> None:
        """A tenancy change (applied to the view already): the leases it makes too generous
        are revoked; their routers give them back at once. Until then they admit only within
        what the leases hold, which the cap counts."""
        authority = self.authority
        if authority is None:
            return
        lease_ids = escrow.touched(authority.leases, kv_key, self.view)
        if lease_ids:
            revoke = budget_pb2.LeaseRevoke(lease_ids=lease_ids)
            self._spawn(self._publish_quietly(subjects.BUDGET_LEASE_REVOKE, revoke.SerializeToString()))

    async def _publish_quietly(self, subject: str, data: bytes) -> None:
        with contextlib.suppress(*NATS_ERRORS):
            await self.bus.publish(subject, data)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    def _grant(self, authority: Authority, ask: budget_pb2.LeaseAsk) -> budget_pb2.LeaseGrant:
        """A lease for the asking router, held now (journaled before the reply), or why none."""
        lease_id = f"lease_{self._lease_ids.next().decode()}"
        lease, grant = authority.grant_lease(lease_id, ask.router_id, ask, now_ms(), self.lease_policy)
        LEASES.labels("granted" if lease is not None else "refused").inc()
        return grant

    def _give_back(self, authority: Authority, returns: list[budget_pb2.LeaseReturn]) -> list:
        """Apply returned leases; the ones that were out (to journal)."""
        out = [r for r in returns if authority.give_back(r, now_ms())]
        if out:
            LEASES.labels("returned").inc(len(out))
        return out

    async def _journal_returns(self, returned: list[budget_pb2.LeaseReturn]) -> None:
        """Journal returns (after applying them: a successor that misses one holds the lease
        until it expires, which only holds more, never less)."""
        for item in returned:
            with contextlib.suppress(*NATS_ERRORS):
                await self.js.publish(
                    subjects.BUDGET_JOURNAL,
                    item.SerializeToString(),
                    timeout=2.0,
                    headers={JOURNAL_KIND: LEASE_RETURN},
                )

    async def _journal_grant(self, authority: Authority, grant: budget_pb2.LeaseGrant | None) -> bool:
        """Journal a grant before the router learns of it; on failure the lease is undone."""
        if grant is None or not grant.lease_id:
            return False
        lease = authority.leases.get(grant.lease_id)
        if lease is None:
            return False
        try:
            await self.js.publish(
                subjects.BUDGET_JOURNAL,
                lease_record(lease).SerializeToString(),
                timeout=2.0,
                headers={JOURNAL_KIND: LEASE_GRANT},
            )
        except NATS_ERRORS as exc:
            self.log.warning("lease journal write failed: %s", exc)
            authority.cancel_lease(grant.lease_id)
            return False
        return True

    async def _journal_then_reply(
        self,
        msg: Msg,
        ask: budget_pb2.AuthorizeRequest,
        authority: Authority,
        verdict: Verdict,
        grant: budget_pb2.LeaseGrant | None = None,
    ) -> None:
        journal_ask = self.js.publish(subjects.BUDGET_JOURNAL, ask.SerializeToString(), timeout=2.0)
        results = await asyncio.gather(
            journal_ask, self._journal_grant(authority, grant), return_exceptions=True
        )
        if isinstance(results[0], BaseException):
            # Not journaled: a successor would not know of this reservation. Refuse it.
            self.log.warning("reservation journal write failed: %s", results[0])
            authority.cancel(ask.request_id)
            if results[1] is True and grant is not None:
                authority.cancel_lease(grant.lease_id)
            await self._unavailable(msg, ask)
            return
        if not self.lease.valid() or self.authority is not authority:
            await self._unavailable(msg, ask)  # the lease ran out meanwhile: fail closed
            return
        DECISIONS.labels("allow").inc()
        decision = verdict.to_proto(ask.request_id)
        if results[1] is True and grant is not None:
            decision.lease.CopyFrom(grant)
        await msg.respond(decision.SerializeToString())

    async def _on_lease(self, msg: Msg) -> None:
        """A router renews a lease in the background and/or gives leases back."""
        authority = self.authority
        try:
            ask = budget_pb2.LeaseAsk.FromString(msg.data)
        except DecodeError:
            self.log.warning("undecodable lease ask ignored")
            return
        if authority is None or not self.lease.valid():
            return  # not answered: the router keeps its returns and sends them again
        returned = self._give_back(authority, list(ask.returns))
        if returned:
            self._wake_parked(authority)  # before any grant: what came back goes to them first
        grant = self._grant(authority, ask) if ask.want else budget_pb2.LeaseGrant(reason="none asked")
        self._spawn(self._journal_then_grant(msg, authority, returned, grant))

    async def _journal_then_grant(
        self,
        msg: Msg,
        authority: Authority,
        returned: list[budget_pb2.LeaseReturn],
        grant: budget_pb2.LeaseGrant,
    ) -> None:
        journaled, _ = await asyncio.gather(
            self._journal_grant(authority, grant), self._journal_returns(returned)
        )
        if not journaled or not self.lease.valid() or self.authority is not authority:
            if journaled:
                authority.cancel_lease(grant.lease_id)  # not ours to hand out any more: undo, fail closed
            grant = budget_pb2.LeaseGrant(reason=grant.reason or "not journaled")
        with contextlib.suppress(*NATS_ERRORS):
            await msg.respond(grant.SerializeToString())

    async def _unavailable(self, msg: Msg, ask: budget_pb2.AuthorizeRequest) -> None:
        DECISIONS.labels(ErrorCode.UNAVAILABLE).inc()
        decision = budget_pb2.Decision(
            allow=False,
            deny_code=ErrorCode.UNAVAILABLE,
            deny_reason="the budget authority is changing leader; try again",
            retry_after_ms=units.ms(1.0),
        )
        with contextlib.suppress(*NATS_ERRORS):
            await msg.respond(decision.SerializeToString())

    async def _on_provider_stat(self, msg: Msg) -> None:
        authority = self.authority
        if authority is None:
            return
        try:
            stat = events_pb2.ProviderStat.FromString(msg.data)
        except DecodeError:
            self.log.warning("undecodable provider stat ignored")
            return
        now_s = now_ms() / 1000
        if stat.HasField("rate_limits"):
            authority.quotas.observe(stat.deployment_id, stat.rate_limits, now_s)
        if stat.http_status == 429 or stat.error_code == ErrorCode.RATE_LIMITED:
            authority.quotas.back_off(stat.deployment_id, units.seconds(stat.retry_after_ms), now_s)

    async def _publish_quotas(self, authority: Authority) -> None:
        while True:
            try:
                at_ms = now_ms()
                state = authority.quotas.state(at_ms / 1000, at_ms)
                await self.bus.publish(subjects.QUOTA_STATE, state.SerializeToString())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS reconnecting: the next tick publishes again (loop outlives all)
                self.log.warning("quota state not published: %s", exc)
            await asyncio.sleep(QUOTA_STATE_EVERY_S)

    async def _on_status(self, msg: Msg) -> None:
        authority = self.authority
        try:
            ask = orjson.loads(msg.data or b"{}")
            project = str(ask.get("project") or "")
        except orjson.JSONDecodeError:
            project = ""
        if authority is None:
            body = {"error": "the budget authority is not ready"}
        else:
            body = authority.status(project, now_ms())
            body["leader"] = self.holder
        await msg.respond(orjson.dumps(body))

    # --- settlement, expiry, alerts -----------------------------------------------------

    async def _settle(
        self, authority: Authority, consumer: JetStreamContext.PullSubscription, last_seq: int
    ) -> None:
        """Count completion events as they come. The reader is an ephemeral (single-replica)
        consumer: when its NATS node dies it is gone, so after repeated failures it is made
        again from the last event settled (settling is idempotent by request id)."""
        quiet = 0  # consecutive empty fetches; an idle stream and a lost reader look alike
        try:
            while True:
                try:
                    msgs = await consumer.fetch(SETTLE_BATCH, timeout=SETTLE_IDLE_FETCH_S)
                    quiet = 0
                except (FetchTimeoutError, NatsTimeoutError, TimeoutError):
                    quiet += 1
                    if quiet % SETTLE_PROBE_EVERY == 0 and not await self._reader_alive(consumer):
                        consumer = await self._reopen_settlement(consumer, last_seq)
                    continue
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the settlement loop must outlive anything: fetch again
                    self.log.warning("completion fetch failed: %s", exc)
                    await asyncio.sleep(0.5)
                    if not await self._reader_alive(consumer):
                        consumer = await self._reopen_settlement(consumer, last_seq)
                    continue
                for msg in msgs:
                    with contextlib.suppress(NotJSMessageError, ValueError):  # no JetStream metadata
                        last_seq = max(last_seq, msg.metadata.sequence.stream)
                    event = settleable(msg, self.log)
                    if event is not None:
                        for crossing in authority.settle(event, now_ms()):
                            self._alerts.put_nowait(crossing)
                    self._settled_seq = last_seq  # with the settle, before any await (snapshots)
                if len(msgs) < SETTLE_BATCH:
                    await asyncio.sleep(SETTLE_GATHER_S)
        finally:
            with contextlib.suppress(*NATS_ERRORS):
                await consumer.unsubscribe()

    @staticmethod
    async def _reader_alive(consumer: JetStreamContext.PullSubscription) -> bool:
        try:
            await consumer.consumer_info()
        except asyncio.CancelledError:
            raise
        except Exception:  # a probe: any failure means the reader is gone (and it must not kill settling)
            return False
        return True

    async def _completion_reader(self, start_seq: int) -> JetStreamContext.PullSubscription:
        """An ephemeral, unacknowledged reader of completion events from `start_seq` on (the
        rebuild's tail, then settlement)."""
        return await self.js.pull_subscribe(
            subjects.COMPLETION,
            stream=subjects.EVENTS_STREAM,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=start_seq,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=60.0,
            ),
        )

    async def _reopen_settlement(
        self, consumer: JetStreamContext.PullSubscription, last_seq: int
    ) -> JetStreamContext.PullSubscription:
        """A new settlement reader starting after the last event settled (or the old one, if
        NATS cannot make one yet: the next probe tries again)."""
        try:
            fresh = await self._completion_reader(last_seq + 1)
        except asyncio.CancelledError:
            raise
        except NATS_ERRORS as exc:
            self.log.warning("settlement reader lost; cannot make a new one yet: %s", exc)
            return consumer
        self.log.warning("settlement reader lost; reading again from stream sequence %d", last_seq + 1)
        with contextlib.suppress(*NATS_ERRORS):
            await consumer.unsubscribe()
        return fresh

    async def _expire(self, authority: Authority) -> None:
        grace_ms = int(self.settings.budget_reservation_grace_s * 1000)
        last_prune = time.monotonic()
        while True:
            await asyncio.sleep(EXPIRY_EVERY_S)
            for reservation in authority.expire(now_ms(), grace_ms):
                self.log.info("reservation %s expired unsettled", reservation.request_id)
            self._wake_parked(authority)  # a lease expired meanwhile
            if time.monotonic() - last_prune > PRUNE_EVERY_S:
                authority.book.prune(now_ms())
                last_prune = time.monotonic()

    async def _send_alerts(self) -> None:
        """One alert per threshold (and one `refusing`) per budget and period: the KV mark is
        checked before the event and written after it; a repeat inside the stream's duplicate
        window is dropped by msg id."""
        while True:
            crossing = await self._alerts.get()
            key = alert_id(crossing)
            try:
                with contextlib.suppress(KeyNotFoundError):
                    await self.alerts_kv.get(key)
                    continue  # already alerted
                refused = self.authority.refusals.count(crossing) if self.authority else 0
                event = alert_event(crossing, now_ms(), refused)
                await self.js.publish(
                    subjects.BUDGET_ALERT, event.SerializeToString(), headers={"Nats-Msg-Id": key}, timeout=5
                )
                with contextlib.suppress(KeyWrongLastSequenceError):
                    await self.alerts_kv.create(key, event.SerializeToString())
                self.log.info("alert %s: %s", key, alert_message(event))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the alert loop must outlive anything: an alert is retried, never lost
                self.log.warning("alert %s not sent yet (%s): retrying", key, exc)
                await asyncio.sleep(1.0)
                self._alerts.put_nowait(crossing)

    async def _send_pressure(self, data: bytes) -> None:
        await self.bus.publish(subjects.BUDGET_PRESSURE, data)

    async def _burn_rates(self, authority: Authority) -> None:
        s = self.settings
        short = s.budget_burn_short_window_s
        windows = BurnWindows(short, max(short, s.budget_burn_long_window_s), s.budget_burn_horizon_s)
        await watch_burn_rates(authority, windows, s.budget_burn_sample_s, self._alerts.put_nowait)

    # --- stop ---------------------------------------------------------------------------

    async def drain(self) -> None:
        await cancel_and_wait(self._lease_task)
        for sub in self._subs:
            with contextlib.suppress(*NATS_ERRORS):
                await sub.unsubscribe()
        self._subs = []
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=self.settings.drain_timeout_s)
        await self._step_down_and_release()
        self._alert_task.cancel()
        if self.webhook:
            await self.webhook.stop()
        await self.watcher.stop()
        await super().drain()

    async def _step_down_and_release(self) -> None:
        held = self.lease.held
        revision = self.lease.revision
        if self.authority is not None:  # a successor then replays nothing
            with contextlib.suppress(*NATS_ERRORS):
                await self._write_snapshot(self.authority)
        await self._step_down()
        if held:  # hand over now instead of after the TTL
            self.lease.revision = revision
            await self.lease.release()


def main() -> None:
    run("budget", BudgetService)
