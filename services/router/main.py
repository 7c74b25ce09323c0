"""Router process: queue group `router` on `llm.invoke`.

For each request: resolve the model to candidates, rank them, ask the budget authority to
reserve the request's maximum cost, and publish a Dispatch to the first deployment's worker
pool with the ingress's reply subject, so the answer goes straight back to the ingress.
"""

from __future__ import annotations

import asyncio
import time

from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from opentelemetry import trace

from switchyard import codec, genai, metrics, subjects, telemetry
from switchyard.bus import EventPublisher, ensure_events_stream
from switchyard.catalog import Deployment
from switchyard.errors import GatewayError
from switchyard.handoff import hand_off
from switchyard.pricing import format_usd, max_cost_usd
from switchyard.service import BusService, run
from switchyard.tokens import estimate_prompt_tokens
from switchyard.v1 import budget_pb2, events_pb2, invoke_pb2

from .ranking import DEFAULT_EXPECTED_OUTPUT_TOKENS, rank

tracer = telemetry.tracer("switchyard.router")
# When a request sets no max_tokens, reserve as if it could produce this many.
DEFAULT_MAX_TOKENS_FOR_BUDGET = 4096
NO_WORKER = GatewayError(
    "unavailable", "no provider worker is available for this model right now", retry_after_s=1.0
)


class Router(BusService):
    name = "router"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._slots = asyncio.Semaphore(self.settings.router_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self.events: EventPublisher | None = None

    async def start(self) -> None:
        nc = await self.connect()
        js = nc.jetstream()
        await ensure_events_stream(js, self.settings.stream_replicas)
        self.events = EventPublisher(js)
        self.events.start()
        self._sub = await nc.subscribe(
            subjects.INVOKE,
            queue=subjects.ROUTER_QUEUE,
            cb=self._on_invoke,
            pending_msgs_limit=self.settings.router_concurrency * 8,
        )
        self.ready = True

    async def _on_invoke(self, msg: Msg) -> None:
        await self._slots.acquire()
        task = asyncio.create_task(self._handle(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, msg: Msg) -> None:
        assert self.nc is not None
        try:
            request = invoke_pb2.InvokeRequest.FromString(msg.data)
            ctx = telemetry.extract_context(msg.headers)
            with (
                metrics.track(self.name) as outcome,
                tracer.start_as_current_span(
                    "router.route", context=ctx, attributes=genai.request_attributes(request)
                ) as span,
            ):
                try:
                    dispatch = await self.route(request)
                except GatewayError as error:
                    err = error.to_proto(request.request_id)
                    await self.nc.publish(msg.reply, codec.error_frame(err))
                    self._reject(request, err)
                    outcome["status"] = err.code
                    span.set_attribute("error.type", err.code)
                    span.set_status(trace.StatusCode.ERROR, err.code)
                    return
                dispatch.reply_to = msg.reply
                first = dispatch.chain[0]
                span.set_attributes(genai.target_attributes(first.provider, first.model, first.deployment_id))
                span.set_attribute("switchyard.route", dispatch.route)
                span.set_attribute("switchyard.candidates", len(dispatch.chain))
                if not await hand_off(self.nc, dispatch):
                    err = NO_WORKER.to_proto(request.request_id)
                    await self.nc.publish(msg.reply, codec.error_frame(err))
                    self._reject(request, err)
                    outcome["status"] = err.code
                    span.set_attribute("error.type", err.code)
        except Exception:
            self.log.exception("routing failed")
            if msg.reply:
                err = invoke_pb2.Error(code="internal", message="router error")
                await self.nc.publish(msg.reply, codec.error_frame(err))
        finally:
            self._slots.release()

    async def route(self, request: invoke_pb2.InvokeRequest) -> invoke_pb2.Dispatch:
        started = time.perf_counter_ns()
        route, candidates = self.catalog.resolve(request.model)
        prompt_tokens = estimate_prompt_tokens(request)
        ranked = rank(route, candidates, prompt_tokens, request.max_tokens)
        ranked.rationale.decision_us = (time.perf_counter_ns() - started) / 1000
        reservation = await self.authorize(request, ranked.chain[0], prompt_tokens)
        dispatch = invoke_pb2.Dispatch(
            request=request,
            rationale=ranked.rationale,
            reservation_id=reservation,
            route=route,
            routed_unix_ns=time.time_ns(),
        )
        for dep in ranked.chain:
            dispatch.chain.add(deployment_id=dep.id, provider=dep.provider, model=dep.model)
        dispatch.router_ms = (time.perf_counter_ns() - started) / 1e6
        return dispatch

    async def authorize(
        self, request: invoke_pb2.InvokeRequest, deployment: Deployment, prompt_tokens: int
    ) -> str:
        """Reserve the most this request can cost; raise the budget authority's denial."""
        assert self.nc is not None
        max_tokens = request.max_tokens or DEFAULT_MAX_TOKENS_FOR_BUDGET
        ask = budget_pb2.AuthorizeRequest(
            request_id=request.request_id,
            project_id=request.project_id,
            agent_id=request.agent_id,
            key_id=request.key_id,
            deployment_id=deployment.id,
            max_cost_usd=format_usd(max_cost_usd(deployment.price, prompt_tokens, max_tokens)),
            estimated_tokens=prompt_tokens + min(max_tokens, DEFAULT_EXPECTED_OUTPUT_TOKENS),
            deadline_unix_ms=request.deadline_unix_ms,
        )
        try:
            reply = await self.nc.request(
                subjects.BUDGET_AUTHORIZE,
                ask.SerializeToString(),
                timeout=self.settings.budget_timeout_s,
                headers=telemetry.inject_headers(),
            )
        except (NoRespondersError, NatsTimeoutError) as exc:
            # Fail closed: spending without the authority could cross a cap.
            raise GatewayError(
                "unavailable", "the budget authority did not answer; try again", retry_after_s=1.0
            ) from exc
        decision = budget_pb2.Decision.FromString(reply.data)
        if not decision.allow:
            raise GatewayError(
                decision.deny_code or "budget_exceeded",
                decision.deny_reason or "denied by the budget authority",
                retry_after_s=decision.retry_after_s,
                retryable=False,
            )
        return decision.reservation_id

    def _reject(self, request: invoke_pb2.InvokeRequest, err: invoke_pb2.Error) -> None:
        """Requests refused before any upstream call are still recorded, as `rejected`."""
        assert self.events is not None
        now = time.time_ns() / 1e6
        event = events_pb2.Completion(
            request_id=request.request_id,
            project_id=request.project_id,
            agent_id=request.agent_id,
            key_id=request.key_id,
            requested_model=request.model,
            status="rejected",
            error_code=err.code,
            error_message=err.message[:1000],
            cost_usd="0",
            stream=request.stream,
            trace_id=telemetry.current_trace_id(),
            metadata=request.metadata,
            started_unix_ms=int(request.received_unix_ns / 1e6),
            finished_unix_ms=int(now),
            latency_ms=now - request.received_unix_ns / 1e6,
            api=request.api,
        )
        self.events.publish(
            subjects.COMPLETION,
            event.SerializeToString(),
            msg_id=request.request_id,
            headers=telemetry.inject_headers(),
        )

    async def drain(self) -> None:
        await self._sub.unsubscribe()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.settings.drain_timeout_s)
        if self.events:
            await self.events.drain(self.settings.drain_timeout_s)
        await super().drain()


def main() -> None:
    run("router", Router)
