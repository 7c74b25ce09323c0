import orjson
import pytest

from services.ingress import native
from switchyard import choices
from switchyard.errors import GatewayError
from switchyard.v1 import invoke_pb2


def test_full_body_translates_to_the_contract() -> None:
    body = native.parse_body(
        orjson.dumps(
            {
                "model": "openai/gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "what is this?"},
                            {
                                "type": "image_url",
                                "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"},
                            },
                        ],
                    },
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "c1", "function": {"name": "look", "arguments": {"q": 1}}}],
                    },
                    {"role": "tool", "tool_call_id": "c1", "content": "a cat"},
                ],
                "tools": [
                    {"type": "function", "function": {"name": "look", "parameters": {"type": "object"}}}
                ],
                "tool_choice": "auto",
                "max_tokens": 64,
                "temperature": 0.2,
                "top_p": 0.9,
                "stop": "END",
                "seed": 7,
                "response_format": {"type": "json_object"},
                "stream": True,
                "strategy": {"latency": 0.5, "cost": 0.5},
                "metadata": {"agent": "triage", "priority": 3, "beta": True},
            }
        )
    )
    request = native.to_request(body)
    assert request.model == "openai/gpt-4o-mini" and request.stream and request.api == "native"
    assert [choices.role_name(m.role) for m in request.messages] == ["system", "user", "assistant", "tool"]
    image = request.messages[1].content[1].image
    assert image.url.startswith("data:image/png") and image.detail == "low"
    assert request.messages[2].tool_calls[0].arguments_json == '{"q":1}'
    assert request.messages[3].tool_call_id == "c1"
    assert request.tools[0].name == "look" and orjson.loads(request.tools[0].parameters_json) == {
        "type": "object"
    }
    assert request.max_tokens == 64 and request.HasField("temperature") and list(request.stop) == ["END"]
    assert request.seed == 7 and choices.response_format_json(request.response_format) == {
        "type": "json_object"
    }
    assert request.strategy.explicit and request.strategy.latency == 0.5
    assert dict(request.metadata) == {"agent": "triage", "priority": "3", "beta": "true"}


def test_unset_sampling_stays_unset() -> None:
    request = native.to_request(
        native.parse_body(b'{"model":"auto","messages":[{"role":"user","content":"x"}]}')
    )
    assert not request.HasField("temperature") and not request.HasField("top_p") and request.max_tokens == 0


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"", "not valid JSON"),
        (b'"text"', "JSON object"),
        (b'{"model":"auto","messages":[{"role":"user","content":"x"}],"strategy":"greedy"}', "strategy"),
        (
            b'{"model":"auto","messages":[{"role":"user","content":"x"}],"strategy":{"latency":0}}',
            "all be zero",
        ),
        (b'{"model":"auto","messages":[{"role":"user","content":[{"type":"audio"}]}]}', "messages.0.content"),
        (b'{"model":"","messages":[{"role":"user","content":"x"}]}', "model"),
    ],
)
def test_bad_bodies_raise_invalid_request_naming_the_field(raw: bytes, needle: str) -> None:
    with pytest.raises(GatewayError) as info:
        native.parse_body(raw)
    assert info.value.code == "invalid_request" and info.value.http_status == 400
    assert needle in info.value.message


USER = b'[{"role":"user","content":"x"}]'


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b'{"model":"auto","messages":[{"role":"user"}]}', "messages.0.content"),
        (b'{"model":"auto","messages":[{"role":"system","content":null}]}', "messages.0.content"),
        (b'{"model":"auto","messages":[{"role":"assistant"}]}', "messages.0.content"),
        (b'{"model":"auto","messages":' + USER + b',"stream":"yes"}', "stream"),
        (b'{"model":"auto","messages":' + USER + b',"stream":1}', "stream"),
        (b'{"model":"auto","messages":' + USER + b',"max_tokens":"5"}', "max_tokens"),
        (b'{"model":"auto","messages":' + USER + b',"temperature":"0.5"}', "temperature"),
        (b'{"model":"auto","messages":' + USER + b',"seed":1.5}', "seed"),
        (b'{"model":"auto","messages":' + USER + b',"metadata":{"team":null}}', "metadata.team"),
    ],
)
def test_strict_types_and_a_message_without_content_are_refused_naming_the_field(
    raw: bytes, param: str
) -> None:
    """Strict like the OpenAI and Anthropic bodies: no "yes" taken for true, no empty turns."""
    with pytest.raises(GatewayError) as info:
        native.parse_body(raw)
    assert info.value.code == "invalid_request" and info.value.param == param, info.value.message


def test_an_assistant_turn_with_only_tool_calls_needs_no_content() -> None:
    call = b'{"id":"c1","function":{"name":"look","arguments":"{}"}}'
    body = native.parse_body(
        b'{"model":"auto","messages":[{"role":"user","content":"x"},{"role":"assistant","tool_calls":['
        + call
        + b']},{"role":"tool","tool_call_id":"c1","content":"seen"}],"temperature":1,"stream":true}'
    )
    request = native.to_request(body)
    assert request.messages[1].tool_calls[0].id == "c1" and request.stream and request.temperature == 1.0


def test_response_and_chunk_json_shapes() -> None:
    response = invoke_pb2.InvokeResponse(
        request_id="r",
        provider="demo",
        model="fast",
        cost_usd="0.1",
        finish_reason=invoke_pb2.FINISH_REASON_TOOL_CALLS,
    )
    response.message.role = invoke_pb2.ROLE_ASSISTANT
    response.message.tool_calls.add(id="c", name="f", arguments_json="{}")
    response.usage.prompt_tokens = 3
    response.usage.completion_tokens = 4
    out = native.response_json(response)
    assert out["message"]["content"] is None
    assert out["message"]["tool_calls"][0]["function"] == {"name": "f", "arguments": "{}"}
    assert out["usage"]["total_tokens"] == 7
    chunk = native.chunk_json(invoke_pb2.Chunk(seq=2, delta_text="hi"))
    assert chunk == {"seq": 2, "delta": "hi"}
    assert native.sse("chunk", chunk) == b'event: chunk\ndata: {"seq":2,"delta":"hi"}\n\n'
