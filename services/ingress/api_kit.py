"""What the three HTTP APIs (native, OpenAI-, Anthropic-compatible) share. Pure.

- `HttpApi`: the protocol each API implements (parse a body into the contract; render the
  final answer, an error, and a stream), so the app registers them in one loop and serves them
  through one path (`Ingress.relay`).
- `StreamRenderer`: one streamed request's SSE events (chunk, final, error), per API.
- The body fields every API accepts alike (`strategy`, `metadata`), the sampling parameters'
  copy into the contract, the message text, the `switchyard` key of the compatible answers, and
  SSE framing, written once here rather than once per API.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

import orjson
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from switchyard import reasoning
from switchyard.errors import GatewayError
from switchyard.v1 import invoke_pb2
from switchyard.vocab import StrategyPreset, is_member

from . import hints

if TYPE_CHECKING:
    from .client import Frame

# ---------------------------------------------------------------------------------------------
# The protocol


@dataclass(frozen=True)
class Parsed:
    """A request body as the contract, plus what shapes its rendering but is not in the contract."""

    # Ingress.admit stamps it in place (ids, tenancy, deadline) before it is rendered.
    request: invoke_pb2.InvokeRequest
    # OpenAI's `stream_options.include_usage`: one more chunk, with the usage, before [DONE].
    include_usage: bool = False


class StreamRenderer(ABC):
    """The SSE events of one streamed request in one API. One instance per request: renderers
    keep state (whether the opening event was sent, which content block is open)."""

    @abstractmethod
    def chunk(self, chunk: invoke_pb2.Chunk) -> list[bytes]: ...

    @abstractmethod
    def final(self, final: invoke_pb2.InvokeResponse) -> list[bytes]:
        """The events that end a stream with its answer."""

    @abstractmethod
    def error(self, error: GatewayError) -> list[bytes]:
        """The event that ends a stream with an error (after its HTTP status was sent)."""

    def __call__(self, frame: Frame) -> list[bytes]:
        """The events of one frame of the reply loop (or of a Reply straight off the bus)."""
        if isinstance(frame, GatewayError):
            return self.error(frame)
        kind = frame.WhichOneof("frame")
        if kind == "chunk":
            return self.chunk(frame.chunk)
        if kind == "final":
            return self.final(frame.final)
        return self.error(GatewayError.from_proto(frame.error))


class HttpApi(Protocol):
    """One HTTP API: everything that differs between the native, OpenAI and Anthropic
    endpoints. Authentication, hints, stamping, publishing and the reply loop are the same."""

    name: str  # InvokeRequest.api, the ledger's `api` column and the metrics label
    path: str  # its POST endpoint
    request_id_header: str  # where its SDKs read the request id (x-request-id is always sent)

    def parse(self, raw: bytes, max_depth: int) -> Parsed:
        """The body as the contract; GatewayError(invalid_request) naming the problem."""
        ...

    def render_final(
        self, request: invoke_pb2.InvokeRequest, final: invoke_pb2.InvokeResponse
    ) -> dict[str, Any]: ...

    def render_error(self, error: GatewayError, request_id: str) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) of an error in this API's shape."""
        ...

    def render_stream(self, parsed: Parsed) -> StreamRenderer:
        """A renderer for this request's stream (called once the request is stamped)."""
        ...


# ---------------------------------------------------------------------------------------------
# Body fields every API accepts alike


def _preset(value: Any) -> Any:
    """A body's preset name as the enum: strict validation takes only enum instances, and a body
    (parsed JSON) has strings. An unknown name fails with the names that are allowed."""
    if not isinstance(value, str):
        return value
    if is_member(StrategyPreset, value):
        return StrategyPreset(value)
    names = ", ".join(repr(name.value) for name in StrategyPreset)
    raise PydanticCustomError("enum", "Input should be one of {names}", {"names": names})


PresetName = Annotated[StrategyPreset, BeforeValidator(_preset)]


class StrategyWeights(BaseModel):
    model_config = ConfigDict(extra="forbid")

    latency: float = Field(0.0, ge=0)
    cost: float = Field(0.0, ge=0)
    quality: float = Field(0.0, ge=0)


