"""Chaos on this machine: a 3-node NATS cluster, several service processes, a bounded load,
and one part killed (SIGKILL) in the middle of it. Afterwards every request the client sent
either completed or got a clear error; every completed request has exactly one ledger row,
`ok`; no row was inserted twice (counted from the ledger's inserts, which a ReplacingMergeTree
merge cannot hide, and from the raw rows); no row belongs to a request the client was not
answered for, and no request the client saw fail is billed as `ok`; and the budget authority's
spend, not zero, equals the ledger's sum of costs (nothing counted twice or missed).

Figures are printed (run with -s) and recorded in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import signal
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx
import nats
import pytest
from prometheus_client.parser import text_string_to_metric_families

from switchyard import subjects
from switchyard.bus import stream_messages
from switchyard.testing.stack import Stack, ledger_sql, running, wait_until
from switchyard.v1 import events_pb2
from tests.support.cluster import NatsCluster, cluster_stack

pytestmark = pytest.mark.chaos

TOTAL = 120
RATE = 40.0  # requests per second: the load lasts ~3 s
# A slow upstream (250 ms) keeps ~10 requests in flight, so every kill hits requests in progress.
UPSTREAM_LATENCY_MS = "250"
CLEAR_ERRORS = {"unavailable", "timeout", "upstream_error", "overloaded"}


@dataclass
class Outcome:
    status: int
    request_id: str
    code: str = ""


async def drive(stack: Stack, total: int, rate: float, at_fraction: float, action) -> list[Outcome]:
    """Open-loop load; `action` runs once when `at_fraction` of the requests have been sent."""
    outcomes: list[Outcome] = []
    body = {"model": "auto", "messages": [{"role": "user", "content": "chaos"}], "max_tokens": 8}

    async def one(http: httpx.AsyncClient, i: int) -> None:
        r = await http.post("/llm.invoke", json=dict(body, stream=i % 5 == 0))
        if r.status_code == 200:
            if r.headers["content-type"].startswith("text/event-stream"):
                final = [
                    line for line in r.text.splitlines() if line.startswith("data: ") and "request_id" in line
                ]
                import orjson

                data = orjson.loads(final[-1][6:]) if final else {}
                if "error" in data:
                    outcomes.append(Outcome(599, data["error"].get("request_id", ""), data["error"]["code"]))
                else:
                    outcomes.append(Outcome(200, data["request_id"]))
            else:
                outcomes.append(Outcome(200, r.json()["request_id"]))
        else:
            error = r.json()["error"]
            outcomes.append(Outcome(r.status_code, error.get("request_id", ""), error["code"]))

    async with httpx.AsyncClient(
        base_url=stack.ingress_url,
        headers=stack.headers,
        timeout=30,
        limits=httpx.Limits(max_connections=200),
    ) as http:
        tasks = []
        for i in range(total):
            if i == int(total * at_fraction):
                await asyncio.to_thread(action)
            tasks.append(asyncio.create_task(one(http, i)))
            await asyncio.sleep(1 / rate)
        await asyncio.gather(*tasks)
    return outcomes


async def spend_and_ledger(stack: Stack, project: str = "default") -> tuple[Decimal | None, Decimal]:
    """The authority's settled spend of the project (None while no leader answers) and the
    ledger's sum of the project's costs."""
    rows = await ledger_sql(
        stack.nats.url,
        "SELECT toString(sum(cost_usd)) AS spent FROM requests FINAL WHERE project_id = {p:String}",
        {"p": project},
    )
    ledger = Decimal(rows[0]["spent"] or "0")
    r = await asyncio.to_thread(stack.admin, "GET", "/spend", params={"project": project})
    if r.status_code != 200:
        return None, ledger
    for entry in r.json()["scopes"]:
        if entry["scope"] == f"project:{project}":
            return Decimal(entry["periods"]["total"]["spent_usd"]), ledger
    return Decimal(0), ledger


def ledger_inserts(stack: Stack) -> int:
    """Request rows the running ledger processes have inserted (their own counter): unlike a
    count of the table, no merge of the ReplacingMergeTree can make a duplicate insert vanish."""
    inserted = 0
    for ledger in stack.by_name("ledger"):
        text = httpx.get(ledger.metrics_url, timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if (
                    sample.name == "switchyard_ledger_rows_inserted_total"
                    and sample.labels["table"] == "requests"
                ):
                    inserted += int(sample.value)
    return inserted


async def settle_and_check(
    stack: Stack,
    outcomes: list[Outcome],
    scenario: str,
    sent: int = TOTAL,
    inserted_before: int | None = None,
    answers_may_be_lost: bool = False,
) -> dict:
    """`inserted_before`: rows a ledger killed during the run had inserted (read just before
    the kill, so a lower bound of what it inserted); None when no ledger was killed. `answers_may_be_lost`: the fault can lose
    an answer after its record was stored (a NATS node carrying the final frame dies), so a
    request the client saw fail may be billed `ok`: counted in the figures, not refused."""
    completed = {o.request_id for o in outcomes if o.status == 200}
    errors = [o for o in outcomes if o.status != 200]
    answered = {o.request_id for o in outcomes if o.request_id}
    assert len(outcomes) == sent
    for o in errors:
        assert o.code in CLEAR_ERRORS, f"unclear error {o}"
    deadline = time.monotonic() + 40
    while True:
        # FINAL: what the ledger holds, one row per request, whether or not parts have merged.
        rows = await ledger_sql(
            stack.nats.url, "SELECT request_id, status, toString(cost_usd) AS cost FROM requests FINAL"
        )
        found = {r["request_id"]: r for r in rows}
        if completed <= set(found) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    missing = completed - set(found)
    assert not missing, f"{len(missing)} completed requests have no ledger row\n" + await _whereabouts(
        stack, missing
    )
    not_ok = {rid: found[rid]["status"] for rid in completed if found[rid]["status"] != "ok"}
    assert not not_ok, f"completed requests not recorded as ok: {not_ok}"
    phantom = set(found) - answered
    assert not phantom, f"ledger rows of requests no client was answered for: {sorted(phantom)[:5]}"
    failed = {o.request_id for o in errors if o.request_id in found}
    billed_as_ok = {rid for rid in failed if found[rid]["status"] == "ok"}
    if not answers_may_be_lost:
        seen = sorted((o.request_id, o.code) for o in errors if o.request_id in billed_as_ok)
        assert not billed_as_ok, f"requests the client saw fail, billed as ok: {seen[:5]}"
    # No duplicate insert, two ways: the raw rows (before a merge collapses them) and the
    # ledgers' own insert counters (which no merge can hide).
    raw = await ledger_sql(
        stack.nats.url, "SELECT request_id, count() AS n FROM requests GROUP BY request_id HAVING n > 1"
    )
    assert not raw, f"requests with more than one ledger row: {raw}"
    inserted = (inserted_before or 0) + ledger_inserts(stack)
    assert inserted <= len(found), f"{inserted} request rows inserted for {len(found)} requests"
    # No ledger died: its counter saw every insert. (A ledger killed before its first insert
    # has inserted_before 0, and the rows it stored after the read are not in any counter.)
    if inserted_before is None:
        assert inserted == len(found), f"{inserted} request rows inserted, {len(found)} in the ledger"
    # Spend counters equal the ledger once settlement has caught up (the authority settles
    # from the same completion events the ledger stores).
    deadline = time.monotonic() + 40
    while True:
        spent, ledger_sum = await spend_and_ledger(stack)
        if spent == ledger_sum or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert spent == ledger_sum, f"the budget authority counts {spent}, the ledger {ledger_sum}"
    completed_cost = sum(Decimal(found[rid]["cost"]) for rid in completed)
    assert completed_cost > 0 and ledger_sum >= completed_cost, (completed_cost, ledger_sum)
    billed_errors = {rid for rid in failed if Decimal(found[rid]["cost"]) > 0}
    figures = {
        "scenario": scenario,
        "sent": len(outcomes),
        "completed": len(completed),
        "errors": len(errors),
        "error_codes": sorted({o.code for o in errors}),
        "ledger_rows_for_completed": len(completed),
        "ledger_rows_of_errors": len(failed),
        "billed_errors": len(billed_errors),
        "failed_but_billed_ok": len(billed_as_ok),
        "ledger_rows_total": len(found),
        "rows_inserted": inserted,
        "spend_usd": str(spent),
        "ledger_cost_usd": str(ledger_sum),
    }
    print(f"\nCHAOS {figures}")
    return figures


async def _whereabouts(stack: Stack, request_ids: set[str]) -> str:
    """What a failure needs to be explained: whether the events stream holds each missing
    request's completion, what the ledger's consumer says, and the services' last log lines."""
    nc = await nats.connect(servers=stack.nats.url.split(","))
    try:
        js = nc.jetstream()
        in_stream: dict[str, int | None] = {}
        async for raw in stream_messages(js, subjects.EVENTS_STREAM, subjects.COMPLETION):
            event = events_pb2.Completion.FromString(raw.data or b"")
            if event.request_id in request_ids:
                in_stream[event.request_id] = raw.seq
        consumer = await js.consumer_info(subjects.EVENTS_STREAM, subjects.LEDGER_DURABLE)
    finally:
        await nc.close()
    return f"in the stream (request: sequence): {in_stream}\nledger consumer: {consumer}\n{stack.logs()}"


