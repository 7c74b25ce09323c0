"""The Responses API passed through natively to OpenAI, pure: the body the ingress puts in the
contract, what an OpenAI deployment sends to /responses, and the Responses answer and stream
events (as the fake speaks them, from OpenAI's reference) mapped back onto the contract."""

from __future__ import annotations

import orjson
import pytest

from services.ingress.responses_api import ResponsesApi, native_json
from services.providers.adapters.openai_responses import (
    ResponsesStream,
    parse_responses_response,
    responses_body,
)
from services.providers.sse import SSEDecoder, SSEEvent
from switchyard.errors import ErrorCode, GatewayError
from switchyard.v1 import invoke_pb2
from switchyard.vocab import FinishReason
from tests.fakes import Behavior, OpenAIFake


def test_the_callers_body_travels_with_the_whole_conversation_and_no_gateway_fields() -> None:
    raw = {
        "model": "auto",
        "input": "And then?",
        "instructions": "Be brief.",
        "previous_response_id": "resp_1",
        "store": True,
        "stream": True,
        "strategy": "cheapest",
        "reasoning": {"effort": "high", "summary": "auto"},
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "k",
    }
    history = [
        {"type": "message", "role": "user", "content": "First?"},
        {"id": "msg_x_0", "type": "message", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "One.", "annotations": []}]},
    ]  # fmt: skip
    parsed = ResponsesApi().parse(
        orjson.dumps({k: v for k, v in raw.items() if k != "previous_response_id"}), 64
    )
    items = [*history, *parsed.items]
    body = orjson.loads(native_json(raw, items))
    # Every field OpenAI knows, as sent; the gateway's own fields and its state are not.
    assert body == {
        "model": "auto",
        "instructions": "Be brief.",
        "reasoning": {"effort": "high", "summary": "auto"},
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "k",
        "store": False,
        "input": [
            {"type": "message", "role": "user", "content": "First?"},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "One.", "annotations": []}],
            },
            {"type": "message", "role": "user", "content": "And then?"},
        ],
    }
    request = invoke_pb2.InvokeRequest(responses_json=native_json(raw, items))
    sent = responses_body(request, "gpt-4o-mini", stream=True)
    assert (sent["model"], sent["stream"]) == ("gpt-4o-mini", True)
    assert "stream" not in responses_body(request, "gpt-4o-mini", stream=False)
    assert sent["reasoning"] == {"effort": "high", "summary": "auto"}  # as sent, to a model that reasons
    assert "reasoning" not in responses_body(request, "gpt-4o-mini", stream=False, model_reasons=False)


def _events(frames: list) -> list[SSEEvent]:
    decoder, events = SSEDecoder(), []
    for frame in frames:
        for line in frame.data.decode().split("\n"):
            event = decoder.feed(line)
            if event is not None:
                events.append(event)
    return events


FAKE = OpenAIFake()
BODY = {"model": "gpt-5-mini", "input": "hi", "instructions": "x"}


def _usage(behavior: Behavior) -> dict[str, int]:
    return FAKE.usage_for(BODY, behavior)


def test_a_response_object_maps_onto_the_contract() -> None:
    behavior = Behavior(
        text="Hi there.", prompt_tokens=30, completion_tokens=20, cached_tokens=10, reasoning_tokens=12
    )
    done = parse_responses_response(
        FAKE.response_object(BODY, "gpt-5-mini", behavior, _usage(behavior)), "openai"
    )
    assert done.message.content[0].text == "Hi there." and done.finish_reason == FinishReason.STOP
    assert done.usage == invoke_pb2.Usage(
        prompt_tokens=30, completion_tokens=20, cached_tokens=10, reasoning_tokens=12
    )

    call = Behavior(tool_call=("get_weather", {"city": "Porto"}))
    done = parse_responses_response(FAKE.response_object(BODY, "m", call, _usage(call)), "openai")
    assert done.finish_reason == FinishReason.TOOL_CALLS
    assert (done.message.tool_calls[0].name, orjson.loads(done.message.tool_calls[0].arguments_json)) == (
        "get_weather",
        {"city": "Porto"},
    )
    cut = Behavior(finish="length")
    assert (
        parse_responses_response(FAKE.response_object(BODY, "m", cut, _usage(cut)), "openai").finish_reason
        == FinishReason.LENGTH
    )
    failed = {
        "object": "response",
        "status": "failed",
        "error": {"code": "rate_limit_exceeded", "message": "slow"},
    }
    with pytest.raises(GatewayError) as caught:
        parse_responses_response(failed, "openai")
    assert caught.value.code == ErrorCode.RATE_LIMITED and caught.value.retryable


