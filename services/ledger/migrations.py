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
        2,
        "first choice of the router beside the deployment that served; attempt context",
        [
            # requested_model is what the client asked for; planned_* is the router's first
            # choice; provider/model/deployment_id is what finally served (after failover).
            "ALTER TABLE requests ADD COLUMN IF NOT EXISTS planned_provider LowCardinality(String) "
            "DEFAULT '' AFTER requested_model",
            "ALTER TABLE requests ADD COLUMN IF NOT EXISTS planned_model LowCardinality(String) "
            "DEFAULT '' AFTER planned_provider",
            "ALTER TABLE requests ADD COLUMN IF NOT EXISTS planned_deployment_id LowCardinality(String) "
            "DEFAULT '' AFTER planned_model",
            "ALTER TABLE attempts ADD COLUMN IF NOT EXISTS agent_id LowCardinality(String) "
            "DEFAULT '' AFTER project_id",
            # The attempt failed and the request moved on to the next deployment of its chain.
            "ALTER TABLE attempts ADD COLUMN IF NOT EXISTS failed_over Bool DEFAULT false AFTER ttft_ms",
            "ALTER TABLE attempts ADD COLUMN IF NOT EXISTS trace_id String DEFAULT '' AFTER failed_over",
        ],
    ),
    (
        3,
        "per-minute rollups per project, provider and model",
        [
            # Signed sums so the start-up reconciliation can repair drift by inserting a delta
            # row (SummingMergeTree adds it in); see LedgerStore.reconcile_rollups.
            """
            CREATE TABLE IF NOT EXISTS requests_by_minute (
                minute DateTime('UTC'),
                project_id LowCardinality(String),
                provider LowCardinality(String),
                model LowCardinality(String),
                requests Int64,
                ok Int64,
                errors Int64,
                rejected Int64,
                failovers Int64,
                streamed Int64,
                prompt_tokens Int64,
                completion_tokens Int64,
                cached_tokens Int64,
                cost_usd Decimal(38, 10),
                latency_ms_sum Float64,
                ttft_ms_sum Float64,
                overhead_ms_sum Float64
            )
            ENGINE = SummingMergeTree
            PARTITION BY toYYYYMM(minute)
            ORDER BY (minute, project_id, provider, model)
            """,
            """
            CREATE MATERIALIZED VIEW IF NOT EXISTS requests_by_minute_mv TO requests_by_minute AS
            SELECT
                toStartOfMinute(ts) AS minute,
                project_id,
                provider,
                model,
                toInt64(count()) AS requests,
                toInt64(countIf(status = 'ok')) AS ok,
                toInt64(countIf(status = 'error')) AS errors,
                toInt64(countIf(status = 'rejected')) AS rejected,
                toInt64(sum(failovers)) AS failovers,
                toInt64(countIf(stream)) AS streamed,
                toInt64(sum(prompt_tokens)) AS prompt_tokens,
                toInt64(sum(completion_tokens)) AS completion_tokens,
                toInt64(sum(cached_tokens)) AS cached_tokens,
                toDecimal128(sum(cost_usd), 10) AS cost_usd,
                sum(latency_ms) AS latency_ms_sum,
                sum(ttft_ms) AS ttft_ms_sum,
                sum(overhead_ms) AS overhead_ms_sum
            FROM requests
            GROUP BY minute, project_id, provider, model
            """,
        ],
    ),
    (
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
    (
        5,
        "what each attempt is billed, and whether it was a hedge (docs/routing.md)",
        [
            # The request's cost is the sum of its attempts' (a hedge race bills both racers).
            "ALTER TABLE attempts ADD COLUMN IF NOT EXISTS hedge Bool DEFAULT false AFTER failed_over",
            "ALTER TABLE attempts ADD COLUMN IF NOT EXISTS cost_usd Decimal(20, 10) DEFAULT 0 AFTER hedge",
            "ALTER TABLE attempts ADD COLUMN IF NOT EXISTS prompt_tokens UInt32 DEFAULT 0 AFTER cost_usd",
            "ALTER TABLE attempts ADD COLUMN IF NOT EXISTS completion_tokens UInt32 DEFAULT 0 AFTER prompt_tokens",
            "ALTER TABLE attempts ADD COLUMN IF NOT EXISTS cached_tokens UInt32 DEFAULT 0 AFTER completion_tokens",
        ],
    ),
    (
        6,
        "prompt caching and reasoning: cache-write tokens (all, and those with the 1-hour TTL) and reasoning tokens",
        [
            # Parts of the totals beside them (docs/providers.md): cache_write_tokens of
            # prompt_tokens (like cached_tokens), cache_write_1h_tokens of cache_write_tokens,
            # reasoning_tokens of completion_tokens. Rows written before read 0.
            "ALTER TABLE requests ADD COLUMN IF NOT EXISTS cache_write_tokens UInt32 DEFAULT 0 AFTER cached_tokens",
            "ALTER TABLE requests ADD COLUMN IF NOT EXISTS cache_write_1h_tokens UInt32 DEFAULT 0 "
            "AFTER cache_write_tokens",
            "ALTER TABLE requests ADD COLUMN IF NOT EXISTS reasoning_tokens UInt32 DEFAULT 0 "
            "AFTER cache_write_1h_tokens",
        ],
    ),
    (
        7,
        "the response cache: whether a request was answered from it, and what that answer had cost",
        [
            # A hit costs 0 (cost_usd); cost_saved_usd is what the stored answer cost when it was
            # made, so spend avoided is sum(cost_saved_usd) (docs/routing.md, "Response cache").
            "ALTER TABLE requests ADD COLUMN IF NOT EXISTS cache_hit Bool DEFAULT false AFTER reservation_id",
            "ALTER TABLE requests ADD COLUMN IF NOT EXISTS cost_saved_usd Decimal(20, 10) DEFAULT 0 AFTER cache_hit",
        ],
    ),
    (
        8,
        "the per-minute rollup sums the token classes of migration 6 (cache writes, 1-hour writes, reasoning)",
        [
            # The view is replaced, not altered (ALTER ... MODIFY QUERY is experimental): the
            # ledger migrates before it consumes, so no insert falls between the two.
            "ALTER TABLE requests_by_minute ADD COLUMN IF NOT EXISTS cache_write_tokens Int64 DEFAULT 0 "
            "AFTER cached_tokens",
            "ALTER TABLE requests_by_minute ADD COLUMN IF NOT EXISTS cache_write_1h_tokens Int64 DEFAULT 0 "
            "AFTER cache_write_tokens",
            "ALTER TABLE requests_by_minute ADD COLUMN IF NOT EXISTS reasoning_tokens Int64 DEFAULT 0 "
            "AFTER cache_write_1h_tokens",
            "DROP VIEW IF EXISTS requests_by_minute_mv",
            """
            CREATE MATERIALIZED VIEW IF NOT EXISTS requests_by_minute_mv TO requests_by_minute AS
            SELECT
                toStartOfMinute(ts) AS minute,
                project_id,
                provider,
                model,
                toInt64(count()) AS requests,
                toInt64(countIf(status = 'ok')) AS ok,
                toInt64(countIf(status = 'error')) AS errors,
                toInt64(countIf(status = 'rejected')) AS rejected,
                toInt64(sum(failovers)) AS failovers,
                toInt64(countIf(stream)) AS streamed,
                toInt64(sum(prompt_tokens)) AS prompt_tokens,
                toInt64(sum(completion_tokens)) AS completion_tokens,
                toInt64(sum(cached_tokens)) AS cached_tokens,
                toInt64(sum(cache_write_tokens)) AS cache_write_tokens,
                toInt64(sum(cache_write_1h_tokens)) AS cache_write_1h_tokens,
                toInt64(sum(reasoning_tokens)) AS reasoning_tokens,
                toDecimal128(sum(cost_usd), 10) AS cost_usd,
                sum(latency_ms) AS latency_ms_sum,
                sum(ttft_ms) AS ttft_ms_sum,
                sum(overhead_ms) AS overhead_ms_sum
            FROM requests
            GROUP BY minute, project_id, provider, model
            """,
        ],
    ),
    (
        9,
        "budget alerts: thresholds, refusing caps and burn rates, as the budget authority sent them",
        [
            # One row per alert id (the authority sends each once per budget, period, cap and
            # kind); the recorder skips ids already stored, ReplacingMergeTree folds the rest.
            """
            CREATE TABLE IF NOT EXISTS budget_alerts (
                alert_id String,
                ts DateTime64(3, 'UTC'),
                kind LowCardinality(String),
                scope_kind LowCardinality(String),
                scope_id String,
                project_id LowCardinality(String),
                period LowCardinality(String),
                period_start String,
                threshold_pct UInt16,
                cap_usd Decimal(20, 10),
                spent_usd Decimal(20, 10),
                reserved_usd Decimal(20, 10),
                refused_usd Decimal(20, 10),
                refused_count UInt64,
                window_s Float64,
                rate_usd_per_hour Decimal(20, 10),
                long_window_s Float64,
                long_rate_usd_per_hour Decimal(20, 10),
                projected_at Nullable(DateTime64(3, 'UTC')),
                period_end Nullable(DateTime64(3, 'UTC')),
                message String,
                inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
            )
            ENGINE = ReplacingMergeTree(inserted_at)
            PARTITION BY toYYYYMM(ts)
            ORDER BY (project_id, alert_id)
            """,
        ],
    ),
    (
        10,
        "what a budget-aware downgrade saved against the route's undowngraded choice",
        [
            # docs/routing.md, "Budget-aware downgrade": the bill scaled by the router's cost
            # estimates of the undowngraded and the serving deployment, less the bill.
            "ALTER TABLE requests ADD COLUMN IF NOT EXISTS downgrade_saved_usd Decimal(20, 10) DEFAULT 0 "
            "AFTER cost_saved_usd",
        ],
    ),
]

