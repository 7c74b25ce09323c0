"""Budget-aware downgrade through real processes (docs/routing.md, "Budget-aware downgrade"): a
route that prefers the dear demo/smart keeps serving past 80 % of its project's cap on the cheap
demo/fast, its rationale names the policy and the scope, and the ledger records the saving."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from switchyard.testing.stack import Stack, running, wait_for_rows, wait_until
from tests.support.budgets import bearer, scope_spent, set_budget, spend

CONFIG = """
[routes.thrifty]
deployments = ["demo/smart", "demo/fast"]
strategy = "best"
downgrade = { at_pct = 80 }
"""
BODY = {"model": "thrifty", "max_tokens": 24, "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(scope="module")
def dstack() -> Iterator[Stack]:
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-downgrade-"))
    config = workdir / "switchyard.toml"
    config.write_text(CONFIG)
    stack = Stack.create(
        workdir,
        SWITCHYARD_CONFIG_FILE=str(config),
        SWITCHYARD_DEMO_LATENCY_MS="2",
        SWITCHYARD_BUDGET_TIMEOUT_S="15",
    )
    with running(stack):
        stack.start_all()
        yield stack


def ask(stack: Stack, key: str) -> httpx.Response:
    return httpx.post(f"{stack.ingress_url}/llm.invoke", json=BODY, headers=bearer(key), timeout=30)


def settled(stack: Stack, spent: Decimal) -> None:
    wait_until(
        lambda: scope_spent(spend(stack, "thrift"), "project:thrift") == spent,
        timeout_s=20,
        what="settlement",
    )


@pytest.mark.timeout(300)  # a whole stack starts on a machine others may load
async def test_a_downgrade_route_keeps_serving_past_80_percent_on_the_cheaper_deployment(
    dstack: Stack,
) -> None:
    key = dstack.provision("thrift")
    first = ask(dstack, key).json()
    assert first["deployment"] == "demo/smart"  # the route prefers quality
    smart = Decimal(first["cost_usd"])
    settled(dstack, smart)
    cap = smart * 5
    set_budget(dstack, "project", "thrift", "day", cap)
    spent = smart
    for _ in range(3):  # up to 80 % on the dear deployment
        answer = ask(dstack, key).json()
        assert answer["deployment"] == "demo/smart", answer
        spent += Decimal(answer["cost_usd"])
        settled(dstack, spent)
    assert spent == cap * Decimal("0.8")
    time.sleep(1.5)  # the budget leader publishes its pressure every 0.5 s

    served = []
    for _ in range(8):  # past 80 %: without the policy the next smart request would be the last
        r = ask(dstack, key)
        assert r.status_code == 200, r.text
        served.append(r.json())
    assert {a["deployment"] for a in served} == {"demo/fast"}
    fast = Decimal(served[0]["cost_usd"])
    assert fast < smart
    rationale = served[0]["rationale"]
    assert "route thrifty downgrades to cheapest at 80 %" in rationale["reason"]
    assert "project:thrift has 80.0 % of its day cap" in rationale["reason"]
    assert rationale["chain"] == ["demo/fast"]  # never failing over to the dearer one

    ids = [a["request_id"] for a in served]
    rows = await wait_for_rows(
        dstack.nats.url,
        "SELECT request_id, deployment_id, cost_usd, downgrade_saved_usd, rationale "
        "FROM requests FINAL WHERE request_id IN {ids:Array(String)}",
        len(ids),
        {"ids": ids},
        timeout_s=30,
    )
    for row in rows:
        # Against demo/smart (25x the price of demo/fast for the same tokens): 24x the bill saved.
        assert Decimal(str(row["downgrade_saved_usd"])) == Decimal(str(row["cost_usd"])) * 24
        assert Decimal(str(row["downgrade_saved_usd"])) == smart - fast
        assert '"undowngraded_winner":"demo/smart"' in row["rationale"].replace(" ", "")
