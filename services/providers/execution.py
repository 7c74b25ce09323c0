"""Pure pieces of a worker's job: timing, the neutral response, the completion event, and
the failover decision. No I/O here."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from switchyard.catalog import Deployment
from switchyard.errors import GatewayError
from switchyard.pricing import cost_usd, format_usd
from switchyard.tokens import (
    CHARS4,
    CHARS_PER_TOKEN,
    CL100K,
    DEMO,
    O200K,
    estimate_prompt_tokens,
    text_counter,
)
from switchyard.v1 import events_pb2, invoke_pb2

from .adapters.base import Completed

MAX_ATTEMPTS = 4  # the retry budget when the dispatch carries none (max_attempts = 0)


def now_ms() -> float:
    return time.time_ns() / 1e6


@dataclass
class StreamedTokens:
    """Output tokens of a stream before the provider reports them.

    The budget check counts one token per chunk: a lower bound (every streamed chunk carries
    at least one token; OpenAI and the demo send exactly one), so it never stops a stream
    whose real cost fits its hold; providers that send several tokens per chunk are stopped
    late (docs/budgets.md). The bill of a cut stream counts the delivered text: with the
    deployment's own encoding for the OpenAI family (once, on the whole text), one per chunk
    for the demo (what it bills), else at least characters / 4."""

    chunks: int = 0
    chars: int = 0
    texts: list[str] = field(default_factory=list)  # the OpenAI family's, counted at billing

    def add(self, text: str, tokenizer: str) -> None:
        if text:
            self.chunks += 1
            self.chars += len(text)
            if tokenizer in (O200K, CL100K):
                self.texts.append(text)

    def billed(self, tokenizer: str) -> int:
        if tokenizer in (O200K, CL100K):
            return max(self.chunks, text_counter(tokenizer)("".join(self.texts)))
        if tokenizer == DEMO:
            return self.chunks
        return max(self.chunks, (self.chars + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN)


@dataclass
class AttemptProgress:
    """How far one upstream attempt got. Failover is allowed only before the first chunk; a
    call cancelled or cut before its final usage is billed from the provider's latest
    mid-stream usage report and what was forwarded to the client.

    `limit_usd` is the request's budget hold (docs/budgets.md): a stream is stopped before a
    chunk that would take its running cost past it. `tokenizer` estimates the prompt until the
    provider reports it, the same estimate the router reserved with (switchyard/tokens.py)."""

    started_ms: float
    ttft_ms: float = 0.0
    chunks_sent: bool = False
    reported: invoke_pb2.Usage | None = None
    chars: int = 0
    limit_usd: Decimal | None = None
    tokenizer: str = CHARS4
    streamed: StreamedTokens = field(default_factory=StreamedTokens)
    _prompt_estimate: int = -1

    def add_chunk(self, chunk: invoke_pb2.Chunk) -> None:
        text = chunk_text(chunk)
        self.chars += len(text)
        self.streamed.add(text, self.tokenizer)

    def prompt_estimate(self, request: invoke_pb2.InvokeRequest) -> int:
        if self._prompt_estimate < 0:
            self._prompt_estimate = estimate_prompt_tokens(request, self.tokenizer)
        return self._prompt_estimate

    def usage(
        self, request: invoke_pb2.InvokeRequest, pending: invoke_pb2.Chunk | None = None
    ) -> invoke_pb2.Usage:
        """Provider-reported counts where there are any; estimates for the rest: the prompt as
        the router estimated it, the output from the streamed text (StreamedTokens). `pending`:
        the budget check's count with that chunk forwarded too."""
        reported = self.reported or invoke_pb2.Usage()
        if pending is None:
            streamed = self.streamed.billed(self.tokenizer)
        else:
            streamed = self.streamed.chunks + (1 if chunk_text(pending) else 0)
        return invoke_pb2.Usage(
            prompt_tokens=reported.prompt_tokens or self.prompt_estimate(request),
            completion_tokens=max(reported.completion_tokens, streamed),
            cached_tokens=reported.cached_tokens,
        )

    def overrun(
        self, chunk: invoke_pb2.Chunk, request: invoke_pb2.InvokeRequest, deployment: Deployment
    ) -> GatewayError | None:
        """The in-band budget_exceeded error when forwarding `chunk` would take this call's
        running cost past the budget hold; None while it fits (or no cap applies)."""
        if self.limit_usd is None:
            return None
        if call_cost(deployment, self.usage(request, pending=chunk)) <= self.limit_usd:
            return None
        return GatewayError(
            "budget_exceeded",
            f"the answer was stopped at this request's budget reservation of "
            f"{format_usd(self.limit_usd)} USD; what was delivered is billed",
            retryable=False,  # the next deployment would be stopped at the same hold
            provider=deployment.provider,
        )


def chunk_text(chunk: invoke_pb2.Chunk) -> str:
    if not chunk.tool_calls:
        return chunk.delta_text
    return chunk.delta_text + "".join(c.name + c.arguments_delta for c in chunk.tool_calls)


def stream_limit(dispatch: invoke_pb2.Dispatch) -> Decimal | None:
    """The budget hold a stream may not pass (None: no cap applies to the request)."""
    try:
        limit = Decimal(dispatch.reserved_usd) if dispatch.reserved_usd else None
    except InvalidOperation:
        return None
    return limit if limit is not None and limit.is_finite() else None


def billed_after(error: GatewayError, progress: AttemptProgress) -> bool:
    """Does a failed call still cost? Once chunks reached the client, or when it was stopped at
    its budget hold (the prompt alone may have passed it: the provider bills the prompt)."""
    return progress.chunks_sent or error.code == "budget_exceeded"


def remaining_s(request: invoke_pb2.InvokeRequest) -> float | None:
    """Seconds left before the request's deadline (None: no deadline; never negative)."""
    if not request.deadline_unix_ms:
        return None
    return max((request.deadline_unix_ms - now_ms()) / 1000.0, 0.0)


def deadline_error(provider: str) -> GatewayError:
    # Not retryable: there is no time left for another deployment.
    return GatewayError(
        "timeout",
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
        status=status or ("error" if error else "ok"),
        error_code=error.code if error else "",
        error_message=error.message[:500] if error else "",
        http_status=error.provider_status if error else http_status,
        latency_ms=now_ms() - started_ms,
        ttft_ms=ttft_ms,
        started_unix_ms=int(started_ms),
        started_unix_us=int(started_ms * 1000),
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
        latency_ms=now_ms() - request.received_unix_ns / 1e6,
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
    started = request.received_unix_ns / 1e6
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
