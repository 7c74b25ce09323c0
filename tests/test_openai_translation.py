"""The OpenAI-compatible API's pure translation: Chat Completions body -> InvokeRequest, reply
frames -> chat.completion / chat.completion.chunk, neutral errors -> OpenAI errors."""

from __future__ import annotations

import orjson
import pytest

from services.ingress import openai_api
from switchyard import choices
from switchyard.catalog import build_catalog
from switchyard.errors import GatewayError
from tests.support.frames import error_frame, final_frame, stamped_request, text_chunk, tool_chunk


def parse(**body) -> openai_api.ChatCompletionRequest:
    body.setdefault("model", "auto")
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return openai_api.parse_body(orjson.dumps(body))


def sse_events(raw: list[bytes]) -> list[dict | str]:
    out: list[dict | str] = []
    for event in raw:
        assert event.startswith(b"data: ") and event.endswith(b"\n\n")
        data = event[len(b"data: ") : -2]
        out.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
    return out


def test_a_full_conversation_maps_onto_the_contract() -> None:
    body = parse(
        messages=[
            {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "low"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": '{"a":1}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
        ],
        tools=[{"type": "function", "function": {"name": "look", "parameters": {"type": "object"}}}],
        tool_choice={"type": "function", "function": {"name": "look"}},
        max_tokens=10,
        max_completion_tokens=20,
        temperature=0.5,
        top_p=0.9,
        seed=7,
        stop="END",
        user="u-1",
        metadata={"task": "vision"},
        strategy={"latency": 1, "cost": 1},
    )
    request = openai_api.to_request(body)
    assert request.api == "openai" and request.model == "auto" and not request.stream
    roles = [choices.role_name(m.role) for m in request.messages]
    assert roles == ["system", "user", "assistant", "tool"]
    assert request.messages[0].content[0].text == "be brief"
    assert request.messages[1].content[1].image.url == "https://x.test/a.png"
    assert request.messages[1].content[1].image.detail == "low"
    call = request.messages[2].tool_calls[0]
    assert (call.id, call.name, call.arguments_json) == ("call_1", "look", '{"a":1}')
    assert request.messages[3].tool_call_id == "call_1"
    assert request.tools[0].name == "look"
    assert choices.tool_choice_json(request.tool_choice) == {"type": "function", "function": {"name": "look"}}
    assert request.max_tokens == 20  # max_completion_tokens wins over the deprecated max_tokens
    assert request.temperature == 0.5 and request.seed == 7 and list(request.stop) == ["END"]
    assert dict(request.metadata) == {"task": "vision", "user": "u-1"}
    assert request.strategy.explicit and request.strategy.latency == 1 and request.strategy.quality == 0


@pytest.mark.parametrize(
    ("response_format", "expected"),
    [
        ({"type": "text"}, ""),
        ({"type": "json_object"}, {"type": "json_object"}),
        (
            {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
            },
            {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
            },
        ),
    ],
)
def test_json_mode_is_carried_in_openai_spelling(response_format: dict, expected: dict | str) -> None:
    request = openai_api.to_request(parse(response_format=response_format))
    got = choices.response_format_json(request.response_format) or ""
    assert got == expected


@pytest.mark.parametrize(
    ("body", "param", "needle"),
    [
        ({"stream_options": {"include_usage": True}}, "", "stream_options is only allowed"),
        ({"logprobs": True}, "", "logprobs"),
        ({"n": 2}, "n", "less than or equal to 1"),
        ({"max_tokens": "5"}, "max_tokens", "integer"),
        ({"temperature": 3}, "temperature", "less than or equal to 2"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
        ({"messages": [{"role": "function", "content": "x"}]}, "messages.0", "role"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.tool_call_id", "required"),
        (
            {"tools": [{"type": "function", "function": {"name": "has space"}}]},
            "tools.0.function.name",
            "pattern",
        ),
        ({"strategy": {"latency": 0}}, "strategy", "must not all be zero"),
    ],
)
def test_bad_bodies_are_invalid_requests_naming_the_field(body: dict, param: str, needle: str) -> None:
    with pytest.raises(GatewayError) as caught:
        parse(**body)
    assert caught.value.code == "invalid_request"
    assert caught.value.param.startswith(param)
    assert needle in caught.value.message


def test_unknown_fields_are_ignored_as_newer_sdks_send_them() -> None:
    body = parse(store=False, service_tier="auto", prompt_cache_key="k", frequency_penalty=0.1)
    assert openai_api.to_request(body).model == "auto"


def test_completion_json_has_openai_shape() -> None:
    request = stamped_request()
    request.request_id = "req_ABC"
    out = openai_api.completion_json(request, final_frame("hello", prompt=12, completion=5, cached=4).final)
    assert out["id"] == "chatcmpl-ABC"
    assert out["object"] == "chat.completion"
    assert out["created"] == 1_700_000_000
    assert out["model"] == "demo/smart"
    choice = out["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "hello", "refusal": None}
    assert choice["finish_reason"] == "stop"
    assert out["usage"] == {
        "prompt_tokens": 12,
        "completion_tokens": 5,
        "total_tokens": 17,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    assert out["switchyard"]["deployment"] == "demo/smart" and out["switchyard"]["cost_usd"] == "0.000081"
    openai_api.ChatCompletion.model_validate(out)


def test_completion_json_tool_calls_have_null_content() -> None:
    frame = final_frame(tool_calls=[("call_9", "lookup", '{"q":"x"}')], finish="tool_calls")
    out = openai_api.completion_json(stamped_request(), frame.final)
    message = out["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"] == [
        {"id": "call_9", "type": "function", "function": {"name": "lookup", "arguments": '{"q":"x"}'}}
    ]
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    openai_api.ChatCompletion.model_validate(out)


@pytest.mark.parametrize(("neutral", "expected"), [("length", "length"), ("error", "stop"), ("", "stop")])
def test_finish_reasons_stay_in_openai_vocabulary(neutral: str, expected: str) -> None:
    assert openai_api.finish_reason(neutral) == expected


def test_stream_with_usage_ends_with_a_usage_chunk_then_done() -> None:
    request = stamped_request(stream=True)
    stream = openai_api.ChunkStream(request, include_usage=True)
    raw = (
        stream(text_chunk(0, "Hel"))
        + stream(text_chunk(1, "lo"))
        + stream(final_frame("Hello", finish="length"))
    )
    events = sse_events(raw)
    assert events[-1] == "[DONE]"
    chunks = [e for e in events if isinstance(e, dict)]
    for chunk in chunks:
        openai_api.ChatCompletionChunk.model_validate(chunk)
        assert chunk["id"] == "chatcmpl-TEST123" and chunk["object"] == "chat.completion.chunk"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:3]] == ["Hel", "lo"]
    assert chunks[3]["choices"][0]["finish_reason"] == "length" and chunks[3]["choices"][0]["delta"] == {}
    assert chunks[4]["choices"] == [] and chunks[4]["usage"]["total_tokens"] == 17
    assert all(c["usage"] is None for c in chunks[:4])


def test_stream_without_usage_has_no_usage_key() -> None:
    stream = openai_api.ChunkStream(stamped_request(stream=True), include_usage=False)
    events = sse_events(stream(text_chunk(0, "x")) + stream(final_frame("x")))
    chunks = [e for e in events if isinstance(e, dict)]
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_streamed_tool_call_deltas() -> None:
    stream = openai_api.ChunkStream(stamped_request(stream=True), include_usage=False)
    raw = (
        stream(tool_chunk(0, 0, "call_1", "lookup", ""))
        + stream(tool_chunk(1, 0, args='{"q":'))
        + stream(tool_chunk(2, 0, args='"x"}'))
        + stream(final_frame(tool_calls=[("call_1", "lookup", '{"q":"x"}')], finish="tool_calls"))
    )
    chunks = [e for e in sse_events(raw) if isinstance(e, dict)]
    deltas = [
        c["choices"][0]["delta"]["tool_calls"][0] for c in chunks if "tool_calls" in c["choices"][0]["delta"]
    ]
    assert deltas[0] == {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "lookup", "arguments": ""},
    }
    assert deltas[1] == {"index": 0, "function": {"arguments": '{"q":'}}
    assert "".join(d["function"]["arguments"] for d in deltas) == '{"q":"x"}'
    assert len(deltas) == 3  # the final message's calls are not repeated
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_content_only_in_the_final_message_is_still_streamed() -> None:
    """A provider that answered without chunks: the client still assembles the whole message."""
    stream = openai_api.ChunkStream(stamped_request(stream=True), include_usage=False)
    frame = final_frame("all at once", tool_calls=[("call_2", "f", "{}")], finish="tool_calls")
    chunks = [e for e in sse_events(stream(frame)) if isinstance(e, dict)]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[1]["choices"][0]["delta"] == {"content": "all at once"}
    assert chunks[2]["choices"][0]["delta"]["tool_calls"][0]["id"] == "call_2"


def test_error_mid_stream_is_an_error_event() -> None:
    stream = openai_api.ChunkStream(stamped_request(stream=True), include_usage=False)
    stream(text_chunk(0, "x"))
    events = sse_events(stream(error_frame("upstream_error", "provider fell over")))
    assert events == [
        {
            "error": {
                "message": "provider fell over",
                "type": "server_error",
                "param": None,
                "code": "upstream_error",
            }
        }
    ]


@pytest.mark.parametrize(
    ("code", "status", "kind", "openai_code"),
    [
        ("invalid_request", 400, "invalid_request_error", "invalid_request"),
        ("unauthorized", 401, "invalid_request_error", "invalid_api_key"),
        ("model_not_found", 404, "invalid_request_error", "model_not_found"),
        ("budget_exceeded", 429, "insufficient_quota", "insufficient_quota"),
        ("rate_limited", 429, "requests", "rate_limit_exceeded"),
        ("unavailable", 503, "server_error", "unavailable"),
        ("timeout", 504, "server_error", "timeout"),
        ("something_new", 500, "server_error", "something_new"),
    ],
)
def test_errors_take_openai_shape_and_status(code: str, status: int, kind: str, openai_code: str) -> None:
    got_status, body = openai_api.error_body(GatewayError(code, "msg", param="model"))
    assert got_status == status
    assert body == {"error": {"message": "msg", "type": kind, "param": "model", "code": openai_code}}
    openai_api.OpenAIErrorResponse.model_validate(body)


def test_models_list_routes_aliases_and_models() -> None:
    catalog = build_catalog({"aliases": {"gpt-4o": "best"}}, {})
    out = openai_api.models_json(catalog)
    openai_api.OpenAIModelList.model_validate(out)
    owners = {m["id"]: m["owned_by"] for m in out["data"]}
    assert owners == {
        "auto": "switchyard",
        "best": "switchyard",
        "cheap": "switchyard",
        "fast": "switchyard",
        "gpt-4o": "switchyard",
        "demo/embed": "demo",
        "demo/fast": "demo",
        "demo/smart": "demo",
    }
