"""Anthropic Messages API (POST {base}/v1/messages, base https://api.anthropic.com).

Wire format: https://docs.anthropic.com/en/api/messages and .../messages-streaming. Headers
`x-api-key` and `anthropic-version: 2023-06-01`. The system prompt is a top-level field, not a
turn; tool results are `tool_result` blocks inside a user turn; `max_tokens` is required.
Streams are named SSE events: message_start (with input usage), content_block_start /
content_block_delta (text_delta, input_json_delta) / content_block_stop, message_delta (stop
reason, cumulative output usage), message_stop; `ping` keeps alive; `error` may arrive mid-stream.
Usage: `input_tokens` excludes cache reads and writes, so the neutral prompt count adds them;
cache writes are split by TTL when `cache_creation` reports the tiers (priced apart).
Prompt caching: a `cache_control` on a content part, a tool call, a tool or the system prompt's
parts is sent unchanged on the matching block (the system prompt then goes as text blocks).
Token counts (KIND_COUNT_TOKENS): POST {base}/v1/messages/count_tokens, the same body without
max_tokens and sampling, answered with {"input_tokens": N}; exact, and not billed.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from switchyard import reasoning
from switchyard.catalog import Deployment
from switchyard.errors import ErrorCode, GatewayError
from switchyard.settings import Settings
from switchyard.v1 import invoke_pb2
from switchyard.vocab import FinishReason

from ..content import (
    MessageAssembler,
    forced_tool_name,
    image_of,
    json_text,
    parse_json,
    parse_json_object,
    system_text,
    text_of,
    tool_choice,
)
from ..http_errors import error_from_stream_event
from ..sse import SSEEvent
from ..upstream import HttpAdapter, HttpOptions, StreamTranslator, json_event
from .base import AdapterOptions, Completed, Progress
from .openai import join_url

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; used when the request sets none
MAX_TEMPERATURE = 1.0  # Anthropic's range is 0..1 (the neutral API allows 0..2)

STOP_REASONS = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "pause_turn": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "model_context_window_exceeded": FinishReason.LENGTH,
    "tool_use": FinishReason.TOOL_CALLS,
    "refusal": FinishReason.CONTENT_FILTER,
}


CacheHolder = invoke_pb2.ContentPart | invoke_pb2.Tool | invoke_pb2.ToolCall


def cache_control(holder: CacheHolder) -> dict[str, str] | None:
    """The part's or tool's cache breakpoint as Anthropic's `cache_control`, None when unset."""
    if not holder.HasField("cache_control"):
        return None
    out = {"type": holder.cache_control.type or "ephemeral"}
    if holder.cache_control.ttl:
        out["ttl"] = holder.cache_control.ttl
    return out


def _with_cache(block: dict[str, Any], holder: CacheHolder) -> dict[str, Any]:
    control = cache_control(holder)
    if control is not None:
        block["cache_control"] = control
    return block


def _blocks(message: invoke_pb2.Message) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for part in message.content:
        if part.HasField("image"):
            image = image_of(part.image)
            source = (
                {"type": "url", "url": image.url}
                if image.url
                else {"type": "base64", "media_type": image.media_type, "data": image.data_b64}
            )
            blocks.append(_with_cache({"type": "image", "source": source}, part))
        elif part.text:  # Anthropic rejects empty text blocks
            blocks.append(_with_cache({"type": "text", "text": part.text}, part))
    return blocks


def _tool_result(message: invoke_pb2.Message) -> dict[str, Any]:
    block: dict[str, Any] = {
        "type": "tool_result",
        "tool_use_id": message.tool_call_id,
        "content": text_of(message),
    }
    for part in message.content:
        _with_cache(block, part)  # a breakpoint on any part of the result marks the block
    return block


def system_blocks(request: invoke_pb2.InvokeRequest) -> str | list[dict[str, Any]]:
    """The system prompt: one string, or text blocks when a part carries a cache breakpoint."""
    parts = [p for m in request.messages if m.role == invoke_pb2.ROLE_SYSTEM for p in m.content if p.text]
    if not any(p.HasField("cache_control") for p in parts):
        return system_text(request)
    return [_with_cache({"type": "text", "text": p.text}, p) for p in parts]


