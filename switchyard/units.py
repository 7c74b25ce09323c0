"""Seconds <-> milliseconds where the contract meets a clock or an edge in seconds.

The contract carries every duration in milliseconds (protos/switchyard/v1/invoke.proto, "Time").
Some parts of the process count in seconds because their source does: HTTP's Retry-After and
GatewayError.retry_after_s, the monotonic `now_s` clocks of the router's health book and the
budget's buckets, the ledger's `wait_s` column; and the public JSON keeps `decision_us` (the
router's decision time) in microseconds. They convert here, when they read or write a
message, so a field's unit is never guessed at a call site. Pure.
"""

from __future__ import annotations

MS_PER_S = 1000.0
US_PER_MS = 1000.0


def ms(seconds: float) -> float:
    """A duration in seconds as the contract's milliseconds."""
    return seconds * MS_PER_S


def seconds(milliseconds: float) -> float:
    """A contract duration in milliseconds as seconds."""
    return milliseconds / MS_PER_S


def microseconds(milliseconds: float) -> float:
    """A contract duration in milliseconds as microseconds."""
    return milliseconds * US_PER_MS


def ms_from_us(microseconds: float) -> float:
    """A duration in microseconds as the contract's milliseconds."""
    return microseconds / US_PER_MS
