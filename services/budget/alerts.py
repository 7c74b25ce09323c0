"""Budget alerts: which thresholds a change crossed, when a refusal is news, the event, the
webhook body. Pure.

Two kinds: `threshold` (settled spend crossed a percentage of the cap) and `refusing` (the cap
refused a request for the first time in its period). A cap can start refusing well under 100 %
(spent + held + the next reservation no longer fit), so thresholds alone can stay silent while
a scope is down; the `refusing` alert says so at the first refusal.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from switchyard.pricing import format_usd
from switchyard.tenancy import Budget
from switchyard.v1 import events_pb2

HUNDRED = Decimal(100)
THRESHOLD = "threshold"
REFUSING = "refusing"
REFUSING_MESSAGE = "cap reached: requests are being refused"


@dataclass(frozen=True)
class Crossing:
    """An alert owed: a threshold crossed (kind THRESHOLD) or a cap that refused (kind REFUSING)."""

    budget: Budget
    period_start: str
    threshold_pct: int
    spent: Decimal
    kind: str = THRESHOLD
    reserved: Decimal = Decimal(0)  # REFUSING: held by requests in flight at the refusal
    refused: Decimal = Decimal(0)  # REFUSING: the reservation that did not fit


def crossed(thresholds: list[int], cap: Decimal, before: Decimal, after: Decimal) -> list[int]:
    """Thresholds reached by going from `before` to `after` (each at most once: before < t <= after)."""
    return [pct for pct in thresholds if before < cap * pct / HUNDRED <= after]


def reached(thresholds: list[int], cap: Decimal, spent: Decimal) -> list[int]:
    """Every threshold at or under `spent` (after a rebuild: re-check, the marks de-duplicate)."""
    return [pct for pct in thresholds if spent > 0 and cap * pct / HUNDRED <= spent]


def refusal(budget: Budget, period_start: str, spent: Decimal, held: Decimal, amount: Decimal) -> Crossing:
    """The `refusing` alert for a request `budget` refused (sent once: alert_id de-duplicates)."""
    return Crossing(budget, period_start, 0, spent, REFUSING, held, amount)


class RefusalMemory:
    """The refusing alerts this authority has already raised, so that a flood of refusals
    queues one alert, not one per request. Holds the last alert id per budget (bounded by the
    number of budgets); the KV marks de-duplicate across restarts and leaders."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], str] = {}

    def first(self, crossing: Crossing) -> bool:
        """True the first time this budget refuses in this period and at this cap."""
        key = (crossing.budget.scope_label, crossing.budget.period)
        this = alert_id(crossing)
        if self._last.get(key) == this:
            return False
        self._last[key] = this
        return True


def alert_id(crossing: Crossing) -> str:
    """One alert per budget, period, cap and threshold (or kind `refusing`): the de-duplication
    key (a KV key too). The cap is part of it so that a changed cap alerts afresh."""
    b = crossing.budget
    cap = format_usd(b.cap_usd).replace(".", "_")
    what = REFUSING if crossing.kind == REFUSING else str(crossing.threshold_pct)
    return f"alert.{b.scope}.{b.scope_id}.{b.period}.{crossing.period_start}.{cap}.{what}"


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
        kind=crossing.kind,
        reserved_usd=format_usd(crossing.reserved) if crossing.kind == REFUSING else "",
        refused_usd=format_usd(crossing.refused) if crossing.kind == REFUSING else "",
    )


def alert_message(alert: events_pb2.BudgetAlert) -> str:
    """The alert in one line, for people (the webhook body's `message`, the log)."""
    scope = f"{alert.scope_kind}:{alert.scope_id}"
    if alert.kind == REFUSING:
        return (
            f"{REFUSING_MESSAGE}: {scope} has a {alert.period} cap of {alert.cap_usd} USD "
            f"({alert.period_start}); spent {alert.spent_usd}, reserved {alert.reserved_usd}, "
            f"a request of up to {alert.refused_usd} USD did not fit"
        )
    return (
        f"{scope} reached {alert.threshold_pct}% of its {alert.period} cap of {alert.cap_usd} USD "
        f"({alert.period_start}): spent {alert.spent_usd}"
    )


def webhook_body(alert: events_pb2.BudgetAlert, alert_key: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "budget.alert",
        "id": alert_key,
        "kind": alert.kind or THRESHOLD,
        "message": alert_message(alert),
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
    if alert.kind == REFUSING:
        body["reserved_usd"] = alert.reserved_usd
        body["refused_usd"] = alert.refused_usd
    return body


def retry_delays(attempts: int, first_s: float = 0.5, max_s: float = 30.0) -> list[float]:
    """Waits between webhook attempts: exponential, capped."""
    return [min(first_s * 2**i, max_s) for i in range(max(attempts - 1, 0))]
