"""Completion event -> ledger rows. Pure: tested without a database."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from switchyard import ledger_json
from switchyard.downgrades import saved_usd
from switchyard.v1 import events_pb2, invoke_pb2
from switchyard.vocab import finish_reason_text, status_text

REQUEST_COLUMNS = [
    "request_id", "ts", "finished_at", "project_id", "agent_id", "key_id", "api", "route",
    "requested_model", "planned_provider", "planned_model", "planned_deployment_id", "provider",
    "model", "deployment_id", "status", "error_code", "error_message", "finish_reason", "prompt_tokens", "completion_tokens", "cached_tokens",
    "cache_write_tokens", "cache_write_1h_tokens", "reasoning_tokens", "cost_usd", "latency_ms", "ttft_ms", "overhead_ms", "stream", "attempt_count", "failovers",
    "attempts", "rationale", "trace_id", "metadata", "reservation_id", "cache_hit", "cost_saved_usd", "downgrade_saved_usd",
]  # fmt: skip

ATTEMPT_COLUMNS = [
    "request_id", "attempt_no", "ts", "project_id", "agent_id", "deployment_id", "provider", "model",
    "status", "error_code", "error_message", "http_status", "latency_ms", "ttft_ms", "failed_over",
    "hedge", "cost_usd", "prompt_tokens", "completion_tokens", "cached_tokens", "trace_id",
]  # fmt: skip


def _ts(unix_ms: int | float) -> datetime:
    return datetime.fromtimestamp(unix_ms / 1000.0, tz=UTC)


def planned_target(event: events_pb2.Completion) -> tuple[str, str, str]:
    """The router's first choice (provider, model, deployment): the first attempt, else the
    rationale's winner among its candidates. Empty for requests refused before routing."""
    if event.attempts:
        first = event.attempts[0]
        return first.provider, first.model, first.deployment_id
    for candidate in event.rationale.candidates:
        if candidate.deployment_id == event.rationale.winner:
            return candidate.provider, candidate.model, candidate.deployment_id
    return "", "", event.rationale.winner


def in_column_order(record: dict[str, Any], columns: list[str]) -> list[Any]:
    """The record's values in the table's column order, looked up by name: a column added to
    the list but not to the record (or the other way round) fails here, never shifts a value."""
    missing = [c for c in columns if c not in record]
    extra = sorted(set(record) - set(columns))
    if missing or extra:
        raise ValueError(f"ledger row does not match its columns: missing {missing}, unexpected {extra}")
    return [record[column] for column in columns]


def request_record(event: events_pb2.Completion) -> dict[str, Any]:
    """The `requests` row of a completion, by column name."""
    attempts = [ledger_json.attempt_json(a) for a in event.attempts]
    planned_provider, planned_model, planned_deployment = planned_target(event)
    return {
        "request_id": event.request_id,
        "ts": _ts(event.started_unix_ms),
        "finished_at": _ts(event.finished_unix_ms or event.started_unix_ms),
        "project_id": event.project_id,
        "agent_id": event.agent_id,
        "key_id": event.key_id,
        "api": event.api,
        "route": event.route,
        "requested_model": event.requested_model,
        "planned_provider": planned_provider,
        "planned_model": planned_model,
        "planned_deployment_id": planned_deployment,
        "provider": event.provider,
        "model": event.model,
        "deployment_id": event.deployment_id,
        "status": status_text(event.status),
        "error_code": event.error_code,
        "error_message": event.error_message,
        "finish_reason": finish_reason_text(event.finish_reason),
        "prompt_tokens": event.usage.prompt_tokens,
        "completion_tokens": event.usage.completion_tokens,
        "cached_tokens": event.usage.cached_tokens,
        "cache_write_tokens": event.usage.cache_write_tokens,
        "cache_write_1h_tokens": event.usage.cache_write_1h_tokens,
        "reasoning_tokens": event.usage.reasoning_tokens,
        "cost_usd": Decimal(event.cost_usd or "0"),
        "latency_ms": event.latency_ms,
        "ttft_ms": event.ttft_ms,
        "overhead_ms": event.overhead_ms,
        "stream": event.stream,
        "attempt_count": len(event.attempts),
        "failovers": max(len(event.attempts) - 1, 0),
        "attempts": orjson.dumps(attempts).decode(),
        "rationale": (
            orjson.dumps(ledger_json.rationale_json(event.rationale)).decode()
            if event.HasField("rationale")
            else "{}"
        ),
        "trace_id": event.trace_id,
        "metadata": dict(event.metadata),
        "reservation_id": event.reservation_id,
        "cache_hit": event.cache_hit,
        "cost_saved_usd": Decimal(event.cost_saved_usd or "0"),
        "downgrade_saved_usd": saved_usd(
            event.rationale, event.deployment_id, Decimal(event.cost_usd or "0")
        ),
    }


def request_row(event: events_pb2.Completion) -> list[Any]:
    return in_column_order(request_record(event), REQUEST_COLUMNS)


def attempt_records(event: events_pb2.Completion) -> list[dict[str, Any]]:
    """The `attempts` rows of a completion, by column name."""
    last = len(event.attempts)
    return [
        {
            "request_id": event.request_id,
            "attempt_no": number,
            "ts": _ts(attempt.started_unix_ms or event.started_unix_ms),
            "project_id": event.project_id,
            "agent_id": event.agent_id,
            "deployment_id": attempt.deployment_id,
            "provider": attempt.provider,
            "model": attempt.model,
            "status": status_text(attempt.status),
            "error_code": attempt.error_code,
            "error_message": attempt.error_message,
            "http_status": attempt.http_status,
            "latency_ms": attempt.latency_ms,
            "ttft_ms": attempt.ttft_ms,
            "failed_over": attempt.status == invoke_pb2.STATUS_ERROR and number < last,
            "hedge": attempt.hedge,
            "cost_usd": Decimal(attempt.cost_usd or "0"),
            "prompt_tokens": attempt.usage.prompt_tokens,
            "completion_tokens": attempt.usage.completion_tokens,
            "cached_tokens": attempt.usage.cached_tokens,
            "trace_id": event.trace_id,
        }
        for number, attempt in enumerate(event.attempts, start=1)
    ]


def attempt_rows(event: events_pb2.Completion) -> list[list[Any]]:
    return [in_column_order(record, ATTEMPT_COLUMNS) for record in attempt_records(event)]


def feed_item(event: events_pb2.Completion) -> dict[str, Any]:
    """The live feed's line for one stored request (small: it is pushed to every browser)."""
    return {
        "request_id": event.request_id,
        "ts": event.finished_unix_ms or event.started_unix_ms,
        "project_id": event.project_id,
        "agent_id": event.agent_id,
        "route": event.route,
        "requested_model": event.requested_model,
        "provider": event.provider,
        "model": event.model,
        "status": status_text(event.status),
        "error_code": event.error_code,
        "prompt_tokens": event.usage.prompt_tokens,
        "completion_tokens": event.usage.completion_tokens,
        "cost_usd": event.cost_usd or "0",
        "latency_ms": round(event.latency_ms, 3),
        "ttft_ms": round(event.ttft_ms, 3),
        "attempts": len(event.attempts),
        "stream": event.stream,
        "trace_id": event.trace_id,
    }
