"""Keeping the per-minute rollups equal to the raw rows. Pure: no database here.

Replays never reach the rollups (the ledger drops request_ids it has stored before it inserts,
and the materialized view only sees what is inserted). What is left is a ledger killed inside
one INSERT, between the raw part and the view's part being written: then the two disagree for
the minutes of that batch. At start-up the ledger compares the rollup with the raw rows over a
recent window and inserts the difference as a signed delta row, which SummingMergeTree adds in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from .migrations import ROLLUP_KEY, ROLLUP_SUMS

# Float sums (latency) are compared with this tolerance: summation order differs.
FLOAT_TOLERANCE = 1e-6
# Retention deletes whole parts at merge time: stay this far inside it.
RETENTION_MARGIN = timedelta(days=1)


def reconcile_since(now: datetime, window_hours: int, retention_days: int) -> datetime | None:
    """Start (minute-aligned) of the window to reconcile, or None when off.

    Never reaches back to where raw rows may already be expired while rollups are kept,
    or the repair would subtract what retention removed.
    """
    if window_hours <= 0:
        return None
    since = now - timedelta(hours=window_hours)
    if retention_days > 0:
        since = max(since, now - timedelta(days=retention_days) + RETENTION_MARGIN)
        if since >= now:
            return None
    return since.replace(second=0, microsecond=0)


def _index(rows: Iterable[Sequence[Any]]) -> dict[tuple, list[Any]]:
    width = len(ROLLUP_KEY)
    return {tuple(row[:width]): list(row[width:]) for row in rows}


def _differs(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b)) > FLOAT_TOLERANCE * max(1.0, abs(float(a)), abs(float(b)))
    return a != b


def _zero(value: Any) -> Any:
    if isinstance(value, float):
        return 0.0
    if isinstance(value, Decimal):
        return Decimal(0)
    return 0


def rollup_deltas(raw: Iterable[Sequence[Any]], rolled: Iterable[Sequence[Any]]) -> list[list[Any]]:
    """Rows to insert into the rollup so that, per key, its sums equal the raw aggregate.

    Both inputs are rows of key columns then ROLLUP_SUMS columns, one row per key.
    """
    truth, have = _index(raw), _index(rolled)
    deltas = []
    for key in sorted(set(truth) | set(have), key=repr):
        want = truth.get(key)
        got = have.get(key)
        if want is None:
            want = [_zero(v) for v in got or []]
        if got is None:
            got = [_zero(v) for v in want]
        if any(_differs(w, g) for w, g in zip(want, got, strict=True)):
            deltas.append([*key, *(w - g for w, g in zip(want, got, strict=True))])
    return deltas


__all__ = ["ROLLUP_KEY", "ROLLUP_SUMS", "reconcile_since", "rollup_deltas"]
