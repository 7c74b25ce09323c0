"""The OpenAI-compatible API (`POST /v1/chat/completions`, `GET /v1/models`). Pure functions.

A Chat Completions body becomes the same InvokeRequest the native API makes; the reply frames
become `chat.completion` objects or `chat.completion.chunk` SSE events ending in
`data: [DONE]`, and errors take OpenAI's shape and status codes, so an OpenAI SDK pointed at
the gateway needs no other change. The wire formats follow OpenAI's API reference.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from switchyard import choices, vocab
from switchyard.catalog import Catalog
from switchyard.errors import CODES, GatewayError, OpenAIError, spec_for
from switchyard.v1 import invoke_pb2
from switchyard.vocab import Api

from .api_kit import (
    SSE_DONE,
    EffortName,
    GatewayInfo,
    Parsed,
    StrategyField,
    StreamRenderer,
    copy_sampling,
    gateway_json,
    set_reasoning,
    set_strategy_and_metadata,
    sse_data,
    text_of,
)
from .native import MAX_MESSAGES
from .validation import parse_json_body

# ---------------------------------------------------------------------------------------------
# Request


class _In(BaseModel):
    # Unknown fields are ignored, as fields newer SDKs send (or fields echoed back from an
    # earlier response, such as `refusal` or `annotations`) must not break a drop-in client.
    model_config = ConfigDict(extra="ignore")


class ChatTextPart(_In):
    type: Literal["text"]
    text: str


class RefusalPart(_In):
    type: Literal["refusal"]
    refusal: str


class ChatImageUrl(_In):
    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_In):
    type: Literal["image_url"]
    image_url: ChatImageUrl


UserContentPart = Annotated[ChatTextPart | ImagePart, Field(discriminator="type")]
AssistantContentPart = Annotated[ChatTextPart | RefusalPart, Field(discriminator="type")]


class FunctionCall(_In):
    name: str = Field(min_length=1)
    arguments: str


class ToolCall(_In):
    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(_In):
    role: Literal["system", "developer"]
    content: str | list[ChatTextPart]
    name: str | None = None


class UserMessage(_In):
    role: Literal["user"]
    content: str | list[UserContentPart]
    name: str | None = None


class AssistantMessage(_In):
    role: Literal["assistant"]
    content: str | list[AssistantContentPart] | None = None
    tool_calls: list[ToolCall] | None = None
    refusal: str | None = None
    name: str | None = None


class ToolMessage(_In):
    role: Literal["tool"]
    content: str | list[ChatTextPart]
    tool_call_id: str = Field(min_length=1)


ChatMessage = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")
]


class FunctionDefinition(_In):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDefinition(_In):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_In):
    name: str = Field(min_length=1)


class NamedToolChoice(_In):
    type: Literal["function"]
    function: NamedFunction


class TextFormat(_In):
    type: Literal["text"]


class JsonObjectFormat(_In):
    type: Literal["json_object"]


class JsonSchema(_In):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class JsonSchemaFormat(_In):
    type: Literal["json_schema"]
    json_schema: JsonSchema


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")]


class StreamOptions(_In):
    include_usage: bool | None = None


class ChatCompletionRequest(_In):
    """POST /v1/chat/completions. Fields not listed are accepted and ignored; `strategy` is a
    Switchyard extension (see docs/api.md)."""

    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(None, ge=1, le=1_000_000)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: int | None = Field(None, ge=1, le=1, description="Only 1 is supported.")
    stop: str | list[str] | None = None
    seed: int | None = None
    tools: list[ToolDefinition] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    logprobs: bool | None = Field(None, description="Not supported: must be false or absent.")
    user: str | None = None
    metadata: dict[str, str] | None = Field(None, description="Also carries routing metadata.")
    reasoning_effort: EffortName | None = Field(None, description="Sent to models that reason.")
    strategy: StrategyField | None = None

    @field_validator("stop")
    @classmethod
    def _at_most_four_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ChatCompletionRequest:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        if self.logprobs:
            raise ValueError("logprobs are not supported by this gateway")
        return self

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


def parse_body(raw: bytes, max_depth: int = 64) -> ChatCompletionRequest:
    return parse_json_body(raw, ChatCompletionRequest, strict=True, max_depth=max_depth)


def _text_of(content: str | list[Any]) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.text if isinstance(p, ChatTextPart) else p.refusal for p in content)


def _add_user_content(message: invoke_pb2.Message, content: str | list[Any]) -> None:
    if isinstance(content, str):
        message.content.add(text=content)
        return
    for part in content:
        if isinstance(part, ChatTextPart):
            message.content.add(text=part.text)
        else:
            message.content.add(
                image=invoke_pb2.ImagePart(url=part.image_url.url, detail=part.image_url.detail or "")
            )


def to_request(body: ChatCompletionRequest) -> invoke_pb2.InvokeRequest:
    """The validated body as the bus contract (ids, deadline and tenancy are set by the ingress)."""
    request = invoke_pb2.InvokeRequest(model=body.model, stream=bool(body.stream), api=Api.OPENAI)
    for m in body.messages:
        if isinstance(m, SystemMessage):
            request.messages.add(role=invoke_pb2.ROLE_SYSTEM, name=m.name or "").content.add(
                text=_text_of(m.content)
            )
        elif isinstance(m, UserMessage):
            _add_user_content(request.messages.add(role=invoke_pb2.ROLE_USER, name=m.name or ""), m.content)
        elif isinstance(m, AssistantMessage):
            message = request.messages.add(role=invoke_pb2.ROLE_ASSISTANT, name=m.name or "")
            text = _text_of(m.content) if m.content is not None else ""
            if text:
                message.content.add(text=text)
            for call in m.tool_calls or []:
                message.tool_calls.add(
                    id=call.id, name=call.function.name, arguments_json=call.function.arguments
                )
        else:
            message = request.messages.add(role=invoke_pb2.ROLE_TOOL, tool_call_id=m.tool_call_id)
            message.content.add(text=_text_of(m.content))
    for tool in body.tools or []:
        request.tools.add(
            name=tool.function.name,
            description=tool.function.description or "",
            parameters_json=orjson.dumps(
                tool.function.parameters or {"type": "object", "properties": {}}
            ).decode(),
        )
    set_reasoning(request, body.reasoning_effort)
    if body.tool_choice is not None:
        choice = body.tool_choice if isinstance(body.tool_choice, str) else body.tool_choice.model_dump()
        request.tool_choice.CopyFrom(choices.tool_choice_from_json(choice))
    copy_sampling(
        request,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=body.stop,
    )
    if body.response_format is not None and (
        fmt := choices.response_format_from_json(
            body.response_format.model_dump(by_alias=True, exclude_none=True)
        )
    ):
        request.response_format.CopyFrom(fmt)
    set_strategy_and_metadata(request, body.strategy, body.metadata)
    if body.user:
        request.metadata.setdefault("user", body.user)
    return request


# ---------------------------------------------------------------------------------------------
# Response


# OpenAI has every neutral reason but `error`.
FINISH_REASONS = frozenset(vocab.FinishReason) - {vocab.FinishReason.ERROR}


def finish_reason(neutral: str) -> str:
    return neutral if neutral in FINISH_REASONS else vocab.FinishReason.STOP


def completion_id(request_id: str) -> str:
    return "chatcmpl-" + request_id.removeprefix("req_")


def created_at(request: invoke_pb2.InvokeRequest) -> int:
    return int(request.received_unix_ms // 1000)


def usage_json(usage: invoke_pb2.Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def _message_json(message: invoke_pb2.Message) -> dict[str, Any]:
    text = text_of(message)
    out: dict[str, Any] = {
        "role": "assistant",
        "content": text or (None if message.tool_calls else ""),
        "refusal": None,
    }
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json}}
            for c in message.tool_calls
        ]
    return out


def completion_json(request: invoke_pb2.InvokeRequest, final: invoke_pb2.InvokeResponse) -> dict[str, Any]:
    """A `chat.completion` object."""
    return {
        "id": completion_id(request.request_id),
        "object": "chat.completion",
        "created": created_at(request),
        "model": f"{final.provider}/{final.model}" if final.provider else final.model,
        "choices": [
            {
                "index": 0,
                "message": _message_json(final.message),
                "finish_reason": finish_reason(vocab.finish_reason_text(final.finish_reason)),
                "logprobs": None,
            }
        ],
        "usage": usage_json(final.usage),
        "system_fingerprint": None,
        "switchyard": gateway_json(final),
    }


class ChunkStream(StreamRenderer):
    """Reply frames -> `chat.completion.chunk` SSE events, one instance per streamed request.

    The first event carries the assistant role; text and tool-call deltas follow; the final
    frame becomes a chunk with `finish_reason` and, when `stream_options.include_usage` was
    set, one more chunk with empty `choices` and the usage; then `data: [DONE]`. A provider
    that did not stream some of its answer (text or tool calls only in the final message) has
    that part sent as one delta before the finish, so the client's assembled message is whole.
    """

    def __init__(self, request: invoke_pb2.InvokeRequest, include_usage: bool) -> None:
        self._id = completion_id(request.request_id)
        self._created = created_at(request)
        self._model = request.model
        self._include_usage = include_usage
        self._started = False
        self._sent_text = False
        self._sent_tool_calls = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            "system_fingerprint": None,
        }
        if self._include_usage:
            chunk["usage"] = None
        return chunk

    def _start(self) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        return [sse_data(self._chunk({"role": "assistant", "content": ""}))]

    def error(self, error: GatewayError) -> list[bytes]:
        return [sse_data(error_body(error)[1])]

    def chunk(self, chunk: invoke_pb2.Chunk) -> list[bytes]:
        return self._start() + self._deltas(chunk)

    def final(self, final: invoke_pb2.InvokeResponse) -> list[bytes]:
        out = self._start()
        message = final.message
        text = text_of(message)
        if text and not self._sent_text:
            out.append(sse_data(self._chunk({"content": text})))
        if message.tool_calls and not self._sent_tool_calls:
            calls = [
                _tool_call_delta(i, c.id, c.name, c.arguments_json) for i, c in enumerate(message.tool_calls)
            ]
            out.append(sse_data(self._chunk({"tool_calls": calls})))
        finishing = self._chunk({}, finish_reason(vocab.finish_reason_text(final.finish_reason)))
        finishing["switchyard"] = gateway_json(final)
        out.append(sse_data(finishing))
        if self._include_usage:
            out.append(
                sse_data(
                    {
                        "id": self._id,
                        "object": "chat.completion.chunk",
                        "created": self._created,
                        "model": self._model,
                        "choices": [],
                        "system_fingerprint": None,
                        "usage": usage_json(final.usage),
                    }
                )
            )
        out.append(SSE_DONE)
        return out

    def _deltas(self, chunk: invoke_pb2.Chunk) -> list[bytes]:
        out = []
        if chunk.delta_text:
            self._sent_text = True
            out.append(sse_data(self._chunk({"content": chunk.delta_text})))
        if chunk.tool_calls:
            self._sent_tool_calls = True
            calls = [_tool_call_delta(t.index, t.id, t.name, t.arguments_delta) for t in chunk.tool_calls]
            out.append(sse_data(self._chunk({"tool_calls": calls})))
        return out


def _tool_call_delta(index: int, call_id: str, name: str, arguments: str) -> dict[str, Any]:
    """The first delta of a call carries id, type and name; later ones only argument text."""
    delta: dict[str, Any] = {"index": index}
    if call_id:
        delta["id"] = call_id
        delta["type"] = "function"
    function: dict[str, Any] = {"arguments": arguments}
    if name:
        function["name"] = name
    delta["function"] = function
    return delta


# ---------------------------------------------------------------------------------------------
# Errors

# neutral code -> (HTTP status, OpenAI error type, OpenAI error code), from the one table.
ERRORS: dict[str, OpenAIError] = {code: spec.openai for code, spec in CODES.items()}


def error_body(error: GatewayError) -> tuple[int, dict[str, Any]]:
    """(HTTP status, OpenAI error object) for a neutral error. The request id travels in the
    `x-request-id` header, where OpenAI SDKs read it."""
    status, kind, code = spec_for(error.code).openai
    code = code or error.code  # a code this build does not know passes through
    return status, {
        "error": {"message": error.message, "type": kind, "param": error.param or None, "code": code}
    }


# ---------------------------------------------------------------------------------------------
# The API


class OpenAIApi:
    """`POST /v1/chat/completions` (see api_kit.HttpApi)."""

    name: str = Api.OPENAI
    path = "/v1/chat/completions"
    request_id_header = "x-request-id"

    def parse(self, raw: bytes, max_depth: int) -> Parsed:
        body = parse_body(raw, max_depth)
        return Parsed(to_request(body), include_usage=body.include_usage)

    def render_final(
        self, request: invoke_pb2.InvokeRequest, final: invoke_pb2.InvokeResponse
    ) -> dict[str, Any]:
        return completion_json(request, final)

    def render_error(self, error: GatewayError, request_id: str) -> tuple[int, dict[str, Any]]:
        return error_body(error)  # OpenAI SDKs read the request id from the header only

    def render_stream(self, parsed: Parsed) -> ChunkStream:
        return ChunkStream(parsed.request, parsed.include_usage)


# ---------------------------------------------------------------------------------------------
# Models


def model_owner(catalog: Catalog, name: str) -> str:
    """Routes and aliases belong to the gateway; `<provider>/<model>` names to their provider."""
    if name in catalog.routes or name in catalog.aliases:
        return "switchyard"
    return name.split("/", 1)[0]


def model_json(catalog: Catalog, name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": model_owner(catalog, name)}


def models_json(catalog: Catalog) -> dict[str, Any]:
    """Every name a request's `model` can take: routes, aliases and `<provider>/<model>`."""
    return {"object": "list", "data": [model_json(catalog, n) for n in catalog.model_names()]}


