"""What a router knows about each deployment's speed and health, learned from samples.

Pure: every method takes `now` (monotonic seconds); nothing reads a clock or the network.
Workers record one ProviderStat per upstream attempt and send an interval's in one message on
`stats.provider.batch`; every router feeds them to its HealthBook, so all routers converge on
the same view.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

from switchyard.errors import RETRYABLE_CODES, ErrorCode

from .tuning import RouterTuning

# Errors that say something about the deployment rather than about the request. Client
# errors (bad request, auth, not found...) do not move a deployment's health either way.
DEPLOYMENT_FAULTS = RETRYABLE_CODES


@dataclass
class PeakEwma:
    """Peak-sensitive EWMA of latency, as in Finagle's PeakEwma load balancer.

    A sample above the current estimate replaces it at once (a slowdown is believed
    immediately); a sample below is blended in with weight 1 - exp(-dt/decay), so the estimate
    comes down over `decay_s` of wall time whatever the request rate. While no sample arrives
    the estimate decays toward zero, so a deployment that lost its traffic is retried later.
    """

    decay_s: float
    cost_ms: float = 0.0
    stamp_s: float = 0.0
    samples: int = 0

    def value(self, now_s: float) -> float:
        if not self.samples:
            return 0.0
        return self.cost_ms * math.exp(-max(now_s - self.stamp_s, 0.0) / self.decay_s)

    def observe(self, sample_ms: float, now_s: float) -> None:
        sample_ms = max(sample_ms, 0.0)
        if not self.samples:
            self.cost_ms = sample_ms
        else:
            weight = math.exp(-max(now_s - self.stamp_s, 0.0) / self.decay_s)
            decayed = self.cost_ms * weight
            self.cost_ms = sample_ms if sample_ms > decayed else decayed + sample_ms * (1.0 - weight)
        self.stamp_s = now_s
        self.samples += 1


@dataclass
class ErrorRate:
    """EWMA of the failure indicator (1 failed, 0 succeeded), per sample; it halves every
    `half_life_s` while no sample arrives, so an idle deployment's past is forgiven."""

    alpha: float
    half_life_s: float
    rate: float = 0.0
    stamp_s: float = 0.0

    def value(self, now_s: float) -> float:
        if not self.rate:
            return 0.0
        return self.rate * 0.5 ** (max(now_s - self.stamp_s, 0.0) / self.half_life_s)

    def observe(self, failed: bool, now_s: float) -> None:
        self.rate = self.value(now_s) * (1.0 - self.alpha) + (self.alpha if failed else 0.0)
        self.stamp_s = now_s


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


CLOSED, OPEN = (
    BreakerState.CLOSED,
    BreakerState.OPEN,
)  # module constants: enum member lookup is slow on the hot path


@dataclass
class CircuitBreaker:
    """Opens after `failures` consecutive failures; after `open_s` it is half-open (trial
    requests may pass); a success closes it, a failure while half-open opens it again for
    twice as long (at most `max_open_s`)."""

    failures: int
    open_s: float
    max_open_s: float
    consecutive: int = 0
    opened_at_s: float | None = None
    open_for_s: float = 0.0

    def state(self, now_s: float) -> BreakerState:
        if self.opened_at_s is None:
            return CLOSED
        if now_s - self.opened_at_s >= self.open_for_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def reopens_in_s(self, now_s: float) -> float:
        if self.opened_at_s is None:
            return 0.0
        return max(self.opened_at_s + self.open_for_s - now_s, 0.0)

    def record_success(self) -> None:
        self.consecutive = 0
        self.opened_at_s = None
        self.open_for_s = 0.0

    def trip(self, now_s: float) -> None:
        """Open at once, whatever the count: for a failure that will not heal by itself (the
        provider refusing the gateway's key). Half-open trials after `open_s` find out when
        the key has been fixed, doubling the wait while it has not."""
        if self.state(now_s) is BreakerState.OPEN:
            return
        self.open_for_s = (
            min(self.open_for_s * 2, self.max_open_s) if self.opened_at_s is not None else self.open_s
        )
        self.opened_at_s = now_s

    def record_failure(self, now_s: float) -> None:
        state = self.state(now_s)
        if state is BreakerState.HALF_OPEN:
            self.opened_at_s = now_s
            self.open_for_s = min(self.open_for_s * 2, self.max_open_s)
        elif state is BreakerState.CLOSED:
            self.consecutive += 1
            if self.consecutive >= self.failures:
                self.opened_at_s = now_s
                self.open_for_s = self.open_s
        # Already open: failures of requests sent before it opened change nothing.


# Successful calls a deployment's latency percentiles are taken over (the hedge delay).
RECENT_SAMPLES = 256


@dataclass
class Recent:
    """The last RECENT_SAMPLES latencies of successful calls, for percentiles (the Peak EWMA is
    built to react, not to describe a distribution)."""

    values: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_SAMPLES))

    def add(self, value_ms: float) -> None:
        self.values.append(max(value_ms, 0.0))

    def percentile(self, p: float) -> float:
        """The nearest-rank p-th percentile (0 < p < 100); 0 without samples."""
        if not self.values:
            return 0.0
        ordered = sorted(self.values)
        rank = math.ceil(p / 100 * len(ordered))
        return ordered[min(max(rank, 1), len(ordered)) - 1]