@pytest.mark.parametrize("tool", [False, True])
def test_stream_events_map_onto_chunks_and_the_usage_at_the_end(tool: bool) -> None:
    behavior = (
        Behavior(tool_call=("get_weather", {"city": "Porto"}), prompt_tokens=9, completion_tokens=5)
        if tool
        else Behavior(text="one two three", prompt_tokens=9, completion_tokens=3, reasoning_tokens=2)
    )
    stream = ResponsesStream("openai", invoke_pb2.InvokeRequest())
    out = [
        x
        for event in _events(FAKE.response_frames(BODY, "m", behavior, _usage(behavior)))
        for x in stream.feed(event)
    ]
    chunks = [x for x in out if isinstance(x, invoke_pb2.Chunk)]
    assert stream.done
    done = stream.result()
    if tool:
        assert chunks[0].tool_calls[0].name == "get_weather" and chunks[0].tool_calls[0].id.startswith(
            "call_"
        )
        assert orjson.loads("".join(c.tool_calls[0].arguments_delta for c in chunks)) == {"city": "Porto"}
        assert done.finish_reason == FinishReason.TOOL_CALLS
        assert done.message.tool_calls[0].arguments_json == '{"city":"Porto"}'
    else:
        assert [c.delta_text for c in chunks] == ["one ", "two ", "three"]
        assert done.message.content[0].text == "one two three"
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (9, 5 if tool else 3)
    assert done.usage.reasoning_tokens == (0 if tool else 2)


def test_a_stream_cut_or_failed_in_band_is_an_error() -> None:
    behavior = Behavior(text="a b c d")
    events = _events(FAKE.response_frames(BODY, "m", behavior, _usage(behavior)))
    cut = ResponsesStream("openai", invoke_pb2.InvokeRequest())
    for event in events[:5]:  # ... the first deltas, and no response.completed
        cut.feed(event)
    with pytest.raises(GatewayError) as caught:
        cut.result()
    assert (
        caught.value.code == ErrorCode.UPSTREAM_ERROR and "before response.completed" in caught.value.message
    )
    error = _events([_Frame(FAKE.response_error_frame(Behavior(error_message="boom")))])
    with pytest.raises(GatewayError) as caught:
        ResponsesStream("openai", invoke_pb2.InvokeRequest()).feed(error[0])
    assert caught.value.code == ErrorCode.UPSTREAM_ERROR and "boom" in caught.value.message


class _Frame:
    def __init__(self, data: bytes) -> None:
        self.data = data


def test_the_fake_refuses_unknown_parameters_as_openai_does() -> None:
    assert (
        FAKE.validate_responses({"model": "m", "input": "x", "strategy": "cheap"})
        == "Unknown parameter: 'strategy'."
    )
    assert FAKE.validate_responses({"model": "m", "input": "x", "store": False}) == ""


def test_only_openai_deployments_pass_a_responses_request_through() -> None:
    from services.providers.adapters.openai import Adapter as OpenAIAdapter
    from services.providers.adapters.openai_compat import Adapter as CompatAdapter
    from switchyard.catalog import Deployment
    from switchyard.settings import Settings

    request = invoke_pb2.InvokeRequest(api="responses", responses_json='{"input": "hi", "store": false}')
    request.messages.add(role=invoke_pb2.ROLE_USER).content.add(text="hi")
    openai = Deployment(id="openai/gpt-4o-mini", provider="openai", model="gpt-4o-mini", adapter="openai",
                        base_url="https://api.openai.com/v1")  # fmt: skip
    native = OpenAIAdapter(openai, Settings())
    assert native.url(request, False) == "https://api.openai.com/v1/responses"
    assert native.body(request, False) == {"input": "hi", "store": False, "model": "gpt-4o-mini"}
    # Not from another API (a gRPC caller cannot smuggle a body upstream), and not when turned off.
    other_api = invoke_pb2.InvokeRequest(api="grpc", responses_json=request.responses_json)
    other_api.messages.extend(request.messages)
    assert native.url(other_api, False).endswith("/chat/completions")
    off = OpenAIAdapter(Deployment(**{**openai.__dict__, "options": {"responses_api": False}}), Settings())
    assert off.url(request, False).endswith("/chat/completions") and "messages" in off.body(request, False)
    compat = Deployment(id="local/llama", provider="local", model="llama", adapter="openai_compat",
                        base_url="http://127.0.0.1:8000/v1")  # fmt: skip
    assert CompatAdapter(compat, Settings()).url(request, False).endswith("/chat/completions")
