"""Reasoning control: one effort vocabulary at the edges, each provider's own knob upstream. Pure.

Callers say how hard a reasoning model should think in their API's words (OpenAI's
`reasoning_effort` and Responses `reasoning.effort`, Anthropic's `thinking.budget_tokens`, the
native `reasoning`); the contract carries it as `Reasoning` (an effort, or an explicit budget).
Each adapter asks here whether its model reasons at all (a model that does not is sent nothing,
so the caller's effort never turns into an upstream 400) and how to spell the effort: OpenAI
clamps it to the levels the model family has, Anthropic turns it into an extended-thinking
budget, Gemini into `thinkingLevel` (Gemini 3) or `thinkingBudget` (Gemini 2.5). See
docs/providers.md, "Reasoning effort".
"""

from __future__ import annotations

import re
from typing import Any

from switchyard.v1 import invoke_pb2

Effort = invoke_pb2.Reasoning.Effort

# The vocabulary at the edges, in order of increasing effort.
EFFORTS: dict[str, int] = {
    "none": invoke_pb2.Reasoning.EFFORT_NONE,
    "minimal": invoke_pb2.Reasoning.EFFORT_MINIMAL,
    "low": invoke_pb2.Reasoning.EFFORT_LOW,
    "medium": invoke_pb2.Reasoning.EFFORT_MEDIUM,
    "high": invoke_pb2.Reasoning.EFFORT_HIGH,
    "xhigh": invoke_pb2.Reasoning.EFFORT_XHIGH,
}
_NAMES = {value: name for name, value in EFFORTS.items()}
_ORDER = list(EFFORTS)

# Anthropic's extended thinking: the budget each effort buys (Anthropic's minimum is 1024).
ANTHROPIC_MIN_BUDGET = 1024
ANTHROPIC_MIN_TOP_P = 0.95  # with thinking on, top_p may only be 0.95..1 (and temperature unset)
ANTHROPIC_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384, "xhigh": 32768}
# Gemini 2.5's thinkingBudget per effort (Google's OpenAI-compatibility mapping: low 1024,
# medium 8192, high 24576); Pro cannot turn thinking off (its minimum is 128).
GEMINI_BUDGETS = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768}
GEMINI_PRO_MIN_BUDGET = 128
GEMINI_FLASH_MAX_BUDGET = 24576


def effort_of(name: str) -> invoke_pb2.Reasoning:
    """The contract's Reasoning for an edge's effort word (validated by the edge's schema)."""
    return invoke_pb2.Reasoning(effort=EFFORTS[name])  # type: ignore[arg-type]


def from_budget(budget_tokens: int) -> invoke_pb2.Reasoning:
    """An explicit thinking budget (Anthropic's), with the effort it is closest to for
    providers that take a level instead."""
    if budget_tokens < 4096:
        effort = invoke_pb2.Reasoning.EFFORT_LOW
    elif budget_tokens < 16384:
        effort = invoke_pb2.Reasoning.EFFORT_MEDIUM
    else:
        effort = invoke_pb2.Reasoning.EFFORT_HIGH
    return invoke_pb2.Reasoning(effort=effort, budget_tokens=budget_tokens)


def effort_name(reasoning: invoke_pb2.Reasoning) -> str | None:
    """The effort word, or None when the request leaves it to the provider."""
    return _NAMES.get(reasoning.effort)


def asked(request: invoke_pb2.InvokeRequest) -> bool:
    return request.HasField("reasoning") and (
        request.reasoning.effort != invoke_pb2.Reasoning.EFFORT_UNSPECIFIED
        or request.reasoning.budget_tokens > 0
    )


# --- which models reason (by family name; a deployment option `reasoning = true|false` wins) ---

_OPENAI_REASONING = re.compile(r"^(o\d|gpt-5|codex)")
_OPENAI_NOT = re.compile(r"chat")  # gpt-5-chat-latest and kin take no reasoning_effort
_ANTHROPIC_REASONING = re.compile(r"^claude-(3-7-sonnet|(opus|sonnet|haiku)-[4-9])")
_GEMINI_REASONING = re.compile(r"^gemini-([3-9]|2\.5)")


