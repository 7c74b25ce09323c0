"""When to stop collecting a ledger batch. Pure: the consumer loop asks, the clock is given.

A batch closes at `size` events or `wait_s` after its first event, whichever comes first:
big batches under load, and at most `wait_s` of extra delay when traffic is light. A batch costs
about 30 ms of CPU in embedded chDB whatever its size (two dedupe queries, two inserts, the rollup
view), so the default wait (1 s) trades a second of ledger freshness for a third of the gateway's
CPU per request at moderate load (docs/performance.md).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class BatchWindow:
    size: int
    wait_s: float
    count: int = 0
    opened_at: float | None = None

    def add(self, n: int, now: float) -> None:
        if n and self.opened_at is None:
            self.opened_at = now
        self.count += n

    def next_fetch(self, now: float, idle_wait_s: float) -> tuple[int, float] | None:
        """(how many to ask for, how long to wait) for the next fetch, or None: flush now.

        Before the first event the fetch waits up to `idle_wait_s` (then loops).
        """
        if self.count >= self.size:
            return None
        if self.opened_at is None:
            return self.size, idle_wait_s
        remaining = self.opened_at + self.wait_s - now
        if remaining <= 0:
            return None
        return self.size - self.count, remaining
