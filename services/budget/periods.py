"""Budget periods in UTC: which day, month or all-time bucket an instant falls in. Pure."""

from __future__ import annotations

import functools
from datetime import UTC, datetime

TOTAL = "all"


DAY_MS = 86_400_000


def period_start(period: str, unix_ms: int) -> str:
    """The period's name: `2026-11-05` (day), `2026-11` (month), `all` (total)."""
    if period == "total":
        return TOTAL
    day, month = _names_of_day(unix_ms // DAY_MS)
    if period == "day":
        return day
    if period == "month":
        return month
    raise ValueError(f"unknown period {period!r}")


@functools.lru_cache(maxsize=64)
def _names_of_day(day_index: int) -> tuple[str, str]:
    # Memoized: every reservation and settlement names several slots, and formatting a
    # datetime each time was 4 % of the budget authority's CPU. UTC days are 86,400,000 ms.
    when = datetime.fromtimestamp(day_index * DAY_MS / 1000, tz=UTC)
    return when.strftime("%Y-%m-%d"), when.strftime("%Y-%m")


def day_start_ms(unix_ms: int) -> int:
    when = datetime.fromtimestamp(unix_ms / 1000, tz=UTC)
    return int(when.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)


def month_start_ms(unix_ms: int) -> int:
    when = datetime.fromtimestamp(unix_ms / 1000, tz=UTC)
    return int(when.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)
