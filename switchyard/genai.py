"""OpenTelemetry GenAI semantic-convention attributes for Switchyard's spans. Pure functions.

Span names follow the convention "{gen_ai.operation.name} {gen_ai.request.model}". Both the
current `gen_ai.provider.name` and the older `gen_ai.system` are set, because trace back ends
still key their LLM views on either. Switchyard-specific facts go under `switchyard.*`.
"""

from __future__ import annotations

from typing import Any

from switchyard.v1 import events_pb2, invoke_pb2
from switchyard.vocab import finish_reason_text, status_text

OPERATION_CHAT = "chat"

# Our provider ids -> the well-known gen_ai.provider.name values (others pass through).
_PROVIDER_NAMES = {
    "gemini": "gcp.gemini",
    "google": "gcp.gemini",
    "vertex": "gcp.vertex_ai",
    "mistral": "mistral_ai",
    "bedrock": "aws.bedrock",
    "azure": "azure.ai.openai",
    "xai": "x_ai",
}


def provider_name(provider: str) -> str:
    return _PROVIDER_NAMES.get(provider, provider)


def span_name(model: str, operation: str = OPERATION_CHAT) -> str:
    return f"{operation} {model}" if model else operation


def request_attributes(request: invoke_pb2.InvokeRequest) -> dict[str, Any]:
    """What the client asked for: set on every service's span of the request."""
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": OPERATION_CHAT,
        "gen_ai.request.model": request.model,
        "switchyard.request_id": request.request_id,
        "switchyard.project_id": request.project_id,
        "switchyard.stream": request.stream,
    }
    if request.max_tokens:
        attrs["gen_ai.request.max_tokens"] = request.max_tokens
    if request.HasField("temperature"):
        attrs["gen_ai.request.temperature"] = request.temperature
    if request.HasField("top_p"):
        attrs["gen_ai.request.top_p"] = request.top_p
    if request.HasField("seed"):
        attrs["gen_ai.request.seed"] = request.seed
    if request.stop:
        attrs["gen_ai.request.stop_sequences"] = list(request.stop)
    if request.agent_id:
        attrs["switchyard.agent_id"] = request.agent_id
    return attrs


def target_attributes(provider: str, model: str, deployment_id: str = "") -> dict[str, Any]:
    """The deployment a span talks to (an upstream attempt, or the router's choice)."""
    attrs: dict[str, Any] = {
        "gen_ai.provider.name": provider_name(provider),
        "gen_ai.system": provider_name(provider),
    }
    if model:
        attrs["gen_ai.response.model"] = model
    if deployment_id:
        attrs["switchyard.deployment_id"] = deployment_id
    return attrs


def usage_attributes(usage: invoke_pb2.Usage, finish_reason: str = "") -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "gen_ai.usage.input_tokens": usage.prompt_tokens,
        "gen_ai.usage.output_tokens": usage.completion_tokens,
    }
    if usage.cached_tokens:
        attrs["gen_ai.usage.cache_read.input_tokens"] = usage.cached_tokens
    if usage.cache_write_tokens:
        attrs["gen_ai.usage.cache_creation.input_tokens"] = usage.cache_write_tokens
    if usage.reasoning_tokens:
        attrs["gen_ai.usage.reasoning.output_tokens"] = usage.reasoning_tokens
    if finish_reason:
        attrs["gen_ai.response.finish_reasons"] = [finish_reason]
    return attrs


def response_attributes(response: invoke_pb2.InvokeResponse) -> dict[str, Any]:
    """The answer as the client sees it (ingress span)."""
    return {
        **target_attributes(response.provider, response.model, response.deployment_id),
        **usage_attributes(response.usage, finish_reason_text(response.finish_reason)),
        "gen_ai.response.id": response.request_id,
        "switchyard.cost_usd": response.cost_usd,
        "switchyard.attempts": len(response.attempts),
    }


def completion_attributes(event: events_pb2.Completion) -> dict[str, Any]:
    """A stored ledger row (ledger span)."""
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": OPERATION_CHAT,
        "gen_ai.request.model": event.requested_model,
        "switchyard.request_id": event.request_id,
        "switchyard.project_id": event.project_id,
        "switchyard.status": status_text(event.status),
        "switchyard.cost_usd": event.cost_usd,
        **usage_attributes(event.usage, finish_reason_text(event.finish_reason)),
    }
    if event.provider:
        attrs.update(target_attributes(event.provider, event.model, event.deployment_id))
    if event.error_code:
        attrs["error.type"] = event.error_code
    return attrs
