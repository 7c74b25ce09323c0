"""The native API (`POST /llm.invoke`): JSON body <-> protobuf contract. Pure functions.

This is the reference shape; the OpenAI- and Anthropic-compatible endpoints map onto the same
InvokeRequest.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from switchyard import choices, units
from switchyard.errors import ErrorCode, GatewayError
from switchyard.v1 import invoke_pb2
from switchyard.vocab import Api, FinishReason, Status, finish_reason_text, status_text

from . import hints
from .api_kit import (
    CacheControlIn,
    EffortName,
    Parsed,
    StrategyField,
    StreamRenderer,
    copy_sampling,
    set_cache_control,
    set_reasoning,
    set_strategy_and_metadata,
    sse,
    text_of,
)
from .validation import parse_json_body

MAX_MESSAGES = 2048


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageUrl(_Strict):
    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None


class TextPart(_Strict):
    type: Literal["text"]
    text: str
    cache_control: CacheControlIn | None = None


class ImagePartIn(_Strict):
    type: Literal["image_url"]
    image_url: ImageUrl | str
    cache_control: CacheControlIn | None = None


ContentPartIn = Annotated[TextPart | ImagePartIn, Field(discriminator="type")]


class FunctionCallIn(_Strict):
    name: str = Field(min_length=1)
    arguments: str | dict[str, Any] = "{}"


class ToolCallIn(_Strict):
    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: FunctionCallIn
    cache_control: CacheControlIn | None = None


class MessageIn(_Strict):
    role: Literal["system", "user", "assistant", "tool"]
    tool_calls: list[ToolCallIn] | None = None  # before content: its check reads it
    content: str | list[ContentPartIn] | None = Field(None, validate_default=True)
    tool_call_id: str | None = None
    name: str | None = None

    @field_validator("content")
    @classmethod
    def _content_unless_tool_calls(cls, content: Any, info: ValidationInfo) -> Any:
        # A message with nothing in it reached the provider as an empty turn (or its 400).
        if content is None and not (info.data.get("role") == "assistant" and info.data.get("tool_calls")):
            raise ValueError("content is required (only an assistant message with tool_calls may omit it)")
        return content


class FunctionIn(_Strict):
    name: str = Field(min_length=1, max_length=128)
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


class ToolIn(_Strict):
    type: Literal["function"] = "function"
    function: FunctionIn
    cache_control: CacheControlIn | None = None


class ReasoningIn(_Strict):
    """How hard a reasoning model thinks: an effort, or an explicit thinking budget (both: the
    budget for providers that take one, the effort for the others)."""

    effort: EffortName | None = None
    budget_tokens: int | None = Field(None, ge=1024, le=1_000_000)


class HedgeIn(_Strict):
    delay_ms: float = Field(gt=0, le=hints.MAX_HEDGE_DELAY_MS)


class InvokeBody(_Strict):
    model: str = Field(min_length=1, max_length=256)
    messages: list[MessageIn] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    tools: list[ToolIn] | None = None
    tool_choice: Literal["auto", "none", "required"] | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    stream: bool = False
    strategy: StrategyField | None = None
    metadata: dict[str, str | int | float | bool] | None = None
    # Hedging (docs/routing.md): false = never, true = the route's policy (or the default one),
    # {"delay_ms": 200} = after this delay.
    hedge: bool | HedgeIn | None = None
    reasoning: ReasoningIn | None = None


def parse_body(raw: bytes, max_depth: int = 64) -> InvokeBody:
    """Raise GatewayError(invalid_request) naming the problem for any malformed body. Strict,
    as the OpenAI and Anthropic bodies are: `"stream": "yes"` or `"max_tokens": "5"` is a 400
    naming the field, not a value coerced into something the caller may not have meant."""
    return parse_json_body(raw, InvokeBody, strict=True, max_depth=max_depth)


def _content(message: invoke_pb2.Message, content: str | list[Any] | None) -> None:
    if content is None:
        return
    if isinstance(content, str):
        message.content.add(text=content)
        return
    for part in content:
        if isinstance(part, TextPart):
            added = message.content.add(text=part.text)
        else:
            url = part.image_url if isinstance(part.image_url, str) else part.image_url.url
            detail = "" if isinstance(part.image_url, str) else (part.image_url.detail or "")
            added = message.content.add(image=invoke_pb2.ImagePart(url=url, detail=detail))
        set_cache_control(added, part.cache_control)


def to_request(body: InvokeBody, api: str = Api.NATIVE) -> invoke_pb2.InvokeRequest:
    """The validated body as the bus contract (ids and deadline are set by the caller)."""
    request = invoke_pb2.InvokeRequest(model=body.model, stream=body.stream, api=api)
    for m in body.messages:
        message = request.messages.add(
            role=choices.role(m.role), tool_call_id=m.tool_call_id or "", name=m.name or ""
        )
        _content(message, m.content)
        for call in m.tool_calls or []:
            args = call.function.arguments
            added_call = message.tool_calls.add(
                id=call.id,
                name=call.function.name,
                arguments_json=args if isinstance(args, str) else orjson.dumps(args).decode(),
            )
            set_cache_control(added_call, call.cache_control)
    for tool in body.tools or []:
        added = request.tools.add(
            name=tool.function.name,
            description=tool.function.description,
            parameters_json=orjson.dumps(tool.function.parameters).decode(),
        )
        set_cache_control(added, tool.cache_control)
    if body.tool_choice is not None:
        request.tool_choice.CopyFrom(choices.tool_choice_from_json(body.tool_choice))
    copy_sampling(
        request,
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=body.stop,
    )
    if body.reasoning is not None:
        set_reasoning(request, body.reasoning.effort, body.reasoning.budget_tokens)
    if body.response_format is not None and (fmt := choices.response_format_from_json(body.response_format)):
        request.response_format.CopyFrom(fmt)
    set_strategy_and_metadata(request, body.strategy, body.metadata)
    if body.hedge is not None:
        choice = body.hedge
        hints.set_hedge(
            request,
            hints.Hedge(off=choice is False, delay_ms=0.0 if isinstance(choice, bool) else choice.delay_ms),
        )
    return request


def message_json(message: invoke_pb2.Message) -> dict[str, Any]:
    out: dict[str, Any] = {
        "role": choices.role_name(message.role) or "assistant",
        "content": text_of(message) or None,
    }
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments_json},
            }
            for c in message.tool_calls
        ]
    return out


def attempt_json(a: invoke_pb2.Attempt) -> dict[str, Any]:
    out: dict[str, Any] = {
        "deployment": a.deployment_id,
        "provider": a.provider,
        "model": a.model,
        "status": status_text(a.status),
        "latency_ms": round(a.latency_ms, 3),
    }
    if a.ttft_ms:
        out["ttft_ms"] = round(a.ttft_ms, 3)
    if a.http_status:
        out["http_status"] = a.http_status
    if a.error_code:
        out["error"] = {"code": a.error_code, "message": a.error_message}
    elif a.error_message:  # a hedge race's loser: cancelled, not failed
        out["note"] = a.error_message
    if a.hedge:
        out["hedge"] = True
    if a.cost_usd:
        out["cost_usd"] = a.cost_usd
    return out


def rationale_json(r: invoke_pb2.Rationale) -> dict[str, Any]:
    return {
        "route": r.route,
        "rule": r.rule or None,
        "strategy": r.strategy,
        "weights": {
            "latency": r.weight_latency,
            "cost": r.weight_cost,
            "quality": r.weight_quality,
        },
        "winner": r.winner,
        "reason": r.reason,
        "chain": list(r.chain),
        "decision_us": round(units.microseconds(r.decision_ms), 1),  # the JSON keeps microseconds
        "decided_by": r.decided_by,
        "prompt_tokens_est": r.prompt_tokens_est,
        "expected_output_tokens": r.expected_output_tokens,
        "candidates": [
            {
                "deployment": c.deployment_id,
                "latency_ms": round(c.latency_ms, 3),
                "est_cost_usd": c.est_cost_usd,
                "quality": c.quality,
                "scores": {
                    "latency": round(c.latency_score, 4),
                    "cost": round(c.cost_score, 4),
                    "quality": round(c.quality_score, 4),
                    "total": round(c.total, 4),
                },
                "latency_source": c.latency_source,
                "inflight": c.inflight,
                "error_rate": round(c.error_rate, 4),
                "breaker": c.breaker,
                "eligible": c.eligible,
                **({"excluded": c.excluded_reason} if c.excluded_reason else {}),
                # Provider quota (docs/quotas.md): shown once a deployment has used some of it.
                **(
                    {
                        "quota": {
                            "headroom": round(c.quota_headroom, 4),
                            "wait_s": round(units.seconds(c.quota_wait_ms), 3),
                        }
                    }
                    if c.quota_headroom < 1 or c.quota_wait_ms or c.excluded_reason == "quota"
                    else {}
                ),
            }
            for c in r.candidates
        ],
        # Hedged requests (docs/routing.md): shown when the route or the request has a policy.
        **({"hedge": hedge_json(r.hedge)} if r.HasField("hedge") else {}),
    }


def hedge_json(h: invoke_pb2.HedgeNote) -> dict[str, Any]:
    out: dict[str, Any] = {"armed": h.armed, "fired": h.fired}
    if h.armed:
        out["delay_ms"] = round(h.delay_ms, 3)
        out["delay_source"] = h.delay_source
    if h.skipped:
        out["skipped"] = h.skipped
    if h.fired:
        out["fired_after_ms"] = round(h.fired_after_ms, 3)
        out["target"] = h.target
    if h.winner:
        out["winner"] = h.winner
        out["hedge_won"] = h.hedge_won
    return out


def usage_json(u: invoke_pb2.Usage) -> dict[str, int]:
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "cached_tokens": u.cached_tokens,
        "cache_write_tokens": u.cache_write_tokens,
        "cache_write_1h_tokens": u.cache_write_1h_tokens,
        "reasoning_tokens": u.reasoning_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    }


def response_json(r: invoke_pb2.InvokeResponse) -> dict[str, Any]:
    return {
        "request_id": r.request_id,
        "provider": r.provider,
        "model": r.model,
        "deployment": r.deployment_id,
        "route": r.route,
        "message": message_json(r.message),
        "finish_reason": finish_reason_text(r.finish_reason),
        "usage": usage_json(r.usage),
        "cost_usd": r.cost_usd,
        "latency_ms": round(r.latency_ms, 3),
        "ttft_ms": round(r.ttft_ms, 3),
        "attempts": [attempt_json(a) for a in r.attempts],
        "rationale": rationale_json(r.rationale),
    }


def chunk_json(c: invoke_pb2.Chunk) -> dict[str, Any]:
    out: dict[str, Any] = {"seq": c.seq, "delta": c.delta_text}
    if c.tool_calls:
        out["tool_calls"] = [
            {
                "index": t.index,
                "id": t.id or None,
                "name": t.name or None,
                "arguments": t.arguments_delta,
            }
            for t in c.tool_calls
        ]
    return out


def error_json(code: str, message: str, request_id: str = "", param: str = "") -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if request_id:
        err["request_id"] = request_id
    if param:
        err["param"] = param
    return {"error": err}


class NativeStream(StreamRenderer):
    """SSE events of the native API: `chunk` events, then one `final` or `error` event."""

    def __init__(self, request_id: str) -> None:
        self._request_id = request_id

    def chunk(self, chunk: invoke_pb2.Chunk) -> list[bytes]:
        return [sse("chunk", chunk_json(chunk))]

    def final(self, final: invoke_pb2.InvokeResponse) -> list[bytes]:
        return [sse("final", response_json(final))]

    def error(self, error: GatewayError) -> list[bytes]:
        return [sse("error", error_json(error.code, error.message, self._request_id))]


class NativeApi:
    """`POST /llm.invoke` (see api_kit.HttpApi)."""

    name: str = Api.NATIVE
    path = "/llm.invoke"
    request_id_header = "x-request-id"

    def parse(self, raw: bytes, max_depth: int) -> Parsed:
        return Parsed(to_request(parse_body(raw, max_depth), api=self.name))

    def render_final(
        self, request: invoke_pb2.InvokeRequest, final: invoke_pb2.InvokeResponse
    ) -> dict[str, Any]:
        return response_json(final)

    def render_error(self, error: GatewayError, request_id: str) -> tuple[int, dict[str, Any]]:
        return error.http_status, error_json(error.code, error.message, request_id, error.param)

    def render_stream(self, parsed: Parsed) -> NativeStream:
        return NativeStream(parsed.request.request_id)


# ---------------------------------------------------------------------------------------------
# Response schemas: what response_json and error_json produce, for the OpenAPI description
# (tests check the functions' output against them, so the description stays true).


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FunctionCallOut(_Out):
    name: str
    arguments: str


class ToolCallOut(_Out):
    id: str
    type: Literal["function"]
    function: FunctionCallOut


class MessageOut(_Out):
    role: str
    content: str | None
    tool_calls: list[ToolCallOut] | None = None


class NativeUsage(_Out):
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    cache_write_1h_tokens: int
    reasoning_tokens: int
    total_tokens: int


class AttemptError(_Out):
    code: ErrorCode
    message: str


class AttemptOut(_Out):
    deployment: str
    provider: str
    model: str
    status: Status
    latency_ms: float
    ttft_ms: float | None = None
    http_status: int | None = None
    error: AttemptError | None = None


class Weights(_Out):
    latency: float
    cost: float
    quality: float


class Scores(_Out):
    latency: float
    cost: float
    quality: float
    total: float


class QuotaOut(_Out):
    headroom: float
    wait_s: float


class CandidateOut(_Out):
    deployment: str
    latency_ms: float
    est_cost_usd: float
    quality: float
    scores: Scores
    latency_source: str
    inflight: int
    error_rate: float
    breaker: str
    eligible: bool
    excluded: str | None = None
    quota: QuotaOut | None = None


class RationaleOut(_Out):
    route: str
    rule: str | None
    strategy: str
    weights: Weights
    winner: str
    reason: str
    chain: list[str]
    decision_us: float
    decided_by: str
    prompt_tokens_est: int
    expected_output_tokens: int
    candidates: list[CandidateOut]


class InvokeResult(_Out):
    """The answer of POST /llm.invoke (and the `final` event of its stream)."""

    request_id: str
    provider: str
    model: str
    deployment: str
    route: str
    message: MessageOut
    finish_reason: FinishReason
    usage: NativeUsage
    cost_usd: str
    latency_ms: float
    ttft_ms: float
    attempts: list[AttemptOut]
    rationale: RationaleOut


class NativeErrorDetail(_Out):
    code: ErrorCode
    message: str
    request_id: str | None = None
    param: str | None = None


class NativeErrorResponse(_Out):
    error: NativeErrorDetail