# The rollup's key and summed columns, in table order (reconciliation compares them).
ROLLUP_KEY = ["minute", "project_id", "provider", "model"]
ROLLUP_SUMS = [
    "requests", "ok", "errors", "rejected", "failovers", "streamed", "prompt_tokens",
    "completion_tokens", "cached_tokens", "cache_write_tokens", "cache_write_1h_tokens", "reasoning_tokens",
    "cost_usd", "latency_ms_sum", "ttft_ms_sum", "overhead_ms_sum",
]  # fmt: skip

# The raw-row aggregate that must equal the rollup for every key (the view's own SELECT).
ROLLUP_FROM_RAW = """
SELECT
    toStartOfMinute(ts) AS minute, project_id, provider, model,
    toInt64(count()) AS requests,
    toInt64(countIf(status = 'ok')) AS ok,
    toInt64(countIf(status = 'error')) AS errors,
    toInt64(countIf(status = 'rejected')) AS rejected,
    toInt64(sum(failovers)) AS failovers,
    toInt64(countIf(stream)) AS streamed,
    toInt64(sum(prompt_tokens)) AS prompt_tokens,
    toInt64(sum(completion_tokens)) AS completion_tokens,
    toInt64(sum(cached_tokens)) AS cached_tokens,
    toInt64(sum(cache_write_tokens)) AS cache_write_tokens,
    toInt64(sum(cache_write_1h_tokens)) AS cache_write_1h_tokens,
    toInt64(sum(reasoning_tokens)) AS reasoning_tokens,
    toDecimal128(sum(cost_usd), 10) AS cost_usd,
    sum(latency_ms) AS latency_ms_sum,
    sum(ttft_ms) AS ttft_ms_sum,
    sum(overhead_ms) AS overhead_ms_sum
FROM requests FINAL
WHERE ts >= {since:DateTime64(3, 'UTC')}
GROUP BY minute, project_id, provider, model
"""

