"""The ledger's rows, migrations and replay de-duplication against a real chDB store."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pytest

from services.ledger.analyst import RefusedSql, check_statement
from services.ledger.main import dedupe
from services.ledger.migrations import MIGRATIONS
from services.ledger.rows import ATTEMPT_COLUMNS, REQUEST_COLUMNS, attempt_rows, request_row
from services.ledger.store import LedgerStore
from switchyard.v1 import events_pb2, invoke_pb2


def completion(request_id: str, cost: str = "0.0000125", attempts: int = 1) -> events_pb2.Completion:
    now = int(time.time() * 1000)
    event = events_pb2.Completion(
        request_id=request_id, project_id="p1", provider="demo", model="fast", deployment_id="demo/fast",
        status=invoke_pb2.STATUS_OK, cost_usd=cost, started_unix_ms=now, finished_unix_ms=now + 20, latency_ms=20.0,
    )  # fmt: skip
    event.usage.prompt_tokens = 10
    event.usage.completion_tokens = 20
    event.metadata["agent"] = "a1"
    for i in range(attempts):
        event.attempts.add(
            deployment_id=f"d{i}",
            provider="demo",
            status=invoke_pb2.STATUS_ERROR if i < attempts - 1 else invoke_pb2.STATUS_OK,
        )
    return event


def test_rows_match_columns() -> None:
    event = completion("r1", attempts=2)
    row = request_row(event)
    assert len(row) == len(REQUEST_COLUMNS)
    values = dict(zip(REQUEST_COLUMNS, row, strict=True))
    assert values["cost_usd"] == Decimal("0.0000125")
    assert values["attempt_count"] == 2 and values["failovers"] == 1
    assert values["metadata"] == {"agent": "a1"}
    rows = attempt_rows(event)
    assert [r[1] for r in rows] == [1, 2] and all(len(r) == len(ATTEMPT_COLUMNS) for r in rows)


def test_dedupe_drops_stored_and_repeated_ids() -> None:
    events = [completion("a"), completion("b"), completion("a"), completion("c")]
    assert [e.request_id for e in dedupe(events, {"c"})] == ["a", "b"]


def test_read_only_guard() -> None:
    """The statement check on the engine's canonical text (services/ledger/analyst.py); the
    engine's read-only session refuses the rest, and a second statement fails the engine's own
    parse: all of it through a real ledger in tests/test_ledger_reads.py."""
    check_statement("SELECT 1")
    check_statement("WITH x AS (SELECT 1) SELECT * FROM x")
    for statement in ("INSERT INTO requests VALUES (1)", "ALTER TABLE requests DELETE WHERE 1"):
        with pytest.raises(RefusedSql, match="read-only"):
            check_statement(statement)


async def test_migrations_apply_once_and_inserts_are_exact(tmp_path: Path) -> None:
    store = LedgerStore(f"chdb://{tmp_path / 'ch'}")
    await store.open()
    try:
        _, versions = await store.query("SELECT version FROM schema_migrations ORDER BY version")
        assert [v[0] for v in versions] == [m[0] for m in MIGRATIONS]
        await store._run(store._migrate)  # a second start applies nothing again
        _, again = await store.query("SELECT count() FROM schema_migrations")
        assert again[0][0] == len(MIGRATIONS)

        events = [completion(f"r{i}") for i in range(50)]
        await store.insert("requests", [request_row(e) for e in events], REQUEST_COLUMNS)
        existing = await store.existing_request_ids([e.request_id for e in events[:10]] + ["nope"])
        assert existing == {f"r{i}" for i in range(10)}
        _, total = await store.query(
            "SELECT count(), sum(cost_usd), sum(completion_tokens) FROM requests FINAL"
        )
        assert total[0] == (50, Decimal("0.000625"), 1000)
    finally:
        await store.close()
