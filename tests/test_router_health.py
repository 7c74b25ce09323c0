"""Peak EWMA, error-rate EWMA, circuit breaker, Retry-After and in-flight counting: pure, no I/O."""

from __future__ import annotations

import math

import pytest

from services.router.health import BreakerState, CircuitBreaker, ErrorRate, HealthBook, PeakEwma, Sample
from services.router.inflight import Inflight
from services.router.tuning import RouterTuning, tuning_from_config


def test_peak_ewma_believes_a_slowdown_at_once_and_recovers_over_its_decay_time() -> None:
    ewma = PeakEwma(decay_s=10.0)
    assert ewma.value(0.0) == 0.0 and ewma.samples == 0
    ewma.observe(100.0, now_s=0.0)
    assert ewma.value(0.0) == 100.0
    ewma.observe(500.0, now_s=0.1)  # a spike replaces the estimate
    assert ewma.value(0.1) == 500.0
    # A fast sample one time constant (10 s) later weighs 1 - 1/e against the decayed peak.
    ewma.observe(100.0, now_s=10.1)
    w = math.exp(-1.0)
    assert ewma.value(10.1) == pytest.approx(500.0 * w + 100.0 * (1 - w))


def test_peak_ewma_weight_depends_on_elapsed_time_not_on_the_number_of_samples() -> None:
    many, one = PeakEwma(decay_s=1.0), PeakEwma(decay_s=1.0)
    many.observe(1000.0, 0.0)
    one.observe(1000.0, 0.0)
    for i in range(1, 101):
        many.observe(10.0, i * 0.01)
    one.observe(10.0, 1.0)
    assert many.value(1.0) == pytest.approx(one.value(1.0), rel=1e-9)


def test_peak_ewma_decays_toward_zero_without_samples_so_a_starved_deployment_is_retried() -> None:
    ewma = PeakEwma(decay_s=2.0)
    ewma.observe(300.0, 0.0)
    assert ewma.value(2.0) == pytest.approx(300.0 / math.e)
    assert ewma.value(20.0) < 1.0


def test_error_rate_moves_by_alpha_per_sample_and_halves_per_half_life_when_idle() -> None:
    rate = ErrorRate(alpha=0.5, half_life_s=10.0)
    rate.observe(True, 0.0)
    rate.observe(True, 0.0)
    assert rate.value(0.0) == pytest.approx(0.75)
    rate.observe(False, 0.0)
    assert rate.value(0.0) == pytest.approx(0.375)
    assert rate.value(10.0) == pytest.approx(0.1875)


def test_breaker_opens_after_consecutive_failures_then_half_opens_and_closes_on_success() -> None:
    breaker = CircuitBreaker(failures=3, open_s=5.0, max_open_s=60.0)
    breaker.record_failure(0.0)
    breaker.record_failure(0.1)
    breaker.record_success()  # a success in between resets the count
    breaker.record_failure(0.2)
    breaker.record_failure(0.3)
    assert breaker.state(0.3) is BreakerState.CLOSED
    breaker.record_failure(0.4)
    assert breaker.state(0.4) is BreakerState.OPEN
    assert breaker.reopens_in_s(1.4) == pytest.approx(4.0)
    assert breaker.state(5.4) is BreakerState.HALF_OPEN
    breaker.record_success()
    assert breaker.state(5.5) is BreakerState.CLOSED


def test_a_failed_probe_reopens_the_breaker_for_twice_as_long_up_to_the_cap() -> None:
    breaker = CircuitBreaker(failures=1, open_s=5.0, max_open_s=12.0)
    breaker.record_failure(0.0)
    breaker.record_failure(1.0)  # while open: stragglers change nothing
    assert breaker.reopens_in_s(1.0) == pytest.approx(4.0)
    breaker.record_failure(5.0)  # half-open probe failed
    assert breaker.state(5.0) is BreakerState.OPEN
    assert breaker.reopens_in_s(5.0) == pytest.approx(10.0)
    breaker.record_failure(15.0)
    assert breaker.reopens_in_s(15.0) == pytest.approx(12.0)


TUNING = RouterTuning(breaker_failures=2, breaker_open_s=5.0, rate_limit_cooldown_s=1.5, error_alpha=0.5)


def test_a_fast_error_does_not_look_like_a_fast_answer() -> None:
    book = HealthBook(TUNING)
    book.observe("a", Sample(ok=True, latency_ms=400.0), 0.0)
    book.observe("a", Sample(ok=False, latency_ms=2.0, error_code="upstream_error"), 0.1)
    view = book.view("a", 0.1, stream=False)
    assert view.latency_ms == pytest.approx(400.0, rel=0.02)  # the 2 ms failure is not a latency
    assert view.error_rate == pytest.approx(0.5)


def test_a_timeout_counts_as_latency_and_as_a_failure() -> None:
    book = HealthBook(TUNING)
    book.observe("a", Sample(ok=True, latency_ms=100.0), 0.0)
    book.observe("a", Sample(ok=False, latency_ms=30_000.0, error_code="timeout"), 0.1)
    view = book.view("a", 0.1, stream=False)
    assert view.latency_ms == 30_000.0
    assert view.error_rate > 0


def test_client_errors_leave_health_alone() -> None:
    book = HealthBook(TUNING)
    for _ in range(5):
        book.observe("a", Sample(ok=False, latency_ms=3.0, error_code="invalid_request"), 0.0)
    view = book.view("a", 0.0, stream=False)
    assert view.error_rate == 0.0 and view.breaker is BreakerState.CLOSED and not view.blocked_reason


