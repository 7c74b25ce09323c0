"""The response cache through real processes: NATS, ledger (chDB), budget authority, router, one
OpenAI worker and TWO ingress processes, against one fake OpenAI upstream; and the same with
each ingress running the router itself (SWITCHYARD_ROUTER_MODE=ingress).

What is asserted can fail: whether the upstream was called (the fake records every request),
which text the client got, the `x-switchyard-cache` header, and the ledger's rows (a hit is a
row with `cache_hit`, cost 0 and the stored answer's cost as its saving, exact as Decimal).
Waits are bounded polls, never timed assertions.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import nats
import orjson
import pytest
from nats.js.errors import NoKeysError

from switchyard import subjects
from switchyard.testing.stack import ROUTER_MODES, Stack, running, wait_for_rows
from tests.fakes import OpenAIFake
from tests.fakes.base import Behavior

pytestmark = pytest.mark.stack

CONFIG = """
[demo]
enabled = false

[[deployments]]
id = "openai/gpt"
provider = "openai"
model = "gpt-cache"
base_url = "{base_url}"
api_key = "sk-cache"
price = {{ input = 3.0, output = 15.0 }}

[routes.cached]
deployments = ["openai/gpt"]
cache = {{ ttl_s = 300 }}

[routes.plain]
deployments = ["openai/gpt"]
"""


@pytest.fixture(scope="module")
def fake() -> Iterator[OpenAIFake]:
    upstream = OpenAIFake(api_key="sk-cache").start()
    yield upstream
    upstream.stop()


# "ingress": each ingress runs the router itself, so the hit on the second ingress is looked up
# by another router than the one whose miss stored it.
@pytest.fixture(scope="module", params=ROUTER_MODES)
def cstack(fake: OpenAIFake, request: pytest.FixtureRequest) -> Iterator[tuple[Stack, str, str]]:
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-cache-"))
    config = workdir / "switchyard.toml"
    config.write_text(CONFIG.format(base_url=fake.base_url))
    stack = Stack.create(
        workdir,
        SWITCHYARD_CONFIG_FILE=str(config),
        SWITCHYARD_BUDGET_TIMEOUT_S="15",
        SWITCHYARD_ROUTER_MODE=request.param,
    )
    with running(stack):
        stack.start(
            ("ledger", "services.ledger"),
            ("budget", "services.budget"),
            ("worker-openai", "services.providers", "--provider", "openai"),
            *stack.routers(),
            ("ingress", "services.ingress"),
        )
        first = stack.ingress_url
        stack.spawn("ingress-2", "services.ingress")  # a second replica: the cache is on the bus
        second = stack.ingress_url
        assert first != second
        stack.provision()
        yield stack, first, second


@pytest.fixture(autouse=True)
def answers(fake: OpenAIFake) -> Iterator[None]:
    fake.reset()
    fake.behave(Behavior(text="the stored answer"))
    yield
    fake.reset()


def body(prompt: str, route: str = "cached", stream: bool = False, **extra: object) -> dict:
    return {
        "model": route,
        "max_tokens": 16,
        "temperature": 0,
        "stream": stream,
        "messages": [{"role": "user", "content": prompt}],
        **extra,
    }


def chat(url: str, key: str, payload: dict, **headers: str) -> httpx.Response:
    r = httpx.post(
        f"{url}/v1/chat/completions",
        json=payload,
        headers={"authorization": f"Bearer {key}", **headers},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r


async def stored(stack: Stack) -> list[bytes]:
    """Every answer in the cache's bucket."""
    nc = await nats.connect(servers=stack.nats.url.split(","))
    try:
        kv = await nc.jetstream().key_value(subjects.RESPONSE_CACHE_BUCKET)
        try:
            keys = await kv.keys()
        except NoKeysError:
            return []
        return [(await kv.get(key)).value or b"" for key in keys]
    finally:
        await nc.close()


async def stored_keys(stack: Stack) -> int:
    return len(await stored(stack))


async def wait_stored(stack: Stack, count: int) -> None:
    """The worker stores an answer just after sending it: wait until the bucket has it."""
    for _ in range(150):
        if await stored_keys(stack) >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the cache never held {count} answers")


async def wait_holding(stack: Stack, text: bytes) -> None:
    for _ in range(150):
        if any(text in value for value in await stored(stack)):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the cache never held {text!r}")


async def row(stack: Stack, request_id: str) -> dict:
    [found] = await wait_for_rows(
        stack.nats.url,
        "SELECT status, cost_usd, cost_saved_usd, cache_hit, stream, prompt_tokens, completion_tokens, "
        "project_id, route FROM requests FINAL WHERE request_id = {id:String}",
        1,
        {"id": request_id},
    )
    return found