def reasons(adapter: str, model: str, override: bool | None = None) -> bool:
    """Whether the deployment's model takes a reasoning control."""
    if override is not None:
        return override
    name = model.lower().rsplit("/", 1)[-1]
    if adapter == "openai":
        return bool(_OPENAI_REASONING.match(name)) and not _OPENAI_NOT.search(name)
    if adapter == "anthropic":
        return bool(_ANTHROPIC_REASONING.match(name))
    if adapter == "gemini":
        return bool(_GEMINI_REASONING.match(name))
    return False


# --- per provider ---


def _nearest(effort: str, allowed: list[str]) -> str:
    """The allowed level nearest to `effort` (ties go up: the caller asked for at least that)."""
    at = _ORDER.index(effort)
    return min(allowed, key=lambda level: (abs(_ORDER.index(level) - at), -_ORDER.index(level)))


def openai_effort(reasoning: invoke_pb2.Reasoning, model: str) -> str | None:
    """OpenAI's `reasoning_effort` for the model family: o-series take low..high, gpt-5 adds
    minimal, gpt-5.1 and later take none..xhigh (without minimal)."""
    effort = effort_name(reasoning)
    if effort is None:
        return None
    name = model.lower()
    if re.match(r"^o\d", name):
        allowed = ["low", "medium", "high"]
    elif re.match(r"^gpt-5(-|$)", name) or name.startswith("codex"):
        allowed = ["minimal", "low", "medium", "high"]
    else:
        allowed = ["none", "low", "medium", "high", "xhigh"]
    return _nearest(effort, allowed)


def anthropic_thinking(
    reasoning: invoke_pb2.Reasoning, max_tokens: int, max_tokens_set: bool
) -> tuple[dict[str, Any] | None, int]:
    """(Anthropic's `thinking`, the max_tokens to send). Effort none is thinking disabled. The
    budget counts inside max_tokens and must be below it: without a caller's max_tokens the
    budget is added to the default; with one, the budget shrinks to fit, and thinking is left
    off when less than Anthropic's minimum would remain."""
    effort = effort_name(reasoning)
    if effort == "none" and not reasoning.budget_tokens:
        return {"type": "disabled"}, max_tokens
    budget = reasoning.budget_tokens or ANTHROPIC_BUDGETS.get(effort or "", 0)
    if budget <= 0:
        return None, max_tokens
    budget = max(budget, ANTHROPIC_MIN_BUDGET)
    if not max_tokens_set:
        return {"type": "enabled", "budget_tokens": budget}, max_tokens + budget
    budget = min(budget, max_tokens - 1)
    if budget < ANTHROPIC_MIN_BUDGET:
        return None, max_tokens
    return {"type": "enabled", "budget_tokens": budget}, max_tokens


def gemini_thinking_config(reasoning: invoke_pb2.Reasoning, model: str) -> dict[str, Any] | None:
    """Gemini's `thinkingConfig`: `thinkingLevel` for Gemini 3 and later (Pro: low or high;
    Flash: minimal, low, medium, high), `thinkingBudget` for Gemini 2.5 (Pro cannot turn
    thinking off; Flash tops out at 24576)."""
    effort = effort_name(reasoning)
    name = model.lower()
    pro = "pro" in name
    if name.startswith("gemini-2.5"):
        if reasoning.budget_tokens:
            budget = reasoning.budget_tokens
        elif effort is not None:
            budget = GEMINI_BUDGETS[effort]
        else:
            return None
        budget = max(budget, GEMINI_PRO_MIN_BUDGET) if pro else min(budget, GEMINI_FLASH_MAX_BUDGET)
        return {"thinkingBudget": budget}
    if effort is None:
        return None
    allowed = ["low", "high"] if pro else ["minimal", "low", "medium", "high"]
    return {"thinkingLevel": _nearest(effort, allowed)}
