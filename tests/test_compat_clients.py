"""The official `openai` and `anthropic` SDKs, and the generated gRPC client, pointed at a real
running gateway (NATS + every service as its own process, the built-in demo provider)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import anthropic
import grpc
import httpx
import openai
import pytest

from switchyard.natsserver import free_port
from switchyard.testing.stack import Stack, running, wait_for_rows
from switchyard.tokens import estimate_prompt_tokens
from switchyard.v1 import gateway_pb2_grpc, invoke_pb2
from switchyard.vectors import unpack_base64

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture(scope="module")
def gateway() -> Iterator[Stack]:
    """The whole gateway with the gRPC ingress on."""
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-compat-"))
    stack = Stack.create(
        workdir,
        SWITCHYARD_DEMO_LATENCY_MS="5",
        SWITCHYARD_DEMO_CHUNK_DELAY_MS="1",
        SWITCHYARD_GRPC_PORT=str(free_port()),
    )
    with running(stack):
        # Generous: the machine's cores are shared, and a loaded one starts processes slowly.
        stack.start_all(ready_timeout_s=90)
        yield stack


@pytest.fixture
async def oai(gateway: Stack) -> AsyncIterator[openai.AsyncOpenAI]:
    # max_retries=0: a test about an error must see the first answer, not a retried one.
    async with openai.AsyncOpenAI(
        base_url=gateway.ingress_url + "/v1", api_key=gateway.api_key, max_retries=0
    ) as client:
        yield client


@pytest.fixture
async def claude(gateway: Stack) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=gateway.ingress_url, api_key=gateway.api_key, max_retries=0
    ) as client:
        yield client


# --- OpenAI -------------------------------------------------------------------------------------


async def test_openai_plain_completion(oai: openai.AsyncOpenAI, gateway: Stack) -> None:
    completion = await oai.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "hello from the openai sdk"}]
    )
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert "hello from the openai sdk" in choice.message.content
    assert choice.finish_reason == "stop"
    assert completion.model.startswith("demo/")
    assert completion.usage.prompt_tokens > 0
    assert (
        completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    extra = completion.model_extra["switchyard"]
    assert completion._request_id == extra["request_id"]
    rows = await wait_for_rows(
        gateway.nats.url,
        "SELECT api, completion_tokens FROM requests FINAL WHERE request_id = {id:String}",
        1,
        {"id": extra["request_id"]},
    )
    assert rows[0]["completion_tokens"] == completion.usage.completion_tokens


async def test_openai_streaming_with_usage(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(
        model="demo/smart",
        messages=[{"role": "user", "content": "stream this please"}],
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("[smart] stream this please")
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finishing] == ["length"]
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage.completion_tokens == 6
    assert all(c.usage is None for c in chunks[:-1])


async def test_openai_stream_helper_assembles_the_message(oai: openai.AsyncOpenAI) -> None:
    async with oai.chat.completions.stream(
        model="auto", messages=[{"role": "user", "content": "assemble me"}]
    ) as stream:
        final = await stream.get_final_completion()
    assert final.choices[0].message.content.startswith("[")
    assert "assemble me" in final.choices[0].message.content
    assert final.choices[0].finish_reason == "stop"


async def test_openai_tool_call_round_trip(oai: openai.AsyncOpenAI) -> None:
    messages = [{"role": "user", "content": "what is the weather in Lisbon?"}]
    first = await oai.chat.completions.create(model="auto", messages=messages, tools=[WEATHER_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {}
    # Echo the assistant message back as SDK users do (it carries refusal/annotations fields).
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny, 24C"})
    second = await oai.chat.completions.create(model="auto", messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content


async def test_openai_streamed_tool_call_deltas(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "weather in Porto?"}],
        tools=[WEATHER_TOOL],
        stream=True,
    )
    chunks = [chunk async for chunk in stream]
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert deltas and deltas[0].id.startswith("call_")
    assert deltas[0].function.name == "get_weather"
    assert "".join(d.function.arguments or "" for d in deltas) == "{}"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_openai_json_mode_reaches_the_contract(oai: openai.AsyncOpenAI) -> None:
    completion = await oai.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "answer in json"}],
        response_format={"type": "json_object"},
    )
    assert completion.choices[0].finish_reason == "stop"


async def test_openai_unknown_model_is_not_found(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await oai.chat.completions.create(model="gpt-nope", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 404
    assert caught.value.code == "model_not_found"
    assert caught.value.type == "invalid_request_error"
    assert "gpt-nope" in caught.value.message
    assert caught.value.request_id and caught.value.request_id.startswith("req_")


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": 7}, "temperature"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0"),
        ({"messages": [{"role": "user", "content": "x"}], "n": 3}, "n"),
    ],
)
async def test_openai_bad_input_is_a_bad_request(oai: openai.AsyncOpenAI, kwargs: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await oai.chat.completions.create(model="auto", **kwargs)
    assert caught.value.status_code == 400
    assert caught.value.type == "invalid_request_error"
    assert caught.value.param.startswith(param)


async def test_openai_streaming_error_is_raised_before_any_chunk(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        await oai.chat.completions.create(
            model="nope/nope", messages=[{"role": "user", "content": "hi"}], stream=True
        )


async def test_openai_models_list(oai: openai.AsyncOpenAI) -> None:
    models = [m async for m in oai.models.list()]
    ids = {m.id for m in models}
    assert {"auto", "fast", "cheap", "best", "demo/fast", "demo/smart"} <= ids
    owners = {m.id: m.owned_by for m in models}
    assert owners["auto"] == "switchyard" and owners["demo/fast"] == "demo"
    one = await oai.models.retrieve("demo/smart")
    assert one.id == "demo/smart"
    with pytest.raises(openai.NotFoundError):
        await oai.models.retrieve("nope")


async def test_routing_hints_in_headers_and_metadata(oai: openai.AsyncOpenAI, gateway: Stack) -> None:
    completion = await oai.chat.completions.create(
        model="some-model-name-the-app-hardcodes",
        messages=[{"role": "user", "content": "route me"}],
        metadata={"task": "classification"},
        extra_headers={
            "x-switchyard-route": "demo/smart",
            "x-switchyard-strategy": "latency=0.2,cost=0.8",
            "x-switchyard-metadata-agent": "billing-bot",
        },
    )
    extra = completion.model_extra["switchyard"]
    assert extra["deployment"] == "demo/smart"
    rows = await wait_for_rows(
        gateway.nats.url,
        "SELECT metadata FROM requests FINAL WHERE request_id = {id:String}",
        1,
        {"id": extra["request_id"]},
    )
    metadata = rows[0]["metadata"]
    metadata = json.loads(metadata) if isinstance(metadata, str) else metadata
    assert metadata["agent"] == "billing-bot"
    assert metadata["task"] == "classification"


async def test_bad_routing_header_is_a_bad_request(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await oai.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-switchyard-strategy": "speed=1"},
        )
    assert caught.value.param == "x-switchyard-strategy"


async def ledger_row(gateway: Stack, request_id: str) -> dict:
    rows = await wait_for_rows(
        gateway.nats.url, "SELECT * FROM requests FINAL WHERE request_id = {id:String}", 1, {"id": request_id}
    )
    return rows[0]


def demo_cost(tokens: int, price: str) -> Decimal:
    return (Decimal(tokens) * Decimal(price) / 1_000_000).quantize(Decimal("1e-10"))


async def test_openai_embeddings_single_batch_and_base64(oai: openai.AsyncOpenAI, gateway: Stack) -> None:
    # Single: the SDK asks for base64 by default and decodes it itself.
    single = await oai.embeddings.create(model="demo/embed", input="a deterministic vector")
    assert single.object == "list" and len(single.data) == 1
    vector = single.data[0].embedding
    assert len(vector) == 256 and abs(sum(v * v for v in vector) - 1.0) < 1e-5
    again = await oai.embeddings.create(model="auto", input="a deterministic vector", encoding_format="float")
    assert again.data[0].embedding == vector  # same text, same vector; floats as sent
    # Batch, with dimensions; base64 exactly as the SDK returns it when asked for explicitly.
    texts = ["one", "two words", "three words here"]
    batch = await oai.embeddings.create(
        model="demo/embed", input=texts, dimensions=16, encoding_format="base64"
    )
    assert [d.index for d in batch.data] == [0, 1, 2]
    decoded = [list(unpack_base64(d.embedding)) for d in batch.data]
    assert all(len(v) == 16 for v in decoded) and decoded[0] != decoded[1]
    tokens = estimate_prompt_tokens(
        invoke_pb2.InvokeRequest(
            kind=invoke_pb2.InvokeRequest.KIND_EMBEDDING, embedding=invoke_pb2.EmbeddingInput(inputs=texts)
        )
    )
    assert batch.usage.prompt_tokens == batch.usage.total_tokens == tokens
    for response, count in ((single, single.usage.prompt_tokens), (batch, tokens)):
        row = await ledger_row(gateway, response.model_extra["switchyard"]["request_id"])
        assert (row["api"], row["deployment_id"], row["status"]) == ("embeddings", "demo/embed", "ok")
        assert (row["prompt_tokens"], row["completion_tokens"]) == (count, 0)
        assert Decimal(row["cost_usd"]) == demo_cost(count, "0.02")


async def test_openai_embeddings_errors(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as chat_model:
        await oai.embeddings.create(model="demo/fast", input="x")
    assert chat_model.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as tokens:
        await oai.embeddings.create(model="demo/embed", input=[[1, 2, 3]])
    assert "token-array" in tokens.value.body["message"]


async def test_openai_legacy_completions(oai: openai.AsyncOpenAI, gateway: Stack) -> None:
    completion = await oai.completions.create(model="demo/fast", prompt="complete this line", max_tokens=5)
    assert completion.object == "text_completion" and completion.id.startswith("cmpl-")
    choice = completion.choices[0]
    assert choice.text.startswith("[fast] complete this line") and choice.finish_reason == "length"
    assert completion.usage.completion_tokens == 5
    row = await ledger_row(gateway, completion.model_extra["switchyard"]["request_id"])
    assert (row["api"], row["completion_tokens"]) == ("completions", 5)
    assert Decimal(row["cost_usd"]) == Decimal(completion.model_extra["switchyard"]["cost_usd"]) > 0
    stream = await oai.completions.create(
        model="demo/fast",
        prompt="stream a line",
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text.startswith("[fast] stream a line")
    assert chunks[-1].usage.completion_tokens == 4
    with pytest.raises(openai.BadRequestError) as echo:
        await oai.completions.create(model="demo/fast", prompt="x", echo=True)
    assert "echo" in echo.value.body["message"]


async def test_openai_responses_api_on_the_demo_provider(oai: openai.AsyncOpenAI) -> None:
    """The README's Responses example (tests/test_responses_api.py covers the API in depth)."""
    first = await oai.responses.create(model="auto", input="Name a colour", instructions="One word.")
    assert first.status == "completed" and "Name a colour" in first.output_text
    async with oai.responses.stream(
        model="demo/smart", input="And another?", previous_response_id=first.id
    ) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert final.previous_response_id == first.id and final.usage.output_tokens > 0
    assert (await oai.responses.retrieve(final.id)).output_text == final.output_text


