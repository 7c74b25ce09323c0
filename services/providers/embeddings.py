"""Embedding requests and answers in the providers' wire formats. Pure.

An embedding request is an InvokeRequest of kind KIND_EMBEDDING (docs/architecture.md, "Request
kinds"): it takes the same path through router and worker as a chat request, and the adapter's
`complete` sends it to the provider's embeddings endpoint instead of its chat endpoint. Vectors
come back as float32 (OpenAI's base64 is packed little-endian float32, decoded here exactly);
the ingress encodes them as the caller asked.

- OpenAI (and Mistral, and OpenAI-compatible servers): POST {base}/embeddings with `input` (a
  list), `dimensions` (Mistral: `output_dimension`), `encoding_format`, `user`; the answer has
  `data[].embedding` (a list, or base64) and `usage.prompt_tokens`.
- Gemini: POST {base}/{version}/models/{model}:batchEmbedContents with one request per input
  (`content.parts[].text`, `outputDimensionality`); the answer has `embeddings[].values` and no
  token count on the Developer API, so the gateway's estimate is billed (said in docs/providers.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from switchyard.errors import ErrorCode, GatewayError
from switchyard.tokens import PESSIMISTIC, estimate_prompt_tokens
from switchyard.v1 import invoke_pb2
from switchyard.vectors import unpack_base64
from switchyard.vocab import FinishReason

from .adapters.base import Completed
from .http_errors import error_from_stream_event


def is_embedding(request: invoke_pb2.InvokeRequest) -> bool:
    return request.kind == invoke_pb2.InvokeRequest.KIND_EMBEDDING


def is_count(request: invoke_pb2.InvokeRequest) -> bool:
    return request.kind == invoke_pb2.InvokeRequest.KIND_COUNT_TOKENS


@dataclass(frozen=True)
class EmbeddingDialect:
    """How one OpenAI-style embeddings API differs from OpenAI's."""

    path: str = "/embeddings"
    dimensions_field: str = "dimensions"
    encoding_format: str = "base64"  # what to ask for: base64 is a quarter of the bytes
    sends_user: bool = True


OPENAI_EMBEDDINGS = EmbeddingDialect()
# Mistral rejects unknown fields (no `user`) and names the size `output_dimension`.
MISTRAL_EMBEDDINGS = EmbeddingDialect(
    path="/v1/embeddings", dimensions_field="output_dimension", encoding_format="float", sends_user=False
)
# Servers differ in base64 support (vLLM has it, older Ollama does not): ask for floats.
COMPAT_EMBEDDINGS = EmbeddingDialect(encoding_format="float")


def openai_embedding_request(
    request: invoke_pb2.InvokeRequest, model: str, dialect: EmbeddingDialect = OPENAI_EMBEDDINGS
) -> dict[str, Any]:
    spec = request.embedding
    body: dict[str, Any] = {
        "model": model,
        "input": list(spec.inputs),
        "encoding_format": dialect.encoding_format,
    }
    if spec.dimensions:
        body[dialect.dimensions_field] = spec.dimensions
    if spec.user and dialect.sends_user:
        body["user"] = spec.user
    return body


def decode_vector(raw: Any, provider: str) -> invoke_pb2.Embedding:
    """A list of numbers, or base64 of little-endian float32 (OpenAI's `encoding_format: base64`)."""
    if isinstance(raw, str):
        try:
            return invoke_pb2.Embedding(values=unpack_base64(raw))
        except ValueError:
            raise _malformed(provider, "an embedding that is not base64 of float32 values") from None
    if isinstance(raw, list) and all(isinstance(v, int | float) for v in raw):
        return invoke_pb2.Embedding(values=raw)
    raise _malformed(provider, "an embedding that is neither a list of numbers nor base64")


def _malformed(provider: str, what: str) -> GatewayError:
    return GatewayError(ErrorCode.UPSTREAM_ERROR, f"{provider} answered with {what}", provider=provider)


def _completed(
    embeddings: list[invoke_pb2.Embedding], usage: invoke_pb2.Usage, expected: int, provider: str
) -> Completed:
    if len(embeddings) != expected:
        raise _malformed(provider, f"{len(embeddings)} embeddings for {expected} inputs")
    return Completed(
        message=invoke_pb2.Message(role=invoke_pb2.ROLE_ASSISTANT),
        finish_reason=FinishReason.STOP,
        usage=usage,
        embeddings=embeddings,
    )


def parse_openai_embeddings(
    payload: dict[str, Any], request: invoke_pb2.InvokeRequest, provider: str
) -> Completed:
    """An OpenAI-style `list` of `embedding` objects -> Completed, in input order (by `index`)."""
    if isinstance(payload.get("error"), dict):
        raise error_from_stream_event(provider, payload)
    data = payload.get("data")
    if not isinstance(data, list):
        raise _malformed(provider, "no embedding data")
    ordered = sorted(data, key=lambda item: int(item.get("index", 0)) if isinstance(item, dict) else 0)
    vectors = [
        decode_vector(item.get("embedding") if isinstance(item, dict) else None, provider) for item in ordered
    ]
    usage = payload.get("usage") or {}
    prompt = int(usage.get("prompt_tokens") or usage.get("total_tokens") or 0)
    if not prompt:  # a server that reports no usage: estimate rather than bill zero
        prompt = estimate_prompt_tokens(request, PESSIMISTIC)
    return _completed(
        vectors, invoke_pb2.Usage(prompt_tokens=prompt), len(request.embedding.inputs), provider
    )


def gemini_embedding_request(request: invoke_pb2.InvokeRequest, model: str) -> dict[str, Any]:
    spec = request.embedding
    requests = []
    for text in spec.inputs:
        item: dict[str, Any] = {"model": f"models/{model}", "content": {"parts": [{"text": text}]}}
        if spec.dimensions:
            item["outputDimensionality"] = spec.dimensions
        requests.append(item)
    return {"requests": requests}


def parse_gemini_embeddings(
    payload: dict[str, Any], request: invoke_pb2.InvokeRequest, provider: str
) -> Completed:
    """Gemini's `embeddings[].values` -> Completed. The Developer API reports no tokens for
    embeddings: the prompt is the gateway's pessimistic estimate unless `usageMetadata` says."""
    if isinstance(payload.get("error"), dict):
        raise error_from_stream_event(provider, payload)
    data = payload.get("embeddings")
    if not isinstance(data, list):
        raise _malformed(provider, "no embeddings")
    vectors = [
        decode_vector(item.get("values") if isinstance(item, dict) else None, provider) for item in data
    ]
    reported = int((payload.get("usageMetadata") or {}).get("promptTokenCount") or 0)
    prompt = reported or estimate_prompt_tokens(request, PESSIMISTIC)
    return _completed(
        vectors, invoke_pb2.Usage(prompt_tokens=prompt), len(request.embedding.inputs), provider
    )