@dataclass(frozen=True)
class Sample:
    """One upstream attempt's outcome (the fields of a ProviderStat the router uses)."""

    ok: bool
    latency_ms: float = 0.0
    ttft_ms: float = 0.0
    stream: bool = False
    error_code: str = ""
    retry_after_s: float = 0.0


@dataclass(slots=True)  # not frozen: built per candidate per request, and frozen init is slower
class HealthView:
    """A deployment's state at one instant, as ranking needs it."""

    latency_ms: float  # Peak EWMA (TTFT for streams); 0 when never measured or fully decayed
    measured: bool
    error_rate: float
    breaker: BreakerState
    blocked_reason: str  # "" when the deployment may take requests
    blocked_for_s: float  # how long until it may


@dataclass
class DeploymentHealth:
    latency: PeakEwma  # whole-call latency of non-streaming calls
    ttft: PeakEwma  # time to first token of streaming calls
    errors: ErrorRate
    breaker: CircuitBreaker
    cooling_until_s: float = 0.0  # Retry-After: keep away until then
    recent_latency: Recent = field(default_factory=Recent)  # plain calls, whole-call latency
    recent_ttft: Recent = field(default_factory=Recent)  # streams, time to first token

    @classmethod
    def new(cls, tuning: RouterTuning) -> DeploymentHealth:
        return cls(
            latency=PeakEwma(tuning.latency_decay_s),
            ttft=PeakEwma(tuning.latency_decay_s),
            errors=ErrorRate(tuning.error_alpha, tuning.error_half_life_s),
            breaker=CircuitBreaker(tuning.breaker_failures, tuning.breaker_open_s, tuning.breaker_max_open_s),
        )

    def observe(self, sample: Sample, now_s: float, tuning: RouterTuning) -> None:
        if sample.ok:
            if sample.stream:
                self.ttft.observe(sample.ttft_ms, now_s)
                self.recent_ttft.add(sample.ttft_ms)
            else:
                self.latency.observe(sample.latency_ms, now_s)
                self.recent_latency.add(sample.latency_ms)
            self.errors.observe(False, now_s)
            self.breaker.record_success()
            return
        if sample.error_code not in DEPLOYMENT_FAULTS:
            return  # the request's fault, not the deployment's
        self.errors.observe(True, now_s)
        if sample.error_code == ErrorCode.TIMEOUT:
            # A timeout is a lower bound of the latency: a fast error must not look fast, but a
            # slow one is slow.
            (self.ttft if sample.stream else self.latency).observe(sample.latency_ms, now_s)
        if sample.retry_after_s > 0:
            self.cooling_until_s = max(self.cooling_until_s, now_s + sample.retry_after_s)
        if sample.error_code == ErrorCode.RATE_LIMITED:
            # Throttled, not broken: keep it aside for a while instead of tripping the breaker.
            if sample.retry_after_s <= 0:
                self.cooling_until_s = max(self.cooling_until_s, now_s + tuning.rate_limit_cooldown_s)
            return
        if sample.error_code == ErrorCode.PROVIDER_AUTH_FAILED:
            # A revoked or rotated key: every request would fail the same way, so out of
            # rotation now rather than after `breaker_failures` more callers have paid for it.
            self.breaker.trip(now_s)
            return
        self.breaker.record_failure(now_s)

    def view(self, now_s: float, stream: bool) -> HealthView:
        tracker = self.ttft if stream and self.ttft.samples else self.latency
        breaker = self.breaker.state(now_s)
        blocked, blocked_for = "", 0.0
        if breaker == OPEN:
            blocked, blocked_for = "circuit_open", self.breaker.reopens_in_s(now_s)
        elif self.cooling_until_s > now_s:
            blocked, blocked_for = "retry_after", self.cooling_until_s - now_s
        return HealthView(
            latency_ms=tracker.value(now_s),
            measured=tracker.samples > 0,
            error_rate=self.errors.value(now_s),
            breaker=breaker,
            blocked_reason=blocked,
            blocked_for_s=blocked_for,
        )


@dataclass
class HealthBook:
    """Every deployment's health, keyed by deployment id."""

    tuning: RouterTuning
    deployments: dict[str, DeploymentHealth] = field(default_factory=dict)

    def _get(self, deployment_id: str) -> DeploymentHealth:
        health = self.deployments.get(deployment_id)
        if health is None:
            health = self.deployments[deployment_id] = DeploymentHealth.new(self.tuning)
        return health

    def observe(self, deployment_id: str, sample: Sample, now_s: float) -> None:
        self._get(deployment_id).observe(sample, now_s, self.tuning)

    def view(self, deployment_id: str, now_s: float, stream: bool) -> HealthView:
        return self._get(deployment_id).view(now_s, stream)

    def percentile(self, deployment_id: str, stream: bool, p: float) -> tuple[float, int]:
        """The p-th percentile of the deployment's recent successful calls (time to first token
        for streams, whole-call latency otherwise) and how many samples it is taken over."""
        health = self._get(deployment_id)
        recent = health.recent_ttft if stream else health.recent_latency
        return recent.percentile(p), len(recent.values)
