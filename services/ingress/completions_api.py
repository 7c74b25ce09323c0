"""The legacy OpenAI text completions API (`POST /v1/completions`), mapped onto chat. Pure.

Every provider the gateway reaches speaks chat (OpenAI's own completions endpoint serves one
instruct model), so the prompt becomes one user turn of an ordinary chat request (api
`completions`) and the answer is rendered as a `text_completion` object, or as its streamed
chunks ending in `data: [DONE]`. What has no chat equivalent is refused with a 400 naming it:
several prompts or choices (`n`, `best_of` > 1), `echo`, `logprobs`, `suffix`, token-array
prompts. `max_tokens` defaults to 16, as OpenAI's does.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from switchyard.errors import GatewayError
from switchyard.v1 import invoke_pb2
from switchyard.vocab import Api, finish_reason_text

from .api_kit import (
    SSE_DONE,
    GatewayInfo,
    Parsed,
    StrategyField,
    StreamRenderer,
    copy_sampling,
    gateway_json,
    set_strategy_and_metadata,
    sse_data,
    text_of,
)
from .openai_api import OpenAIUsage, StreamOptions, created_at, error_body, finish_reason, usage_json
from .validation import parse_json_body

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for this API


class CompletionRequest(BaseModel):
    """POST /v1/completions. Unknown fields are ignored; `strategy` and `metadata` are
    Switchyard extensions (docs/api.md)."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=256)
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: int | None = Field(None, ge=1, le=1, description="Only 1 is supported.")
    best_of: int | None = Field(None, ge=1, le=1, description="Only 1 is supported.")
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    echo: bool | None = Field(None, description="Not supported: must be false or absent.")
    logprobs: int | None = Field(None, description="Not supported: must be absent.")
    suffix: str | None = Field(None, description="Not supported: must be absent.")
    user: str | None = None
    metadata: dict[str, str] | None = None
    strategy: StrategyField | None = None

    @field_validator("prompt")
    @classmethod
    def _one_text_prompt(cls, value: Any) -> Any:
        prompts = [value] if isinstance(value, str) else value
        if len(prompts) != 1 or not isinstance(prompts[0], str):
            raise ValueError(
                "only one text prompt per request is supported (no prompt lists or token arrays)"
            )
        return value

    @field_validator("stop")
    @classmethod
    def _at_most_four_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    @model_validator(mode="after")
    def _supported(self) -> CompletionRequest:
        if self.echo:
            raise ValueError("echo is not supported by this gateway")
        if self.logprobs is not None:
            raise ValueError("logprobs are not supported by this gateway")
        if self.suffix:
            raise ValueError("suffix (insertion) is not supported by this gateway")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        return self

    @property
    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else str(self.prompt[0])

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


def to_request(body: CompletionRequest) -> invoke_pb2.InvokeRequest:
    """The prompt as one user turn of a chat request."""
    request = invoke_pb2.InvokeRequest(model=body.model, stream=bool(body.stream), api=Api.COMPLETIONS)
    request.messages.add(role=invoke_pb2.ROLE_USER).content.add(text=body.text)
    copy_sampling(
        request,
        max_tokens=body.max_tokens or DEFAULT_MAX_TOKENS,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=body.stop,
    )
    set_strategy_and_metadata(request, body.strategy, body.metadata)
    if body.user:
        request.metadata.setdefault("user", body.user)
    return request


def completion_id(request_id: str) -> str:
    return "cmpl-" + request_id.removeprefix("req_")


def _model(final: invoke_pb2.InvokeResponse) -> str:
    return f"{final.provider}/{final.model}" if final.provider else final.model


def text_completion_json(
    request: invoke_pb2.InvokeRequest, final: invoke_pb2.InvokeResponse
) -> dict[str, Any]:
    """A `text_completion` object (tool calls cannot be asked for here, so only text)."""
    return {
        "id": completion_id(request.request_id),
        "object": "text_completion",
        "created": created_at(request),
        "model": _model(final),
        "choices": [
            {
                "text": text_of(final.message),
                "index": 0,
                "logprobs": None,
                "finish_reason": finish_reason(finish_reason_text(final.finish_reason)),
            }
        ],
        "usage": usage_json(final.usage),
        "system_fingerprint": None,
        "switchyard": gateway_json(final),
    }


class TextStream(StreamRenderer):
    """Reply frames -> streamed `text_completion` chunks: one per text delta, one with the
    finish reason, one with the usage when `stream_options.include_usage` asked, then [DONE]."""

    def __init__(self, request: invoke_pb2.InvokeRequest, include_usage: bool) -> None:
        self._id = completion_id(request.request_id)
        self._created = created_at(request)
        self._model = request.model
        self._include_usage = include_usage
        self._sent_text = False

    def _chunk(self, text: str, finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "text_completion",
            "created": self._created,
            "model": self._model,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
            "system_fingerprint": None,
        }

    def chunk(self, chunk: invoke_pb2.Chunk) -> list[bytes]:
        if not chunk.delta_text:
            return []
        self._sent_text = True
        return [sse_data(self._chunk(chunk.delta_text))]

    def final(self, final: invoke_pb2.InvokeResponse) -> list[bytes]:
        out = []
        text = text_of(final.message)
        if text and not self._sent_text:
            out.append(sse_data(self._chunk(text)))
        finishing = self._chunk("", finish_reason(finish_reason_text(final.finish_reason)))
        finishing["switchyard"] = gateway_json(final)
        out.append(sse_data(finishing))
        if self._include_usage:
            usage = self._chunk("")
            usage["choices"] = []
            usage["usage"] = usage_json(final.usage)
            out.append(sse_data(usage))
        out.append(SSE_DONE)
        return out

    def error(self, error: GatewayError) -> list[bytes]:
        return [sse_data(error_body(error)[1])]


class CompletionsApi:
    """`POST /v1/completions` (see api_kit.HttpApi)."""

    name: str = Api.COMPLETIONS
    path = "/v1/completions"
    request_id_header = "x-request-id"

    def parse(self, raw: bytes, max_depth: int) -> Parsed:
        body = parse_json_body(raw, CompletionRequest, strict=True, max_depth=max_depth)
        return Parsed(to_request(body), include_usage=body.include_usage)

    def render_final(
        self, request: invoke_pb2.InvokeRequest, final: invoke_pb2.InvokeResponse
    ) -> dict[str, Any]:
        return text_completion_json(request, final)

    def render_error(self, error: GatewayError, request_id: str) -> tuple[int, dict[str, Any]]:
        return error_body(error)

    def render_stream(self, parsed: Parsed) -> TextStream:
        return TextStream(parsed.request, parsed.include_usage)


# Response schema (the OpenAPI description; checked against text_completion_json in tests).


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextChoiceOut(_Out):
    text: str
    index: int
    logprobs: None
    finish_reason: Literal["stop", "length", "tool_calls", "content_filter"]


class TextCompletion(_Out):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChoiceOut]
    usage: OpenAIUsage
    system_fingerprint: None
    switchyard: GatewayInfo
