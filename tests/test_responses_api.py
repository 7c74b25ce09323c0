"""The OpenAI Responses API (`/v1/responses`) through a real stack with the official `openai` SDK:
NATS, every service as its own process, fake OpenAI and Anthropic upstreams (their real wire
formats), the chDB ledger. Each answer is checked against its ledger row (api = 'responses',
tokens, exact cost) and against what the upstream was actually sent.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import openai
import pytest

from switchyard.pricing import Price, cost_usd
from switchyard.testing.stack import Stack, running, wait_for_rows
from tests.fakes import AnthropicFake, Behavior, OpenAIFake

OPENAI_KEY = "sk-test-responses-0123456789"
ANTHROPIC_KEY = "sk-ant-test-responses-0123456789"
GPT = "openai/gpt-4o-mini"
CLAUDE = "anthropic/claude-haiku-4-5"
PRICES = {"openai": Price.of("0.15", "0.60"), "anthropic": Price.of("1.00", "5.00")}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
TIMEOUTS = "{ connect_s = 5, first_byte_s = 10, between_chunks_s = 10, total_s = 30 }"


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, OpenAIFake | AnthropicFake]]:
    started = {
        "openai": OpenAIFake(api_key=OPENAI_KEY).start(),
        "anthropic": AnthropicFake(api_key=ANTHROPIC_KEY).start(),
    }
    try:
        yield started
    finally:
        for fake in started.values():
            fake.stop()


@pytest.fixture(autouse=True)
def _fresh_behaviour(fakes: dict[str, OpenAIFake | AnthropicFake]) -> None:
    for fake in fakes.values():
        fake.reset()


@pytest.fixture(scope="module")
def stack(fakes: dict[str, OpenAIFake | AnthropicFake]) -> Iterator[Stack]:
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-responses-"))
    config = workdir / "switchyard.toml"
    config.write_text(
        f"""
[demo]
enabled = false

[[deployments]]
provider = "openai"
model = "gpt-4o-mini"
base_url = "{fakes["openai"].base_url}"
api_key = "{OPENAI_KEY}"
price = {{ input = "0.15", output = "0.60" }}
timeouts = {TIMEOUTS}

