"""GET /v1/requests/{id}: the ledger's typed record of one request as the API's JSON.

Column by column as stored (docs/analyst-sql.md lists them), times as ISO-8601 UTC, money as
exact decimal text; the `rationale` in the same shape as the answer's `rationale` (one
renderer, native.rationale_json), the `attempts` as the ledger stores them. Pure.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from switchyard import ledger_json
from switchyard.v1 import ledger_pb2
from switchyard.vocab import finish_reason_text, status_text

from .native import rationale_json


def _iso(unix_ms: int) -> str | None:
    if not unix_ms:
        return None
    return datetime.fromtimestamp(unix_ms / 1000, UTC).isoformat(timespec="milliseconds")


def request_row_json(r: ledger_pb2.LedgerRequest) -> dict[str, Any]:
    return {
        "request_id": r.request_id,
        "ts": _iso(r.ts_unix_ms),
        "finished_at": _iso(r.finished_unix_ms),
        "project_id": r.project_id,
        "agent_id": r.agent_id,
        "key_id": r.key_id,
        "api": r.api,
        "route": r.route,
        "requested_model": r.requested_model,
        "planned_provider": r.planned_provider,
        "planned_model": r.planned_model,
        "planned_deployment_id": r.planned_deployment_id,
        "provider": r.provider,
        "model": r.model,
        "deployment_id": r.deployment_id,
        "status": status_text(r.status),
        "error_code": r.error_code,
        "error_message": r.error_message,
        "finish_reason": finish_reason_text(r.finish_reason),
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens,
        "cached_tokens": r.cached_tokens,
        "cache_write_tokens": r.cache_write_tokens,
        "cache_write_1h_tokens": r.cache_write_1h_tokens,
        "reasoning_tokens": r.reasoning_tokens,
        "cost_usd": r.cost_usd or "0",
        "latency_ms": r.latency_ms,
        "ttft_ms": r.ttft_ms,
        "overhead_ms": r.overhead_ms,
        "stream": r.stream,
        "attempt_count": r.attempt_count,
        "failovers": r.failovers,
        "attempts": [ledger_json.attempt_json(a) for a in r.attempts],
        "rationale": rationale_json(r.rationale) if r.HasField("rationale") else None,
        "trace_id": r.trace_id,
        "metadata": dict(r.metadata),
        "reservation_id": r.reservation_id,
        "cache_hit": r.cache_hit,
        "cost_saved_usd": r.cost_saved_usd or "0",
        "inserted_at": _iso(r.inserted_unix_ms),
    }
