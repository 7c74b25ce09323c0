"""The ledger's store on a real embedded ClickHouse (chDB): numbered migrations applied once,
the per-minute rollup kept by its materialized view, the start-up repair of a rollup that
drifted, and retention by TTL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from services.ledger.migrations import MIGRATIONS, ROLLUP_FROM_RAW, ROLLUP_TOTALS
from services.ledger.store import LedgerStore
from tests.support.ledger_seed import completion_event, write_events


@pytest.fixture
async def store(chdb_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[LedgerStore]:
    database = "t_" + request.node.name.replace("[", "_").replace("]", "").replace("-", "_")[:40]
    opened = LedgerStore(f"chdb://{chdb_path}", database=database)
    await opened.open()
    yield opened
    await opened.query(f"DROP DATABASE IF EXISTS {database}")
    await opened.close()


async def rows(store: LedgerStore, sql: str, params: dict | None = None) -> list[dict]:
    columns, found = await store.query(sql, params or {})
    return [dict(zip(columns, row, strict=True)) for row in found]


async def rollup_and_raw(store: LedgerStore) -> tuple[list, list]:
    since = datetime(2000, 1, 1, tzinfo=UTC)
    raw = sorted((await store.query(ROLLUP_FROM_RAW, {"since": since}))[1])
    rolled = sorted((await store.query(ROLLUP_TOTALS, {"since": since}))[1])
    return raw, rolled


async def test_migrations_are_numbered_and_applied_once(store: LedgerStore) -> None:
    applied = await rows(store, "SELECT version FROM schema_migrations ORDER BY version")
    numbers = list(range(1, len(MIGRATIONS) + 1))  # consecutive from 1, none skipped
    assert [r["version"] for r in applied] == [m[0] for m in MIGRATIONS] == numbers
    assert await store._run(store._migrate) == []  # a restart applies nothing again
    again = await rows(store, "SELECT count() AS n FROM schema_migrations")
    assert again[0]["n"] == len(MIGRATIONS)
    tables = {r["name"] for r in await rows(store, "SHOW TABLES")}
    assert {"requests", "attempts", "requests_by_minute", "requests_by_minute_mv", "quota_usage"} <= tables


async def test_rollup_view_sums_what_is_inserted(store: LedgerStore) -> None:
    now = datetime.now(UTC).replace(second=10, microsecond=0)
    events = [
        completion_event(f"r{i}", at=now + timedelta(seconds=i), project="alpha" if i % 2 else "beta",
                         cost=Decimal("0.0015"), prompt=i, completion=2 * i)
        for i in range(10)
    ] + [completion_event("rej", at=now, status="rejected", cost="0")]  # fmt: skip
    await write_events(store, events)
    raw, rolled = await rollup_and_raw(store)
    assert raw == rolled
    totals = await rows(
        store,
        "SELECT sum(requests) AS n, sum(cost_usd) AS cost, sum(prompt_tokens) AS p, sum(rejected) AS rej "
        "FROM requests_by_minute",
    )
    assert totals == [{"n": 11, "cost": Decimal("0.015"), "p": sum(range(10)) + 10, "rej": 1}]


async def test_rollup_sums_every_token_class(store: LedgerStore) -> None:
    """Cache writes (all and 1-hour) and reasoning tokens reach the rollup (migration 8), so the
    dashboard and long-range queries see each class priced apart."""
    now = datetime.now(UTC).replace(second=5, microsecond=0)
    events = []
    for i in range(3):
        event = completion_event(f"c{i}", at=now + timedelta(seconds=i), prompt=100, completion=40)
        event.usage.cached_tokens, event.usage.cache_write_tokens = 10 * i, 20 + i
        event.usage.cache_write_1h_tokens, event.usage.reasoning_tokens = i, 5 * i
        events.append(event)
    await write_events(store, events)
    raw, rolled = await rollup_and_raw(store)
    assert raw == rolled
    totals = await rows(
        store,
        "SELECT sum(cached_tokens) AS r, sum(cache_write_tokens) AS w, sum(cache_write_1h_tokens) AS w1h, "
        "sum(reasoning_tokens) AS think FROM requests_by_minute",
    )
    assert totals == [{"r": 30, "w": 63, "w1h": 3, "think": 15}]
    # Drift in the new columns is repaired like any other sum.
    await store._run(
        store._client.command,
        "ALTER TABLE requests_by_minute UPDATE reasoning_tokens = 0 WHERE 1 SETTINGS mutations_sync = 1",
    )
    assert len(await store.reconcile_rollups(window_hours=1, retention_days=0)) == 1
    raw, rolled = await rollup_and_raw(store)
    assert raw == rolled


async def test_upgrade_to_the_token_class_rollup_backfills_the_reconciled_window(
    chdb_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ledger that ran migrations 6 and 7 (raw token classes) has rollup rows without them; after
    migration 8 the start-up reconciliation fills them in for its window. (The later migrations,
    independent of the rollup, are applied first: today's rows carry their columns.)"""
    import services.ledger.store as store_module

    monkeypatch.setattr(
        store_module, "pending", lambda applied: [m for m in MIGRATIONS if m[0] != 8 and m[0] not in applied]
    )
    old = LedgerStore(f"chdb://{chdb_path}", database="t_upgrade_rollup")
    await old.open()
    try:
        event = completion_event("u1", at=datetime.now(UTC) - timedelta(minutes=3), prompt=100, completion=10)
        event.usage.cache_write_tokens, event.usage.cache_write_1h_tokens, event.usage.reasoning_tokens = (
            40,
            40,
            6,
        )
        await write_events(old, [event])
        monkeypatch.undo()
        assert await old._run(old._migrate) == [8]
        before = await rows(
            old, "SELECT sum(cache_write_tokens) AS w, sum(reasoning_tokens) AS r FROM requests_by_minute"
        )
        assert before == [{"w": 0, "r": 0}]  # rolled up before the columns existed
        assert len(await old.reconcile_rollups(window_hours=1, retention_days=0)) == 1
        raw, rolled = await rollup_and_raw(old)
        assert raw == rolled
        # New rows are rolled up by the new view.
        await write_events(old, [completion_event("u2", at=datetime.now(UTC), prompt=5, completion=1)])
        raw, rolled = await rollup_and_raw(old)
        assert raw == rolled
    finally:
        await old.query("DROP DATABASE IF EXISTS t_upgrade_rollup")
        await old.close()


