"""Every SQL block of docs/analyst-sql.md, run against a seeded ledger (real chDB, written the
way the ledger writes), with its answer checked against the same numbers computed in Python.
A query that stops working, or starts answering something else, fails here."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import pytest_asyncio

from services.ledger.store import LedgerStore
from switchyard.testing.stack import ROOT
from switchyard.vocab import status_text
from tests.support.ledger_seed import completion_event, write_events

pytestmark = pytest.mark.asyncio(loop_scope="module")
DOC = ROOT / "docs" / "analyst-sql.md"
NAMED_SQL = re.compile(r"^```sql\n-- name: (\w+)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def doc_queries() -> dict[str, str]:
    text = DOC.read_text()
    found = dict(NAMED_SQL.findall(text))
    blocks = re.findall(r"^```sql$", text, re.MULTILINE)
    assert len(blocks) == len(found), "every ```sql block needs a `-- name:` first line"
    return found


def inclusive_quantile(values: list[float], level: float) -> float:
    """Linear interpolation between closest ranks (PERCENTILE.INC, numpy's default)."""
    ordered = sorted(values)
    position = level * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def build_seed(now: datetime) -> list:
    """Three weeks of traffic for two projects, today's latency for two models, failovers
    from one flaky provider, and agents that spend differently."""
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    events = []
    for week in range(3):
        for i in range(4):
            at = now - timedelta(days=7 * week, minutes=30 + i)
            events.append(
                completion_event(f"w{week}-a{i}", at=at, project="alpha", cost=Decimal("0.0100") * (week + 1))
            )
            if i < 2:
                events.append(completion_event(f"w{week}-b{i}", at=at, project="beta", cost="0.0025"))
    # Today (between midnight and now): two models with known latencies, an error and a rejection.
    span = max((now - midnight).total_seconds() - 1, 1)
    for i, latency in enumerate([12.0, 15.0, 20.0, 31.0, 48.0]):
        at = midnight + timedelta(seconds=span * i / 10)
        events.append(
            completion_event(f"fast{i}", at=at, model="m-fast", latency_ms=latency, project="gamma")
        )
    for i, latency in enumerate([210.0, 250.0, 400.0, 900.0]):
        at = midnight + timedelta(seconds=span * (i + 5) / 10)
        events.append(completion_event(f"slow{i}", at=at, provider="anthropic", model="m-slow", latency_ms=latency,
                                       project="gamma", failed_first_on="flaky" if i < 3 else ""))  # fmt: skip
    events.append(completion_event("err", at=midnight, model="m-fast", status="error", latency_ms=5000.0))
    events.append(completion_event("rej", at=midnight, status="rejected", cost="0"))
    # Agents over the last weeks.
    for i, (agent, cost) in enumerate(
        [("triage", "0.5"), ("triage", "0.25"), ("writer", "0.6"), ("coder", "0.1")]
    ):
        events.append(
            completion_event(f"ag{i}", at=now - timedelta(days=2), project="delta", agent=agent, cost=cost)
        )
    events.append(
        completion_event("ag-old", at=now - timedelta(days=45), project="delta", agent="ancient", cost="9")
    )
    return events


@pytest.fixture(scope="module")
def now() -> datetime:
    return datetime.now(UTC)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def seeded(chdb_path: Path, now: datetime) -> AsyncIterator[tuple[LedgerStore, list]]:
    store = LedgerStore(f"chdb://{chdb_path}", database="analyst_docs")
    await store.open()
    events = build_seed(now)
    await write_events(store, events)
    yield store, events
    await store.query("DROP DATABASE IF EXISTS analyst_docs")
    await store.close()


async def run(store: LedgerStore, sql: str, params: dict | None = None) -> list[dict]:
    columns, rows = await store.query(sql, params or {})
    return [dict(zip(columns, row, strict=True)) for row in rows]


async def test_the_doc_has_the_promised_queries() -> None:
    assert set(doc_queries()) == {
        "spend_by_project_per_week",
        "latency_by_model_today",
        "failover_rate_by_provider",
        "top_agents_by_cost",
        "attempts_of_one_request",
    }


async def test_spend_by_project_per_week(seeded, now: datetime) -> None:
    store, events = seeded
    rows = await run(store, doc_queries()["spend_by_project_per_week"])
    oldest_week = (now - timedelta(days=now.weekday() + 7 * 11)).date()
    expected: dict[tuple, list] = defaultdict(lambda: [0, 0, Decimal(0)])
    for e in events:
        at = datetime.fromtimestamp(e.started_unix_ms / 1000, UTC)
        week = (at - timedelta(days=at.weekday())).date()
        if week >= oldest_week:
            acc = expected[(week, e.project_id)]
            acc[0] += 1
            acc[1] += e.usage.prompt_tokens + e.usage.completion_tokens
            acc[2] += Decimal(e.cost_usd)
    got = {(r["week"], r["project_id"]): [r["requests"], r["tokens"], r["spend_usd"]] for r in rows}
    assert got == dict(expected)
    assert len({r["week"] for r in rows}) >= 3
    weeks = [r["week"] for r in rows]
    assert weeks == sorted(weeks)


async def test_latency_by_model_today(seeded, now: datetime) -> None:
    store, events = seeded
    rows = await run(store, doc_queries()["latency_by_model_today"])
    today: dict[tuple, list[float]] = defaultdict(list)
    for e in events:
        if (
            status_text(e.status) == "ok"
            and datetime.fromtimestamp(e.started_unix_ms / 1000, UTC).date() == now.date()
        ):
            today[(e.provider, e.model)].append(e.latency_ms)
    expected = sorted(
        (
            (provider, model, len(values), inclusive_quantile(values, 0.5), inclusive_quantile(values, 0.95))
            for (provider, model), values in today.items()
        ),
        key=lambda row: (-row[4], row[0], row[1]),
    )
    got = [(r["provider"], r["model"], r["requests"], r["p50_ms"], r["p95_ms"]) for r in rows]
    assert [g[:3] for g in got] == [x[:3] for x in expected]
    for g, x in zip(got, expected, strict=True):
        assert g[3:] == pytest.approx(x[3:], abs=1e-3)
    # The seeded models by name: the error (5 s) and the rejection are left out.
    by_model = {r["model"]: r for r in rows}
    assert by_model["m-slow"]["requests"] == 4 and by_model["m-fast"]["requests"] == 5
    assert by_model["m-fast"]["p50_ms"] == pytest.approx(20.0)
    assert rows[0]["model"] == "m-slow"


async def test_failover_rate_by_provider(seeded) -> None:
    store, events = seeded
    rows = {r["provider"]: r for r in await run(store, doc_queries()["failover_rate_by_provider"])}
    assert rows["flaky"]["calls"] == 3 and rows["flaky"]["failovers"] == 3
    assert rows["flaky"]["failover_rate"] == 1.0 and rows["flaky"]["error_rate"] == 1.0
    assert rows["anthropic"]["failovers"] == 0 and rows["anthropic"]["calls"] == 4
    recent_openai = [
        e for e in events
        if e.provider == "openai" and e.started_unix_ms / 1000 >= datetime.now(UTC).timestamp() - 7 * 86400
    ]  # fmt: skip
    assert rows["openai"]["calls"] == len(recent_openai)
    assert rows["openai"]["errors"] == 1 and rows["openai"]["error_rate"] == round(1 / len(recent_openai), 4)
    assert next(iter(rows)) == "flaky"  # highest failover rate first


async def test_top_agents_by_cost(seeded) -> None:
    store, _ = seeded
    rows = await run(store, doc_queries()["top_agents_by_cost"])
    assert [(r["agent_id"], r["requests"], r["spend_usd"]) for r in rows] == [
        ("triage", 2, Decimal("0.75")),
        ("writer", 1, Decimal("0.6")),
        ("coder", 1, Decimal("0.1")),
    ]  # "ancient" spent more, but 45 days ago; requests without an agent are not listed


async def test_attempts_of_one_request(seeded) -> None:
    store, _ = seeded
    rows = await run(store, doc_queries()["attempts_of_one_request"], {"id": "slow0"})
    assert [(r["attempt_no"], r["deployment_id"], r["status"], r["failed_over"]) for r in rows] == [
        (1, "flaky/x", "error", True),
        (2, "anthropic/m-slow", "ok", False),
    ]
    assert rows[0]["error_code"] == "overloaded" and rows[0]["http_status"] == 529