async def test_a_repeated_request_is_a_free_hit_on_any_ingress(
    cstack: tuple[Stack, str, str], fake: OpenAIFake
) -> None:
    stack, first_url, second_url = cstack
    before = await stored_keys(stack)
    miss = chat(first_url, stack.api_key, body("cache me once"))
    assert miss.json()["choices"][0]["message"]["content"] == "the stored answer"
    assert "x-switchyard-cache" not in miss.headers
    assert len(fake.requests) == 1
    await wait_stored(stack, before + 1)

    fake.behave(Behavior(text="a fresh answer the cache must not need"))
    hit = chat(second_url, stack.api_key, body("cache me once"))  # the other ingress replica
    assert hit.headers["x-switchyard-cache"] == "hit"
    assert hit.json()["choices"][0]["message"]["content"] == "the stored answer"
    assert len(fake.requests) == 1, "a hit must not call the upstream"

    made = await row(stack, miss.headers["x-request-id"])
    served = await row(stack, hit.headers["x-request-id"])
    assert made["cache_hit"] is False and Decimal(made["cost_usd"]) > 0
    assert served["cache_hit"] is True and served["status"] == "ok"
    assert Decimal(served["cost_usd"]) == 0
    assert Decimal(served["cost_saved_usd"]) == Decimal(made["cost_usd"])
    assert served["prompt_tokens"] == 0 and served["completion_tokens"] == 0  # nothing was used
    assert served["route"] == "cached"


async def test_a_hit_streams_when_the_client_asked_for_a_stream(
    cstack: tuple[Stack, str, str], fake: OpenAIFake
) -> None:
    stack, url, _ = cstack
    before = await stored_keys(stack)
    chat(url, stack.api_key, body("stream me from the cache"))
    await wait_stored(stack, before + 1)
    calls = len(fake.requests)
    streamed = chat(url, stack.api_key, body("stream me from the cache", stream=True))
    events = [
        orjson.loads(line[len("data: ") :])
        for line in streamed.text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices"))
    assert text == "the stored answer"
    assert streamed.text.rstrip().endswith("data: [DONE]")
    assert len(fake.requests) == calls
    served = await row(stack, streamed.headers["x-request-id"])
    assert served["cache_hit"] is True and served["stream"] is True


async def test_never_shared_across_projects(cstack: tuple[Stack, str, str], fake: OpenAIFake) -> None:
    stack, url, _ = cstack
    before = await stored_keys(stack)
    chat(url, stack.api_key, body("project secret"))
    await wait_stored(stack, before + 1)
    other_key = stack.provision("other-project")
    calls = len(fake.requests)
    fake.behave(Behavior(text="the other project's own answer"))
    other = chat(url, other_key, body("project secret"))
    assert other.json()["choices"][0]["message"]["content"] == "the other project's own answer"
    assert "x-switchyard-cache" not in other.headers
    assert len(fake.requests) == calls + 1
    assert (await row(stack, other.headers["x-request-id"]))["cache_hit"] is False


async def test_cache_control_is_honoured(cstack: tuple[Stack, str, str], fake: OpenAIFake) -> None:
    stack, url, _ = cstack
    before = await stored_keys(stack)
    chat(url, stack.api_key, body("control me"))
    await wait_stored(stack, before + 1)
    calls = len(fake.requests)

    fake.behave(Behavior(text="not stored"))
    no_store = chat(url, stack.api_key, body("control me"), **{"cache-control": "no-store"})
    assert no_store.json()["choices"][0]["message"]["content"] == "not stored"
    assert len(fake.requests) == calls + 1

    fake.behave(Behavior(text="refreshed"))
    refreshed = chat(url, stack.api_key, body("control me"), **{"cache-control": "no-cache"})
    assert refreshed.json()["choices"][0]["message"]["content"] == "refreshed"
    assert len(fake.requests) == calls + 2

    await wait_holding(stack, b"refreshed")  # no-cache stores the fresh answer over the old one
    calls = len(fake.requests)
    hit = chat(url, stack.api_key, body("control me"))
    assert hit.headers["x-switchyard-cache"] == "hit"
    assert hit.json()["choices"][0]["message"]["content"] == "refreshed"
    assert len(fake.requests) == calls

    off = chat(url, stack.api_key, body("control me"), **{"x-switchyard-cache": "off"})
    assert "x-switchyard-cache" not in off.headers and len(fake.requests) == calls + 1


async def test_only_deterministic_requests_unless_the_request_opts_in(
    cstack: tuple[Stack, str, str], fake: OpenAIFake
) -> None:
    stack, url, _ = cstack
    sampled = body("sampled", temperature=0.7)
    chat(url, stack.api_key, sampled)
    calls = len(fake.requests)
    second = chat(url, stack.api_key, sampled)
    assert "x-switchyard-cache" not in second.headers and len(fake.requests) == calls + 1

    # A route without a cache caches a request that asks, whatever its temperature.
    asked = body("asked for", route="plain", temperature=0.7)
    before = await stored_keys(stack)
    chat(url, stack.api_key, asked, **{"x-switchyard-cache": "60"})
    await wait_stored(stack, before + 1)
    calls = len(fake.requests)
    hit = chat(url, stack.api_key, asked, **{"x-switchyard-cache": "60"})
    assert hit.headers["x-switchyard-cache"] == "hit" and len(fake.requests) == calls
    plain = chat(url, stack.api_key, asked)  # the same request, not asking: the route does not cache
    assert "x-switchyard-cache" not in plain.headers and len(fake.requests) == calls + 1


def test_a_malformed_cache_header_is_a_clear_400(cstack: tuple[Stack, str, str]) -> None:
    stack, url, _ = cstack
    r = httpx.post(
        f"{url}/v1/chat/completions",
        json=body("bad header"),
        headers={**stack.headers, "x-switchyard-cache": "forever"},
        timeout=30,
    )
    assert r.status_code == 400
    assert "x-switchyard-cache" in r.json()["error"]["message"]
