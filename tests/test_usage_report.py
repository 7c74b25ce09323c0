"""The usage report (GET /v1/usage, `switchyard usage`, the dashboard) built from the budget
authority's status and the ledger's sums; the ledger's usage read. Pure."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from services.ledger.reads import USAGE_AGENTS_SQL, USAGE_SCOPES_SQL, usage_queries, usage_reply
from switchyard.usage import ledger_scopes, rollups, usage_query, usage_report
from switchyard.v1 import ledger_pb2


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


NOON = ms("2026-11-24T12:00:00")


def _ledger() -> ledger_pb2.UsageReply:
    reply = ledger_pb2.UsageReply()
    # The agent's key spent 3 today (1 in the last hour); a plain key 1 (none lately).
    reply.scopes.add(agent_id="bot", key_id="key_a", day_usd="3", month_usd="5", total_usd="9",
                     short_usd="1", long_usd="3")  # fmt: skip
    reply.scopes.add(agent_id="", key_id="key_b", day_usd="1", month_usd="1", total_usd="1",
                     short_usd="0", long_usd="1")  # fmt: skip
    reply.agents.add(agent="bot", run_id="run-1", requests=3, prompt_tokens=30, completion_tokens=60,
                     cost_usd="0.3", first_unix_ms=NOON - 1000, last_unix_ms=NOON - 10)  # fmt: skip
    reply.agents.add(agent="bot", run_id="", requests=1, prompt_tokens=10, completion_tokens=20,
                     cost_usd="0.1", first_unix_ms=NOON - 5000, last_unix_ms=NOON - 4000)  # fmt: skip
    reply.agents.add(agent="", run_id="run-2", requests=2, prompt_tokens=5, completion_tokens=5,
                     cost_usd="0.5", first_unix_ms=NOON - 3000, last_unix_ms=NOON - 2000)  # fmt: skip
    return reply


STATUS = {
    "project": "acme",
    "scopes": [
        {
            "scope": "project:acme",
            "periods": {
                "day": {"start": "2026-11-24", "spent_usd": "4", "reserved_usd": "0.5"},
                "month": {"start": "2026-11", "spent_usd": "6", "reserved_usd": "0.5"},
                "total": {"start": "all", "spent_usd": "10", "reserved_usd": "0.5"},
            },
            "budgets": [
                {
                    "period": "day",
                    "cap_usd": "6",
                    "spent_usd": "4",
                    "reserved_usd": "0.5",
                    "remaining_usd": "1.5",
                    "used_pct": 66.67,
                    "thresholds": [50, 80, 100],
                },
            ],
        }
    ],
}


def test_the_ledgers_rows_add_up_per_scope() -> None:
    sums = ledger_scopes("acme", _ledger().scopes)
    assert set(sums) == {"project:acme", "agent:acme/bot", "key:key_a", "key:key_b"}
    assert sums["project:acme"].day == Decimal(4) and sums["project:acme"].short == Decimal(1)
    assert sums["agent:acme/bot"].total == Decimal(9) and sums["key:key_b"].long == Decimal(1)


def test_the_report_has_spend_caps_headroom_burn_and_exhaustion() -> None:
    report = usage_report("acme", STATUS, _ledger(), 3600, 6 * 3600, NOON)
    scopes = {s["scope"]: s for s in report["scopes"]}
    project = scopes["project:acme"]
    # Spend and holds are the authority's; the agent scope (not counted live) the ledger's.
    assert project["periods"]["day"] == {"spent_usd": "4", "reserved_usd": "0.5"}
    assert scopes["agent:acme/bot"]["periods"]["month"] == {"spent_usd": "5", "reserved_usd": "0"}
    (day,) = project["budgets"]
    assert day["headroom_usd"] == "1.5"
    assert day["burn"]["short"] == {"window_s": 3600, "usd_per_hour": "1"}
    assert day["burn"]["long"]["usd_per_hour"] == "0.6666667"  # 4 USD over 6 hours
    # 1.5 USD of headroom at 1 USD/h: 13:30 UTC, before the day ends.
    assert day["projected_exhaustion_unix_ms"] == ms("2026-11-24T13:30:00")
    assert day["projected_exhaustion"] == "13:30:00 UTC" and day["before_period_end"]
    assert scopes["key:key_b"]["burn"]["short"]["usd_per_hour"] == "0"
    assert report["project"] == "acme" and report["object"] == "usage"


def test_a_cap_not_reached_this_period_says_so() -> None:
    slow = ledger_pb2.UsageReply()
    slow.scopes.add(day_usd="4", month_usd="4", total_usd="4", short_usd="0.01", long_usd="0.06")
    (day,) = {s["scope"]: s for s in usage_report("acme", STATUS, slow, 3600, 21600, NOON)["scopes"]}[
        "project:acme"
    ]["budgets"]
    assert day["projected_exhaustion_unix_ms"] > ms("2026-11-25T00:00:00") and not day["before_period_end"]
    idle = ledger_pb2.UsageReply()
    (day,) = usage_report("acme", STATUS, idle, 3600, 21600, NOON)["scopes"][0]["budgets"]
    assert day["projected_exhaustion_unix_ms"] is None and not day["before_period_end"]


def test_rollups_per_agent_and_run_dearest_first() -> None:
    agents, runs = rollups(_ledger().agents)
    assert agents == [
        {"agent": "bot", "requests": 4, "prompt_tokens": 40, "completion_tokens": 80, "cost_usd": "0.4",
         "first_unix_ms": NOON - 5000, "last_unix_ms": NOON - 10, "runs": 1},
    ]  # fmt: skip
    assert [(r["run_id"], r["agent"], r["cost_usd"]) for r in runs] == [
        ("run-2", "", "0.5"),
        ("run-1", "bot", "0.3"),
    ]


def test_the_ledger_read_is_confined_to_the_project_and_its_windows() -> None:
    ask = usage_query("acme", 3600, 21600, NOON, "day")
    assert ask.short_since_unix_ms == NOON - 3_600_000 and ask.long_since_unix_ms == NOON - 21_600_000
    assert ask.since_unix_ms == ms("2026-11-24T00:00:00") and ask.month_start_unix_ms == ms(
        "2026-11-01T00:00:00"
    )
    (scopes_sql, scopes_params), (agents_sql, agents_params) = usage_queries(ask)
    assert (scopes_sql, agents_sql) == (USAGE_SCOPES_SQL, USAGE_AGENTS_SQL)
    assert "project_id = {project:String}" in scopes_sql and "project_id = {project:String}" in agents_sql
    assert scopes_params["project"] == agents_params["project"] == "acme"
    with pytest.raises(ValueError):
        usage_query("acme", 3600, 21600, NOON, "week")
    reply = usage_reply(
        (
            ["agent_id", "key_id", "day", "month", "total", "short", "long"],
            [["bot", "k", "1", "2", "3", "0.5", "1"]],
        ),
        (
            [
                "agent",
                "run_id",
                "requests",
                "prompt_tokens",
                "completion_tokens",
                "cost",
                "first_ms",
                "last_ms",
            ],
            [["bot", "r1", 2, 10, 20, "0.2", NOON - 5, NOON]],
        ),
    )
    assert (
        reply.scopes[0].short_usd == "0.5"
        and reply.agents[0].run_id == "r1"
        and reply.agents[0].requests == 2
    )


async def test_the_usage_sql_on_a_real_store(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The ledger's two usage queries on an embedded ClickHouse: confined to the project, the
    windows and periods counted by `ts`, agents from the key or metadata, runs by `run_id`."""
    import time as _time
    from datetime import timedelta

    from services.ledger.store import LedgerStore
    from tests.support.ledger_seed import completion_event, write_events

    now_ms = _time.time_ns() // 1_000_000
    now = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    events = []
    for i, (minutes_ago, agent, key, meta) in enumerate(
        [
            (10, "bot", "key_a", {"run_id": "run-1"}),
            (20, "bot", "key_a", {"run_id": "run-1"}),
            (30, "", "key_b", {"agent": "planner", "run_id": "run-2"}),
            (90, "", "key_b", {}),  # outside the short window
            (60 * 24 * 40, "", "key_b", {"agent": "planner"}),  # another month: total only
        ]
    ):
        event = completion_event(
            f"r{i}", at=now - timedelta(minutes=minutes_ago), project="team", agent=agent, cost="1"
        )
        event.key_id = key
        event.metadata.update(meta)
        events.append(event)
    spy = completion_event("spy", at=now, project="other", cost="5")
    spy.metadata["agent"] = "spy"
    store = LedgerStore(f"chdb://{tmp_path / 'ch'}")
    await store.open()
    try:
        await write_events(store, [*events, spy])
        ask = usage_query("team", 3600, 6 * 3600, now_ms, "total")
        scopes, agents = [await store.query(sql, params) for sql, params in usage_queries(ask)]
    finally:
        await store.close()
    reply = usage_reply(scopes, agents)
    sums = ledger_scopes("team", reply.scopes)
    project = sums["project:team"]
    assert (project.short, project.long, project.total) == (Decimal(3), Decimal(4), Decimal(5))
    assert sums["agent:team/bot"].short == Decimal(2) and sums["key:key_b"].total == Decimal(3)
    agents_, runs = rollups(reply.agents)
    assert {a["agent"]: a["requests"] for a in agents_} == {"bot": 2, "planner": 2}
    assert {r["run_id"]: r["requests"] for r in runs} == {"run-1": 2, "run-2": 1}
