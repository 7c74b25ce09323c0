"""The one small interface every provider adapter implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from switchyard.catalog import Deployment
from switchyard.config import Table, validated
from switchyard.settings import Settings
from switchyard.tokens import estimate_prompt_tokens, tokenizer_for
from switchyard.v1 import invoke_pb2
from switchyard.vocab import FinishReason


@dataclass
class Completed:
    """The outcome of one upstream call, in neutral terms."""

    message: invoke_pb2.Message
    finish_reason: str
    usage: invoke_pb2.Usage
    http_status: int = 200
    # Provider rate-limit state seen on the response (x-ratelimit-*, anthropic-ratelimit-*).
    rate_limits: dict[str, str] = field(default_factory=dict)
    embeddings: list[invoke_pb2.Embedding] = field(default_factory=list)  # KIND_EMBEDDING
    usage_estimated: bool = False  # KIND_COUNT_TOKENS: the gateway's estimate, not the provider's


@dataclass
class Progress:
    """Usage the provider has reported so far in a stream (Anthropic's message_start, Gemini's
    per-chunk usageMetadata). Not forwarded to the client: the worker keeps the latest so a call
    cancelled or cut mid-stream is still billed for what it used."""

    usage: invoke_pb2.Usage


class ReadPace(Protocol):
    """A stream's consumer that may let the upstream go unread for a while: the worker's
    `ChunkCoalescer`, whose later chunks wait for a batch anyway (services/providers/coalesce.py)."""

    def hold_s(self) -> float:
        """Seconds the reader may leave the upstream unread now (0: read at once)."""
        ...


class AdapterOptions(Table):
    """A deployment's `options` for its adapter. Each adapter extends this with its own keys;
    an unknown one stops the start (`deployments[<id>].options.<key>: unknown option`)."""


def options_of(deployment: Deployment, model: type[AdapterOptions]) -> AdapterOptions:
    """The deployment's options checked against its adapter's model; ConfigError if they are bad."""
    return validated(model, dict(deployment.options), f"deployments[{deployment.id}].options")


class ProviderAdapter(ABC):
    """Translate a neutral request to one provider's API and back.

    `complete` returns one Completed; `stream` yields Chunk objects (and optionally Progress)
    and ends with exactly one Completed (with exact usage); it may use `pace` to read the
    upstream less often while its consumer holds chunks back anyway. Failures raise
    switchyard.errors.GatewayError with the neutral code, provider status and whether a retry
    elsewhere may succeed. `options_model` is the model of the deployment options it reads.
    """

    options_model: ClassVar[type[AdapterOptions]] = AdapterOptions

    def __init__(self, deployment: Deployment, settings: Settings) -> None:
        self.deployment = deployment
        self.settings = settings
        self.options = options_of(deployment, self.options_model)

    @abstractmethod
    async def complete(self, request: invoke_pb2.InvokeRequest) -> Completed:
        """A chat completion, or the vectors of an embedding request (request.kind)."""

    async def count_tokens(self, request: invoke_pb2.InvokeRequest) -> Completed:
        """The prompt's input tokens (KIND_COUNT_TOKENS). Here the gateway's estimate with the
        deployment's counter (switchyard/tokens.py), marked as one; an adapter whose provider
        counts exactly (Anthropic) overrides it."""
        tokens = estimate_prompt_tokens(
            request, tokenizer_for(self.deployment.adapter, self.deployment.model)
        )
        return Completed(
            message=invoke_pb2.Message(role=invoke_pb2.ROLE_ASSISTANT),
            finish_reason=FinishReason.STOP,
            usage=invoke_pb2.Usage(prompt_tokens=tokens),
            usage_estimated=True,
        )

    @abstractmethod
    def stream(
        self, request: invoke_pb2.InvokeRequest, pace: ReadPace | None = None
    ) -> AsyncGenerator[invoke_pb2.Chunk | Progress | Completed, None]: ...

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most adapters pool connections
        """Release pooled connections."""
