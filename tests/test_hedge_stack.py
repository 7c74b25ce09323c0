"""Hedged requests through real processes: NATS, ledger (chDB), budget authority, router, one
OpenAI worker and ingress, against one fake OpenAI upstream whose `gpt-slow` model is seconds
late with its first token while `gpt-fast` answers at once.

What is asserted is behaviour that can fail: which deployment's answer the client got (each
model answers with its own text), that the loser's upstream connection was closed (the fake
records the disconnect), the rationale, and the ledger's attempt rows adding up to the request's
cost. No timed assertions; waits are bounded polls.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import pytest

from switchyard.testing.stack import Stack, ledger_sql, running, wait_for_rows, wait_until
from tests.fakes import OpenAIFake
from tests.fakes.base import Behavior

LATE_S = 5.0  # the slow model's first token, far beyond the hedge delay

CONFIG = """
[demo]
enabled = false

[[deployments]]
id = "slow/gpt"
provider = "openai"
model = "gpt-slow"
base_url = "{base_url}"
api_key = "sk-hedge"
quality = 1.0
price = {{ input = 1.0, output = 2.0 }}

[[deployments]]
id = "fast/gpt"
provider = "openai"
model = "gpt-fast"
base_url = "{base_url}"
api_key = "sk-hedge"
quality = 0.5
price = {{ input = 1.0, output = 2.0 }}

[routes.hedged]
deployments = ["slow/gpt", "fast/gpt"]
weights = {{ quality = 1 }}
hedge = {{ delay_ms = 300, max_share = 1.0 }}