def test_failures_open_the_breaker_which_blocks_until_half_open() -> None:
    book = HealthBook(TUNING)
    book.observe("a", Sample(ok=False, error_code="unavailable"), 0.0)
    book.observe("a", Sample(ok=False, error_code="overloaded"), 0.1)
    view = book.view("a", 1.1, stream=False)
    assert view.breaker is BreakerState.OPEN
    assert view.blocked_reason == "circuit_open"
    assert view.blocked_for_s == pytest.approx(4.0)
    later = book.view("a", 5.2, stream=False)
    assert later.breaker is BreakerState.HALF_OPEN and not later.blocked_reason
    book.observe("a", Sample(ok=True, latency_ms=50.0), 5.3)
    assert book.view("a", 5.3, stream=False).breaker is BreakerState.CLOSED


def test_the_provider_refusing_the_gateways_key_takes_the_deployment_out_at_once() -> None:
    """One `provider_auth_failed` opens the breaker (no count to reach: a revoked key does not
    heal); half-open trials find the fixed key, and a failed trial doubles the wait."""
    book = HealthBook(TUNING)
    book.observe("a", Sample(ok=False, error_code="provider_auth_failed"), 0.0)
    view = book.view("a", 0.0, stream=False)
    assert view.breaker is BreakerState.OPEN and view.blocked_reason == "circuit_open"
    assert book.view("a", 5.0, stream=False).breaker is BreakerState.HALF_OPEN
    book.observe("a", Sample(ok=False, error_code="provider_auth_failed"), 5.0)  # still revoked
    assert book.view("a", 5.0, stream=False).blocked_for_s == pytest.approx(10.0)
    book.observe("a", Sample(ok=False, error_code="provider_auth_failed"), 6.0)  # a straggler
    assert book.view("a", 6.0, stream=False).blocked_for_s == pytest.approx(9.0)
    book.observe("a", Sample(ok=True, latency_ms=50.0), 15.0)  # the key was rotated
    assert book.view("a", 15.0, stream=False).breaker is BreakerState.CLOSED


def test_retry_after_keeps_a_deployment_aside_for_that_long_without_tripping_the_breaker() -> None:
    book = HealthBook(TUNING)
    for t in (0.0, 0.1, 0.2):
        book.observe("a", Sample(ok=False, error_code="rate_limited", retry_after_s=3.0), t)
    view = book.view("a", 1.2, stream=False)
    assert view.blocked_reason == "retry_after"
    assert view.blocked_for_s == pytest.approx(2.0)
    assert view.breaker is BreakerState.CLOSED
    assert not book.view("a", 3.3, stream=False).blocked_reason
    # A 503 with Retry-After is respected too.
    book.observe("b", Sample(ok=False, error_code="unavailable", retry_after_s=7.0), 0.0)
    assert book.view("b", 6.0, stream=False).blocked_reason == "retry_after"


def test_a_429_without_retry_after_cools_down_for_the_configured_time() -> None:
    book = HealthBook(TUNING)
    book.observe("a", Sample(ok=False, error_code="rate_limited"), 0.0)
    assert book.view("a", 1.0, stream=False).blocked_reason == "retry_after"
    assert not book.view("a", 1.6, stream=False).blocked_reason


def test_streams_are_scored_by_time_to_first_token() -> None:
    book = HealthBook(TUNING)
    book.observe("a", Sample(ok=True, latency_ms=2000.0), 0.0)
    assert book.view("a", 0.0, stream=True).latency_ms == 2000.0  # no TTFT yet: whole latency
    book.observe("a", Sample(ok=True, latency_ms=2000.0, ttft_ms=150.0, stream=True), 0.0)
    assert book.view("a", 0.0, stream=True).latency_ms == 150.0
    assert book.view("a", 0.0, stream=False).latency_ms == 2000.0


def test_inflight_counts_until_the_sample_or_the_deadline() -> None:
    inflight = Inflight()
    inflight.start("r1", "a", expires_s=10.0)
    inflight.start("r2", "a", expires_s=20.0, probe=True)
    inflight.start("r2", "a", expires_s=20.0, probe=True)  # counted once
    assert inflight.count("a") == 2 and inflight.probes("a") == 1
    assert not inflight.finish("r9", "a")  # another router's request
    assert inflight.finish("r2", "a")
    assert inflight.count("a") == 1 and inflight.probes("a") == 0
    inflight.expire(9.9)
    assert inflight.count("a") == 1
    inflight.expire(10.0)
    assert inflight.count("a") == 0 and len(inflight) == 0
    assert not inflight.finish("r1", "a")  # a late sample after expiry is harmless


def test_tuning_reads_the_router_table_and_refuses_nonsense() -> None:
    tuning = tuning_from_config({"router": {"breaker_failures": 3, "breaker_open_s": 2}})
    assert tuning.breaker_failures == 3 and tuning.breaker_open_s == 2.0
    assert tuning_from_config({}) == RouterTuning()
    with pytest.raises(ValueError, match="unknown setting"):
        tuning_from_config({"router": {"breaker_failure": 3}})
    with pytest.raises(ValueError, match="error_alpha"):
        tuning_from_config({"router": {"error_alpha": 2}})
    with pytest.raises(ValueError, match="must be a number"):
        tuning_from_config({"router": {"max_attempts": "many"}})
