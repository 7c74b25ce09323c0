"""Reasoning effort, pure: each API's words into the contract's `Reasoning`, and each provider's
own knob out of it, sent only to models that reason (switchyard/reasoning.py)."""

from __future__ import annotations

import orjson
import pytest

from services.ingress import anthropic_api, native, openai_api, responses_api
from services.providers.adapters.anthropic import anthropic_request
from services.providers.adapters.gemini import gemini_request
from services.providers.adapters.openai import chat_request
from switchyard import reasoning
from switchyard.errors import GatewayError
from switchyard.v1 import invoke_pb2

R = invoke_pb2.Reasoning
USER = [{"role": "user", "content": "think"}]


def _chat(**fields: object) -> invoke_pb2.InvokeRequest:
    return openai_api.to_request(
        openai_api.parse_body(orjson.dumps({"model": "m", "messages": USER, **fields}))
    )


def test_every_api_carries_the_effort_into_the_contract() -> None:
    assert _chat(reasoning_effort="high").reasoning == R(effort=R.EFFORT_HIGH)
    assert not _chat().HasField("reasoning")
    with pytest.raises(GatewayError) as caught:
        _chat(reasoning_effort="extreme")
    assert caught.value.param == "reasoning_effort"

    body = responses_api.parse_body(
        orjson.dumps({"model": "m", "input": "x", "reasoning": {"effort": "minimal"}})
    )
    assert responses_api.to_request(body).reasoning == R(effort=R.EFFORT_MINIMAL)

    def anthropic(thinking: dict) -> invoke_pb2.InvokeRequest:
        raw = {"model": "m", "max_tokens": 20000, "messages": USER, "thinking": thinking}
        return anthropic_api.to_request(anthropic_api.parse_body(orjson.dumps(raw)))

    # An explicit budget travels as is, with the effort it is nearest to for other providers.
    assert anthropic({"type": "enabled", "budget_tokens": 10000}).reasoning == R(
        effort=R.EFFORT_MEDIUM, budget_tokens=10000
    )
    assert anthropic({"type": "disabled"}).reasoning == R(effort=R.EFFORT_NONE)
    assert not anthropic({"type": "adaptive"}).HasField("reasoning")  # newer types: provider default
    with pytest.raises(GatewayError):  # below Anthropic's minimum, as Anthropic refuses it
        anthropic({"type": "enabled", "budget_tokens": 100})

    raw = {"model": "m", "messages": USER, "reasoning": {"effort": "low", "budget_tokens": 3000}}
    assert native.to_request(native.parse_body(orjson.dumps(raw))).reasoning == R(
        effort=R.EFFORT_LOW, budget_tokens=3000
    )


def _request(effort: int = 0, budget: int = 0, **fields: object) -> invoke_pb2.InvokeRequest:
    request = invoke_pb2.InvokeRequest(model="x", **fields)
    request.messages.add(role=invoke_pb2.ROLE_USER).content.add(text="think")
    if effort or budget:
        request.reasoning.CopyFrom(R(effort=effort, budget_tokens=budget))  # type: ignore[arg-type]
    return request


@pytest.mark.parametrize(
    ("model", "asked", "sent"),
    [
        ("gpt-5-mini", R.EFFORT_HIGH, "high"),
        ("gpt-5-mini", R.EFFORT_NONE, "minimal"),  # gpt-5 has no "none": the nearest level
        ("gpt-5.1", R.EFFORT_MINIMAL, "low"),  # 5.1 has none and low, not minimal: ties go up
        ("gpt-5.2", R.EFFORT_XHIGH, "xhigh"),
        ("o4-mini", R.EFFORT_XHIGH, "high"),
        ("o3", R.EFFORT_NONE, "low"),
        ("gpt-4.1-mini", R.EFFORT_HIGH, None),  # not a reasoning model: nothing sent
        ("gpt-5-chat-latest", R.EFFORT_HIGH, None),
    ],
)
def test_openai_gets_reasoning_effort_only_where_the_model_has_it(
    model: str, asked: int, sent: str | None
) -> None:
    reasons = reasoning.reasons("openai", model)
    body = chat_request(_request(asked), model, stream=False, model_reasons=reasons)
    assert body.get("reasoning_effort") == sent
    # A deployment option overrides the family guess (a fine-tune, a new family).
    forced = chat_request(
        _request(asked), model, False, model_reasons=reasoning.reasons("openai", model, True)
    )
    assert "reasoning_effort" in forced
    assert not reasoning.reasons("openai_compat", model)  # compatible servers: only by option


