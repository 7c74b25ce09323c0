"""The gRPC ingress's pure parts: checking an InvokeRequest from a client, and the neutral error
codes as gRPC status codes.

A gRPC client sends the bus contract itself, so there is no body to translate; what the HTTP
APIs get from their pydantic models (required fields, ranges) is checked here instead.
"""

from __future__ import annotations

import math

import grpc
import orjson

from switchyard import choices
from switchyard.errors import ErrorCode, GatewayError, spec_for
from switchyard.v1 import invoke_pb2
from switchyard.vocab import StrategyPreset, is_member

from .embeddings_api import MAX_DIMENSIONS
from .embeddings_api import MAX_INPUTS as MAX_EMBEDDING_INPUTS
from .hints import MAX_HEDGE_DELAY_MS, MAX_METADATA_ENTRIES, MAX_METADATA_VALUE, MAX_MODEL_NAME
from .native import MAX_MESSAGES

ERROR_CODE_KEY = "switchyard-error-code"
REQUEST_ID_KEY = "x-request-id"
RETRY_AFTER_KEY = "retry-after"


def status_for(code: str) -> grpc.StatusCode:
    """The gRPC status of a neutral code, from the one table (switchyard/errors.py)."""
    return grpc.StatusCode[spec_for(code).grpc_status]


def trailing_metadata(error: GatewayError, request_id: str) -> tuple[tuple[str, str], ...]:
    """The neutral code (finer than the status), the request id and Retry-After, for clients."""
    pairs = [(ERROR_CODE_KEY, error.code)]
    if request_id:
        pairs.append((REQUEST_ID_KEY, request_id))
    if error.retry_after_s:
        pairs.append((RETRY_AFTER_KEY, str(max(1, round(error.retry_after_s)))))
    return tuple(pairs)


def _invalid(message: str, param: str) -> GatewayError:
    return GatewayError(ErrorCode.INVALID_REQUEST, message, param=param)


def _json_object(text: str, param: str) -> None:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise _invalid(f"{param} is not valid JSON", param) from None
    if not isinstance(value, dict):
        raise _invalid(f"{param} must be a JSON object", param)


def validate(request: invoke_pb2.InvokeRequest) -> None:
    """Raise GatewayError(invalid_request) naming the first problem, as the HTTP APIs do."""
    if not request.model:
        raise _invalid("model: required", "model")
    if len(request.model) > MAX_MODEL_NAME:
        raise _invalid(f"model: at most {MAX_MODEL_NAME} characters", "model")
    if request.kind == invoke_pb2.InvokeRequest.KIND_EMBEDDING:
        _validate_embedding(request.embedding)
        return
    if not request.messages:
        raise _invalid("messages: at least one message is required", "messages")
    if len(request.messages) > MAX_MESSAGES:
        raise _invalid(f"messages: at most {MAX_MESSAGES}", "messages")
    for i, message in enumerate(request.messages):
        if message.role not in choices.ROLE_NAMES:
            names = ", ".join(invoke_pb2.Role.Name(value) for value in choices.ROLE_NAMES)
            raise _invalid(f"messages.{i}.role: must be one of {names}", f"messages.{i}.role")
        if message.role == invoke_pb2.ROLE_TOOL and not message.tool_call_id:
            raise _invalid(
                f"messages.{i}.tool_call_id: required on tool messages", f"messages.{i}.tool_call_id"
            )
        for j, call in enumerate(message.tool_calls):
            if not call.id or not call.name:
                raise _invalid(
                    f"messages.{i}.tool_calls.{j}: id and name are required", f"messages.{i}.tool_calls"
                )
    for i, tool in enumerate(request.tools):
        if not tool.name:
            raise _invalid(f"tools.{i}.name: required", f"tools.{i}.name")
        if tool.parameters_json:
            _json_object(tool.parameters_json, f"tools.{i}.parameters_json")
    if request.tool_choice.mode == invoke_pb2.ToolChoice.MODE_TOOL and not request.tool_choice.name:
        raise _invalid("tool_choice.name: required when mode is MODE_TOOL", "tool_choice.name")
    fmt = request.response_format
    if fmt.type == invoke_pb2.ResponseFormat.TYPE_JSON_SCHEMA:
        if not fmt.name:
            raise _invalid("response_format.name: required for TYPE_JSON_SCHEMA", "response_format.name")
        if fmt.schema_json:
            _json_object(fmt.schema_json, "response_format.schema_json")
    if request.HasField("temperature") and not 0 <= request.temperature <= 2:
        raise _invalid("temperature: must be between 0 and 2", "temperature")
    if request.HasField("top_p") and not 0 <= request.top_p <= 1:
        raise _invalid("top_p: must be between 0 and 1", "top_p")
    _validate_strategy(request.strategy)
    delay = request.hedge.delay_ms
    if request.HasField("hedge") and not (math.isfinite(delay) and 0 <= delay <= MAX_HEDGE_DELAY_MS):
        raise _invalid(f"hedge.delay_ms: must be between 0 and {MAX_HEDGE_DELAY_MS:.0f}", "hedge.delay_ms")
    if len(request.metadata) > MAX_METADATA_ENTRIES:
        raise _invalid(f"metadata: at most {MAX_METADATA_ENTRIES} entries", "metadata")
    for key, value in request.metadata.items():
        if len(value) > MAX_METADATA_VALUE:
            raise _invalid(f"metadata.{key}: at most {MAX_METADATA_VALUE} characters", f"metadata.{key}")


def _validate_embedding(spec: invoke_pb2.EmbeddingInput) -> None:
    """The same bounds as POST /v1/embeddings (embeddings_api.EmbeddingsRequest)."""
    if not spec.inputs or len(spec.inputs) > MAX_EMBEDDING_INPUTS:
        raise _invalid(f"embedding.inputs: 1 to {MAX_EMBEDDING_INPUTS} texts", "embedding.inputs")
    if any(not text for text in spec.inputs):
        raise _invalid("embedding.inputs: texts must not be empty", "embedding.inputs")
    if spec.dimensions > MAX_DIMENSIONS:
        raise _invalid(f"embedding.dimensions: at most {MAX_DIMENSIONS}", "embedding.dimensions")


def _validate_strategy(strategy: invoke_pb2.Strategy) -> None:
    if strategy.preset and not is_member(StrategyPreset, strategy.preset):
        raise _invalid(f"strategy.preset: must be one of {', '.join(StrategyPreset)}", "strategy.preset")
    if strategy.explicit:
        weights = (strategy.latency, strategy.cost, strategy.quality)
        if any(not math.isfinite(w) or w < 0 for w in weights):
            raise _invalid("strategy: weights must be numbers >= 0", "strategy")
        if sum(weights) <= 0:
            raise _invalid("strategy: weights must not all be zero", "strategy")
