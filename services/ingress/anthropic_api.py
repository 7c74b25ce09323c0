"""The Anthropic-compatible API (`POST /v1/messages`). Pure functions.

A Messages API body becomes the same InvokeRequest the native API makes (so it can be routed
to any provider); the reply frames become a `message` object or the Messages streaming events
(message_start, content_block_start/delta/stop, message_delta, message_stop), and errors take
Anthropic's shape, so an Anthropic SDK pointed at the gateway needs no other change. The wire
formats follow Anthropic's API reference.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from switchyard import choices
from switchyard.catalog import Catalog
from switchyard.errors import CODES, AnthropicError, GatewayError, spec_for
from switchyard.tokens import estimate_prompt_tokens
from switchyard.v1 import invoke_pb2
from switchyard.vocab import Api, FinishReason, finish_reason_text

from .api_kit import (
    CacheControlIn,
    GatewayInfo,
    Parsed,
    StrategyField,
    StreamRenderer,
    copy_sampling,
    gateway_json,
    set_cache_control,
    set_reasoning,
    set_strategy_and_metadata,
    sse,
    text_of,
)
from .native import MAX_MESSAGES
from .validation import parse_json_body

# ---------------------------------------------------------------------------------------------
# Request


class _In(BaseModel):
    # Unknown fields (citations, newer parameters) are accepted and ignored. `cache_control` is
    # carried to Anthropic deployments unchanged (on text, image, tool_use and tool_result blocks,
    # the system prompt's blocks and tools).
    model_config = ConfigDict(extra="ignore")


class TextBlock(_In):
    type: Literal["text"]
    text: str
    cache_control: CacheControlIn | None = None


class Base64Source(_In):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str = Field(min_length=1)


class UrlSource(_In):
    type: Literal["url"]
    url: str = Field(min_length=1)


class ImageBlock(_In):
    type: Literal["image"]
    source: Annotated[Base64Source | UrlSource, Field(discriminator="type")]
    cache_control: CacheControlIn | None = None


class ToolUseBlock(_In):
    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any]
    cache_control: CacheControlIn | None = None


class ToolResultBlock(_In):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: str | list[Annotated[TextBlock | ImageBlock, Field(discriminator="type")]] | None = None
    is_error: bool | None = None
    cache_control: CacheControlIn | None = None


ContentBlock = Annotated[TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock, Field(discriminator="type")]


class MessageParam(_In):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class ToolParam(_In):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,128}$")
    description: str | None = None
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None
    cache_control: CacheControlIn | None = None


class ToolChoice(_In):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = Field(None, min_length=1)
    disable_parallel_tool_use: bool | None = None

    @model_validator(mode="after")
    def _tool_needs_a_name(self) -> ToolChoice:
        if self.type == "tool" and not self.name:
            raise ValueError("tool_choice of type 'tool' needs a name")
        return self


class ThinkingConfig(_In):
    """Anthropic's extended thinking: `enabled` with a budget, or `disabled`; other (newer)
    types are accepted and left to the provider's default."""

    type: str
    budget_tokens: int | None = Field(None, ge=1024)


class MessagesRequest(_In):
    """POST /v1/messages. Fields not listed are accepted and ignored; `strategy` and extra
    `metadata` keys are Switchyard extensions (see docs/api.md)."""

    model: str = Field(min_length=1, max_length=256)
    max_tokens: int = Field(ge=1, le=1_000_000)
    messages: list[MessageParam] = Field(min_length=1, max_length=MAX_MESSAGES)
    system: str | list[TextBlock] | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0, description="Accepted; not forwarded.")
    stream: bool | None = None
    tools: list[ToolParam] | None = Field(None, max_length=128)
    tool_choice: ToolChoice | None = None
    metadata: dict[str, str | None] | None = Field(
        None, description="`user_id` as in Anthropic's API, plus routing metadata such as agent or task."
    )
    thinking: ThinkingConfig | None = None
    strategy: StrategyField | None = None


def parse_body(raw: bytes, max_depth: int = 64) -> MessagesRequest:
    return parse_json_body(raw, MessagesRequest, strict=True, max_depth=max_depth)


