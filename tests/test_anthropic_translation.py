"""The Anthropic-compatible API's pure translation: Messages body -> InvokeRequest, reply frames
-> message / Messages streaming events, neutral errors -> Anthropic errors."""

from __future__ import annotations

import orjson
import pytest

from services.ingress import anthropic_api
from switchyard import choices
from switchyard.catalog import build_catalog
from switchyard.errors import GatewayError
from tests.support.frames import error_frame, final_frame, stamped_request, text_chunk, tool_chunk


def parse(**body) -> anthropic_api.MessagesRequest:
    body.setdefault("model", "auto")
    body.setdefault("max_tokens", 100)
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return anthropic_api.parse_body(orjson.dumps(body))


def sse_events(raw: list[bytes]) -> list[tuple[str, dict]]:
    out = []
    for event in raw:
        head, data = event.rstrip(b"\n").split(b"\n")
        assert head.startswith(b"event: ") and data.startswith(b"data: ")
        payload = orjson.loads(data[len(b"data: ") :])
        name = head[len(b"event: ") :].decode()
        assert payload["type"] == name
        out.append((name, payload))
    return out


def test_a_conversation_with_tool_results_maps_onto_the_contract() -> None:
    body = parse(
        system=[
            {"type": "text", "text": "be "},
            {"type": "text", "text": "brief", "cache_control": {"type": "ephemeral"}},
        ],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "let me look"},
                    {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"zoom": 2}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [{"type": "text", "text": "a cat"}],
                    },
                    {"type": "text", "text": "and now?"},
                ],
            },
        ],
        tools=[{"name": "look", "description": "look closer", "input_schema": {"type": "object"}}],
        tool_choice={"type": "tool", "name": "look"},
        stop_sequences=["END"],
        temperature=0.3,
        top_k=5,
        metadata={"user_id": "u-1", "agent": "vision-bot"},
        strategy="cheapest",
        stream=True,
    )
    request = anthropic_api.to_request(body)
    assert request.api == "anthropic" and request.stream and request.max_tokens == 100
    assert [choices.role_name(m.role) for m in request.messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "user",
    ]
    assert "".join(part.text for part in request.messages[0].content) == "be brief"
    image = request.messages[1].content[1].image
    assert image.url == "data:image/png;base64,iVBORw0KGgo=" and image.media_type == "image/png"
    assistant = request.messages[2]
    assert assistant.content[0].text == "let me look"
    assert assistant.tool_calls[0].id == "toolu_1" and orjson.loads(
        assistant.tool_calls[0].arguments_json
    ) == {"zoom": 2}
    assert request.messages[3].tool_call_id == "toolu_1" and request.messages[3].content[0].text == "a cat"
    assert request.messages[4].content[0].text == "and now?"
    assert request.tools[0].name == "look" and orjson.loads(request.tools[0].parameters_json) == {
        "type": "object"
    }
    assert choices.tool_choice_json(request.tool_choice) == {"type": "function", "function": {"name": "look"}}
    assert list(request.stop) == ["END"] and request.temperature == pytest.approx(0.3)
    assert dict(request.metadata) == {"user_id": "u-1", "agent": "vision-bot"}
    assert request.strategy.preset == "cheapest"


@pytest.mark.parametrize(("choice", "expected"), [("auto", "auto"), ("any", "required"), ("none", "none")])
def test_tool_choice_is_carried_in_the_contracts_spelling(choice: str, expected: str) -> None:
    request = anthropic_api.to_request(parse(tool_choice={"type": choice}))
    assert choices.tool_choice_json(request.tool_choice) == expected


def test_a_failed_tool_result_says_so_in_the_text() -> None:
    body = parse(
        messages=[
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t", "content": "boom", "is_error": True}],
            }
        ]
    )
    request = anthropic_api.to_request(body)
    assert [choices.role_name(m.role) for m in request.messages] == ["tool"]
    assert request.messages[0].content[0].text == "(tool error) boom"


