"""Burn rates: how fast a scope spends, and when at that rate its cap runs out. Pure.

Fixed thresholds say where spend is; a burn rate says where it is going ("project acme: at the
last hour's rate the day cap is reached at 15:40 UTC"). The rates are SRE-style multi-window:
a short window (default 1 h) that reacts and is what the projection is read from, and a long
one (default 6 h) that must agree, so a short spike does not alert on its own
(docs/budgets.md, "Burn-rate alerts").

A rate is read from samples of a slot's cumulative spend (spend in a period only grows).
Every period starts at 0, so the period's start is always a true sample: a window that reaches
back past the samples kept (a new leader, a young period) reads its rate from the latest true
sample before it, over the longer span that covers, and says so (`span_s`).

Used by the budget authority (alerts, from its own counters) and by `GET /v1/usage` (from the
ledger's sums per window): the same projection for both.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

ZERO = Decimal(0)
HOUR_S = 3600.0


@dataclass(frozen=True)
class BurnWindows:
    """The windows the rates are read over, short first, and how far ahead a projection must
    land (besides before its period's end) to alert."""

    short_s: float = HOUR_S
    long_s: float = 6 * HOUR_S
    horizon_s: float = 24 * HOUR_S

    def __post_init__(self) -> None:
        if not 0 < self.short_s <= self.long_s:
            raise ValueError("burn windows: 0 < short <= long is required")
        if self.horizon_s <= 0:
            raise ValueError("burn horizon must be positive")


@dataclass(frozen=True)
class Rate:
    """Spend per second over one window (read over `span_s`, at least the window when the
    samples reach back that far)."""

    window_s: float
    span_s: float
    spent_usd: Decimal  # spend within the span

    @property
    def usd_per_s(self) -> float:
        return float(self.spent_usd) / self.span_s if self.span_s > 0 else 0.0

    @property
    def usd_per_hour(self) -> Decimal:
        return (Decimal(str(self.usd_per_s)) * 3600).quantize(Decimal("0.0000001"))


@dataclass(frozen=True)
class Projection:
    """A cap's headroom against a rate: when it runs out (None: it does not at this rate)."""

    rate: Rate
    headroom_usd: Decimal
    exhausted_unix_ms: int | None


def period_end_ms(period: str, now_ms: int) -> int | None:
    """When the period containing `now_ms` ends (UTC); None for `total`, which never ends."""
    when = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    if period == "day":
        start = when.replace(hour=0, minute=0, second=0, microsecond=0)
        return int(start.timestamp() * 1000) + 86_400_000
    if period == "month":
        year, month = (when.year + 1, 1) if when.month == 12 else (when.year, when.month + 1)
        return int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000)
    if period == "total":
        return None
    raise ValueError(f"unknown period {period!r}")


def period_start_ms(period: str, now_ms: int) -> int | None:
    """When the period containing `now_ms` began (UTC); None for `total`."""
    when = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    if period == "day":
        return int(when.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)
    if period == "month":
        return int(when.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)
    if period == "total":
        return None
    raise ValueError(f"unknown period {period!r}")


def exhaustion_ms(headroom: Decimal, rate: Rate, now_ms: int) -> int | None:
    """When `headroom` is spent at `rate` (now when there is none left); None at no spend."""
    if headroom <= 0:
        return now_ms
    per_s = rate.usd_per_s
    if per_s <= 0:
        return None
    return now_ms + round(float(headroom) / per_s * 1000)


def project(headroom: Decimal, rate: Rate, now_ms: int) -> Projection:
    return Projection(rate, headroom, exhaustion_ms(headroom, rate, now_ms))