ROLLUP_TOTALS = """
SELECT minute, project_id, provider, model,
    sum(requests) AS requests, sum(ok) AS ok, sum(errors) AS errors, sum(rejected) AS rejected,
    sum(failovers) AS failovers, sum(streamed) AS streamed, sum(prompt_tokens) AS prompt_tokens,
    sum(completion_tokens) AS completion_tokens, sum(cached_tokens) AS cached_tokens,
    sum(cache_write_tokens) AS cache_write_tokens, sum(cache_write_1h_tokens) AS cache_write_1h_tokens,
    sum(reasoning_tokens) AS reasoning_tokens, sum(cost_usd) AS cost_usd, sum(latency_ms_sum) AS latency_ms_sum, sum(ttft_ms_sum) AS ttft_ms_sum,
    sum(overhead_ms_sum) AS overhead_ms_sum
FROM requests_by_minute
WHERE minute >= toStartOfMinute({since:DateTime64(3, 'UTC')})
GROUP BY minute, project_id, provider, model
"""

# Tables under retention and the time column their TTL counts from; "raw" follows
# ledger_retention_days and "rollup" ledger_rollup_retention_days.
RETENTION = [
    ("requests", "ts", "raw"),
    ("attempts", "ts", "raw"),
    ("requests_by_minute", "minute", "rollup"),
    ("quota_usage", "ts", "raw"),  # provider-quota samples (docs/quotas.md) age out like raw rows
    ("budget_alerts", "ts", "rollup"),  # few rows, read beside the rollups: kept as long
]


def pending(applied: set[int]) -> list[tuple[int, str, list[str]]]:
    return [m for m in MIGRATIONS if m[0] not in applied]