# ---------------------------------------------------------------------------------------------
# Response schemas: what the functions above produce, for the OpenAPI description (and checked
# against their output in tests, so the description stays true).


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FunctionCallOut(_Out):
    name: str
    arguments: str


class ToolCallOut(_Out):
    id: str
    type: Literal["function"]
    function: FunctionCallOut


class AssistantMessageOut(_Out):
    role: Literal["assistant"]
    content: str | None
    refusal: None
    tool_calls: list[ToolCallOut] | None = None


# OpenAI's finish reasons, described from the vocabulary (every neutral reason but `error`).
FinishReason = Annotated[
    str,
    WithJsonSchema({"type": "string", "enum": [str(f) for f in vocab.FinishReason if f in FINISH_REASONS]}),
]


class ChoiceOut(_Out):
    index: int
    message: AssistantMessageOut
    finish_reason: FinishReason
    logprobs: None


class PromptTokensDetails(_Out):
    cached_tokens: int


class CompletionTokensDetails(_Out):
    reasoning_tokens: int


class OpenAIUsage(_Out):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails
    completion_tokens_details: CompletionTokensDetails


class ChatCompletion(_Out):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChoiceOut]
    usage: OpenAIUsage
    system_fingerprint: None
    switchyard: GatewayInfo


class FunctionCallDelta(_Out):
    name: str | None = None
    arguments: str


class ToolCallDeltaOut(_Out):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta


class DeltaOut(_Out):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDeltaOut] | None = None


class ChunkChoiceOut(_Out):
    index: int
    delta: DeltaOut
    finish_reason: FinishReason | None
    logprobs: None


class ChatCompletionChunk(_Out):
    """One `data:` event of a streamed completion (the stream ends with `data: [DONE]`)."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoiceOut]
    system_fingerprint: None
    usage: OpenAIUsage | None = None
    switchyard: GatewayInfo | None = None


class OpenAIErrorDetail(_Out):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorResponse(_Out):
    error: OpenAIErrorDetail


class OpenAIModel(_Out):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class OpenAIModelList(_Out):
    object: Literal["list"]
    data: list[OpenAIModel]
