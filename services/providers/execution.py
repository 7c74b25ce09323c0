"""Pure pieces of a worker's job: timing, the outcome of one attempt, the failover-and-billing
verdict on it, the neutral response and the completion event. No I/O here.

An attempt ends as an `AttemptOutcome` (ok, error, crashed or cancelled); `verdict` decides from
it alone whether to fail over, what is billed and what the client gets, so the whole policy is
tested without NATS (tests/test_execution.py, tests/test_failover_policy.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from switchyard.catalog import Deployment
from switchyard.completions import completion_event
from switchyard.config import DEFAULT_MAX_ATTEMPTS
from switchyard.errors import ErrorCode, GatewayError
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
from switchyard.vocab import Status, finish_reason_value, status_value

from .adapters.base import Completed

# The retry budget when the dispatch carries none (max_attempts = 0): the router's default.
MAX_ATTEMPTS = DEFAULT_MAX_ATTEMPTS


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
    _counted: tuple[int, int] = (0, 0)  # (texts, tokens) when last counted: a beat asks often

    def add(self, text: str, tokenizer: str) -> None:
        if text:
            self.chunks += 1
            self.chars += len(text)
            if tokenizer in (O200K, CL100K):
                self.texts.append(text)

    def billed(self, tokenizer: str) -> int:
        if tokenizer in (O200K, CL100K):
            if self._counted[0] != len(self.texts):
                self._counted = (len(self.texts), text_counter(tokenizer)("".join(self.texts)))
            return max(self.chunks, self._counted[1])
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
        usage = invoke_pb2.Usage()
        usage.CopyFrom(reported)  # the cache and reasoning classes as reported
        usage.prompt_tokens = reported.prompt_tokens or self.prompt_estimate(request)
        usage.completion_tokens = max(reported.completion_tokens, streamed)
        return usage

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
            ErrorCode.BUDGET_EXCEEDED,
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
    return progress.chunks_sent or error.code == ErrorCode.BUDGET_EXCEEDED


# A hedge racer's claim on the client, asked before its first chunk goes out: the first claim
# wins and the race cancels the other racers; a late one raises CancelledError (hedge_runner.py).
Claim = Callable[[], None]

OutcomeKind = Literal["ok", "error", "crashed", "cancelled"]


@dataclass(frozen=True)
class AttemptOutcome:
    """How one upstream attempt ended.

    ok: `completed` holds the answer. error: the upstream (or its deadline) failed with
    `error`. crashed: the adapter raised something unexpected, turned into an `internal`
    `error`; never failed over, nothing billed. cancelled: the client went away and the call
    was stopped (`error` says so). `progress` is how far the call got either way.
    """

    kind: OutcomeKind
    deployment: Deployment
    progress: AttemptProgress
    completed: Completed | None = None
    error: GatewayError | None = None

    @property
    def code(self) -> str:
        """The status the dispatch reports: "ok", "cancelled", or the error code."""
        if self.kind in ("ok", "cancelled") or self.error is None:
            return self.kind
        return self.error.code

    def attempt(self) -> invoke_pb2.Attempt:
        """The attempt's record, as the Completion and the ledger keep it."""
        progress, deployment = self.progress, self.deployment
        if self.kind == "ok":
            assert self.completed is not None
            return attempt_record(
                deployment,
                progress.started_ms,
                ttft_ms=progress.ttft_ms,
                http_status=self.completed.http_status,
            )
        if self.kind == "crashed":  # a crash records no time to first token
            return attempt_record(deployment, progress.started_ms, error=self.error)
        status = Status.CANCELLED if self.kind == "cancelled" else None
        return attempt_record(
            deployment, progress.started_ms, error=self.error, ttft_ms=progress.ttft_ms, status=status
        )


Reply = Literal["final", "error", "none"]


@dataclass(frozen=True)
class Verdict:
    """What follows an attempt: fail over to the next deployment, or end the request with
    `status` (the Completion's), the client getting `reply` and `billed` being charged."""

    fail_over: bool
    status: str = ""  # ok | error | cancelled ("" when failing over)
    reply: Reply = "none"  # the final answer, an error frame, or nothing (the client is gone)
    billed: invoke_pb2.Usage | None = None  # None: nothing is billed


FAIL_OVER = Verdict(fail_over=True)


def verdict(outcome: AttemptOutcome, dispatch: invoke_pb2.Dispatch) -> Verdict:
    """The failover-and-billing policy (docs/routing.md, docs/providers.md), given the
    outcome and the dispatch with the attempt already recorded in it.

    ok: the answer, billed at the provider's usage. cancelled: no reply (nobody listens),
    billed for what the call used before it was stopped. error: fail over if the policy allows
    (`should_fail_over`), else the error, billed only when a stream was cut after chunks
    reached the client (those tokens were used) or was stopped at its budget hold
    (`billed_after`). crashed: the error, never failed over, nothing
    billed.
    """
    request = dispatch.request
    if outcome.kind == "ok":
        assert outcome.completed is not None
        return Verdict(fail_over=False, status=Status.OK, reply="final", billed=outcome.completed.usage)
    if outcome.kind == "cancelled":
        return Verdict(
            fail_over=False, status=Status.CANCELLED, reply="none", billed=outcome.progress.usage(request)
        )
    assert outcome.error is not None
    chunks_sent = outcome.progress.chunks_sent
    if outcome.kind == "error" and should_fail_over(outcome.error, dispatch, chunks_sent):
        return FAIL_OVER
    billed = (
        outcome.progress.usage(request)
        if outcome.kind == "error" and billed_after(outcome.error, outcome.progress)
        else None
    )
    return Verdict(fail_over=False, status=Status.ERROR, reply="error", billed=billed)


CLIENT_GONE = GatewayError(
    ErrorCode.CLIENT_CLOSED, "the client went away; the upstream call was cancelled", retryable=False
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
        status=status_value(status or (Status.ERROR if error else Status.OK)),
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
    """Each token class at its price (switchyard/pricing.py)."""
    return cost_usd(
        deployment.price,
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.cached_tokens,
        usage.cache_write_tokens,
        usage.cache_write_1h_tokens,
    )


def bill_attempt(attempt: invoke_pb2.Attempt, usage: invoke_pb2.Usage | None, cost: Decimal) -> None:
    """Put what an attempt is billed on its record: the ledger's attempt rows then add up to the
    request's cost (a failed-over attempt bills nothing)."""
    attempt.cost_usd = format_usd(cost)
    if usage is not None:
        attempt.usage.CopyFrom(usage)


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
        finish_reason=finish_reason_value(completed.finish_reason),
        usage=completed.usage,
        cost_usd=format_usd(cost),
        latency_ms=now_ms() - request.received_unix_ms,
        ttft_ms=ttft_ms,
        attempts=dispatch.attempts,
        rationale=dispatch.rationale,
        route=dispatch.route,
        embeddings=completed.embeddings,
        usage_estimated=completed.usage_estimated,
    )


def build_completion(dispatch: invoke_pb2.Dispatch, **fields: Any) -> events_pb2.Completion:
    """The Completion of a routed request (switchyard.completions, shared with the router)."""
    return completion_event(dispatch.request, dispatch=dispatch, **fields)
