"""The adapters' pure translation, tested directly: neutral request -> provider body, provider
response / stream events -> neutral answer, finish reasons and usage."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest

from services.providers.adapters.anthropic import (
    AnthropicStream,
    anthropic_request,
    anthropic_usage,
    parse_anthropic_response,
)
from services.providers.adapters.base import Completed, Progress
from services.providers.adapters.gemini import GeminiStream, gemini_request, parse_gemini_response
from services.providers.adapters.mistral import MISTRAL
from services.providers.adapters.openai import (
    Adapter as OpenAIAdapter,
)
from services.providers.adapters.openai import (
    ChatStream,
    chat_request,
    join_url,
    parse_chat_response,
)
from services.providers.adapters.openai_compat import COMPAT
from services.providers.content import MessageAssembler, image_of
from services.providers.sse import SSEEvent
from switchyard import choices
from switchyard.catalog import Deployment
from switchyard.errors import GatewayError
from switchyard.settings import Settings
from switchyard.v1 import invoke_pb2


def conversation() -> invoke_pb2.InvokeRequest:
    """System prompt, a user turn with an image, an assistant tool call, two tool results."""
    r = invoke_pb2.InvokeRequest(model="m", max_tokens=100, temperature=1.5, top_p=0.9, seed=7)
    r.stop.extend(["END"])
    r.messages.add(role=invoke_pb2.ROLE_SYSTEM).content.add(text="Be brief.")
    user = r.messages.add(role=invoke_pb2.ROLE_USER)
    user.content.add(text="What is this?")
    user.content.add(image=invoke_pb2.ImagePart(url="https://img.example/cat.png", detail="low"))
    assistant = r.messages.add(role=invoke_pb2.ROLE_ASSISTANT)
    assistant.tool_calls.add(id="c1", name="lookup", arguments_json='{"q": "cat"}')
    assistant.tool_calls.add(id="c2", name="size", arguments_json="{}")
    r.messages.add(role=invoke_pb2.ROLE_TOOL, tool_call_id="c1").content.add(text='{"kind": "cat"}')
    r.messages.add(role=invoke_pb2.ROLE_TOOL, tool_call_id="c2").content.add(text="small")
    r.tools.add(name="lookup", description="Look up", parameters_json='{"type": "object"}')
    r.tool_choice.CopyFrom(
        choices.tool_choice_from_json({"type": "function", "function": {"name": "lookup"}})
    )
    r.response_format.CopyFrom(choices.response_format_from_json({"type": "json_object"}))
    return r


def events(*payloads: dict | str, event: str = "message") -> list[SSEEvent]:
    return [SSEEvent(event, p if isinstance(p, str) else orjson.dumps(p).decode()) for p in payloads]


def run(translator, sse_events: list[SSEEvent]) -> tuple[list, Completed]:
    out = []
    for e in sse_events:
        out.extend(translator.feed(e))
    return out, translator.result()


# --- OpenAI and its dialects ---


def test_openai_request_carries_every_neutral_field() -> None:
    body = chat_request(conversation(), "gpt-4.1", stream=True)
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://img.example/cat.png", "detail": "low"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "cat"}'}},
                {"id": "c2", "type": "function", "function": {"name": "size", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"kind": "cat"}'},
        {"role": "tool", "tool_call_id": "c2", "content": "small"},
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {"name": "lookup", "description": "Look up", "parameters": {"type": "object"}},
        }
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
    assert body["max_completion_tokens"] == 100 and "max_tokens" not in body
    assert (body["temperature"], body["top_p"], body["seed"], body["stop"]) == (1.5, 0.9, 7, ["END"])
    assert body["response_format"] == {"type": "json_object"}
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_mistral_and_compat_dialects() -> None:
    request = conversation()
    request.tool_choice.CopyFrom(choices.tool_choice_from_json("required"))
    mistral = chat_request(request, "mistral-large-latest", stream=True, dialect=MISTRAL)
    assert mistral["max_tokens"] == 100 and mistral["random_seed"] == 7
    assert "seed" not in mistral and "max_completion_tokens" not in mistral
    assert "stream_options" not in mistral and mistral["tool_choice"] == "any"
    compat = chat_request(request, "llama", stream=False, dialect=COMPAT)
    assert compat["max_tokens"] == 100 and "stream" not in compat and compat["tool_choice"] == "required"


def test_openai_response_with_tool_calls_cached_usage_and_finish_reasons() -> None:
    payload = {
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_9",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"a":1}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 20,
            "prompt_tokens_details": {"cached_tokens": 64},
        },
    }
    done = parse_chat_response(payload, "openai")
    assert done.finish_reason == "tool_calls"
    assert [(c.id, c.name, c.arguments_json) for c in done.message.tool_calls] == [("call_9", "f", '{"a":1}')]
    assert (done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.cached_tokens) == (100, 20, 64)
    # Mistral: arguments as an object, "model_length" means the context ran out.
    mistral = {
        "choices": [
            {
                "message": {
                    "content": "x",
                    "tool_calls": [{"id": "a", "function": {"name": "g", "arguments": {"b": 2}}}],
                },
                "finish_reason": "model_length",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1},
    }
    done = parse_chat_response(mistral, "mistral")
    assert done.finish_reason == "length" and done.message.tool_calls[0].arguments_json == '{"b":2}'
    assert done.message.content[0].text == "x"


def test_a_server_without_usage_is_estimated_not_billed_zero() -> None:
    request = conversation()
    done = parse_chat_response(
        {"choices": [{"message": {"content": "abcdefgh"}, "finish_reason": "stop"}]}, "vllm", request
    )
    assert done.usage.prompt_tokens > 0 and done.usage.completion_tokens == 2


def test_openai_response_errors() -> None:
    with pytest.raises(GatewayError) as info:
        parse_chat_response({"choices": []}, "openai")
    assert info.value.code == "upstream_error"
    with pytest.raises(GatewayError) as info:
        parse_chat_response({"error": {"type": "server_error", "message": "boom"}}, "openai")
    assert info.value.retryable


def test_openai_stream_with_tool_call_deltas_and_usage_chunk() -> None:
    stream = ChatStream("openai", conversation())
    out, done = run(
        stream,
        events(
            {
                "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                ],
                "usage": None,
            },
            {"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}], "usage": None},
            {
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [
                                {
                                    "index": 0,
                                    "id": "call_1",
                                    "type": "function",
                                    "function": {"name": "f", "arguments": ""},
                                }
                            ]
                        },
                        "finish_reason": None,
                    }
                ]
            },
            {
                "choices": [
                    {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}}
                ]
            },
            {
                "choices": [
                    {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}}
                ]
            },
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
            {
                "choices": [],
                "usage": {
                    "prompt_tokens": 9,
                    "completion_tokens": 4,
                    "prompt_tokens_details": {"cached_tokens": 0},
                },
            },
            "[DONE]",
        ),
    )
    chunks = [c for c in out if isinstance(c, invoke_pb2.Chunk)]
    assert [c.seq for c in chunks] == [0, 1, 2, 3]
    assert chunks[0].delta_text == "Hi"
    assert chunks[1].tool_calls[0].id == "call_1" and chunks[1].tool_calls[0].name == "f"
    assert "".join(c.tool_calls[0].arguments_delta for c in chunks[1:]) == '{"a":1}'
    assert isinstance(out[-1], Progress) and out[-1].usage.prompt_tokens == 9
    assert done.finish_reason == "tool_calls" and done.message.content[0].text == "Hi"
    assert done.message.tool_calls[0].arguments_json == '{"a":1}'
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (9, 4)


def test_openai_stream_cut_malformed_or_erroring_raises() -> None:
    stream = ChatStream("openai", conversation())
    stream.feed(events({"choices": [{"index": 0, "delta": {"content": "Hi"}}]})[0])
    with pytest.raises(GatewayError, match=r"before \[DONE\]"):
        stream.result()
    with pytest.raises(GatewayError, match="malformed") as info:
        ChatStream("openai", conversation()).feed(SSEEvent("message", '{"choices": [{"delta"'))
    assert info.value.code == "upstream_error" and info.value.retryable
    with pytest.raises(GatewayError) as info:
        ChatStream("openai", conversation()).feed(
            events({"error": {"type": "server_error", "message": "x"}})[0]
        )
    assert info.value.code == "upstream_error"


def test_azure_style_deployment_options() -> None:
    deployment = Deployment(
        id="azure/gpt",
        provider="azure",
        model="gpt-4o",
        adapter="openai_compat",
        base_url="https://res.openai.azure.com/openai/deployments/gpt4o/",
        api_key="azure-key-123456",
        options={
            "auth_header": "api-key",
            "query": {"api-version": "2024-10-21"},
            "headers": {"x-ms-client": "sy"},
        },
    )
    adapter = OpenAIAdapter(deployment, Settings())
    assert adapter.url(conversation(), False) == (
        "https://res.openai.azure.com/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21"
    )
    assert adapter.headers() == {"x-ms-client": "sy", "api-key": "azure-key-123456"}
    assert adapter.body(conversation(), stream=True)["stream_options"] == {"include_usage": True}
    no_usage = OpenAIAdapter(replace(deployment, options={"stream_usage": False}), Settings())
    assert "stream_options" not in no_usage.body(conversation(), stream=True)
    assert (
        join_url("https://api.mistral.ai/v1/", "/v1/chat/completions")
        == "https://api.mistral.ai/v1/chat/completions"
    )


# --- Anthropic ---


def test_anthropic_request_system_tools_results_and_images() -> None:
    body = anthropic_request(conversation(), "claude-sonnet-4-5", stream=True)
    assert body["system"] == "Be brief."
    assert body["max_tokens"] == 100 and body["stream"] is True
    assert body["temperature"] == 1.0  # clamped to Anthropic's 0..1
    assert body["stop_sequences"] == ["END"] and body["top_p"] == 0.9
    assert body["tools"] == [{"name": "lookup", "description": "Look up", "input_schema": {"type": "object"}}]
    assert body["tool_choice"] == {"type": "tool", "name": "lookup"}
    assert "response_format" not in body and "seed" not in body
    user, assistant, results = body["messages"]
    assert user["content"][1] == {
        "type": "image",
        "source": {"type": "url", "url": "https://img.example/cat.png"},
    }
    assert [b["input"] for b in assistant["content"]] == [{"q": "cat"}, {}]
    # Both tool results share one user turn (Anthropic requires it for parallel calls).
    assert results == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "c1", "content": '{"kind": "cat"}'},
            {"type": "tool_result", "tool_use_id": "c2", "content": "small"},
        ],
    }
    request = invoke_pb2.InvokeRequest()
    request.messages.add(role=invoke_pb2.ROLE_USER).content.add(text="hi")
    assert anthropic_request(request, "m", False, default_max_tokens=512)["max_tokens"] == 512


def test_anthropic_tool_choice_and_bad_arguments() -> None:
    request = conversation()
    for choice, expected in [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
    ]:
        request.tool_choice.CopyFrom(choices.tool_choice_from_json(choice))
        assert anthropic_request(request, "m", False)["tool_choice"] == expected
    request.messages[2].tool_calls[0].arguments_json = "not json"
    with pytest.raises(GatewayError) as info:
        anthropic_request(request, "m", False)
    assert info.value.code == "invalid_request"


def test_anthropic_usage_counts_cache_reads_and_writes_as_prompt() -> None:
    usage = anthropic_usage(
        {
            "input_tokens": 10,
            "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 200,
            "output_tokens": 5,
        }
    )
    assert (usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens) == (1210, 1000, 5)
    later = anthropic_usage({"output_tokens": 42}, usage)
    assert (later.prompt_tokens, later.completion_tokens) == (1210, 42)


def test_anthropic_response() -> None:
    done = parse_anthropic_response(
        {
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}},
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 3, "output_tokens": 4},
        },
        "anthropic",
    )
    assert done.finish_reason == "tool_calls" and done.message.content[0].text == "Checking."
    assert done.message.tool_calls[0].arguments_json == '{"q":"x"}'
    for raw, neutral in [("end_turn", "stop"), ("max_tokens", "length"), ("refusal", "content_filter")]:
        assert parse_anthropic_response({"content": [], "stop_reason": raw}, "a").finish_reason == neutral


def test_anthropic_stream_maps_block_indices_to_tool_indices() -> None:
    out, done = run(
        AnthropicStream("anthropic"),
        [
            *events(
                {"type": "message_start", "message": {"usage": {"input_tokens": 25, "output_tokens": 1}}}
            ),
            *events(
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
            ),
            *events({"type": "ping"}),
            *events(
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me"}}
            ),
            *events(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": " check."},
                }
            ),
            *events({"type": "content_block_stop", "index": 0}),
            *events(
                {
                    "type": "content_block_start",
                    "index": 1,
                    "content_block": {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}},
                }
            ),
            *events(
                {
                    "type": "content_block_delta",
                    "index": 1,
                    "delta": {"type": "input_json_delta", "partial_json": '{"q":'},
                }
            ),
            *events(
                {
                    "type": "content_block_delta",
                    "index": 1,
                    "delta": {"type": "input_json_delta", "partial_json": '"x"}'},
                }
            ),
            *events({"type": "content_block_stop", "index": 1}),
            *events(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "tool_use"},
                    "usage": {"output_tokens": 31},
                }
            ),
            *events({"type": "message_stop"}),
        ],
    )
    progress = [p.usage for p in out if isinstance(p, Progress)]
    assert progress[0].prompt_tokens == 25 and progress[-1].completion_tokens == 31
    tool_chunks = [c for c in out if isinstance(c, invoke_pb2.Chunk) and c.tool_calls]
    assert {c.tool_calls[0].index for c in tool_chunks} == {0}  # block 1 is tool call 0
    assert done.finish_reason == "tool_calls" and done.message.content[0].text == "Let me check."
    assert done.message.tool_calls[0].arguments_json == '{"q":"x"}'
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (25, 31)


def test_anthropic_stream_error_event_and_cut() -> None:
    stream = AnthropicStream("anthropic")
    with pytest.raises(GatewayError) as info:
        stream.feed(
            events(
                {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
                event="error",
            )[0]
        )
    assert info.value.code == "overloaded" and info.value.retryable
    stream = AnthropicStream("anthropic")
    stream.feed(events({"type": "message_start", "message": {"usage": {"input_tokens": 1}}})[0])
    with pytest.raises(GatewayError, match="message_stop"):
        stream.result()


# --- Gemini ---


def test_gemini_request() -> None:
    request = conversation()
    request.messages[1].content[1].image.CopyFrom(
        invoke_pb2.ImagePart(data=b"\x89PNG", media_type="image/png")
    )
    request.response_format.CopyFrom(
        choices.response_format_from_json(
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
        )
    )
    body = gemini_request(request)
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    user, model, results = body["contents"]
    assert user["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": "iVBORw=="}}
    assert model["parts"] == [
        {"functionCall": {"name": "lookup", "args": {"q": "cat"}}},
        {"functionCall": {"name": "size", "args": {}}},
    ]
    # Results name their function (looked up by call id); non-JSON output is wrapped.
    assert results["parts"] == [
        {"functionResponse": {"name": "lookup", "response": {"kind": "cat"}}},
        {"functionResponse": {"name": "size", "response": {"content": "small"}}},
    ]
    assert body["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["lookup"]}
    }
    assert body["generationConfig"] == {
        "temperature": 1.5,
        "topP": 0.9,
        "maxOutputTokens": 100,
        "stopSequences": ["END"],
        "seed": 7,
        "responseMimeType": "application/json",
        "responseJsonSchema": {"type": "object"},
    }


def test_gemini_tool_result_without_a_call_is_a_clear_error() -> None:
    request = invoke_pb2.InvokeRequest()
    request.messages.add(role=invoke_pb2.ROLE_TOOL, tool_call_id="nope").content.add(text="{}")
    with pytest.raises(GatewayError) as info:
        gemini_request(request)
    assert info.value.code == "invalid_request" and "nope" in info.value.message


def test_gemini_response_usage_includes_thinking_and_blocks_are_content_filter() -> None:
    done = parse_gemini_response(
        {
            "candidates": [
                {
                    "content": {
                        "parts": [{"text": "thinking...", "thought": True}, {"text": "Answer"}],
                        "role": "model",
                    },
                    "finishReason": "MAX_TOKENS",
                }
            ],
            "usageMetadata": {
                "promptTokenCount": 100,
                "candidatesTokenCount": 10,
                "thoughtsTokenCount": 50,
                "cachedContentTokenCount": 80,
            },
        },
        "gemini",
    )
    assert done.message.content[0].text == "Answer" and done.finish_reason == "length"
    assert (done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.cached_tokens) == (100, 60, 80)
    blocked = parse_gemini_response(
        {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 5}}, "g"
    )
    assert blocked.finish_reason == "content_filter" and blocked.usage.prompt_tokens == 5


def test_gemini_stream_needs_a_finish_reason() -> None:
    first = {
        "candidates": [{"content": {"parts": [{"text": "Hel"}], "role": "model"}}],
        "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 1},
    }
    call = {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": {"a": 1}}}]}}]}
    last = {
        "candidates": [{"content": {"parts": [{"text": "lo"}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 3},
    }
    out, done = run(GeminiStream("gemini"), events(first, call, last))
    assert [p.usage.completion_tokens for p in out if isinstance(p, Progress)] == [1, 3]
    assert done.message.content[0].text == "Hello" and done.finish_reason == "tool_calls"
    assert done.message.tool_calls[0].name == "f" and done.message.tool_calls[0].id
    cut = GeminiStream("gemini")
    cut.feed(events(first)[0])
    with pytest.raises(GatewayError, match="finishReason"):
        cut.result()


# --- shared content helpers ---


def test_images_from_data_urls_bytes_and_urls() -> None:
    image = image_of(invoke_pb2.ImagePart(url="data:image/webp;base64,AAAA"))
    assert (image.media_type, image.data_b64, image.url) == ("image/webp", "AAAA", "")
    assert (
        image_of(invoke_pb2.ImagePart(data=b"ab", media_type="image/gif")).data_url
        == "data:image/gif;base64,YWI="
    )
    assert image_of(invoke_pb2.ImagePart(url="https://x/y.JPG?s=1")).media_type == "image/jpeg"
    with pytest.raises(GatewayError):
        image_of(invoke_pb2.ImagePart(url="data:image/png,notbase64"))


def test_message_assembler_numbers_chunks_and_rebuilds_the_message() -> None:
    assembler = MessageAssembler()
    assembler.text_chunk("Hello ")
    assembler.tool_chunk(1, id="b", name="g", arguments='{"x":')
    assembler.tool_chunk(0, id="a", name="f")
    last = assembler.tool_chunk(1, arguments="1}")
    assert last.seq == 3
    message = assembler.message()
    assert message.content[0].text == "Hello "
    assert [(c.id, c.name, c.arguments_json) for c in message.tool_calls] == [
        ("a", "f", "{}"),
        ("b", "g", '{"x":1}'),
    ]
    assert assembler.output_tokens_estimate() == 4  # 6 + 1 + 1 + 7 characters, 4 per token
