"""NATS subject and stream names: the bus contract every service agrees on (DESIGN.md)."""

from __future__ import annotations

INVOKE = "llm.invoke"  # ingress -> router, queue group "router"
# The ingress reports a request it refused itself (a body too large: it never reached the bus)
# as a Completion; a router records it (queue group `router`) as `rejected` at no cost, so the
# ingress never publishes billing events itself (docs/architecture.md, "Large bodies").
INGRESS_REFUSED = "ingress.refused"
ROUTER_QUEUE = "router"
BUDGET_AUTHORIZE = "budget.authorize"  # router -> budget, queue group "budget"
BUDGET_QUEUE = "budget"
BUDGET_PRESSURE = (
    "budget.pressure"  # budget leader -> routers: how full each budgeted scope is (JSON fan-out)
)
# router -> budget leader: renew a budget lease in the background, give leases back (docs/budgets.md)
BUDGET_LEASE = "budget.lease"
# budget leader -> every router (fan-out): a cap or limit changed, give these leases back
BUDGET_LEASE_REVOKE = "budget.lease.revoke"
BUDGET_STATUS = "budget.status"  # anyone -> the budget leader: spend against caps (JSON)
PROVIDER_STATS = (
    "stats.provider"  # worker -> budget authority: rate limits, 429s (one per deployment per interval)
)
PROVIDER_STAT_BATCH = "stats.provider.batch"  # worker -> every router (fan-out): one interval's stats
QUOTA_STATE = "quota.state"  # budget leader -> routers, ledger, dashboard: provider quota use (fan-out)
# Reads of the ledger (it owns the embedded store), protobuf request/reply (ledger.proto):
LEDGER_READ_REQUEST = "ledger.read.request"  # ingress -> ledger: one request's row, in the caller's project
LEDGER_READ_SPEND = "ledger.read.spend"  # budget -> ledger: the rebuild's spend snapshot
LEDGER_READ_USAGE = "ledger.read.usage"  # ingress -> ledger: one project's spend and roll-ups (/v1/usage)
# Free SQL (JSON), only for `switchyard sql` and analysts: admin token in the Authorization
# header, checked by the ledger; run read-only and capped (docs/analyst-sql.md).
LEDGER_SQL = "ledger.sql"
LEDGER_QUERY_QUEUE = "ledger"  # one ledger replica answers each read or query
LEDGER_FEED = "ledger.feed"  # ledger -> every dashboard: requests just stored (core fan-out, JSON)
CANCEL_PREFIX = "llm.cancel"  # ingress -> worker: the client went away
WORKER_BEAT = "workers.beat"  # worker -> every router: the requests it holds (liveness.proto)
HANDOFF_BUSY = b"busy"  # a worker's answer to a hand-off it has no room for (switchyard/handoff.py)

EVENTS_STREAM = "EVENTS"
EVENTS_SUBJECTS = ["events.>"]
COMPLETION = "events.completion"
BUDGET_ALERT = "events.budget.alert"
LEDGER_DURABLE = "ledger"
BUDGET_WEBHOOK_DURABLE = "budget-webhook"
LEDGER_ALERTS_DURABLE = "ledger-alerts"  # the ledger's reader of events.budget.alert (budget_alerts table)
# The budget leader's write-ahead journal of reservations, read back by its successor.
BUDGET_JOURNAL_STREAM = "BUDGET_JOURNAL"
BUDGET_JOURNAL = "budget.journal"
# JetStream KV buckets.
TENANCY_BUCKET = "switchyard_tenancy"  # projects, agents, keys (hashes), budgets
BUDGET_LEASE_BUCKET = "switchyard_budget_lease"  # who is the budget authority
BUDGET_ALERTS_BUCKET = "switchyard_budget_alerts"  # alerts already sent (one per threshold per period)
BUDGET_SNAPSHOT_BUCKET = "switchyard_budget_snapshot"  # the authority's state, for a successor
# What workers inside ingress processes hold, rewritten per beat (services/providers/inflight.py).
INFLIGHT_BUCKET = "switchyard_inflight"
RESPONSE_CACHE_BUCKET = "switchyard_response_cache"  # the response cache's answers (docs/routing.md)
RESPONSES_BUCKET = "switchyard_responses"  # stored Responses API answers, per project, with a TTL


def provider_invoke(provider: str) -> str:
    """The subject a provider's worker pool listens on."""
    return f"provider.{provider}.invoke"


def provider_queue(provider: str) -> str:
    return f"provider.{provider}"


def cancel(request_id: str) -> str:
    return f"{CANCEL_PREFIX}.{request_id}"
