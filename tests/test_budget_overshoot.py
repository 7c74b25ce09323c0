"""Caps hold whatever the estimate (docs/budgets.md, "The bound"): two budget processes, two
routers, one worker, fake OpenAI-wire upstreams whose actual usage differs from the estimate.

Each case is the issue's measurement scaled down (60 concurrent requests, a cap of 15 holds):
a failover from a cheap deployment that answers 503 to one 100 times pricier; a CJK prompt
billed one token per character on a provider without a local tokenizer; a stream that runs
past its max_tokens. Spend is read from the budget authority once every hold is settled.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import pytest

from switchyard.pricing import Price, cost_usd
from switchyard.testing.stack import Stack, running, wait_until
from switchyard.tokens import O200K, estimate_prompt_tokens, pessimistic_text_tokens, text_counter
from switchyard.v1 import invoke_pb2
from tests.fakes import Behavior, OpenAIFake
from tests.support.budgets import bearer, set_budget, spend

KEY = "sk-overshoot"
MAX_TOKENS = 16
BURST = 60
HOLDS_IN_CAP = 15
CHEAP, PRICEY = Price.of("1", "1"), Price.of("100", "100")
CJK_PROMPT = "日本語の文章を書きます。" * 6  # 72 characters

CONFIG = f"""
[demo]
enabled = false

[[deployments]]
id = "cheap"
provider = "openai"
model = "cheap-model"
base_url = "{{base_url}}"
api_key = "{KEY}"
price = {{{{ input = 1, output = 1 }}}}

[[deployments]]
id = "pricey"
provider = "openai"
model = "pricey-model"
base_url = "{{base_url}}"
api_key = "{KEY}"
price = {{{{ input = 100, output = 100 }}}}

[[deployments]]
id = "cjk"
provider = "compat"
adapter = "openai_compat"
model = "cjk-model"
base_url = "{{base_url}}"
api_key = "{KEY}"
price = {{{{ input = 1, output = 1 }}}}

[[deployments]]
id = "runaway"
provider = "openai"
model = "runaway-model"
base_url = "{{base_url}}"
api_key = "{KEY}"
price = {{{{ input = 1, output = 1 }}}}

[routes.failover]
deployments = ["cheap", "pricey"]
strategy = "cheapest"
"""


def prompt_request(text: str) -> invoke_pb2.InvokeRequest:
    request = invoke_pb2.InvokeRequest()
    request.messages.add(role=invoke_pb2.ROLE_USER).content.add(text=text)
    return request


HELLO_TOKENS = estimate_prompt_tokens(prompt_request("hello"), O200K)
ONE_OUTPUT_TOKEN = cost_usd(CHEAP, 0, 1)


@pytest.fixture(scope="module")
def fake() -> Iterator[OpenAIFake]:
    upstream = OpenAIFake(api_key=KEY).start()
    upstream.behave(Behavior(status=503), model="cheap-model")
    # The pricier deployment bills exactly what the router's hold assumed for it.
    upstream.behave(
        Behavior(text="fine", prompt_tokens=HELLO_TOKENS, completion_tokens=MAX_TOKENS), model="pricey-model"
    )
    # A provider without a local tokenizer that bills one token per CJK character (the chars / 4
    # rule counted a quarter of that).
    upstream.behave(
        Behavior(text="好", prompt_tokens=len(CJK_PROMPT), completion_tokens=MAX_TOKENS), model="cjk-model"
    )
    # A model that ignores max_tokens: 200 one-token chunks (the usage it reports comes last).
    upstream.behave(Behavior(text=" ".join(["word"] * 200)), model="runaway-model")
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def stack(fake: OpenAIFake) -> Iterator[Stack]:
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-overshoot-"))
    config = workdir / "switchyard.toml"
    config.write_text(CONFIG.format(base_url=fake.base_url))
    stack = Stack.create(
        workdir,
        SWITCHYARD_CONFIG_FILE=str(config),
        SWITCHYARD_BUDGET_TIMEOUT_S="15",  # counts, not speed, on a loaded 2-core machine
        SWITCHYARD_BUDGET_LEASE_TTL_S="1.5",
    )
    with running(stack):
        stack.start(
            ("ledger", "services.ledger"),
            ("budget", "services.budget"),
            ("budget", "services.budget"),
            ("worker", "services.providers", "--provider", "openai", "--provider", "compat"),
            ("router", "services.router"),
            ("router", "services.router"),
            ("ingress", "services.ingress"),
        )
        yield stack


def body(model: str, text: str = "hello", stream: bool = False) -> dict:
    return {
        "model": model,
        "max_tokens": MAX_TOKENS,
        "stream": stream,
        "messages": [{"role": "user", "content": text}],
    }


async def burst(stack: Stack, key: str, payload: dict, count: int = BURST) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(base_url=stack.ingress_url, timeout=60, limits=limits) as http:
        return await asyncio.gather(
            *[http.post("/llm.invoke", json=payload, headers=bearer(key)) for _ in range(count)]
        )


def settled_spend(stack: Stack, project: str) -> Decimal:
    """The project's day spend once no hold is left (every admitted request settled)."""
    scope = f"project:{project}"

    def day() -> dict:
        for entry in spend(stack, project)["scopes"]:
            if entry["scope"] == scope:
                return entry["periods"]["day"]
        return {"spent_usd": "0", "reserved_usd": "0"}

    wait_until(lambda: Decimal(day()["reserved_usd"]) == 0, timeout_s=30, what="every hold settled")
    return Decimal(day()["spent_usd"])


