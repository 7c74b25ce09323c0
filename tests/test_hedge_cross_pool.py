"""Hedged requests across worker pools, through real processes: NATS, ledger (chDB), budget
authority, router, ingress and two provider pools, one worker serving only `openai` and one
serving only `anthropic` (the default topology), against a fake OpenAI upstream whose first
token is sometimes seconds late and a fake Anthropic upstream.

The hedge target is the other provider, so the race is run by the openai worker with a racer in
the anthropic pool (services/providers/hedge_remote.py). Asserted: which provider's answer the
client got (each answers with its own text), that the loser's upstream connection was closed
in whichever pool it ran (the fake records the disconnect), the rationale, that the request has
exactly one ledger row (none for the racer's key) whose cost is the sum of its attempt rows.
No timed assertions; waits are bounded polls.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from switchyard.testing.stack import Stack, ledger_sql, running, wait_for_rows, wait_until
from tests.fakes import AnthropicFake, OpenAIFake
from tests.fakes.base import Behavior, FakeUpstream

LATE_S = 5.0  # a late first token, far beyond the hedge delay
PRIMARY, BACKUP = "gpt-primary", "claude-backup"
PRIMARY_TEXT, BACKUP_TEXT = "answer from openai", "answer from anthropic"

CONFIG = """
[demo]
enabled = false

[[deployments]]
id = "oa/gpt"
provider = "openai"
model = "gpt-primary"
base_url = "{openai}"
api_key = "sk-hedge-oa"
quality = 1.0
price = {{ input = 1.0, output = 2.0 }}

[[deployments]]
id = "an/claude"
provider = "anthropic"
model = "claude-backup"
base_url = "{anthropic}"
api_key = "sk-hedge-an"
quality = 0.5
price = {{ input = 3.0, output = 4.0 }}

[routes.hedged]
deployments = ["oa/gpt", "an/claude"]
weights = {{ quality = 1 }}
hedge = {{ delay_ms = 300, max_share = 1.0 }}
"""


@pytest.fixture(scope="module")
def openai() -> Iterator[OpenAIFake]:
    upstream = OpenAIFake(api_key="sk-hedge-oa").start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def anthropic() -> Iterator[AnthropicFake]:
    upstream = AnthropicFake(api_key="sk-hedge-an").start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def pools(openai: OpenAIFake, anthropic: AnthropicFake) -> Iterator[Stack]:
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-hedge-pools-"))
    config = workdir / "switchyard.toml"
    config.write_text(CONFIG.format(openai=openai.base_url, anthropic=anthropic.base_url))
    stack = Stack.create(workdir, SWITCHYARD_CONFIG_FILE=str(config), SWITCHYARD_BUDGET_TIMEOUT_S="15")
    with running(stack):
        stack.start(
            ("ledger", "services.ledger"),
            ("budget", "services.budget"),
            ("worker-openai", "services.providers", "--provider", "openai"),
            ("worker-anthropic", "services.providers", "--provider", "anthropic"),
            ("router", "services.router"),
            ("ingress", "services.ingress"),
        )
        stack.provision()
        yield stack


@pytest.fixture(autouse=True)
def late_primary(openai: OpenAIFake, anthropic: AnthropicFake) -> Iterator[None]:
    for fake in (openai, anthropic):
        fake.reset()
    openai.behave(Behavior(text=PRIMARY_TEXT, delay_s=LATE_S), model=PRIMARY)
    anthropic.behave(Behavior(text=BACKUP_TEXT), model=BACKUP)
    yield
    for fake in (openai, anthropic):
        fake.reset()


def body(stream: bool = False) -> dict:
    return {
        "model": "hedged",
        "max_tokens": 16,
        "stream": stream,
        "messages": [{"role": "user", "content": "hedge me across pools"}],
    }


async def post(stack: Stack, stream: bool = False) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.ingress_url, headers=stack.headers, timeout=60) as http:
        response = await http.post("/llm.invoke", json=body(stream))
    assert response.status_code == 200, response.text
    return response


def hedges(stack: Stack, worker: str) -> tuple[float, float]:
    """A worker's (fired, won) hedge counters on route `hedged`."""
    [service] = [s for s in stack.services if s.name == worker]
    counts = {"switchyard_hedges_fired_total": 0.0, "switchyard_hedges_won_total": 0.0}
    for family in text_string_to_metric_families(httpx.get(service.metrics_url, timeout=5).text):
        for sample in family.samples:
            if sample.name in counts and sample.labels.get("route") == "hedged":
                counts[sample.name] += sample.value
    return counts["switchyard_hedges_fired_total"], counts["switchyard_hedges_won_total"]


