"""Router process: queue group `router` on `llm.invoke`, plus every worker's `stats.provider.batch`.

For each request: resolve the model to candidates, apply the first matching rule, rank the
candidates by latency, cost, quality and health, ask the budget authority to reserve the
request's maximum cost, and publish a Dispatch to the first deployment's worker pool with the
ingress's reply subject, so the answer goes straight back to the ingress. The scoring is in
ranking.py, health.py, rules.py and strategy.py (pure); this module is the I/O around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import time
from decimal import Decimal
from typing import Any

import orjson
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.nuid import NUID
from opentelemetry import trace
from prometheus_client import Counter

from switchyard import codec, genai, metrics, subjects, telemetry, units
from switchyard.bus import NATS_ERRORS, EventPublisher, ensure_events_stream
from switchyard.catalog import Deployment, read_config
from switchyard.completions import completion_event
from switchyard.deadlines import GoneBook, skip_reason
from switchyard.errors import ErrorCode, GatewayError
from switchyard.handoff import HandOff
from switchyard.lifecycle import started
from switchyard.pricing import format_usd
from switchyard.response_cache import ENTRY_HEADROOM_BYTES, AnswerStore
from switchyard.service import BusService, run
from switchyard.tokens import tokenizer_for, warm_up
from switchyard.v1 import budget_pb2, events_pb2, invoke_pb2, liveness_pb2
from switchyard.vocab import Status

from . import downgrade
from .answers import CachedAnswers
from .escrow import Escrow, RouterLease, ScopeKey
from .health import HealthBook, Sample
from .hedging import BUDGET_SKIP, NO_HEDGE, Hedge, Observed, disarm, plan_hedge
from .inflight import Inflight
from .liveness import LivenessBook, Watched
from .quota import QuotaView
from .ranking import (
    DEFAULT_EXPECTED_OUTPUT_TOKENS,
    Ranked,
    candidate_state,
    expected_output_tokens,
    quota_chain,
    rank,
)
from .reservation import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    authorize_request,
    chain_holds,
    hedged_holds,
    serving,
    worst_cases,
)
from .rules import Features, features_of, first_match
from .strategy import choose_weights, preset
from .tuning import tuning_from_config

# How the budget admitted each request this router dispatched: from one of its leases (no bus
# message) or by the authority, per request (docs/budgets.md, "Leases (escrow)").
ADMISSIONS = Counter(
    "switchyard_router_budget_admissions_total", "Requests admitted by the budget, by how", ["via"]
)
tracer = telemetry.tracer("switchyard.router")
# Lease asks are off the request path: waited for longer than an authorization, since a grant
# whose answer is lost stays held (unused) until it expires.
LEASE_ASK_TIMEOUT_S = 5.0
# A lease ask that fails for any of these is sent again later; requests are decided per request.
LEASE_ASK_ERRORS: tuple[type[Exception], ...] = (
    NoRespondersError,
    NatsTimeoutError,
    DecodeError,
    *NATS_ERRORS,
)
# When a request sets no max_tokens, its rate-limit (TPM) estimate assumes this many.
DEFAULT_MAX_TOKENS_FOR_BUDGET = DEFAULT_MAX_OUTPUT_TOKENS
# The client's answer when the worker serving its request died: retryable by the client (a
# second try goes to a live worker), not by the gateway once something may have streamed.
WORKER_LOST = GatewayError(
    ErrorCode.UNAVAILABLE,
    "the provider worker serving this request stopped; retry",
    retry_after_s=1.0,
    retryable=False,
)
ALL_BUSY = GatewayError(
    ErrorCode.OVERLOADED, "every provider worker for this model is at capacity; retry", retry_after_s=1.0
)
# What the ingress refuses by itself and reports on `ingress.refused` for its ledger row.
INGRESS_REFUSAL_CODES = frozenset({ErrorCode.PAYLOAD_TOO_LARGE})
NO_WORKER = GatewayError(
    ErrorCode.UNAVAILABLE, "no provider worker is available for this model right now", retry_after_s=1.0
)
# Dropped before authorization (switchyard/deadlines.py): no budget hold, no hand-off.
DEADLINE_PASSED = GatewayError(
    ErrorCode.TIMEOUT, "the request's deadline passed before it could be routed", retryable=False
)
CLIENT_LEFT = GatewayError(
    ErrorCode.CLIENT_CLOSED, "the client went away before the request was routed", retryable=False
)


class Router(BusService):
    name = "router"

    def __init__(self, *args: Any, take_invokes: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # False inside an ingress process (SWITCHYARD_ROUTER_MODE=ingress): requests come by
        # `accept`, not from the `router` queue group on llm.invoke (services/ingress/colocated.py).
        self.take_invokes = take_invokes
        self._sub: Any = None
        self._slots = asyncio.Semaphore(self.settings.router_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self.events: EventPublisher | None = None
        self.tuning = tuning_from_config(read_config(self.settings.config_file))
        self.health = HealthBook(self.tuning)
        self.inflight = Inflight()
        self.quotas = QuotaView()
        self.pressure = downgrade.PressureView()  # budget.pressure: how full each scope is
        self.identity = f"{socket.gethostname()}:{os.getpid()}"
        self.liveness = LivenessBook(self.settings.worker_lost_after_s)
        self._watch: asyncio.Task[None] | None = None
        self.gone = GoneBook(self.settings.request_timeout_s)  # clients that left (deadlines.py)
        self.handoff = HandOff(self._on_handoff_exhausted, self._on_handoff_moved)
        # Budget leases (escrow.py): this instance's id at the authority, its leases, the lease
        # asks in flight per scope (one at a time: requests arriving meanwhile wait for it).
        self.instance = f"{self.identity}:{NUID().next().decode()[:8]}"
        self.escrow = Escrow()
        self._lease_asks: dict[ScopeKey, asyncio.Future[None]] = {}
        self._lease_tasks: set[asyncio.Task[object]] = set()
        self._escrow_tick: asyncio.Task[None] | None = None
        self.answers: CachedAnswers | None = None

    async def start(self) -> None:
        # Load the BPE encodings the catalog's deployments are estimated with (tokens.py) now,
        # not on the first request.
        warm_up({tokenizer_for(dep.adapter, dep.model) for dep in self.catalog.deployments.values()})
        nc = await self.connect()
        js = nc.jetstream()
        await ensure_events_stream(js, self.settings.stream_replicas)
        self.events = EventPublisher(js)
        self.events.start()
        await self.handoff.start(nc)
        store = await AnswerStore.open(
            js,
            self.settings.stream_replicas,
            self.settings.response_cache_max_age_s,
            self.settings.response_cache_max_bytes,
            nc.max_payload - ENTRY_HEADROOM_BYTES,
        )
        self.answers = CachedAnswers(self.catalog, store)
        if self.take_invokes:
            self._sub = await nc.subscribe(
                subjects.INVOKE,
                queue=subjects.ROUTER_QUEUE,
                cb=self._on_invoke,
                pending_msgs_limit=self.settings.router_concurrency * 8,
            )
        # Fan-out (no queue group): every router learns from every worker's samples.
        self._stats_sub = await nc.subscribe(subjects.PROVIDER_STAT_BATCH, cb=self._on_stats)
        self._quota_sub = await nc.subscribe(subjects.QUOTA_STATE, cb=self._on_quota_state)
        self._pressure_sub = await nc.subscribe(subjects.BUDGET_PRESSURE, cb=self._on_pressure)
        self._beat_sub = await nc.subscribe(subjects.WORKER_BEAT, cb=self._on_beat)
        self._revoke_sub = await nc.subscribe(subjects.BUDGET_LEASE_REVOKE, cb=self._on_lease_revoke)
        self._watch = asyncio.create_task(self._watch_workers(), name="router-liveness")
        if self.settings.budget_escrow:
            self._escrow_tick = asyncio.create_task(self._give_back_expired(), name="router-escrow")
        self._refused_sub = await nc.subscribe(
            subjects.INGRESS_REFUSED, queue=subjects.ROUTER_QUEUE, cb=self._on_ingress_refused
        )
        # Fan-out: a request still queued here whose client left is dropped when its turn comes.
        self._cancel_sub = await nc.subscribe(subjects.cancel("*"), cb=self._on_cancel)
        self.ready = True

    async def _on_cancel(self, msg: Msg) -> None:
        self.gone.add(msg.subject[len(subjects.CANCEL_PREFIX) + 1 :], time.monotonic())

    async def _on_beat(self, msg: Msg) -> None:
        try:
            beat = liveness_pb2.WorkerBeat.FromString(msg.data)
        except DecodeError:
            self.log.warning("undecodable worker beat ignored")
            return
        self.liveness.observe(beat, time.monotonic())

    async def _watch_workers(self) -> None:
        """End (or hand to another worker) each request whose worker stopped beating for it."""
        interval = self.settings.worker_beat_s
        woke = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            late = now - woke - interval
            woke = now
            if late > interval:  # this loop stood still: read the beats that waited first
                self.liveness.stalled(late)
                continue
            for watched in self.liveness.lost(now):
                try:
                    await self._on_worker_lost(watched)
                except Exception:  # the watch must outlive anything, or later losses go unseen
                    self.log.exception("ending request %s failed", watched.dispatch.request.request_id)

    async def _on_worker_lost(self, watched: Watched) -> None:
        """The worker holding this request is gone: record its attempt, then hand the request to
        another worker once if nothing can have reached the client (it does not stream), else
        end it with an in-band error; either way the ledger gets its row and the hold is freed."""
        dispatch = watched.dispatch
        request = dispatch.request
        metrics.ERRORS.labels(self.name, "worker_lost").inc()
        events = started(self.events, "the event publisher")
        if watched.record:
            # It had finished (the client has its answer or error); its record was in the dead
            # worker's memory only, waiting for the events stream: publish the copy its beats
            # carried (the same msg id, so a copy stored meanwhile is dropped by the stream).
            self.log.warning("request %s: recording it for its lost provider worker", request.request_id)
            events.publish(subjects.COMPLETION, watched.record, msg_id=request.request_id)
            return
        self.log.warning("request %s lost its provider worker", request.request_id)
        # A worker that is alive but stalled must not go on with it (and bill it twice).
        await self.bus.publish(subjects.cancel(request.request_id), b"")
        deployment = self.catalog.deployments.get(watched.deployment_id)
        # What its upstream call used that the provider bills (a stream's delivered output, a
        # finished call's usage), as the worker's last beat reported it: billed here.
        cost = Decimal(watched.used_cost_usd or 0) if watched.used is not None else Decimal(0)
        attempt = dispatch.attempts.add(
            deployment_id=watched.deployment_id,
            provider=deployment.provider if deployment else "",
            model=deployment.model if deployment else "",
            status=invoke_pb2.STATUS_ERROR,
            error_code=WORKER_LOST.code,
            error_message=WORKER_LOST.message,
            cost_usd=format_usd(cost),
        )
        if watched.used is not None:
            attempt.usage.CopyFrom(watched.used)
        elif (
            not request.stream
            and not watched.finished
            and not watched.redispatched
            and await self.handoff.send(dispatch)
        ):
            self._watch_dispatch(dispatch, redispatched=True)  # nothing billed, nothing sent: again
            return
        await self._end_lost(dispatch, finished=watched.finished, used=watched.used, cost=cost)

    async def _end_lost(
        self,
        dispatch: invoke_pb2.Dispatch,
        finished: bool = False,
        used: invoke_pb2.Usage | None = None,
        cost: Decimal = Decimal(0),
    ) -> None:
        """A request whose worker died (and that no other worker took): an in-band error to
        its client (unless it had its answer) and an `error` record with its attempts."""
        request = dispatch.request
        lost = [a for a in dispatch.attempts if a.error_code == WORKER_LOST.code]
        deployment = self.catalog.deployments.get(lost[-1].deployment_id) if lost else None
        err = WORKER_LOST.to_proto(request.request_id)
        if not finished:  # (a finished one's client has had its answer)
            with contextlib.suppress(*NATS_ERRORS):
                await self.send_frame(dispatch.reply_to, codec.error_frame(err))
        event = completion_event(
            request,
            status=Status.ERROR,
            trace_id="",
            dispatch=dispatch,
            deployment=deployment,
            error=err,
            usage=used,
            cost=cost,
        )
        events = started(self.events, "the event publisher")
        events.publish(subjects.COMPLETION, event.SerializeToString(), msg_id=request.request_id)

    def _watch_dispatch(self, dispatch: invoke_pb2.Dispatch, redispatched: bool = False) -> None:
        deadline_ms = dispatch.request.deadline_unix_ms
        remaining_s = (
            (deadline_ms - time.time_ns() / 1e6) / 1000 if deadline_ms else self.settings.request_timeout_s
        )
        self.liveness.watch(dispatch, time.monotonic(), remaining_s, redispatched=redispatched)

    async def _on_ingress_refused(self, msg: Msg) -> None:
        """Record a request the ingress refused itself (a body too large for the edge or the
        bus) as `rejected`. Rebuilt from its ids alone, so a report can never carry a cost,
        usage or attempts, and only for the codes the ingress refuses with."""
        try:
            report = events_pb2.Completion.FromString(msg.data)
        except DecodeError:
            self.log.warning("undecodable ingress refusal ignored")
            return
        if report.error_code not in INGRESS_REFUSAL_CODES or not report.request_id:
            self.log.warning("ingress refusal with code %r ignored", report.error_code)
            return
        request = invoke_pb2.InvokeRequest(
            request_id=report.request_id,
            project_id=report.project_id,
            agent_id=report.agent_id,
            key_id=report.key_id,
            api=report.api,
            received_unix_ms=report.started_unix_ms,
            metadata=report.metadata,
        )
        self._reject(request, invoke_pb2.Error(code=report.error_code, message=report.error_message))

    async def _on_pressure(self, msg: Msg) -> None:
        with contextlib.suppress(orjson.JSONDecodeError, AttributeError):  # a reading: skip a bad one
            self.pressure.update(orjson.loads(msg.data), time.monotonic())

    async def _on_quota_state(self, msg: Msg) -> None:
        try:
            state = budget_pb2.QuotaState.FromString(msg.data)
        except DecodeError:
            self.log.warning("undecodable quota state ignored")
            return
        self.quotas.update(state, time.monotonic())

    async def _on_stats(self, msg: Msg) -> None:
        """A worker's provider stats of one interval (SWITCHYARD_WORKER_STATS_S): health
        samples, and the end of each request's in-flight count here."""
        try:
            batch = events_pb2.ProviderStatBatch.FromString(msg.data)
        except DecodeError:
            self.log.warning("undecodable provider stats ignored")
            return
        now = time.monotonic()
        for stat in batch.stats:
            sample = Sample(
                ok=stat.ok,
                latency_ms=stat.latency_ms,
                ttft_ms=stat.ttft_ms,
                stream=stat.stream,
                error_code=stat.error_code,
                retry_after_s=units.seconds(stat.retry_after_ms),
            )
            self.health.observe(stat.deployment_id, sample, now)
            if stat.request_id:
                self.inflight.finish(stat.request_id, stat.deployment_id)

    async def _on_invoke(self, msg: Msg) -> None:
        await self._slots.acquire()
        task = asyncio.create_task(self._handle(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def accept(
        self, request: invoke_pb2.InvokeRequest, reply_to: str, headers: dict[str, str] | None = None
    ) -> None:
        """Take a request handed over in-process (an ingress running this router itself,
        SWITCHYARD_ROUTER_MODE=ingress): routed in its own task exactly as one from
        `llm.invoke`, answered on `reply_to`. Returns once it is taken (a slot is free), so a
        caller that goes away does not cancel its routing; the trace continues from `headers`,
        or from the caller's current span when None."""
        await self._slots.acquire()
        task = asyncio.create_task(self._serve(request, reply_to, headers))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, msg: Msg) -> None:
        try:
            request = invoke_pb2.InvokeRequest.FromString(msg.data)
        except DecodeError:
            self._slots.release()
            self.log.exception("routing failed: undecodable request")
            if msg.reply:
                err = invoke_pb2.Error(code=ErrorCode.INTERNAL, message="router error")
                await self.send_frame(msg.reply, codec.error_frame(err))
            return
        await self._serve(request, msg.reply, msg.headers or {})

    async def _serve(
        self, request: invoke_pb2.InvokeRequest, reply_to: str, headers: dict[str, str] | None
    ) -> None:
        """Route one request (from the bus or `accept`); frees its slot when done."""
        try:
            ctx = telemetry.extract_context(headers) if headers is not None else None
            with (
                metrics.track(self.name) as outcome,
                telemetry.span(
                    tracer, "router.route", parent=ctx, attributes=lambda: genai.request_attributes(request)
                ) as span,
            ):
                skip = skip_reason(
                    request.request_id, request.deadline_unix_ms, time.time_ns() / 1e6, self.gone
                )
                if skip is not None:
                    # It waited here past its deadline, or its client left: no budget hold, no
                    # upstream call; recorded as rejected like any refusal.
                    error = DEADLINE_PASSED if skip == "deadline" else CLIENT_LEFT
                    err = error.to_proto(request.request_id)
                    if skip == "deadline":
                        await self.send_frame(reply_to, codec.error_frame(err))
                    self._reject(request, err)
                    metrics.SKIPPED.labels(self.name, skip).inc()
                    outcome["status"] = err.code
                    return
                answers = started(self.answers, "the response cache")
                cached = await answers.lookup(request)
                if cached is not None and cached.answer is not None:
                    # Answered from the response cache: no budget, no worker (router/answers.py).
                    await answers.answer(
                        self.send_frame,
                        started(self.events, "the event publisher"),
                        request,
                        reply_to,
                        cached,
                    )
                    span.set_attribute("switchyard.cache", "hit")
                    return
                try:
                    dispatch = await self.route(request, cached.features if cached is not None else None)
                except GatewayError as error:
                    err = error.to_proto(request.request_id)
                    await self.send_frame(reply_to, codec.error_frame(err))
                    self._reject(request, err)
                    outcome["status"] = err.code
                    span.set_attribute("error.type", err.code)
                    span.set_status(trace.StatusCode.ERROR, err.code)
                    return
                dispatch.reply_to = reply_to
                if cached is not None:  # a miss: the worker stores the answer under this key
                    dispatch.cache_key, dispatch.cache_ttl_ms = cached.key, cached.ttl_ms
                first = dispatch.chain[0]
                span.set_attributes(genai.target_attributes(first.provider, first.model, first.deployment_id))
                span.set_attribute("switchyard.route", dispatch.route)
                span.set_attribute("switchyard.candidates", len(dispatch.chain))
                # Answered only if it did not land: `_on_handoff_moved` / `_on_handoff_exhausted`.
                self._count_inflight(dispatch)
                self._watch_dispatch(dispatch)
                try:
                    await self.handoff.send(dispatch)
                except BaseException:
                    self.inflight.finish(request.request_id, first.deployment_id)
                    self.liveness.forget(request.request_id)
                    raise
        except Exception:  # the request's boundary: whatever failed, the caller gets an answer
            self.log.exception("routing failed")
            if reply_to:
                err = invoke_pb2.Error(code=ErrorCode.INTERNAL, message="router error")
                await self.send_frame(reply_to, codec.error_frame(err))
        finally:
            self._slots.release()

    def _on_handoff_moved(self, dispatch: invoke_pb2.Dispatch, bounced: invoke_pb2.Target) -> None:
        """A pool did not take the dispatch (no worker, or all busy) and it went on to the next
        pool (or the same one again): count it there, watch it from now."""
        self.inflight.finish(dispatch.request.request_id, bounced.deployment_id)
        self._count_inflight(dispatch)
        watched = self.liveness.get(dispatch.request.request_id)
        self._watch_dispatch(dispatch, redispatched=watched is not None and watched.redispatched)

    async def _on_handoff_exhausted(self, dispatch: invoke_pb2.Dispatch, bounced: invoke_pb2.Target) -> None:
        """Every pool left in the chain was missing or full (its workers answered "busy"):
        refused at once with Retry-After, recorded with the attempts that say why. A request
        redispatched after its worker died ends as lost instead (its attempts say so)."""
        request = dispatch.request
        self.inflight.finish(request.request_id, bounced.deployment_id)
        watched = self.liveness.forget(request.request_id)
        if watched is not None and watched.redispatched:
            await self._end_lost(dispatch)
            return
        full = any(a.error_code == ErrorCode.OVERLOADED for a in dispatch.attempts)
        err = (ALL_BUSY if full else NO_WORKER).to_proto(request.request_id)
        metrics.ERRORS.labels(self.name, err.code).inc()
        with contextlib.suppress(*NATS_ERRORS):
            await self.send_frame(dispatch.reply_to, codec.error_frame(err))
        self._reject(request, err, dispatch)

    def _count_inflight(self, dispatch: invoke_pb2.Dispatch) -> None:
        """Count the request on the deployment that took it, until its stat (or deadline)."""
        now = time.monotonic()
        target = dispatch.chain[dispatch.position]
        deadline_ms = dispatch.request.deadline_unix_ms
        remaining_s = (deadline_ms - time.time_ns() / 1e6) / 1000 if deadline_ms else 0.0
        expires = now + (remaining_s if remaining_s > 0 else self.settings.request_timeout_s)
        # A half-open deployment that took the request is being probed: one trial at a time.
        probe = any(
            c.deployment_id == target.deployment_id and c.breaker == "half_open"
            for c in dispatch.rationale.candidates
        )
        self.inflight.start(dispatch.request.request_id, target.deployment_id, expires, probe=probe)

    def decide(
        self, request: invoke_pb2.InvokeRequest, features: Features | None = None
    ) -> tuple[str, int, Ranked]:
        """The pure part of routing: rule, weights, health snapshot, ranking. `features` when
        the caller has them already (the response cache's lookup)."""
        requested, candidates = self.catalog.resolve(request.model)
        if features is None:
            features = features_of(request)
        rule = first_match(self.catalog.rules, requested, features)
        route_name = requested
        if rule is not None:
            route_name, candidates = self.catalog.resolve(rule.route)
        candidates = serving(candidates, request, route_name)
        strategy = request.strategy if request.HasField("strategy") else None
        strategy_name, weights = choose_weights(strategy, self.catalog.route(route_name))
        now = time.monotonic()
        self.inflight.expire(now)
        states = {
            dep.id: candidate_state(
                self.health.view(dep.id, now, request.stream),
                self.inflight.count(dep.id),
                self.inflight.probes(dep.id),
                self.tuning.half_open_probes,
                self.quotas.reading(dep.id, now),
            )
            for dep in candidates
        }
        ranking = functools.partial(
            rank,
            route_name,
            candidates,
            states,
            prompt_tokens=features.prompt_tokens,
            expected_output=expected_output_tokens(request.max_tokens, self.tuning.expected_output_tokens),
            latency_floor_ms=self.tuning.latency_floor_ms,
            rule=rule.name if rule else "",
        )
        ranked = ranking(weights, strategy=strategy_name)
        trigger = self.pressure.triggered(self.catalog.route(route_name), request, now)
        if trigger is not None:  # budget-aware downgrade (services/router/downgrade.py)
            downgraded = downgrade.cheaper(
                ranking(preset(trigger.strategy), strategy=trigger.strategy), ranked
            )
            if downgraded is not None:
                downgrade.note(downgraded.rationale, trigger, ranked.rationale)
                ranked = downgraded
        return route_name, features.prompt_tokens, ranked

    async def route(
        self, request: invoke_pb2.InvokeRequest, features: Features | None = None
    ) -> invoke_pb2.Dispatch:
        started = time.perf_counter_ns()
        route, prompt_tokens, ranked = self.decide(request, features)
        ranked.rationale.decision_ms = (time.perf_counter_ns() - started) / 1e6
        ranked.rationale.decided_by = self.identity
        hedge = self.plan_hedge(route, request, ranked.chain[: self.tuning.max_attempts])
        try:
            decision, lease = await self.authorize(request, ranked.chain, prompt_tokens, hedge)
        except GatewayError as denied:
            if hedge.plan is None or denied.code != ErrorCode.BUDGET_EXCEEDED:
                raise
            # The budget covers one attempt but not the race: serve it unhedged.
            hedge = disarm(hedge, BUDGET_SKIP)
            decision, lease = await self.authorize(request, ranked.chain, prompt_tokens, hedge)
        chain = quota_chain(ranked, decision, self.tuning.max_attempts)
        if hedge.plan is not None and [d.id for d in chain] != [d.id for d in ranked.chain[: len(chain)]]:
            # The hold was sized for the ranked order; the authority moved it for quota.
            hedge = disarm(hedge, "the chain was reordered for provider quota")
        dispatch = invoke_pb2.Dispatch(
            request=request,
            rationale=ranked.rationale,
            reservation_id=decision.reservation_id,
            reserved_usd=decision.held_usd,
            route=route,
            routed_unix_ms=time.time_ns() / 1e6,
            max_attempts=self.tuning.max_attempts,
        )
        if lease is not None:  # admitted from a budget lease: settlement takes its hold out of it
            dispatch.lease_id, held, dispatch.lease_tokens = lease
            dispatch.lease_held_usd = format_usd(held)
        if hedge.note is not None:
            dispatch.rationale.hedge.CopyFrom(hedge.note)
        if hedge.plan is not None:
            dispatch.hedge.CopyFrom(hedge.plan)
        for dep in chain:
            dispatch.chain.add(deployment_id=dep.id, provider=dep.provider, model=dep.model)
        dispatch.router_ms = (time.perf_counter_ns() - started) / 1e6
        return dispatch

    def plan_hedge(self, route: str, request: invoke_pb2.InvokeRequest, chain: list[Deployment]) -> Hedge:
        """Whether (and after how long) this request may hedge: hedging.py, on this router's
        health book and quota view."""
        now = time.monotonic()

        def observe(deployment_id: str, p: float) -> Observed:
            value, samples = self.health.percentile(deployment_id, request.stream, p)
            return Observed(value, samples)

        return plan_hedge(
            self.catalog.route(route), request, chain, observe, lambda d: self.quotas.reading(d, now)
        )

    async def authorize(
        self,
        request: invoke_pb2.InvokeRequest,
        chain: list[Deployment],
        prompt_tokens: int,
        hedge: Hedge = NO_HEDGE,
    ) -> tuple[budget_pb2.Decision, tuple[str, Decimal, int] | None]:
        """Reserve the most this request can cost on any deployment it may reach from the first
        candidate of `chain` with provider-quota headroom (reservation.py), both racers of an
        armed hedge included: from a budget lease of this router when one has room (no bus
        message; the lease id, the hold and the TPM estimate taken from it come with the
        decision), else by asking the authority; raise its denial. A lease on a rate-limited
        scope also holds a slice of its RPS/TPM buckets (docs/budgets.md, "Leases on
        rate-limited scopes")."""
        worst = worst_cases(request, chain)
        costs = [w.cost_usd for w in worst]
        if hedge.plan is not None:
            holds = hedged_holds(costs, self.tuning.max_attempts, hedge.plan.max_hedges)
        else:
            holds = chain_holds(costs, self.tuning.max_attempts)
        max_tokens = request.max_tokens or DEFAULT_MAX_TOKENS_FOR_BUDGET
        if worst and not worst[0].output_tokens:  # embeddings and token counts produce no output
            max_tokens = 0
        estimated_tokens = prompt_tokens + min(max_tokens, DEFAULT_EXPECTED_OUTPUT_TOKENS)
        # Provider quotas pick the candidate per request at the authority: no lease for them.
        leasable = self.settings.budget_escrow and not any(dep.limits.any for dep in chain)
        key: ScopeKey = (request.project_id, request.agent_id, request.key_id)
        pending: asyncio.Future[None] | None = None
        if leasable:
            deadline_ms = request.deadline_unix_ms or int(
                time.time() * 1000 + self.settings.request_timeout_s * 1000
            )
            for _ in range(2):
                lease = self.escrow.admit(
                    key,
                    request.request_id,
                    holds[0],
                    deadline_ms,
                    int(request.received_unix_ms),
                    time.monotonic(),
                    estimated_tokens,
                )
                if lease is not None:
                    if self.escrow.wants_renewal(key, time.monotonic()) and key not in self._lease_asks:
                        self._renew(key, holds[0], estimated_tokens)
                    admitted = (lease.lease_id, holds[0], estimated_tokens if lease.tokens_limited else 0)
                    ADMISSIONS.labels("lease").inc()
                    return self._admitted(request, chain[0].id, holds[0], lease), admitted
                asking = self._lease_asks.get(key)
                if asking is None:
                    break
                await asyncio.shield(asking)  # a lease is on its way: try it before asking alone
        # Built only now: a request admitted from a lease above never needs it.
        ask = authorize_request(request, chain[0].id, worst, holds, estimated_tokens)
        if leasable:
            # No lease has room: ask per request, with a lease for what follows (one ask at a
            # time per scope) and this router's closed leases given back first.
            self.escrow.close(key, time.monotonic(), holds[0], estimated_tokens)
            if key not in self._lease_asks:
                pending = self._lease_asks[key] = asyncio.get_running_loop().create_future()
                ask.lease_for = self.instance
            ask.returns.extend(self.escrow.take_returns())
        sent = time.monotonic()  # a lease granted with the answer admits from here (escrow.py)
        try:
            try:
                reply = await self.bus.request(
                    subjects.BUDGET_AUTHORIZE,
                    ask.SerializeToString(),
                    timeout=self.settings.budget_timeout_s,
                    headers=telemetry.inject_headers(),
                )
            except (NoRespondersError, NatsTimeoutError) as exc:
                self.escrow.requeue(list(ask.returns))  # given back again later (idempotent)
                # Fail closed: spending without the authority could cross a cap.
                raise GatewayError(
                    ErrorCode.UNAVAILABLE, "the budget authority did not answer; try again", retry_after_s=1.0
                ) from exc
            decision = budget_pb2.Decision.FromString(reply.data)
            if decision.deny_code == ErrorCode.UNAVAILABLE:  # not applied: sent again later
                self.escrow.requeue(list(ask.returns))
            if (
                decision.lease.lease_id
                and self.escrow.add(key, decision.lease, time.monotonic(), sent) is None
            ):
                self._send_returns()  # revoked before it arrived: given back at once
        finally:
            if pending is not None:
                self._lease_asks.pop(key, None)
                pending.set_result(None)
        if not decision.allow:
            raise GatewayError(
                decision.deny_code or ErrorCode.BUDGET_EXCEEDED,
                decision.deny_reason or "denied by the budget authority",
                retry_after_s=units.seconds(decision.retry_after_ms),
                retryable=False,
            )
        ADMISSIONS.labels("authority").inc()
        return decision, None

    @staticmethod
    def _admitted(
        request: invoke_pb2.InvokeRequest, deployment_id: str, hold: Decimal, lease: RouterLease
    ) -> budget_pb2.Decision:
        """The decision for a request admitted from a lease: what the authority would answer."""
        return budget_pb2.Decision(
            allow=True,
            reservation_id=request.request_id,
            deployment_id=deployment_id,
            held_usd=format_usd(hold) if lease.capped else "",
        )

    def _renew(self, key: ScopeKey, unit: Decimal, tokens: int) -> None:
        """Ask for the scope's next lease in the background (requests that find the live ones
        dry meanwhile wait for it), giving back the closed ones."""
        pending = self._lease_asks[key] = asyncio.get_running_loop().create_future()
        ask = budget_pb2.LeaseAsk(
            router_id=self.instance,
            project_id=key[0],
            agent_id=key[1],
            key_id=key[2],
            unit_usd=format_usd(unit),
            want=True,
            returns=self.escrow.take_returns(),
            tokens_per_request=tokens,
        )

        async def renew() -> None:
            try:
                sent = time.monotonic()
                grant = await self._ask_lease(ask)
                if (
                    grant is not None
                    and grant.lease_id
                    and self.escrow.add(key, grant, time.monotonic(), sent) is None
                ):
                    self._send_returns()  # revoked before it arrived: given back at once
            finally:
                self._lease_asks.pop(key, None)
                pending.set_result(None)

        task = asyncio.create_task(renew(), name="router-lease-renew")
        self._lease_tasks.add(task)
        task.add_done_callback(self._lease_tasks.discard)

    async def _ask_lease(self, ask: budget_pb2.LeaseAsk) -> budget_pb2.LeaseGrant | None:
        """Send a lease ask; on no answer its returns are kept to be sent again."""
        try:
            reply = await self.bus.request(
                subjects.BUDGET_LEASE, ask.SerializeToString(), timeout=LEASE_ASK_TIMEOUT_S
            )
            return budget_pb2.LeaseGrant.FromString(reply.data)
        except LEASE_ASK_ERRORS as exc:
            self.log.info(
                "budget lease ask not answered (%s): decided per request meanwhile", type(exc).__name__
            )
            self.escrow.requeue(list(ask.returns))
            return None

    async def _on_lease_revoke(self, msg: Msg) -> None:
        """A cap or limit of these leases' scopes changed, or the authority recalls them (a
        request at a cap or a rate limit waits for what they hold unused): stop admitting from
        them, give them back now."""
        try:
            revoke = budget_pb2.LeaseRevoke.FromString(msg.data)
        except DecodeError:
            self.log.warning("undecodable lease revocation ignored")
            return
        # Closed leases not sent back yet go too: the authority may be waiting for them (a
        # recall at a cap or a rate limit, docs/budgets.md "At the cap").
        if self.escrow.revoke(set(revoke.lease_ids)) or self.escrow.returns:
            await self._ask_lease(
                budget_pb2.LeaseAsk(router_id=self.instance, returns=self.escrow.take_returns())
            )

    def _send_returns(self) -> None:
        """Give the closed leases back now, in the background."""
        ask = budget_pb2.LeaseAsk(router_id=self.instance, returns=self.escrow.take_returns())
        task = asyncio.create_task(self._ask_lease(ask), name="router-lease-return")
        self._lease_tasks.add(task)
        task.add_done_callback(self._lease_tasks.discard)

    async def _give_back_expired(self) -> None:
        """Give back leases whose admit window ended, so their unused rest is free at once."""
        interval = max(self.settings.budget_escrow_ttl_s / 2, 0.05)
        while True:
            await asyncio.sleep(interval)
            try:
                self.escrow.close_expired(time.monotonic())
                if self.escrow.returns:
                    await self._ask_lease(
                        budget_pb2.LeaseAsk(router_id=self.instance, returns=self.escrow.take_returns())
                    )
            except Exception:  # the loop must outlive anything: a lease not returned expires anyway
                self.log.exception("giving budget leases back failed")

    def _reject(
        self,
        request: invoke_pb2.InvokeRequest,
        err: invoke_pb2.Error,
        dispatch: invoke_pb2.Dispatch | None = None,
    ) -> None:
        """Requests refused before any upstream call are still recorded, as `rejected` (with the
        hand-off attempts that found no worker or no room, when it got that far)."""
        events = started(self.events, "the event publisher")
        event = completion_event(
            request,
            status=Status.REJECTED,
            trace_id=telemetry.current_trace_id(),
            error=err,
            dispatch=dispatch,
        )
        events.publish(
            subjects.COMPLETION,
            event.SerializeToString(),
            msg_id=request.request_id,
            headers=telemetry.inject_headers(),
        )

    async def drain(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
        await self._stats_sub.unsubscribe()
        await self._quota_sub.unsubscribe()
        await self._pressure_sub.unsubscribe()
        await self._refused_sub.unsubscribe()
        await self._cancel_sub.unsubscribe()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.settings.drain_timeout_s)
        await self._return_leases()
        if self._watch is not None:
            self._watch.cancel()
        await self._beat_sub.unsubscribe()
        await self._revoke_sub.unsubscribe()
        if self.events:
            await self.events.drain(self.settings.drain_timeout_s)
        await super().drain()

    async def _return_leases(self) -> None:
        """On drain: every lease goes back, so its unused rest is free at once (their admitted
        requests stay held until they settle)."""
        if self._escrow_tick is not None:
            self._escrow_tick.cancel()
        for task in list(self._lease_tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.escrow.close_all()
        if self.escrow.returns:
            await self._ask_lease(
                budget_pb2.LeaseAsk(router_id=self.instance, returns=self.escrow.take_returns())
            )


def main() -> None:
    run("router", Router)