[[deployments]]
provider = "anthropic"
model = "claude-haiku-4-5"
base_url = "{fakes["anthropic"].base_url}"
api_key = "{ANTHROPIC_KEY}"
price = {{ input = "1.00", output = "5.00" }}
timeouts = {TIMEOUTS}
"""
    )
    stack = Stack.create(workdir, SWITCHYARD_CONFIG_FILE=str(config))
    with running(stack):
        stack.start(
            ("ledger", "services.ledger"),
            ("budget", "services.budget"),
            ("worker", "services.providers", "--provider", "openai", "--provider", "anthropic"),
            ("router", "services.router"),
            ("ingress", "services.ingress"),
            ready_timeout_s=120,  # generous: the machine's cores are shared
        )
        stack.provision()
        yield stack


@pytest.fixture
async def oai(stack: Stack) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=stack.ingress_url + "/v1", api_key=stack.api_key, max_retries=0
    ) as client:
        yield client


async def ledger_row(stack: Stack, request_id: str) -> dict:
    rows = await wait_for_rows(
        stack.nats.url,
        "SELECT api, provider, status, error_code, prompt_tokens, completion_tokens, cost_usd "
        "FROM requests FINAL WHERE request_id = {id:String}",
        1,
        {"id": request_id},
    )
    return rows[0]


def assert_billed(row: dict, provider: str, prompt: int, completion: int) -> None:
    assert row["api"] == "responses" and row["provider"] == provider
    assert (row["prompt_tokens"], row["completion_tokens"]) == (prompt, completion)
    assert Decimal(row["cost_usd"]) == cost_usd(PRICES[provider], prompt, completion)


async def test_create_plain(oai: openai.AsyncOpenAI, stack: Stack, fakes: dict) -> None:
    fakes["openai"].behave(Behavior(text="Hi there.", prompt_tokens=21, completion_tokens=3))
    response = await oai.responses.create(
        model=GPT, input="hello", instructions="Be brief.", metadata={"task": "greeting"}, store=False
    )
    assert response.object == "response" and response.status == "completed"
    assert response.output_text == "Hi there."
    assert response.model == GPT and response.instructions == "Be brief."
    assert response.metadata == {"task": "greeting"}
    usage = response.usage
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (21, 3, 24)
    # Passed through natively: OpenAI's own /responses, the body as sent (model replaced,
    # the gateway keeping the state).
    sent = fakes["openai"].last()
    assert sent.path == "/v1/responses"
    assert sent.body == {
        "model": "gpt-4o-mini",
        "input": [{"type": "message", "role": "user", "content": "hello"}],
        "instructions": "Be brief.",
        "metadata": {"task": "greeting"},
        "store": False,
    }
    request_id = response.model_extra["switchyard"]["request_id"]
    assert response._request_id == request_id and response.id == "resp_" + request_id[4:]
    assert_billed(await ledger_row(stack, request_id), "openai", 21, 3)
    with pytest.raises(openai.NotFoundError):  # store=False: nothing kept
        await oai.responses.retrieve(response.id)


async def test_tool_call_round_trip_and_json_schema(
    oai: openai.AsyncOpenAI, stack: Stack, fakes: dict
) -> None:
    fakes["anthropic"].behave(
        Behavior(tool_call=("get_weather", {"city": "Lisbon"}), prompt_tokens=40, completion_tokens=7)
    )
    first = await oai.responses.create(
        model=CLAUDE, input="Weather in Lisbon?", tools=[WEATHER], tool_choice="required", store=False
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"city": "Lisbon"}
    sent = fakes["anthropic"].last().body
    assert sent["tools"][0]["name"] == "get_weather" and sent["tool_choice"] == {"type": "any"}

    # The SDK's own round trip: the output items back as input, then the call's output.
    assert_billed(await ledger_row(stack, first.model_extra["switchyard"]["request_id"]), "anthropic", 40, 7)
    fakes["openai"].behave(Behavior(text='{"summary": "sunny"}', prompt_tokens=50, completion_tokens=6))
    schema = {"type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"]}
    second = await oai.responses.create(
        model=GPT,
        input=[
            {"role": "user", "content": "Weather in Lisbon?"},
            *[item.model_dump(exclude_none=True) for item in first.output],
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 24C"},
        ],
        tools=[WEATHER],
        text={"format": {"type": "json_schema", "name": "weather", "schema": schema, "strict": True}},
        store=False,
    )
    assert json.loads(second.output_text) == {"summary": "sunny"}
    assert second.text.format.type == "json_schema"
    body = fakes["openai"].last().body  # natively: the Responses shapes, unchanged
    assert body["text"] == {
        "format": {"type": "json_schema", "name": "weather", "schema": schema, "strict": True}
    }
    assert body["tools"] == [WEATHER]
    call = next(item for item in body["input"] if item.get("type") == "function_call")
    output = body["input"][-1]
    assert (call["type"], call["call_id"], call["name"]) == ("function_call", calls[0].call_id, "get_weather")
    assert "id" not in call and "status" not in call  # ids of the gateway's items mean nothing upstream
    assert output == {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 24C"}
    assert_billed(await ledger_row(stack, second.model_extra["switchyard"]["request_id"]), "openai", 50, 6)


async def test_stream_events_in_order_with_usage(oai: openai.AsyncOpenAI, stack: Stack, fakes: dict) -> None:
    fakes["openai"].behave(Behavior(text="one two three", prompt_tokens=12, completion_tokens=3))
    async with oai.responses.stream(model=GPT, input="count to three") as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    kinds = [event.type for event in events]
    assert kinds == [
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
    assert final.output_text == "one two three" and final.status == "completed"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (12, 3)
    assert final.id == events[0].response.id
    request_id = final.model_extra["switchyard"]["request_id"]
    assert_billed(await ledger_row(stack, request_id), "openai", 12, 3)
    # Stored before the stream ended: the SDK can retrieve it at once.
    stored = await oai.responses.retrieve(final.id)
    assert stored.output_text == "one two three" and stored.usage.output_tokens == 3


async def test_streamed_tool_call_arguments(oai: openai.AsyncOpenAI, fakes: dict) -> None:
    fakes["openai"].behave(Behavior(tool_call=("get_weather", {"city": "Porto"})))
    async with oai.responses.stream(model=GPT, input="Weather in Porto?", tools=[WEATHER]) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    kinds = [event.type for event in events]
    assert "response.function_call_arguments.delta" in kinds
    assert kinds[-3:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    call = final.output[-1]
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Porto"}


async def test_follow_up_goes_to_another_provider(oai: openai.AsyncOpenAI, stack: Stack, fakes: dict) -> None:
    fakes["openai"].behave(Behavior(text="Paris is the capital.", prompt_tokens=9, completion_tokens=4))
    first = await oai.responses.create(model=GPT, input="Capital of France?", instructions="Be brief.")
    fetched = await oai.responses.retrieve(first.id)
    assert fetched.id == first.id and fetched.output_text == "Paris is the capital."

    fakes["anthropic"].behave(Behavior(text="About 2.1 million.", prompt_tokens=30, completion_tokens=5))
    second = await oai.responses.create(
        model=CLAUDE, input="And its population?", previous_response_id=first.id
    )
    assert second.previous_response_id == first.id and second.output_text == "About 2.1 million."
    # The stored conversation was replayed to Anthropic; the first instructions were not.
    sent = fakes["anthropic"].last().body
    assert "system" not in sent
    assert [(m["role"], _text(m["content"])) for m in sent["messages"]] == [
        ("user", "Capital of France?"),
        ("assistant", "Paris is the capital."),
        ("user", "And its population?"),
    ]
    assert_billed(await ledger_row(stack, second.model_extra["switchyard"]["request_id"]), "anthropic", 30, 5)

    # Another project cannot see, extend or delete it; its own project can delete it.
    other_key = stack.provision("other-project")
    async with openai.AsyncOpenAI(
        base_url=stack.ingress_url + "/v1", api_key=other_key, max_retries=0
    ) as other:
        with pytest.raises(openai.NotFoundError):
            await other.responses.retrieve(first.id)
        with pytest.raises(openai.NotFoundError) as caught:
            await other.responses.create(model=GPT, input="hi", previous_response_id=first.id)
        assert caught.value.param == "previous_response_id"
        with pytest.raises(openai.NotFoundError):
            await other.responses.delete(first.id)
    await oai.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        await oai.responses.retrieve(first.id)


def _text(content: str | list) -> str:
    return content if isinstance(content, str) else "".join(block.get("text", "") for block in content)


@pytest.mark.parametrize("model", [GPT, CLAUDE])  # OpenAI natively, Anthropic translated
async def test_stream_cut_midway_fails_in_band_and_bills_what_was_delivered(
    oai: openai.AsyncOpenAI, stack: Stack, fakes: dict, model: str
) -> None:
    provider = model.split("/")[0]
    fakes[provider].behave(Behavior(text="a b c d e f", disconnect_after=2))
    stream = await oai.responses.create(model=model, input="tell me a story", stream=True)
    events = [event async for event in stream]
    kinds = [event.type for event in events]
    assert kinds[-1] == "response.failed" and "response.completed" not in kinds
    assert kinds.count("response.output_text.delta") == 2
    failed = events[-1].response
    assert failed.status == "failed" and failed.error.code == "server_error"
    assert failed.model_extra["switchyard"]["error_code"] == "upstream_error"
    assert "closed the connection" in failed.error.message
    assert failed.output[0].content[0].text == "a b "
    row = await ledger_row(stack, failed.model_extra["switchyard"]["request_id"])
    assert row["api"] == "responses" and row["status"] == "error" and row["error_code"] == "upstream_error"
    # Billed for what was delivered: the prompt and the two pieces that reached the client.
    assert row["completion_tokens"] > 0
    assert row["provider"] == provider
    assert Decimal(row["cost_usd"]) == cost_usd(
        PRICES[provider], row["prompt_tokens"], row["completion_tokens"]
    )
    assert Decimal(row["cost_usd"]) > 0


async def test_unsupported_input_is_a_clear_bad_request(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await oai.responses.create(model=GPT, input="news?", tools=[{"type": "web_search"}])
    assert "built-in tool 'web_search' is not supported" in caught.value.message
    assert caught.value.param.startswith("tools.0")
    with pytest.raises(openai.BadRequestError) as caught:
        await oai.responses.create(model=GPT, input=[{"type": "item_reference", "id": "msg_1"}])
    assert "input items must be messages" in caught.value.message
