"""Provider worker: consumes Dispatch messages for its providers, calls the upstream, streams
frames straight to the ingress inbox, fails over along the chain, and emits events.

Run: python -m services.providers [--provider demo --provider openai ...]
"""

from __future__ import annotations

import argparse
import asyncio
import os

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from opentelemetry import trace

from switchyard import codec, genai, metrics, subjects, telemetry
from switchyard.bus import EventPublisher, ensure_events_stream
from switchyard.catalog import Catalog, Deployment
from switchyard.errors import GatewayError
from switchyard.handoff import hand_off
from switchyard.service import BusService, run
from switchyard.settings import Settings
from switchyard.v1 import events_pb2, invoke_pb2

from .adapters import adapter_for
from .adapters.base import Completed, ProviderAdapter
from .execution import (
    attempt_record,
    build_completion,
    build_response,
    call_cost,
    now_ms,
    should_fail_over,
)

tracer = telemetry.tracer("switchyard.providers")
NO_WORKER = GatewayError("unavailable", "no provider worker is available for the fallback deployments")


class ProviderWorker(BusService):
    name = "providers"

    def __init__(
        self, settings: Settings, catalog: Catalog | None = None, providers: list[str] | None = None
    ) -> None:
        super().__init__(settings, catalog)
        wanted = providers or _providers_from_env() or self.catalog.providers()
        self.providers = [p for p in wanted if p in self.catalog.providers()]
        self.adapters: dict[str, ProviderAdapter] = {}
        self.events: EventPublisher | None = None
        self._slots = asyncio.Semaphore(self.settings.worker_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._subscriptions: list[Subscription] = []

    def adapter(self, deployment: Deployment) -> ProviderAdapter:
        adapter = self.adapters.get(deployment.id)
        if adapter is None:
            adapter = self.adapters[deployment.id] = adapter_for(deployment, self.settings)
        return adapter

    async def start(self) -> None:
        nc = await self.connect()
        js = nc.jetstream()
        await ensure_events_stream(js, self.settings.stream_replicas)
        self.events = EventPublisher(js)
        self.events.start()
        for provider in self.providers:
            sub = await nc.subscribe(
                subjects.provider_invoke(provider),
                queue=subjects.provider_queue(provider),
                cb=self._on_dispatch,
                pending_msgs_limit=self.settings.worker_concurrency * 4,
            )
            self._subscriptions.append(sub)
        self.log.info("serving providers: %s", ", ".join(self.providers) or "(none)")
        self.ready = True

    async def _on_dispatch(self, msg: Msg) -> None:
        # Take a slot before spawning: when all are busy the subscription's pending queue
        # fills and NATS applies backpressure, instead of tasks piling up without bound.
        await self._slots.acquire()
        task = asyncio.create_task(self._run(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, msg: Msg) -> None:
        try:
            if msg.reply:
                await msg.respond(b"")  # hand-off acknowledged: see switchyard.handoff
            dispatch = invoke_pb2.Dispatch.FromString(msg.data)
            ctx = telemetry.extract_context(msg.headers)
            with (
                metrics.track(self.name) as outcome,
                tracer.start_as_current_span(
                    "provider.dispatch", context=ctx, attributes=genai.request_attributes(dispatch.request)
                ) as span,
            ):
                outcome["status"] = await self.execute(dispatch)
                if outcome["status"] != "ok":
                    span.set_attribute("error.type", outcome["status"])
                    span.set_status(trace.StatusCode.ERROR, outcome["status"])
        except Exception:
            self.log.exception("dispatch failed")
        finally:
            self._slots.release()

    async def execute(self, dispatch: invoke_pb2.Dispatch) -> str:
        """Run the dispatch from chain[position], failing over until success or a final error.

        Returns "ok" or the final error code. Each upstream call is its own CLIENT span
        named by the GenAI conventions ("chat <model>").
        """
        assert self.nc is not None
        request = dispatch.request
        reply = dispatch.reply_to
        while True:
            target = dispatch.chain[dispatch.position]
            if target.provider not in self.providers:
                # Another pool serves the next deployment: hand the dispatch on, no router trip.
                if not await hand_off(self.nc, dispatch):
                    await self._fail(dispatch, reply, NO_WORKER, None)
                    return NO_WORKER.code
                return "ok"
            deployment = self.catalog.deployments.get(target.deployment_id)
            if deployment is None:
                error = GatewayError(
                    "unavailable",
                    f"deployment {target.deployment_id} is not configured on this worker",
                )
                await self._fail(dispatch, reply, error, None)
                return error.code
            with tracer.start_as_current_span(
                genai.span_name(deployment.model),
                kind=trace.SpanKind.CLIENT,
                attributes={
                    "gen_ai.operation.name": genai.OPERATION_CHAT,
                    "gen_ai.request.model": deployment.model,
                    "switchyard.request_id": request.request_id,
                    "switchyard.attempt": len(dispatch.attempts) + 1,
                    **genai.target_attributes(deployment.provider, "", deployment.id),
                },
            ) as span:
                status = await self._attempt(dispatch, deployment, span)
            if status is None:  # failed over: the next deployment of the chain
                continue
            return status

    async def _attempt(
        self, dispatch: invoke_pb2.Dispatch, deployment: Deployment, span: trace.Span
    ) -> str | None:
        """One upstream call. Returns "ok", a final error code, or None to fail over."""
        assert self.nc is not None
        request = dispatch.request
        reply = dispatch.reply_to
        started = now_ms()
        chunks_sent = False
        ttft_ms = 0.0
        try:
            adapter = self.adapter(deployment)
            if request.stream:
                completed: Completed | None = None
                async for item in adapter.stream(request):
                    if isinstance(item, Completed):
                        completed = item
                        break
                    if not chunks_sent:
                        ttft_ms = now_ms() - started
                        chunks_sent = True
                    await self.nc.publish(reply, codec.chunk_frame(item))
                if completed is None:
                    raise GatewayError(
                        "upstream_error",
                        "stream ended without a final event",
                        provider=deployment.provider,
                    )
            else:
                completed = await adapter.complete(request)
                ttft_ms = now_ms() - started
        except GatewayError as error:
            dispatch.attempts.append(attempt_record(deployment, started, error=error))
            self._observe(deployment, dispatch.attempts[-1], span, error)
            self._stat(deployment, dispatch.attempts[-1], error)
            if should_fail_over(error, dispatch, chunks_sent):
                metrics.FAILOVERS.labels(deployment.provider).inc()
                span.set_attribute("switchyard.failed_over", True)
                dispatch.position += 1
                return None
            await self._fail(dispatch, reply, error, deployment)
            return error.code
        except Exception as exc:  # an adapter bug must still end the request cleanly
            self.log.exception("adapter %s crashed", deployment.adapter)
            error = GatewayError(
                "internal",
                f"provider adapter error: {type(exc).__name__}",
                provider=deployment.provider,
            )
            dispatch.attempts.append(attempt_record(deployment, started, error=error))
            self._observe(deployment, dispatch.attempts[-1], span, error)
            await self._fail(dispatch, reply, error, deployment)
            return error.code
        dispatch.attempts.append(
            attempt_record(deployment, started, ttft_ms=ttft_ms, http_status=completed.http_status)
        )
        self._observe(deployment, dispatch.attempts[-1], span, None)
        self._stat(deployment, dispatch.attempts[-1], None)
        cost = call_cost(deployment, completed.usage)
        response = build_response(dispatch, deployment, completed, cost, ttft_ms)
        span.set_attributes(genai.usage_attributes(completed.usage, completed.finish_reason))
        span.set_attribute("gen_ai.response.model", deployment.model)
        span.set_attribute("switchyard.cost_usd", response.cost_usd)
        metrics.record_usage(
            request.project_id,
            deployment.provider,
            deployment.model,
            completed.usage.prompt_tokens,
            completed.usage.completion_tokens,
            completed.usage.cached_tokens,
            cost,
        )
        await self.nc.publish(reply, codec.final_frame(response))
        self._complete(
            dispatch,
            "ok",
            deployment=deployment,
            response=response,
            usage=completed.usage,
            cost=cost,
            ttft_ms=ttft_ms,
        )
        return "ok"

    @staticmethod
    def _observe(
        deployment: Deployment, attempt: invoke_pb2.Attempt, span: trace.Span, error: GatewayError | None
    ) -> None:
        """An attempt's metrics and span outcome."""
        status = "ok" if error is None else error.code
        metrics.UPSTREAM_DURATION.labels(deployment.provider, deployment.model, status).observe(
            attempt.latency_ms / 1000
        )
        if attempt.http_status:
            span.set_attribute("http.response.status_code", attempt.http_status)
        if error is not None:
            span.set_attribute("error.type", error.code)
            span.set_status(trace.StatusCode.ERROR, error.message[:200])

    async def _fail(
        self,
        dispatch: invoke_pb2.Dispatch,
        reply: str,
        error: GatewayError,
        deployment: Deployment | None,
    ) -> None:
        assert self.nc is not None
        err = error.to_proto(dispatch.request.request_id)
        await self.nc.publish(reply, codec.error_frame(err))
        self._complete(dispatch, "error", deployment=deployment, error=err)

    def _complete(self, dispatch: invoke_pb2.Dispatch, status: str, **fields) -> None:
        assert self.events is not None
        event = build_completion(dispatch, status=status, trace_id=telemetry.current_trace_id(), **fields)
        self.events.publish(
            subjects.COMPLETION,
            event.SerializeToString(),
            msg_id=dispatch.request.request_id,
            headers=telemetry.inject_headers(),
        )

    def _stat(self, deployment: Deployment, attempt: invoke_pb2.Attempt, error: GatewayError | None) -> None:
        assert self.nc is not None
        stat = events_pb2.ProviderStat(
            deployment_id=deployment.id,
            latency_ms=attempt.latency_ms,
            ttft_ms=attempt.ttft_ms,
            ok=error is None,
            http_status=attempt.http_status,
            retry_after_s=error.retry_after_s if error else 0.0,
            ts_unix_ms=int(now_ms()),
            error_code=error.code if error else "",
        )
        # Fire and forget: a core publish only buffers; the flush happens off this path.
        task = asyncio.ensure_future(self.nc.publish(subjects.PROVIDER_STATS, stat.SerializeToString()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        # Stop taking dispatches, let those in flight finish, then flush the events.
        for sub in self._subscriptions:
            await sub.unsubscribe()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.settings.drain_timeout_s)
        if self.events:
            await self.events.drain(self.settings.drain_timeout_s)
        for adapter in self.adapters.values():
            await adapter.aclose()
        await super().drain()


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
