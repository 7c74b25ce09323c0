"""Synthetic completion events for ledger tests, and writing them the way the ledger does."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal

from services.ledger.rows import ATTEMPT_COLUMNS, REQUEST_COLUMNS, attempt_rows, request_row
from services.ledger.store import LedgerStore
from switchyard.v1 import events_pb2, invoke_pb2
from switchyard.vocab import status_value


def completion_event(
    request_id: str,
    *,
    at: datetime,
    project: str = "alpha",
    agent: str = "",
    provider: str = "openai",
    model: str = "gpt-4o-mini",
    status: str = "ok",
    prompt: int = 10,
    completion: int = 20,
    cost: Decimal | str = "0.001",
    latency_ms: float = 100.0,
    failed_first_on: str = "",
    stream: bool = False,
) -> events_pb2.Completion:
    """One request; `failed_first_on` adds a failed first attempt on that provider (a failover)."""
    start_ms = int(at.timestamp() * 1000)
    event = events_pb2.Completion(
        request_id=request_id,
        project_id=project,
        agent_id=agent,
        route="auto",
        requested_model="auto",
        provider=provider if status != "rejected" else "",
        model=model if status != "rejected" else "",
        deployment_id=f"{provider}/{model}" if status != "rejected" else "",
        status=status_value(status),
        error_code="" if status == "ok" else "upstream_error",
        cost_usd=str(cost),
        latency_ms=latency_ms,
        ttft_ms=latency_ms / 2,
        overhead_ms=1.5,
        stream=stream,
        trace_id=f"{random.getrandbits(128):032x}",
        started_unix_ms=start_ms,
        finished_unix_ms=start_ms + int(latency_ms),
        api="native",
    )
    event.usage.prompt_tokens, event.usage.completion_tokens = prompt, completion
    if status == "rejected":
        return event
    if failed_first_on:
        event.attempts.add(
            deployment_id=f"{failed_first_on}/x", provider=failed_first_on, model="x", status=invoke_pb2.STATUS_ERROR,
            error_code="overloaded", http_status=529, latency_ms=5.0, started_unix_ms=start_ms,
        )  # fmt: skip
    event.attempts.add(
        deployment_id=f"{provider}/{model}", provider=provider, model=model,
        status=status_value("ok" if status == "ok" else "error"), latency_ms=latency_ms - 6, started_unix_ms=start_ms + 6,
    )  # fmt: skip
    return event


async def write_events(store: LedgerStore, events: list[events_pb2.Completion]) -> None:
    """Insert as the ledger does (attempts, then requests): the rollup view fires the same way."""
    await store.insert("attempts", [r for e in events for r in attempt_rows(e)], ATTEMPT_COLUMNS)
    await store.insert("requests", [request_row(e) for e in events], REQUEST_COLUMNS)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)
