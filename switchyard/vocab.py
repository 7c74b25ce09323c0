"""The gateway's small vocabularies, each defined once: a request's or attempt's status, the
finish reason, the API a request came in on, and the routing strategy presets.

Status and FinishReason are enums of the contract (protos/switchyard/v1/invoke.proto), their one
definition; `make protos` generates their text as StrEnums (switchyard/v1/wire_text.py), which
this module re-exports. In the process and at the edges (JSON answers, ledger columns, metric
labels, the OpenAI and Anthropic renderings) they are that text; on the contract they are the
enum. The four functions below are the only crossing between the two: `status_text` /
`finish_reason_text` when reading a message, `status_value` / `finish_reason_value` when writing
one.

Api and StrategyPreset are StrEnums defined here (strings in the contract). A member is its wire
string: it goes into protobuf string fields, ledger columns, metric labels and JSON unchanged, and
compares equal to the string a peer sent. Everything else (pydantic models, the OpenAPI
description, the catalog check, the router's preset weights, the gRPC checks) imports these
instead of spelling the values again. Error codes live beside their mappings in
switchyard/errors.py.
"""

from __future__ import annotations

from enum import StrEnum
from typing import cast

from switchyard.v1 import invoke_pb2
from switchyard.v1.wire_text import FinishReason, Status

__all__ = [
    "DEFAULT_PRESET",
    "Api",
    "FinishReason",
    "Status",
    "StrategyPreset",
    "finish_reason_text",
    "finish_reason_value",
    "is_member",
    "status_text",
    "status_value",
]

# The presets' weights are the router's (services/router/strategy.py); the names are here.

_STATUS_PREFIX = "STATUS_"
_FINISH_PREFIX = "FINISH_REASON_"


def status_text(value: int) -> Status | str:
    """The text of a contract Status (STATUS_OK -> Status.OK, "ok"); "" when unset, and a number
    no release of ours sends (a newer peer's value) as "status_<n>" rather than lost."""
    if not value:
        return ""
    try:
        return Status(invoke_pb2.Status.Name(value).removeprefix(_STATUS_PREFIX).lower())
    except ValueError:
        return f"status_{value}"


def status_value(text: str) -> invoke_pb2.Status:
    """The contract enum of a status text ("ok" -> STATUS_OK); STATUS_UNSPECIFIED for "" or a
    text that is not a Status."""
    if text not in Status._value2member_map_:
        return invoke_pb2.STATUS_UNSPECIFIED
    return cast("invoke_pb2.Status", invoke_pb2.Status.Value(_STATUS_PREFIX + text.upper()))


def finish_reason_text(value: int) -> FinishReason | str:
    """The text of a contract FinishReason (FINISH_REASON_STOP -> FinishReason.STOP, "stop");
    "" when unset, and an unknown number as "finish_reason_<n>"."""
    if not value:
        return ""
    try:
        return FinishReason(invoke_pb2.FinishReason.Name(value).removeprefix(_FINISH_PREFIX).lower())
    except ValueError:
        return f"finish_reason_{value}"


def finish_reason_value(text: str) -> invoke_pb2.FinishReason:
    """The contract enum of a finish reason text ("stop" -> FINISH_REASON_STOP);
    FINISH_REASON_UNSPECIFIED for "" or a text that is not a FinishReason."""
    if text not in FinishReason._value2member_map_:
        return invoke_pb2.FINISH_REASON_UNSPECIFIED
    return cast("invoke_pb2.FinishReason", invoke_pb2.FinishReason.Value(_FINISH_PREFIX + text.upper()))


class Api(StrEnum):
    """The API a request came in on (InvokeRequest.api, the ledger's `api` column)."""

    NATIVE = "native"
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    GRPC = "grpc"
    RESPONSES = "responses"  # OpenAI's Responses API (POST /v1/responses)
    EMBEDDINGS = "embeddings"  # POST /v1/embeddings
    COMPLETIONS = "completions"  # POST /v1/completions (legacy text completions, run as chat)
    COUNT_TOKENS = "count_tokens"  # POST /v1/messages/count_tokens


class DeploymentKind(StrEnum):
    """What a catalog deployment serves: chat (and count_tokens), or embeddings."""

    CHAT = "chat"
    EMBEDDING = "embedding"


class StrategyPreset(StrEnum):
    """A named routing strategy: a preset weighting of latency, cost and quality."""

    BALANCED = "balanced"
    FASTEST = "fastest"
    CHEAPEST = "cheapest"
    BEST = "best"


DEFAULT_PRESET = StrategyPreset.BALANCED


def is_member(kind: type[StrEnum], value: str) -> bool:
    """Whether `value` is one of the enum's strings (`value in kind` raises before Python 3.12)."""
    return value in kind._value2member_map_
