"""Budget periods in UTC: which day, month or all-time bucket an instant falls in. Pure."""

from __future__ import annotations

from datetime import UTC, datetime

TOTAL = "all"


def period_start(period: str, unix_ms: int) -> str:
    """The period's name: `2026-11-05` (day), `2026-11` (month), `all` (total)."""
    if period == "total":
        return TOTAL
    when = datetime.fromtimestamp(unix_ms / 1000, tz=UTC)
    if period == "day":
        return when.strftime("%Y-%m-%d")
    if period == "month":
        return when.strftime("%Y-%m")
    raise ValueError(f"unknown period {period!r}")


def day_start_ms(unix_ms: int) -> int:
    when = datetime.fromtimestamp(unix_ms / 1000, tz=UTC)
    return int(when.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)


def month_start_ms(unix_ms: int) -> int:
    when = datetime.fromtimestamp(unix_ms / 1000, tz=UTC)
    return int(when.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)