def anthropic_messages(request: invoke_pb2.InvokeRequest) -> list[dict[str, Any]]:
    """Neutral turns -> Anthropic turns. Tool results join the user turn that follows the
    assistant's tool_use (parallel results must share one turn); consecutive turns of one
    role are merged."""
    turns: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for m in request.messages:
        if m.role == invoke_pb2.ROLE_SYSTEM:
            continue
        if m.role == invoke_pb2.ROLE_TOOL:
            add("user", [_tool_result(m)])
        elif m.role == invoke_pb2.ROLE_ASSISTANT:
            blocks = _blocks(m)
            for call in m.tool_calls:
                block = {
                    "type": "tool_use",
                    "id": call.id,
                    "name": call.name,
                    "input": parse_json_object(call.arguments_json, f"arguments of tool call {call.id}"),
                }
                blocks.append(_with_cache(block, call))
            add("assistant", blocks)
        else:
            add("user", _blocks(m))
    return turns


def anthropic_tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice == "auto":
        return {"type": "auto"}
    if choice == "none":
        return {"type": "none"}
    if choice == "required":
        return {"type": "any"}
    name = forced_tool_name(choice)
    if name:
        return {"type": "tool", "name": name}
    raise GatewayError(ErrorCode.INVALID_REQUEST, f"unsupported tool_choice {choice!r}", param="tool_choice")


def _thinking_fits(request: invoke_pb2.InvokeRequest) -> bool:
    """Extended thinking cannot be turned on mid tool loop (Anthropic wants the earlier turn's
    thinking blocks back, which the contract does not carry) nor with a forced tool choice."""
    forced = request.tool_choice.mode in (
        invoke_pb2.ToolChoice.MODE_REQUIRED,
        invoke_pb2.ToolChoice.MODE_TOOL,
    )
    in_tool_loop = any(m.tool_calls for m in request.messages if m.role == invoke_pb2.ROLE_ASSISTANT)
    return not forced and not in_tool_loop


def anthropic_request(
    request: invoke_pb2.InvokeRequest,
    model: str,
    stream: bool,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    model_reasons: bool = False,
) -> dict[str, Any]:
    """The neutral request as a Messages body. A reasoning effort becomes extended thinking
    (switchyard/reasoning.py) when the model has it and the turn allows it; thinking takes
    no temperature, and a top_p only from 0.95."""
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": request.max_tokens or default_max_tokens,
        "messages": anthropic_messages(request),
    }
    system = system_blocks(request)
    if system:
        body["system"] = system
    if request.kind == invoke_pb2.InvokeRequest.KIND_COUNT_TOKENS:
        # count_tokens takes the prompt only: no max_tokens, sampling or stream.
        del body["max_tokens"]
        _add_tools(body, request)
        return body
    if request.HasField("temperature"):
        body["temperature"] = min(request.temperature, MAX_TEMPERATURE)
    if request.HasField("top_p"):
        body["top_p"] = request.top_p
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if model_reasons and reasoning.asked(request) and _thinking_fits(request):
        thinking, body["max_tokens"] = reasoning.anthropic_thinking(
            request.reasoning, body["max_tokens"], max_tokens_set=request.max_tokens > 0
        )
        if thinking is not None:
            body["thinking"] = thinking
        if thinking is not None and thinking["type"] == "enabled":
            body.pop("temperature", None)
            if body.get("top_p", 1.0) < reasoning.ANTHROPIC_MIN_TOP_P:
                del body["top_p"]
    _add_tools(body, request)
    if stream:
        body["stream"] = True
    return body


