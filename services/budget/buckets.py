"""Token buckets for rate limits (requests per second, tokens per minute). Pure: the caller
passes the time, so behaviour is exact and testable."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class TokenBucket:
    """`capacity` tokens at most, refilled at `rate_per_s`. Tokens may go negative when a
    settlement charges more than was taken up front (the debt is paid back before the next
    request passes), but never below minus one capacity."""

    rate_per_s: float
    capacity: float
    tokens: float
    updated_s: float

    @classmethod
    def full(cls, rate_per_s: float, capacity: float, now_s: float) -> TokenBucket:
        return cls(rate_per_s, capacity, capacity, now_s)

    def refill(self, now_s: float) -> None:
        if now_s > self.updated_s:
            self.tokens = min(self.capacity, self.tokens + (now_s - self.updated_s) * self.rate_per_s)
            self.updated_s = now_s

    def wait_s(self, amount: float, now_s: float) -> float:
        """0 when `amount` can be taken now; else how long until it can (inf: never)."""
        self.refill(now_s)
        if amount > self.capacity:
            return math.inf
        if self.tokens >= amount:
            return 0.0
        return (amount - self.tokens) / self.rate_per_s

    def take(self, amount: float, now_s: float) -> None:
        self.refill(now_s)
        self.tokens -= amount

    def adjust(self, delta: float, now_s: float) -> None:
        """Charge (`delta` > 0) or refund (`delta` < 0) after the fact."""
        self.refill(now_s)
        self.tokens = max(-self.capacity, min(self.capacity, self.tokens - delta))

    def reconfigure(self, rate_per_s: float, capacity: float, now_s: float) -> None:
        self.refill(now_s)
        self.rate_per_s = rate_per_s
        self.capacity = capacity
        self.tokens = min(self.tokens, capacity)