def _image(block: ImageBlock) -> invoke_pb2.ImagePart:
    source = block.source
    if isinstance(source, UrlSource):
        return invoke_pb2.ImagePart(url=source.url)
    # A data: URL, the form the native and OpenAI APIs use for inline images too.
    return invoke_pb2.ImagePart(
        url=f"data:{source.media_type};base64,{source.data}", media_type=source.media_type
    )


def _tool_result_text(block: ToolResultBlock) -> str:
    if block.content is None:
        text = ""
    elif isinstance(block.content, str):
        text = block.content
    else:
        text = "".join(b.text for b in block.content if isinstance(b, TextBlock))
    # The contract has no error flag on a tool turn; say it in the text the model reads.
    return f"(tool error) {text}" if block.is_error else text


_TOOL_CHOICE_MODES = {
    "auto": invoke_pb2.ToolChoice.MODE_AUTO,
    "any": invoke_pb2.ToolChoice.MODE_REQUIRED,
    "none": invoke_pb2.ToolChoice.MODE_NONE,
    "tool": invoke_pb2.ToolChoice.MODE_TOOL,
}


def _tool_choice(choice: ToolChoice) -> invoke_pb2.ToolChoice:
    return invoke_pb2.ToolChoice(mode=_TOOL_CHOICE_MODES[choice.type], name=choice.name or "")


def _add_message(request: invoke_pb2.InvokeRequest, m: MessageParam) -> None:
    """Anthropic puts tool results inside a user turn; the contract has a tool turn per result,
    before the rest of that user turn."""
    if isinstance(m.content, str):
        request.messages.add(role=choices.role(m.role)).content.add(text=m.content)
        return
    for block in m.content:
        if isinstance(block, ToolResultBlock):
            tool = request.messages.add(role=invoke_pb2.ROLE_TOOL, tool_call_id=block.tool_use_id)
            # The result is one text part: a breakpoint on its last inner block marks the block.
            inner = (
                block.content[-1].cache_control if isinstance(block.content, list) and block.content else None
            )
            set_cache_control(tool.content.add(text=_tool_result_text(block)), block.cache_control or inner)
    rest = [b for b in m.content if not isinstance(b, ToolResultBlock)]
    if not rest:
        return
    message = request.messages.add(role=choices.role(m.role))
    for block in rest:
        if isinstance(block, TextBlock):
            set_cache_control(message.content.add(text=block.text), block.cache_control)
        elif isinstance(block, ImageBlock):
            set_cache_control(message.content.add(image=_image(block)), block.cache_control)
        elif isinstance(block, ToolUseBlock):
            call = message.tool_calls.add(
                id=block.id, name=block.name, arguments_json=orjson.dumps(block.input).decode()
            )
            set_cache_control(call, block.cache_control)


def to_request(body: MessagesRequest) -> invoke_pb2.InvokeRequest:
    """The validated body as the bus contract (ids, deadline and tenancy are set by the ingress)."""
    request = invoke_pb2.InvokeRequest(
        model=body.model, stream=bool(body.stream), api=Api.ANTHROPIC, max_tokens=body.max_tokens
    )
    if isinstance(body.system, str) and body.system:
        request.messages.add(role=invoke_pb2.ROLE_SYSTEM).content.add(text=body.system)
    elif body.system:
        # One part per block, so each block's cache breakpoint stays where the caller put it.
        system = request.messages.add(role=invoke_pb2.ROLE_SYSTEM)
        for block in body.system:
            set_cache_control(system.content.add(text=block.text), block.cache_control)
    for m in body.messages:
        _add_message(request, m)
    for tool in body.tools or []:
        added = request.tools.add(
            name=tool.name,
            description=tool.description or "",
            parameters_json=orjson.dumps(tool.input_schema).decode(),
        )
        set_cache_control(added, tool.cache_control)
    if body.tool_choice is not None:
        request.tool_choice.CopyFrom(_tool_choice(body.tool_choice))
    copy_sampling(request, temperature=body.temperature, top_p=body.top_p, stop=body.stop_sequences)
    if body.thinking is not None and body.thinking.type == "enabled" and body.thinking.budget_tokens:
        set_reasoning(request, None, body.thinking.budget_tokens)
    elif body.thinking is not None and body.thinking.type == "disabled":
        set_reasoning(request, "none")
    set_strategy_and_metadata(request, body.strategy, body.metadata)
    return request


