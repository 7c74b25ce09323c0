"""Token buckets for rate limits (requests per second, tokens per minute). Pure: the caller
passes the time, so behaviour is exact and testable.

A bucket may lend tokens to budget leases (docs/budgets.md, "Leases on rate-limited scopes"):
lent tokens leave `tokens` and are counted in `lent` until the lease comes back, and the bucket
refills only up to `capacity - lent`. So `tokens + lent` (what the bucket and the leases
out of it can still admit) is itself a token bucket of the same capacity and rate, and every
admission, per request or from a lease, takes from it: the limit's bound is the same with
leases as without."""

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
    lent: float = 0.0  # held by leases still out (not yet admitted, or not yet known to be)

    @classmethod
    def full(cls, rate_per_s: float, capacity: float, now_s: float) -> TokenBucket:
        return cls(rate_per_s, capacity, capacity, now_s)

    def refill(self, now_s: float) -> None:
        if now_s > self.updated_s:
            # Never above what the leases leave (and never lower than it already is).
            ceiling = max(self.capacity - self.lent, self.tokens)
            self.tokens = min(ceiling, self.tokens + (now_s - self.updated_s) * self.rate_per_s)
            self.updated_s = now_s

    def lendable(self, now_s: float) -> float:
        """What a lease may take now: the tokens the bucket holds (none when in debt)."""
        self.refill(now_s)
        return max(self.tokens, 0.0)

    def lend(self, amount: float, now_s: float) -> None:
        """A lease takes `amount` (at most `lendable`): it moves from the bucket to the lease."""
        self.refill(now_s)
        self.tokens -= amount
        self.lent += amount

    def repay(self, amount: float, unused: float, now_s: float) -> None:
        """A lease of `amount` ends; `unused` of it (known unadmitted) comes back to the bucket,
        the rest was admitted (or is counted so: a lease never given back)."""
        self.refill(now_s)
        self.lent = max(self.lent - amount, 0.0)
        self.tokens += min(max(unused, 0.0), amount)

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
        ceiling = max(self.capacity - self.lent, min(self.tokens, self.capacity))
        self.tokens = max(-self.capacity, min(ceiling, self.tokens - delta))

    def reconfigure(self, rate_per_s: float, capacity: float, now_s: float) -> None:
        self.refill(now_s)
        self.rate_per_s = rate_per_s
        self.capacity = capacity
        self.tokens = min(self.tokens, capacity - self.lent)