@pytest.fixture
def chaos_stack(request: pytest.FixtureRequest):
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-chaos-"))
    stack = cluster_stack(
        workdir,
        SWITCHYARD_DEMO_LATENCY_MS=UPSTREAM_LATENCY_MS,
        SWITCHYARD_DEMO_CHUNK_DELAY_MS="2",
        SWITCHYARD_REQUEST_TIMEOUT_S="4",
        SWITCHYARD_LEDGER_BATCH_SIZE="20",
        **getattr(request, "param", {}),  # a scenario's own settings (indirect parametrize)
    )
    with running(stack):
        stack.start(
            ("ledger", "services.ledger"),
            # Two budget processes: one leads (KV lease), the other stands by.
            ("budget", "services.budget"),
            ("budget", "services.budget"),
            ("worker", "services.providers", "--provider", "demo"),
            ("worker", "services.providers", "--provider", "demo"),
            ("router", "services.router"),
            ("router", "services.router"),
            ("ingress", "services.ingress"),
        )
        stack.provision()
        yield stack


def _kill_one(stack: Stack, name: str) -> None:
    stack.by_name(name)[0].stop(signal.SIGKILL)


async def test_kill_a_provider_worker_mid_load(chaos_stack: Stack) -> None:
    outcomes = await drive(chaos_stack, TOTAL, RATE, 0.4, lambda: _kill_one(chaos_stack, "worker"))
    figures = await settle_and_check(chaos_stack, outcomes, "kill a provider worker")
    assert figures["completed"] >= TOTAL * 0.8  # the other worker takes over


