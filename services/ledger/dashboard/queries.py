"""The dashboard's SQL and the pure shaping of its results. Spend and counts come from the
per-minute rollups; latency percentiles and failover rates from the raw rows (FINAL)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

# window -> (how far back, chart step in minutes)
WINDOWS: dict[str, tuple[timedelta, int]] = {
    "1h": (timedelta(hours=1), 1),
    "24h": (timedelta(hours=24), 15),
    "7d": (timedelta(days=7), 120),
}

SPEND_OVER_TIME = """
SELECT toStartOfInterval(minute, toIntervalMinute({step:UInt32})) AS t, project_id,
       sum(cost_usd) AS cost_usd, sum(requests) AS requests, sum(errors) + sum(rejected) AS errors
FROM requests_by_minute
WHERE minute >= {since:DateTime('UTC')}
GROUP BY t, project_id
ORDER BY t, project_id
"""

TOTALS = """
SELECT sum(requests) AS requests, sum(ok) AS ok, sum(errors) AS errors, sum(rejected) AS rejected,
       sum(failovers) AS failovers, sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens, sum(cached_tokens) AS cached_tokens,
       sum(cache_write_tokens) AS cache_write_tokens, sum(cache_write_1h_tokens) AS cache_write_1h_tokens,
       sum(reasoning_tokens) AS reasoning_tokens,
       sum(cost_usd) AS cost_usd, sum(latency_ms_sum) AS latency_ms_total
FROM requests_by_minute
WHERE minute >= {since:DateTime('UTC')}
"""

BY_PROJECT = """
SELECT project_id, sum(requests) AS requests, sum(prompt_tokens + completion_tokens) AS tokens,
       sum(cost_usd) AS cost_usd
FROM requests_by_minute
WHERE minute >= {since:DateTime('UTC')}
GROUP BY project_id
ORDER BY cost_usd DESC, requests DESC
LIMIT 20
"""

BY_MODEL = """
SELECT provider, model, sum(requests) AS requests, sum(errors) AS errors,
       sum(prompt_tokens + completion_tokens) AS tokens, sum(cost_usd) AS cost_usd,
       sum(latency_ms_sum) AS latency_ms_total
FROM requests_by_minute
WHERE minute >= {since:DateTime('UTC')} AND provider != ''
GROUP BY provider, model
ORDER BY cost_usd DESC, requests DESC
LIMIT 20
"""

PROVIDERS = """
SELECT provider, count() AS attempts, countIf(status = 'error') AS errors,
       countIf(failed_over) AS failovers,
       quantilesIf(0.5, 0.95, 0.99)(latency_ms, status = 'ok') AS latency_ms
FROM attempts FINAL
WHERE ts >= {since:DateTime64(3, 'UTC')}
GROUP BY provider
ORDER BY attempts DESC
"""

# Hedged requests (docs/routing.md): how many requests raced a hedge, how often the hedge won,
# and what the cancelled losers (status cancelled, no error code) were billed.
HEDGING = """
SELECT uniqExact(request_id) AS requests, countIf(hedge) AS hedges_fired,
       countIf(hedge AND status = 'ok') AS hedges_won,
       toDecimal128(sumIf(cost_usd, status = 'cancelled' AND error_code = ''), 10) AS loser_cost_usd,
       toDecimal128(sum(cost_usd), 10) AS total_cost_usd  -- not `cost_usd`: the alias would shadow the column
FROM attempts FINAL
WHERE ts >= {since:DateTime64(3, 'UTC')}
"""

RECENT = """
SELECT request_id, finished_at, project_id, agent_id, route, requested_model, provider, model, status,
       error_code, prompt_tokens, completion_tokens, cost_usd, latency_ms, ttft_ms,
       attempt_count AS attempts, stream, trace_id
