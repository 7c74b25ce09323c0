"""Pure tests of prompt-caching prices, the cache/reasoning token classes in each wire format,
cache_control passed through, embedding translation and the three new HTTP APIs' parsing."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from services.ingress import anthropic_api, completions_api, embeddings_api
from services.providers.adapters.anthropic import anthropic_request, anthropic_usage, parse_count
from services.providers.adapters.gemini import gemini_usage
from services.providers.adapters.openai import chat_usage
from services.providers.embeddings import (
    MISTRAL_EMBEDDINGS,
    decode_vector,
    gemini_embedding_request,
    openai_embedding_request,
    parse_gemini_embeddings,
    parse_openai_embeddings,
)
from services.router.reservation import serving, worst_cases
from switchyard.catalog import build_catalog
from switchyard.config import ConfigError
from switchyard.errors import GatewayError
from switchyard.pricing import Price, cost_usd, max_cost_usd
from switchyard.provider_defaults import ANTHROPIC_PRICES
from switchyard.v1 import invoke_pb2
from switchyard.vectors import pack_base64, unpack_base64

EMBEDDING = invoke_pb2.InvokeRequest.KIND_EMBEDDING
COUNT = invoke_pb2.InvokeRequest.KIND_COUNT_TOKENS


def test_each_token_class_at_its_own_price() -> None:
    price = Price.of("3.00", "15.00", "0.30", "3.75", "6.00")
    # 1000 prompt = 100 plain + 200 read + 700 written (500 of them for 1 hour); 50 output.
    cost = cost_usd(price, 1000, 50, cached_tokens=200, cache_write_tokens=700, cache_write_1h_tokens=500)
    expected = 100 * Decimal("3") + 200 * Decimal("0.30") + 200 * Decimal("3.75") + 500 * Decimal("6")
    assert cost == (expected + 50 * Decimal(15)) / 1_000_000
    # Unset cache prices fall back: writes to the input price, 1-hour writes to the 5-minute one.
    plain = Price.of("1", "0")
    assert cost_usd(plain, 100, 0, cache_write_tokens=100) == cost_usd(plain, 100, 0)
    five = Price.of("1", "0", cache_write="2")
    assert cost_usd(five, 100, 0, cache_write_tokens=100, cache_write_1h_tokens=100) == Decimal("0.0002")
    # Counts beyond the total they are part of are capped, never negative.
    assert (
        cost_usd(price, 10, 0, cached_tokens=8, cache_write_tokens=8)
        == (8 * Decimal("0.30") + 2 * Decimal("3.75")) / 1_000_000
    )


def test_budget_holds_price_the_prompt_at_the_dearest_input_class() -> None:
    price = ANTHROPIC_PRICES["claude-haiku-4-5"]
    assert (price.cache_read_price, price.cache_write_price, price.cache_write_1h_price) == (
        Decimal("0.100"),
        Decimal("1.2500"),
        Decimal("2.00"),
    )
    assert max_cost_usd(price, 1000, 0) == cost_usd(
        price, 1000, 0, cache_write_tokens=1000, cache_write_1h_tokens=1000
    )


def test_usage_classes_from_each_wire_format() -> None:
    anthropic = anthropic_usage(
        {
            "input_tokens": 10,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 300,
            "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200},
            "output_tokens": 7,
        }
    )
    assert (anthropic.prompt_tokens, anthropic.cached_tokens) == (410, 100)
    assert (anthropic.cache_write_tokens, anthropic.cache_write_1h_tokens) == (300, 200)
    openai = chat_usage(
        {
            "prompt_tokens": 50,
            "completion_tokens": 40,
            "prompt_tokens_details": {"cached_tokens": 32},
            "completion_tokens_details": {"reasoning_tokens": 30},
        }
    )
    assert (openai.cached_tokens, openai.completion_tokens, openai.reasoning_tokens) == (32, 40, 30)
    gemini = gemini_usage(
        {
            "promptTokenCount": 50,
            "candidatesTokenCount": 10,
            "thoughtsTokenCount": 30,
            "cachedContentTokenCount": 40,
        }
    )
    assert (gemini.completion_tokens, gemini.reasoning_tokens, gemini.cached_tokens) == (40, 30, 40)


def test_usage_objects_show_the_classes_in_each_dialect() -> None:
    usage = invoke_pb2.Usage(
        prompt_tokens=1000,
        completion_tokens=50,
        cached_tokens=200,
        cache_write_tokens=700,
        cache_write_1h_tokens=500,
    )
    assert anthropic_api.usage_json(usage) == {
        "input_tokens": 100,
        "output_tokens": 50,
        "cache_creation_input_tokens": 700,
        "cache_read_input_tokens": 200,
        "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 500},
    }


def test_cache_control_reaches_anthropic_on_system_parts_blocks_and_tools() -> None:
    body = anthropic_api.parse_body(
        orjson.dumps(
            {
                "model": "anthropic/claude-haiku-4-5",
                "max_tokens": 10,
                "system": [
                    {"type": "text", "text": "rules", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                    {"type": "text", "text": "more"},
                ],
                "tools": [
                    {"name": "t", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}
                ],
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "text", "text": "doc", "cache_control": {"type": "ephemeral"}}],
                    },
                    {
                        "role": "assistant",
                        "content": [
                            {
                                "type": "tool_use",
                                "id": "c1",
                                "name": "t",
                                "input": {"q": 1},
                                "cache_control": {"type": "ephemeral", "ttl": "1h"},
                            }
                        ],
                    },
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "c1",
                                "content": "ok",
                                "cache_control": {"type": "ephemeral"},
                            }
                        ],
                    },
                ],
            }
        )
    )
    out = anthropic_request(anthropic_api.to_request(body), "claude-haiku-4-5", stream=False)
    assert out["system"] == [
        {"type": "text", "text": "rules", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        {"type": "text", "text": "more"},
    ]
    assert out["tools"][0]["cache_control"] == {"type": "ephemeral"}
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "doc", "cache_control": {"type": "ephemeral"}}
    ]
    assert out["messages"][1]["content"] == [  # tool_use: unchanged, breakpoint and all
        {
            "type": "tool_use",
            "id": "c1",
            "name": "t",
            "input": {"q": 1},
            "cache_control": {"type": "ephemeral", "ttl": "1h"},
        }
    ]
    assert out["messages"][2]["content"][0]["cache_control"] == {"type": "ephemeral"}
    with pytest.raises(GatewayError):  # a ttl Anthropic does not have is a 400 at the edge
        anthropic_api.parse_body(
            orjson.dumps(
                {
                    "model": "m",
                    "max_tokens": 1,
                    "messages": [
                        {
                            "role": "user",
                            "content": [
                                {
                                    "type": "text",
                                    "text": "x",
                                    "cache_control": {"type": "ephemeral", "ttl": "2h"},
                                }
                            ],
                        }
                    ],
                }
            )
        )


def test_cache_control_on_native_tool_calls_and_inner_tool_result_blocks() -> None:
    """The native API takes a breakpoint on a tool call; a breakpoint on a tool_result's last
    inner block marks the whole (one-part) result."""
    from services.ingress import native

    body = native.parse_body(
        orjson.dumps(
            {
                "model": "anthropic/claude-haiku-4-5",
                "messages": [
                    {"role": "user", "content": "go"},
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "c1",
                                "function": {"name": "t", "arguments": "{}"},
                                "cache_control": {"type": "ephemeral"},
                            }
                        ],
                    },
                    {"role": "tool", "tool_call_id": "c1", "content": "done"},
                ],
            }
        )
    )
    out = anthropic_request(native.to_request(body), "claude-haiku-4-5", stream=False)
    assert out["messages"][1]["content"][0]["cache_control"] == {"type": "ephemeral"}
    inner = anthropic_api.parse_body(
        orjson.dumps(
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "c", "name": "t", "input": {}}],
                    },
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "c",
                                "content": [
                                    {"type": "text", "text": "r", "cache_control": {"type": "ephemeral"}}
                                ],
                            }
                        ],
                    },
                ],
            }
        )
    )
    result = anthropic_request(anthropic_api.to_request(inner), "m", stream=False)["messages"][1]["content"][
        0
    ]
    assert result == {
        "type": "tool_result",
        "tool_use_id": "c",
        "content": "r",
        "cache_control": {"type": "ephemeral"},
    }


def test_count_tokens_body_and_answer() -> None:
    body = anthropic_api.parse_json_body(
        orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "system": "s"}),
        anthropic_api.CountTokensRequest,
        strict=True,
    )
    request = anthropic_api.count_request(body)
    assert (request.kind, request.api, request.max_tokens, request.stream) == (
        COUNT,
        "count_tokens",
        0,
        False,
    )
    out = anthropic_request(request, "claude-haiku-4-5", stream=False)
    assert set(out) == {"model", "messages", "system"}  # no max_tokens or sampling
    assert parse_count({"input_tokens": 42}, "anthropic").usage.prompt_tokens == 42
    with pytest.raises(GatewayError):
        parse_count({"tokens": 42}, "anthropic")


def test_embedding_requests_and_answers_in_each_wire_format() -> None:
    request = embeddings_api.to_request(
        embeddings_api.EmbeddingsRequest.model_validate(
            {"model": "m", "input": ["a", "b"], "dimensions": 3, "user": "u", "encoding_format": "base64"}
        )
    )
    assert request.kind == EMBEDDING and list(request.embedding.inputs) == ["a", "b"]
    assert openai_embedding_request(request, "text-embedding-3-small") == {
        "model": "text-embedding-3-small",
        "input": ["a", "b"],
        "encoding_format": "base64",
        "dimensions": 3,
        "user": "u",
    }
    assert openai_embedding_request(request, "mistral-embed", MISTRAL_EMBEDDINGS) == {
        "model": "mistral-embed",
        "input": ["a", "b"],
        "encoding_format": "float",
        "output_dimension": 3,
    }
    assert gemini_embedding_request(request, "gemini-embedding-001")["requests"][1] == {
        "model": "models/gemini-embedding-001",
        "content": {"parts": [{"text": "b"}]},
        "outputDimensionality": 3,
    }
    vectors = [[0.5, -0.25, 0.125], [1.0, 0.0, -1.0]]
    answer = {
        "data": [
            {"index": 1, "embedding": vectors[1]},
            {"index": 0, "embedding": pack_base64(vectors[0])},
        ],
        "usage": {"prompt_tokens": 2, "total_tokens": 2},
    }
    done = parse_openai_embeddings(answer, request, "openai")
    assert [list(e.values) for e in done.embeddings] == vectors  # in input order, either encoding
    assert done.usage.prompt_tokens == 2
    gemini = parse_gemini_embeddings({"embeddings": [{"values": v} for v in vectors]}, request, "gemini")
    assert gemini.usage.prompt_tokens > 0  # no count reported: the pessimistic estimate
    with pytest.raises(GatewayError):
        parse_gemini_embeddings({"embeddings": [{"values": vectors[0]}]}, request, "gemini")  # 1 for 2 inputs
    with pytest.raises(GatewayError):
        decode_vector("not base64!", "openai")
    assert unpack_base64(pack_base64([0.1])) == (pytest.approx(0.1),)


def test_rendered_embeddings_round_trip_float32_exactly() -> None:
    request = invoke_pb2.InvokeRequest(kind=EMBEDDING)
    request.embedding.encoding_format = "base64"
    final = invoke_pb2.InvokeResponse(provider="demo", model="embed")
    final.embeddings.add(values=[0.1, 0.2, 0.3])
    out = embeddings_api.embeddings_json(request, final)
    embeddings_api.EmbeddingList.model_validate({**out, "switchyard": out["switchyard"]})
    assert list(unpack_base64(out["data"][0]["embedding"])) == list(final.embeddings[0].values)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"model": "m", "input": []}, "empty"),
        ({"model": "m", "input": [[1, 2]]}, "token-array"),
        ({"model": "m", "input": ["ok", ""]}, "empty"),
        ({"model": "m", "input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"model": "m", "input": "x", "dimensions": 0}, "dimensions"),
    ],
)
def test_bad_embedding_bodies_are_400s(body: dict, problem: str) -> None:
    with pytest.raises(GatewayError) as bad:
        embeddings_api.EmbeddingsApi().parse(orjson.dumps(body), 64)
    assert problem in bad.value.message and bad.value.code == "invalid_request"


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"prompt": ["a", "b"]}, "one text prompt"),
        ({"echo": True}, "echo"),
        ({"logprobs": 2}, "logprobs"),
        ({"suffix": "end"}, "suffix"),
        ({"n": 2}, "n"),
    ],
)
def test_legacy_completions_refuse_what_chat_cannot_do(extra: dict, problem: str) -> None:
    with pytest.raises(GatewayError) as bad:
        completions_api.CompletionsApi().parse(orjson.dumps({"model": "m", "prompt": "p", **extra}), 64)
    assert problem in bad.value.message


def test_legacy_completion_is_one_user_turn_with_openais_default_length() -> None:
    parsed = completions_api.CompletionsApi().parse(orjson.dumps({"model": "m", "prompt": "Once upon"}), 64)
    request = parsed.request
    assert (request.api, request.max_tokens, len(request.messages)) == ("completions", 16, 1)
    assert (
        request.messages[0].role == invoke_pb2.ROLE_USER
        and request.messages[0].content[0].text == "Once upon"
    )
    final = invoke_pb2.InvokeResponse(
        provider="demo", model="fast", finish_reason=invoke_pb2.FINISH_REASON_LENGTH
    )
    final.message.content.add(text=" a time")
    out = completions_api.text_completion_json(request, final)
    completions_api.TextCompletion.model_validate(out)
    assert out["choices"][0]["text"] == " a time" and out["choices"][0]["finish_reason"] == "length"


def test_embedding_deployments_serve_only_embeddings() -> None:
    catalog = build_catalog({}, {})
    chat = invoke_pb2.InvokeRequest(model="auto")
    embed = invoke_pb2.InvokeRequest(model="auto", kind=EMBEDDING)
    candidates = list(catalog.deployments.values())
    assert [d.id for d in serving(candidates, embed, "auto")] == ["demo/embed"]
    assert "demo/embed" not in [d.id for d in serving(candidates, chat, "auto")]
    with pytest.raises(GatewayError) as none:
        serving([catalog.deployments["demo/fast"]], embed, "demo/fast")
    assert none.value.param == "model"
    embed.embedding.inputs.append("x" * 400)
    worst = worst_cases(embed, [catalog.deployments["demo/embed"]])[0]
    assert worst.output_tokens == 0 and worst.cost_usd == Decimal(100) * Decimal("0.02") / 1_000_000
    count = invoke_pb2.InvokeRequest(model="auto", kind=COUNT)
    count.messages.add(role=invoke_pb2.ROLE_USER).content.add(text="x" * 400)
    assert worst_cases(count, [catalog.deployments["demo/smart"]])[0].cost_usd == 0  # counting is free
    with pytest.raises(ConfigError, match="serves no embeddings"):
        build_catalog(
            {"deployments": [{"provider": "anthropic", "model": "claude", "kind": "embedding"}]}, {}
        )
