"""Provider quotas: keep every deployment under its provider's rate limits. Pure.

Each deployment may declare limits (`[deployments.limits]`, switchyard.catalog.ProviderLimits):
requests, tokens, input tokens and output tokens per minute, each a token bucket holding one
minute's worth and refilled continuously, plus a cap on requests in flight at once. The budget
authority owns one QuotaBook and consults it in the same single-threaded decision that reserves
spend, so every router and worker process shares one exact count (docs/quotas.md).

A request takes 1 request, its prompt estimate of input tokens and its max_tokens of output
tokens (what OpenAI and Anthropic count up front); settlement returns what it did not use.
Provider rate-limit headers and 429s can only lower the buckets: the provider knows best about
its own counters (other clients may share the key).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from switchyard import units
from switchyard.catalog import ProviderLimits
from switchyard.v1 import budget_pb2, events_pb2

from .buckets import TokenBucket

# A deployment with less than this share of any limit left counts as "near quota" for ranking.
NEAR_QUOTA = 0.2
# A request waiting only on a concurrency slot has no schedule: suggest retrying after this.
CONCURRENCY_RETRY_S = 1.0
DIMENSIONS = ("requests", "tokens", "input_tokens", "output_tokens")
# The limits ProviderRateLimits carries (input/output token limits are not forwarded).
HEADER_LIMITS = ("requests_limit", "tokens_limit")


@dataclass(frozen=True)
class QuotaNeed:
    """What one request takes from a deployment's quota."""

    deployment_id: str
    input_tokens: int = 0
    output_tokens: int = 0

    def amount(self, dimension: str) -> float:
        if dimension == "requests":
            return 1.0
        if dimension == "input_tokens":
            return float(self.input_tokens)
        if dimension == "output_tokens":
            return float(self.output_tokens)
        return float(self.input_tokens + self.output_tokens)


@dataclass(frozen=True)
class QuotaHold:
    request_id: str
    deployment_id: str
    taken: tuple[tuple[str, float], ...]  # (dimension, amount) taken from its buckets
    concurrent: bool


def _per_minute(limits: ProviderLimits) -> dict[str, int]:
    return {
        "requests": limits.rpm,
        "tokens": limits.tpm,
        "input_tokens": limits.input_tpm,
        "output_tokens": limits.output_tpm,
    }


@dataclass
class DeploymentQuota:
    limits: ProviderLimits
    buckets: dict[str, TokenBucket] = field(default_factory=dict)
    in_flight: set[str] = field(default_factory=set)
    granted: int = 0
    refused: int = 0

    def configure(self, limits: ProviderLimits, now_s: float) -> None:
        self.limits = limits
        for dimension, per_minute in _per_minute(limits).items():
            bucket = self.buckets.get(dimension)
            if not per_minute:
                self.buckets.pop(dimension, None)
            elif bucket is None:
                self.buckets[dimension] = TokenBucket.full(per_minute / 60.0, float(per_minute), now_s)
            elif bucket.capacity != per_minute:
                bucket.reconfigure(per_minute / 60.0, float(per_minute), now_s)

    def fitted(self, need: QuotaNeed) -> dict[str, float]:
        """The amounts `need` takes here. Output is capped at one minute's worth: a request that
        sets no max_tokens would otherwise never fit a small output limit."""
        out = {}
        for dimension, bucket in self.buckets.items():
            amount = need.amount(dimension)
            if dimension == "output_tokens":
                amount = min(amount, bucket.capacity)
            out[dimension] = amount
        return out

    def wait_s(self, need: QuotaNeed, now_s: float) -> float:
        """0 when `need` fits now; else seconds until it does (inf: never, it is too large)."""
        waits = [self.buckets[d].wait_s(a, now_s) for d, a in self.fitted(need).items()]
        if self.limits.max_concurrent and len(self.in_flight) >= self.limits.max_concurrent:
            waits.append(CONCURRENCY_RETRY_S)
        return max(waits, default=0.0)

    def headroom(self, now_s: float) -> float:
        """The smallest free share over its limits, 0..1 (1: no limits)."""
        shares = []
        for bucket in self.buckets.values():
            bucket.refill(now_s)
            shares.append(bucket.tokens / bucket.capacity)
        if self.limits.max_concurrent:
            shares.append(1 - len(self.in_flight) / self.limits.max_concurrent)
        return min(max(min(shares, default=1.0), 0.0), 1.0)