async def test_kill_a_router_mid_load(chaos_stack: Stack) -> None:
    outcomes = await drive(chaos_stack, TOTAL, RATE, 0.4, lambda: _kill_one(chaos_stack, "router"))
    figures = await settle_and_check(chaos_stack, outcomes, "kill a router")
    assert figures["completed"] >= TOTAL * 0.8


async def test_kill_the_ledger_mid_load_and_restart_it(chaos_stack: Stack) -> None:
    inserted_before = 0

    def kill_and_restart() -> None:
        nonlocal inserted_before
        inserted_before = ledger_inserts(chaos_stack)  # a lower bound: it may insert once more
        _kill_one(chaos_stack, "ledger")
        chaos_stack.spawn("ledger", "services.ledger", wait=False)

    outcomes = await drive(chaos_stack, TOTAL, RATE, 0.4, kill_and_restart)
    chaos_stack.wait_ready(chaos_stack.by_name("ledger")[0])
    figures = await settle_and_check(
        chaos_stack, outcomes, "kill the ledger (restarted)", inserted_before=inserted_before
    )
    assert figures["completed"] == TOTAL  # the ledger is off the request path


# In a cluster the budget lease must outlive a JetStream election (5.6-7.3 s after a SIGKILLed
# stream leader, STACK-NOTES.md), or losing the node that leads the lease bucket also forces a
# budget leader change: docs/reliability.md recommends 12 s, and this scenario runs with it.
@pytest.mark.parametrize("chaos_stack", [{"SWITCHYARD_BUDGET_LEASE_TTL_S": "12"}], indirect=True)
async def test_kill_the_stream_leader_nats_node_mid_load(chaos_stack: Stack) -> None:
    cluster: NatsCluster = chaos_stack.nats  # type: ignore[assignment]

    def kill_leader() -> None:
        cluster.nodes[cluster.stream_leader("EVENTS")].kill()

    outcomes = await drive(chaos_stack, TOTAL, RATE, 0.4, kill_leader)
    # After the elections the gateway serves again, on the two nodes left.
    async with httpx.AsyncClient(
        base_url=chaos_stack.ingress_url, headers=chaos_stack.headers, timeout=30
    ) as http:
        body = {"model": "auto", "messages": [{"role": "user", "content": "after"}], "max_tokens": 8}
        # Recovered = five answers in a row; a refusal while the elections settle is an outcome
        # too (it has its ledger row), and must be a clear error.
        deadline = time.monotonic() + 60
        streak = 0
        while streak < 5:
            assert time.monotonic() < deadline, "the gateway did not recover after the node loss"
            r = await http.post("/llm.invoke", json=body)
            if r.status_code == 200:
                streak += 1
                outcomes.append(Outcome(200, r.json()["request_id"]))
                continue
            error = r.json()["error"]
            assert error["code"] in CLEAR_ERRORS, r.text
            outcomes.append(Outcome(r.status_code, error.get("request_id", ""), error["code"]))
            streak = 0
            await asyncio.sleep(0.5)
    # Rows exactly once, and spend equal to the ledger: the budget's settlement reader is made
    # again when its node dies.
    # The node that dies may carry a final frame whose record is already stored: that client
    # sees an error for a request the upstream served and the ledger bills (docs/reliability.md).
    figures = await settle_and_check(
        chaos_stack,
        outcomes,
        "kill the EVENTS stream leader (NATS node)",
        len(outcomes),
        answers_may_be_lost=True,
    )
    # Requests answered before the kill complete. After it, until the stream has a leader again
    # (several seconds: longer than the rest of the load), a request whose record cannot be
    # stored is refused with a clear error (`unavailable`, or `timeout` at its 4 s deadline),
    # as are those in flight on the lost node: about 30-40 of the 120 complete, 40 % being sent
    # before the kill.
    assert figures["completed"] >= TOTAL * 0.2