FROM requests FINAL
WHERE ts >= now64(3) - INTERVAL 1 DAY
ORDER BY finished_at DESC
LIMIT {limit:UInt32}
"""

REQUEST = "SELECT * FROM requests FINAL WHERE request_id = {id:String}"
ATTEMPTS = "SELECT * FROM attempts FINAL WHERE request_id = {id:String} ORDER BY attempt_no"


def window_bounds(window: str, now: datetime) -> tuple[datetime, int]:
    """(start, step minutes) of a window; the start is aligned to the step. KeyError if unknown."""
    span, step = WINDOWS[window]
    since = (now - span).astimezone(UTC).replace(second=0, microsecond=0)
    epoch_minutes = int(since.timestamp() // 60)
    since -= timedelta(minutes=epoch_minutes % step)
    return since, step


def jsonable(value: Any) -> Any:
    """Values as the browser wants them: exact decimals as text, times as unix ms, no NaN."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value else "0"
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return int(value.timestamp() * 1000)
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else round(value, 3)
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value


def records(columns: list[str], rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    return [{c: jsonable(v) for c, v in zip(columns, row, strict=True)} for row in rows]


def pivot_series(rows: list[dict[str, Any]], since: datetime, now: datetime, step: int) -> dict[str, Any]:
    """Rollup rows (t, project_id, cost_usd, requests, errors) -> aligned chart columns.

    Every step of the window gets a point (zero when nothing happened), so charts show gaps
    as zero rather than joining distant points.
    """
    start_ms = int(since.timestamp() * 1000)
    step_ms = step * 60_000
    count = max(1, int((now.timestamp() * 1000 - start_ms) // step_ms) + 1)
    times = [start_ms + i * step_ms for i in range(count)]
    projects = sorted({row["project_id"] for row in rows})
    cost = {p: [0.0] * count for p in projects}
    requests, errors = [0] * count, [0] * count
    for row in rows:
        i = (row["t"] - start_ms) // step_ms
        if 0 <= i < count:
            cost[row["project_id"]][i] += float(row["cost_usd"])
            requests[i] += int(row["requests"])
            errors[i] += int(row["errors"])
    return {
        "t": [t // 1000 for t in times],
        "projects": [{"project_id": p, "cost_usd": cost[p]} for p in projects],
        "requests": requests,
        "errors": errors,
    }


def with_average_latency(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Adds avg_latency_ms = latency_ms_total / requests (None when there were none)."""
    for row in rows:
        requests = int(row.get("requests") or 0)
        total = row.pop("latency_ms_total", None) or 0
        row["avg_latency_ms"] = round(float(total) / requests, 3) if requests else None
    return rows


def provider_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Attempts per provider -> rates and percentiles (None when nothing succeeded)."""
    out = []
    for row in rows:
        attempts = int(row["attempts"]) or 1
        p50, p95, p99 = [*row["latency_ms"], None, None, None][:3]
        out.append(
            {
                "provider": row["provider"],
                "attempts": int(row["attempts"]),
                "errors": int(row["errors"]),
                "failovers": int(row["failovers"]),
                "error_rate": round(int(row["errors"]) / attempts, 4),
                "failover_rate": round(int(row["failovers"]) / attempts, 4),
                "p50_ms": p50,
                "p95_ms": p95,
                "p99_ms": p99,
            }
        )
    return out


def hedging_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The hedge rate (hedges / requests) and what hedging cost, as a share of all spend too."""
    row = rows[0] if rows else {}
    requests = int(row.get("requests") or 0)
    fired = int(row.get("hedges_fired") or 0)
    loser_cost = float(row.get("loser_cost_usd") or 0)
    cost = float(row.get("total_cost_usd") or 0)
    return {
        "requests": requests,
        "hedges_fired": fired,
        "hedges_won": int(row.get("hedges_won") or 0),
        "hedge_rate": round(fired / requests, 4) if requests else 0.0,
        "loser_cost_usd": loser_cost,
        "cost_share": round(loser_cost / cost, 4) if cost else 0.0,
    }


# Provider quotas (docs/quotas.md): the latest sample per deployment in the window, and its
# lowest headroom there. granted/refused count since the budget authority (re)started.
QUOTAS = """
SELECT deployment_id,
       max(ts) AS sampled_at,
       argMax(rpm_limit, ts) AS rpm, argMax(requests_available, ts) AS rpm_left,
       argMax(tpm_limit, ts) AS tpm, argMax(tokens_available, ts) AS tpm_left,
       argMax(input_tpm_limit, ts) AS input_tpm, argMax(input_tokens_available, ts) AS input_tpm_left,
       argMax(output_tpm_limit, ts) AS output_tpm, argMax(output_tokens_available, ts) AS output_tpm_left,
       argMax(max_concurrent, ts) AS concurrency, argMax(concurrent, ts) AS in_flight,
       argMax(headroom, ts) AS headroom_now, min(headroom) AS headroom_min,
       argMax(granted, ts) AS granted_total, argMax(refused, ts) AS refused_total
FROM quota_usage FINAL
WHERE ts >= {since:DateTime('UTC')}
GROUP BY deployment_id
ORDER BY deployment_id
"""

# (label, limit column, what is left column) of each limit a deployment may declare.
QUOTA_LIMITS = (
    ("requests / min", "rpm", "rpm_left"),
    ("tokens / min", "tpm", "tpm_left"),
    ("input tokens / min", "input_tpm", "input_tpm_left"),
    ("output tokens / min", "output_tpm", "output_tpm_left"),
)


def quota_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per deployment: each declared limit with how much of it is in use (0..100 %),
    concurrency, headroom now and at its lowest in the window, granted and refused."""
    out = []
    for row in rows:
        limits = []
        for label, limit_col, left_col in QUOTA_LIMITS:
            limit = float(row.get(limit_col) or 0)
            if limit > 0:
                left = min(max(float(row.get(left_col) or 0), 0.0), limit)
                limits.append(
                    {"limit": label, "of": int(limit), "used_pct": round((1 - left / limit) * 100, 1)}
                )
        concurrency = int(row.get("concurrency") or 0)
        if concurrency:
            in_flight = int(row.get("in_flight") or 0)
            limits.append(
                {
                    "limit": "in flight",
                    "of": concurrency,
                    "used_pct": round(min(in_flight / concurrency, 1) * 100, 1),
                }
            )
        out.append(
            {
                "deployment": row["deployment_id"],
                "sampled_at": jsonable(row.get("sampled_at")),
                "limits": limits,
                "headroom": round(float(row.get("headroom_now") or 0), 4),
                "min_headroom": round(float(row.get("headroom_min") or 0), 4),
                "granted": int(row.get("granted_total") or 0),
                "refused": int(row.get("refused_total") or 0),
            }
        )
    return out


# Budget alerts (docs/observability.md): the latest first, as the budget authority sent them.
ALERTS = """
SELECT alert_id, ts, kind, scope_kind, scope_id, project_id, period, period_start, threshold_pct,
       cap_usd, spent_usd, reserved_usd, refused_count, window_s, rate_usd_per_hour, projected_at, message
FROM budget_alerts FINAL
WHERE ts >= {since:DateTime('UTC')}
ORDER BY ts DESC
LIMIT 200
"""

# Refusals per budget, read back from the refused requests' 402 message ("budget exceeded:
# project:acme has a day cap of 10 USD (2026-11-24); ..."): a `refusing` alert is sent once, at
# the first refusal; this is how many followed it.
REFUSALS = """
SELECT extract(error_message, '^budget exceeded: (\\\\S+) has a ') AS scope,
       extract(error_message, ' has a (\\\\w+) cap of ') AS period,
       extract(error_message, ' USD \\\\(([^)]*)\\\\); spent') AS period_start,
       count() AS refused
FROM requests FINAL
WHERE ts >= {since:DateTime('UTC')} AND status = 'rejected' AND error_code = 'budget_exceeded'
GROUP BY scope, period, period_start
"""


def alert_rows(alerts: list[dict[str, Any]], refusals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Alerts with, for each `refusing` one, how many requests its budget has refused in its
    period so far (the ledger's count, at least the count the alert was sent with)."""
    counted = {(r["scope"], r["period"], r["period_start"]): int(r["refused"]) for r in refusals}
    out = []
    for alert in alerts:
        row = dict(alert)
        row["scope"] = f"{alert['scope_kind']}:{alert['scope_id']}"
        if alert["kind"] == "refusing":
            seen = counted.get((row["scope"], alert["period"], alert["period_start"]), 0)
            row["refused_count"] = max(int(alert.get("refused_count") or 0), seen)
        out.append(row)
    return out