def test_anthropic_effort_becomes_an_extended_thinking_budget() -> None:
    model = "claude-sonnet-4-5"
    assert reasoning.reasons("anthropic", model) and not reasoning.reasons("anthropic", "claude-3-5-haiku")
    # No max_tokens from the caller: the budget is added to the default answer room.
    body = anthropic_request(_request(R.EFFORT_MEDIUM, temperature=0.2), model, False, 4096, True)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 8192}
    assert body["max_tokens"] == 4096 + 8192 and "temperature" not in body  # thinking takes none
    # With the caller's max_tokens, the budget shrinks to fit below it, or thinking stays off.
    fitted = anthropic_request(_request(R.EFFORT_HIGH, max_tokens=5000), model, False, 4096, True)
    assert (fitted["thinking"], fitted["max_tokens"]) == ({"type": "enabled", "budget_tokens": 4999}, 5000)
    small = anthropic_request(_request(R.EFFORT_HIGH, max_tokens=900), model, False, 4096, True)
    assert "thinking" not in small and small["max_tokens"] == 900
    # An explicit budget wins; none disables; a low top_p is dropped, a high one kept.
    exact = anthropic_request(_request(R.EFFORT_LOW, 3000, top_p=0.5), model, False, 4096, True)
    assert exact["thinking"]["budget_tokens"] == 3000 and "top_p" not in exact
    kept = anthropic_request(_request(R.EFFORT_LOW, top_p=0.97), model, False, 4096, True)
    assert kept["top_p"] == 0.97
    assert anthropic_request(_request(R.EFFORT_NONE), model, False, 4096, True)["thinking"] == {
        "type": "disabled"
    }
    # Not where the turn forbids it: mid tool loop, or a forced tool choice; nor on other models.
    loop = _request(R.EFFORT_HIGH)
    loop.messages.add(role=invoke_pb2.ROLE_ASSISTANT).tool_calls.add(id="c", name="t", arguments_json="{}")
    loop.messages.add(role=invoke_pb2.ROLE_TOOL, tool_call_id="c").content.add(text="ok")
    assert "thinking" not in anthropic_request(loop, model, False, 4096, True)
    forced = _request(R.EFFORT_HIGH)
    forced.tool_choice.mode = invoke_pb2.ToolChoice.MODE_REQUIRED
    assert "thinking" not in anthropic_request(forced, model, False, 4096, True)
    assert "thinking" not in anthropic_request(
        _request(R.EFFORT_HIGH), "claude-3-5-haiku", False, 4096, False
    )


def test_gemini_effort_becomes_a_thinking_level_or_budget() -> None:
    def config(model: str, effort: int = 0, budget: int = 0) -> dict | None:
        body = gemini_request(_request(effort, budget), model, reasoning.reasons("gemini", model))
        return (body.get("generationConfig") or {}).get("thinkingConfig")

    assert config("gemini-3-pro", R.EFFORT_MEDIUM) == {"thinkingLevel": "high"}  # Pro: low or high
    assert config("gemini-3-pro", R.EFFORT_NONE) == {"thinkingLevel": "low"}
    assert config("gemini-3-flash", R.EFFORT_MINIMAL) == {"thinkingLevel": "minimal"}
    assert config("gemini-3-flash", R.EFFORT_MEDIUM) == {"thinkingLevel": "medium"}
    assert config("gemini-2.5-flash", R.EFFORT_NONE) == {"thinkingBudget": 0}
    assert config("gemini-2.5-flash", R.EFFORT_XHIGH) == {"thinkingBudget": 24576}  # Flash's maximum
    assert config("gemini-2.5-pro", R.EFFORT_NONE) == {"thinkingBudget": 128}  # Pro cannot turn it off
    assert config("gemini-2.5-pro", R.EFFORT_LOW, 5000) == {"thinkingBudget": 5000}
    assert config("gemini-2.0-flash", R.EFFORT_HIGH) is None  # no thinking model
    assert config("gemini-2.5-flash") is None  # nothing asked: the provider's default