async def test_reconcile_repairs_missing_and_doubled_rollups(store: LedgerStore) -> None:
    now = datetime.now(UTC) - timedelta(minutes=5)
    await write_events(
        store, [completion_event(f"a{i}", at=now, project="alpha" if i < 4 else "beta") for i in range(6)]
    )
    # Drift as a kill inside an insert leaves it: one project's minute lost, another doubled.
    await store._run(
        store._client.command,
        "ALTER TABLE requests_by_minute DELETE WHERE project_id = 'beta' SETTINGS mutations_sync = 1",
    )
    await store._run(
        store._client.command,
        "INSERT INTO requests_by_minute SELECT * FROM requests_by_minute WHERE project_id = 'alpha'",
    )
    raw, rolled = await rollup_and_raw(store)
    assert raw != rolled
    deltas = await store.reconcile_rollups(window_hours=1, retention_days=0)
    assert len(deltas) == 2
    raw, rolled = await rollup_and_raw(store)
    assert raw == rolled
    assert await store.reconcile_rollups(window_hours=1, retention_days=0) == []


async def test_retention_ttl_follows_the_setting(store: LedgerStore) -> None:
    now = datetime.now(UTC)
    await write_events(
        store,
        [completion_event("old", at=now - timedelta(days=40)), completion_event("new", at=now)],
    )
    done = await store.apply_retention(raw_days=30, rollup_days=0)
    assert done == [
        "ALTER TABLE requests MODIFY TTL toDateTime(ts) + toIntervalDay(30)",
        "ALTER TABLE attempts MODIFY TTL toDateTime(ts) + toIntervalDay(30)",
        "ALTER TABLE quota_usage MODIFY TTL toDateTime(ts) + toIntervalDay(30)",
    ]
    assert await store.apply_retention(raw_days=30, rollup_days=0) == []  # unchanged: no ALTER
    for table in ("requests", "attempts"):
        await store._run(store._client.command, f"OPTIMIZE TABLE {table} FINAL")
    kept = await rows(store, "SELECT request_id FROM requests FINAL")
    assert [r["request_id"] for r in kept] == ["new"]
    assert {r["request_id"] for r in await rows(store, "SELECT request_id FROM attempts")} == {"new"}
    # The rollup has no TTL (0 = forever): last month's spend is still there.
    assert (await rows(store, "SELECT sum(requests) AS n FROM requests_by_minute"))[0]["n"] == 2
    assert await store.apply_retention(raw_days=0, rollup_days=365) == [
        "ALTER TABLE requests REMOVE TTL",
        "ALTER TABLE attempts REMOVE TTL",
        "ALTER TABLE requests_by_minute MODIFY TTL minute + toIntervalDay(365)",
        "ALTER TABLE quota_usage REMOVE TTL",
        "ALTER TABLE budget_alerts MODIFY TTL toDateTime(ts) + toIntervalDay(365)",
    ]
    assert await store.apply_retention(raw_days=0, rollup_days=365) == []
