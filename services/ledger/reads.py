"""The typed reads other services ask the ledger for (protos/switchyard/v1/ledger.proto).

The SQL lives here, next to the tables it reads, so no other service writes SQL against the
ledger: the ingress asks for one request (scoped to the caller's project), the budget authority
for the spend snapshot of a rebuild. Each function turns a typed question into a query and the
rows (looked up by column name) into the typed answer. Pure: tested without a database; the
store runs the queries (services/ledger/store.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from switchyard import ledger_json
from switchyard.v1 import ledger_pb2
from switchyard.vocab import finish_reason_value, status_value

REQUEST_BY_ID_SQL = (
    "SELECT * FROM requests FINAL WHERE request_id = {id:String} AND project_id = {project:String} LIMIT 1"
)

SPEND_SQL = """
SELECT project_id, agent_id, key_id,
       toString(sum(cost_usd)) AS total,
       toString(sumIf(cost_usd, ts >= fromUnixTimestamp64Milli({month_start:Int64}, 'UTC'))) AS month,
       toString(sumIf(cost_usd, ts >= fromUnixTimestamp64Milli({day_start:Int64}, 'UTC'))) AS day,
       groupArrayIf(request_id, inserted_at >= fromUnixTimestamp64Milli({recent_since:Int64}, 'UTC')) AS recent
FROM requests FINAL
WHERE request_id NOT IN {tail:Array(String)}
GROUP BY project_id, agent_id, key_id
"""

STORED_IDS_SQL = "SELECT DISTINCT request_id FROM requests WHERE request_id IN {ids:Array(String)}"


def request_by_id_query(ask: ledger_pb2.RequestLookup) -> tuple[str, dict[str, Any]]:
    return REQUEST_BY_ID_SQL, {"id": ask.request_id, "project": ask.project_id}


def _unix_ms(value: datetime | None) -> int:
    return round(value.timestamp() * 1000) if value is not None else 0


def _decimal_text(value: Decimal | str | None) -> str:
    if value is None:
        return "0"
    return format(value, "f") if isinstance(value, Decimal) else str(value)


def _json_list(text: str) -> list[dict[str, Any]]:
    parsed = orjson.loads(text or "[]")
    return parsed if isinstance(parsed, list) else []


def ledger_request(row: dict[str, Any]) -> ledger_pb2.LedgerRequest:
    """A `requests` row (by column name) as the typed record. The stored JSON columns are read
    back into their messages (unknown fields of older rows ignored)."""
    out = ledger_pb2.LedgerRequest(
        ts_unix_ms=_unix_ms(row.get("ts")),
        finished_unix_ms=_unix_ms(row.get("finished_at")),
        inserted_unix_ms=_unix_ms(row.get("inserted_at")),
        cost_usd=_decimal_text(row.get("cost_usd")),
        cost_saved_usd=_decimal_text(row.get("cost_saved_usd")),
        metadata=dict(row.get("metadata") or {}),
    )
    for name in (
        "request_id", "project_id", "agent_id", "key_id", "api", "route", "requested_model",
        "planned_provider", "planned_model", "planned_deployment_id", "provider", "model",
        "deployment_id", "error_code", "error_message", "trace_id",
        "reservation_id", "prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens",
        "cache_write_1h_tokens", "reasoning_tokens", "latency_ms", "ttft_ms", "overhead_ms", "stream",
        "attempt_count", "failovers", "cache_hit",
    ):  # fmt: skip
        value = row.get(name)
        if value is not None:
            setattr(out, name, value)
    out.status = status_value(row.get("status") or "")
    out.finish_reason = finish_reason_value(row.get("finish_reason") or "")
    for attempt in _json_list(row.get("attempts") or "[]"):
        out.attempts.append(ledger_json.attempt_from_json(attempt))
    rationale = orjson.loads(row.get("rationale") or "{}")
    if rationale:
        out.rationale.CopyFrom(ledger_json.rationale_from_json(rationale))
    return out


def request_lookup_reply(columns: list[str], rows: Sequence[Sequence[Any]]) -> ledger_pb2.RequestLookupReply:
    if not rows:
        return ledger_pb2.RequestLookupReply(found=False)
    record = dict(zip(columns, rows[0], strict=True))
    return ledger_pb2.RequestLookupReply(found=True, request=ledger_request(record))


def spend_query(ask: ledger_pb2.SpendSnapshotQuery) -> tuple[str, dict[str, Any]]:
    return SPEND_SQL, {
        "tail": list(ask.tail_request_ids),
        "day_start": ask.day_start_unix_ms,
        "month_start": ask.month_start_unix_ms,
        "recent_since": ask.recent_since_unix_ms,
    }


def stored_ids_query(ids: list[str]) -> tuple[str, dict[str, Any]]:
    return STORED_IDS_SQL, {"ids": ids}


def spend_snapshot(
    columns: list[str], rows: Sequence[Sequence[Any]], stored_journal_ids: list[str]
) -> ledger_pb2.SpendSnapshot:
    snapshot = ledger_pb2.SpendSnapshot(stored_journal_ids=sorted(stored_journal_ids))
    for values in rows:
        row = dict(zip(columns, values, strict=True))
        snapshot.scopes.add(
            project_id=row["project_id"],
            agent_id=row["agent_id"],
            key_id=row["key_id"],
            total_usd=str(row["total"] or "0"),
            month_usd=str(row["month"] or "0"),
            day_usd=str(row["day"] or "0"),
            recent_request_ids=list(row["recent"] or []),
        )
    return snapshot


# One project's spend per (agent, key): by period and within the burn-rate windows.
USAGE_SCOPES_SQL = """
SELECT agent_id, key_id,
       toString(sumIf(cost_usd, ts >= fromUnixTimestamp64Milli({day_start:Int64}, 'UTC'))) AS day,
       toString(sumIf(cost_usd, ts >= fromUnixTimestamp64Milli({month_start:Int64}, 'UTC'))) AS month,
       toString(sum(cost_usd)) AS total,
       toString(sumIf(cost_usd, ts >= fromUnixTimestamp64Milli({short_since:Int64}, 'UTC'))) AS short,
       toString(sumIf(cost_usd, ts >= fromUnixTimestamp64Milli({long_since:Int64}, 'UTC'))) AS long