# ---------------------------------------------------------------------------------------------
# Response

STOP_REASONS: dict[str, str] = {
    FinishReason.STOP: "end_turn",
    FinishReason.LENGTH: "max_tokens",
    FinishReason.TOOL_CALLS: "tool_use",
    FinishReason.CONTENT_FILTER: "refusal",
}


def stop_reason(neutral: str) -> str:
    return STOP_REASONS.get(neutral, "end_turn")


def message_id(request_id: str) -> str:
    return "msg_" + request_id.removeprefix("req_")


def tool_input(arguments_json: str) -> dict[str, Any]:
    """A tool call's arguments as the object Anthropic's `input` is; arguments that are not a
    JSON object (a model's mistake) are kept whole under `_raw` rather than dropped."""
    try:
        value = orjson.loads(arguments_json or "{}")
    except orjson.JSONDecodeError:
        return {"_raw": arguments_json}
    return value if isinstance(value, dict) else {"_raw": arguments_json}


def usage_json(usage: invoke_pb2.Usage) -> dict[str, Any]:
    """Anthropic counts cache reads and writes apart from input tokens (the contract's
    prompt_tokens includes them, OpenAI's convention), and splits writes by TTL in
    `cache_creation`. Reasoning has no field of its own: it is in output_tokens."""
    read = min(usage.cached_tokens, usage.prompt_tokens)
    written = min(usage.cache_write_tokens, usage.prompt_tokens - read)
    written_1h = min(usage.cache_write_1h_tokens, written)
    return {
        "input_tokens": usage.prompt_tokens - read - written,
        "output_tokens": usage.completion_tokens,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": written - written_1h,
            "ephemeral_1h_input_tokens": written_1h,
        },
    }


def content_json(message: invoke_pb2.Message) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    text = text_of(message)
    if text:
        blocks.append({"type": "text", "text": text})
    for call in message.tool_calls:
        blocks.append(
            {"type": "tool_use", "id": call.id, "name": call.name, "input": tool_input(call.arguments_json)}
        )
    return blocks


def model_name(final: invoke_pb2.InvokeResponse) -> str:
    return f"{final.provider}/{final.model}" if final.provider else final.model


def message_json(request: invoke_pb2.InvokeRequest, final: invoke_pb2.InvokeResponse) -> dict[str, Any]:
    """A Messages API `message` object."""
    return {
        "id": message_id(request.request_id),
        "type": "message",
        "role": "assistant",
        "model": model_name(final),
        "content": content_json(final.message),
        "stop_reason": stop_reason(finish_reason_text(final.finish_reason)),
        "stop_sequence": None,
        "usage": usage_json(final.usage),
        "switchyard": gateway_json(final),
    }


