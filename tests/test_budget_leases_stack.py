"""Budget leases through real processes: two budget processes and two routers (router processes,
or ingress processes running the router themselves, with or without a provider worker inside
them as well), the leader SIGKILLed while routers hold
leases it granted, then a burst of 200 concurrent requests against a cap that fits far fewer
(docs/budgets.md, "Leases")."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import tempfile
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from switchyard.testing.stack import ROUTER_MODES, Stack, ledger_sql, running, wait_until
from tests.support.budgets import invoke, scope_spent, set_budget, settled_cost, spend

pytestmark = pytest.mark.timeout(300)  # seven processes and a takeover on a machine others may load


# Two routers either way: two router processes behind one ingress ("service"), or two ingress
# processes each running the router itself ("ingress"), the requests spread over both; and the
# same with a provider worker inside each ingress too (SWITCHYARD_WORKER_MODE=ingress: its
# router hands requests to it by a direct call, no worker process).
@pytest.fixture(
    scope="module",
    params=[*((mode, "service") for mode in ROUTER_MODES), ("ingress", "ingress")],
    ids=[*ROUTER_MODES, "ingress-with-worker"],
)
def leased(request: pytest.FixtureRequest) -> Iterator[Stack]:
    router_mode, worker_mode = request.param
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-leases-"))
    stack = Stack.create(
        workdir,
        SWITCHYARD_ROUTER_MODE=router_mode,
        SWITCHYARD_WORKER_MODE=worker_mode,
        SWITCHYARD_DEMO_LATENCY_MS="2",
        SWITCHYARD_BUDGET_LEASE_TTL_S="1.5",
        SWITCHYARD_BUDGET_TIMEOUT_S="15",  # counts, not speed, on a loaded machine
        # Leases outlive the takeover, so the routers still admit from the dead leader's grants
        # after it: the successor must hold them (from its snapshot or the journal) or overshoot.
        SWITCHYARD_BUDGET_ESCROW_TTL_S="60",
    )
    with running(stack):
        stack.start(("ledger", "services.ledger"))  # embedded chDB starts slowest: alone first
        stack.start(
            ("budget", "services.budget"),
            ("budget", "services.budget"),
            *stack.workers(["demo"]),
            *stack.routers("router", "router"),
            ("ingress", "services.ingress"),
            *([("ingress", "services.ingress")] if router_mode == "ingress" else []),
        )
        stack.provision()
        yield stack


async def test_leases_outstanding_at_a_leader_kill_never_pass_the_cap(leased: Stack) -> None:
    key = leased.provision("escrow")
    cost = await settled_cost(leased, key, "escrow")
    set_budget(leased, "project", "escrow", "day", cost * 51)  # 50 more requests fit

    # Warm-up, one at a time: each router's first request is decided by the authority and
    # brings a lease back; the rest are admitted from it without asking.
    urls = leased.ingress_urls()
    for i in range(12):
        async with httpx.AsyncClient(base_url=urls[i % len(urls)], timeout=30) as http:
            assert (await invoke(http, key)).status_code == 200
    status = spend(leased, "escrow")
    assert status["leases"] >= 1, status  # leases outstanding, with room left in them

    old = wait_until(leased.budget_leader, 20, what="the budget leader")
    old.stop(signal.SIGKILL)
    wait_until(
        lambda: (new := leased.budget_leader()) is not None and new is not old,
        timeout_s=20,
        what="a new budget leader",
    )

    # One burst, its requests alternating over the ingresses (over the routers, as a queue group
    # spreads them): a router whose share ended first would leave its renewed lease's rest idle.
    async with contextlib.AsyncExitStack() as clients:
        https = [
            await clients.enter_async_context(
                httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=200))
            )
            for url in urls
        ]
        responses = await asyncio.gather(*[invoke(https[i % len(https)], key) for i in range(200)])
    codes = [r.status_code for r in responses]
    # Every hold is the request's true cost (the demo bills its estimate): 13 spent before, so
    # exactly 38 more fit. More would be an overshoot (the dead leader's leases not honoured),
    # fewer a phantom denial (a lease's unused rest never coming back).
    refused = sorted({(r.status_code, r.json()["error"]["code"]) for r in responses if r.status_code != 200})
    assert codes.count(200) == 38, refused
    assert codes.count(402) == 162, refused
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 402} == {"budget_exceeded"}

    wait_until(
        lambda: scope_spent(spend(leased, "escrow"), "project:escrow") == cost * 51,
        timeout_s=30,
        what="settlement up to the cap",
    )
    rows: list[dict] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        rows = await ledger_sql(
            leased.nats.url,
            "SELECT count() AS n, toString(sum(cost_usd)) AS spent FROM requests FINAL "
            "WHERE project_id = 'escrow' AND status = 'ok'",
        )
        if rows[0]["n"] >= 51:
            break
        await asyncio.sleep(0.2)
    assert rows[0]["n"] == 51 and Decimal(rows[0]["spent"]) == cost * 51