[routes.pinned]
deployments = ["slow/gpt", "fast/gpt"]
weights = {{ quality = 1 }}
"""


@pytest.fixture(scope="module")
def fake() -> Iterator[OpenAIFake]:
    upstream = OpenAIFake(api_key="sk-hedge").start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def hstack(fake: OpenAIFake) -> Iterator[Stack]:
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-hedge-"))
    config = workdir / "switchyard.toml"
    config.write_text(CONFIG.format(base_url=fake.base_url))
    stack = Stack.create(workdir, SWITCHYARD_CONFIG_FILE=str(config), SWITCHYARD_BUDGET_TIMEOUT_S="15")
    with running(stack):
        stack.start(
            ("ledger", "services.ledger"),
            ("budget", "services.budget"),
            ("worker-openai", "services.providers", "--provider", "openai"),
            ("router", "services.router"),
            ("ingress", "services.ingress"),
        )
        stack.provision()
        yield stack


@pytest.fixture(autouse=True)
def slow_first_token(fake: OpenAIFake) -> Iterator[None]:
    fake.reset()
    fake.behave(Behavior(text="late answer from slow", delay_s=LATE_S), model="gpt-slow")
    fake.behave(Behavior(text="quick answer from fast"), model="gpt-fast")
    yield
    fake.reset()


def body(route: str, stream: bool = False, **extra: object) -> dict:
    return {
        "model": route,
        "max_tokens": 16,
        "stream": stream,
        "messages": [{"role": "user", "content": "hedge me"}],
        **extra,
    }


async def ledger_rows(stack: Stack, request_id: str) -> tuple[dict, list[dict]]:
    [request] = await wait_for_rows(
        stack.nats.url,
        "SELECT cost_usd, status, deployment_id FROM requests FINAL WHERE request_id = {id:String}",
        1,
        {"id": request_id},
    )
    attempts = await ledger_sql(
        stack.nats.url,
        "SELECT deployment_id, status, error_code, hedge, cost_usd, prompt_tokens, completion_tokens "
        "FROM attempts FINAL WHERE request_id = {id:String} ORDER BY attempt_no",
        {"id": request_id},
    )
    return request, attempts


def loser_disconnected(fake: OpenAIFake) -> None:
    wait_until(
        lambda: any(r.model == "gpt-slow" and r.outcome == "client_disconnected" for r in fake.requests),
        timeout_s=LATE_S * 2,
        what="the slow upstream call closed by the gateway",
    )


async def test_a_late_first_answer_is_raced_and_the_hedge_wins(hstack: Stack, fake: OpenAIFake) -> None:
    async with httpx.AsyncClient(base_url=hstack.ingress_url, headers=hstack.headers, timeout=60) as http:
        response = await http.post("/llm.invoke", json=body("hedged"))
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["message"]["content"] == "quick answer from fast"
    assert data["deployment"] == "fast/gpt"
    hedge = data["rationale"]["hedge"]
    assert hedge["armed"] and hedge["fired"] and hedge["hedge_won"]
    assert (
        hedge["delay_source"] == "fixed" and hedge["target"] == "fast/gpt" and hedge["winner"] == "fast/gpt"
    )
    assert hedge["fired_after_ms"] >= 300
    loser_disconnected(fake)

    request, attempts = await ledger_rows(hstack, data["request_id"])
    by_deployment = {a["deployment_id"]: a for a in attempts}
    assert set(by_deployment) == {"slow/gpt", "fast/gpt"}
    loser, winner = by_deployment["slow/gpt"], by_deployment["fast/gpt"]
    assert loser["status"] == "cancelled" and loser["error_code"] == "" and not loser["hedge"]
    assert winner["status"] == "ok" and winner["hedge"]
    # The loser reported nothing before its cancel: it is billed for the prompt it was sent.
    assert int(loser["prompt_tokens"]) > 0 and int(loser["completion_tokens"]) == 0
    assert Decimal(str(loser["cost_usd"])) > 0
    total = Decimal(str(loser["cost_usd"])) + Decimal(str(winner["cost_usd"]))
    assert Decimal(str(request["cost_usd"])) == total
    assert Decimal(data["cost_usd"]) == total


async def test_a_stream_commits_to_the_winner_before_any_chunk(hstack: Stack, fake: OpenAIFake) -> None:
    """The request sets its own delay in the header; the client's stream carries the winner's
    text only."""
    async with httpx.AsyncClient(base_url=hstack.ingress_url, headers=hstack.headers, timeout=60) as http:
        response = await http.post(
            "/llm.invoke", json=body("hedged", stream=True), headers={"x-switchyard-hedge": "200ms"}
        )
    assert response.status_code == 200, response.text
    events = [orjson.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
    text = "".join(e.get("delta", "") for e in events)
    assert text == "quick answer from fast"
    final = events[-1]
    assert final["rationale"]["hedge"]["delay_source"] == "request"
    assert final["rationale"]["hedge"]["hedge_won"]
    loser_disconnected(fake)


async def test_a_request_may_ask_for_a_hedge_on_a_route_without_a_policy_within_its_share_cap(
    hstack: Stack, fake: OpenAIFake
) -> None:
    """The default policy caps hedges at 10 % of the route's requests: the first request this
    worker sees on the route cannot be hedged (1 in 1), and the rationale says so."""
    fake.behave(Behavior(text="late answer from slow", delay_s=0.5), model="gpt-slow")
    async with httpx.AsyncClient(base_url=hstack.ingress_url, headers=hstack.headers, timeout=60) as http:
        response = await http.post("/llm.invoke", json=body("pinned"), headers={"x-switchyard-hedge": "on"})
    assert response.status_code == 200, response.text
    hedge = response.json()["rationale"]["hedge"]
    assert hedge["armed"] and not hedge["fired"]
    assert hedge["skipped"] == "the route's hedged share is at its cap (10%)"
    assert response.json()["message"]["content"] == "late answer from slow"


async def test_a_request_that_turns_hedging_off_waits_for_the_first_deployment(
    hstack: Stack, fake: OpenAIFake
) -> None:
    fake.behave(Behavior(text="late answer from slow", delay_s=1.0), model="gpt-slow")
    async with httpx.AsyncClient(base_url=hstack.ingress_url, headers=hstack.headers, timeout=60) as http:
        response = await http.post("/llm.invoke", json=body("hedged", hedge=False))
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["message"]["content"] == "late answer from slow"
    assert data["rationale"]["hedge"] == {
        "armed": False,
        "fired": False,
        "skipped": "the request turned hedging off",
    }
    assert not any(r.model == "gpt-fast" for r in fake.requests)
    _, attempts = await ledger_rows(hstack, data["request_id"])
    assert [a["deployment_id"] for a in attempts] == ["slow/gpt"]
