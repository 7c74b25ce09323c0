"""The ledger's pure pieces: replay filter, batch window, rollup repair, retention, rows,
budgets and dashboard shaping, GenAI attributes. No database, no network."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from services.ledger.batching import DRAIN_WAIT_S, BatchWindow, Pull
from services.ledger.dashboard import budgets, queries
from services.ledger.main import dedupe
from services.ledger.retention import current_ttl, retention_statement, ttl_expression
from services.ledger.rollups import reconcile_since, rollup_deltas
from services.ledger.rows import (
    ATTEMPT_COLUMNS,
    REQUEST_COLUMNS,
    attempt_records,
    attempt_rows,
    feed_item,
    in_column_order,
    request_record,
    request_row,
)
from switchyard import genai, metrics
from switchyard.v1 import events_pb2, invoke_pb2

NOW = datetime(2026, 11, 24, 15, 30, 45, tzinfo=UTC)


def completion(request_id: str = "req_1", **fields) -> events_pb2.Completion:
    base = {
        "project_id": "alpha",
        "agent_id": "bot",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "deployment_id": "openai/gpt-4o-mini",
        "status": invoke_pb2.STATUS_OK,
        "cost_usd": "0.0012",
        "started_unix_ms": 1_795_000_000_000,
        "finished_unix_ms": 1_795_000_000_500,
        "trace_id": "ab" * 16,
    }
    event = events_pb2.Completion(request_id=request_id, **{**base, **fields})
    event.usage.prompt_tokens, event.usage.completion_tokens = 10, 20
    return event


def test_dedupe_drops_stored_and_repeated_ids_keeping_first() -> None:
    events = [completion("a"), completion("b"), completion("a"), completion("c")]
    fresh = dedupe(events, existing={"c"})
    assert [e.request_id for e in fresh] == ["a", "b"]


def test_batch_window_lingers_for_a_first_event_then_pauses_then_drains() -> None:
    window = BatchWindow(size=10, wait_s=0.2)
    assert window.next_pull(100.0, idle_wait_s=1.0) == Pull(0.0, 10, 1.0)  # idle: linger
    window.add(0, asked=10, now=101.0)  # nothing came: linger again
    assert window.next_pull(101.0, idle_wait_s=1.0) == Pull(0.0, 10, 1.0)
    window.add(1, asked=10, now=101.0)  # the first event opens the window
    pull = window.next_pull(101.05, idle_wait_s=1.0)
    # The rest of the window passes before the next pull, so events gather in the stream.
    assert pull.pause_s == pytest.approx(0.15) and pull.count == 9 and pull.wait_s == DRAIN_WAIT_S
    window.add(5, asked=9, now=101.2)  # after the window, fewer than asked: all taken
    assert window.next_pull(101.2, idle_wait_s=1.0) is None
    assert window.count == 6


def test_batch_window_keeps_draining_while_pulls_come_back_full_and_stops_at_size() -> None:
    window = BatchWindow(size=10, wait_s=0.2)
    window.add(2, asked=10, now=0.0)
    window.add(4, asked=4, now=0.2)  # full: the stream may hold more
    assert window.next_pull(0.2, idle_wait_s=1.0) == Pull(0.0, 4, DRAIN_WAIT_S)
    window.add(4, asked=4, now=0.21)
    assert window.next_pull(0.21, idle_wait_s=1.0) is None  # size reached
    busy = BatchWindow(size=3, wait_s=5)
    busy.add(3, asked=3, now=0.0)  # under load the lingering pull fills the batch at once
    assert busy.next_pull(0.0, idle_wait_s=1.0) is None


def test_rollup_deltas_repair_missing_extra_and_partial_keys() -> None:
    key_a = (NOW, "alpha", "openai", "m")
    key_b = (NOW, "beta", "openai", "m")
    key_c = (NOW, "gamma", "openai", "m")
    sums = lambda n, cost, lat: [n, n, 0, 0, 0, 0, 10 * n, 0, 0, Decimal(cost), lat, 0.0, 0.0]  # noqa: E731
    raw = [[*key_a, *sums(3, "0.3", 30.0)], [*key_b, *sums(1, "0.1", 10.0)]]
    rolled = [[*key_a, *sums(2, "0.2", 20.0)], [*key_c, *sums(1, "0.5", 5.0)]]
    deltas = {tuple(d[:4]): d[4:] for d in rollup_deltas(raw, rolled)}
    assert deltas[key_a] == sums(1, "0.1", 10.0)  # the view missed one request
    assert deltas[key_b] == sums(1, "0.1", 10.0)  # the view missed the whole minute
    assert deltas[key_c] == [-1, -1, 0, 0, 0, 0, -10, 0, 0, Decimal("-0.5"), -5.0, 0.0, 0.0]  # counted twice
    assert rollup_deltas(raw, raw) == []
    # Float sums in another order are not drift.
    nearly = [[*key_a, *sums(3, "0.3", 30.0 + 1e-12)], [*key_b, *sums(1, "0.1", 10.0)]]
    assert rollup_deltas(raw, nearly) == []


def test_reconcile_window_stays_inside_retention() -> None:
    assert reconcile_since(NOW, 0, 0) is None
    assert reconcile_since(NOW, 2, 0) == datetime(2026, 11, 24, 13, 30, tzinfo=UTC)
    # 72 h asked but raw rows live 2 days: stop a day inside retention.
    assert reconcile_since(NOW, 72, 2) == datetime(2026, 11, 23, 15, 30, tzinfo=UTC)
    assert reconcile_since(NOW, 72, 1) is None


def test_retention_statements_only_when_the_setting_changed() -> None:
    plain = "ReplacingMergeTree(inserted_at) PARTITION BY toYYYYMM(ts) ORDER BY (a) SETTINGS index_granularity = 8192"
    assert retention_statement("requests", "ts", 0, plain) is None
    assert retention_statement("requests", "ts", 30, plain) == (
        "ALTER TABLE requests MODIFY TTL toDateTime(ts) + toIntervalDay(30)"
    )
    with_ttl = plain.replace(" SETTINGS", " TTL toDateTime(ts) + toIntervalDay(30) SETTINGS")
    assert current_ttl(with_ttl) == ttl_expression("ts", 30)
    assert retention_statement("requests", "ts", 30, with_ttl) is None
    assert retention_statement("requests", "ts", 7, with_ttl).endswith("toIntervalDay(7)")
    assert retention_statement("requests", "ts", 0, with_ttl) == "ALTER TABLE requests REMOVE TTL"
    assert ttl_expression("minute", 90) == "minute + toIntervalDay(90)"


def test_rows_carry_planned_target_failover_flags_and_trace() -> None:
    event = completion()
    event.attempts.add(deployment_id="anthropic/haiku", provider="anthropic", model="haiku", status=invoke_pb2.STATUS_ERROR,
                       error_code="overloaded", http_status=529)  # fmt: skip
    event.attempts.add(
        deployment_id="openai/gpt-4o-mini",
        provider="openai",
        model="gpt-4o-mini",
        status=invoke_pb2.STATUS_OK,
    )
    row = dict(zip(REQUEST_COLUMNS, request_row(event), strict=True))
    assert (row["planned_provider"], row["planned_deployment_id"]) == ("anthropic", "anthropic/haiku")
    assert (row["provider"], row["deployment_id"]) == ("openai", "openai/gpt-4o-mini")
    assert row["failovers"] == 1 and row["attempt_count"] == 2
    assert row["cost_usd"] == Decimal("0.0012")
    attempts = [dict(zip(ATTEMPT_COLUMNS, r, strict=True)) for r in attempt_rows(event)]
    assert [a["failed_over"] for a in attempts] == [True, False]
    assert {a["trace_id"] for a in attempts} == {"ab" * 16}
    assert attempts[0]["agent_id"] == "bot"


def test_rejected_request_plans_from_rationale_or_nothing() -> None:
    event = completion(status=invoke_pb2.STATUS_REJECTED, provider="", model="", deployment_id="")
    row = dict(zip(REQUEST_COLUMNS, request_row(event), strict=True))
    assert row["planned_provider"] == "" and row["attempt_count"] == 0
    event.rationale.winner = "demo/fast"
    event.rationale.candidates.add(deployment_id="demo/fast", provider="demo", model="fast")
    row = dict(zip(REQUEST_COLUMNS, request_row(event), strict=True))
    assert (row["planned_provider"], row["planned_model"]) == ("demo", "fast")


def test_rows_are_built_by_column_name_and_a_mismatch_fails_loudly() -> None:
    event = completion()
    event.attempts.add(
        deployment_id="openai/gpt-4o-mini",
        provider="openai",
        model="gpt-4o-mini",
        status=invoke_pb2.STATUS_OK,
    )
    record = request_record(event)
    assert list(record) == REQUEST_COLUMNS  # one entry per column, in the table's order
    assert request_row(event) == [record[column] for column in REQUEST_COLUMNS]
    assert [list(r) for r in attempt_records(event)] == [ATTEMPT_COLUMNS]
    # A column the record does not fill (or a value no column takes) is an error, not a shift.
    with pytest.raises(ValueError, match="missing \\['new_column'\\]"):
        in_column_order(record, [*REQUEST_COLUMNS, "new_column"])
    with pytest.raises(ValueError, match="unexpected \\['trace_id'\\]"):
        in_column_order(record, [c for c in REQUEST_COLUMNS if c != "trace_id"])


def test_feed_item_is_small_and_exact() -> None:
    item = feed_item(completion())
    assert item["cost_usd"] == "0.0012" and item["ts"] == 1_795_000_000_500
    assert item["prompt_tokens"] == 10 and item["trace_id"] == "ab" * 16
    assert "rationale" not in item and "metadata" not in item


def test_budget_caps_and_usage() -> None:
    caps = budgets.parse_caps(
        {
            "caps": [
                {
                    "scope_kind": "project",
                    "scope_id": "alpha",
                    "period": "day",
                    "cap_usd": "10",
                    "spent_usd": "2.5",
                },
                {"scope_kind": "key", "scope_id": "k1", "period": "month", "cap_usd": "5", "spent_usd": "6"},
                {"scope_kind": "planet", "scope_id": "x", "cap_usd": "1", "spent_usd": "0"},  # unknown scope
                {
                    "scope_kind": "project",
                    "scope_id": "y",
                    "cap_usd": "lots",
                    "spent_usd": "0",
                },  # not a number
                {"scope_kind": "project", "scope_id": "z", "cap_usd": "1"},  # no spend: skipped, not guessed
            ]
        }
    )
    assert [(c.scope_kind, c.scope_id) for c in caps] == [("project", "alpha"), ("key", "k1")]
    assert budgets.parse_caps(None) == [] and budgets.parse_caps({"caps": []}) == []
    assert budgets.usage_row(caps[0], caps[0].spent_usd)["used_pct"] == 25.0
    assert budgets.usage_row(caps[1], caps[1].spent_usd)["used_pct"] == 120.0


def test_caps_come_from_the_authoritys_status_answer() -> None:
    status = {
        "project": "",
        "scopes": [
            {"scope": "project:acme", "periods": {}, "budgets": [
                {"period": "day", "cap_usd": "1", "spent_usd": "0.25", "used_pct": 25.0}]},
            {"scope": "agent:acme/bot", "periods": {}, "budgets": [
                {"period": "month", "cap_usd": "2", "spent_usd": "0"}]},
            {"scope": "key:key_1", "periods": {}, "budgets": []},  # spend counted, no cap
        ],
    }  # fmt: skip
    caps = budgets.parse_caps(budgets.caps_from_status(status))
    assert [(c.scope_kind, c.scope_id, c.period, c.cap_usd, c.spent_usd) for c in caps] == [
        ("project", "acme", "day", Decimal("1"), Decimal("0.25")),
        ("agent", "acme/bot", "month", Decimal("2"), Decimal("0")),
    ]
    assert budgets.caps_from_status({"error": "the budget authority is not ready"}) == {"caps": []}


def test_dashboard_windows_series_and_provider_rates() -> None:
    since, step = queries.window_bounds("24h", NOW)
    assert step == 15 and since == datetime(2026, 11, 23, 15, 30, tzinfo=UTC)
    with pytest.raises(KeyError):
        queries.window_bounds("2y", NOW)
    since, step = queries.window_bounds("1h", NOW)
    start_ms = int(since.timestamp() * 1000)
    rows = [
        {"t": start_ms, "project_id": "a", "cost_usd": "0.5", "requests": 2, "errors": 1},
        {"t": start_ms + 120_000, "project_id": "b", "cost_usd": "0.25", "requests": 1, "errors": 0},
    ]
    series = queries.pivot_series(rows, since, NOW, step)
    assert len(series["t"]) == 61 and series["t"][0] == start_ms // 1000
    assert series["requests"][:3] == [2, 0, 1] and series["errors"][:3] == [1, 0, 0]
    assert [p["project_id"] for p in series["projects"]] == ["a", "b"]
    assert series["projects"][1]["cost_usd"][2] == 0.25
    rates = queries.provider_rows(
        [{"provider": "p", "attempts": 4, "errors": 1, "failovers": 1, "latency_ms": [float("nan")] * 3}]
    )
    assert rates[0]["error_rate"] == 0.25 and rates[0]["failover_rate"] == 0.25
    assert queries.jsonable(rates[0]["p50_ms"]) is None
    assert queries.jsonable(Decimal("1.2300")) == "1.23" and queries.jsonable(NOW) == int(
        NOW.timestamp() * 1000
    )
    assert (
        queries.with_average_latency([{"requests": 4, "latency_ms_total": 10.0}])[0]["avg_latency_ms"] == 2.5
    )


def test_genai_attributes_follow_the_conventions() -> None:
    request = invoke_pb2.InvokeRequest(request_id="r", model="auto", max_tokens=64, temperature=0.2)
    attrs = genai.request_attributes(request)
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.request.model"] == "auto"
    assert attrs["gen_ai.request.max_tokens"] == 64 and attrs["gen_ai.request.temperature"] == 0.2
    assert "gen_ai.request.top_p" not in attrs
    target = genai.target_attributes("gemini", "gemini-2.0-flash", "gemini/flash")
    assert target["gen_ai.provider.name"] == "gcp.gemini" and target["gen_ai.system"] == "gcp.gemini"
    usage = genai.usage_attributes(
        invoke_pb2.Usage(prompt_tokens=3, completion_tokens=5, cached_tokens=2), "stop"
    )
    assert usage == {
        "gen_ai.usage.input_tokens": 3,
        "gen_ai.usage.output_tokens": 5,
        "gen_ai.usage.cache_read.input_tokens": 2,
        "gen_ai.response.finish_reasons": ["stop"],
    }
    stored = genai.completion_attributes(completion(error_code="timeout"))
    assert stored["error.type"] == "timeout" and stored["gen_ai.provider.name"] == "openai"
    assert genai.span_name("gpt-4o") == "chat gpt-4o"


def test_metrics_track_counts_outcome_duration_and_in_flight() -> None:
    def value(name: str, **labels: str) -> float:
        from prometheus_client import REGISTRY

        return REGISTRY.get_sample_value(name, labels) or 0.0

    before_ok = value("switchyard_requests_total", service="unit", status="ok")
    before_err = value("switchyard_errors_total", service="unit", code="rate_limited")
    with metrics.track("unit"):
        assert value("switchyard_in_flight_requests", service="unit") == 1
    with metrics.track("unit") as outcome:
        outcome["status"] = "rate_limited"
    with pytest.raises(ValueError), metrics.track("unit"):
        raise ValueError
    assert value("switchyard_requests_total", service="unit", status="ok") == before_ok + 1
    assert value("switchyard_errors_total", service="unit", code="rate_limited") == before_err + 1
    assert value("switchyard_errors_total", service="unit", code="error") >= 1
    assert value("switchyard_in_flight_requests", service="unit") == 0
    assert value("switchyard_request_duration_seconds_count", service="unit") >= 3


def test_dashboard_assets_are_local_and_the_vendored_chart_library_is_the_recorded_one() -> None:
    import hashlib
    import re
    from pathlib import Path

    static = Path(__file__).resolve().parents[1] / "services" / "ledger" / "dashboard" / "static"
    record = (static / "vendor" / "uplot" / "VENDOR.md").read_text()
    for name in ("uPlot.iife.min.js", "uPlot.min.css"):
        digest = hashlib.sha256((static / "vendor" / "uplot" / name).read_bytes()).hexdigest()
        assert f"sha256 {name}: {digest}" in record
    page = (static / "index.html").read_text()
    # Every script and stylesheet is served by the dashboard itself: nothing from a CDN.
    assets = re.findall(r'<(?:script|link)[^>]*(?:src|href)="([^"]+)"', page)
    assert len(assets) == 4
    for url in assets:
        assert url.startswith("/static/"), url
    assert "http://" not in page and "https://" not in page


def test_analyst_statement_check_reads_the_engines_canonical_text() -> None:
    from services.ledger.analyst import RefusedSql, check_statement, words_outside_literals

    assert words_outside_literals("SELECT 'a INTO OUTFILE b', `into` FROM t") == ["SELECT", "FROM", "T"]
    assert words_outside_literals("SELECT 'it\\'s' AS x") == ["SELECT", "AS", "X"]
    for canonical in ("SELECT 1", "WITH x AS (SELECT 1) SELECT * FROM x", "SHOW TABLES", "DESCRIBE TABLE t",
                      "EXPLAIN SELECT 1", "EXISTS TABLE t", "SELECT 'INTO OUTFILE' AS s"):  # fmt: skip
        check_statement(canonical)
    for canonical in ("SELECT 1 INTO OUTFILE '/tmp/x' APPEND", "SHOW TABLES INTO OUTFILE 'x'",
                      "EXPLAIN SELECT 1 INTO OUTFILE 'x'", "SELECT 1 UNION ALL SELECT 2 INTO OUTFILE 'x'"):  # fmt: skip
        with pytest.raises(RefusedSql, match="INTO OUTFILE is not allowed"):
            check_statement(canonical)
    for canonical in (
        "DROP TABLE requests",
        "SET readonly = 0",
        "SYSTEM FLUSH LOGS",
        "INSERT INTO t VALUES (1)",
        "",
    ):
        with pytest.raises(RefusedSql, match="single read-only statement"):
            check_statement(canonical)


def test_analyst_session_sets_readonly_last_and_errors_hide_the_engine_text() -> None:
    from services.ledger.analyst import ENGINE_REFUSAL, SqlCaps, engine_error, session_statements

    caps = SqlCaps(
        max_execution_s=7.5, max_memory_bytes=1000, max_result_rows=10, max_result_bytes=99, max_threads=1
    )
    statements = session_statements(caps)
    assert statements[-1] == "SET readonly = 1"  # after it, nothing can change the caps
    assert {"SET max_execution_time = 7.5", "SET max_memory_usage = 1000", "SET max_result_rows = 10",
            "SET max_result_bytes = 99", "SET max_threads = 1"} <= set(statements)  # fmt: skip
    text = "Code: {code}. DB::Exception: secret detail /var/lib/x at position 4 ({name}) (version 26.9)"
    cases = {
        (164, "READONLY"): ("read_only", ENGINE_REFUSAL),
        (159, "TIMEOUT_EXCEEDED"): ("cut_off", "cut off: the query ran longer than 7.5 s (ledger_sql_max_execution_s)"),
        (241, "MEMORY_LIMIT_EXCEEDED"): ("cut_off", None),
        (396, "TOO_MANY_ROWS_OR_BYTES"): ("cut_off", None),
        (47, "UNKNOWN_IDENTIFIER"): ("invalid_sql", "the query failed: UNKNOWN_IDENTIFIER (ClickHouse error 47); see the ledger's log"),
    }  # fmt: skip
    for (code, name), (want_code, want_message) in cases.items():
        refused = engine_error(text.format(code=code, name=name), caps)
        assert refused.code == want_code
        assert "DB::Exception" not in str(refused) and "secret detail" not in str(refused)
        if want_message:
            assert str(refused) == want_message
    syntax = engine_error(
        "Code: 62. DB::Exception: Syntax error: failed at position 9 (x). (SYNTAX_ERROR)", caps
    )
    assert (syntax.code, str(syntax)) == ("invalid_sql", "syntax error at position 9")
    multi = engine_error("Code: 62. DB::Exception: Syntax error (Multi-statements are not allowed)", caps)
    assert "single read-only statement" in str(multi)
    assert engine_error("connection reset", caps).code == "unavailable"


def test_request_lookup_reply_is_built_by_column_name_and_renders_the_answers_rationale() -> None:
    from services.ingress.ledger_row import request_row_json
    from services.ingress.native import rationale_json
    from services.ledger.reads import request_lookup_reply

    event = completion()
    event.attempts.add(
        deployment_id="openai/gpt-4o-mini",
        provider="openai",
        model="gpt-4o-mini",
        status=invoke_pb2.STATUS_OK,
    )
    event.rationale.winner = "openai/gpt-4o-mini"
    event.rationale.candidates.add(deployment_id="openai/gpt-4o-mini", latency_ms=12.5, total=0.75)
    record = {**request_record(event), "inserted_at": datetime(2026, 11, 2, tzinfo=UTC)}
    columns = list(reversed(record))  # any column order: values are looked up by name
    reply = request_lookup_reply(columns, [tuple(record[c] for c in columns)])
    assert reply.found and reply.request.cost_usd == "0.0012" and reply.request.model == event.model
    body = request_row_json(reply.request)
    assert body["rationale"] == rationale_json(event.rationale)  # the answer's shape
    assert body["attempts"][0]["deployment_id"] == body["deployment_id"] == "openai/gpt-4o-mini"
    assert body["inserted_at"] == "2026-11-02T00:00:00.000+00:00"
    assert not request_lookup_reply(columns, []).found