def _add_tools(body: dict[str, Any], request: invoke_pb2.InvokeRequest) -> None:
    if request.tools:
        body["tools"] = [
            _with_cache(
                {
                    "name": t.name,
                    "description": t.description,
                    "input_schema": parse_json(t.parameters_json or "{}", f"parameters of tool {t.name}"),
                },
                t,
            )
            for t in request.tools
        ]
    choice = anthropic_tool_choice(tool_choice(request))
    if choice is not None:
        body["tool_choice"] = choice


def anthropic_usage(raw: dict[str, Any] | None, base: invoke_pb2.Usage | None = None) -> invoke_pb2.Usage:
    """Anthropic usage -> neutral; fields missing from `raw` keep their value from `base` (a
    message_delta carries the cumulative output count and may omit the input side)."""
    raw = raw or {}
    usage = invoke_pb2.Usage()
    if base is not None:
        usage.CopyFrom(base)
    if any(k in raw for k in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")):
        cache_read = int(raw.get("cache_read_input_tokens") or 0)
        cache_write = int(raw.get("cache_creation_input_tokens") or 0)
        tiers = raw.get("cache_creation") or {}
        written_1h = int(tiers.get("ephemeral_1h_input_tokens") or 0) if isinstance(tiers, dict) else 0
        usage.prompt_tokens = int(raw.get("input_tokens") or 0) + cache_read + cache_write
        usage.cached_tokens = cache_read
        usage.cache_write_tokens = cache_write
        usage.cache_write_1h_tokens = min(written_1h, cache_write)
    if "output_tokens" in raw:
        usage.completion_tokens = int(raw.get("output_tokens") or 0)
    return usage


def stop_reason(raw: str | None, has_tool_calls: bool) -> str:
    if not raw:
        return FinishReason.TOOL_CALLS if has_tool_calls else FinishReason.STOP
    return STOP_REASONS.get(raw, FinishReason.STOP)


def parse_anthropic_response(payload: dict[str, Any], provider: str) -> Completed:
    if payload.get("type") == "error":
        raise error_from_stream_event(provider, payload)
    message = invoke_pb2.Message(role=invoke_pb2.ROLE_ASSISTANT)
    text = "".join(b.get("text", "") for b in payload.get("content") or [] if b.get("type") == "text")
    if text:
        message.content.add(text=text)
    for block in payload.get("content") or []:
        if block.get("type") == "tool_use":
            message.tool_calls.add(
                id=str(block.get("id") or ""),
                name=str(block.get("name") or ""),
                arguments_json=json_text(block.get("input") or {}),
            )
    return Completed(
        message=message,
        finish_reason=stop_reason(payload.get("stop_reason"), bool(message.tool_calls)),
        usage=anthropic_usage(payload.get("usage")),
    )


def parse_count(payload: dict[str, Any], provider: str) -> Completed:
    """count_tokens' {"input_tokens": N} -> Completed with that prompt count."""
    if payload.get("type") == "error":
        raise error_from_stream_event(provider, payload)
    tokens = payload.get("input_tokens")
    if not isinstance(tokens, int) or tokens < 0:
        raise GatewayError(
            ErrorCode.UPSTREAM_ERROR,
            f"{provider} answered count_tokens without input_tokens",
            provider=provider,
        )
    return Completed(
        message=invoke_pb2.Message(role=invoke_pb2.ROLE_ASSISTANT),
        finish_reason=FinishReason.STOP,
        usage=invoke_pb2.Usage(prompt_tokens=tokens),
    )


class AnthropicStream:
    """Anthropic's named stream events -> neutral chunks. Pure."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.assembler = MessageAssembler()
        self.usage = invoke_pb2.Usage()
        self.stop = ""
        self.started = False
        self.done = False
        self._tool_index: dict[int, int] = {}  # content block index -> neutral tool-call index

    def feed(self, event: SSEEvent) -> list[invoke_pb2.Chunk | Progress]:
        payload = json_event(event, self.provider)
        kind = payload.get("type") or event.event
        if kind == "error":
            raise error_from_stream_event(self.provider, payload)
        if kind == "message_start":
            self.started = True
            self.usage = anthropic_usage((payload.get("message") or {}).get("usage"))
            return [Progress(self.usage)]
        if kind == "content_block_start":
            block = payload.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self._tool_index.setdefault(int(payload.get("index", 0)), len(self._tool_index))
                return [
                    self.assembler.tool_chunk(
                        index, id=str(block.get("id") or ""), name=str(block.get("name") or "")
                    )
                ]
            if block.get("type") == "text" and block.get("text"):
                return [self.assembler.text_chunk(block["text"])]
            return []
        if kind == "content_block_delta":
            delta = payload.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                return [self.assembler.text_chunk(delta["text"])]
            if delta.get("type") == "input_json_delta" and delta.get("partial_json"):
                known = self._tool_index.get(int(payload.get("index", 0)))
                if known is None:
                    raise GatewayError(
                        ErrorCode.UPSTREAM_ERROR,
                        f"{self.provider} sent tool input for an unknown block",
                        provider=self.provider,
                    )
                return [self.assembler.tool_chunk(known, arguments=delta["partial_json"])]
            return []  # thinking / signature deltas are not part of the neutral answer
        if kind == "message_delta":
            self.stop = (payload.get("delta") or {}).get("stop_reason") or self.stop
            self.usage = anthropic_usage(payload.get("usage"), self.usage)
            return [Progress(self.usage)]
        if kind == "message_stop":
            self.done = True
        return []  # ping, content_block_stop, unknown future events

    def result(self) -> Completed:
        if not self.done:
            raise GatewayError(
                ErrorCode.UPSTREAM_ERROR,
                f"{self.provider} stream ended before message_stop (connection cut)",
                provider=self.provider,
            )
        return Completed(
            message=self.assembler.message(),
            finish_reason=stop_reason(self.stop, self.assembler.has_tool_calls),
            usage=self.usage,
        )


class AnthropicOptions(HttpOptions):
    max_tokens: int = Field(default=DEFAULT_MAX_TOKENS, ge=1)  # when the request sets none
    version: str = API_VERSION  # the anthropic-version header
    beta: str = ""  # the anthropic-beta header


class Adapter(HttpAdapter):
    """Anthropic Messages; deployment options in `AnthropicOptions`."""

    options_model: ClassVar[type[AdapterOptions]] = AnthropicOptions
    options: AnthropicOptions

    def __init__(self, deployment: Deployment, settings: Settings) -> None:
        super().__init__(deployment, settings)
        options = self.options
        base = deployment.base_url or "https://api.anthropic.com"
        self._url = join_url(base, "/v1/messages")
        self._count_url = join_url(base, "/v1/messages/count_tokens")
        self._headers = {"anthropic-version": options.version}
        if options.beta:
            self._headers["anthropic-beta"] = options.beta
        if deployment.api_key:
            self._headers["x-api-key"] = deployment.api_key
        self._max_tokens = options.max_tokens
        self._reasons = reasoning.reasons("anthropic", deployment.model, options.reasoning)

    def url(self, request: invoke_pb2.InvokeRequest, stream: bool) -> str:
        return self._count_url if request.kind == invoke_pb2.InvokeRequest.KIND_COUNT_TOKENS else self._url

    def headers(self) -> dict[str, str]:
        return self._headers

    def body(self, request: invoke_pb2.InvokeRequest, stream: bool) -> dict[str, Any]:
        return anthropic_request(request, self.deployment.model, stream, self._max_tokens, self._reasons)

    def parse_response(self, request: invoke_pb2.InvokeRequest, payload: dict[str, Any]) -> Completed:
        if request.kind == invoke_pb2.InvokeRequest.KIND_COUNT_TOKENS:
            return parse_count(payload, self.provider)
        return parse_anthropic_response(payload, self.provider)

    async def count_tokens(self, request: invoke_pb2.InvokeRequest) -> Completed:
        """Anthropic's own count (exact): the same call path as a message, to count_tokens."""
        return await self.complete(request)

    def stream_translator(self, request: invoke_pb2.InvokeRequest) -> StreamTranslator:
        return AnthropicStream(self.provider)
