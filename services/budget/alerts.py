"""Budget alerts: which thresholds a change crossed, the event, the webhook body. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from switchyard.pricing import format_usd
from switchyard.tenancy import Budget
from switchyard.v1 import events_pb2

HUNDRED = Decimal(100)


@dataclass(frozen=True)
class Crossing:
    budget: Budget
    period_start: str
    threshold_pct: int
    spent: Decimal


def crossed(thresholds: list[int], cap: Decimal, before: Decimal, after: Decimal) -> list[int]:
    """Thresholds reached by going from `before` to `after` (each at most once: before < t <= after)."""
    return [pct for pct in thresholds if before < cap * pct / HUNDRED <= after]


def reached(thresholds: list[int], cap: Decimal, spent: Decimal) -> list[int]:
    """Every threshold at or under `spent` (after a rebuild: re-check, the marks de-duplicate)."""
    return [pct for pct in thresholds if spent > 0 and cap * pct / HUNDRED <= spent]


def alert_id(crossing: Crossing) -> str:
    """One alert per budget, period, cap and threshold: the de-duplication key (a KV key too).
    The cap is part of it so that a changed cap alerts afresh."""
    b = crossing.budget
    cap = format_usd(b.cap_usd).replace(".", "_")
    return f"alert.{b.scope}.{b.scope_id}.{b.period}.{crossing.period_start}.{cap}.{crossing.threshold_pct}"


def alert_event(crossing: Crossing, now_ms: int) -> events_pb2.BudgetAlert:
    b = crossing.budget
    return events_pb2.BudgetAlert(
        scope_kind=b.scope,
        scope_id=b.scope_id,
        period=b.period,
        period_start=crossing.period_start,
        threshold_pct=crossing.threshold_pct,
        spent_usd=format_usd(crossing.spent),
        cap_usd=format_usd(b.cap_usd),
        ts_unix_ms=now_ms,
        project_id=b.project_id,
    )


def webhook_body(alert: events_pb2.BudgetAlert, alert_key: str) -> dict[str, Any]:
    return {
        "type": "budget.alert",
        "id": alert_key,
        "scope": f"{alert.scope_kind}:{alert.scope_id}",
        "scope_kind": alert.scope_kind,
        "scope_id": alert.scope_id,
        "project_id": alert.project_id,
        "period": alert.period,
        "period_start": alert.period_start,
        "threshold_pct": alert.threshold_pct,
        "spent_usd": alert.spent_usd,
        "cap_usd": alert.cap_usd,
        "ts_unix_ms": alert.ts_unix_ms,
    }


def retry_delays(attempts: int, first_s: float = 0.5, max_s: float = 30.0) -> list[float]:
    """Waits between webhook attempts: exponential, capped."""
    return [min(first_s * 2**i, max_s) for i in range(max(attempts - 1, 0))]
