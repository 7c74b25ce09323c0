"""The rebuild's ledger query against a real (embedded) ClickHouse: sums per scope and period,
the tail excluded, recently inserted ids listed, all in one snapshot. The budget builds the
typed ask (snapshot_query), the ledger runs its SQL (services/ledger/reads.py) and answers the
typed snapshot, which the budget reads back (scope_rows)."""

from __future__ import annotations

import shutil
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from services.budget.periods import period_start
from services.budget.rebuild import rebuild, scope_rows, snapshot_query
from services.ledger import reads
from services.ledger.rows import REQUEST_COLUMNS, request_row
from services.ledger.store import LedgerStore
from switchyard.tenancy import TenancyView
from switchyard.v1 import events_pb2

DAY_MS = 86_400_000


async def test_spend_query_sums_scopes_and_skips_the_tail() -> None:
    folder = Path(tempfile.mkdtemp(prefix="switchyard-rebuild-"))
    store = LedgerStore(f"chdb://{folder}")
    try:
        await store.open()
        now = 1_794_000_000_000
        events = [
            # today, this month (earlier day), last month; one with an agent; one in the tail
            events_pb2.Completion(request_id="a", project_id="p", key_id="k", cost_usd="0.0000105", started_unix_ms=now),
            events_pb2.Completion(request_id="b", project_id="p", key_id="k", cost_usd="0.25", started_unix_ms=now - 3 * DAY_MS),
            events_pb2.Completion(request_id="c", project_id="p", key_id="k", cost_usd="1", started_unix_ms=now - 40 * DAY_MS),
            events_pb2.Completion(request_id="d", project_id="p", agent_id="bot", cost_usd="0.5", started_unix_ms=now),
            events_pb2.Completion(request_id="t", project_id="p", key_id="k", cost_usd="7", started_unix_ms=now),
        ]  # fmt: skip
        await store.insert("requests", [request_row(e) for e in events], REQUEST_COLUMNS)
        await store.insert("requests", [request_row(events[0])], REQUEST_COLUMNS)  # a duplicate row
        # inserted_at is the ledger's wall clock: an hour ahead of it, nothing is recent.
        ask = snapshot_query(["t"], now, time.time_ns() // 1_000_000 + 3_600_000, ["b", "zz"])
        columns, rows = await store.query(*reads.spend_query(ask))
        _, stored = await store.query(*reads.stored_ids_query(list(ask.journal_request_ids)))
        snapshot = reads.spend_snapshot(columns, rows, [row[0] for row in stored])
        assert list(snapshot.stored_journal_ids) == ["b"]
        rows = scope_rows(snapshot)
        assert all(row["recent"] == [] for row in rows)
        authority = rebuild(TenancyView(), rows, [], [], set(), now, 0)
        counter = authority.book.counter
        assert counter(("key:k", "day", period_start("day", now))).spent == Decimal("0.0000105")
        assert counter(("key:k", "month", "2026-11")).spent == Decimal("0.2500105")
        assert counter(("key:k", "total", "all")).spent == Decimal("1.2500105")
        assert counter(("agent:p/bot", "day", period_start("day", now))).spent == Decimal("0.5")
        assert counter(("project:p", "total", "all")).spent == Decimal("1.7500105")

        # Rows inserted from the tail-read time on are listed as recent (already counted).
        _, rows = await store.query(*reads.spend_query(snapshot_query([], now, 0, [])))
        assert sorted(rid for row in rows for rid in row[-1]) == ["a", "b", "c", "d", "t"]
        _, done = await store.query(*reads.stored_ids_query(["b", "zz"]))
        assert done == [("b",)]
    finally:
        await store.close()
        shutil.rmtree(folder, ignore_errors=True)