def disconnected(fake: FakeUpstream, model: str) -> None:
    wait_until(
        lambda: any(r.model == model and r.outcome == "client_disconnected" for r in fake.requests),
        timeout_s=LATE_S * 2,
        what=f"the {model} upstream call closed by the gateway",
    )


async def recorded_once(stack: Stack, request_id: str) -> tuple[dict, dict[str, dict]]:
    """The request's one ledger row and its attempt rows by deployment; the sum is checked."""
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
    # Exactly once: no row for the racer's key (`<id>~h1`), which only the other pool saw.
    others = await ledger_sql(
        stack.nats.url,
        "SELECT request_id FROM requests WHERE startsWith(request_id, {id:String})",
        {"id": request_id},
    )
    assert [r["request_id"] for r in others] == [request_id]
    assert len(attempts) == 2
    total = sum((Decimal(str(a["cost_usd"])) for a in attempts), Decimal(0))
    assert Decimal(str(request["cost_usd"])) == total
    return request, {a["deployment_id"]: a for a in attempts}


async def test_a_late_first_token_is_raced_in_the_other_pool_and_the_hedge_wins(
    pools: Stack, openai: OpenAIFake, anthropic: AnthropicFake
) -> None:
    fired, won = hedges(pools, "worker-openai")
    data = (await post(pools)).json()
    assert data["message"]["content"] == BACKUP_TEXT
    # Counted once, by the racing worker; the racer's worker runs a call, not a race.
    assert hedges(pools, "worker-openai") == (fired + 1, won + 1)
    assert hedges(pools, "worker-anthropic") == (0, 0)
    assert data["deployment"] == "an/claude"
    hedge = data["rationale"]["hedge"]
    assert hedge["armed"] and hedge["fired"] and hedge["hedge_won"]
    assert hedge["target"] == "an/claude" and hedge["winner"] == "an/claude"
    # Not before its delay; the timer and this figure read different clocks (299.902 seen once).
    assert hedge["fired_after_ms"] >= 299
    assert "skipped" not in hedge
    disconnected(openai, PRIMARY)  # the loser, in this worker's own pool

    request, by_deployment = await recorded_once(pools, data["request_id"])
    loser, winner = by_deployment["oa/gpt"], by_deployment["an/claude"]
    assert loser["status"] == "cancelled" and loser["error_code"] == "" and not loser["hedge"]
    assert winner["status"] == "ok" and winner["hedge"]
    # The loser reported nothing before its cancel: billed for the prompt it was sent.
    assert int(loser["prompt_tokens"]) > 0 and int(loser["completion_tokens"]) == 0
    assert Decimal(str(loser["cost_usd"])) > 0
    # The winner is billed at its own provider's price for what the other pool's call used.
    assert int(winner["completion_tokens"]) > 0
    assert Decimal(data["cost_usd"]) == Decimal(str(request["cost_usd"]))
    assert request["deployment_id"] == "an/claude" and request["status"] == "ok"
    assert [r.model for r in anthropic.requests] == [BACKUP]  # one hedge, one upstream call