def sse_events(response: httpx.Response) -> list[dict]:
    """The native API's stream: `chunk` events ({"delta"}), then `final` or `error`."""
    return [orjson.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]


def deltas(events: list[dict]) -> list[str]:
    return [e["delta"] for e in events if e.get("delta")]


def error_codes(events: list[dict]) -> list[str]:
    return [e["error"]["code"] for e in events if "error" in e]


async def test_a_failover_to_a_pricier_deployment_stays_within_the_cap(
    stack: Stack, fake: OpenAIFake
) -> None:
    """Before: only the cheap first deployment was reserved (1/100 of what the pricey one bills),
    so the whole burst was admitted and spend reached several times the cap."""
    key = stack.provision("failover")
    hold = cost_usd(PRICEY, HELLO_TOKENS, MAX_TOKENS)  # the chain's maximum, not the first's
    cap = hold * HOLDS_IN_CAP
    set_budget(stack, "project", "failover", "day", cap)

    responses = await burst(stack, key, body("failover"))
    ok = [r for r in responses if r.status_code == 200]
    assert {r.status_code for r in responses} <= {200, 402}, {r.text for r in responses}
    assert {r.json()["deployment"] for r in ok} == {"pricey"}
    # Every hold is the request's true cost here: exactly the cap's worth is admitted.
    assert len(ok) == HOLDS_IN_CAP
    assert settled_spend(stack, "failover") == cap


async def test_a_cjk_prompt_billed_a_token_per_character_stays_within_the_cap(stack: Stack) -> None:
    """Before: chars / 4 counted 18 prompt tokens for 72 billed; the burst overshot the cap."""
    key = stack.provision("cjk")
    estimate = pessimistic_text_tokens(CJK_PROMPT)
    assert estimate >= len(CJK_PROMPT)  # never under the provider's one token per character
    hold = cost_usd(CHEAP, estimate_prompt_tokens(prompt_request(CJK_PROMPT), "pessimistic"), MAX_TOKENS)
    cap = hold * HOLDS_IN_CAP
    set_budget(stack, "project", "cjk", "day", cap)

    responses = await burst(stack, key, body("cjk", CJK_PROMPT))
    ok = [r for r in responses if r.status_code == 200]
    assert {r.status_code for r in responses} <= {200, 402}, {r.text for r in responses}
    actual = cost_usd(CHEAP, len(CJK_PROMPT), MAX_TOKENS)
    assert {Decimal(r.json()["cost_usd"]) for r in ok} == {actual}  # differs from the estimate
    assert len(ok) >= HOLDS_IN_CAP  # no phantom denial: holds settle down to actual costs
    assert settled_spend(stack, "cjk") <= cap


async def test_a_stream_is_stopped_at_its_hold_with_an_in_band_budget_exceeded(
    stack: Stack, fake: OpenAIFake
) -> None:
    key = stack.provision("runaway")
    hold = cost_usd(CHEAP, HELLO_TOKENS, MAX_TOKENS)
    set_budget(stack, "project", "runaway", "day", hold * 1000)

    async with httpx.AsyncClient(base_url=stack.ingress_url, timeout=60) as http:
        response = await http.post("/llm.invoke", json=body("runaway", stream=True), headers=bearer(key))
    events = sse_events(response)
    assert error_codes(events) == ["budget_exceeded"], events[-3:]
    # The hold covers the estimated prompt and max_tokens: 16 one-token chunks, not 200.
    delivered = deltas(events)
    assert len(delivered) == MAX_TOKENS
    # Billed for what was delivered, counted with the deployment's encoding: the fake's pieces
    # end in a space ("word "), so the text counts one token more than its 16 chunks.
    billed = cost_usd(CHEAP, HELLO_TOKENS, text_counter(O200K)("".join(delivered)))
    assert settled_spend(stack, "runaway") == billed <= hold + ONE_OUTPUT_TOKEN

    # The same stream for a project without a budget is not a cap's business: it runs to the end.
    free = stack.provision("uncapped")
    async with httpx.AsyncClient(base_url=stack.ingress_url, timeout=60) as http:
        response = await http.post("/llm.invoke", json=body("runaway", stream=True), headers=bearer(free))
    events = sse_events(response)
    assert not error_codes(events)
    assert len(deltas(events)) == 200


async def test_a_burst_of_runaway_streams_stays_within_the_cap(stack: Stack) -> None:
    key = stack.provision("runaways")
    hold = cost_usd(CHEAP, HELLO_TOKENS, MAX_TOKENS)
    cap = hold * HOLDS_IN_CAP
    set_budget(stack, "project", "runaways", "day", cap)

    responses = await burst(stack, key, body("runaway", stream=True))
    admitted = [r for r in responses if r.status_code == 200]
    assert {r.status_code for r in responses} <= {200, 402}, {r.text for r in responses}
    # Each stopped stream is billed one token above its hold (the fake's pieces end in a space),
    # so a stream settled before the last authorization leaves no room for a 15th hold.
    assert HOLDS_IN_CAP - 1 <= len(admitted) <= HOLDS_IN_CAP
    for r in admitted:
        assert error_codes(sse_events(r)) == ["budget_exceeded"]
    assert settled_spend(stack, "runaways") <= cap + HOLDS_IN_CAP * ONE_OUTPUT_TOKEN
