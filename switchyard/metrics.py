"""Prometheus metrics shared by every service (served on /metrics by the ops server or the
ingress app). One family per quantity, labelled by `service`, so a dashboard sums across
processes and filters by service the same way everywhere.

Kept to bounded label sets: no request ids, no user text. `project` is on the cost counter
because spend per project is the question finance asks; projects are few (tenants, not users).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

from prometheus_client import Counter, Gauge, Histogram

from switchyard.vocab import Status

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

REQUESTS = Counter(
    "switchyard_requests_total",
    "Requests (or messages) handled, by service and outcome",
    ["service", "status"],
)
ERRORS = Counter("switchyard_errors_total", "Errors by service and neutral error code", ["service", "code"])
DURATION = Histogram(
    "switchyard_request_duration_seconds",
    "Time a service spent on one request (or message)",
    ["service"],
    buckets=LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge("switchyard_in_flight_requests", "Requests being handled right now", ["service"])

UPSTREAM_DURATION = Histogram(
    "switchyard_upstream_duration_seconds",
    "One upstream call (attempt) by provider, model and outcome",
    ["provider", "model", "status"],
    buckets=LATENCY_BUCKETS,
)
TOKENS = Counter(
    "switchyard_tokens_total", "Tokens by provider, model and kind (prompt|completion|cached)",
    ["provider", "model", "kind"],
)  # fmt: skip
COST = Counter(
    "switchyard_cost_usd_total",
    "Spend in USD by project, provider and model",
    ["project", "provider", "model"],
)
# Requests a router or worker dropped before any upstream call (switchyard/deadlines.py):
# reason "deadline" (it passed while the request waited) or "client_gone" (the caller left).
SKIPPED = Counter(
    "switchyard_requests_skipped_total",
    "Requests dropped before any upstream call: deadline passed or client gone",
    ["service", "reason"],
)
FAILOVERS = Counter(
    "switchyard_failovers_total", "Attempts that failed over to the next deployment", ["provider"]
)

LEDGER_LAG = Gauge(
    "switchyard_ledger_consumer_lag",
    "Completion events in the stream not yet delivered to the ledger consumer",
)
LEDGER_ACK_PENDING = Gauge(
    "switchyard_ledger_ack_pending", "Completion events delivered to the ledger but not yet acknowledged"
)
# Hedged requests (docs/routing.md): hedges started, hedges whose answer the client got, and
# what the racers that lost were billed.
HEDGES_FIRED = Counter("switchyard_hedges_fired_total", "Hedge attempts started", ["route"])
HEDGES_WON = Counter("switchyard_hedges_won_total", "Hedge attempts that delivered first", ["route"])
HEDGE_LOSER_COST = Counter(
    "switchyard_hedge_loser_cost_usd_total", "USD billed for cancelled hedge-race losers", ["route"]
)
LEDGER_ROWS = Counter("switchyard_ledger_rows_inserted_total", "Rows inserted into the ledger", ["table"])
LEDGER_REPLAYS = Counter(
    "switchyard_ledger_replays_dropped_total", "Completion events dropped as already stored (replays)"
)
LEDGER_BATCH = Histogram(
    "switchyard_ledger_batch_events",
    "Events per ledger batch",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 5000),
)
LEDGER_INSERT = Histogram(
    "switchyard_ledger_insert_seconds", "Time to insert one batch into ClickHouse", buckets=LATENCY_BUCKETS
)
DASHBOARD_CLIENTS = Gauge("switchyard_dashboard_live_clients", "Browsers connected to the live feed")


@contextmanager
def track(service: str) -> Iterator[dict[str, str]]:
    """Count one request: in-flight while inside, then duration and outcome.

    The caller sets `outcome["status"]` (default "ok"); an exception counts as "error".
    """
    outcome: dict[str, str] = {"status": Status.OK}
    IN_FLIGHT.labels(service).inc()
    started = time.perf_counter()
    try:
        yield outcome
    except BaseException:
        outcome["status"] = Status.ERROR
        raise
    finally:
        IN_FLIGHT.labels(service).dec()
        DURATION.labels(service).observe(time.perf_counter() - started)
        REQUESTS.labels(service, outcome["status"]).inc()
        if outcome["status"] != Status.OK:
            ERRORS.labels(service, outcome["status"]).inc()


def record_usage(
    project: str, provider: str, model: str, prompt: int, completion: int, cached: int, cost: Decimal
) -> None:
    TOKENS.labels(provider, model, "prompt").inc(prompt)
    TOKENS.labels(provider, model, "completion").inc(completion)
    TOKENS.labels(provider, model, "cached").inc(cached)
    COST.labels(project or "default", provider, model).inc(float(cost))
