"""One project's usage, as `GET /v1/usage`, `switchyard usage` and the dashboard show it. Pure.

Two sources, each for what it knows best: the budget authority's live counters (`budget.status`:
spend and holds per scope and period, the caps) and the ledger's sums (`ledger.read.usage`: spend
within the burn-rate windows, and the roll-up per agent and run). Spend and headroom are the
authority's (what the caps enforce); rates are the ledger's (docs/budgets.md, "Self-service
usage"). A scope the authority does not count (no request since it started) shows the ledger's
spend.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from switchyard.burn import clock_text, period_end_ms, period_start_ms, project, rates_from_sums
from switchyard.pricing import format_usd
from switchyard.v1 import ledger_pb2

PERIODS = ("day", "month", "total")
ZERO = Decimal(0)


def usage_query(
    project_id: str, short_s: float, long_s: float, now_ms: int, rollup: str = "month"
) -> ledger_pb2.UsageQuery:
    """The ledger read for a report at `now_ms`; `rollup` is the period the per-agent and
    per-run roll-ups cover (day, month or total)."""
    if rollup not in PERIODS:
        raise ValueError(f"period must be one of {', '.join(PERIODS)}")
    return ledger_pb2.UsageQuery(
        project_id=project_id,
        day_start_unix_ms=period_start_ms("day", now_ms) or 0,
        month_start_unix_ms=period_start_ms("month", now_ms) or 0,
        short_since_unix_ms=now_ms - round(short_s * 1000),
        long_since_unix_ms=now_ms - round(long_s * 1000),
        since_unix_ms=period_start_ms(rollup, now_ms) or 0,
    )


def _usd(text: Any) -> Decimal:
    try:
        value = Decimal(str(text or "0"))
    except InvalidOperation:
        return ZERO
    return value if value.is_finite() else ZERO


@dataclass
class _Sums:
    day: Decimal = ZERO
    month: Decimal = ZERO
    total: Decimal = ZERO
    short: Decimal = ZERO
    long: Decimal = ZERO

    def add(self, row: ledger_pb2.ScopeUsage) -> None:
        self.day += _usd(row.day_usd)
        self.month += _usd(row.month_usd)
        self.total += _usd(row.total_usd)
        self.short += _usd(row.short_usd)
        self.long += _usd(row.long_usd)

    def period(self, period: str) -> Decimal:
        return {"day": self.day, "month": self.month, "total": self.total}[period]


def ledger_scopes(project_id: str, rows: Iterable[ledger_pb2.ScopeUsage]) -> dict[str, _Sums]:
    """The ledger's sums per budget scope: the project (every row), each agent, each key."""
    out: dict[str, _Sums] = {f"project:{project_id}": _Sums()}
    for row in rows:
        labels = [f"project:{project_id}"]
        if row.agent_id:
            labels.append(f"agent:{project_id}/{row.agent_id}")
        if row.key_id:
            labels.append(f"key:{row.key_id}")
        for label in labels:
            out.setdefault(label, _Sums()).add(row)
    return out


def _rate_json(rate: Any) -> dict[str, Any]:
    return {"window_s": rate.window_s, "usd_per_hour": format_usd(rate.usd_per_hour)}


def usage_report(
    project_id: str,
    status: dict[str, Any],
    ledger: ledger_pb2.UsageReply,
    short_s: float,
    long_s: float,
    now_ms: int,
) -> dict[str, Any]:
    """The report: per scope its spend per period, burn rates and, per cap, the headroom and
    when at the short window's rate it runs out; per agent and run the roll-up."""
    sums = ledger_scopes(project_id, ledger.scopes)
    live = {entry["scope"]: entry for entry in status.get("scopes") or []}
    scopes = []
    for label in sorted(set(sums) | set(live)):
        ledger_sums = sums.get(label, _Sums())
        entry = live.get(label, {})
        periods = {}
        for period in PERIODS:
            counted = (entry.get("periods") or {}).get(period)
            periods[period] = {
                "spent_usd": counted["spent_usd"] if counted else format_usd(ledger_sums.period(period)),
                "reserved_usd": counted["reserved_usd"] if counted else "0",
            }
        windows = [(short_s, ledger_sums.short), (long_s, ledger_sums.long)]
        short, long = rates_from_sums(windows, now_ms, "total", ledger_sums.total)
        budgets = []
        for budget in entry.get("budgets") or []:
            period = budget["period"]
            cap, spent, held = (
                _usd(budget["cap_usd"]),
                _usd(budget["spent_usd"]),
                _usd(budget["reserved_usd"]),
            )
            b_short, b_long = rates_from_sums(windows, now_ms, period, ledger_sums.period(period))
            projection = project(cap - spent - held, b_short, now_ms)
            end = period_end_ms(period, now_ms)
            at = projection.exhausted_unix_ms
            budgets.append(
                {
                    "period": period,
                    "cap_usd": budget["cap_usd"],
                    "spent_usd": budget["spent_usd"],
                    "reserved_usd": budget["reserved_usd"],
                    "headroom_usd": format_usd(max(cap - spent - held, ZERO)),
                    "used_pct": budget.get("used_pct"),
                    "burn": {"short": _rate_json(b_short), "long": _rate_json(b_long)},
                    # When the headroom runs out at the short window's rate (null: not spending).
                    "projected_exhaustion_unix_ms": at,
                    "projected_exhaustion": clock_text(at, now_ms) if at is not None else None,
                    "before_period_end": at is not None and (end is None or at < end),
                    "period_end_unix_ms": end,
                }
            )
        scopes.append(
            {
                "scope": label,
                "periods": periods,
                "burn": {"short": _rate_json(short), "long": _rate_json(long)},
                "budgets": budgets,
            }
        )
    agents, runs = rollups(ledger.agents)
    return {
        "object": "usage",
        "project": project_id,
        "now_unix_ms": now_ms,
        "scopes": scopes,
        "agents": agents,
        "runs": runs,
    }


def _rollup(row: ledger_pb2.AgentUsage) -> dict[str, Any]:
    return {
        "requests": row.requests,
        "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens,
        "cost_usd": _usd(row.cost_usd),
        "first_unix_ms": row.first_unix_ms,
        "last_unix_ms": row.last_unix_ms,
    }


def rollups(rows: Iterable[ledger_pb2.AgentUsage]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per agent (its runs summed, `runs` counted) and per run, dearest first."""
    agents: dict[str, dict[str, Any]] = {}
    runs = []
    for row in rows:
        if row.run_id:
            runs.append({"run_id": row.run_id, "agent": row.agent, **_rollup(row)})
        if not row.agent:
            continue
        mine = _rollup(row)
        seen = agents.get(row.agent)
        if seen is None:
            agents[row.agent] = {"agent": row.agent, **mine, "runs": 1 if row.run_id else 0}
            continue
        for field in ("requests", "prompt_tokens", "completion_tokens", "cost_usd"):
            seen[field] += mine[field]
        seen["first_unix_ms"] = min(seen["first_unix_ms"], mine["first_unix_ms"])
        seen["last_unix_ms"] = max(seen["last_unix_ms"], mine["last_unix_ms"])
        seen["runs"] += 1 if row.run_id else 0

    def ordered(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        items.sort(key=lambda item: item["cost_usd"], reverse=True)
        for item in items:
            item["cost_usd"] = format_usd(item["cost_usd"])
        return items

    return ordered(list(agents.values())), ordered(runs)