# --- Anthropic ----------------------------------------------------------------------------------


async def test_anthropic_plain_message(claude: anthropic.AsyncAnthropic) -> None:
    message = await claude.messages.create(
        model="auto",
        max_tokens=64,
        system="you are terse",
        messages=[{"role": "user", "content": "hello from the anthropic sdk"}],
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.content[0].type == "text"
    assert "hello from the anthropic sdk" in message.content[0].text
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert message._request_id == message.model_extra["switchyard"]["request_id"]


async def test_anthropic_streaming(claude: anthropic.AsyncAnthropic) -> None:
    async with claude.messages.stream(
        model="demo/fast", max_tokens=7, messages=[{"role": "user", "content": "stream for claude"}]
    ) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert len(pieces) == 7
    assert final.content[0].text == "".join(pieces)
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 7


async def test_anthropic_raw_stream_events_in_order(claude: anthropic.AsyncAnthropic) -> None:
    stream = await claude.messages.create(
        model="auto", max_tokens=3, messages=[{"role": "user", "content": "events"}], stream=True
    )
    kinds = [event.type async for event in stream]
    assert kinds[0] == "message_start"
    assert kinds[1] == "content_block_start"
    assert kinds[2:5] == ["content_block_delta"] * 3
    assert kinds[5:] == ["content_block_stop", "message_delta", "message_stop"]


async def test_anthropic_tool_use(claude: anthropic.AsyncAnthropic) -> None:
    tools = [{"name": "get_weather", "description": "weather", "input_schema": {"type": "object"}}]
    messages = [{"role": "user", "content": "weather in Faro?"}]
    first = await claude.messages.create(model="auto", max_tokens=64, tools=tools, messages=messages)
    assert first.stop_reason == "tool_use"
    use = first.content[-1]
    assert use.type == "tool_use" and use.name == "get_weather" and use.input == {}
    messages += [
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "windy"}]},
    ]
    second = await claude.messages.create(model="auto", max_tokens=64, tools=tools, messages=messages)
    assert second.stop_reason == "end_turn"
    async with claude.messages.stream(
        model="auto", max_tokens=64, tools=tools, messages=[{"role": "user", "content": "weather in Braga?"}]
    ) as stream:
        streamed = await stream.get_final_message()
    assert streamed.content[-1].type == "tool_use" and streamed.stop_reason == "tool_use"


