"""How the ledger pulls one batch of events. Pure: the consumer loop asks, the clock is given.

A batch closes at `size` events or `wait_s` after its first event, whichever comes first: big
batches under load, and at most `wait_s` of extra delay when traffic is light. A batch costs
about 30 ms of CPU in embedded chDB whatever its size (two dedupe queries, two inserts, the
rollup view), so the default wait (1 s) trades a second of ledger freshness for a third of the
gateway's CPU per request at moderate load (docs/performance.md).

The pulls: one that lingers until the first event, then a pause while the window stays open
(events gather in the stream), then pulls that take what gathered. Pulling again as soon as
each event arrives would cost a pull request and a status message per event, because a
nats-py fetch returns as soon as the server has delivered what it had.
"""

from __future__ import annotations

from dataclasses import dataclass

# How long a pull after the pause waits for events when the stream has none left.
DRAIN_WAIT_S = 0.05


@dataclass(frozen=True)
class Pull:
    pause_s: float  # sleep this long first
    count: int  # then ask for up to this many events
    wait_s: float  # waiting at most this long for them


@dataclass
class BatchWindow:
    size: int
    wait_s: float
    count: int = 0
    opened_at: float | None = None
    drained: bool = False

    def add(self, got: int, asked: int, now: float) -> None:
        """Record a pull's result: `got` of the `asked` events, arriving at `now`."""
        if got and self.opened_at is None:
            self.opened_at = now
        elif self.opened_at is not None and now >= self.opened_at + self.wait_s and got < asked:
            self.drained = True  # after the window, the stream had fewer than asked: all taken
        self.count += got

    def next_pull(self, now: float, idle_wait_s: float) -> Pull | None:
        """The next pull, or None: the batch is complete.

        Before the first event a pull waits up to `idle_wait_s` (the loop then asks again).
        """
        if self.count >= self.size or self.drained:
            return None
        if self.opened_at is None:
            return Pull(0.0, self.size, idle_wait_s)
        remaining = self.opened_at + self.wait_s - now
        return Pull(max(remaining, 0.0), self.size - self.count, DRAIN_WAIT_S)
