"""Pure pieces of the worker: failover decision, responses and completion events."""

import time
from decimal import Decimal

from services.providers.adapters.base import Completed
from services.providers.execution import MAX_ATTEMPTS, build_completion, build_response, should_fail_over
from switchyard.catalog import demo_deployments
from switchyard.errors import GatewayError
from switchyard.v1 import invoke_pb2


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
        exhausted.attempts.add(status="error")
    assert not should_fail_over(retryable, exhausted, chunks_sent=False)


def test_completion_event_carries_usage_cost_attempts_and_overhead() -> None:
    deployment = demo_deployments()[0]
    dispatch = _dispatch()
    dispatch.attempts.add(deployment_id="d0", status="error", latency_ms=0.0)
    dispatch.attempts.add(deployment_id=deployment.id, status="ok", latency_ms=0.0)
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
    assert event.status == "ok" and event.cost_usd == "0.000003"
    assert event.usage.completion_tokens == 5 and len(event.attempts) == 2
    assert event.provider == "demo" and event.finish_reason == "stop"
    assert event.overhead_ms >= 0 and event.latency_ms >= event.overhead_ms