FROM requests FINAL
WHERE project_id = {project:String}
GROUP BY agent_id, key_id
"""

# The roll-up agent builders ask for: per agent (the key's, else metadata `agent`) and run.
USAGE_AGENTS_SQL = """
SELECT if(agent_id != '', agent_id, metadata['agent']) AS agent, metadata['run_id'] AS run_id,
       count() AS requests, sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens, toString(sum(cost_usd)) AS cost,
       toUnixTimestamp64Milli(min(ts)) AS first_ms, toUnixTimestamp64Milli(max(ts)) AS last_ms
FROM requests FINAL
WHERE project_id = {project:String} AND ts >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')
  AND (agent != '' OR run_id != '')
GROUP BY agent, run_id
ORDER BY sum(cost_usd) DESC, agent, run_id
LIMIT 500
"""


def usage_queries(ask: ledger_pb2.UsageQuery) -> list[tuple[str, dict[str, Any]]]:
    """The two queries of a usage read, both confined to the asking project."""
    return [
        (
            USAGE_SCOPES_SQL,
            {
                "project": ask.project_id,
                "day_start": ask.day_start_unix_ms,
                "month_start": ask.month_start_unix_ms,
                "short_since": ask.short_since_unix_ms,
                "long_since": ask.long_since_unix_ms,
            },
        ),
        (USAGE_AGENTS_SQL, {"project": ask.project_id, "since": ask.since_unix_ms}),
    ]


def usage_reply(
    scopes: tuple[list[str], Sequence[Sequence[Any]]], agents: tuple[list[str], Sequence[Sequence[Any]]]
) -> ledger_pb2.UsageReply:
    reply = ledger_pb2.UsageReply()
    columns, rows = scopes
    for values in rows:
        row = dict(zip(columns, values, strict=True))
        reply.scopes.add(
            agent_id=row["agent_id"],
            key_id=row["key_id"],
            day_usd=str(row["day"] or "0"),
            month_usd=str(row["month"] or "0"),
            total_usd=str(row["total"] or "0"),
            short_usd=str(row["short"] or "0"),
            long_usd=str(row["long"] or "0"),
        )
    columns, rows = agents
    for values in rows:
        row = dict(zip(columns, values, strict=True))
        reply.agents.add(
            agent=row["agent"] or "",
            run_id=row["run_id"] or "",
            requests=int(row["requests"]),
            prompt_tokens=int(row["prompt_tokens"] or 0),
            completion_tokens=int(row["completion_tokens"] or 0),
            cost_usd=str(row["cost"] or "0"),
            first_unix_ms=int(row["first_ms"] or 0),
            last_unix_ms=int(row["last_ms"] or 0),
        )
    return reply
