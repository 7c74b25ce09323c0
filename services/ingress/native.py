"""The native API (`POST /llm.invoke`): JSON body <-> protobuf contract. Pure functions.

This is the reference shape; the OpenAI- and Anthropic-compatible endpoints map onto the same
InvokeRequest.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from switchyard.errors import GatewayError
from switchyard.v1 import invoke_pb2

from .edge import json_depth_exceeds

STRATEGY_PRESETS = ("balanced", "fastest", "cheapest", "best")
MAX_MESSAGES = 2048


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageUrl(_Strict):
    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ImagePartIn(_Strict):
    type: Literal["image_url"]
    image_url: ImageUrl | str


ContentPartIn = Annotated[TextPart | ImagePartIn, Field(discriminator="type")]


class FunctionCallIn(_Strict):
    name: str = Field(min_length=1)
    arguments: str | dict[str, Any] = "{}"


class ToolCallIn(_Strict):
    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: FunctionCallIn


class MessageIn(_Strict):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | list[ContentPartIn] | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    name: str | None = None


class FunctionIn(_Strict):
    name: str = Field(min_length=1, max_length=128)
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


class ToolIn(_Strict):
    type: Literal["function"] = "function"
    function: FunctionIn


class StrategyWeights(_Strict):
    latency: float = Field(0.0, ge=0)
    cost: float = Field(0.0, ge=0)
    quality: float = Field(0.0, ge=0)


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
    strategy: Literal["balanced", "fastest", "cheapest", "best"] | StrategyWeights | None = None
    metadata: dict[str, str | int | float | bool] | None = None

    @field_validator("strategy")
    @classmethod
    def _weights_not_all_zero(cls, value: Any) -> Any:
        if isinstance(value, StrategyWeights) and value.latency + value.cost + value.quality <= 0:
            raise ValueError("strategy weights must not all be zero")
        return value


def _first_error(exc: ValidationError) -> tuple[str, str]:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(
            str(p) for p in err["loc"] if not (isinstance(p, str) and p in ("TextPart", "ImagePartIn"))
        )
        parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    first_loc = ".".join(str(p) for p in exc.errors()[0]["loc"]) if exc.errors() else ""
    return "; ".join(parts), first_loc


def load_json_object(raw: bytes, max_depth: int = 64) -> dict[str, Any]:
    """Parse a JSON object body; GatewayError(invalid_request) for bad JSON, non-objects and
    nesting deeper than `max_depth`."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise GatewayError("invalid_request", f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise GatewayError("invalid_request", "request body must be a JSON object")
    if json_depth_exceeds(data, max_depth):
        raise GatewayError("invalid_request", f"request body nests deeper than {max_depth} levels")
    return data


def parse_body(raw: bytes, max_depth: int = 64) -> InvokeBody:
    """Raise GatewayError(invalid_request) naming the problem for any malformed body."""
    data = load_json_object(raw, max_depth)
    try:
        return InvokeBody.model_validate(data)
    except ValidationError as exc:
        message, param = _first_error(exc)
        raise GatewayError("invalid_request", message, param=param) from None


def _content(message: invoke_pb2.Message, content: str | list[Any] | None) -> None:
    if content is None:
        return
    if isinstance(content, str):
        message.content.add(text=content)
        return
    for part in content:
        if isinstance(part, TextPart):
            message.content.add(text=part.text)
        else:
            url = part.image_url if isinstance(part.image_url, str) else part.image_url.url
            detail = "" if isinstance(part.image_url, str) else (part.image_url.detail or "")
            message.content.add(image=invoke_pb2.ImagePart(url=url, detail=detail))


def to_request(body: InvokeBody, api: str = "native") -> invoke_pb2.InvokeRequest:
    """The validated body as the bus contract (ids and deadline are set by the caller)."""
    request = invoke_pb2.InvokeRequest(model=body.model, stream=body.stream, api=api)
    for m in body.messages:
        message = request.messages.add(role=m.role, tool_call_id=m.tool_call_id or "", name=m.name or "")
        _content(message, m.content)
        for call in m.tool_calls or []:
            args = call.function.arguments
            message.tool_calls.add(
                id=call.id,
                name=call.function.name,
                arguments_json=args if isinstance(args, str) else orjson.dumps(args).decode(),
            )
    for tool in body.tools or []:
        request.tools.add(
            name=tool.function.name,
            description=tool.function.description,
            parameters_json=orjson.dumps(tool.function.parameters).decode(),
        )
    if body.tool_choice is not None:
        request.tool_choice_json = orjson.dumps(body.tool_choice).decode()
    if body.max_tokens is not None:
        request.max_tokens = body.max_tokens
    if body.temperature is not None:
        request.temperature = body.temperature
    if body.top_p is not None:
        request.top_p = body.top_p
    if body.seed is not None:
        request.seed = body.seed
    if body.stop is not None:
        request.stop.extend([body.stop] if isinstance(body.stop, str) else body.stop)
    if body.response_format is not None:
        request.response_format_json = orjson.dumps(body.response_format).decode()
    if isinstance(body.strategy, str):
        request.strategy.preset = body.strategy
    elif body.strategy is not None:
        request.strategy.explicit = True
        request.strategy.latency = body.strategy.latency
        request.strategy.cost = body.strategy.cost
        request.strategy.quality = body.strategy.quality
    for key, value in (body.metadata or {}).items():
        request.metadata[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return request


def message_json(message: invoke_pb2.Message) -> dict[str, Any]:
    out: dict[str, Any] = {
        "role": message.role or "assistant",
        "content": "".join(p.text for p in message.content if p.HasField("text")) or None,
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
        "status": a.status,
        "latency_ms": round(a.latency_ms, 3),
    }
    if a.ttft_ms:
        out["ttft_ms"] = round(a.ttft_ms, 3)
    if a.http_status:
        out["http_status"] = a.http_status
    if a.error_code:
        out["error"] = {"code": a.error_code, "message": a.error_message}
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
        "decision_us": round(r.decision_us, 1),
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
            }
            for c in r.candidates
        ],
    }


def usage_json(u: invoke_pb2.Usage) -> dict[str, int]:
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "cached_tokens": u.cached_tokens,
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
        "finish_reason": r.finish_reason,
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


def sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
