"""Numbered schema migrations of the ledger, applied in order by the ledger service.

Append new migrations; never edit one that has shipped. Each is a list of statements.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "requests and attempts",
        [
            """
            CREATE TABLE IF NOT EXISTS requests (
                request_id String,
                ts DateTime64(3, 'UTC'),
                finished_at DateTime64(3, 'UTC'),
                project_id LowCardinality(String),
                agent_id LowCardinality(String),
                key_id LowCardinality(String),
                api LowCardinality(String),
                route LowCardinality(String),
                requested_model String,
                provider LowCardinality(String),
                model LowCardinality(String),
                deployment_id LowCardinality(String),
                status LowCardinality(String),
                error_code LowCardinality(String),
                error_message String,
                finish_reason LowCardinality(String),
                prompt_tokens UInt32,
                completion_tokens UInt32,
                cached_tokens UInt32,
                cost_usd Decimal(20, 10),
                latency_ms Float64,
                ttft_ms Float64,
                overhead_ms Float64,
                stream Bool,
                attempt_count UInt8,
                failovers UInt8,
                attempts String,
                rationale String,
                trace_id String,
                metadata Map(String, String),
                reservation_id String,
                inserted_at DateTime64(3, 'UTC') DEFAULT now64(3),
                INDEX idx_request_id request_id TYPE bloom_filter GRANULARITY 1
            )
            ENGINE = ReplacingMergeTree(inserted_at)
            PARTITION BY toYYYYMM(ts)
            ORDER BY (project_id, ts, request_id)
            """,
            """
            CREATE TABLE IF NOT EXISTS attempts (
                request_id String,
                attempt_no UInt8,
                ts DateTime64(3, 'UTC'),
                project_id LowCardinality(String),
                deployment_id LowCardinality(String),
                provider LowCardinality(String),
                model LowCardinality(String),
                status LowCardinality(String),
                error_code LowCardinality(String),
                error_message String,
                http_status UInt16,
                latency_ms Float64,
                ttft_ms Float64,
                inserted_at DateTime64(3, 'UTC') DEFAULT now64(3),
                INDEX idx_request_id request_id TYPE bloom_filter GRANULARITY 1
            )
            ENGINE = ReplacingMergeTree(inserted_at)
            PARTITION BY toYYYYMM(ts)
            ORDER BY (provider, ts, request_id, attempt_no)
            """,
        ],
    ),
    (
        # Numbered 4: the ledger branch's 2 and 3 (attempt context, rollups) land beside it.
        4,
        "provider quota use per deployment, sampled from quota.state",
        [
            """
            CREATE TABLE IF NOT EXISTS quota_usage (
                ts DateTime64(3, 'UTC'),
                deployment_id LowCardinality(String),
                rpm_limit UInt32,
                requests_available Float64,
                tpm_limit UInt32,
                tokens_available Float64,
                input_tpm_limit UInt32,
                input_tokens_available Float64,
                output_tpm_limit UInt32,
                output_tokens_available Float64,
                max_concurrent UInt32,
                concurrent UInt32,
                headroom Float64,
                wait_s Float64,
                granted UInt64,
                refused UInt64,
                inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
            )
            ENGINE = ReplacingMergeTree(inserted_at)
            PARTITION BY toYYYYMM(ts)
            ORDER BY (deployment_id, ts)
            """,
        ],
    ),
]


def pending(applied: set[int]) -> list[tuple[int, str, list[str]]]:
    return [m for m in MIGRATIONS if m[0] not in applied]