async def test_anthropic_errors(claude: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        await claude.messages.create(
            model="claude-nope", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert missing.value.body["error"]["type"] == "not_found_error"
    assert missing.value.body["type"] == "error"
    with pytest.raises(anthropic.BadRequestError) as bad:
        await claude.messages.create(model="auto", max_tokens=0, messages=[{"role": "user", "content": "x"}])
    assert bad.value.body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in bad.value.body["error"]["message"]


async def test_anthropic_count_tokens_is_an_estimate_off_anthropic(
    claude: anthropic.AsyncAnthropic, gateway: Stack
) -> None:
    counted = await claude.messages.count_tokens(
        model="demo/fast", system="you are terse", messages=[{"role": "user", "content": "count me"}]
    )
    info = counted.model_extra["switchyard"]
    assert info["estimated"] is True  # the demo is not Anthropic: the gateway's estimate
    assert counted.input_tokens > 0
    row = await ledger_row(gateway, info["request_id"])
    assert (row["api"], row["prompt_tokens"]) == ("count_tokens", counted.input_tokens)
    assert Decimal(row["cost_usd"]) == 0


async def test_anthropic_models_list(claude: anthropic.AsyncAnthropic) -> None:
    ids = [m.id async for m in claude.models.list()]
    assert "auto" in ids and "demo/smart" in ids
    one = await claude.models.retrieve("demo/fast")
    assert one.type == "model" and one.id == "demo/fast"
    with pytest.raises(anthropic.NotFoundError) as missing:
        await claude.models.retrieve("claude-nope")
    assert missing.value.body["error"]["type"] == "not_found_error"


# --- gRPC ---------------------------------------------------------------------------------------


def grpc_target(gateway: Stack) -> str:
    return f"127.0.0.1:{gateway.env['SWITCHYARD_GRPC_PORT']}"


def auth(gateway: Stack) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {gateway.api_key}"),)


def grpc_request(
    model: str = "auto", text: str = "hello over grpc", max_tokens: int = 0
) -> invoke_pb2.InvokeRequest:
    request = invoke_pb2.InvokeRequest(model=model, max_tokens=max_tokens)
    request.messages.add(role=invoke_pb2.ROLE_USER).content.add(text=text)
    return request


async def test_grpc_embeddings_are_the_same_contract(gateway: Stack) -> None:
    request = invoke_pb2.InvokeRequest(
        model="auto",
        kind=invoke_pb2.InvokeRequest.KIND_EMBEDDING,
        embedding=invoke_pb2.EmbeddingInput(inputs=["over", "grpc"], dimensions=8),
    )
    async with grpc.aio.insecure_channel(grpc_target(gateway)) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        response = await stub.Invoke(request, metadata=auth(gateway))
        with pytest.raises(grpc.aio.AioRpcError) as empty:
            await stub.Invoke(
                invoke_pb2.InvokeRequest(model="auto", kind=invoke_pb2.InvokeRequest.KIND_EMBEDDING),
                metadata=auth(gateway),
            )
    assert response.deployment_id == "demo/embed"
    assert [len(e.values) for e in response.embeddings] == [8, 8]
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    row = await ledger_row(gateway, response.request_id)
    assert (row["api"], row["prompt_tokens"]) == ("grpc", response.usage.prompt_tokens)


async def test_grpc_invoke(gateway: Stack) -> None:
    async with grpc.aio.insecure_channel(grpc_target(gateway)) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        call = stub.Invoke(grpc_request(), metadata=auth(gateway))
        response = await call
        initial = dict(await call.initial_metadata())
    assert response.provider == "demo"
    assert "hello over grpc" in response.message.content[0].text
    assert response.usage.completion_tokens > 0
    assert initial["x-request-id"] == response.request_id
    rows = await wait_for_rows(
        gateway.nats.url,
        "SELECT status FROM requests FINAL WHERE request_id = {id:String}",
        1,
        {"id": response.request_id},
    )
    assert rows[0]["status"] == "ok"


async def test_grpc_invoke_stream(gateway: Stack) -> None:
    async with grpc.aio.insecure_channel(grpc_target(gateway)) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        frames = [
            f
            async for f in stub.InvokeStream(
                grpc_request("demo/smart", "stream over grpc", 5), metadata=auth(gateway)
            )
        ]
    kinds = [f.WhichOneof("frame") for f in frames]
    assert kinds == ["chunk"] * 5 + ["final"]
    text = "".join(f.chunk.delta_text for f in frames[:-1])
    assert frames[-1].final.message.content[0].text == text
    assert frames[-1].final.finish_reason == invoke_pb2.FINISH_REASON_LENGTH  # the 0.1 contract: an enum


async def test_grpc_errors_are_status_codes(gateway: Stack) -> None:
    async with grpc.aio.insecure_channel(grpc_target(gateway)) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.Invoke(grpc_request("nope/nope"), metadata=auth(gateway))
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await stub.Invoke(invoke_pb2.InvokeRequest(model="auto"), metadata=auth(gateway))
        with pytest.raises(grpc.aio.AioRpcError) as streamed:
            async for _ in stub.InvokeStream(grpc_request("nope/nope"), metadata=auth(gateway)):
                pass
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    trailers = dict(missing.value.trailing_metadata())
    assert trailers["switchyard-error-code"] == "model_not_found"
    assert trailers["x-request-id"].startswith("req_")
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "messages" in invalid.value.details()
    assert streamed.value.code() == grpc.StatusCode.NOT_FOUND


# --- OpenAPI ------------------------------------------------------------------------------------


async def test_openapi_is_served(gateway: Stack) -> None:
    async with httpx.AsyncClient(base_url=gateway.ingress_url, headers=gateway.headers) as http:
        r = await http.get("/openapi.json")
        missing = await http.get("/v1/audio/speech")
        wrong_method = await http.delete("/v1/chat/completions")
        anthropic_missing = await http.post("/v1/messages/batches", json={})
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.1")
    assert "/v1/chat/completions" in doc["paths"]
    # Unknown paths under /v1 answer in OpenAI's error shape, as OpenAI clients expect.
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "invalid_request_error"
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"
    assert anthropic_missing.status_code == 404
    assert anthropic_missing.json()["error"]["type"] == "not_found_error"
