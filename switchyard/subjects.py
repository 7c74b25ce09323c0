"""NATS subject and stream names: the bus contract every service agrees on (DESIGN.md)."""

from __future__ import annotations

INVOKE = "llm.invoke"  # ingress -> router, queue group "router"
ROUTER_QUEUE = "router"
BUDGET_AUTHORIZE = "budget.authorize"  # router -> budget, queue group "budget"
BUDGET_QUEUE = "budget"
PROVIDER_STATS = "stats.provider"  # worker -> every router (fan-out, no queue group)
LEDGER_QUERY = "ledger.query"  # anyone -> ledger (reads of the embedded store)
LEDGER_FEED = "ledger.feed"  # ledger -> every dashboard: requests just stored (core fan-out, JSON)
BUDGET_CAPS = "budget.caps"  # dashboard -> budget authority: the configured caps (JSON reply)
CANCEL_PREFIX = "llm.cancel"  # ingress -> worker: the client went away

EVENTS_STREAM = "EVENTS"
EVENTS_SUBJECTS = ["events.>"]
COMPLETION = "events.completion"
BUDGET_ALERT = "events.budget.alert"
LEDGER_DURABLE = "ledger"
BUDGET_DURABLE = "budget"


def provider_invoke(provider: str) -> str:
    """The subject a provider's worker pool listens on."""
    return f"provider.{provider}.invoke"


def provider_queue(provider: str) -> str:
    return f"provider.{provider}"


def cancel(request_id: str) -> str:
    return f"{CANCEL_PREFIX}.{request_id}"
