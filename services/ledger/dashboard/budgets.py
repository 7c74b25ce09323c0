"""Budgets against caps, for the dashboard. Pure: the caps come from the budget authority.

The dashboard asks the authority on `budget.status` (the same answer as GET /admin/v1/spend)
and shows each configured cap with the spend the authority counts against it. When the
authority does not answer, no caps are shown and the dashboard says so. Periods and spend
are the authority's own (services/budget/periods.py); nothing here recounts them.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

SCOPES = ("project", "agent", "key")
PERIODS = ("day", "month", "total")


@dataclass(frozen=True)
class Cap:
    scope_kind: str
    scope_id: str
    period: str
    cap_usd: Decimal
    spent_usd: Decimal


def parse_caps(body: Any) -> list[Cap]:
    """Caps from the authority's reply; malformed entries are skipped, not guessed at."""
    caps = []
    for raw in (body or {}).get("caps") or []:
        try:
            kind, period = str(raw["scope_kind"]), str(raw.get("period", "total"))
            if kind not in SCOPES or period not in PERIODS:
                continue
            cap, spent = Decimal(str(raw["cap_usd"])), Decimal(str(raw["spent_usd"]))
            caps.append(Cap(kind, str(raw["scope_id"]), period, cap, spent))
        except (KeyError, TypeError, InvalidOperation):
            continue
    return caps


def caps_from_status(body: Any) -> dict[str, list[dict[str, Any]]]:
    """The caps in the authority's `budget.status` answer (`{"scopes": [{"scope":
    "project:acme", "budgets": [{"period", "cap_usd", "spent_usd", ...}]}]}`) in the shape
    `parse_caps` reads."""
    caps = []
    for scope in (body or {}).get("scopes") or []:
        kind, _, scope_id = str(scope.get("scope", "")).partition(":")
        for budget in scope.get("budgets") or []:
            caps.append({"scope_kind": kind, "scope_id": scope_id, **budget})
    return {"caps": caps}


def usage_row(cap: Cap, spent: Decimal) -> dict[str, Any]:
    used_pct = float(spent / cap.cap_usd * 100) if cap.cap_usd > 0 else 0.0
    return {
        "scope_kind": cap.scope_kind,
        "scope_id": cap.scope_id,
        "period": cap.period,
        "cap_usd": format(cap.cap_usd, "f"),
        "spent_usd": format(spent.normalize(), "f") if spent else "0",
        "used_pct": round(used_pct, 2),
    }
