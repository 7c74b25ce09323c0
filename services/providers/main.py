"""Provider worker: consumes Dispatch messages for its providers, calls the upstream, streams
frames straight to the ingress inbox, fails over along the chain, and emits events.

Run: python -m services.providers [--provider demo --provider openai ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from opentelemetry import trace

from switchyard import codec, genai, metrics, subjects, telemetry, units
from switchyard.bus import NATS_ERRORS, EventPublisher, ensure_events_stream
from switchyard.catalog import Catalog, Deployment
from switchyard.deadlines import RECORD_GRACE_S, GoneBook, skip_reason
from switchyard.errors import ErrorCode, GatewayError
from switchyard.handoff import SETTLE_S, HandOff, acknowledged
from switchyard.lifecycle import started
from switchyard.logs import redact
from switchyard.pricing import format_usd
from switchyard.response_cache import ENTRY_HEADROOM_BYTES, AnswerStore, stored_answer
from switchyard.service import BusService, run
from switchyard.settings import Settings
from switchyard.tokens import tokenizer_for, warm_up
from switchyard.v1 import events_pb2, invoke_pb2, liveness_pb2
from switchyard.vocab import Status

from .adapters import adapter_for, check_deployment
from .adapters.base import Completed, Progress, ProviderAdapter
from .adapters.ratelimits import parse_rate_limits
from .coalesce import ChunkCoalescer
from .execution import (
    CLIENT_GONE,
    AttemptOutcome,
    AttemptProgress,
    Claim,
    Verdict,
    bill_attempt,
    build_completion,
    build_response,
    call_cost,
    deadline_error,
    now_ms,
    remaining_s,
    stream_limit,
    verdict,
)
from .hedge_policy import HedgeWindow
from .hedge_remote import hedge_partners, is_race_key, run_racer
from .hedge_runner import HedgeRace, hedge_target
from .inflight import InflightJournal
from .stat_batch import budget_digest

tracer = telemetry.tracer("switchyard.providers")
NO_WORKER = GatewayError(
    ErrorCode.UNAVAILABLE, "no provider worker is available for the fallback deployments"
)
# Completion events cannot be stored (the events stream is full or electing a leader): the
# client is refused rather than served without a durable record (docs/reliability.md).
NOT_RECORDABLE = GatewayError(
    ErrorCode.UNAVAILABLE,
    "the gateway cannot record requests right now; retry shortly",
    retryable=False,
    retry_after_s=1.0,
)
# A request that waited for a slot past its deadline: no upstream call (switchyard/deadlines.py).
DEADLINE_PASSED = GatewayError(
    ErrorCode.TIMEOUT, "the request's deadline passed before its upstream call", retryable=False
)
# Dispatches NATS may buffer for this worker's callback before dropping one (a burst of 40 to
# a worker of concurrency 2 must all be answered, most of them "busy"): memory stays bounded by
# the subscription's byte limit.
DISPATCH_PENDING_MSGS = 65_536
# The records not yet stored a beat carries at most (bytes): see _beat_message.
BEAT_RECORD_BYTES = 256 * 1024
# A request whose process (an ingress running this worker, and the router watching it) died
# while it was in flight: recorded from the in-flight journal (inflight.py).
PROCESS_LOST = GatewayError(
    ErrorCode.UNAVAILABLE,
    "the gateway process serving this request stopped before it finished",
    retryable=False,
)
# A stopping worker that could not finish a request within its drain time: handed to another
# worker when nothing reached the client yet, else ended with this in-band error.
WORKER_STOPPED = GatewayError(
    ErrorCode.UNAVAILABLE,
    "the provider worker serving this request stopped before it finished; retry",
    retry_after_s=1.0,
    retryable=False,
)


class Held:
    """A request this worker holds, as its beats report it (services/router/liveness.py)."""

    __slots__ = ("calls", "deployment_id", "dispatch", "handed_on", "used")

    def __init__(self, dispatch: invoke_pb2.Dispatch) -> None:
        self.dispatch = dispatch
        self.deployment_id = ""
        self.handed_on = False  # given to another worker or pool: not "done" here
        self.calls: list[tuple[Deployment, AttemptProgress]] = []  # its upstream attempts
        self.used: tuple[invoke_pb2.Usage, Decimal] | None = None  # set once its bill is decided

    def billed_so_far(self) -> tuple[invoke_pb2.Usage, Decimal] | None:
        """What a router bills if this worker dies now: the decided bill, else a stream's
        prompt and delivered output (no other attempt bills: failover is before any chunk)."""
        if self.used is not None:
            return self.used
        for deployment, progress in self.calls:
            if progress.chunks_sent:
                usage = progress.usage(self.dispatch.request)
                return usage, call_cost(deployment, usage)
        return None


class ProviderWorker(BusService):
    name = "providers"

    def __init__(
        self, settings: Settings, catalog: Catalog | None = None, providers: list[str] | None = None
    ) -> None:
        super().__init__(settings, catalog)
        wanted = providers or _providers_from_env() or self.catalog.providers()
        self.providers = [p for p in wanted if p in self.catalog.providers()]
        for deployment in self.catalog.deployments.values():
            if deployment.provider in self.providers:
                check_deployment(deployment)  # a misspelt adapter or option stops the start
        self.adapters: dict[str, ProviderAdapter] = {}
        self.events: EventPublisher | None = None
        self.answers: AnswerStore | None = None
        self._slots = asyncio.Semaphore(self.settings.worker_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._subscriptions: list[Subscription] = []
        # request_id -> the task while it waits on its upstream call (what a cancel interrupts)
        self._upstream: dict[str, asyncio.Task[None]] = {}
        self._cancelled: set[str] = set()
        # Clients that left while their request waited here for a slot (deadlines.py).
        self.gone = GoneBook(self.settings.request_timeout_s)
        self._racers_cancelled: set[str] = set()  # hedge racers cancelled before their call began
        # Liveness (docs/architecture.md): what this worker holds and what it finished since
        # the last beat; the bound on accepted work is concurrency + queue.
        self.worker_id = f"{os.uname().nodename}:{os.getpid()}"
        self._held: dict[str, Held] = {}
        self._done: list[str] = []
        # Records queued while the events stream did not store them: request_id -> (position in
        # the publisher's queue, the Completion, whether it bills anything). Beats carry them
        # until stored, so a router publishes them if this worker dies first (docs/reliability.md).
        self._unstored: dict[str, tuple[int, bytes, bool]] = {}
        self._capacity = self.settings.worker_concurrency + self.settings.worker_queue
        self._stop_cut: set[str] = set()  # requests cut because the drain time ran out
        self._beat: asyncio.Task[None] | None = None
        self.hedge_window = HedgeWindow()  # the share of each route's requests hedged here
        # Failover to another pool and a drain's hand-over: answered only when it did not land.
        self.handoff = HandOff(self._on_handoff_exhausted)
        # Provider stats of the current interval, sent together (`_send_stats`).
        self._stats: list[events_pb2.ProviderStat] = []
        self._stats_timer: asyncio.TimerHandle | None = None
        # Inside an ingress process: what a crash of it would leave unrecorded (inflight.py).
        self.journal: InflightJournal | None = None
        self._journal_write: asyncio.Task[None] | None = None

    def adapter(self, deployment: Deployment) -> ProviderAdapter:
        adapter = self.adapters.get(deployment.id)
        if adapter is None:
            adapter = self.adapters[deployment.id] = adapter_for(deployment, self.settings)
        return adapter

    async def start(self) -> None:
        # The budget check estimates prompts as the router did (switchyard/tokens.py): load
        # the encodings of the deployments served here now, not inside a stream.
        served = [d for d in self.catalog.deployments.values() if d.provider in self.providers]
        served += hedge_partners(self.catalog, self.providers)  # racers it may run in other pools
        warm_up({tokenizer_for(d.adapter, d.model) for d in served})
        nc = await self.connect()
        js = nc.jetstream()
        await ensure_events_stream(js, self.settings.stream_replicas)
        self.events = EventPublisher(js)
        self.events.start()
        await self.handoff.start(nc)
        self.answers = await AnswerStore.open(
            js,
            self.settings.stream_replicas,
            self.settings.response_cache_max_age_s,
            self.settings.response_cache_max_bytes,
            nc.max_payload - ENTRY_HEADROOM_BYTES,
        )
        for provider in self.providers:
            sub = await nc.subscribe(
                subjects.provider_invoke(provider),
                queue=subjects.provider_queue(provider),
                cb=self._on_dispatch,
                # The callback answers at once (accepted or "busy"), so this buffer only bridges a
                # burst; a small one dropped dispatches as a slow consumer, each then waiting for
                # the hand-off's ack timeout and the router's liveness watch (~5 s) instead.
                pending_msgs_limit=DISPATCH_PENDING_MSGS,
            )
            self._subscriptions.append(sub)
        # Every worker hears every cancel (no queue group): only the one running it acts.
        self._subscriptions.append(await nc.subscribe(subjects.cancel("*"), cb=self._on_cancel))
        self._beat = asyncio.create_task(self._beat_loop(), name="worker-beat")
        self.log.info("serving providers: %s", ", ".join(self.providers) or "(none)")
        self.ready = True

    async def _on_dispatch(self, msg: Msg) -> None:
        # Never block the subscription: a full worker answers "busy" at once (the router tries
        # another worker or pool, or answers 503), so nothing piles up in NATS's pending queue,
        # whose overflow would drop dispatches silently.
        try:
            dispatch = invoke_pb2.Dispatch.FromString(msg.data)
        except DecodeError:
            self.log.error("undecodable dispatch ignored")
            return
        taken = self.take(dispatch, msg.headers)
        if msg.reply and not taken:
            await msg.respond(subjects.HANDOFF_BUSY)
        elif msg.reply and acknowledged(dispatch):
            await msg.respond(b"")  # a hedge racer's hand-off waits for this ack

    def take(self, dispatch: invoke_pb2.Dispatch, headers: dict[str, str] | None) -> bool:
        """Start serving `dispatch` (its trace context in `headers`), or False at once when
        this worker is full (concurrency and queue) or draining: the sender asks elsewhere. A
        dispatch from the bus comes here; so does one from a router in the same process
        (switchyard/handoff.py, local pools)."""
        request_id = dispatch.request.request_id
        if len(self._held) >= self._capacity or self.draining or request_id in self._held:
            metrics.ERRORS.labels(self.name, ErrorCode.OVERLOADED).inc()
            return False
        held = self._held[request_id] = Held(dispatch)  # taken: no answer (switchyard/handoff.py)
        task = asyncio.create_task(self._run(headers, dispatch, held))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _run(self, headers: dict[str, str] | None, dispatch: invoke_pb2.Dispatch, held: Held) -> None:
        request_id = dispatch.request.request_id
        try:
            await self._slots.acquire()
        except asyncio.CancelledError:  # the drain time ran out while it waited for a slot
            await self._hand_over_or_fail(dispatch)
            self._release(request_id, held)
            raise
        try:
            ctx = telemetry.extract_context(headers)
            with (
                metrics.track(self.name) as outcome,
                telemetry.span(
                    tracer,
                    "provider.dispatch",
                    parent=ctx,
                    attributes=lambda: genai.request_attributes(dispatch.request),
                ) as span,
            ):
                outcome["status"] = await self.execute(dispatch)
                if outcome["status"] != Status.OK:
                    span.set_attribute("error.type", outcome["status"])
                    span.set_status(trace.StatusCode.ERROR, outcome["status"])
        except Exception:  # the request's boundary: this task must end and free its slot
            self.log.exception("dispatch failed")
        finally:
            self._slots.release()
            self._release(request_id, held)

    def _release(self, request_id: str, held: Held) -> None:
        """The request left this worker: finished (reported `done` in the next beat) or handed on."""
        if self._held.get(request_id) is held:
            del self._held[request_id]
        if not held.handed_on and request_id not in self._unstored:
            self._done.append(request_id)  # (an unstored one is done once its record is stored)

    async def _beat_loop(self) -> None:
        """Tell every router which requests this worker holds, once per interval while it holds
        or has just finished any (an idle worker is silent): one message per interval, none per
        request. A router ends a request no beat holds for a few intervals (its worker died)."""
        interval = self.settings.worker_beat_s
        while True:
            await asyncio.sleep(interval)
            beat = self._beat_message(interval)
            self._journal_now()
            if beat is None:
                continue
            try:
                await self.bus.publish(subjects.WORKER_BEAT, beat.SerializeToString())
            except NATS_ERRORS as exc:  # reconnecting: the next beat says it again
                self.log.warning("worker beat not sent: %s", exc)

    def _journal_now(self) -> None:
        """Write the in-flight journal (inflight.py) beside the beats, never in their way: a KV
        write that waits (a stream electing its leader) must not make this worker look dead.
        One at a time: an interval whose write still runs is skipped."""
        if self.journal is None or (self._journal_write is not None and not self._journal_write.done()):
            return
        self._journal_write = asyncio.create_task(self.journal.write(self.records_if_lost(), now_ms()))

    def records_if_lost(self) -> list[bytes]:
        """The record each request held here would get if this process died now (inflight.py):
        a finished one's own record while the events stream has not stored it, else an `error`
        billed what the provider has billed so far, as a router records a lost worker's request
        (services/router/main.py, `_on_worker_lost`). A hedge racer's is its racing worker's."""
        records = [record for _, record, _ in self._unstored.values()]
        for request_id, held in self._held.items():
            if request_id in self._unstored or held.dispatch.hedge_for or held.handed_on:
                continue
            billed = held.billed_so_far()
            usage, cost = billed if billed is not None else (None, Decimal(0))
            deployment = held.calls[-1][0] if held.calls else None
            error = PROCESS_LOST.to_proto(request_id)
            event = self._completion(
                held.dispatch, Status.ERROR, deployment=deployment, error=error, usage=usage, cost=cost
            )
            records.append(event.SerializeToString())
        return records

    def _beat_message(self, interval_s: float = 0.0) -> liveness_pb2.WorkerBeat | None:
        """The next beat: what is held (with what it has used and any record not stored yet)
        and what finished; None when there is nothing to say."""
        if self._unstored and self.events is not None:
            stored_through = self.events.stored_through
            for request_id, (position, _, _) in list(self._unstored.items()):
                if position <= stored_through:
                    del self._unstored[request_id]
                    if request_id not in self._held:
                        self._done.append(request_id)
        if not self._held and not self._done and not self._unstored:
            return None
        beat = liveness_pb2.WorkerBeat(worker_id=self.worker_id, interval_ms=interval_s * 1000)
        entries: dict[str, liveness_pb2.HeldRequest] = {}
        for request_id, held in self._held.items():
            entry = entries[request_id] = beat.held.add(
                request_id=request_id, deployment_id=held.deployment_id
            )
            if (billed := held.billed_so_far()) is not None:
                entry.used.CopyFrom(billed[0])
                entry.used_cost_usd = format_usd(billed[1])
        # The records not stored yet, the billed first, within a bound (a long stall refuses
        # many requests): one left out is sent as `finished` alone and recorded by a router as
        # an error at cost 0, which is what a refusal's own record says.
        room = BEAT_RECORD_BYTES
        for request_id, (_, record, _) in sorted(self._unstored.items(), key=lambda kv: not kv[1][2]):
            entry = entries.get(request_id) or beat.held.add(request_id=request_id)
            entry.finished = True
            if len(record) <= room:
                entry.unstored_record = record
                room -= len(record)
        beat.done.extend(self._done)
        self._done.clear()
        return beat

    async def _hand_over_or_fail(self, dispatch: invoke_pb2.Dispatch) -> bool:
        """A stopping worker gives a request nothing reached the client for to another worker
        (this one no longer subscribes) at its chain position; when none takes it, the client
        gets an in-band error and the ledger a row. True when handed over."""
        held = self._held.get(dispatch.request.request_id)
        if await self.handoff.send(dispatch):
            if held is not None:
                held.handed_on = True
            return True
        await self._fail(dispatch, dispatch.reply_to, WORKER_STOPPED)
        return False

    async def _on_handoff_exhausted(self, dispatch: invoke_pb2.Dispatch, target: invoke_pb2.Target) -> None:
        """A dispatch this worker handed on came back from the chain's last pool (no worker
        there, or every one busy): the client gets an in-band error and the ledger a row, and
        the next beat reports it done, so the router's watch does not end it a second time."""
        await self._fail(dispatch, dispatch.reply_to, WORKER_STOPPED if self.draining else NO_WORKER)
        self._done.append(dispatch.request.request_id)

    async def _on_cancel(self, msg: Msg) -> None:
        request_id = msg.subject[len(subjects.CANCEL_PREFIX) + 1 :]
        if request_id in self._held:
            self.gone.add(request_id, time.monotonic())  # still queued: dropped at its turn
        task = self._upstream.get(request_id)
        if task is not None and request_id not in self._cancelled:
            self._cancelled.add(request_id)
            task.cancel()  # lands inside the upstream call: the adapter closes the connection
        elif task is None and is_race_key(request_id) and request_id in self._held:
            self._racers_cancelled.add(request_id)  # still waiting for a slot: never call it

    def cancelled_before_start(self, request_id: str) -> bool:
        """A hedge racer whose race ended before its upstream call began (hedge_remote.py)."""
        if request_id not in self._racers_cancelled:
            return False
        self._racers_cancelled.discard(request_id)
        return True

    def _client_gone(self, request_id: str) -> bool:
        """True when a CancelledError came from `_on_cancel` (not from a shutdown)."""
        if request_id not in self._cancelled:
            return False
        self._cancelled.discard(request_id)
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        return True

    def _cut_by_stop(self, request_id: str) -> bool:
        """True when a CancelledError came from a drain whose time ran out (`drain`)."""
        if request_id not in self._stop_cut:
            return False
        self._stop_cut.discard(request_id)
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        return True

    async def execute(self, dispatch: invoke_pb2.Dispatch) -> str:
        """Run the dispatch from chain[position], failing over until success or a final error.

        Returns "ok" or the final error code. Each upstream call is its own CLIENT span
        named by the GenAI conventions ("chat <model>").
        """
        request = dispatch.request
        reply = dispatch.reply_to
        if dispatch.hedge_for:  # a hedge racer of another pool's worker: one call, reported there
            return await run_racer(self, dispatch)
        if started(self.events, "the event publisher").stalled():
            # Completion events are not being stored (a full stream, an election): serving now
            # would answer without a durable record. Refuse before any upstream cost.
            await self._fail(dispatch, reply, NOT_RECORDABLE)
            return NOT_RECORDABLE.code
        skip = skip_reason(request.request_id, request.deadline_unix_ms, now_ms(), self.gone)
        if skip is not None:
            # It waited past its deadline, or its client left: no upstream call. The record
            # settles the budget hold the router took.
            metrics.SKIPPED.labels(self.name, skip).inc()
            if skip == "deadline":
                await self._fail(dispatch, reply, DEADLINE_PASSED)
                return DEADLINE_PASSED.code
            self._complete(dispatch, Status.CANCELLED, error=CLIENT_GONE.to_proto(request.request_id))
            return Status.CANCELLED
        while True:
            target = dispatch.chain[dispatch.position]
            held = self._held.get(request.request_id)
            if target.provider not in self.providers:
                # Another pool serves the next deployment: hand the dispatch on, no router trip.
                if not await self.handoff.send(dispatch):
                    await self._fail(dispatch, reply, NO_WORKER)
                    return NO_WORKER.code
                if held is not None:
                    held.handed_on = True  # that pool's worker holds it now
                return Status.OK
            if held is not None:
                held.deployment_id = target.deployment_id
            deployment = self.catalog.deployments.get(target.deployment_id)
            if deployment is None:
                error = GatewayError(
                    ErrorCode.UNAVAILABLE,
                    f"deployment {target.deployment_id} is not configured on this worker",
                )
                await self._fail(dispatch, reply, error)
                return error.code
            if hedge_target(dispatch) is not None:
                # The first attempt of an armed dispatch races a hedge (hedge_runner.py).
                try:
                    status = await HedgeRace(self, dispatch, deployment).run()
                except asyncio.CancelledError:
                    if not self._cut_by_stop(request.request_id):
                        raise
                    # The drain time ran out mid-race: end it in-band with its record (whether
                    # a racer's chunk already went out is not known here, so no hand-off).
                    await self._fail(dispatch, reply, WORKER_STOPPED)
                    return WORKER_STOPPED.code
                if status is None:
                    continue
                return status
            with telemetry.span(
                tracer,
                genai.span_name(deployment.model),
                kind=trace.SpanKind.CLIENT,
                attributes=lambda: {
                    "gen_ai.operation.name": genai.OPERATION_CHAT,
                    "gen_ai.request.model": deployment.model,  # noqa: B023 (called at once)
                    "switchyard.request_id": request.request_id,
                    "switchyard.attempt": len(dispatch.attempts) + 1,
                    **genai.target_attributes(deployment.provider, "", deployment.id),  # noqa: B023
                },
            ) as span:
                status = await self._attempt(dispatch, deployment, span)
            if status is None:  # failed over: the next deployment of the chain
                continue
            return status

    async def _attempt(
        self, dispatch: invoke_pb2.Dispatch, deployment: Deployment, span: trace.Span
    ) -> str | None:
        """One upstream call: its outcome recorded, then the verdict on it carried out.
        Returns "ok", "cancelled" or the final error code, or None to fail over."""
        outcome = await self._call_upstream(dispatch, deployment)
        self._record(dispatch, outcome, span)
        if outcome.error is WORKER_STOPPED and not outcome.progress.chunks_sent:
            return ErrorCode.UNAVAILABLE if not await self._hand_over_or_fail(dispatch) else Status.OK
        decision = verdict(outcome, dispatch)
        if decision.fail_over:
            metrics.FAILOVERS.labels(deployment.provider).inc()
            span.set_attribute("switchyard.failed_over", True)
            dispatch.position += 1
            return None
        await self._end(dispatch, outcome, decision, span)
        return outcome.code

    async def _call_upstream(
        self,
        dispatch: invoke_pb2.Dispatch,
        deployment: Deployment,
        progress: AttemptProgress | None = None,
        claim: Claim | None = None,
        cancelled_as: Callable[[], GatewayError | None] | None = None,
    ) -> AttemptOutcome:
        """The upstream call under the request's deadline, cancellable by the client; whatever
        happens comes back as an outcome (a shutdown's cancel propagates).

        A hedge race's racer (hedge_runner.py) passes `claim` (asked before its first chunk
        goes out) and `cancelled_as` (why the race cancelled it, None when it did not); the race
        itself is what a client's cancel interrupts then, so a racer does not register."""
        request = dispatch.request
        progress = progress or self.new_progress(dispatch, deployment)
        deadline = asyncio.timeout(remaining_s(request))
        if cancelled_as is None:
            self._upstream[request.request_id] = asyncio.current_task()  # type: ignore[assignment]
        try:
            async with deadline:
                completed = await self._call(deployment, request, dispatch.reply_to, progress, claim)
        except asyncio.CancelledError:
            if cancelled_as is None and self._cut_by_stop(request.request_id):
                return AttemptOutcome("error", deployment, progress, error=WORKER_STOPPED)
            reason = cancelled_as() if cancelled_as is not None else None
            if reason is not None:
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                return AttemptOutcome("cancelled", deployment, progress, error=reason)
            if cancelled_as is not None or not self._client_gone(request.request_id):
                raise
            return AttemptOutcome("cancelled", deployment, progress, error=CLIENT_GONE)
        except GatewayError as exc:
            return AttemptOutcome("error", deployment, progress, error=exc)
        except TimeoutError:
            if deadline.expired():
                error = deadline_error(deployment.provider)
            else:  # an adapter's own timeout that escaped as the builtin exception
                error = GatewayError(ErrorCode.TIMEOUT, "upstream timed out", provider=deployment.provider)
            return AttemptOutcome("error", deployment, progress, error=error)
        except Exception as exc:  # an adapter bug must still end the request cleanly
            self.log.exception("adapter %s crashed on %s", deployment.adapter, request.request_id)
            error = GatewayError(
                ErrorCode.INTERNAL,
                "provider adapter error",  # the class name and traceback are in the log line above
                provider=deployment.provider,
                detail=redact(f"{type(exc).__name__}: {exc}")[:500],
            )
            return AttemptOutcome("crashed", deployment, progress, error=error)
        finally:
            if cancelled_as is None:
                self._upstream.pop(request.request_id, None)
        return AttemptOutcome("ok", deployment, progress, completed=completed)

    def new_progress(self, dispatch: invoke_pb2.Dispatch, deployment: Deployment) -> AttemptProgress:
        progress = AttemptProgress(
            started_ms=now_ms(),
            limit_usd=stream_limit(dispatch),
            tokenizer=tokenizer_for(deployment.adapter, deployment.model),
        )
        if (held := self._held.get(dispatch.request.request_id)) is not None:
            held.calls.append((deployment, progress))  # its beats report what it delivers
        return progress

    def _record(
        self, dispatch: invoke_pb2.Dispatch, outcome: AttemptOutcome, span: trace.Span, own_call: bool = True
    ) -> None:
        """The one recorder of an attempt, whatever its outcome: its record on the dispatch
        (the Completion carries it), its metrics and span outcome, and the provider stat the
        routers learn health from (which also ends the request's in-flight count there).
        `own_call` False: another pool's worker made the call and reported those itself."""
        attempt = outcome.attempt()
        dispatch.attempts.append(attempt)
        if not own_call:
            return
        deployment, error = outcome.deployment, outcome.error
        status = Status.OK if error is None else error.code
        metrics.UPSTREAM_DURATION.labels(deployment.provider, deployment.model, status).observe(
            attempt.latency_ms / 1000
        )
        if attempt.http_status:
            span.set_attribute("http.response.status_code", attempt.http_status)
        if error is not None:
            span.set_attribute("error.type", error.code)
            span.set_status(trace.StatusCode.ERROR, (error.detail or error.message)[:200])
            if error.detail and outcome.kind == "error":
                # What the client's message leaves out (a host and port, the library's exception,
                # the provider's own words about our key), for the operator, by request id.
                self.log.warning(
                    "%s: %s on %s: %s", dispatch.request.request_id, error.code, deployment.id, error.detail
                )
        rate_limits = outcome.completed.rate_limits if outcome.completed is not None else None
        self._stat(dispatch, deployment, attempt, error, rate_limits)

    async def _end(
        self,
        dispatch: invoke_pb2.Dispatch,
        outcome: AttemptOutcome,
        decision: Verdict,
        span: trace.Span,
        attempt: invoke_pb2.Attempt | None = None,
        others_usd: Decimal = Decimal(0),
    ) -> None:
        """Carry out a final verdict: the client's reply, and the Completion with what is billed.

        `attempt` is the outcome's record (default: the last one); `others_usd` what the
        request's other attempts were billed (a hedge race's losers): the request's cost is the
        sum of its attempts'."""
        deployment, progress = outcome.deployment, outcome.progress
        usage = decision.billed
        # Counting tokens costs nothing (Anthropic does not bill it): its row has the count, at 0.
        free = dispatch.request.kind == invoke_pb2.InvokeRequest.KIND_COUNT_TOKENS
        own = call_cost(deployment, usage) if usage is not None and not free else Decimal(0)
        bill_attempt(attempt if attempt is not None else dispatch.attempts[-1], usage, own)
        cost = own + others_usd
        if usage is not None and (held := self._held.get(dispatch.request.request_id)) is not None:
            held.used = (usage, cost)  # billed by a router if this worker dies before its record
        if decision.reply == "final":
            assert outcome.completed is not None and usage is not None
            completed = outcome.completed
            response = build_response(dispatch, deployment, completed, cost, progress.ttft_ms)
            span.set_attributes(genai.usage_attributes(usage, completed.finish_reason))
            span.set_attribute("gen_ai.response.model", deployment.model)
            span.set_attribute("switchyard.cost_usd", response.cost_usd)
            metrics.record_usage(
                dispatch.request.project_id,
                deployment.provider,
                deployment.model,
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.cached_tokens,
                own,
            )
            # The record first, stored, then the answer (docs/reliability.md): a worker that dies
            # after answering must not take the only copy of the bill with it.
            event = self._completion(
                dispatch,
                decision.status,
                deployment=deployment,
                response=response,
                usage=usage,
                cost=cost,
                ttft_ms=progress.ttft_ms,
            )
            if await started(self.events, "the event publisher").publish_durable(
                subjects.COMPLETION,
                event.SerializeToString(),
                dispatch.request.request_id,
                telemetry.inject_headers(),
                self._store_wait_s(dispatch),
            ):
                await self.send_frame(dispatch.reply_to, codec.final_frame(response))
                if dispatch.cache_key:  # the router found no usable answer: this one is kept
                    entry = stored_answer(response, dispatch.request.project_id, dispatch.cache_ttl_ms)
                    await started(self.answers, "the response cache").put(dispatch.cache_key, entry)
                return
            # Not stored in time: refuse the answer. The upstream's bill is still recorded
            # (queued, retried while this worker lives) as an error with its cost.
            err = NOT_RECORDABLE.to_proto(dispatch.request.request_id)
            await self.send_frame(dispatch.reply_to, codec.error_frame(err))
            self._complete(
                dispatch, Status.ERROR, deployment=deployment, error=err, usage=usage, cost=cost,
                ttft_ms=progress.ttft_ms,
            )  # fmt: skip
            return
        assert outcome.error is not None
        err = outcome.error.to_proto(dispatch.request.request_id)
        if decision.reply == "error":
            await self.send_frame(dispatch.reply_to, codec.error_frame(err))
        # A request that ended in an error reports its time to first token only in its attempts.
        ttft_ms = progress.ttft_ms if decision.status == Status.CANCELLED else 0.0
        self._complete(
            dispatch,
            decision.status,
            deployment=deployment,
            error=err,
            usage=usage,
            cost=cost,
            ttft_ms=ttft_ms,
        )

    async def _call(
        self,
        deployment: Deployment,
        request: invoke_pb2.InvokeRequest,
        reply: str,
        progress: AttemptProgress,
        claim: Claim | None = None,
    ) -> Completed:
        """One upstream call; stream chunks go straight to the client as they arrive (a hedge
        racer's only once `claim` made it the winner: hedge_runner.py)."""
        adapter = self.adapter(deployment)
        if request.kind == invoke_pb2.InvokeRequest.KIND_COUNT_TOKENS:
            completed = await adapter.count_tokens(request)
            progress.ttft_ms = now_ms() - progress.started_ms
            return completed
        if not request.stream or request.kind == invoke_pb2.InvokeRequest.KIND_EMBEDDING:
            # A chat completion, or an embedding request (never streamed, whatever it asked).
            completed = await adapter.complete(request)
            progress.ttft_ms = now_ms() - progress.started_ms
            return completed
        # The first chunk goes out at once, later ones in batches (coalesce.py); whatever is
        # waiting is sent before this returns or raises, so before the final or error frame.
        chunks = ChunkCoalescer(
            functools.partial(self.send_frame, reply),
            self.settings.stream_coalesce_ms / 1000,
            self.settings.stream_coalesce_bytes,
        )
        try:
            # aclosing: the upstream response is closed at once on return, error or cancel.
            # The coalescer also paces the reads: the upstream is read once per window.
            async with contextlib.aclosing(adapter.stream(request, chunks)) as items:
                async for item in items:
                    if isinstance(item, Completed):
                        return item
                    if isinstance(item, Progress):
                        progress.reported = item.usage
                        continue
                    if (stop := progress.overrun(item, request, deployment)) is not None:
                        raise stop  # the budget hold is reached: docs/budgets.md
                    if not progress.chunks_sent:
                        progress.ttft_ms = now_ms() - progress.started_ms
                        if claim is not None:
                            claim()  # the race's loser is cancelled at once: it never gets here
                        progress.chunks_sent = True
                    progress.add_chunk(item)
                    await chunks.add(item)
        finally:
            await chunks.close()
        raise GatewayError(
            ErrorCode.UPSTREAM_ERROR, "stream ended without a final event", provider=deployment.provider
        )

    async def _fail(self, dispatch: invoke_pb2.Dispatch, reply: str, error: GatewayError) -> None:
        """End a request its next deployment cannot run (no worker of that pool, not configured here)."""
        err = error.to_proto(dispatch.request.request_id)
        await self.send_frame(reply, codec.error_frame(err))
        if not dispatch.hedge_for:  # a hedge racer's request is recorded by its racing worker
            self._complete(dispatch, Status.ERROR, error=err)

    def _completion(self, dispatch: invoke_pb2.Dispatch, status: str, **fields: Any) -> events_pb2.Completion:
        return build_completion(dispatch, status=status, trace_id=telemetry.current_trace_id(), **fields)

    def _store_wait_s(self, dispatch: invoke_pb2.Dispatch) -> float:
        """How long the answer may wait for its record: the setting, within the deadline, and
        at least RECORD_GRACE_S (the ingress waits that much past the deadline too)."""
        left_s = (
            (dispatch.request.deadline_unix_ms - now_ms()) / 1000 if dispatch.request.deadline_unix_ms else 0
        )
        return max(
            RECORD_GRACE_S, min(self.settings.event_store_wait_s, left_s or self.settings.event_store_wait_s)
        )

    def _complete(self, dispatch: invoke_pb2.Dispatch, status: str, **fields: Any) -> None:
        events = started(self.events, "the event publisher")
        record = self._completion(dispatch, status, **fields).SerializeToString()
        request_id = dispatch.request.request_id
        position = events.publish(
            subjects.COMPLETION, record, msg_id=request_id, headers=telemetry.inject_headers()
        )
        billed = Decimal(fields.get("cost", 0)) > 0
        self._unstored[request_id] = (position, record, billed)  # until stored: see _beat_message

    def _stat(
        self,
        dispatch: invoke_pb2.Dispatch,
        deployment: Deployment,
        attempt: invoke_pb2.Attempt,
        error: GatewayError | None,
        rate_limit_headers: dict[str, str] | None = None,
    ) -> None:
        stat = events_pb2.ProviderStat(
            deployment_id=deployment.id,
            request_id=dispatch.request.request_id,
            stream=dispatch.request.stream,
            latency_ms=attempt.latency_ms,
            ttft_ms=attempt.ttft_ms,
            ok=error is None,
            http_status=attempt.http_status,
            retry_after_ms=units.ms(error.retry_after_s) if error else 0.0,
            ts_unix_ms=int(now_ms()),
            error_code=error.code if error else "",
        )
        # The provider's own count of what is left lowers the budget authority's quota buckets.
        rate_limits = parse_rate_limits(rate_limit_headers) if rate_limit_headers else None
        if rate_limits is not None:
            stat.rate_limits.CopyFrom(rate_limits)
        # Sent with the interval's others: one message per interval, not per attempt. The timer
        # runs only while stats wait (an idle worker has none).
        self._stats.append(stat)
        if self._stats_timer is None:
            self._stats_timer = asyncio.get_running_loop().call_later(
                self.settings.worker_stats_s, self._stats_due
            )

    def _stats_due(self) -> None:
        self._stats_timer = None
        task = asyncio.ensure_future(self._send_stats())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_stats(self) -> None:
        """The interval's stats: all of them to every router, what the budget authority acts
        on (rate-limit readings, 429s) to it (services/providers/stat_batch.py)."""
        stats, self._stats = self._stats, []
        if not stats:
            return
        try:
            batch = events_pb2.ProviderStatBatch(stats=stats)
            await self.bus.publish(subjects.PROVIDER_STAT_BATCH, batch.SerializeToString())
            for stat in budget_digest(stats):
                await self.bus.publish(subjects.PROVIDER_STATS, stat.SerializeToString())
        except NATS_ERRORS as exc:  # reconnecting: health learns from the next interval's
            self.log.warning("provider stats not sent: %s", exc)

    async def drain(self) -> None:
        # Stop taking dispatches, let those in flight finish within the drain time; cut the
        # rest (handed to another worker when nothing reached the client, else an in-band
        # error), then flush the events. The beats go on until then, so no router takes
        # this worker for dead while it drains.
        for sub in self._subscriptions[:-1]:  # the last is the cancel subscription: kept
            await sub.unsubscribe()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.settings.drain_timeout_s)
        if self._held:
            self.log.warning("drain time over: handing on or ending %d request(s)", len(self._held))
            for request_id, task in list(self._upstream.items()):
                self._stop_cut.add(request_id)
                task.cancel()
            for task in list(self._tasks):
                if not task.done() and task not in self._upstream.values():
                    task.cancel()  # still waiting for a slot
            if self._tasks:  # each hands on or ends with an error frame
                await asyncio.wait(self._tasks, timeout=SETTLE_S)
            # A hand-over with no worker to take it is answered in a round trip: end those
            # here (`_on_handoff_exhausted`) before the events are flushed.
            with contextlib.suppress(*NATS_ERRORS):
                await self.bus.flush(timeout=1)
            await asyncio.sleep(0.2)
        if self._stats_timer is not None:
            self._stats_timer.cancel()
            self._stats_timer = None
        await self._send_stats()
        if self.events:  # the beats go on meanwhile: the records not stored stay in them
            await self.events.drain(self.settings.drain_timeout_s)
        if self.journal is not None:  # nothing held now: the key goes (unless records are unstored)
            await self.journal.stop()
            if self._journal_write is not None:
                await self._journal_write
            await self.journal.write(self.records_if_lost(), now_ms())
        if self._beat is not None:
            self._beat.cancel()
            await self._send_last_beat()  # the last `done`, and any record still not stored
        for adapter in self.adapters.values():
            await adapter.aclose()
        await super().drain()

    async def _send_last_beat(self) -> None:
        beat = self._beat_message()
        if beat is None:
            return
        with contextlib.suppress(*NATS_ERRORS):
            await self.bus.publish(subjects.WORKER_BEAT, beat.SerializeToString())


def _providers_from_env() -> list[str]:
    raw = os.environ.get("SWITCHYARD_PROVIDERS", "")
    return [p.strip() for p in raw.split(",") if p.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.providers")
    parser.add_argument(
        "--provider",
        action="append",
        default=[],
        help="provider pool(s) to serve; default: all configured",
    )
    args = parser.parse_args()
    run("providers", lambda settings: ProviderWorker(settings, providers=args.provider))
