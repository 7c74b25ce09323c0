"""Burn-rate alerts in the budget authority: every `budget_burn_sample_s` the leader samples
each budget's spend in its current period and asks switchyard/burn.py whether, at the recent
rate, the cap runs out before the period ends (docs/budgets.md, "Burn-rate alerts").

The samples are the authority's own counters (settled spend, exact, no ledger lag); the
headroom counts what requests in flight hold. `BurnWatch` is pure (tested directly); `watch`
is the leader's loop that feeds it the clock and queues the alerts it owes. A new leader starts
with no samples: until it has kept a window's worth, that window's rate is read from the
period's start (spend was 0 there), i.e. averaged over a longer span.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from decimal import Decimal

from switchyard.burn import BurnWindows, SpendSamples, burning

from .alerts import BURN_RATE, Crossing, alert_id
from .authority import Authority
from .book import Slot
from .periods import period_start

log = logging.getLogger("switchyard.budget.burn")


def requests_held(authority: Authority, slot: Slot) -> Decimal:
    """What requests in flight hold in `slot`: its held money less the budget leases' slack
    (services/budget/escrow.py). A lease holds a slice of headroom for a router before any
    request uses it, so counting it would move a projection (and a downgrade) earlier than the
    refusals it predicts; the lease's own admissions in flight are left out with it."""
    scope, period, start = slot
    leased = sum(
        (
            lease.held
            for lease in authority.leases.values()
            if scope in lease.scopes and period_start(period, lease.at_ms) == start
        ),
        Decimal(0),
    )
    return max(authority.book.counter(slot).held - leased, Decimal(0))


class BurnWatch:
    """Samples per budget slot and the burn-rate alerts already owed (one per budget, period
    and cap: the send loop's KV marks de-duplicate across leaders, this across ticks)."""

    def __init__(self, windows: BurnWindows) -> None:
        self.windows = windows
        self.samples: dict[Slot, SpendSamples] = {}
        self._owed: set[str] = set()

    def tick(self, authority: Authority, now_ms: int) -> list[Crossing]:
        out = []
        current: set[Slot] = set()
        for budget in list(authority.view.budgets.values()):
            start = period_start(budget.period, now_ms)
            slot: Slot = (budget.scope_label, budget.period, start)
            current.add(slot)
            counter = authority.book.counter(slot)
            samples = self.samples.get(slot)
            if samples is None:
                samples = self.samples[slot] = SpendSamples(self.windows.long_s)
            samples.add(now_ms, counter.spent)
            held = requests_held(authority, slot)
            alert = burning(samples, self.windows, budget.cap_usd, held, budget.period, now_ms)
            if alert is None:
                continue
            crossing = Crossing(budget, start, 0, counter.spent, kind=BURN_RATE, reserved=held, burn=alert)
            key = alert_id(crossing)
            if key not in self._owed:
                self._owed.add(key)
                out.append(crossing)
        for gone in [s for s in self.samples if s not in current]:  # a period ended, a budget went
            del self.samples[gone]
        return out


async def watch(
    authority: Authority,
    windows: BurnWindows,
    every_s: float,
    owe: Callable[[Crossing], None],
    clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
) -> None:
    """The leader's loop (one per leadership term): sample, and queue each alert owed."""
    burn = BurnWatch(windows)
    while True:
        try:
            for crossing in burn.tick(authority, clock_ms()):
                owe(crossing)
        except Exception as exc:  # the watch must outlive anything (a budget edited mid-tick)
            log.warning("burn-rate check failed: %s", exc)
        await asyncio.sleep(every_s)