@dataclass
class SpendSamples:
    """Cumulative spend of one slot over time, oldest first, kept for the longest window."""

    keep_s: float
    times_ms: list[int] = field(default_factory=list)
    spent: list[Decimal] = field(default_factory=list)

    def add(self, at_ms: int, spent: Decimal) -> None:
        if self.times_ms and at_ms <= self.times_ms[-1]:
            return  # out of order or repeated: the later sample wins nothing
        self.times_ms.append(at_ms)
        self.spent.append(spent)
        # Keep one sample at or before the longest window's start (the anchor it reads from).
        cutoff = at_ms - self.keep_s * 1000
        drop = bisect.bisect_right(self.times_ms, cutoff) - 1
        if drop > 0:
            del self.times_ms[:drop]
            del self.spent[:drop]

    def rate(self, window_s: float, now_ms: int, floor_ms: int | None = None) -> Rate | None:
        """The rate over the last `window_s`: from the latest sample at or before the window's
        start (or, when none is kept, the oldest sample, or the period's start `floor_ms` at 0
        spend, whichever is known and older). None with nothing to read it from."""
        if not self.times_ms:
            return None
        now_spent = self.spent[-1]
        start_ms = now_ms - window_s * 1000
        i = bisect.bisect_right(self.times_ms, start_ms) - 1
        if i >= 0:
            anchor_ms, anchor_spent = self.times_ms[i], self.spent[i]
        elif floor_ms is not None and floor_ms <= self.times_ms[0]:
            # The period began at 0: a true sample. Older than the window, the rate is read
            # over the longer span (what was spent between it and the window is not known).
            anchor_ms, anchor_spent = floor_ms, ZERO
        else:
            anchor_ms, anchor_spent = self.times_ms[0], self.spent[0]
        span_s = (now_ms - anchor_ms) / 1000
        if span_s <= 0:
            return None
        return Rate(window_s, span_s, max(now_spent - anchor_spent, ZERO))


@dataclass(frozen=True)
class BurnAlert:
    """A cap that, at the short window's rate, runs out before its period ends (and within the
    horizon), the long window agreeing."""

    short: Projection
    long: Projection
    period_end_ms: int | None


def burning(
    samples: SpendSamples,
    windows: BurnWindows,
    cap: Decimal,
    held: Decimal,
    period: str,
    now_ms: int,
) -> BurnAlert | None:
    """The burn-rate alert owed for one cap now, or None.

    Headroom is the cap less spent and held (requests in flight hold their worst case, and a
    cap refuses once the next hold no longer fits, so that is when refusals begin)."""
    if not samples.times_ms:
        return None
    floor = period_start_ms(period, now_ms)
    short = samples.rate(windows.short_s, now_ms, floor)
    long = samples.rate(windows.long_s, now_ms, floor)
    if short is None or long is None:
        return None
    headroom = cap - samples.spent[-1] - held
    first, second = project(headroom, short, now_ms), project(headroom, long, now_ms)
    end = period_end_ms(period, now_ms)
    limit = now_ms + round(windows.horizon_s * 1000)
    if end is not None:
        limit = min(limit, end)
    if first.exhausted_unix_ms is None or second.exhausted_unix_ms is None:
        return None
    # The long window only has to agree that the cap runs out in time (before the period
    # ends; for `total`, within the horizon): it is slower to rise, which is its point.
    if first.exhausted_unix_ms >= limit or second.exhausted_unix_ms >= (end if end is not None else limit):
        return None
    return BurnAlert(first, second, end)


def window_label(seconds: float) -> str:
    """`3600` -> "hour", `21600` -> "6 hours", `90` -> "90 s" (for messages)."""
    if seconds >= HOUR_S and seconds % HOUR_S == 0:
        hours = int(seconds // HOUR_S)
        return "hour" if hours == 1 else f"{hours} hours"
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return "minute" if minutes == 1 else f"{minutes} minutes"
    return f"{seconds:g} s"


def clock_text(unix_ms: int, now_ms: int) -> str:
    """`15:40:12 UTC`, with the date in front when it is not the day of `now_ms`."""
    when = datetime.fromtimestamp(unix_ms / 1000, tz=UTC)
    today = datetime.fromtimestamp(now_ms / 1000, tz=UTC).date()
    return when.strftime("%H:%M:%S UTC" if when.date() == today else "%Y-%m-%d %H:%M:%S UTC")


def rates_from_sums(
    window_sums: Sequence[tuple[float, Decimal]], now_ms: int, period: str, period_spent: Decimal
) -> list[Rate]:
    """Rates from the ledger's spend per window (`GET /v1/usage`): a window longer than the
    period so far is read over the period (spend before its start is not in this period)."""
    start = period_start_ms(period, now_ms)
    out = []
    for window_s, spent in window_sums:
        span = window_s
        if start is not None:
            span = min(window_s, max((now_ms - start) / 1000, 0.001))
            spent = min(spent, period_spent)
        out.append(Rate(window_s, span, spent))
    return out
