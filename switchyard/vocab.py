"""The gateway's small vocabularies, each defined once: a request's or attempt's status, the
finish reason, the API a request came in on, and the routing strategy presets.

Each is a StrEnum, so a member is its wire string: it goes into protobuf string fields, ledger
columns, metric labels and JSON unchanged, and compares equal to the string a peer sent.
Everything else (pydantic models, the OpenAPI description, the catalog check, the router's
preset weights, the gRPC checks) imports these instead of spelling the values again. Error codes
live beside their mappings in switchyard/errors.py.
"""

from __future__ import annotations

from enum import StrEnum

# The presets' weights are the router's (services/router/strategy.py); the names are here.


class Status(StrEnum):
    """How a request (Completion.status) or one upstream attempt (Attempt.status) ended."""

    OK = "ok"
    ERROR = "error"
    CANCELLED = "cancelled"  # the client went away
    REJECTED = "rejected"  # refused before any upstream call (requests only, never an attempt)


class FinishReason(StrEnum):
    """Why the model stopped, in OpenAI's vocabulary; each provider's reasons map onto it."""

    STOP = "stop"
    LENGTH = "length"
    TOOL_CALLS = "tool_calls"
    CONTENT_FILTER = "content_filter"
    ERROR = "error"


class Api(StrEnum):
    """The API a request came in on (InvokeRequest.api, the ledger's `api` column)."""

    NATIVE = "native"
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    GRPC = "grpc"
    RESPONSES = "responses"  # OpenAI's Responses API (POST /v1/responses)


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