class EventStream(StreamRenderer):
    """Reply frames -> Messages streaming events, one instance per streamed request.

    message_start (with an input-token estimate; the exact count comes in message_delta), then
    for each content block a content_block_start, its deltas (text_delta or
    input_json_delta) and a content_block_stop; then message_delta (stop reason, usage) and
    message_stop. A new block starts whenever the kind of content changes: text, or a tool call
    with a new index. Content present only in the final message (a provider that did not stream
    it) is sent as blocks before the end.
    """

    def __init__(self, request: invoke_pb2.InvokeRequest) -> None:
        self._request_id = request.request_id
        self._id = message_id(request.request_id)
        self._model = request.model
        self._input_estimate = estimate_prompt_tokens(request)
        self._started = False
        self._blocks = 0  # blocks started so far
        self._open: tuple[str, int] | None = None  # ("text", -1) or ("tool", tool index)
        self._sent_text = False
        self._sent_tools = False

    def _start(self) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self._input_estimate, "output_tokens": 0},
        }
        return [
            sse("message_start", {"type": "message_start", "message": message}),
            sse("ping", {"type": "ping"}),
        ]

    def _close(self) -> list[bytes]:
        if self._open is None:
            return []
        self._open = None
        return [sse("content_block_stop", {"type": "content_block_stop", "index": self._blocks - 1})]

    def _open_block(self, key: tuple[str, int], block: dict[str, Any]) -> list[bytes]:
        if self._open == key:
            return []
        out = self._close()
        self._open = key
        self._blocks += 1
        out.append(
            sse(
                "content_block_start",
                {"type": "content_block_start", "index": self._blocks - 1, "content_block": block},
            )
        )
        return out

    def _text(self, text: str) -> list[bytes]:
        self._sent_text = True
        out = self._open_block(("text", -1), {"type": "text", "text": ""})
        delta = {"type": "text_delta", "text": text}
        out.append(
            sse(
                "content_block_delta",
                {"type": "content_block_delta", "index": self._blocks - 1, "delta": delta},
            )
        )
        return out

    def _tool(self, index: int, call_id: str, name: str, partial_json: str) -> list[bytes]:
        self._sent_tools = True
        out = self._open_block(
            ("tool", index), {"type": "tool_use", "id": call_id, "name": name, "input": {}}
        )
        if partial_json:
            delta = {"type": "input_json_delta", "partial_json": partial_json}
            out.append(
                sse(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": self._blocks - 1, "delta": delta},
                )
            )
        return out

    def error(self, error: GatewayError) -> list[bytes]:
        return [sse("error", error_body(error, self._request_id)[1])]

    def chunk(self, chunk: invoke_pb2.Chunk) -> list[bytes]:
        out = self._start()
        if chunk.delta_text:
            out.extend(self._text(chunk.delta_text))
        for call in chunk.tool_calls:
            out.extend(self._tool(call.index, call.id, call.name, call.arguments_delta))
        return out

    def final(self, final: invoke_pb2.InvokeResponse) -> list[bytes]:
        out = self._start()
        text = text_of(final.message)
        if text and not self._sent_text:
            out.extend(self._text(text))
        if not self._sent_tools:
            for i, whole in enumerate(final.message.tool_calls):
                out.extend(self._tool(i, whole.id, whole.name, whole.arguments_json))
        out.extend(self._close())
        usage = usage_json(final.usage)
        out.append(
            sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": stop_reason(finish_reason_text(final.finish_reason)),
                        "stop_sequence": None,
                    },
                    "usage": usage,
                    "switchyard": gateway_json(final),
                },
            )
        )
        out.append(sse("message_stop", {"type": "message_stop"}))
        return out


# ---------------------------------------------------------------------------------------------
# Errors

# neutral code -> (HTTP status, Anthropic error type), from the one table.
ERRORS: dict[str, AnthropicError] = {code: spec.anthropic for code, spec in CODES.items()}


def error_body(error: GatewayError, request_id: str = "") -> tuple[int, dict[str, Any]]:
    """(HTTP status, Anthropic error object) for a neutral error."""
    status, kind = spec_for(error.code).anthropic
    body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": error.message}}
    if request_id:
        body["request_id"] = request_id
    return status, body


# ---------------------------------------------------------------------------------------------
# The API


class AnthropicApi:
    """`POST /v1/messages` (see api_kit.HttpApi)."""

    name: str = Api.ANTHROPIC
    path = "/v1/messages"
    request_id_header = "request-id"

    def parse(self, raw: bytes, max_depth: int) -> Parsed:
        return Parsed(to_request(parse_body(raw, max_depth)))

    def render_final(
        self, request: invoke_pb2.InvokeRequest, final: invoke_pb2.InvokeResponse
    ) -> dict[str, Any]:
        return message_json(request, final)

    def render_error(self, error: GatewayError, request_id: str) -> tuple[int, dict[str, Any]]:
        return error_body(error, request_id)

    def render_stream(self, parsed: Parsed) -> EventStream:
        return EventStream(parsed.request)


# ---------------------------------------------------------------------------------------------
# Token counting (POST /v1/messages/count_tokens)


