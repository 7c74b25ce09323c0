"""Pure pieces of the worker: failover decision, responses and completion events."""

import time
from decimal import Decimal

from services.providers.adapters.base import Completed
from services.providers.execution import (
    MAX_ATTEMPTS,
    AttemptOutcome,
    AttemptProgress,
    build_completion,
    build_response,
    now_ms,
    should_fail_over,
    verdict,
)
from switchyard.catalog import demo_deployments
from switchyard.completions import completion_event
from switchyard.errors import GatewayError
from switchyard.v1 import invoke_pb2
from switchyard.vocab import finish_reason_text, status_text


def _dispatch(chain: int = 2, position: int = 0, deadline_ms: int | None = None) -> invoke_pb2.Dispatch:
    dispatch = invoke_pb2.Dispatch(position=position, route="auto")
    dispatch.request.request_id = "r1"
    dispatch.request.received_unix_ms = time.time_ns() / 1e6
    dispatch.request.deadline_unix_ms = (
        deadline_ms if deadline_ms is not None else int(time.time() * 1000) + 60_000
    )
    for i in range(chain):
        dispatch.chain.add(deployment_id=f"d{i}", provider="demo", model=f"m{i}")
    return dispatch


def test_retryable_errors_fail_over_while_a_next_deployment_remains() -> None:
    error = GatewayError("upstream_error", "502 from upstream", provider_status=502)
    assert error.retryable
    assert should_fail_over(error, _dispatch(), chunks_sent=False)
    assert not should_fail_over(error, _dispatch(position=1), chunks_sent=False)  # last in chain


def test_client_errors_streams_in_progress_deadlines_and_budget_stop_failover() -> None:
    assert not should_fail_over(GatewayError("invalid_request", "bad"), _dispatch(), chunks_sent=False)
    retryable = GatewayError("timeout", "slow")
    assert not should_fail_over(retryable, _dispatch(), chunks_sent=True)
    assert not should_fail_over(
        retryable, _dispatch(deadline_ms=int(time.time() * 1000) - 1), chunks_sent=False
    )
    exhausted = _dispatch(chain=MAX_ATTEMPTS + 2)
    for _ in range(MAX_ATTEMPTS):
        exhausted.attempts.add(status=invoke_pb2.STATUS_ERROR)
    assert not should_fail_over(retryable, exhausted, chunks_sent=False)


def test_completion_event_carries_usage_cost_attempts_and_overhead() -> None:
    deployment = demo_deployments()[0]
    dispatch = _dispatch()
    dispatch.attempts.add(deployment_id="d0", status=invoke_pb2.STATUS_ERROR, latency_ms=0.0)
    dispatch.attempts.add(deployment_id=deployment.id, status=invoke_pb2.STATUS_OK, latency_ms=0.0)
    usage = invoke_pb2.Usage(prompt_tokens=10, completion_tokens=5)
    completed = Completed(
        message=invoke_pb2.Message(role=invoke_pb2.ROLE_ASSISTANT), finish_reason="stop", usage=usage
    )
    response = build_response(dispatch, deployment, completed, Decimal("0.0000030"), ttft_ms=1.5)
    assert response.cost_usd == "0.000003" and response.deployment_id == deployment.id
    event = build_completion(
        dispatch,
        status="ok",
        trace_id="t" * 32,
        deployment=deployment,
        response=response,
        usage=usage,
        cost=Decimal("0.000003"),
    )
    assert status_text(event.status) == "ok" and event.cost_usd == "0.000003"
    assert event.usage.completion_tokens == 5 and len(event.attempts) == 2
    assert event.provider == "demo" and finish_reason_text(event.finish_reason) == "stop"
    assert event.overhead_ms >= 0 and event.latency_ms >= event.overhead_ms


# --- the verdict on one attempt: fail over or not, what is billed, what the client gets ----------


def _outcome(kind: str, *, error: GatewayError | None = None, chunks: str = "") -> AttemptOutcome:
    progress = AttemptProgress(started_ms=now_ms())
    if chunks:
        progress.chunks_sent = True
        progress.add_chunk(invoke_pb2.Chunk(delta_text=chunks))
    completed = None
    if kind == "ok":
        usage = invoke_pb2.Usage(prompt_tokens=10, completion_tokens=5)
        completed = Completed(
            message=invoke_pb2.Message(role=invoke_pb2.ROLE_ASSISTANT), finish_reason="stop", usage=usage
        )
    return AttemptOutcome(kind, demo_deployments()[0], progress, completed=completed, error=error)


def _recorded(dispatch: invoke_pb2.Dispatch, outcome: AttemptOutcome) -> invoke_pb2.Dispatch:
    dispatch.attempts.append(outcome.attempt())  # as the worker's recorder does before the verdict
    return dispatch


