"""Budget alerts: which thresholds a change crossed, when a refusal is news, the event, the
webhook body. Pure.

Three kinds: `threshold` (settled spend crossed a percentage of the cap), `refusing` (the cap
refused a request for the first time in its period) and `burn_rate` (at the recent spend rate
the cap runs out before its period ends: switchyard/burn.py, services/budget/burn_watch.py).
A cap can start refusing well under 100 % (spent + held + the next reservation no longer fit),
so thresholds alone can stay silent while a scope is down; the `refusing` alert says so at the
first refusal, and the `burn_rate` alert before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from switchyard import units
from switchyard.burn import BurnAlert, clock_text, window_label
from switchyard.pricing import format_usd
from switchyard.tenancy import Budget
from switchyard.v1 import events_pb2

HUNDRED = Decimal(100)
THRESHOLD = "threshold"
REFUSING = "refusing"
BURN_RATE = "burn_rate"
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
    burn: BurnAlert | None = None  # BURN_RATE: the rates and the projection


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
        self._count: dict[tuple[str, str], int] = {}

    def first(self, crossing: Crossing) -> bool:
        """True the first time this budget refuses in this period and at this cap (every call
        is a refusal: counted, for the alert's `refused_count`)."""
        key = (crossing.budget.scope_label, crossing.budget.period)
        this = alert_id(crossing)
        if self._last.get(key) == this:
            self._count[key] = self._count.get(key, 0) + 1
            return False
        self._last[key] = this
        self._count[key] = 1
        return True

    def count(self, crossing: Crossing) -> int:
        """Refusals of this budget in the period (and at the cap) of its latest refusing alert."""
        key = (crossing.budget.scope_label, crossing.budget.period)
        return self._count.get(key, 0) if self._last.get(key) == alert_id(crossing) else 0


def alert_id(crossing: Crossing) -> str:
    """One alert per budget, period, cap and threshold (or kind `refusing`): the de-duplication
    key (a KV key too). The cap is part of it so that a changed cap alerts afresh."""
    b = crossing.budget
    cap = format_usd(b.cap_usd).replace(".", "_")
    what = crossing.kind if crossing.kind in (REFUSING, BURN_RATE) else str(crossing.threshold_pct)
    return f"alert.{b.scope}.{b.scope_id}.{b.period}.{crossing.period_start}.{cap}.{what}"


def alert_event(crossing: Crossing, now_ms: int, refused_count: int = 0) -> events_pb2.BudgetAlert:
    b = crossing.budget
    event = events_pb2.BudgetAlert(
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
        reserved_usd=format_usd(crossing.reserved) if crossing.kind in (REFUSING, BURN_RATE) else "",
        refused_usd=format_usd(crossing.refused) if crossing.kind == REFUSING else "",
        refused_count=max(refused_count, 1) if crossing.kind == REFUSING else 0,
    )
    burn = crossing.burn
    if crossing.kind == BURN_RATE and burn is not None:
        event.window_ms = round(units.ms(burn.short.rate.window_s))
        event.rate_usd_per_hour = format_usd(burn.short.rate.usd_per_hour)
        event.projected_unix_ms = burn.short.exhausted_unix_ms or 0
        event.long_window_ms = round(units.ms(burn.long.rate.window_s))
        event.long_rate_usd_per_hour = format_usd(burn.long.rate.usd_per_hour)
        event.period_end_unix_ms = burn.period_end_ms or 0
    event.message = alert_message(event)
    return event


def alert_message(alert: events_pb2.BudgetAlert) -> str:
    """The alert in one line, for people (the webhook body's `message`, the log)."""
    scope = f"{alert.scope_kind}:{alert.scope_id}"
    if alert.kind == REFUSING:
        count = alert.refused_count or 1
        return (
            f"{REFUSING_MESSAGE}: {scope} has a {alert.period} cap of {alert.cap_usd} USD "
            f"({alert.period_start}); spent {alert.spent_usd}, reserved {alert.reserved_usd}, "
            f"a request of up to {alert.refused_usd} USD did not fit; {count} refused so far"
        )
    if alert.kind == BURN_RATE:
        return (
            f"{scope}: at the last {window_label(units.seconds(alert.window_ms))}'s rate ({alert.rate_usd_per_hour} USD/h) "
            f"the {alert.period} cap of {alert.cap_usd} USD is reached at "
            f"{clock_text(alert.projected_unix_ms, alert.ts_unix_ms)} ({alert.period_start}); "
            f"spent {alert.spent_usd}, reserved {alert.reserved_usd}; the last "
            f"{window_label(units.seconds(alert.long_window_ms))}'s rate is {alert.long_rate_usd_per_hour} USD/h"
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
        body["refused_count"] = alert.refused_count
    if alert.kind == BURN_RATE:
        body["reserved_usd"] = alert.reserved_usd
        body["window_s"] = units.seconds(alert.window_ms)
        body["rate_usd_per_hour"] = alert.rate_usd_per_hour
        body["long_window_s"] = units.seconds(alert.long_window_ms)
        body["long_rate_usd_per_hour"] = alert.long_rate_usd_per_hour
        body["projected_unix_ms"] = alert.projected_unix_ms
        body["period_end_unix_ms"] = alert.period_end_unix_ms
    return body


def retry_delays(attempts: int, first_s: float = 0.5, max_s: float = 30.0) -> list[float]:
    """Waits between webhook attempts: exponential, capped."""
    return [min(first_s * 2**i, max_s) for i in range(max(attempts - 1, 0))]
