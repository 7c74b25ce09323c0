"""Completion event -> ledger rows. Pure: tested without a database."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from google.protobuf.json_format import MessageToDict

from switchyard.v1 import events_pb2
from switchyard.vocab import Status

REQUEST_COLUMNS = [
    "request_id", "ts", "finished_at", "project_id", "agent_id", "key_id", "api", "route",
    "requested_model", "planned_provider", "planned_model", "planned_deployment_id", "provider",
    "model", "deployment_id", "status", "error_code", "error_message", "finish_reason", "prompt_tokens", "completion_tokens", "cached_tokens",
    "cost_usd", "latency_ms", "ttft_ms", "overhead_ms", "stream", "attempt_count", "failovers",
    "attempts", "rationale", "trace_id", "metadata", "reservation_id",
]  # fmt: skip

ATTEMPT_COLUMNS = [
    "request_id", "attempt_no", "ts", "project_id", "agent_id", "deployment_id", "provider", "model",
    "status", "error_code", "error_message", "http_status", "latency_ms", "ttft_ms", "failed_over",
    "trace_id",
]  # fmt: skip


def _ts(unix_ms: int | float) -> datetime:
    return datetime.fromtimestamp(unix_ms / 1000.0, tz=UTC)


def _json(message: Any) -> str:
    return orjson.dumps(MessageToDict(message, preserving_proto_field_name=True)).decode()


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


def request_row(event: events_pb2.Completion) -> list[Any]:
    attempts = [MessageToDict(a, preserving_proto_field_name=True) for a in event.attempts]
    planned_provider, planned_model, planned_deployment = planned_target(event)
    return [
        event.request_id,
        _ts(event.started_unix_ms),
        _ts(event.finished_unix_ms or event.started_unix_ms),
        event.project_id,
        event.agent_id,
        event.key_id,
        event.api,
        event.route,
        event.requested_model,
        planned_provider,
        planned_model,
        planned_deployment,
        event.provider,
        event.model,
        event.deployment_id,
        event.status,
        event.error_code,
        event.error_message,
        event.finish_reason,
        event.usage.prompt_tokens,
        event.usage.completion_tokens,
        event.usage.cached_tokens,
        Decimal(event.cost_usd or "0"),
        event.latency_ms,
        event.ttft_ms,
        event.overhead_ms,
        event.stream,
        len(event.attempts),
        max(len(event.attempts) - 1, 0),
        orjson.dumps(attempts).decode(),
        _json(event.rationale) if event.HasField("rationale") else "{}",
        event.trace_id,
        dict(event.metadata),
        event.reservation_id,
    ]


def attempt_rows(event: events_pb2.Completion) -> list[list[Any]]:
    last = len(event.attempts)
    return [
        [
            event.request_id,
            number,
            _ts(attempt.started_unix_ms or event.started_unix_ms),
            event.project_id,
            event.agent_id,
            attempt.deployment_id,
            attempt.provider,
            attempt.model,
            attempt.status,
            attempt.error_code,
            attempt.error_message,
            attempt.http_status,
            attempt.latency_ms,
            attempt.ttft_ms,
            attempt.status == Status.ERROR and number < last,
            event.trace_id,
        ]
        for number, attempt in enumerate(event.attempts, start=1)
    ]


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
        "status": event.status,
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
