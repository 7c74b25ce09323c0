"""The OpenAI-compatible embeddings API (`POST /v1/embeddings`). Pure functions.

A body becomes an InvokeRequest of kind KIND_EMBEDDING (the inputs, `dimensions`, `user` and the
wanted encoding in its `embedding` field), routed among the catalog's embedding deployments like
any request; the final frame's float32 vectors are rendered as a `list` of `embedding` objects,
as floats or as base64 (little-endian float32, OpenAI's encoding), and errors take OpenAI's shape.
Token-array inputs (lists of token ids) are refused with a 400: the gateway routes across
providers whose tokenizers differ, so token ids have no meaning it could carry.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from switchyard.errors import GatewayError
from switchyard.v1 import invoke_pb2
from switchyard.vectors import pack_base64
from switchyard.vocab import Api

from .api_kit import (
    GatewayInfo,
    Parsed,
    StrategyField,
    StreamRenderer,
    gateway_json,
    set_strategy_and_metadata,
    sse_data,
)
from .openai_api import error_body
from .validation import parse_json_body

MAX_INPUTS = 2048  # OpenAI's limit per request
MAX_DIMENSIONS = 16_384


class EmbeddingsRequest(BaseModel):
    """POST /v1/embeddings. Unknown fields are ignored (as newer SDKs send some); `strategy`
    and `metadata` are Switchyard extensions (docs/api.md)."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=256)
    input: str | list[str] | list[int] | list[list[int]]
    dimensions: int | None = Field(None, ge=1, le=MAX_DIMENSIONS)
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = Field(None, max_length=256)
    metadata: dict[str, str] | None = None
    strategy: StrategyField | None = None

    @field_validator("input")
    @classmethod
    def _texts(cls, value: Any) -> Any:
        texts = [value] if isinstance(value, str) else value
        if not texts:
            raise ValueError("input must not be empty")
        if not all(isinstance(text, str) for text in texts):
            raise ValueError(
                "token-array inputs are not supported by this gateway: send the text "
                "(it is routed across providers whose tokenizers differ)"
            )
        if len(texts) > MAX_INPUTS:
            raise ValueError(f"at most {MAX_INPUTS} inputs per request")
        if any(not text for text in texts):
            raise ValueError("input strings must not be empty")
        return value

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else [str(text) for text in self.input]


def to_request(body: EmbeddingsRequest) -> invoke_pb2.InvokeRequest:
    request = invoke_pb2.InvokeRequest(
        model=body.model, api=Api.EMBEDDINGS, kind=invoke_pb2.InvokeRequest.KIND_EMBEDDING
    )
    request.embedding.inputs.extend(body.texts)
    request.embedding.dimensions = body.dimensions or 0
    request.embedding.user = body.user or ""
    request.embedding.encoding_format = body.encoding_format
    set_strategy_and_metadata(request, body.strategy, body.metadata)
    if body.user:
        request.metadata.setdefault("user", body.user)
    return request


def embeddings_json(request: invoke_pb2.InvokeRequest, final: invoke_pb2.InvokeResponse) -> dict[str, Any]:
    """OpenAI's `list` of `embedding` objects, encoded as the request asked."""
    as_base64 = request.embedding.encoding_format == "base64"
    data = [
        {
            "object": "embedding",
            "index": index,
            "embedding": pack_base64(vector.values) if as_base64 else list(vector.values),
        }
        for index, vector in enumerate(final.embeddings)
    ]
    return {
        "object": "list",
        "data": data,
        "model": f"{final.provider}/{final.model}" if final.provider else final.model,
        "usage": {"prompt_tokens": final.usage.prompt_tokens, "total_tokens": final.usage.prompt_tokens},
        "switchyard": gateway_json(final),
    }


class NoStream(StreamRenderer):
    """The APIs that never stream (their parse never sets `stream`) still name a renderer: one
    that renders the final answer or the error as a single event, should one be asked for."""

    def __init__(self, render: Any) -> None:
        self._render = render

    def chunk(self, chunk: invoke_pb2.Chunk) -> list[bytes]:
        return []

    def final(self, final: invoke_pb2.InvokeResponse) -> list[bytes]:
        return [sse_data(self._render(final))]

    def error(self, error: GatewayError) -> list[bytes]:
        return [sse_data(error_body(error)[1])]


class EmbeddingsApi:
    """`POST /v1/embeddings` (see api_kit.HttpApi)."""

    name: str = Api.EMBEDDINGS
    path = "/v1/embeddings"
    request_id_header = "x-request-id"

    def parse(self, raw: bytes, max_depth: int) -> Parsed:
        body = parse_json_body(raw, EmbeddingsRequest, strict=True, max_depth=max_depth)
        return Parsed(to_request(body))

    def render_final(
        self, request: invoke_pb2.InvokeRequest, final: invoke_pb2.InvokeResponse
    ) -> dict[str, Any]:
        return embeddings_json(request, final)

    def render_error(self, error: GatewayError, request_id: str) -> tuple[int, dict[str, Any]]:
        return error_body(error)

    def render_stream(self, parsed: Parsed) -> StreamRenderer:
        request = parsed.request
        return NoStream(lambda final: embeddings_json(request, final))


# Response schemas (the OpenAPI description; checked against embeddings_json in tests).


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmbeddingOut(_Out):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str


class EmbeddingsUsage(_Out):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(_Out):
    object: Literal["list"]
    data: list[EmbeddingOut]
    model: str
    usage: EmbeddingsUsage
    switchyard: GatewayInfo
