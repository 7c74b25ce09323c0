"""Pure pieces of a worker's job: timing, the neutral response, the completion event, and
the failover decision. No I/O here."""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal

from switchyard.catalog import Deployment
from switchyard.errors import ErrorCode, GatewayError
from switchyard.pricing import cost_usd, format_usd
from switchyard.tokens import CHARS_PER_TOKEN, estimate_prompt_tokens
from switchyard.v1 import events_pb2, invoke_pb2
from switchyard.vocab import Status

from .adapters.base import Completed

MAX_ATTEMPTS = 4  # the retry budget when the dispatch carries none (max_attempts = 0)


def now_ms() -> float:
    return time.time_ns() / 1e6


@dataclass
class AttemptProgress:
    """How far one upstream attempt got. Failover is allowed only before the first chunk; a
    call cancelled or cut before its final usage is billed from the provider's latest
    mid-stream usage report and the characters forwarded to the client."""

    started_ms: float
    ttft_ms: float = 0.0
    chunks_sent: bool = False
    reported: invoke_pb2.Usage | None = None
    chars: int = 0

    def add_chunk(self, chunk: invoke_pb2.Chunk) -> None:
        self.chars += len(chunk.delta_text)
        for call in chunk.tool_calls:
            self.chars += len(call.name) + len(call.arguments_delta)

    def usage(self, request: invoke_pb2.InvokeRequest) -> invoke_pb2.Usage:
        """Provider-reported counts where there are any; estimates (switchyard.tokens) for the
        rest: the prompt as the router estimated it, the output from the streamed text."""
        reported = self.reported or invoke_pb2.Usage()
        streamed = (self.chars + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN
        return invoke_pb2.Usage(
            prompt_tokens=reported.prompt_tokens or estimate_prompt_tokens(request),
            completion_tokens=max(reported.completion_tokens, streamed),
            cached_tokens=reported.cached_tokens,
        )


def remaining_s(request: invoke_pb2.InvokeRequest) -> float | None:
    """Seconds left before the request's deadline (None: no deadline; never negative)."""
    if not request.deadline_unix_ms:
        return None
    return max((request.deadline_unix_ms - now_ms()) / 1000.0, 0.0)


def deadline_error(provider: str) -> GatewayError:
    # Not retryable: there is no time left for another deployment.
    return GatewayError(
        ErrorCode.TIMEOUT,
        "the request's deadline passed during the upstream call",
        retryable=False,
        provider=provider,
    )


def attempt_record(
    deployment: Deployment,
    started_ms: float,
    *,
    error: GatewayError | None = None,
    ttft_ms: float = 0.0,
    status: str | None = None,
    http_status: int = 200,
) -> invoke_pb2.Attempt:
    return invoke_pb2.Attempt(
        deployment_id=deployment.id,
        provider=deployment.provider,
        model=deployment.model,
        status=status or (Status.ERROR if error else Status.OK),
        error_code=error.code if error else "",
        error_message=error.message[:500] if error else "",
        http_status=error.provider_status if error else http_status,
        latency_ms=now_ms() - started_ms,
        ttft_ms=ttft_ms,
        started_unix_ms=started_ms,
    )


def should_fail_over(error: GatewayError, dispatch: invoke_pb2.Dispatch, chunks_sent: bool) -> bool:
    """Retry on the next deployment only if the error is retryable, nothing reached the
    client yet, a next deployment exists, the retry budget and the deadline allow it."""
    if not error.retryable or chunks_sent:
        return False
    if dispatch.position + 1 >= len(dispatch.chain):
        return False
    if len(dispatch.attempts) >= (dispatch.max_attempts or MAX_ATTEMPTS):
        return False
    deadline = dispatch.request.deadline_unix_ms
    return not (deadline and now_ms() >= deadline)


def call_cost(deployment: Deployment, usage: invoke_pb2.Usage) -> Decimal:
    return cost_usd(deployment.price, usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)


def build_response(
    dispatch: invoke_pb2.Dispatch,
    deployment: Deployment,
    completed: Completed,
    cost: Decimal,
    ttft_ms: float,
) -> invoke_pb2.InvokeResponse:
    request = dispatch.request
    return invoke_pb2.InvokeResponse(
        request_id=request.request_id,
        provider=deployment.provider,
        model=deployment.model,
        deployment_id=deployment.id,
        message=completed.message,
        finish_reason=completed.finish_reason,
        usage=completed.usage,
        cost_usd=format_usd(cost),
        latency_ms=now_ms() - request.received_unix_ms,
        ttft_ms=ttft_ms,
        attempts=dispatch.attempts,
        rationale=dispatch.rationale,
        route=dispatch.route,
    )


def build_completion(
    dispatch: invoke_pb2.Dispatch,
    *,
    status: str,
    trace_id: str,
    deployment: Deployment | None = None,
    response: invoke_pb2.InvokeResponse | None = None,
    error: invoke_pb2.Error | None = None,
    usage: invoke_pb2.Usage | None = None,
    cost: Decimal = Decimal(0),
    ttft_ms: float = 0.0,
) -> events_pb2.Completion:
    request = dispatch.request
    finished = now_ms()
    started = request.received_unix_ms
    latency = finished - started
    upstream = sum(a.latency_ms for a in dispatch.attempts)
    event = events_pb2.Completion(
        request_id=request.request_id,
        project_id=request.project_id,
        agent_id=request.agent_id,
        key_id=request.key_id,
        route=dispatch.route,
        requested_model=request.model,
        status=status,
        cost_usd=format_usd(cost),
        latency_ms=latency,
        ttft_ms=ttft_ms,
        overhead_ms=max(latency - upstream, 0.0),
        stream=request.stream,
        attempts=dispatch.attempts,
        rationale=dispatch.rationale,
        trace_id=trace_id,
        metadata=request.metadata,
        started_unix_ms=int(started),
        finished_unix_ms=int(finished),
        reservation_id=dispatch.reservation_id,
        api=request.api,
    )
    if deployment is not None:
        event.provider = deployment.provider
        event.model = deployment.model
        event.deployment_id = deployment.id
    if usage is not None:
        event.usage.CopyFrom(usage)
    if response is not None:
        event.finish_reason = response.finish_reason
    if error is not None:
        event.error_code = error.code
        event.error_message = error.message[:1000]
    return event
