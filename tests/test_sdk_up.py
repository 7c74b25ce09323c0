"""The official SDKs against a gateway started the README's way: `switchyard up` (what `make run`
runs) in a fresh folder, its catalog from a `switchyard.toml` given by SWITCHYARD_CONFIG_FILE
that points at the local fakes of OpenAI and Anthropic, the development key it prints. Each
answer is checked against its ledger row: the tokens by class and the cost, exact as Decimal.

The `openai` SDK: `responses.create` (plain with a reasoning effort, with tools, with a
json_schema), `responses.stream` (events in order, usage at the end), a `previous_response_id`
follow-up answered by another provider (and its input items), `embeddings.create` (single,
batch, base64). The `anthropic` SDK: `messages.count_tokens` and a request with `cache_control`
blocks (system, tools, tool_use, tool_result) written to the cache and then read from it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal

import anthropic
import openai
import psutil
import pytest

from switchyard.natsserver import free_port
from switchyard.pricing import Price, cost_usd
from switchyard.tenancy_store import read_admin_token
from switchyard.testing.stack import ledger_sql, wait_until
from tests.fakes import AnthropicFake, Behavior, OpenAIFake
from tests.fakes.base import fake_vector, text_tokens

pytestmark = pytest.mark.e2e

OPENAI_KEY = "sk-test-sdk-up-0123456789"
ANTHROPIC_KEY = "sk-ant-test-sdk-up-0123456789"
GPT, GPT5, CLAUDE, EMBED = (
    "openai/gpt-4o-mini",
    "openai/gpt-5-mini",
    "anthropic/claude-haiku-4-5",
    "openai/text-embedding-3-small",
)
PRICES = {
    GPT: Price.of("0.15", "0.60", "0.075"),
    GPT5: Price.of("0.25", "2.00", "0.025"),
    CLAUDE: Price.of("1.00", "5.00", "0.10", "1.25", "2.00"),
    EMBED: Price.of("0.02", "0"),
}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def _price_toml(price: Price) -> str:
    fields = {
        "input": price.input,
        "output": price.output,
        "cached_input": price.cached_input,
        "cache_write": price.cache_write,
        "cache_write_1h": price.cache_write_1h,
    }
    return "{ " + ", ".join(f'{k} = "{v}"' for k, v in fields.items() if v is not None) + " }"


@dataclass
class Gateway:
    base: str
    key: str
    nats_url: str
    admin_token: str
    fakes: dict[str, OpenAIFake | AnthropicFake]


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    fakes: dict[str, OpenAIFake | AnthropicFake] = {
        "openai": OpenAIFake(api_key=OPENAI_KEY).start(),
        "anthropic": AnthropicFake(api_key=ANTHROPIC_KEY).start(),
    }
    folder = tmp_path_factory.mktemp("sdk-up")
    deployments = []
    for name, price in PRICES.items():
        provider, model = name.split("/")
        fake = fakes[provider]
        key = OPENAI_KEY if provider == "openai" else ANTHROPIC_KEY
        kind = 'kind = "embedding"\n' if name == EMBED else ""
        deployments.append(
            f'[[deployments]]\nprovider = "{provider}"\nmodel = "{model}"\n{kind}'
            f'base_url = "{fake.base_url}"\napi_key = "{key}"\nprice = {_price_toml(price)}\n'
        )
    config = folder / "switchyard.toml"
    config.write_text("[demo]\nenabled = false\n\n" + "\n".join(deployments))
    port, nats_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    env.update(
        SWITCHYARD_CONFIG_FILE=str(config),
        SWITCHYARD_PORT=str(port),
        SWITCHYARD_NATS_PORT=str(nats_port),
        SWITCHYARD_NATS_MONITOR_PORT="0",
        SWITCHYARD_DASHBOARD_PORT=str(free_port()),
        PYTHONUNBUFFERED="1",
    )
    out_path = folder / "up.out"
    with open(out_path, "wb") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "switchyard.cli", "up"],
            cwd=folder,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: "Switchyard is up." in out_path.read_text(), 90, what="switchyard up")
        data = folder / ".switchyard"
        admin = (data / "bus" / "admin.password").read_text().strip()
        yield Gateway(
            base=f"http://127.0.0.1:{port}",
            key=(data / "dev-api-key").read_text().strip(),
            nats_url=f"nats://admin:{admin}@127.0.0.1:{nats_port}",
            admin_token=read_admin_token(data),
            fakes=fakes,
        )
    finally:
        every_pid = [p.pid for p in _children(up.pid)]
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
            try:
                up.wait(40)
            except subprocess.TimeoutExpired:
                up.kill()
        for pid in every_pid:  # nothing left running, whatever happened
            if psutil.pid_exists(pid):
                psutil.Process(pid).kill()
        for fake in fakes.values():
            fake.stop()


@pytest.fixture(autouse=True)
def _fresh_behaviour(gateway: Gateway) -> None:
    for fake in gateway.fakes.values():
        fake.reset()


@pytest.fixture
async def oai(gateway: Gateway) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=gateway.base + "/v1", api_key=gateway.key, max_retries=0
    ) as client:
        yield client


@pytest.fixture
async def claude(gateway: Gateway) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=gateway.base, api_key=gateway.key, max_retries=0) as client:
        yield client


COLUMNS = (
    "api, provider, deployment_id, status, prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, "
    "cache_write_1h_tokens, reasoning_tokens, cost_usd"
)


async def ledger_row(gateway: Gateway, request_id: str) -> dict:
    deadline = time.monotonic() + 30
    while True:
        rows = await ledger_sql(
            gateway.nats_url,
            f"SELECT {COLUMNS} FROM requests FINAL WHERE request_id = {{id:String}}",
            {"id": request_id},
            admin_token=gateway.admin_token,
        )
        if rows or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert rows, f"no ledger row for {request_id}"
    return rows[0]


async def assert_billed(gateway: Gateway, request_id: str, api: str, deployment: str, usage: dict) -> dict:
    """The row holds exactly what the upstream reported, class by class, and costs each class
    at its price."""
    row = await ledger_row(gateway, request_id)
    assert (row["api"], row["deployment_id"], row["status"]) == (api, deployment, "ok")
    tokens = (
        row["prompt_tokens"],
        row["completion_tokens"],
        row["cached_tokens"],
        row["cache_write_tokens"],
        row["cache_write_1h_tokens"],
        row["reasoning_tokens"],
    )
    reported = (
        usage["prompt"],
        usage["completion"],
        usage["cached"],
        usage["write"],
        usage["write_1h"],
        usage["reasoning"],
    )
    assert tokens == reported
    expected = cost_usd(
        PRICES[deployment],
        *tokens[:2],
        cached_tokens=tokens[2],
        cache_write_tokens=tokens[3],
        cache_write_1h_tokens=tokens[4],
    )
    assert Decimal(row["cost_usd"]) == expected
    return row


def rid(answer: object) -> str:
    return answer.model_extra["switchyard"]["request_id"]  # type: ignore[attr-defined]


async def test_responses_create_plain_with_reasoning_passes_through_to_openai(
    oai: openai.AsyncOpenAI, gateway: Gateway
) -> None:
    fake = gateway.fakes["openai"]
    fake.behave(
        Behavior(text="Blue.", prompt_tokens=60, completion_tokens=14, cached_tokens=32, reasoning_tokens=9)
    )
    response = await oai.responses.create(
        model=GPT5, input="Name a colour", instructions="One word.", reasoning={"effort": "low"}, store=False
    )
    assert response.output_text == "Blue." and response.status == "completed"
    usage = response.usage
    assert (usage.input_tokens, usage.output_tokens) == (60, 14)
    assert (
        usage.input_tokens_details.cached_tokens == 32 and usage.output_tokens_details.reasoning_tokens == 9
    )
    sent = fake.last()  # natively: OpenAI's own endpoint, the effort as the caller wrote it
    assert sent.path == "/v1/responses" and sent.body["reasoning"] == {"effort": "low"}
    assert sent.body["model"] == "gpt-5-mini" and sent.body["store"] is False
    await assert_billed(gateway, rid(response), "responses", GPT5, sent.usage)


async def test_responses_create_with_tools_and_with_json_schema(
    oai: openai.AsyncOpenAI, gateway: Gateway
) -> None:
    anthropic_fake, openai_fake = gateway.fakes["anthropic"], gateway.fakes["openai"]
    anthropic_fake.behave(
        Behavior(tool_call=("get_weather", {"city": "Lisbon"}), prompt_tokens=44, completion_tokens=8)
    )
    first = await oai.responses.create(model=CLAUDE, input="Weather in Lisbon?", tools=[WEATHER], store=False)
    call = next(item for item in first.output if item.type == "function_call")
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Lisbon"}
    await assert_billed(gateway, rid(first), "responses", CLAUDE, anthropic_fake.last().usage)

    schema = {"type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"]}
    openai_fake.behave(Behavior(text='{"summary": "sunny"}', prompt_tokens=52, completion_tokens=7))
    second = await oai.responses.create(
        model=GPT,
        input=[
            {"role": "user", "content": "Weather in Lisbon?"},
            *[item.model_dump(exclude_none=True) for item in first.output],
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 24C"},
        ],
        tools=[WEATHER],
        text={"format": {"type": "json_schema", "name": "weather", "schema": schema, "strict": True}},
        store=False,
    )
    assert json.loads(second.output_text) == {"summary": "sunny"} and second.text.format.type == "json_schema"
    assert openai_fake.last().body["text"]["format"]["schema"] == schema
    await assert_billed(gateway, rid(second), "responses", GPT, openai_fake.last().usage)


async def test_responses_stream_events_in_order_with_usage_at_the_end(
    oai: openai.AsyncOpenAI, gateway: Gateway
) -> None:
    fake = gateway.fakes["openai"]
    fake.behave(Behavior(text="one two three", prompt_tokens=12, completion_tokens=3, cached_tokens=4))
    async with oai.responses.stream(model=GPT, input="count to three") as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    assert [event.type for event in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 3,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert events[-1].response.usage.input_tokens_details.cached_tokens == 4
    assert final.output_text == "one two three"
    await assert_billed(gateway, rid(final), "responses", GPT, fake.last().usage)


async def test_previous_response_id_follow_up_on_another_provider(
    oai: openai.AsyncOpenAI, gateway: Gateway
) -> None:
    openai_fake, anthropic_fake = gateway.fakes["openai"], gateway.fakes["anthropic"]
    openai_fake.behave(Behavior(text="Paris.", prompt_tokens=9, completion_tokens=2))
    first = await oai.responses.create(model=GPT, input="Capital of France?", instructions="Be brief.")
    await assert_billed(gateway, rid(first), "responses", GPT, openai_fake.last().usage)

    anthropic_fake.behave(Behavior(text="About 2.1 million.", prompt_tokens=31, completion_tokens=6))
    second = await oai.responses.create(
        model=CLAUDE, input="And its population?", previous_response_id=first.id
    )
    assert second.previous_response_id == first.id and second.output_text == "About 2.1 million."
    sent = anthropic_fake.last().body["messages"]  # the stored conversation, replayed to Anthropic
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    await assert_billed(gateway, rid(second), "responses", CLAUDE, anthropic_fake.last().usage)

    items = await oai.responses.input_items.list(second.id, order="asc")
    assert [(item.type, getattr(item, "role", None)) for item in items.data] == [
        ("message", "user"),
        ("message", "assistant"),
        ("message", "user"),
    ]
    assert items.data[0].content[0].text == "Capital of France?"
    with pytest.raises(openai.BadRequestError) as caught:
        await oai.responses.cancel(second.id)
    assert "Cannot cancel a synchronous response" in caught.value.message
    with pytest.raises(openai.NotFoundError):
        await oai.responses.cancel("resp_unknown")


async def test_embeddings_single_batch_and_base64(oai: openai.AsyncOpenAI, gateway: Gateway) -> None:
    fake = gateway.fakes["openai"]
    single = await oai.embeddings.create(
        model=EMBED, input="a deterministic vector"
    )  # the SDK asks for base64
    assert single.data[0].embedding == pytest.approx(fake_vector("a deterministic vector", 8))
    await assert_billed(gateway, single._request_id or "", "embeddings", EMBED, fake.last().usage)

    texts = ["first text", "second, longer text", "third"]
    batch = await oai.embeddings.create(model=EMBED, input=texts, encoding_format="float", dimensions=8)
    assert [d.index for d in batch.data] == [0, 1, 2]
    assert [d.embedding for d in batch.data] == [pytest.approx(fake_vector(t, 8)) for t in texts]
    assert batch.usage.prompt_tokens == sum(text_tokens(t) for t in texts)
    await assert_billed(gateway, batch._request_id or "", "embeddings", EMBED, fake.last().usage)

    raw = await oai.embeddings.create(model=EMBED, input="packed", encoding_format="base64")
    packed = raw.data[0].embedding
    assert isinstance(packed, str)
    assert list(struct.unpack("<8f", base64.b64decode(packed))) == fake_vector("packed", 8)
    await assert_billed(gateway, raw._request_id or "", "embeddings", EMBED, fake.last().usage)


async def test_anthropic_count_tokens_exact_from_anthropic(
    claude: anthropic.AsyncAnthropic, gateway: Gateway
) -> None:
    counted = await claude.messages.count_tokens(
        model=CLAUDE, system="Be brief.", messages=[{"role": "user", "content": "How many tokens is this?"}]
    )
    assert counted.input_tokens == gateway.fakes["anthropic"].last().usage["prompt"] > 0
    info = counted.model_extra["switchyard"]
    assert info["estimated"] is False
    row = await ledger_row(gateway, info["request_id"])
    assert (row["api"], row["prompt_tokens"], Decimal(row["cost_usd"])) == (
        "count_tokens",
        counted.input_tokens,
        0,
    )


async def test_anthropic_cache_control_blocks_written_then_read_and_priced(
    claude: anthropic.AsyncAnthropic, gateway: Gateway
) -> None:
    fake = gateway.fakes["anthropic"]
    hour = {"type": "ephemeral", "ttl": "1h"}
    rules = "You answer questions about the weather. " * 60
    request = {
        "model": CLAUDE,
        "max_tokens": 64,
        "system": [{"type": "text", "text": rules, "cache_control": hour}],
        "tools": [
            {
                "name": "get_weather",
                "description": "weather",
                "input_schema": WEATHER["parameters"],
                "cache_control": hour,
            }
        ],
        "messages": [
            {"role": "user", "content": "Weather in Lisbon?"},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "get_weather",
                        "input": {"city": "Lisbon"},
                        "cache_control": hour,
                    }
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": "sunny",
                        "cache_control": hour,
                    }
                ],
            },
        ],
    }
    fake.behave(Behavior(text="Sunny in Lisbon.", completion_tokens=5))
    first = await claude.messages.create(**request)
    sent = fake.last().body  # every breakpoint reached Anthropic unchanged, the tool_use one too
    assert sent["system"][0]["cache_control"] == hour and sent["tools"][0]["cache_control"] == hour
    assert sent["messages"][1]["content"][0] == request["messages"][1]["content"][0]
    assert sent["messages"][2]["content"][0]["cache_control"] == hour
    written = fake.last().usage
    assert written["write"] > 0 and written["write_1h"] == written["write"] and written["cached"] == 0
    assert first.usage.cache_creation_input_tokens == written["write"]
    assert first.usage.cache_creation.ephemeral_1h_input_tokens == written["write_1h"]
    assert first.usage.input_tokens == written["prompt"] - written["write"]
    await assert_billed(gateway, rid(first), "anthropic", CLAUDE, written)

    second = await claude.messages.create(**request)
    read = fake.last().usage
    assert read["cached"] == written["write"] and read["write"] == 0
    assert second.usage.cache_read_input_tokens == read["cached"]
    row = await assert_billed(gateway, rid(second), "anthropic", CLAUDE, read)
    # The read costs a tenth of the input price, the 1-hour write twice: priced apart.
    assert Decimal(row["cost_usd"]) < cost_usd(PRICES[CLAUDE], read["prompt"], read["completion"])


async def test_chat_reasoning_effort_reaches_each_provider_in_its_terms(
    oai: openai.AsyncOpenAI, gateway: Gateway
) -> None:
    openai_fake, anthropic_fake = gateway.fakes["openai"], gateway.fakes["anthropic"]
    openai_fake.behave(Behavior(text="Because.", prompt_tokens=20, completion_tokens=30, reasoning_tokens=24))
    answer = await oai.chat.completions.create(
        model=GPT5, messages=[{"role": "user", "content": "Why?"}], reasoning_effort="high"
    )
    assert openai_fake.last().body["reasoning_effort"] == "high"
    assert answer.usage.completion_tokens_details.reasoning_tokens == 24
    await assert_billed(gateway, answer._request_id or "", "openai", GPT5, openai_fake.last().usage)
    # Anthropic: an extended-thinking budget, added to the default answer room.
    await oai.chat.completions.create(
        model=CLAUDE, messages=[{"role": "user", "content": "Why?"}], reasoning_effort="medium"
    )
    sent = anthropic_fake.last().body
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 8192} and sent["max_tokens"] > 8192
    # A model that does not reason is sent nothing.
    await oai.chat.completions.create(
        model=GPT, messages=[{"role": "user", "content": "Why?"}], reasoning_effort="high"
    )
    assert "reasoning_effort" not in openai_fake.last().body