class CountTokensRequest(MessagesRequest):
    """POST /v1/messages/count_tokens: a Messages body without `max_tokens` (and without
    sampling or streaming, which are accepted and ignored)."""

    max_tokens: int = Field(1, ge=1, le=1_000_000, description="Accepted; not used.")
    stream: bool | None = Field(None, description="Accepted; not used.")


def count_request(body: CountTokensRequest) -> invoke_pb2.InvokeRequest:
    """The prompt as a KIND_COUNT_TOKENS request: routed like a message (to a chat deployment),
    counted by Anthropic's own endpoint on Anthropic deployments, estimated elsewhere."""
    request = to_request(body)
    request.api = Api.COUNT_TOKENS
    request.kind = invoke_pb2.InvokeRequest.KIND_COUNT_TOKENS
    request.stream = False
    request.max_tokens = 0
    request.ClearField("temperature")
    request.ClearField("top_p")
    del request.stop[:]
    return request


def count_json(final: invoke_pb2.InvokeResponse) -> dict[str, Any]:
    """Anthropic's `{"input_tokens": N}`; `switchyard.estimated` says whether N is Anthropic's
    exact count (false) or the gateway's estimate for a deployment of another provider (true)."""
    return {
        "input_tokens": final.usage.prompt_tokens,
        "switchyard": {**gateway_json(final), "estimated": final.usage_estimated},
    }


class CountTokensApi:
    """`POST /v1/messages/count_tokens` (see api_kit.HttpApi). Never streams."""

    name: str = Api.COUNT_TOKENS
    path = "/v1/messages/count_tokens"
    request_id_header = "request-id"

    def parse(self, raw: bytes, max_depth: int) -> Parsed:
        body = parse_json_body(raw, CountTokensRequest, strict=True, max_depth=max_depth)
        return Parsed(count_request(body))

    def render_final(
        self, request: invoke_pb2.InvokeRequest, final: invoke_pb2.InvokeResponse
    ) -> dict[str, Any]:
        return count_json(final)

    def render_error(self, error: GatewayError, request_id: str) -> tuple[int, dict[str, Any]]:
        return error_body(error, request_id)

    def render_stream(self, parsed: Parsed) -> EventStream:
        return EventStream(parsed.request)  # not reached: count requests never stream


# ---------------------------------------------------------------------------------------------
# Models (GET /v1/models when the caller sends `anthropic-version`, as Anthropic's SDKs do)


def models_json(catalog: Catalog) -> dict[str, Any]:
    names = catalog.model_names()
    return {
        "data": [model_json(n) for n in names],
        "has_more": False,
        "first_id": names[0] if names else None,
        "last_id": names[-1] if names else None,
    }


def model_json(name: str) -> dict[str, Any]:
    return {"type": "model", "id": name, "display_name": name, "created_at": "1970-01-01T00:00:00Z"}


# ---------------------------------------------------------------------------------------------
# Response schemas (for the OpenAPI description; checked against the output in tests)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextBlockOut(_Out):
    type: Literal["text"]
    text: str


class ToolUseBlockOut(_Out):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class CacheCreation(_Out):
    ephemeral_5m_input_tokens: int
    ephemeral_1h_input_tokens: int


class AnthropicUsage(_Out):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    cache_creation: CacheCreation


class Message(_Out):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[Annotated[TextBlockOut | ToolUseBlockOut, Field(discriminator="type")]]
    stop_reason: Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal"]
    stop_sequence: str | None
    usage: AnthropicUsage
    switchyard: GatewayInfo


class AnthropicErrorDetail(_Out):
    type: str
    message: str


class AnthropicErrorResponse(_Out):
    type: Literal["error"]
    error: AnthropicErrorDetail
    request_id: str | None = None


class CountGatewayInfo(GatewayInfo):
    estimated: bool


class MessageTokensCount(_Out):
    input_tokens: int
    switchyard: CountGatewayInfo


class AnthropicModel(_Out):
    type: Literal["model"]
    id: str
    display_name: str
    created_at: str


class AnthropicModelList(_Out):
    data: list[AnthropicModel]
    has_more: bool
    first_id: str | None
    last_id: str | None