def _weights_not_all_zero(value: Any) -> Any:
    if isinstance(value, StrategyWeights) and value.latency + value.cost + value.quality <= 0:
        raise ValueError("strategy weights must not all be zero")
    return value


# The `strategy` field of every API's body: a preset, or weights that are not all zero.
StrategyField = Annotated[PresetName | StrategyWeights, AfterValidator(_weights_not_all_zero)]


class CacheControlIn(BaseModel):
    """Anthropic's prompt-caching breakpoint, accepted on the native and Anthropic APIs and
    carried in the contract to Anthropic deployments unchanged (docs/providers.md)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


# How hard a reasoning model thinks, in OpenAI's words (every API's effort; switchyard/reasoning.py).
EffortName = Literal["none", "minimal", "low", "medium", "high", "xhigh"]


def set_reasoning(
    request: invoke_pb2.InvokeRequest, effort: str | None, budget_tokens: int | None = None
) -> None:
    """The caller's reasoning control into the contract (nothing when neither is given)."""
    if budget_tokens:
        request.reasoning.CopyFrom(reasoning.from_budget(budget_tokens))
        if effort is not None:
            request.reasoning.effort = reasoning.effort_of(effort).effort
    elif effort is not None:
        request.reasoning.CopyFrom(reasoning.effort_of(effort))


def set_cache_control(
    holder: invoke_pb2.ContentPart | invoke_pb2.Tool | invoke_pb2.ToolCall, control: CacheControlIn | None
) -> None:
    if control is not None:
        holder.cache_control.CopyFrom(invoke_pb2.CacheControl(type=control.type, ttl=control.ttl or ""))


def set_strategy_and_metadata(
    request: invoke_pb2.InvokeRequest,
    strategy: str | StrategyWeights | None,
    metadata: Mapping[str, str | int | float | bool | None] | None,
) -> None:
    """The body's routing hints (every HTTP API accepts the same `strategy` and `metadata`)."""
    if isinstance(strategy, str):
        hints.set_strategy(request, hints.Strategy(preset=strategy))
    elif strategy is not None:
        hints.set_strategy(
            request, hints.Strategy(latency=strategy.latency, cost=strategy.cost, quality=strategy.quality)
        )
    for key, value in (metadata or {}).items():
        if value is not None:
            request.metadata[key] = str(value).lower() if isinstance(value, bool) else str(value)


def copy_sampling(
    request: invoke_pb2.InvokeRequest,
    *,
    max_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop: str | list[str] | None = None,
) -> None:
    """The sampling parameters every API spells alike. None is "not given": the contract's
    optional field stays unset, so the provider's default applies (0 is a real value)."""
    if max_tokens is not None:
        request.max_tokens = max_tokens
    if temperature is not None:
        request.temperature = temperature
    if top_p is not None:
        request.top_p = top_p
    if seed is not None:
        request.seed = seed
    if stop is not None:
        request.stop.extend([stop] if isinstance(stop, str) else stop)


# ---------------------------------------------------------------------------------------------
# Rendering


def text_of(message: invoke_pb2.Message) -> str:
    """The text parts of a message, joined."""
    return "".join(p.text for p in message.content if p.HasField("text"))


def gateway_json(final: invoke_pb2.InvokeResponse) -> dict[str, Any]:
    """What the gateway adds to the OpenAI and Anthropic shapes, under one extra `switchyard`
    key their SDKs keep (`model_extra`): the request id (for GET /v1/requests/{id}), where the
    request ran, and its cost."""
    return {
        "request_id": final.request_id,
        "provider": final.provider,
        "deployment": final.deployment_id,
        "route": final.route,
        "cost_usd": final.cost_usd,
        "latency_ms": round(final.latency_ms, 3),
    }


class GatewayInfo(BaseModel):
    """The `switchyard` key of OpenAI- and Anthropic-shaped answers (see gateway_json)."""

    model_config = ConfigDict(extra="forbid")

    request_id: str
    provider: str
    deployment: str
    route: str
    cost_usd: str
    latency_ms: float


def sse(event: str, data: Mapping[str, Any]) -> bytes:
    """A named SSE event (the native and Anthropic streams)."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def sse_data(data: Mapping[str, Any]) -> bytes:
    """An unnamed SSE event (the OpenAI stream)."""
    return b"data: " + orjson.dumps(data) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"