@pytest.mark.parametrize(
    ("body", "param", "needle"),
    [
        ({"max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
        ({"max_tokens": None}, "max_tokens", "integer"),
        ({"temperature": 1.5}, "temperature", "less than or equal to 1"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages.0.role", "'user' or 'assistant'"),
        (
            {"messages": [{"role": "user", "content": [{"type": "video"}]}]},
            "messages.0.content",
            "does not match",
        ),
        ({"tool_choice": {"type": "tool"}}, "tool_choice", "needs a name"),
        ({"messages": []}, "messages", "at least 1"),
    ],
)
def test_bad_bodies_are_invalid_requests_naming_the_field(body: dict, param: str, needle: str) -> None:
    with pytest.raises(GatewayError) as caught:
        parse(**body)
    assert caught.value.code == "invalid_request"
    assert caught.value.param.startswith(param)
    assert needle in caught.value.message


def test_message_json_has_anthropic_shape() -> None:
    request = stamped_request()
    request.request_id = "req_XYZ"
    frame = final_frame(
        "checking", tool_calls=[("toolu_9", "lookup", '{"q":"x"}')], finish="tool_calls", cached=5
    )
    out = anthropic_api.message_json(request, frame.final)
    assert out["id"] == "msg_XYZ" and out["type"] == "message" and out["role"] == "assistant"
    assert out["content"] == [
        {"type": "text", "text": "checking"},
        {"type": "tool_use", "id": "toolu_9", "name": "lookup", "input": {"q": "x"}},
    ]
    assert out["stop_reason"] == "tool_use" and out["stop_sequence"] is None
    # cache reads are apart from input tokens in Anthropic's usage
    assert out["usage"] == {
        "input_tokens": 7,
        "output_tokens": 5,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 5,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
    }
    anthropic_api.Message.model_validate(out)


@pytest.mark.parametrize(
    ("neutral", "expected"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
        ("", "end_turn"),
    ],
)
def test_stop_reasons(neutral: str, expected: str) -> None:
    assert anthropic_api.stop_reason(neutral) == expected


def test_tool_arguments_that_are_not_an_object_are_kept_whole() -> None:
    assert anthropic_api.tool_input('{"a": 1}') == {"a": 1}
    assert anthropic_api.tool_input("") == {}
    assert anthropic_api.tool_input("[1, 2]") == {"_raw": "[1, 2]"}
    assert anthropic_api.tool_input("{broken") == {"_raw": "{broken"}


def test_stream_of_text_then_a_tool_call_has_ordered_blocks() -> None:
    stream = anthropic_api.EventStream(stamped_request(stream=True))
    raw = (
        stream(text_chunk(0, "Let me"))
        + stream(text_chunk(1, " check"))
        + stream(tool_chunk(2, 0, "toolu_1", "lookup", ""))
        + stream(tool_chunk(3, 0, args='{"q":'))
        + stream(tool_chunk(4, 0, args='"x"}'))
        + stream(
            final_frame("Let me check", tool_calls=[("toolu_1", "lookup", '{"q":"x"}')], finish="tool_calls")
        )
    )
    events = sse_events(raw)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert start["id"] == "msg_TEST123" and start["content"] == [] and start["usage"]["input_tokens"] > 0
    assert events[2][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    assert events[3][1]["delta"] == {"type": "text_delta", "text": "Let me"}
    assert events[5][1] == {"type": "content_block_stop", "index": 0}
    assert events[6][1]["index"] == 1
    assert events[6][1]["content_block"] == {
        "type": "tool_use",
        "id": "toolu_1",
        "name": "lookup",
        "input": {},
    }
    partial = "".join(
        e["delta"]["partial_json"] for n, e in events if n == "content_block_delta" and e["index"] == 1
    )
    assert partial == '{"q":"x"}'
    delta = events[10][1]
    assert delta["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 5 and delta["usage"]["input_tokens"] == 12


def test_content_only_in_the_final_message_is_still_streamed() -> None:
    stream = anthropic_api.EventStream(stamped_request(stream=True))
    events = sse_events(stream(final_frame("all at once", tool_calls=[("toolu_2", "f", '{"a":1}')])))
    blocks = [e["content_block"]["type"] for n, e in events if n == "content_block_start"]
    assert blocks == ["text", "tool_use"]
    deltas = [e["delta"] for n, e in events if n == "content_block_delta"]
    assert deltas == [
        {"type": "text_delta", "text": "all at once"},
        {"type": "input_json_delta", "partial_json": '{"a":1}'},
    ]


def test_error_mid_stream_is_an_error_event() -> None:
    stream = anthropic_api.EventStream(stamped_request(stream=True))
    stream(text_chunk(0, "x"))
    events = sse_events(stream(error_frame("overloaded", "busy")))
    assert events == [
        (
            "error",
            {
                "type": "error",
                "error": {"type": "overloaded_error", "message": "busy"},
                "request_id": "req_TEST123",
            },
        )
    ]


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("invalid_request", 400, "invalid_request_error"),
        ("unauthorized", 401, "authentication_error"),
        ("permission_denied", 403, "permission_error"),
        ("model_not_found", 404, "not_found_error"),
        ("payload_too_large", 413, "request_too_large"),
        ("budget_exceeded", 429, "rate_limit_error"),
        ("rate_limited", 429, "rate_limit_error"),
        ("internal", 500, "api_error"),
        ("timeout", 504, "timeout_error"),
        ("overloaded", 529, "overloaded_error"),
        ("unavailable", 529, "overloaded_error"),
    ],
)
def test_errors_take_anthropic_shape_and_status(code: str, status: int, kind: str) -> None:
    got_status, body = anthropic_api.error_body(GatewayError(code, "msg"), "req_1")
    assert got_status == status
    assert body == {"type": "error", "error": {"type": kind, "message": "msg"}, "request_id": "req_1"}
    anthropic_api.AnthropicErrorResponse.model_validate(body)


def test_models_list_in_anthropic_shape() -> None:
    out = anthropic_api.models_json(build_catalog({}, {}))
    anthropic_api.AnthropicModelList.model_validate(out)
    assert out["first_id"] == out["data"][0]["id"] and out["has_more"] is False
    assert {"auto", "demo/fast"} <= {m["id"] for m in out["data"]}