class QuotaBook:
    def __init__(self, limits: Mapping[str, ProviderLimits] | None = None, now_s: float = 0.0) -> None:
        self.quotas: dict[str, DeploymentQuota] = {}
        self.holds: dict[str, QuotaHold] = {}
        self.configure(limits or {}, now_s)

    def configure(self, limits: Mapping[str, ProviderLimits], now_s: float) -> None:
        """Set every deployment's limits (at start, or when the catalog changes)."""
        for deployment_id in [d for d in self.quotas if d not in limits or not limits[d].any]:
            del self.quotas[deployment_id]
        for deployment_id, lim in limits.items():
            if lim.any:
                quota = self.quotas.get(deployment_id) or DeploymentQuota(lim)
                quota.configure(lim, now_s)
                self.quotas[deployment_id] = quota

    def wait_s(self, need: QuotaNeed, now_s: float) -> float:
        quota = self.quotas.get(need.deployment_id)
        return quota.wait_s(need, now_s) if quota else 0.0

    def choose(self, needs: list[QuotaNeed], now_s: float) -> tuple[int | None, list[tuple[str, float]]]:
        """The first candidate with headroom (its index) and the ones before it that were at
        quota, with how long until each fits. None: every candidate is at quota."""
        skipped: list[tuple[str, float]] = []
        for index, need in enumerate(needs):
            wait = self.wait_s(need, now_s)
            if wait <= 0:
                return index, skipped
            skipped.append((need.deployment_id, wait))
        return None, skipped

    def refuse(self, deployment_ids: list[str]) -> None:
        for deployment_id in deployment_ids:
            if deployment_id in self.quotas:
                self.quotas[deployment_id].refused += 1

    def take(self, request_id: str, need: QuotaNeed, now_s: float) -> None:
        """Take `need` from the deployment's buckets (checked by the caller, or restored)."""
        quota = self.quotas.get(need.deployment_id)
        if quota is None or request_id in self.holds:
            return
        taken = quota.fitted(need)
        for dimension, amount in taken.items():
            quota.buckets[dimension].take(amount, now_s)
        concurrent = bool(quota.limits.max_concurrent)
        if concurrent:
            quota.in_flight.add(request_id)
        quota.granted += 1
        self.holds[request_id] = QuotaHold(request_id, need.deployment_id, tuple(taken.items()), concurrent)

    def release(self, request_id: str) -> QuotaHold | None:
        """Free the request's concurrency slot; its tokens stay taken (they were used, or
        may have been: an expired request's upstream call may still have run)."""
        hold = self.holds.pop(request_id, None)
        if hold is not None and hold.concurrent and hold.deployment_id in self.quotas:
            self.quotas[hold.deployment_id].in_flight.discard(request_id)
        return hold

    def settle(
        self, request_id: str, deployment_id: str, input_used: int, output_used: int, now_s: float
    ) -> None:
        """The request finished on `deployment_id` having used these tokens: return what was
        held but not used, and charge a deployment it failed over to (unchecked: already used)."""
        hold = self.release(request_id)
        if hold is None:
            return  # not granted in this term (e.g. an old event replayed at a rebuild)
        actual = QuotaNeed(deployment_id, input_used, output_used)
        if hold.deployment_id in self.quotas:
            quota = self.quotas[hold.deployment_id]
            answered_here = hold.deployment_id == deployment_id
            for dimension, amount in hold.taken:
                bucket = quota.buckets.get(dimension)
                if bucket is None or dimension == "requests":
                    continue  # the request was sent: it counts even if it failed
                used = actual.amount(dimension) if answered_here else 0.0
                bucket.adjust(used - amount, now_s)
            if answered_here:
                return
        fallback = self.quotas.get(deployment_id)
        if fallback is not None:  # a fallback deployment answered: count what it used
            for dimension, amount in actual_amounts(fallback, actual).items():
                fallback.buckets[dimension].adjust(amount, now_s)

    def observe(self, deployment_id: str, limits: events_pb2.ProviderRateLimits, now_s: float) -> None:
        """Lower the buckets to what the provider's rate-limit headers say: a limit below the
        declared one is adopted, and never more than `remaining` is left."""
        quota = self.quotas.get(deployment_id)
        if quota is None:
            return
        for dimension in DIMENSIONS:
            bucket = quota.buckets.get(dimension)
            if bucket is None or not limits.HasField(f"{dimension}_remaining"):
                continue
            limit_field = f"{dimension}_limit"
            if limit_field in HEADER_LIMITS and limits.HasField(limit_field):
                limit = getattr(limits, limit_field)
                if 0 < limit < bucket.capacity:
                    bucket.reconfigure(limit / 60.0, float(limit), now_s)
            remaining = float(getattr(limits, f"{dimension}_remaining"))
            reset_field = f"{dimension}_reset_ms"
            reset_s = units.seconds(getattr(limits, reset_field)) if limits.HasField(reset_field) else 0.0
            # Providers report when the limit is *fully* replenished; the next unit comes sooner.
            next_slot_s = reset_s / max(bucket.capacity - remaining, 1.0)
            lower_bucket(bucket, remaining, next_slot_s, now_s)

    def back_off(self, deployment_id: str, retry_after_s: float, now_s: float) -> None:
        """The provider answered 429: no request fits before its Retry-After."""
        quota = self.quotas.get(deployment_id)
        if quota is not None and "requests" in quota.buckets and retry_after_s > 0:
            lower_bucket(quota.buckets["requests"], 0.0, retry_after_s, now_s)

    def state(self, now_s: float, now_ms: int) -> budget_pb2.QuotaState:
        """What the routers, the ledger and the dashboard are told (`quota.state`)."""
        out = budget_pb2.QuotaState(ts_unix_ms=now_ms)
        for deployment_id, quota in sorted(self.quotas.items()):

            def available(dimension: str, q: DeploymentQuota = quota) -> float:
                bucket = q.buckets.get(dimension)
                if bucket is None:
                    return 0.0
                bucket.refill(now_s)
                return round(bucket.tokens, 3)

            def limit(dimension: str, q: DeploymentQuota = quota) -> int:
                """In effect: the declared limit, or the provider's when it reported a lower one."""
                bucket = q.buckets.get(dimension)
                return int(bucket.capacity) if bucket else 0

            out.deployments.add(
                deployment_id=deployment_id,
                rpm_limit=limit("requests"),
                requests_available=available("requests"),
                tpm_limit=limit("tokens"),
                tokens_available=available("tokens"),
                input_tpm_limit=limit("input_tokens"),
                input_tokens_available=available("input_tokens"),
                output_tpm_limit=limit("output_tokens"),
                output_tokens_available=available("output_tokens"),
                max_concurrent=quota.limits.max_concurrent,
                concurrent=len(quota.in_flight),
                headroom=round(quota.headroom(now_s), 4),
                wait_ms=round(units.ms(quota.wait_s(QuotaNeed(deployment_id), now_s)), 3),
                granted=quota.granted,
                refused=quota.refused,
            )
        return out


def actual_amounts(quota: DeploymentQuota, used: QuotaNeed) -> dict[str, float]:
    return {dimension: used.amount(dimension) for dimension in quota.buckets}


def lower_bucket(bucket: TokenBucket, remaining: float, next_slot_s: float, now_s: float) -> None:
    """Never more than `remaining` left; when nothing is left, nothing for `next_slot_s`."""
    bucket.refill(now_s)
    ceiling = remaining
    if remaining < 1 and next_slot_s > 0 and not math.isinf(next_slot_s):
        ceiling = min(ceiling, 1.0 - next_slot_s * bucket.rate_per_s)
    bucket.tokens = max(-bucket.capacity, min(bucket.tokens, ceiling))
