"""The worker's failover decision and the demo adapter's fault-injection knobs. No bus needed."""

from __future__ import annotations

import orjson
import pytest

from services.providers.adapters.base import Completed
from services.providers.adapters.demo import Adapter, behaviour, simulated_error
from services.providers.execution import MAX_ATTEMPTS, now_ms, remaining_s, should_fail_over
from switchyard.catalog import Deployment
from switchyard.errors import GatewayError
from switchyard.settings import Settings
from switchyard.v1 import invoke_pb2

RETRYABLE = GatewayError("unavailable", "503 from upstream")


def dispatch(chain: int = 3, attempts: int = 1, max_attempts: int = 0, deadline_ms: int = 0):
    d = invoke_pb2.Dispatch(max_attempts=max_attempts)
    d.request.deadline_unix_ms = deadline_ms
    for i in range(chain):
        d.chain.add(deployment_id=f"d{i}", provider="demo", model=f"m{i}")
    for i in range(attempts):
        d.attempts.add(deployment_id=f"d{i}", status=invoke_pb2.STATUS_ERROR)
    d.position = max(attempts - 1, 0)
    return d


def test_a_retryable_error_fails_over_to_the_next_deployment() -> None:
    assert should_fail_over(RETRYABLE, dispatch(), chunks_sent=False)


@pytest.mark.parametrize(
    "code", ["invalid_request", "unauthorized", "permission_denied", "not_found", "payload_too_large"]
)
def test_client_errors_are_returned_not_retried(code: str) -> None:
    assert not should_fail_over(GatewayError(code, "bad"), dispatch(), chunks_sent=False)


def test_a_stream_never_fails_over_after_the_first_chunk() -> None:
    assert not should_fail_over(RETRYABLE, dispatch(), chunks_sent=True)


def test_the_end_of_the_chain_ends_it() -> None:
    assert not should_fail_over(RETRYABLE, dispatch(chain=2, attempts=2), chunks_sent=False)


def test_the_retry_budget_caps_attempts() -> None:
    assert not should_fail_over(RETRYABLE, dispatch(chain=5, attempts=2, max_attempts=2), chunks_sent=False)
    assert should_fail_over(RETRYABLE, dispatch(chain=5, attempts=2, max_attempts=3), chunks_sent=False)
    # No budget in the dispatch: the worker's default applies.
    full = dispatch(chain=MAX_ATTEMPTS + 2, attempts=MAX_ATTEMPTS)
    assert not should_fail_over(RETRYABLE, full, chunks_sent=False)


def test_no_failover_once_the_deadline_has_passed() -> None:
    past = dispatch(deadline_ms=int(now_ms()) - 1)
    assert not should_fail_over(RETRYABLE, past, chunks_sent=False)
    assert remaining_s(past.request) == 0.0
    future = dispatch(deadline_ms=int(now_ms()) + 60_000)
    assert should_fail_over(RETRYABLE, future, chunks_sent=False)
    assert 59 < remaining_s(future.request) <= 60
    assert remaining_s(invoke_pb2.InvokeRequest()) is None


def test_simulated_errors_map_status_to_the_neutral_code_and_retryability() -> None:
    cases = {400: ("invalid_request", False), 429: ("rate_limited", True), 500: ("upstream_error", True),
             503: ("unavailable", True), 529: ("overloaded", True), 504: ("timeout", True)}  # fmt: skip
    for status, (code, retryable) in cases.items():
        error = simulated_error(status, 2.0, "demo")
        assert (error.code, error.retryable, error.provider_status) == (code, retryable, status)
        assert error.retry_after_s == 2.0


def test_control_file_overrides_options() -> None:
    how = behaviour({"fail_status": 503, "latency_ms": 5}, {"fail_status": 0}, default_latency_ms=20)
    assert (how.fail_status, how.latency_ms) == (0, 5.0)
    assert behaviour({}, {}, default_latency_ms=20).latency_ms == 20.0


def _adapter(tmp_path, **options) -> Adapter:
    deployment = Deployment(id="demo/x", provider="demo", model="x", adapter="demo", options=options)
    return Adapter(deployment, Settings(demo_latency_ms=0, demo_chunk_delay_ms=0))


def _request(stream: bool = False) -> invoke_pb2.InvokeRequest:
    req = invoke_pb2.InvokeRequest(model="demo/x", stream=stream, max_tokens=5)
    req.messages.add(role=invoke_pb2.ROLE_USER).content.add(text="hello")
    return req


async def test_fail_every_fails_every_nth_call(tmp_path) -> None:
    adapter = _adapter(tmp_path, fail_status=500, fail_every=3)
    outcomes = []
    for _ in range(6):
        try:
            await adapter.complete(_request())
            outcomes.append("ok")
        except GatewayError as error:
            outcomes.append(error.code)
    assert outcomes == ["ok", "ok", "upstream_error", "ok", "ok", "upstream_error"]


async def test_a_control_file_flips_a_deployment_between_failing_and_healthy(tmp_path) -> None:
    control = tmp_path / "control.json"
    adapter = _adapter(tmp_path, control_file=str(control))
    assert isinstance(await adapter.complete(_request()), Completed)  # no file: healthy
    control.write_bytes(orjson.dumps({"fail_status": 429, "retry_after_s": 3}))
    with pytest.raises(GatewayError) as caught:
        await adapter.complete(_request())
    assert caught.value.code == "rate_limited" and caught.value.retry_after_s == 3
    control.write_bytes(b"{}   ")  # a different size, so the change is seen whatever the mtime granularity
    assert isinstance(await adapter.complete(_request()), Completed)


async def test_a_stream_can_fail_before_or_after_its_first_chunks(tmp_path) -> None:
    before = _adapter(tmp_path, fail_status=503)
    with pytest.raises(GatewayError):
        async for _ in before.stream(_request(stream=True)):
            pytest.fail("no chunk expected before the failure")
    after = _adapter(tmp_path, fail_status=503, fail_after_chunks=2)
    got = []
    with pytest.raises(GatewayError) as caught:
        async for item in after.stream(_request(stream=True)):
            got.append(item)
    assert len(got) == 2 and all(isinstance(c, invoke_pb2.Chunk) for c in got)
    assert caught.value.code == "unavailable"