def test_an_answer_is_sent_and_billed_at_the_providers_usage() -> None:
    outcome = _outcome("ok")
    decision = verdict(outcome, _recorded(_dispatch(), outcome))
    assert (decision.fail_over, decision.status, decision.reply) == (False, "ok", "final")
    assert decision.billed is not None and decision.billed.completion_tokens == 5
    assert outcome.code == "ok" and status_text(outcome.attempt().status) == "ok"


def test_a_retryable_error_before_any_chunk_fails_over_and_bills_nothing() -> None:
    outcome = _outcome("error", error=GatewayError("unavailable", "503"))
    decision = verdict(outcome, _recorded(_dispatch(), outcome))
    assert decision.fail_over and decision.billed is None and decision.reply == "none"
    # The same error on the last deployment of the chain ends the request, still unbilled.
    last = verdict(outcome, _recorded(_dispatch(position=1), outcome))
    assert (last.fail_over, last.status, last.reply, last.billed) == (False, "error", "error", None)
    assert outcome.code == "unavailable" and outcome.attempt().error_code == "unavailable"


def test_a_stream_cut_after_chunks_is_an_error_billed_for_what_reached_the_client() -> None:
    outcome = _outcome("error", error=GatewayError("upstream_error", "reset"), chunks="x" * 40)
    decision = verdict(outcome, _recorded(_dispatch(), outcome))
    assert (decision.fail_over, decision.status, decision.reply) == (False, "error", "error")
    assert decision.billed is not None and decision.billed.completion_tokens >= 10
    assert decision.billed.prompt_tokens > 0  # the router's estimate of the prompt


def test_a_crashed_adapter_is_never_failed_over_nor_billed() -> None:
    # Even marked retryable, a crash ends the request: the adapter, not the upstream, failed.
    error = GatewayError("internal", "provider adapter error: KeyError", retryable=True)
    outcome = _outcome("crashed", error=error, chunks="partial text")
    decision = verdict(outcome, _recorded(_dispatch(), outcome))
    assert (decision.fail_over, decision.status, decision.reply, decision.billed) == (
        False,
        "error",
        "error",
        None,
    )
    assert outcome.attempt().ttft_ms == 0.0 and status_text(outcome.attempt().status) == "error"


def test_a_cancelled_call_replies_nothing_and_bills_what_it_used() -> None:
    error = GatewayError("client_closed", "the client went away", retryable=False)
    outcome = _outcome("cancelled", error=error, chunks="y" * 8)
    decision = verdict(outcome, _recorded(_dispatch(), outcome))
    assert (decision.fail_over, decision.status, decision.reply) == (False, "cancelled", "none")
    assert decision.billed is not None and decision.billed.completion_tokens == 2
    assert outcome.code == "cancelled" and status_text(outcome.attempt().status) == "cancelled"


def test_the_router_and_the_worker_build_the_same_completion() -> None:
    dispatch = _dispatch()
    dispatch.request.project_id, dispatch.request.model = "p1", "auto"
    err = invoke_pb2.Error(code="budget_exceeded", message="over the cap " * 200)
    rejected = completion_event(dispatch.request, status="rejected", trace_id="t", error=err)
    assert (
        status_text(rejected.status) == "rejected"
        and rejected.cost_usd == "0"
        and rejected.project_id == "p1"
    )
    assert rejected.error_code == "budget_exceeded" and len(rejected.error_message) == 1000
    assert not rejected.route and not rejected.attempts and rejected.overhead_ms == 0
    assert not rejected.HasField("rationale")
    routed = build_completion(dispatch, status="error", trace_id="t", error=err)
    assert routed.route == "auto" and routed.HasField("rationale") and routed.requested_model == "auto"


def test_the_most_output_tokens_a_hold_pays_for_is_exact() -> None:
    """`overrun` compares counts against this bound: it must be exactly the last count whose
    cost (quantized, every token class) still fits, as the per-chunk Decimal check was."""
    from services.providers.execution import call_cost, most_output_tokens

    for deployment in demo_deployments():
        for prompt, cached in ((10, 0), (1234, 1000), (0, 0)):
            usage = invoke_pb2.Usage(prompt_tokens=prompt, cached_tokens=cached)
            for limit in ("0", "0.0000001", "0.00031", "0.0123456789", "0.5"):
                bound = most_output_tokens(deployment, usage, Decimal(limit))
                costs = {}
                for tokens in (0, bound, bound + 1):
                    probe = invoke_pb2.Usage()
                    probe.CopyFrom(usage)
                    probe.completion_tokens = max(tokens, 0)
                    costs[tokens] = call_cost(deployment, probe)
                if bound < 0:
                    assert costs[0] > Decimal(limit)
                else:
                    assert costs[bound] <= Decimal(limit) < costs[bound + 1], (
                        deployment.id,
                        prompt,
                        limit,
                        bound,
                    )
