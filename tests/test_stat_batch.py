"""What a worker's provider stats of one interval become for the budget authority (pure)."""

from __future__ import annotations

from services.providers.stat_batch import budget_digest
from switchyard.v1 import events_pb2


def stat(
    dep: str, ts: int, remaining: int | None = None, status: int = 200, retry_ms: float = 0
) -> events_pb2.ProviderStat:
    out = events_pb2.ProviderStat(
        deployment_id=dep, ts_unix_ms=ts, http_status=status, retry_after_ms=retry_ms
    )
    if remaining is not None:
        out.rate_limits.requests_remaining = remaining
    return out


def test_plain_stats_send_the_budget_nothing() -> None:
    assert budget_digest([stat("a", 1), stat("b", 2)]) == []


def test_newest_reading_and_longest_429_per_deployment() -> None:
    stats = [
        stat("a", 3, remaining=7),
        stat("a", 1, remaining=9),
        stat("a", 2, status=429, retry_ms=500),
        stat("a", 4, status=429, retry_ms=2000),
        stat("b", 5, remaining=1),
    ]
    digest = budget_digest(stats)
    assert [(s.deployment_id, s.ts_unix_ms) for s in digest] == [("a", 3), ("b", 5), ("a", 4)]


def test_a_429_with_the_newest_reading_is_sent_once() -> None:
    both = stat("a", 2, remaining=0, status=429, retry_ms=1000)
    assert budget_digest([stat("a", 1, remaining=5), both]) == [both]