async def test_a_stream_commits_to_the_other_pools_winner_before_any_chunk(
    pools: Stack, openai: OpenAIFake
) -> None:
    # Both answer in several chunks; the client must see one answer only.
    openai.behave(Behavior(text=PRIMARY_TEXT, delay_s=LATE_S, chunk_delay_s=0.01), model=PRIMARY)
    response = await post(pools, stream=True)
    events = [orjson.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
    assert "".join(e.get("delta", "") for e in events) == BACKUP_TEXT
    final = events[-1]
    assert final["rationale"]["hedge"]["hedge_won"] and final["rationale"]["hedge"]["fired"]
    assert final["deployment"] == "an/claude"
    disconnected(openai, PRIMARY)
    _, by_deployment = await recorded_once(pools, final["request_id"])
    assert by_deployment["oa/gpt"]["status"] == "cancelled" and by_deployment["an/claude"]["status"] == "ok"


async def test_when_the_first_token_comes_first_the_other_pools_racer_is_cancelled(
    pools: Stack, openai: OpenAIFake, anthropic: AnthropicFake
) -> None:
    """The primary is late (the hedge fires) but not as late as the hedge: the primary wins and
    the racer in the anthropic pool is cancelled over the bus, closing its upstream connection."""
    openai.behave(Behavior(text=PRIMARY_TEXT, delay_s=1.0), model=PRIMARY)
    anthropic.behave(Behavior(text=BACKUP_TEXT, delay_s=LATE_S), model=BACKUP)
    data = (await post(pools)).json()
    assert data["message"]["content"] == PRIMARY_TEXT
    hedge = data["rationale"]["hedge"]
    assert hedge["fired"] and hedge["target"] == "an/claude"
    assert hedge["winner"] == "oa/gpt" and not hedge.get("hedge_won", False)
    disconnected(anthropic, BACKUP)  # closed by the anthropic pool's worker on the cancel

    _, by_deployment = await recorded_once(pools, data["request_id"])
    loser, winner = by_deployment["an/claude"], by_deployment["oa/gpt"]
    assert loser["status"] == "cancelled" and loser["hedge"] and loser["error_code"] == ""
    assert int(loser["prompt_tokens"]) > 0 and int(loser["completion_tokens"]) == 0
    assert winner["status"] == "ok"


async def test_a_prompt_first_token_is_not_hedged(
    pools: Stack, openai: OpenAIFake, anthropic: AnthropicFake
) -> None:
    """The primary is late only sometimes: when it is on time no second call is made."""
    openai.behave(Behavior(text=PRIMARY_TEXT), model=PRIMARY)
    data = (await post(pools)).json()
    assert data["message"]["content"] == PRIMARY_TEXT
    hedge = data["rationale"]["hedge"]
    assert hedge["armed"] and not hedge["fired"]
    assert anthropic.requests == []
    [request] = await wait_for_rows(
        pools.nats.url,
        "SELECT cost_usd FROM requests FINAL WHERE request_id = {id:String}",
        1,
        {"id": data["request_id"]},
    )
    assert Decimal(str(request["cost_usd"])) == Decimal(data["cost_usd"])


async def test_a_client_that_leaves_the_other_pools_winner_mid_stream_cancels_it_there(
    pools: Stack, openai: OpenAIFake, anthropic: AnthropicFake
) -> None:
    """The racer in the anthropic pool won and is streaming through the racing worker when the
    client goes away: the cancel reaches the other pool (its upstream connection closes) and
    the request is recorded once, billed for what each racer used."""
    words = " ".join(f"word{i}" for i in range(40))
    anthropic.behave(Behavior(text=words, chunk_delay_s=0.15), model=BACKUP)
    async with (
        httpx.AsyncClient(base_url=pools.ingress_url, headers=pools.headers, timeout=60) as http,
        http.stream("POST", "/llm.invoke", json=body(stream=True)) as response,
    ):
        request_id = response.headers["x-request-id"]
        received = 0
        async for line in response.aiter_lines():
            if line.startswith("event: chunk"):
                received += 1
                if received == 3:
                    break  # the client goes away
    disconnected(anthropic, BACKUP)  # closed in the other pool
    disconnected(openai, PRIMARY)  # the race's loser, closed when the racer claimed
    request, by_deployment = await recorded_once(pools, request_id)
    assert request["status"] == "cancelled"
    winner, loser = by_deployment["an/claude"], by_deployment["oa/gpt"]
    assert winner["status"] == "cancelled" and winner["hedge"]
    assert 3 <= int(winner["completion_tokens"]) < 40  # at least what reached the client
    assert loser["status"] == "cancelled" and int(loser["completion_tokens"]) == 0