# The leader's lease outlives it by up to its TTL, so the failover gap is about the TTL plus
# the standby's rebuild; a short TTL and a longer load let the test see the standby serve.
BUDGET_TOTAL = 200


@pytest.mark.parametrize("chaos_stack", [{"SWITCHYARD_BUDGET_LEASE_TTL_S": "1.5"}], indirect=True)
async def test_kill_the_budget_leader_mid_load(chaos_stack: Stack) -> None:
    old = wait_until(chaos_stack.budget_leader, 30, what="a budget leader")

    outcomes = await drive(chaos_stack, BUDGET_TOTAL, RATE, 0.25, lambda: old.stop(signal.SIGKILL))
    new = wait_until(chaos_stack.budget_leader, 60, what="the standby to take over")
    assert new is not old and new.process.poll() is None

    # While no authority answers, requests fail closed with 503 `unavailable` (never served
    # unbudgeted); before the kill and after the takeover they are served.
    assert {o.code for o in outcomes if o.status != 200} <= {"unavailable", "timeout"}
    async with httpx.AsyncClient(
        base_url=chaos_stack.ingress_url, headers=chaos_stack.headers, timeout=30
    ) as http:
        body = {"model": "auto", "messages": [{"role": "user", "content": "after"}], "max_tokens": 8}
        after = [await http.post("/llm.invoke", json=body) for _ in range(5)]
    assert [r.status_code for r in after] == [200] * 5
    outcomes += [Outcome(200, r.json()["request_id"]) for r in after]

    figures = await settle_and_check(chaos_stack, outcomes, "kill the budget leader", BUDGET_TOTAL + 5)
    assert figures["completed"] >= BUDGET_TOTAL * 0.2
